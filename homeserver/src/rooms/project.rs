//! The projector: the one place that changes the `rooms` and `memberships` rows a client
//! reads (name, topic, lifecycle, federation switch, memberships, power levels), each derived
//! from an accepted state event. Local room operations call it right after appending their
//! event; inbound events (next) will call it the same way.
//!
//! What an event does not carry (the room's workspace, alias, DM key and tenant: local
//! organisation) comes with the create event as [`LocalFacts`]. Service participants (see
//! [`super::service`]) are not people: their memberships stay in the event graph alone, so no
//! member list, count, capacity or read marker ever sees them.

use std::sync::Arc;

use federation::auth::power::Power;
use federation::auth::{CreateContent, Lifecycle, content};
use federation::event::Pdu;
use serde_json::Value;

use super::event_types;
use super::service;
use crate::error::{ApiError, ApiResult};
use crate::storage::{Membership, Room, RoomState, RoomType, WriteTx};

/// The local columns of a room that its create event does not carry.
pub struct LocalFacts<'a> {
    pub tenant_id: &'a str,
    pub workspace_id: &'a str,
    pub room_alias: Option<&'a str>,
    pub dm_key: Option<&'a str>,
}

/// Applies an accepted event, already stored and part of the room's current state, to the
/// projections. Timeline events change nothing here. `local` is needed for a create event only.
pub async fn apply(tx: &mut WriteTx, event: &Pdu, local: Option<&LocalFacts<'_>>) -> ApiResult<()> {
    let Some(state_key) = event.state_key.as_deref() else {
        return Ok(());
    };
    let room_id = event.room_id.as_str();
    let text = |key: &str| event.content.get(key).and_then(Value::as_str);
    match event.event_type.as_str() {
        event_types::CREATE => {
            let local = local.ok_or_else(|| ApiError::internal("a create event needs its local facts"))?;
            create(tx, event, local).await
        }
        event_types::MEMBER => member(tx, event, state_key).await,
        event_types::POWER_LEVELS => power_levels(tx, event).await,
        event_types::NAME => Ok(tx.set_room_name(room_id, text("name")).await?),
        event_types::TOPIC => Ok(tx.set_room_topic(room_id, text("topic").filter(|t| !t.is_empty())).await?),
        event_types::LIFECYCLE => {
            let state = match Lifecycle::of_state(Some(event)).map_err(auth_internal)? {
                Lifecycle::Open => RoomState::Open,
                Lifecycle::Archived => RoomState::Archived,
                Lifecycle::Closed => RoomState::Closed,
            };
            Ok(tx.set_room_state(room_id, state).await?)
        }
        event_types::FEDERATION => {
            let enabled = content::federation_enabled(event).map_err(auth_internal)?;
            Ok(tx.set_room_federated(room_id, enabled).await?)
        }
        _ => Ok(()),
    }
}

fn auth_internal(e: federation::auth::AuthError) -> ApiError {
    ApiError::internal(format!("an accepted event does not read: {e}"))
}

async fn create(tx: &mut WriteTx, event: &Pdu, local: &LocalFacts<'_>) -> ApiResult<()> {
    let room = CreateContent::of(event).map_err(auth_internal)?;
    let room_type: RoomType = room
        .room_type
        .as_deref()
        .and_then(|t| serde_json::from_value(Value::String(t.to_owned())).ok())
        .ok_or_else(|| ApiError::internal("a create event without a room type this server knows"))?;
    let creator = tx
        .participant_id_by_fqid(&event.sender)
        .await?
        .ok_or_else(|| ApiError::internal("the room's creator is not a participant here"))?;
    tx.insert_room(&Room {
        id: event.room_id.clone(),
        tenant_id: local.tenant_id.to_owned(),
        room_alias: local.room_alias.map(str::to_owned),
        room_type,
        name: None,
        topic: None,
        workspace_id: local.workspace_id.to_owned(),
        creator_id: creator,
        created_at: event.origin_ts,
        state: RoomState::Open,
        federated: false,
        dm_key: local.dm_key.map(str::to_owned),
    })
    .await?;
    Ok(())
}

async fn member(tx: &mut WriteTx, event: &Pdu, target: &str) -> ApiResult<()> {
    if service::is_service(target) {
        return Ok(());
    }
    let membership = match federation::auth::Membership::of(event).map_err(auth_internal)? {
        federation::auth::Membership::Join => Membership::Join,
        federation::auth::Membership::Invite => Membership::Invite,
        federation::auth::Membership::Leave => Membership::Leave,
        federation::auth::Membership::Ban => Membership::Ban,
    };
    let participant = match tx.participant_id_by_fqid(target).await? {
        Some(id) => id,
        // A member of another server (a remote join, or an invite of a remote participant)
        // gets its local record here; its display name comes with the event when it says one.
        None if federation::event::parse_fqid(target).is_some_and(|(_, server)| Some(server) != tx.server_name()) => {
            let display_name = event.content.get("display_name").and_then(Value::as_str);
            tx.ensure_foreign_participant(target, display_name, "default", crate::clock::now_secs()).await?.id
        }
        None => return Err(ApiError::internal("a member event about someone who is not a participant here")),
    };
    let power = level_of(tx, &event.room_id, target).await?;
    tx.set_membership(&event.room_id, &participant, membership, power, event.origin_ts).await?;
    Ok(())
}

/// `fqid`'s level in the room's current power-levels event (the creator's 100 before there is
/// one); `None` when the room's state events predate stored wire forms.
async fn level_of(tx: &mut WriteTx, room_id: &str, fqid: &str) -> ApiResult<Option<i64>> {
    let Some(create) = state_event(tx, room_id, event_types::CREATE).await? else {
        return Ok(None);
    };
    let power_levels = state_event(tx, room_id, event_types::POWER_LEVELS).await?;
    let power = Power::new(power_levels.as_deref(), &create.sender).map_err(auth_internal)?;
    Ok(Some(power.user(fqid)))
}

/// A room-wide state event (empty state key) of the current state, parsed; `None` when absent
/// or stored without a wire form.
pub(crate) async fn state_event(tx: &mut WriteTx, room_id: &str, event_type: &str) -> ApiResult<Option<Arc<Pdu>>> {
    let Some((event_id, Some(pdu))) = tx.state_pdu(room_id, event_type).await? else {
        return Ok(None);
    };
    let parsed = tx.pdu_cache().get_or_parse(&event_id, &pdu).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Some(parsed))
}

async fn power_levels(tx: &mut WriteTx, event: &Pdu) -> ApiResult<()> {
    let users = event.content.get("users").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    let users_default = event.content.get("users_default").and_then(Value::as_i64).unwrap_or(0);
    tx.project_power_levels(&event.room_id, &users.to_string(), users_default).await?;
    Ok(())
}
