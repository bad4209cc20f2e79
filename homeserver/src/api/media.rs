//! `/v1/media/*`: upload (multipart, streamed to disk), download (streamed, one `Range`), info.
//!
//! Access is a capability: media ids carry 128 random bits, so any authenticated caller holding
//! one may read it (`docs/api.md`, "Media").

use axum::body::Body;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Caller, Path, Query};
use super::views::data;
use crate::clock::iso8601;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::media::{self, Upload};
use crate::storage::MediaRow;

/// Room for the multipart framing (boundaries, part headers, small extra fields) on top of
/// `max_upload_bytes`.
pub const UPLOAD_BODY_SLACK: usize = 64 * 1024;

/// The body limit of the upload route; the file itself is checked against `max_upload_bytes`.
pub fn upload_body_limit(config: &Config) -> usize {
    usize::try_from(config.max_upload_bytes).unwrap_or(usize::MAX).saturating_add(UPLOAD_BODY_SLACK)
}

pub fn view(m: &MediaRow) -> Value {
    let mut v = json!({
        "media_id": m.media_id,
        "sha256": m.sha256,
        "size": m.size,
        "mime_type": m.mime_type,
        "created_at": iso8601(m.created_at),
    });
    if let Some(f) = &m.filename {
        v["filename"] = json!(f);
    }
    v
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::ContentTooLarge("upload body too large".into())
    } else if e.body_text().contains(crate::listener::BODY_TIMEOUT_MESSAGE) {
        ApiError::RequestTimeout
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

fn media_id(id: String) -> ApiResult<String> {
    if crate::ids::is_media_id(&id) { Ok(id) } else { Err(ApiError::bad_request("media_id is not a media id")) }
}

pub async fn upload(
    State(st): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<impl IntoResponse> {
    let mut multipart = multipart
        .map_err(|e| ApiError::bad_request(format!("expected a multipart/form-data body: {}", e.body_text())))?;
    // The file stays a temp file until the whole body has parsed, so a malformed tail leaves
    // nothing behind.
    let mut pending: Option<(Upload, String, Option<String>)> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            continue;
        }
        if pending.is_some() {
            return Err(ApiError::bad_request("more than one `file` field"));
        }
        let filename = media::clean_filename(field.file_name());
        let mime_type = media::clean_mime_type(field.content_type());
        let mut upload = Upload::begin(&st.config.data_dir, st.config.max_upload_bytes).await?;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            upload.write(&chunk).await?;
        }
        pending = Some((upload, mime_type, filename));
    }
    let (upload, mime_type, filename) =
        pending.ok_or_else(|| ApiError::bad_request("the multipart body has no `file` field"))?;
    let content = upload.finish().await?;
    let row = media::record(&st.store, &caller.participant.id, content, mime_type, filename).await?;
    Ok((StatusCode::CREATED, data(view(&row))))
}

/// `?server=`: where media this server does not hold lives (its origin), for a first download.
#[derive(serde::Deserialize)]
pub struct Source {
    server: Option<String>,
}

pub async fn info(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(source): Query<Source>,
) -> ApiResult<impl IntoResponse> {
    let row = crate::fed::remote::media_row(&st, &caller.participant, &media_id(id)?, source.server.as_deref()).await?;
    Ok(data(view(&row)))
}

pub async fn download(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(source): Query<Source>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = crate::fed::remote::media_row(&st, &caller.participant, &media_id(id)?, source.server.as_deref()).await?;
    let size = u64::try_from(row.size).map_err(|_| ApiError::internal("negative media size"))?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| media::parse_range(v, size));
    let (start, len) = match range {
        Some((first, last)) => (first, last - first + 1),
        None => (0, size),
    };
    let file = media::open_content(&st.config.data_dir, &row, start).await?;

    let content_type =
        HeaderValue::from_str(&row.mime_type).unwrap_or(HeaderValue::from_static(media::DEFAULT_MIME_TYPE));
    let disposition = HeaderValue::from_str(&media::content_disposition(row.filename.as_deref()))
        .unwrap_or(HeaderValue::from_static("inline"));
    let mut resp = Response::new(Body::from_stream(media::content_stream(file, len)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Uploaded HTML or SVG opened directly must not run script on this origin.
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    // A media id always names the same bytes; `private` because it is behind a bearer token.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", row.sha256)) {
        h.insert(header::ETAG, etag);
    }
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {start}-{}/{size}", start + len - 1);
        resp.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii header value"));
    }
    Ok(resp)
}
