//! [`SignedRequest`]: the extractor every federation endpoint starts with. It checks the
//! `X-ScaiWave` header before it reads anything else (contract 8.1): the header's shape, that
//! the destination is us and `ts` within 60 s, that the origin's key is known (fetching it if
//! need be); only then is the body read, parsed as strict JSON and the signature checked over
//! method, URI as sent, origin, destination, `ts` and body. Any failure answers 401
//! `SW_FED_SIGNATURE_MISMATCH`. A verified origin this server's policy refuses answers 403
//! `SW_FED_PEER_UNKNOWN`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};

/// A verified request from a peer.
pub struct SignedRequest {
    /// The peer that signed the request.
    pub origin: String,
    /// The body, if there was one (strict JSON).
    pub body: Option<Value>,
    /// What this server's policy lets the origin do (never nothing: that is refused here).
    pub access: federation::policy::PeerAccess,
    /// The origin's in-flight slot, held until the handler is done.
    _permit: crate::fed::limits::Permit,
}

impl SignedRequest {
    /// The body as `T`; a missing or ill-typed body is `SW_BAD_REQUEST`.
    pub fn json<T: DeserializeOwned>(&self) -> ApiResult<T> {
        let body = self.body.clone().ok_or_else(|| ApiError::bad_request("this endpoint needs a JSON body"))?;
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

fn mismatch(msg: impl Into<String>) -> ApiError {
    ApiError::FedSignatureMismatch(msg.into())
}

impl FromRequest<AppState> for SignedRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Self::Rejection> {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| mismatch("missing X-ScaiWave authorization"))?
            .to_str()
            .map_err(|_| mismatch("authorization header is not ASCII"))?;
        let auth = crypto::parse_authorization(header).map_err(|e| mismatch(format!("authorization header: {e}")))?;
        let ours = st.fed.server_name.as_str();
        if auth.destination != ours {
            return Err(mismatch(format!("request is for {:?}, this is {ours:?}", auth.destination)));
        }
        let now = federation::now_ms();
        if auth.ts.abs_diff(now) > crypto::MAX_CLOCK_SKEW_MS {
            return Err(mismatch("request ts is more than 60 s from this server's clock"));
        }
        if auth.origin == ours {
            return Err(mismatch("a request from this server to itself"));
        }
        let active = st.fed.active()?;
        let key = active
            .keys
            .request_key(&auth.origin, &auth.key_id)
            .await
            .map_err(|e| mismatch(format!("origin key: {e}")))?;
        let method = req.method().as_str().to_owned();
        let uri = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| req.uri().path().into());
        let bytes = Bytes::from_request(req, st)
            .await
            .map_err(|r| crate::api::extract::body_rejection(r.status(), r.body_text()))?;
        let body = if bytes.is_empty() {
            None
        } else {
            Some(
                crypto::parse_strict(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?,
            )
        };
        auth.verify(&method, &uri, body.as_ref(), ours, now, &key)
            .map_err(|e| mismatch(format!("request signature: {e}")))?;
        let access = crate::fed::policy::check_peer(st, &auth.origin)?;
        st.fed.peer_contacted(&auth.origin);
        let permit = st.fed.limits.admit(&auth.origin, std::time::Instant::now())?;
        Ok(SignedRequest { origin: auth.origin, body, access, _permit: permit })
    }
}
