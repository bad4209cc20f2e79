//! `POST /v1/admin/federation/resolve`: runs peer discovery (DNS, then the well-known document
//! over verified TLS) and reports what it found, so operators and tests can check that this
//! server reaches a peer.
//!
//! Order of checks: authentication (401), then admin (403), and only then the body (400/413),
//! so a non-admin learns nothing about what a valid request looks like.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{Caller, parse_json_object};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};

/// The server's discovery client, or why it could not be built (reported on use, so a bad CA
/// file does not stop the client API).
pub type DiscoveryState = Arc<Result<federation::Discovery, String>>;

/// Builds discovery from `federation_dns_server` and `federation_ca_file`.
pub fn build(config: &Config) -> DiscoveryState {
    let result = (|| {
        let extra_ca_pem = match &config.federation_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| format!("federation_ca_file {}: {e}", path.display()))?),
            None => None,
        };
        let cfg = federation::DiscoveryConfig { nameserver: config.federation_dns_server, extra_ca_pem, timeout: None };
        federation::Discovery::new(cfg).map_err(|e| e.to_string())
    })();
    if let Err(e) = &result {
        tracing::warn!(error = %e, "peer discovery is unavailable");
    }
    Arc::new(result)
}

#[derive(Deserialize)]
pub struct ResolveBody {
    server_name: String,
}

/// The body is taken raw (a read failure included) and parsed only after the admin check.
pub async fn resolve(
    State(st): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    if !caller.participant.is_admin {
        return Err(ApiError::InsufficientPermission("only a server admin may resolve peers".into()));
    }
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::ContentTooLarge("request body too large".into())
        } else {
            ApiError::bad_request(format!("unreadable request body: {}", r.body_text()))
        }
    })?;
    let body: ResolveBody = parse_json_object(&body)?;
    federation::parse_server_name(&body.server_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let discovery = st.discovery.as_ref().as_ref().map_err(|e| ApiError::FedUnavailable(e.clone()))?;
    let info = discovery
        .discover(&body.server_name)
        .await
        .map_err(|e| ApiError::FedUnavailable(format!("{}: {e}", body.server_name)))?;
    Ok(axum::Json(json!({"data": {
        "server_name": info.server_name,
        "addresses": info.addresses,
        "port": info.port,
        "verify_keys": info.verify_keys,
        "protocol_versions": info.protocol_versions,
    }})))
}
