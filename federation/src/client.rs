//! Outbound signed requests to peers (contract 8.1): discovery finds the peer, the request is
//! signed with the `X-ScaiWave` header, and the answer's envelope is unpacked.
//!
//! Connections are pooled per peer (unlike [`Discovery::discover`], which always opens a new
//! one to answer "can I reach it now"). A peer's resolved address is cached for
//! [`ADDRESS_TTL`]: DNS is asked again after that, or at once after a connection error, so a
//! partition or a moved peer is noticed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Discovery, DiscoveryError, Resolved, push_capped};

/// How long a resolved address is reused before DNS is asked again.
pub const ADDRESS_TTL: Duration = Duration::from_secs(30);
/// The largest answer read from a peer by default (state and auth chains of large rooms).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a request to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FedError {
    /// DNS, TLS, connection, timeout: the peer could not be reached (retry later).
    #[error("{0} is unreachable: {1}")]
    Unreachable(String, String),
    /// The peer answered with an error envelope.
    #[error("{server} answered {status} {code}: {message}")]
    Refused { server: String, status: u16, code: String, message: String, retry_after: Option<u64> },
    /// The peer answered something that is not the envelope (or too large).
    #[error("{0} answered badly: {1}")]
    BadAnswer(String, String),
    /// We could not build the request (a bug, or an unsignable body).
    #[error("request to {0}: {1}")]
    Local(String, String),
}

impl FedError {
    /// Worth retrying later (network trouble, overload, a transient refusal).
    pub fn is_transient(&self) -> bool {
        match self {
            FedError::Unreachable(..) | FedError::BadAnswer(..) => true,
            FedError::Refused { status, .. } => *status == 429 || *status >= 500,
            FedError::Local(..) => false,
        }
    }

    /// The `SW_` code of a refusal, if the peer sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            FedError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A raw answer: status, headers that matter, body bytes.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    /// `Retry-After` in seconds, when the peer sent one.
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

/// Signs and sends requests to peers. Cheap to clone.
#[derive(Clone)]
pub struct FedClient {
    discovery: Discovery,
    http: reqwest::Client,
    origin: Arc<str>,
    key: Arc<crypto::ServerKey>,
    addresses: Arc<Mutex<HashMap<String, (Resolved, Instant)>>>,
}

impl std::fmt::Debug for FedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedClient").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl FedClient {
    /// `origin` is our server name; `key` signs every request. `timeout` bounds one request.
    pub fn new(
        discovery: Discovery,
        origin: &str,
        key: Arc<crypto::ServerKey>,
        timeout: Duration,
    ) -> Result<FedClient, DiscoveryError> {
        let http = discovery.pooled_client(timeout)?;
        Ok(FedClient { discovery, http, origin: origin.into(), key, addresses: Default::default() })
    }

    /// Our server name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The discovery this client resolves peers with.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    async fn authority(&self, server: &str) -> Result<String, FedError> {
        let cached = self
            .addresses
            .lock()
            .ok()
            .and_then(|m| m.get(server).filter(|(_, at)| at.elapsed() < ADDRESS_TTL).map(|(r, _)| r.clone()));
        let resolved = match cached {
            Some(r) => r,
            None => {
                let r = self
                    .discovery
                    .resolve_address(server)
                    .await
                    .map_err(|e| FedError::Unreachable(server.into(), e.to_string()))?;
                if let Ok(mut m) = self.addresses.lock() {
                    m.insert(server.to_string(), (r.clone(), Instant::now()));
                }
                r
            }
        };
        self.discovery.pin(&resolved);
        Ok(match resolved.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", resolved.port),
            _ => format!("{}:{}", resolved.host, resolved.port),
        })
    }

    fn forget_address(&self, server: &str) {
        if let Ok(mut m) = self.addresses.lock() {
            m.remove(server);
        }
    }

    /// Sends a signed request and returns the raw answer (any status). `path_and_query` starts
    /// with `/` and is sent exactly as given (it is what the signature covers).
    pub async fn request_raw(
        &self,
        destination: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        max_bytes: usize,
    ) -> Result<RawAnswer, FedError> {
        let authority = self.authority(destination).await?;
        let ts = crate::now_ms();
        let header =
            crypto::RequestToSign { method, uri: path_and_query, origin: &self.origin, destination, ts, content: body }
                .authorization_header(&self.key)
                .map_err(|e| FedError::Local(destination.into(), e.to_string()))?;
        let url = format!("https://{authority}{path_and_query}");
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| FedError::Local(destination.into(), e.to_string()))?;
        let mut req = self.http.request(m, &url).header("authorization", header);
        if let Some(body) = body {
            let bytes =
                crypto::to_canonical_bytes(body).map_err(|e| FedError::Local(destination.into(), e.to_string()))?;
            req = req.header("content-type", "application/json").body(bytes);
        }
        let unreachable = |e: reqwest::Error| FedError::Unreachable(destination.into(), crate::error_chain(&e));
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.forget_address(destination);
                return Err(unreachable(e));
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type = header("content-type");
        let sha256 = header("x-scaiwave-sha256");
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        if resp.content_length().is_some_and(|l| l > max_bytes as u64) {
            return Err(FedError::BadAnswer(destination.into(), "answer too large".into()));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            push_capped(&mut buf, &chunk, max_bytes)
                .map_err(|_| FedError::BadAnswer(destination.into(), "answer too large".into()))?;
        }
        Ok(RawAnswer { status, content_type, sha256, retry_after, body: buf })
    }

    /// Sends a signed JSON request and returns the answer's `data`. An error envelope becomes
    /// [`FedError::Refused`].
    pub async fn request(
        &self,
        destination: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FedError> {
        self.request_capped(destination, method, path_and_query, body, MAX_ANSWER_BYTES).await
    }

    /// [`FedClient::request`] with a bound on the answer's size.
    pub async fn request_capped(
        &self,
        destination: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        max_bytes: usize,
    ) -> Result<Value, FedError> {
        let raw = self.request_raw(destination, method, path_and_query, body, max_bytes).await?;
        let value: Value = serde_json::from_slice(&raw.body)
            .map_err(|e| FedError::BadAnswer(destination.into(), format!("HTTP {}: not JSON: {e}", raw.status)))?;
        if (200..300).contains(&raw.status) {
            return match value {
                Value::Object(mut map) => map
                    .remove("data")
                    .ok_or_else(|| FedError::BadAnswer(destination.into(), "no data in the answer".into())),
                _ => Err(FedError::BadAnswer(destination.into(), "answer is not an object".into())),
            };
        }
        let error = value.get("error");
        let text = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
        Err(FedError::Refused {
            server: destination.into(),
            status: raw.status,
            code: text("code"),
            message: text("message"),
            retry_after: raw.retry_after,
        })
    }
}
