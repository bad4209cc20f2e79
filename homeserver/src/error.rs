//! The one error type of the client API and its mapping to the contract's `SW_*` codes.
//!
//! Every failure a handler can produce ends here, so status codes and codes are decided in one
//! place. Internal errors are logged with detail and answered with a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("access token expired")]
    ExpiredToken,
    #[error("{0}")]
    InsufficientPermission(String),
    #[error("tenant not found")]
    TenantNotFound,
    #[error("{0}")]
    TenantCapacity(String),
    #[error("{0}")]
    NotMember(String),
    #[error("room not found")]
    RoomNotFound,
    #[error("{0}")]
    RoomForbidden(String),
    #[error("{0}")]
    RoomFrozen(String),
    #[error("{0}")]
    RoomLastOwner(String),
    #[error("{0}")]
    RoomTypeInvariant(String),
    #[error("{0}")]
    RoomCapacity(String),
    #[error("event not found")]
    EventNotFound,
    #[error("{0}")]
    EventTooOldToEdit(String),
    #[error("{0}")]
    EditForbidden(String),
    #[error("{0}")]
    RedactForbidden(String),
    #[error("media not found")]
    MediaNotFound,
    #[error("{0}")]
    ParticipantNotFound(String),
    #[error("{0}")]
    RoomExportRefused(String),
    #[error("{0}")]
    RoomImportRefused(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ContentTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("the request body stalled: nothing arrived for too long")]
    RequestTimeout,
    #[error("{0}")]
    RateLimited(String, u64),
    #[error("no such endpoint")]
    UnknownEndpoint,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("peer unavailable: {0}")]
    FedUnavailable(String),
    #[error("{0}")]
    FedSignatureMismatch(String),
    #[error("{0}")]
    FedPeerUnknown(String),
    #[error("{0}")]
    FedDisabled(String),
    #[error("{0}")]
    FedProtocolVersion(String),
    #[error("internal error")]
    Internal(#[source] anyhow_like::Internal),
}

/// A boxed internal error that keeps its message for the log, never for the client.
pub mod anyhow_like {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Internal(pub String);
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::Internal(anyhow_like::Internal(msg.to_string()))
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "SW_BAD_REQUEST"),
            InvalidToken(_) => (StatusCode::UNAUTHORIZED, "SW_AUTH_INVALID_TOKEN"),
            ExpiredToken => (StatusCode::UNAUTHORIZED, "SW_AUTH_EXPIRED_TOKEN"),
            InsufficientPermission(_) => (StatusCode::FORBIDDEN, "SW_AUTH_INSUFFICIENT_PERMISSION"),
            TenantNotFound => (StatusCode::NOT_FOUND, "SW_TENANT_NOT_FOUND"),
            TenantCapacity(_) => (StatusCode::CONFLICT, "SW_TENANT_CAPACITY"),
            NotMember(_) => (StatusCode::FORBIDDEN, "SW_NOT_MEMBER"),
            RoomNotFound => (StatusCode::NOT_FOUND, "SW_ROOM_NOT_FOUND"),
            RoomForbidden(_) => (StatusCode::FORBIDDEN, "SW_ROOM_FORBIDDEN"),
            RoomFrozen(_) => (StatusCode::CONFLICT, "SW_ROOM_FROZEN"),
            RoomLastOwner(_) => (StatusCode::CONFLICT, "SW_ROOM_LAST_OWNER"),
            RoomTypeInvariant(_) => (StatusCode::BAD_REQUEST, "SW_ROOM_TYPE_INVARIANT"),
            RoomCapacity(_) => (StatusCode::CONFLICT, "SW_ROOM_CAPACITY"),
            EventNotFound => (StatusCode::NOT_FOUND, "SW_EVENT_NOT_FOUND"),
            EventTooOldToEdit(_) => (StatusCode::CONFLICT, "SW_EVENT_TOO_OLD_TO_EDIT"),
            EditForbidden(_) => (StatusCode::FORBIDDEN, "SW_EDIT_FORBIDDEN"),
            RedactForbidden(_) => (StatusCode::FORBIDDEN, "SW_REDACT_FORBIDDEN"),
            MediaNotFound => (StatusCode::NOT_FOUND, "SW_MEDIA_NOT_FOUND"),
            ParticipantNotFound(_) => (StatusCode::NOT_FOUND, "SW_PARTICIPANT_NOT_FOUND"),
            RoomExportRefused(_) => (StatusCode::BAD_REQUEST, "SW_ROOM_EXPORT_REFUSED"),
            RoomImportRefused(_) => (StatusCode::BAD_REQUEST, "SW_ROOM_IMPORT_REFUSED"),
            Conflict(_) => (StatusCode::CONFLICT, "SW_CONFLICT"),
            ContentTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "SW_CONTENT_TOO_LARGE"),
            UriTooLong(_) => (StatusCode::URI_TOO_LONG, "SW_BAD_REQUEST"),
            HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "SW_BAD_REQUEST"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "SW_REQUEST_TIMEOUT"),
            RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, "SW_RATE_LIMIT_EXCEEDED"),
            UnknownEndpoint => (StatusCode::NOT_FOUND, "SW_NOT_FOUND"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "SW_METHOD_NOT_ALLOWED"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SW_UNAVAILABLE"),
            FedUnavailable(_) => (StatusCode::BAD_GATEWAY, "SW_FED_UNAVAILABLE"),
            FedSignatureMismatch(_) => (StatusCode::UNAUTHORIZED, "SW_FED_SIGNATURE_MISMATCH"),
            FedPeerUnknown(_) => (StatusCode::FORBIDDEN, "SW_FED_PEER_UNKNOWN"),
            FedDisabled(_) => (StatusCode::CONFLICT, "SW_FED_DISABLED"),
            FedProtocolVersion(_) => (StatusCode::BAD_REQUEST, "SW_FED_PROTOCOL_VERSION"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "SW_INTERNAL"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(inner) => {
                tracing::error!(error = %inner, "internal error");
                "internal error".to_string()
            }
            ApiError::Unavailable(m) => {
                tracing::warn!(error = %m, "service unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = json!({"error": {"code": code, "message": message}});
        let mut resp = (status, axum::Json(body)).into_response();
        // The unread rest of an oversized body is not drained: tell the client to reconnect.
        if matches!(self, ApiError::ContentTooLarge(_) | ApiError::RequestTimeout) {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::RateLimited(_, retry_after) = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
