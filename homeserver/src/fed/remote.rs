//! What the client API learns from peers on demand: foreign participants' profiles
//! (`profile/{local_id}`, cached for [`federation::peers::PROFILE_TTL_SECS`]) and media uploaded
//! on another server (`media/{media_id}`, fetched once, its hash checked, then local).
//!
//! No lock and no write transaction is held across a request to a peer: the peer is asked
//! first, then one short write stores the answer.

use federation::client::FedError;
use federation::peers::{self, RemoteProfile};
use federation::wire::path;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::media::{self, Upload};
use crate::storage::{MediaRow, Participant};

/// How many events naming a media id are read to find where it lives.
const MEDIA_MENTIONS_READ: i64 = 20;

fn unavailable(e: &FedError) -> ApiError {
    ApiError::FedUnavailable(e.to_string())
}

/// Asks the participant's server for its profile. `Ok(None)`: the server says there is no
/// such participant.
async fn fetch_profile(st: &AppState, fqid: &str) -> ApiResult<Option<RemoteProfile>> {
    let (local_id, server) = crate::ids::parse_fqid(fqid).ok_or_else(|| ApiError::bad_request("not an fqid"))?;
    let active = st.fed.active()?;
    match active.client.request(server, "GET", &path::profile(local_id), None).await {
        Ok(data) => peers::parse_profile(&data, fqid)
            .map(Some)
            .map_err(|e| ApiError::FedUnavailable(format!("{server} answered badly: {e}"))),
        Err(FedError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Stores a fetched profile: creates the local record if need be, updates its display name
/// and when it was fetched.
async fn store_profile(st: &AppState, profile: &RemoteProfile, fallback_tenant: &str) -> ApiResult<Participant> {
    let now = now_secs();
    let mut tx = st.store.write().await?;
    let p = tx.ensure_foreign_participant(&profile.fqid, Some(&profile.display_name), fallback_tenant, now).await?;
    tx.update_foreign_profile(&p.id, &profile.display_name, now).await?;
    tx.commit().await?;
    Ok(Participant { display_name: profile.display_name.clone(), ..p })
}

/// Refreshes a foreign participant from its server. `cached` is the local record, if any: it is
/// answered when the server cannot be reached (unless `strict`), and a server that says the
/// participant does not exist is `SW_PARTICIPANT_NOT_FOUND` either way.
async fn refresh(
    st: &AppState,
    fqid: &str,
    cached: Option<Participant>,
    fallback_tenant: &str,
    strict: bool,
) -> ApiResult<Participant> {
    match fetch_profile(st, fqid).await {
        Ok(Some(profile)) => store_profile(st, &profile, fallback_tenant).await,
        Ok(None) => Err(ApiError::ParticipantNotFound(format!("{fqid} does not exist on its server"))),
        Err(e) => match cached {
            Some(p) if !strict => {
                tracing::debug!(%fqid, error = %e, "answering a cached remote profile");
                Ok(p)
            }
            _ => Err(e),
        },
    }
}

fn is_foreign(st: &AppState, p_server: &str) -> bool {
    p_server != st.fed.server_name
}

/// Finds a participant by `participant_id` or `fqid`, asking its server when it is foreign and
/// not known here yet or its cached profile is stale. Local participants are answered from
/// storage alone. Service participants (`@_server:…`) have no profile to fetch.
pub async fn resolve_participant(st: &AppState, id_or_fqid: &str, fallback_tenant: &str) -> ApiResult<Participant> {
    let found = crate::api::workspaces::resolve_participant(&st.store, id_or_fqid).await;
    let cached = match found {
        Ok(p) => Some(p),
        Err(ApiError::ParticipantNotFound(_)) if id_or_fqid.starts_with('@') => None,
        Err(e) => return Err(e),
    };
    let fqid = cached.as_ref().map_or(id_or_fqid, |p| p.fqid.as_str()).to_string();
    let Some((local_id, server)) = crate::ids::parse_fqid(&fqid) else {
        return cached.ok_or_else(|| ApiError::ParticipantNotFound(format!("no participant {id_or_fqid}")));
    };
    if !is_foreign(st, server) || crate::rooms::service::is_reserved_local_id(local_id) {
        return cached.ok_or_else(|| ApiError::ParticipantNotFound(format!("no participant {id_or_fqid}")));
    }
    if let Some(p) = &cached
        && !peers::profile_is_stale(st.store.profile_fetched_at(&p.id).await?, now_secs())
    {
        return Ok(p.clone());
    }
    refresh(st, &fqid, cached, fallback_tenant, false).await
}

/// Refetches a foreign participant's profile now (the admin's refresh): an unreachable server
/// is `SW_FED_UNAVAILABLE` even when a cached record exists.
pub async fn refresh_participant(st: &AppState, id_or_fqid: &str, fallback_tenant: &str) -> ApiResult<Participant> {
    let cached = match crate::api::workspaces::resolve_participant(&st.store, id_or_fqid).await {
        Ok(p) => Some(p),
        Err(ApiError::ParticipantNotFound(_)) if id_or_fqid.starts_with('@') => None,
        Err(e) => return Err(e),
    };
    let fqid = cached.as_ref().map_or(id_or_fqid, |p| p.fqid.as_str()).to_string();
    let (local_id, server) = crate::ids::parse_fqid(&fqid).ok_or_else(|| ApiError::bad_request("not an fqid"))?;
    if !is_foreign(st, server) {
        return Err(ApiError::bad_request(format!("{fqid} is a participant of this server, not a foreign one")));
    }
    if crate::rooms::service::is_reserved_local_id(local_id) {
        return Err(ApiError::bad_request(format!("{fqid} is a server's service participant: it has no profile")));
    }
    refresh(st, &fqid, cached, fallback_tenant, true).await
}

/// Where a media id this server does not hold lives, and who uploaded it (an fqid): the
/// server named by the client (`?server=`), else the origin of the newest accepted event naming
/// it in a room the caller is joined to. `None`: nothing says.
async fn media_source(
    st: &AppState,
    caller: &Participant,
    media_id: &str,
    server: Option<&str>,
) -> ApiResult<Option<(String, Option<String>)>> {
    let mentions = st.store.events_mentioning_media(&caller.id, media_id, MEDIA_MENTIONS_READ).await?;
    let from_event = mentions.into_iter().find_map(|(content, sender)| {
        let content: serde_json::Value = serde_json::from_str(&content).ok()?;
        if crate::messages::media_id_of(&content) != Some(media_id) {
            return None;
        }
        let origin = crate::ids::parse_fqid(&sender)?.1.to_string();
        Some((origin, sender))
    });
    Ok(peers::media_source(server, from_event))
}

/// The media row for `media_id`: the local one, or, for media of another server, fetched from
/// its origin on first use (hash checked against `X-ScaiWave-Sha256`, stored content-addressed
/// like an upload, the row marked with `origin_server`). Media nobody here can place is
/// `SW_MEDIA_NOT_FOUND`; an origin that cannot be reached or sends bytes that do not match its
/// hash is `SW_FED_UNAVAILABLE`, and nothing is stored.
pub async fn media_row(
    st: &AppState,
    caller: &Participant,
    media_id: &str,
    server: Option<&str>,
) -> ApiResult<MediaRow> {
    if let Some(row) = st.store.media(media_id).await? {
        return Ok(row);
    }
    if let Some(s) = server {
        federation::parse_server_name(s).map_err(|e| ApiError::bad_request(format!("server: {e}")))?;
    }
    let server = server.filter(|s| *s != st.fed.server_name);
    let Some((origin, uploader)) = media_source(st, caller, media_id, server).await? else {
        return Err(ApiError::MediaNotFound);
    };
    if origin == st.fed.server_name {
        return Err(ApiError::MediaNotFound);
    }
    let active = st.fed.active()?;
    let cap = usize::try_from(st.config.max_upload_bytes).unwrap_or(usize::MAX);
    let answer = active
        .client
        .request_raw(&origin, "GET", &path::media(media_id), None, cap)
        .await
        .map_err(|e| unavailable(&e))?;
    match answer.status {
        200 => {}
        404 => return Err(ApiError::MediaNotFound),
        s => return Err(ApiError::FedUnavailable(format!("{origin} answered HTTP {s} for media {media_id}"))),
    }
    let computed = hex(&Sha256::digest(&answer.body));
    peers::check_media_hash(answer.sha256.as_deref(), &computed)
        .map_err(|e| ApiError::FedUnavailable(format!("media {media_id} from {origin}: {e}")))?;

    let mut upload = Upload::begin(&st.config.data_dir, st.config.max_upload_bytes).await?;
    upload.write(&answer.body).await?;
    let content = upload.finish().await?;
    // The sender of the event that named it, else the origin's service participant: the
    // federation endpoint does not say who uploaded it.
    let uploader = uploader.unwrap_or_else(|| format!("@{}:{origin}", crate::rooms::service::LOCAL_ID));
    let uploader_id = {
        let mut tx = st.store.write().await?;
        let p = tx.ensure_foreign_participant(&uploader, None, &caller.tenant_id, now_secs()).await?;
        tx.commit().await?;
        p.id
    };
    let row = MediaRow {
        media_id: media_id.to_string(),
        sha256: content.sha256,
        size: i64::try_from(content.size).map_err(|_| ApiError::internal("media size overflows i64"))?,
        mime_type: media::clean_mime_type(answer.content_type.as_deref()),
        filename: None,
        uploader_id,
        created_at: now_secs(),
    };
    Ok(st.store.insert_remote_media(&row, &origin).await?)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
