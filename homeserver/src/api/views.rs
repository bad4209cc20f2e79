//! The JSON shapes of the client API, built from storage rows.

use serde_json::{Value, json};

use crate::clock::{iso8601, now_secs};
use crate::storage::{MemberRow, MemberWithParticipant, Participant, RoomType, RoomView, Workspace};

pub fn participant(p: &Participant) -> Value {
    json!({
        "participant_id": p.id,
        "fqid": p.fqid,
        "local_id": p.local_id,
        "server_name": p.server_name,
        "display_name": p.display_name,
        "tenant_id": p.tenant_id,
    })
}

pub fn room(v: &RoomView) -> Value {
    let r = &v.room;
    json!({
        "id": r.id,
        "room_alias": r.room_alias,
        "room_type": r.room_type,
        "name": r.name,
        "topic": r.topic,
        "is_public": r.room_type == RoomType::Public,
        "workspace_id": r.workspace_id,
        "tenant_id": r.tenant_id,
        "creator_id": r.creator_id,
        "created_at": iso8601(r.created_at),
        "members_count": v.members_count,
        "state": r.state,
        "federated": r.federated,
        "membership": v.my_membership,
        "power_level": v.my_power_level,
    })
}

fn live_mute(until: Option<i64>) -> Option<i64> {
    until.filter(|u| *u > now_secs())
}

/// A member's room-specific fields, without the participant.
pub fn membership(m: &MemberRow) -> Value {
    json!({
        "room_id": m.room_id,
        "participant_id": m.participant_id,
        "membership": m.membership,
        "power_level": m.power_level,
        "joined_at": m.joined_at.map(iso8601),
        "notification_mode": m.notification_mode,
        "muted_until": live_mute(m.muted_until),
    })
}

pub fn member(m: &MemberWithParticipant) -> Value {
    let mut v = participant(&m.participant);
    let extra = membership(&m.member);
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

pub fn workspace(w: &Workspace) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "owner_id": w.owner_id,
        "tenant_id": w.tenant_id,
        "personal": w.personal,
        "created_at": iso8601(w.created_at),
    })
}

pub fn data(v: Value) -> axum::Json<Value> {
    axum::Json(json!({ "data": v }))
}
