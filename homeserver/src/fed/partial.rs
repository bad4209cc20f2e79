//! Joins in stages (FEDERATION.md, "Joins"; Matrix's "faster joins"): a remote join asks
//! `send_join?omit_members=true`, so the answer leaves out the member events of everyone but
//! the joiner and a room of thousands of members is joined in about the time of a small one.
//! The room is then *partial* (`fed_partial_rooms`) until its state is complete:
//!
//! - its user reads and sends at once; its events go to the servers the join's answer named
//!   (besides those whose members it knows);
//! - events from peers are checked against their own auth events only where the state it holds
//!   lacks what the rules read, and taken provisionally (`WriteTx::persist`);
//! - it answers no `state/`, `state_ids/`, `make_join` or `send_join` for the room (404
//!   `SW_ROOM_NOT_FOUND`: a joiner asks another resident server);
//! - the room's `members` list says `meta.partial: true`.
//!
//! In the background, shortly after the join (so that the user's first requests go first), the
//! state at the join is fetched from the servers of the answer (`state/`, verified event by
//! event), the missing entries are added to the join's state group and to the current state,
//! and projected (the member list completes); what was taken provisionally since the join from
//! a sender the complete state does not show joined is soft-failed (no longer shown). A failed
//! attempt is tried again with back-off, and after a restart.

use std::time::Duration;

use federation::event::{Pdu, StateKey, parse_fqid, types};
use federation::wire::path;
use serde_json::Value;

use super::join::{MAX_JOIN_ANSWER_BYTES, peer_error, verify_all};
use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::storage::{EventStatus, PartialRoom};

/// The pause before the first attempt to complete a room's state.
const START_AFTER: Duration = Duration::from_millis(250);
/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Refuses what a server with a room's partial state must not answer.
pub async fn refuse_if_partial(st: &AppState, room_id: &str) -> ApiResult<()> {
    if st.store.is_partial(room_id).await? {
        return Err(ApiError::RoomNotFound);
    }
    Ok(())
}

/// Completes every partial room in the background (at start).
pub async fn resume_all(st: &AppState) {
    match st.store.partial_rooms().await {
        Ok(rooms) => {
            for room in rooms {
                spawn_completion(st.clone(), room);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list rooms joined in stages"),
    }
}

/// Completes the room's state in the background, trying again with back-off until it is done.
pub fn spawn_completion(st: AppState, room: PartialRoom) {
    tokio::spawn(async move {
        let mut pause = START_AFTER;
        loop {
            tokio::time::sleep(pause).await;
            match st.store.is_partial(&room.room_id).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => tracing::warn!(room_id = %room.room_id, error = %e, "cannot read the room's partial state"),
            }
            match complete(&st, &room).await {
                Ok(added) => {
                    tracing::info!(room_id = %room.room_id, added, "the state of a room joined in stages is complete");
                    return;
                }
                Err(e) => {
                    tracing::info!(room_id = %room.room_id, error = %e, "the room's state is not complete yet");
                    pause = (pause * 2).max(Duration::from_secs(1)).min(MAX_PAUSE);
                }
            }
        }
    });
}

/// One attempt: the state at the join from each server of the answer in turn.
async fn complete(st: &AppState, room: &PartialRoom) -> ApiResult<usize> {
    let active = st.fed.active()?;
    let mut last = ApiError::FedUnavailable("no server to ask for the room's state".into());
    for server in room.servers.iter().filter(|s| **s != st.fed.server_name) {
        let answer = match active
            .client
            .request_capped(
                server,
                "GET",
                &path::state(&room.room_id, &room.join_event_id),
                None,
                MAX_JOIN_ANSWER_BYTES,
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                last = peer_error(e);
                continue;
            }
        };
        let state = verify_all(st, answer.get("pdus")).await?;
        let chain = verify_all(st, answer.get("auth_chain")).await?;
        return store_complete_state(st, room, state, chain).await;
    }
    Err(last)
}

async fn store_complete_state(
    st: &AppState,
    room: &PartialRoom,
    state: Vec<(Pdu, Value)>,
    chain: Vec<(Pdu, Value)>,
) -> ApiResult<usize> {
    let room_id = room.room_id.as_str();
    let mut all: Vec<(Pdu, Value)> =
        chain.into_iter().chain(state.iter().cloned()).filter(|(p, _)| p.room_id == room_id).collect();
    all.sort_by(|a, b| (a.0.depth, &a.0.event_id).cmp(&(b.0.depth, &b.0.event_id)));
    all.dedup_by(|a, b| a.0.event_id == b.0.event_id);
    let ids: Vec<String> = all.iter().map(|(p, _)| p.event_id.clone()).collect();
    let stored = st.store.stored_event_ids(&ids).await?;
    let entries: Vec<(StateKey, String)> = state
        .iter()
        .filter(|(p, _)| p.room_id == room_id)
        .filter_map(|(p, _)| p.state_entry().map(|k| (k, p.event_id.clone())))
        .collect();
    let join_pos = st.store.event_position(room_id, &room.join_event_id).await?.unwrap_or(i64::MAX);

    let mut tx = st.store.write().await?;
    let now = crate::clock::now_secs();
    for (pdu, json) in all.iter().filter(|(p, _)| !stored.contains(&p.event_id)) {
        let s = crypto::to_canonical_string(json).map_err(ApiError::internal)?;
        tx.persist_unplaced(pdu, &s, EventStatus::Outlier).await?;
    }
    let added = tx.complete_partial_state(room_id, &room.join_event_id, &entries).await?;
    let by_id: std::collections::HashMap<&str, &Pdu> = state.iter().map(|(p, _)| (p.event_id.as_str(), p)).collect();
    let mut projected: Vec<&Pdu> = added.iter().filter_map(|id| by_id.get(id.as_str()).copied()).collect();
    projected.sort_by_key(|e| (e.event_type != types::POWER_LEVELS, e.depth));
    for pdu in &projected {
        if pdu.event_type == types::CREATE {
            continue;
        }
        if parse_fqid(&pdu.sender).is_some_and(|(_, s)| s != st.fed.server_name) {
            let own = (pdu.event_type == types::MEMBER && pdu.state_key.as_deref() == Some(pdu.sender.as_str()))
                .then(|| pdu.content.get("display_name").and_then(Value::as_str))
                .flatten();
            tx.ensure_foreign_participant(&pdu.sender, own, "default", now).await?;
        }
        crate::rooms::project::apply(&mut tx, pdu, None).await?;
    }
    let hidden = tx.soft_fail_unjoined_since(room_id, join_pos).await?;
    if hidden > 0 {
        tracing::info!(room_id, hidden, "events taken while the room's state was partial no longer show");
    }
    tx.clear_partial(room_id).await?;
    tx.commit().await?;
    Ok(projected.len())
}
