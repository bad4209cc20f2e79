//! Extractors: they parse and authenticate, and turn every failure into an [`ApiError`] so no
//! malformed request reaches a handler or gets a non-`SW_` answer.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::identity;
use crate::storage::Participant;

/// The authenticated caller.
pub struct Caller {
    pub participant: Participant,
    pub session_id: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::InvalidToken("missing Authorization header".into()))?;
        let value = value.to_str().map_err(|_| ApiError::InvalidToken("malformed Authorization header".into()))?;
        let (scheme, token) =
            value.split_once(' ').ok_or_else(|| ApiError::InvalidToken("expected a Bearer token".into()))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::InvalidToken("expected a Bearer token".into()));
        }
        let owner = identity::authenticate(&state.store, &state.tokens, token.trim()).await?;
        state.hub.touch(&owner.participant.id, std::time::Instant::now());
        Ok(Caller { participant: owner.participant, session_id: owner.session_id })
    }
}

/// The client's IP address, as the listener accepted the connection (no proxy headers are
/// trusted). Requests built without a listener (in-process tests) read as `0.0.0.0`.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddr(ip))
    }
}

/// The error for a body that could not be read: too large, stalled, or malformed.
pub fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::ContentTooLarge("request body too large".into())
    } else if text.contains(crate::listener::BODY_TIMEOUT_MESSAGE) {
        ApiError::RequestTimeout
    } else {
        ApiError::bad_request(format!("unreadable request body: {text}"))
    }
}

/// Parses a JSON object body. An empty body reads as `{}`, so endpoints whose fields are all
/// optional need no body.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// A JSON object request body.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| body_rejection(r.status(), r.body_text()))?;
        parse_json_object(&bytes).map(Json)
    }
}

/// A body that may be JSON or `application/x-www-form-urlencoded` (the OAuth-style token
/// endpoint accepts both).
pub struct JsonOrForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + 'static> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        if is_form {
            let axum::Form(value) = axum::Form::<T>::from_request(req, state)
                .await
                .map_err(|r| body_rejection(r.status(), r.body_text()))?;
            Ok(JsonOrForm(value))
        } else {
            Json::<T>::from_request(req, state).await.map(|Json(v)| JsonOrForm(v))
        }
    }
}

/// Query-string parameters.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// The `{room_id}` of a room path, shape-checked.
pub struct RoomId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RoomId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state).await?;
        let id = params.get("room_id").cloned().unwrap_or_default();
        if crate::ids::is_room_id(&id) {
            Ok(RoomId(id))
        } else {
            Err(ApiError::bad_request("room_id is not a room id"))
        }
    }
}

/// A `limit` query value: a positive integer, `default` when absent or empty. A value above
/// `max` is capped to it (the client asked for "as many as you give", as Matrix servers treat
/// it); zero, a sign or anything else is 400 `SW_BAD_REQUEST`.
pub fn page_limit(raw: Option<&str>, default: i64, max: i64) -> ApiResult<i64> {
    let raw = match raw {
        None | Some("") => return Ok(default),
        Some(r) => r,
    };
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!("limit must be an integer from 1 to {max}")));
    }
    // Digits only, so a failed parse is a number too long for i64: over the cap.
    let limit = raw.parse::<i64>().unwrap_or(i64::MAX);
    if limit == 0 {
        return Err(ApiError::bad_request(format!("limit must be an integer from 1 to {max}")));
    }
    Ok(limit.min(max))
}

#[cfg(test)]
mod tests {
    use super::page_limit;

    #[test]
    fn limits_are_capped_not_refused() {
        assert_eq!(page_limit(None, 50, 200).unwrap(), 50);
        assert_eq!(page_limit(Some(""), 50, 200).unwrap(), 50);
        assert_eq!(page_limit(Some("7"), 50, 200).unwrap(), 7);
        assert_eq!(page_limit(Some("201"), 50, 200).unwrap(), 200);
        assert_eq!(page_limit(Some("99999999999999999999999"), 50, 200).unwrap(), 200);
        for bad in ["0", "-1", "+5", "1.5", "x", " 5", "00"] {
            assert!(page_limit(Some(bad), 50, 200).is_err(), "{bad}");
        }
    }
}
