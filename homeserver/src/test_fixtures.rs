//! The setup the library's tests share: a store with a signer and the `default` tenant, a
//! local participant with a personal workspace, a group room row. One copy, so a new column
//! or a changed rule is fixed in one place for every test.

use crate::config::Durability;
use crate::rooms::{NewEventSpec, append_by, event_types};
use crate::storage::{EventSigner, Participant, Room, RoomState, RoomType, Store, Tenant, Workspace};

/// A store in `dir`, signing as `server_name` with the fixed test key, with a `default` tenant
/// whose limits no test reaches.
pub(crate) async fn store(dir: &std::path::Path, server_name: &str) -> Store {
    let url = crate::config::sqlite_url(dir);
    let key = crypto::ServerKey::from_seed("1", &[7; 32]).expect("key");
    let store = Store::open(&url, Durability::Normal).await.expect("store");
    let store = store.with_signer(EventSigner { server_name: server_name.into(), key });
    let tenant = Tenant {
        id: "default".into(),
        name: "Default".into(),
        max_participants: 100,
        send_rate_per_s: 1000,
        send_burst: 1000,
        created_at: 0,
    };
    store.create_tenant(&tenant).await.expect("tenant");
    store
}

/// A local participant `p-{local_id}` of the `default` tenant, with the personal workspace
/// `ws-{local_id}`.
pub(crate) async fn person(store: &Store, local_id: &str, server_name: &str) -> Participant {
    let p = Participant {
        id: format!("p-{local_id}"),
        tenant_id: "default".into(),
        local_id: local_id.into(),
        server_name: server_name.into(),
        fqid: format!("@{local_id}:{server_name}"),
        display_name: local_id.into(),
        is_admin: false,
        created_at: 0,
    };
    let ws = Workspace {
        id: format!("ws-{local_id}"),
        tenant_id: "default".into(),
        owner_id: p.id.clone(),
        name: local_id.into(),
        personal: true,
        created_at: 0,
    };
    assert!(store.create_participant(&p, None, &ws).await.expect("participant"));
    p
}

/// An open, unfederated group room "Team" in the creator's personal workspace, without alias
/// or topic (tests that need other fields override them with `Room { .., ..group_room(..) }`).
pub(crate) fn group_room(id: &str, creator: &Participant) -> Room {
    Room {
        id: id.into(),
        tenant_id: "default".into(),
        room_alias: None,
        room_type: RoomType::Group,
        name: Some("Team".into()),
        topic: None,
        workspace_id: format!("ws-{}", creator.local_id),
        creator_id: creator.id.clone(),
        created_at: 0,
        state: RoomState::Open,
        federated: false,
        dm_key: None,
    }
}

/// The spec of a plain message by `who` in `room_id`.
pub(crate) fn message<'a>(room_id: &'a str, who: &'a Participant, content: &'a serde_json::Value) -> NewEventSpec<'a> {
    NewEventSpec {
        room_id,
        sender_id: &who.id,
        event_type: event_types::MESSAGE,
        state_key: None,
        content,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
    }
}

/// `who` says `body` in `room_id` through the room operations (rules checked), committed.
pub(crate) async fn say(store: &Store, room_id: &str, who: &Participant, body: &str) {
    let content = serde_json::json!({"msgtype": "swp.text", "body": body});
    let mut tx = store.write().await.expect("tx");
    append_by(&mut tx, message(room_id, who, &content), who.fqid.clone()).await.expect("append");
    tx.commit().await.expect("commit");
}
