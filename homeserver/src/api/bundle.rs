//! `GET /v1/rooms/{room_id}/export` (a streamed ZIP) and `POST /v1/rooms/import` (multipart
//! `bundle` file and optional `workspace_id`). The work is in [`crate::bundle`].

use axum::body::Body;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::AppState;
use super::extract::{Caller, RoomId};
use super::views::data;
use crate::bundle::{self, export, import};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};

/// Room for the multipart framing and the `workspace_id` field on top of `max_import_bytes`.
pub const IMPORT_BODY_SLACK: usize = 64 * 1024;

/// Longest `workspace_id` field accepted, in bytes.
pub const MAX_WORKSPACE_ID_FIELD: usize = 256;

/// The body limit of the import route.
pub fn import_body_limit(config: &Config) -> usize {
    usize::try_from(config.max_import_bytes).unwrap_or(usize::MAX).saturating_add(IMPORT_BODY_SLACK)
}

pub fn export_source(st: &AppState) -> export::ExportSource {
    export::ExportSource {
        store: st.store.clone(),
        data_dir: st.config.data_dir.clone(),
        server: bundle::server_info(&st.config.server_name, &st.keys),
    }
}

pub fn import_target(st: &AppState) -> import::ImportTarget {
    import::ImportTarget {
        store: st.store.clone(),
        data_dir: st.config.data_dir.clone(),
        server_name: st.config.server_name.clone(),
        max_import_bytes: st.config.max_import_bytes,
        own_server: bundle::server_info(&st.config.server_name, &st.keys),
    }
}

pub async fn export(State(st): State<AppState>, caller: Caller, RoomId(room_id): RoomId) -> ApiResult<Response> {
    let room = export::authorize(&st.store, &caller.participant, &room_id).await?;
    // Written to a temp file at disk speed (the database is never held at the client's pace) and
    // streamed from it as it grows.
    let growing = export::start(export_source(&st), room.id.clone(), caller.participant).await?;
    let mut resp = Response::new(Body::from_stream(export::stream(growing)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.zip\"", room.id)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::RoomImportRefused("the bundle is larger than max_import_bytes".into())
    } else if e.body_text().contains(crate::listener::BODY_TIMEOUT_MESSAGE) {
        ApiError::RequestTimeout
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

pub async fn import(
    State(st): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<impl IntoResponse> {
    let mut multipart = multipart
        .map_err(|e| ApiError::bad_request(format!("expected a multipart/form-data body: {}", e.body_text())))?;
    // An import creates a room: it counts against the allowance, before its body is read.
    crate::rooms::take_room_creation(&st.room_creation, &caller.participant)?;
    let max = st.config.max_import_bytes;
    let mut spool = None;
    let mut workspace_id = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("bundle") => {
                if spool.is_some() {
                    return Err(ApiError::bad_request("more than one `bundle` field"));
                }
                let (temp, file) = bundle::TempFile::create(&st.config.data_dir, "import")?;
                let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
                let mut size: u64 = 0;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    size = size.saturating_add(chunk.len() as u64);
                    if size > max {
                        return Err(ApiError::RoomImportRefused(format!(
                            "the bundle is larger than max_import_bytes ({max} bytes)"
                        )));
                    }
                    file.write_all(&chunk).await.map_err(|e| ApiError::internal(format!("import: spool: {e}")))?;
                }
                file.flush().await.map_err(|e| ApiError::internal(format!("import: spool: {e}")))?;
                spool = Some(temp);
            }
            Some("workspace_id") => {
                // Read chunk by chunk: a huge field is refused at its first bytes over the cap.
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if bytes.len() + chunk.len() > MAX_WORKSPACE_ID_FIELD {
                        return Err(ApiError::bad_request("workspace_id is not a workspace id"));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                let text = String::from_utf8(bytes).map_err(|_| ApiError::bad_request("workspace_id is not UTF-8"))?;
                workspace_id = Some(text.trim().to_string()).filter(|w| !w.is_empty());
            }
            _ => {}
        }
    }
    let spool = spool.ok_or_else(|| ApiError::bad_request("the multipart body has no `bundle` field"))?;
    let target = import_target(&st);
    let importer = caller.participant;
    let rt = tokio::runtime::Handle::current();
    let imported = tokio::task::spawn_blocking(move || {
        let result = import::import_bundle(&rt, &target, &importer, workspace_id.as_deref(), &spool.path, &mut |_| {});
        drop(spool);
        result
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, data(json!({"id": imported.room_id, "imported_events": imported.imported_events}))))
}
