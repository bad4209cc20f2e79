//! Room operations against a real database: what the projector derives from the opening
//! events, and that both ways of appending (room operations and the send writer) run the
//! room's authorization rules, so a projection out of step with the events cannot let an event
//! through that peers would reject.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::group_commit::{CheckedSend, GroupCommit, References, SendRequest};
use crate::ratelimit::SendLimiter;

use crate::test_fixtures;

async fn store(dir: &std::path::Path) -> Store {
    test_fixtures::store(dir, "hs.test").await
}

async fn person(store: &Store, name: &str) -> Participant {
    test_fixtures::person(store, name, "hs.test").await
}

/// The fixture's group room with the local facts (alias, topic) the projector must keep.
fn group_room(creator: &Participant) -> Room {
    Room {
        room_alias: Some("#team:hs.test".into()),
        topic: Some("plans".into()),
        ..test_fixtures::group_room("room-t1", creator)
    }
}

#[tokio::test]
async fn the_projector_derives_the_room_from_its_opening_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(dir.path()).await;
    let alice = person(&store, "alice").await;
    let mut tx = store.write().await.expect("tx");
    populate_new_room(&mut tx, &group_room(&alice), &alice, &[]).await.expect("room");
    tx.commit().await.expect("commit");

    let view = store.room_view("room-t1", &alice.id).await.expect("view").expect("the create event made the row");
    assert_eq!((view.room.name.as_deref(), view.room.topic.as_deref()), (Some("Team"), Some("plans")));
    assert_eq!((view.room.creator_id.as_str(), view.room.room_type), (alice.id.as_str(), RoomType::Group));
    assert_eq!(view.room.room_alias.as_deref(), Some("#team:hs.test"), "a local fact");
    assert_eq!((view.my_membership, view.my_power_level), (Some(Membership::Join), Some(100)));
    // The service participant is seated by the events, never by a membership row.
    assert_eq!(view.members_count, 1);
    let mut tx = store.write().await.expect("tx");
    let service =
        service::joined_in(&mut tx, "room-t1").await.expect("read").expect("the service participant is joined");
    assert_eq!(service.fqid, "@_server:hs.test");
    assert!(tx.member("room-t1", &service.id).await.expect("read").is_none());
}

#[tokio::test]
async fn a_projection_out_of_step_with_the_events_lets_nothing_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(dir.path()).await;
    let alice = person(&store, "alice").await;
    let bob = person(&store, "bob").await;
    let mut tx = store.write().await.expect("tx");
    populate_new_room(&mut tx, &group_room(&alice), &alice, &[]).await.expect("room");
    // Bob's row says joined, but no event of the room ever joined him.
    tx.set_membership("room-t1", &bob.id, Membership::Join, Some(0), 0).await.expect("tamper");
    tx.commit().await.expect("commit");

    let content = json!({"msgtype": "swp.text", "body": "hi"});
    let mut tx = store.write().await.expect("tx");
    let spec = test_fixtures::message("room-t1", &bob, &content);
    let refused = append_by(&mut tx, spec, bob.fqid.clone()).await;
    assert!(matches!(refused, Err(ApiError::NotMember(_))), "room operations: {:?}", refused.err());
    drop(tx);

    let sends = GroupCommit::start(&store, Arc::new(SendLimiter::default())).expect("writer");
    let send = |who: &Participant| {
        let checked = CheckedSend {
            req: SendRequest { content: content.clone(), event_uuid: None, as_participant_id: None },
            content_json: crypto::to_canonical_string(&content).expect("canonical"),
            references: References::new(true),
        };
        let who = who.clone();
        let sends = &sends;
        async move { sends.send(&who, "room-t1", checked).await }
    };
    let refused = send(&bob).await;
    assert!(matches!(refused, Err(ApiError::NotMember(_))), "the send writer: {:?}", refused.err());
    // The room's own member passes, in the same way, from the cached auth events.
    assert!(send(&alice).await.is_ok());
    assert!(send(&alice).await.is_ok());
}

/// A DM made before the rules existed: its create event names no `room_version` and no
/// `dm_parties`, so the rules could never accept its events. It is not checked by them, and
/// keeps working under the homeserver's own checks (joins, leaves, sends).
#[tokio::test]
async fn a_room_made_before_the_rules_keeps_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let alice;
    let bob;
    {
        let store = store(dir.path()).await;
        alice = person(&store, "alice").await;
        bob = person(&store, "bob").await;
        let dm = Room {
            room_type: RoomType::Dm,
            name: None,
            topic: None,
            room_alias: None,
            dm_key: Some(rules::dm_key(&alice.id, &bob.id)),
            ..group_room(&alice)
        };
        let mut tx = store.write().await.expect("tx");
        populate_new_room(&mut tx, &dm, &alice, &[&bob]).await.expect("dm");
        // Rewrite the stored create event as the code before the rules wrote it.
        let (id, pdu) = tx.state_pdu("room-t1", event_types::CREATE).await.expect("read").expect("create");
        let mut old: Value = serde_json::from_str(&pdu.expect("wire form")).expect("json");
        for key in ["room_version", "dm_parties", "dm_service"] {
            old["content"].as_object_mut().expect("content").remove(key);
        }
        tx.set_pdu(&id, &old.to_string()).await.expect("rewrite");
        tx.commit().await.expect("commit");
    }
    // A new process: nothing of the rewritten event is cached.
    let store = store(dir.path()).await;
    leave(&store, &bob, "room-t1").await.expect("bob leaves");
    let back = join(&store, &bob, "room-t1").await.expect("bob comes back");
    assert_eq!((back.my_membership, back.my_power_level), (Some(Membership::Join), Some(100)));
    let sends = GroupCommit::start(&store, Arc::new(SendLimiter::default())).expect("writer");
    let content = json!({"msgtype": "swp.text", "body": "still here"});
    let checked = CheckedSend {
        req: SendRequest { content: content.clone(), event_uuid: None, as_participant_id: None },
        content_json: crypto::to_canonical_string(&content).expect("canonical"),
        references: References::new(true),
    };
    assert!(sends.send(&alice, "room-t1", checked).await.is_ok());
}

#[test]
fn a_redaction_drops_the_cached_event() {
    let cache = crate::storage::PduCache::default();
    let pdu = json!({
        "room_id": "room-1", "sender": "@a:hs.test", "origin": "hs.test", "origin_ts": 1,
        "event_type": "swp.room.name", "content": {"name": "x"}, "state_key": "",
        "prev_events": ["evt-p"], "auth_events": [], "depth": 2,
    });
    let id = "evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let first = cache.get_or_parse(id, &pdu.to_string()).expect("parse");
    assert!(Arc::ptr_eq(&first, &cache.get_or_parse(id, "not even JSON").expect("cached")), "parsed once");
    cache.forget(id);
    assert!(cache.get(id).is_none());
    let mut redacted = pdu.clone();
    redacted["content"] = json!({});
    assert!(cache.get_or_parse(id, &redacted.to_string()).expect("parse").content.is_empty());
}
