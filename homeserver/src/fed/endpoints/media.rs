//! `GET media/{media_id}` → the bytes of media uploaded to this server, with `Content-Type`
//! and `X-ScaiWave-Sha256` (lower-case hex) so the fetching server can check them.
//!
//! Any verified peer may fetch any media uploaded here: media ids carry 128 random bits, so
//! holding one is the capability (as on the client API); a peer learns ids only from events of
//! rooms it shares. Media this server itself fetched from another origin is not served again:
//! peers go to the origin.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

use crate::api::AppState;
use crate::api::extract::Path;
use crate::error::{ApiError, ApiResult};
use crate::fed::request::SignedRequest;
use crate::media;

const SHA256_HEADER: HeaderName = HeaderName::from_static("x-scaiwave-sha256");

pub async fn handle(
    State(st): State<AppState>,
    Path(media_id): Path<String>,
    _req: SignedRequest,
) -> ApiResult<Response> {
    if !crate::ids::is_media_id(&media_id) {
        return Err(ApiError::bad_request("media_id is not a media id"));
    }
    let row = st.store.local_media(&media_id).await?.ok_or(ApiError::MediaNotFound)?;
    let size = u64::try_from(row.size).map_err(|_| ApiError::internal("negative media size"))?;
    let file = media::open_content(&st.config.data_dir, &row, 0).await?;
    let content_type =
        HeaderValue::from_str(&row.mime_type).unwrap_or(HeaderValue::from_static(media::DEFAULT_MIME_TYPE));
    let sha = HeaderValue::from_str(&row.sha256).map_err(|_| ApiError::internal("media sha256 is not a header"))?;
    let mut resp = Response::new(Body::from_stream(media::content_stream(file, size)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(SHA256_HEADER, sha);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(resp)
}
