//! The tail of the inbound pipeline against a real database: events a peer signed, stored
//! through [`store_event`], then read through the client API's functions, which must show them
//! as they show local ones (sender, edits, reactions, redactions, unread counts), and
//! rejected as the rules say.

use federation::event::{Pdu, types};
use federation::verify::Verified;
use serde_json::{Value, json};

use super::*;
use crate::storage::{Participant, Room, RoomType, Store};
use crate::test_fixtures;

const ROOM: &str = "room-in1";
const BOB: &str = "@bob:beta.test";

async fn store(dir: &std::path::Path) -> Store {
    test_fixtures::store(dir, "hs.test").await
}

async fn alice(store: &Store) -> Participant {
    test_fixtures::person(store, "alice", "hs.test").await
}

/// A public room of Alice's, federated.
async fn public_room(store: &Store, alice: &Participant) {
    let room = Room {
        room_type: RoomType::Public,
        name: Some("Lobby".into()),
        federated: true,
        ..test_fixtures::group_room(ROOM, alice)
    };
    let mut tx = store.write().await.expect("tx");
    crate::rooms::populate_new_room(&mut tx, &room, alice, &[]).await.expect("room");
    tx.commit().await.expect("commit");
}

/// The peer beta.test: builds events on top of what it names, signs them with its key.
struct Peer {
    key: crypto::ServerKey,
    ts: i64,
}

impl Peer {
    fn event(
        &mut self,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[(&str, i64)],
        auth: &[&str],
    ) -> Verified {
        self.ts += 1;
        let depth = prev.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
        let prev_ids: Vec<&str> = prev.iter().map(|(id, _)| *id).collect();
        let mut value = json!({
            "room_id": ROOM, "sender": BOB, "origin": "beta.test", "origin_ts": self.ts,
            "event_type": event_type, "content": content, "prev_events": prev_ids, "auth_events": auth,
            "depth": depth, "event_uuid": format!("u{}", self.ts),
        });
        if let Some(k) = state_key {
            value["state_key"] = json!(k);
        }
        let (id, signed) = crypto::build_and_sign_event(value, "beta.test", &self.key).expect("signs");
        let pdu = Pdu::parse(&id, &signed).expect("parses");
        Verified { pdu, json: signed, redacted: false }
    }
}

async fn state_id(store: &Store, event_type: &str, key: &str) -> String {
    let mut tx = store.write().await.expect("tx");
    tx.state_pdu_keyed(ROOM, event_type, key).await.expect("read").expect("in the state").0
}

async fn head(store: &Store) -> (String, i64) {
    let mut tx = store.write().await.expect("tx");
    let h = tx.graph_head(ROOM).await.expect("head");
    h.extremities[0].clone()
}

#[tokio::test]
async fn remote_messages_edits_reactions_and_redactions_show_as_local_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(dir.path()).await;
    let alice = alice(&store).await;
    public_room(&store, &alice).await;
    let mut peer = Peer { key: crypto::ServerKey::generate("b1").expect("key"), ts: 1_000 };
    let create = state_id(&store, types::CREATE, "").await;
    let pl = state_id(&store, types::POWER_LEVELS, "").await;
    let jr = state_id(&store, types::JOIN_RULES, "").await;

    // Bob joins the public room by his own event.
    let top = head(&store).await;
    let join = peer.event(
        types::MEMBER,
        Some(BOB),
        json!({"membership": "join", "display_name": "Bob"}),
        &[(&top.0, top.1)],
        &[&create, &pl, &jr],
    );
    let p = store_event(&store, &join, None).await.expect("stored");
    assert_eq!(p.status, EventStatus::Accepted);
    let bob = store.participant_by_fqid(BOB).await.expect("read").expect("Bob's local record");
    assert_eq!(bob.display_name, "Bob");
    let member = store.member(ROOM, &bob.id).await.expect("read").expect("Bob's membership");
    assert_eq!(member.member.membership, crate::storage::Membership::Join);
    assert!(store.room_servers(ROOM).await.expect("servers").contains(&"beta.test".to_string()));

    let join_id = join.pdu.event_id.clone();
    let msg = peer.event(
        types::MESSAGE,
        None,
        json!({"msgtype": "swp.text", "body": "hello"}),
        &[(&join_id, join.pdu.depth)],
        &[&create, &pl, &join_id],
    );
    assert_eq!(store_event(&store, &msg, None).await.expect("stored").status, EventStatus::Accepted);
    let msg_id = msg.pdu.event_id.clone();
    let edit = peer.event(
        EDIT,
        None,
        json!({"event_id": msg_id, "new_content": {"msgtype": "swp.text", "body": "hello, all"}}),
        &[(&msg_id, msg.pdu.depth)],
        &[&create, &pl, &join_id],
    );
    store_event(&store, &edit, None).await.expect("stored");
    let react = peer.event(
        REACTION,
        None,
        json!({"event_id": msg_id, "emoji": "👍"}),
        &[(&edit.pdu.event_id, edit.pdu.depth)],
        &[&create, &pl, &join_id],
    );
    store_event(&store, &react, None).await.expect("stored");
    // A second message, then redacted by Bob himself.
    let gone = peer.event(
        types::MESSAGE,
        None,
        json!({"msgtype": "swp.text", "body": "oops"}),
        &[(&react.pdu.event_id, react.pdu.depth)],
        &[&create, &pl, &join_id],
    );
    store_event(&store, &gone, None).await.expect("stored");
    let redact = peer.event(
        REDACTION,
        None,
        json!({"redacts": gone.pdu.event_id}),
        &[(&gone.pdu.event_id, gone.pdu.depth)],
        &[&create, &pl, &join_id],
    );
    assert_eq!(store_event(&store, &redact, None).await.expect("stored").status, EventStatus::Accepted);
    // Storing the same event again writes nothing.
    assert!(store_event(&store, &redact, None).await.expect("stored").existed);

    let page = crate::messages::list(&store, &alice, ROOM, None, false, 50).await.expect("page");
    let shown = |id: &str| {
        let row = page.messages.iter().find(|m| m.event_id == id).expect("in the page");
        crate::messages::message_view(row, &page.reactions)
    };
    let hello = shown(&msg_id);
    assert_eq!(hello["sender_id"], json!(bob.id), "a participant id, as for a local sender");
    assert_eq!(hello["sender_fqid"], json!(BOB));
    assert_eq!(hello["content"]["body"], json!("hello, all"), "the edit is folded in");
    assert_eq!(hello["original_content"]["body"], json!("hello"));
    assert!(hello["edited_at"].is_string());
    assert_eq!(hello["reactions"], json!([{"emoji": "👍", "count": 1, "reacted_by_me": false}]));
    assert_eq!(hello["event_uuid"], json!(msg.json["event_uuid"]));
    let oops = shown(&gone.pdu.event_id);
    assert_eq!(oops["content"], json!({}), "the redaction wiped the body");
    assert!(oops["redacted_at"].is_string());
    let edit_row = store.message(ROOM, &edit.pdu.event_id).await.expect("read").expect("stored");
    assert_eq!(edit_row.relates_to.as_deref(), Some(msg_id.as_str()));
    // Alice has not read anything Bob sent.
    let unread = store.unread_count(ROOM, &alice.id, 0).await.expect("unread");
    assert!(unread >= 2, "Bob's messages count as unread: {unread}");

    // Bob, at level 0, cannot change the power levels: the state before it refuses it.
    let grab = peer.event(
        types::POWER_LEVELS,
        Some(""),
        json!({"users": {BOB: 100}, "users_default": 0}),
        &[(&redact.pdu.event_id, redact.pdu.depth)],
        &[&create, &pl, &join_id],
    );
    let p = store_event(&store, &grab, None).await.expect("stored");
    assert_eq!(p.status, EventStatus::Rejected);
    assert!(matches!(verdict_of(p.status), Verdict::Rejected { code, .. } if code == "SW_ROOM_FORBIDDEN"));
    assert_eq!(state_id(&store, types::POWER_LEVELS, "").await, pl, "the power levels did not change");
}

#[tokio::test]
async fn peers_read_only_accepted_events_of_rooms_they_were_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(dir.path()).await;
    let alice = alice(&store).await;
    public_room(&store, &alice).await;
    let mut peer = Peer { key: crypto::ServerKey::generate("b1").expect("key"), ts: 1_000 };
    let create = state_id(&store, types::CREATE, "").await;
    let pl = state_id(&store, types::POWER_LEVELS, "").await;
    let jr = state_id(&store, types::JOIN_RULES, "").await;
    assert!(!store.server_ever_in_room(ROOM, "beta.test").await.expect("read"));
    let top = head(&store).await;
    let join =
        peer.event(types::MEMBER, Some(BOB), json!({"membership": "join"}), &[(&top.0, top.1)], &[&create, &pl, &jr]);
    store_event(&store, &join, None).await.expect("stored");
    assert!(store.server_ever_in_room(ROOM, "beta.test").await.expect("read"));
    let join_id = join.pdu.event_id.clone();
    let mut prev = (join_id.clone(), join.pdu.depth);
    let mut ids = Vec::new();
    for n in 0..30 {
        let m = peer.event(
            types::MESSAGE,
            None,
            json!({"msgtype": "swp.text", "body": format!("m{n}")}),
            &[(&prev.0, prev.1)],
            &[&create, &pl, &join_id],
        );
        store_event(&store, &m, None).await.expect("stored");
        prev = (m.pdu.event_id.clone(), m.pdu.depth);
        ids.push(m.pdu.event_id.clone());
    }
    // The state at Bob's join holds it, with its auth chain.
    let state = store.state_ids_at(ROOM, &join_id, 100).await.expect("read").expect("accepted");
    assert!(state.contains(&join_id) && state.contains(&create) && state.contains(&pl));
    let chain = store.auth_chain_ids(ROOM, &state, 100).await.expect("chain");
    assert!(chain.contains(&create));
    assert!(store.state_ids_at("room-other", &join_id, 100).await.expect("read").is_none(), "not of that room");

    // Missing events: walking back from the newest, stopping at the earliest given.
    let latest = vec![ids[29].clone()];
    let got = store.missing_events(ROOM, &[ids[19].clone()], &latest, 20, 0).await.expect("walk");
    let got_ids: Vec<&str> = got.iter().filter_map(|v| v.get("content")?.get("body")?.as_str()).collect();
    assert_eq!(got_ids, ["m28", "m27", "m26", "m25", "m24", "m23", "m22", "m21", "m20"]);
    let capped = store.missing_events(ROOM, &[], &latest, 5, 0).await.expect("walk");
    assert_eq!(capped.len(), 5);

    // Backfill from the newest: the given event included, bounded by the limit.
    let back = store.backfill_events(ROOM, &latest, 10).await.expect("backfill");
    assert_eq!(back.len(), 10);
    assert!(back.iter().all(|v| v["room_id"] == json!(ROOM)));
    assert!(store.backfill_events("room-other", &latest, 10).await.expect("backfill").is_empty());

    let members = store.fed_members(ROOM).await.expect("members");
    assert!(members.iter().any(|m| m.fqid == BOB && m.membership == "join" && m.server_name == "beta.test"));

    // A received transaction's answer is kept and found again.
    let answer = json!({"pdus": {ids[0].clone(): {}}});
    store.save_received_txn("beta.test", "t1", &answer, federation::now_ms() as i64).await.expect("save");
    store.save_received_txn("beta.test", "t1", &json!({"pdus": {}}), federation::now_ms() as i64).await.expect("save");
    assert_eq!(store.received_txn("beta.test", "t1").await.expect("read"), Some(answer), "the first answer wins");
    assert_eq!(store.received_txn("gamma.test", "t1").await.expect("read"), None);
}
