//! The server's service participant, `@_server:<server name>`: the member through which this
//! server's admins act in the rooms this server creates. Peers check every event against the
//! room's rules, which know members and power levels, not server admins; so each room created
//! here seats the service participant at power 100, and an admin's close, archive or restore
//! is sent by it, with `content.sent_by` naming the admin (as for a send on behalf of another).
//!
//! It is not a person: nobody can register its name (usernames never start with `_`), it has
//! no password, and the projector keeps no membership row for it, so member lists, counts,
//! capacity, the directory, exports and read markers never see it. Its memberships live in the
//! room's state alone, which is also what decides where it may act: only where it is joined.
//! In a room created elsewhere, or here before service participants existed, an admin has only
//! the power the room gives them.

use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::storage::{Participant, WriteTx};

use super::event_types;

/// The local part of every server's service participant.
pub const LOCAL_ID: &str = "_server";

/// Whether `fqid` is a service participant, of this server or another.
pub fn is_service(fqid: &str) -> bool {
    ids::parse_fqid(fqid).is_some_and(|(local, _)| local == LOCAL_ID)
}

/// Local parts no account may take: the service participant's, and the rest of the `_`
/// prefix, kept for the server.
pub fn is_reserved_local_id(local_id: &str) -> bool {
    local_id.starts_with('_')
}

/// This server's service participant, created on first use.
pub async fn ensure(tx: &mut WriteTx, fallback_tenant: &str) -> ApiResult<Participant> {
    let server_name = tx.signer().ok_or_else(|| ApiError::internal("no signing key loaded"))?.server_name.clone();
    Ok(tx
        .ensure_service_participant(&ids::new_participant_id(), LOCAL_ID, &server_name, fallback_tenant, now_secs())
        .await?)
}

/// This server's service participant if it is joined to the room: the only rooms where it acts.
pub async fn joined_in(tx: &mut WriteTx, room_id: &str) -> ApiResult<Option<Participant>> {
    let Some(signer) = tx.signer() else {
        return Ok(None);
    };
    let fqid = format!("@{LOCAL_ID}:{}", signer.server_name);
    let Some((event_id, Some(pdu))) = tx.state_pdu_keyed(room_id, event_types::MEMBER, &fqid).await? else {
        return Ok(None);
    };
    let event = tx.pdu_cache().get_or_parse(&event_id, &pdu).map_err(|e| ApiError::internal(e.to_string()))?;
    if federation::auth::Membership::of(&event) != Ok(federation::auth::Membership::Join) {
        return Ok(None);
    }
    Ok(tx.participant_by_fqid(&fqid).await?)
}
