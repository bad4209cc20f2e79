//! `POST /v1/admin/federation/resolve`: runs peer discovery (DNS, then the well-known document
//! over verified TLS) and reports what it found, so operators and tests can check that this
//! server reaches a peer.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{Caller, Json};
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

pub async fn resolve(
    State(st): State<AppState>,
    caller: Caller,
    Json(body): Json<ResolveBody>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    if !caller.participant.is_admin {
        return Err(ApiError::InsufficientPermission("only a server admin may resolve peers".into()));
    }
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
