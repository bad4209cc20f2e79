//! The event graph's storage, with a room built by a peer: events signed by another server's
//! key, stored through [`WriteTx::persist`] in the orders a network delivers them.

use std::collections::HashMap;

use federation::auth::RoomVersion;
use federation::event::{EventId, Pdu, StateMap, types};
use serde_json::{Value, json};

use super::*;

const ROOM: &str = "room-peer";
const BOB: &str = "@bob:beta.test";
const CAROL: &str = "@carol:beta.test";
const DAVE: &str = "@dave:beta.test";

/// The peer: signs what it builds with its own key, keeps every event.
struct Peer {
    key: crypto::ServerKey,
    events: HashMap<EventId, (Pdu, String)>,
    ts: i64,
}

impl Peer {
    fn new() -> Peer {
        Peer { key: crypto::ServerKey::generate("p1").expect("key"), events: HashMap::new(), ts: 100 }
    }

    /// An event with these parents and auth events; depth one more than the deepest parent.
    fn event(
        &mut self,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[&str],
        auth: &[&str],
    ) -> String {
        self.ts += 1;
        let depth = prev.iter().map(|p| self.events[*p].0.depth).max().unwrap_or(0) + 1;
        let mut value = json!({
            "room_id": ROOM, "sender": sender, "origin": "beta.test", "origin_ts": self.ts,
            "event_type": event_type, "content": content, "prev_events": prev, "auth_events": auth,
            "depth": depth, "event_uuid": format!("u{}", self.ts),
        });
        if let Some(k) = state_key {
            value["state_key"] = json!(k);
        }
        let (id, signed) = crypto::build_and_sign_event(value, "beta.test", &self.key).expect("signs");
        let pdu = Pdu::parse(&id, &signed).expect("parses");
        let json = crypto::to_canonical_string(&signed).expect("canonical");
        self.events.insert(id.clone(), (pdu, json));
        id
    }

    fn pdu(&self, id: &str) -> &Pdu {
        &self.events[id].0
    }
}

/// Create, Bob's join, power levels (Bob 100), a public join rule, Carol's join.
struct Base {
    create: String,
    bob: String,
    pl: String,
    jr: String,
    carol: String,
}

fn base(peer: &mut Peer) -> Base {
    let create = peer.event(BOB, types::CREATE, Some(""), json!({"creator": BOB, "room_type": "group"}), &[], &[]);
    let bob = peer.event(BOB, types::MEMBER, Some(BOB), member("join"), &[&create], &[&create]);
    let pl = peer.event(BOB, types::POWER_LEVELS, Some(""), power_levels(), &[&bob], &[&create, &bob]);
    let jr =
        peer.event(BOB, types::JOIN_RULES, Some(""), json!({"join_rule": "public"}), &[&pl], &[&create, &bob, &pl]);
    let carol = peer.event(CAROL, types::MEMBER, Some(CAROL), member("join"), &[&jr], &[&create, &pl, &jr]);
    Base { create, bob, pl, jr, carol }
}

fn member(m: &str) -> Value {
    json!({"membership": m, "display_name": "someone"})
}

fn power_levels() -> Value {
    json!({
        "users": {BOB: 100}, "users_default": 0, "events_default": 0, "state_default": 50,
        "invite": 0, "kick": 50, "ban": 50, "redact": 50,
    })
}

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&crate::config::sqlite_url(dir.path()), Durability::Normal).await.expect("open");
    (dir, store)
}

async fn persist(store: &Store, peer: &Peer, id: &str) -> Persisted {
    let mut tx = store.write().await.expect("write");
    let (pdu, json) = &peer.events[id];
    let done = tx.persist(pdu, json).await.expect("persist");
    tx.commit().await.expect("commit");
    done
}

async fn persist_all(store: &Store, peer: &Peer, ids: &[&str]) {
    for id in ids {
        let p = persist(store, peer, id).await;
        assert_eq!(p.status, EventStatus::Accepted, "{id}");
    }
}

async fn extremities(store: &Store) -> Vec<String> {
    let mut x: Vec<String> = sqlx::query_scalar("SELECT event_id FROM room_extremities WHERE room_id = $1")
        .bind(ROOM)
        .fetch_all(&store.pool)
        .await
        .expect("extremities");
    x.sort();
    x
}

async fn room_state(store: &Store) -> StateMap<EventId> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT event_type, state_key, event_id FROM room_state WHERE room_id = $1")
            .bind(ROOM)
            .fetch_all(&store.pool)
            .await
            .expect("room_state");
    rows.into_iter().map(|(t, k, id)| ((t, k), id)).collect()
}

/// The current state as its state group holds it.
async fn current_group_state(store: &Store) -> StateMap<EventId> {
    let group: i64 = sqlx::query_scalar("SELECT state_group FROM room_current WHERE room_id = $1")
        .bind(ROOM)
        .fetch_one(&store.pool)
        .await
        .expect("room_current");
    let mut tx = store.write().await.expect("write");
    let state = tx.state_group(group).await.expect("group");
    state.into_iter().map(|(k, (_, id))| (k, id)).collect()
}

async fn page(store: &Store) -> Vec<String> {
    let rows = store.message_page(&PageQuery { room_id: ROOM, from: None, forward: true, limit: 100 }).await;
    rows.expect("page").into_iter().map(|r| r.message.event_id).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn key(t: &str, k: &str) -> (String, String) {
    (t.to_owned(), k.to_owned())
}

/// A fork whose merge arrives before one of its parents: the late parent becomes no extremity,
/// and the states of the merge (and the room's) are computed again with it.
#[tokio::test]
async fn a_parent_arriving_after_its_child_keeps_extremities_and_state_right() {
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    let auth = [b.create.as_str(), b.pl.as_str(), b.bob.as_str()];
    let name = peer.event(BOB, types::NAME, Some(""), json!({"name": "A"}), &[&b.carol], &auth);
    let topic = peer.event(BOB, types::TOPIC, Some(""), json!({"topic": "B"}), &[&b.carol], &auth);
    let merge = peer.event(BOB, types::MESSAGE, None, json!({"body": "merge"}), &[&name, &topic], &auth);

    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol, &name]).await;
    assert_eq!(extremities(&store).await, vec![name.clone()]);
    // The merge arrives before `topic`: it is the extremity, `topic` waits as a missing parent.
    assert_eq!(persist(&store, &peer, &merge).await.status, EventStatus::Accepted);
    assert_eq!(extremities(&store).await, vec![merge.clone()]);
    assert_eq!(room_state(&store).await.get(&key(types::TOPIC, "")), None);
    let waiting: Vec<String> = sqlx::query_scalar("SELECT prev_event_id FROM event_missing_prevs")
        .fetch_all(&store.pool)
        .await
        .expect("missing");
    assert_eq!(waiting, vec![topic.clone()]);

    // `topic` arrives: it has a child already, so it is no extremity, and the state at the merge
    // (the room's current state) now holds it.
    assert_eq!(persist(&store, &peer, &topic).await.status, EventStatus::Accepted);
    assert_eq!(extremities(&store).await, vec![merge.clone()]);
    let state = room_state(&store).await;
    assert_eq!(state.get(&key(types::TOPIC, "")), Some(&topic));
    assert_eq!(state.get(&key(types::NAME, "")), Some(&name));
    assert_eq!(current_group_state(&store).await, state);
    let missing: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM event_missing_prevs").fetch_one(&store.pool).await.expect("count");
    assert_eq!(missing, 0);
    let edges: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM event_edges x JOIN events c ON c.stream_position = x.event_pos
         JOIN events p ON p.stream_position = x.prev_pos WHERE c.event_id = $1",
    )
    .bind(&merge)
    .fetch_one(&store.pool)
    .await
    .expect("edges");
    assert_eq!(edges, 2, "the merge points at both parents");
    // The state at the merge, by its own group, is the resolution of both branches.
    let merge_group: i64 = sqlx::query_scalar("SELECT state_group FROM events WHERE event_id = $1")
        .bind(&merge)
        .fetch_one(&store.pool)
        .await
        .expect("group");
    let mut tx = store.write().await.expect("write");
    let at_merge = tx.state_group(merge_group).await.expect("state");
    drop(tx);
    assert_eq!(at_merge.get(&key(types::TOPIC, "")).map(|(_, id)| id), Some(&topic));
    // Every one of them is shown, in the order they were stored.
    assert_eq!(page(&store).await, vec![merge.clone()]);
    store.close().await;
}

/// Two extremities with conflicting names: the current state is their resolution, the same as
/// `state_res::resolve` gives in memory; an event on top of both merges them.
#[tokio::test]
async fn the_current_state_is_the_resolution_of_the_extremities() {
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    let auth = [b.create.as_str(), b.pl.as_str(), b.bob.as_str()];
    let left = peer.event(BOB, types::NAME, Some(""), json!({"name": "left"}), &[&b.carol], &auth);
    let right = peer.event(BOB, types::NAME, Some(""), json!({"name": "right"}), &[&b.carol], &auth);
    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol, &right, &left]).await;
    assert_eq!(extremities(&store).await, sorted(vec![left.clone(), right.clone()]));

    let events: HashMap<EventId, Pdu> = peer.events.iter().map(|(id, (p, _))| (id.clone(), p.clone())).collect();
    let base_state: StateMap<EventId> = [
        (key(types::CREATE, ""), b.create.clone()),
        (key(types::MEMBER, BOB), b.bob.clone()),
        (key(types::POWER_LEVELS, ""), b.pl.clone()),
        (key(types::JOIN_RULES, ""), b.jr.clone()),
        (key(types::MEMBER, CAROL), b.carol.clone()),
    ]
    .into_iter()
    .collect();
    let with = |id: &str| {
        let mut s = base_state.clone();
        s.insert(key(types::NAME, ""), id.to_owned());
        s
    };
    let expected = federation::state_res::resolve(RoomVersion::V1, &[with(&left), with(&right)], &events).expect("res");
    assert_eq!(room_state(&store).await, expected);
    assert_eq!(current_group_state(&store).await, expected);

    // Arrival order does not matter: a second store that saw `left` first agrees.
    let (_dir2, other) = open().await;
    persist_all(&other, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol, &left, &right]).await;
    assert_eq!(room_state(&other).await, expected);
    other.close().await;

    let merge = peer.event(BOB, types::MESSAGE, None, json!({"body": "m"}), &[&left, &right], &auth);
    persist_all(&store, &peer, &[&merge]).await;
    assert_eq!(extremities(&store).await, vec![merge.clone()]);
    assert_eq!(room_state(&store).await, expected);
    store.close().await;
}

/// An event its auth events or the state before it refuse is rejected; one they allow but the
/// room's current state refuses is stored soft-failed: never in pages, never an extremity,
/// never state.
#[tokio::test]
async fn soft_failed_and_rejected_events_are_stored_but_not_shown() {
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    let bob_auth = [b.create.as_str(), b.pl.as_str(), b.bob.as_str()];
    let hello =
        peer.event(CAROL, types::MESSAGE, None, json!({"body": "hello"}), &[&b.carol], &[&b.create, &b.pl, &b.carol]);
    let ban =
        peer.event(BOB, types::MEMBER, Some(CAROL), member("ban"), &[&hello], &[&b.create, &b.pl, &b.bob, &b.carol]);
    // Carol, banned, still names her join: her auth events allow it, the state before it not.
    let late = peer.event(CAROL, types::MESSAGE, None, json!({"body": "late"}), &[&ban], &[&b.create, &b.pl, &b.carol]);
    // Dave never joined: his own auth events refuse it.
    let stranger = peer.event(DAVE, types::MESSAGE, None, json!({"body": "hi"}), &[&ban], &[&b.create, &b.pl]);
    // A name change by Carol naming Bob's membership as hers is refused by its auth events too.
    let forged = peer.event(CAROL, types::NAME, Some(""), json!({"name": "x"}), &[&ban], &bob_auth);
    // Carol joins again naming her old join: allowed by it, not by the ban before it.
    let rejoin =
        peer.event(CAROL, types::MEMBER, Some(CAROL), member("join"), &[&ban], &[&b.create, &b.pl, &b.jr, &b.carol]);

    // Sent by Carol beside the ban (its parent is her message): the state before it allows
    // it, the room's current state (she is banned) does not.
    let beside =
        peer.event(CAROL, types::MESSAGE, None, json!({"body": "beside"}), &[&hello], &[&b.create, &b.pl, &b.carol]);

    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol, &hello, &ban]).await;
    assert_eq!(persist(&store, &peer, &late).await.status, EventStatus::Rejected, "the state before refuses it");
    assert_eq!(persist(&store, &peer, &stranger).await.status, EventStatus::Rejected);
    assert_eq!(persist(&store, &peer, &forged).await.status, EventStatus::Rejected);
    assert_eq!(persist(&store, &peer, &rejoin).await.status, EventStatus::Rejected);
    assert_eq!(persist(&store, &peer, &beside).await.status, EventStatus::SoftFailed, "the current state refuses it");
    // Stored again: found, nothing written.
    let again = persist(&store, &peer, &beside).await;
    assert!(again.existed);
    assert_eq!(again.status, EventStatus::SoftFailed);

    let statuses: Vec<(String, i64)> = sqlx::query_as("SELECT event_id, status FROM events WHERE room_id = $1")
        .bind(ROOM)
        .fetch_all(&store.pool)
        .await
        .expect("rows");
    assert_eq!(statuses.len(), 12, "every event is stored");
    // Sync (and realtime, which reads the same query) hands out accepted events only: the
    // membership events about Carol are her join and the ban, not the soft-failed join.
    let synced: Vec<String> =
        store.events_since("nobody", CAROL, 0, 100).await.expect("sync").into_iter().map(|r| r.event_id).collect();
    assert_eq!(synced, vec![b.carol.clone(), ban.clone()]);
    assert_eq!(page(&store).await, vec![hello.clone()], "only accepted messages are shown");
    assert_eq!(extremities(&store).await, vec![ban.clone()]);
    assert_eq!(room_state(&store).await.get(&key(types::NAME, "")), None);
    assert_eq!(room_state(&store).await.get(&key(types::MEMBER, CAROL)), Some(&ban));
    store.close().await;
}

/// Pages follow the graph: a branch's messages in order, history fetched later (backfill)
/// before everything the room had, at negative and decreasing positions.
#[tokio::test]
async fn pages_follow_the_graph_and_backfill_goes_below() {
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    let auth = [b.create.as_str(), b.pl.as_str(), b.bob.as_str()];
    let mut chain = vec![b.carol.clone()];
    for i in 0..6 {
        let prev = chain.last().expect("a parent").clone();
        chain.push(peer.event(BOB, types::MESSAGE, None, json!({"body": format!("m{i}")}), &[&prev], &auth));
    }
    let messages: Vec<String> = chain[1..].to_vec();
    // The room is joined late: from the fourth message on, with the state before it as the peer
    // answered it; the three before are fetched afterwards, in one backwards batch.
    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol]).await;
    let state: StateMap<EventId> = [
        (key(types::CREATE, ""), b.create.clone()),
        (key(types::MEMBER, BOB), b.bob.clone()),
        (key(types::POWER_LEVELS, ""), b.pl.clone()),
        (key(types::JOIN_RULES, ""), b.jr.clone()),
        (key(types::MEMBER, CAROL), b.carol.clone()),
    ]
    .into_iter()
    .collect();
    let mut tx = store.write().await.expect("write");
    let (pdu, json) = &peer.events[&messages[3]];
    assert_eq!(tx.persist_with_state(pdu, json, &state).await.expect("persist").status, EventStatus::Accepted);
    tx.commit().await.expect("commit");
    persist_all(&store, &peer, &[&messages[4], &messages[5]]).await;
    let batch: Vec<Incoming<'_>> = [2, 0, 1].iter().map(|&i| incoming(&peer, &messages[i], None)).collect();
    let mut tx = store.write().await.expect("write");
    let done = tx.persist_backfilled(&batch).await.expect("backfill");
    tx.commit().await.expect("commit");
    assert!(done.iter().all(|d| d.status == EventStatus::Accepted), "{done:?}");
    // In depth order: m0, m1, m2.
    let positions: Vec<i64> = [1, 2, 0].iter().map(|&i| done[i].stream_position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "older is lower: {positions:?}");
    let mut tx = store.write().await.expect("write");
    let more = peer.event(BOB, types::MESSAGE, None, json!({"body": "older"}), &[&b.carol], &auth);
    let older = tx.persist_backfilled(&[incoming(&peer, &more, None)]).await.expect("backfill");
    tx.commit().await.expect("commit");
    assert!(older[0].stream_position < positions[0], "a later backfill goes lower still");
    let positions: Vec<i64> = positions.into_iter().rev().collect();
    assert!(positions.iter().all(|p| *p < 0), "{positions:?}");
    let mut shown = vec![more.clone()];
    shown.extend(messages.iter().cloned());
    assert_eq!(page(&store).await, shown, "pages show the graph's order");
    // History never becomes a forward extremity, even an event no stored one names (the next
    // local event must not build on, or resolve the state of, events of the past).
    assert_eq!(extremities(&store).await, vec![messages[5].clone()]);
    store.close().await;
}

fn incoming<'a>(peer: &'a Peer, id: &str, state_before: Option<&'a StateMap<EventId>>) -> Incoming<'a> {
    let (pdu, json) = &peer.events[id];
    Incoming { pdu, json, state_before }
}

/// A backfilled batch whose oldest event's parent is further back (not stored) stands on the
/// state the peer gave for it; without that state the batch can only be stored as outliers.
#[tokio::test]
async fn a_backfilled_batch_stands_on_the_state_given_for_its_oldest_event() {
    let mut peer = Peer::new();
    let b = base(&mut peer);
    let auth = [b.create.as_str(), b.pl.as_str(), b.bob.as_str()];
    let mut chain = vec![b.carol.clone()];
    for i in 0..5 {
        let prev = chain.last().expect("a parent").clone();
        chain.push(peer.event(BOB, types::MESSAGE, None, json!({"body": format!("m{i}")}), &[&prev], &auth));
    }
    let state: StateMap<EventId> = [
        (key(types::CREATE, ""), b.create.clone()),
        (key(types::MEMBER, BOB), b.bob.clone()),
        (key(types::POWER_LEVELS, ""), b.pl.clone()),
        (key(types::JOIN_RULES, ""), b.jr.clone()),
        (key(types::MEMBER, CAROL), b.carol.clone()),
    ]
    .into_iter()
    .collect();
    for given in [Some(&state), None] {
        let (_dir, store) = open().await;
        // The state events are known (as a join's answer brings them); the timeline starts at
        // the last message.
        persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol]).await;
        let mut tx = store.write().await.expect("write");
        let (pdu, json) = &peer.events[&chain[5]];
        tx.persist_with_state(pdu, json, &state).await.expect("persist");
        // History: the messages before it, but not the first one, whose parent is further back.
        let batch: Vec<Incoming<'_>> =
            vec![incoming(&peer, &chain[4], None), incoming(&peer, &chain[3], None), incoming(&peer, &chain[2], given)];
        let done = tx.persist_backfilled(&batch).await.expect("backfill");
        tx.commit().await.expect("commit");
        let expected = if given.is_some() { EventStatus::Accepted } else { EventStatus::Outlier };
        assert!(done.iter().all(|d| d.status == expected), "{done:?}");
        let shown = if given.is_some() { chain[2..].to_vec() } else { vec![chain[5].clone()] };
        assert_eq!(page(&store).await, shown);
        // Carol's join stays one: nothing stored here names it (the first message is not).
        assert_eq!(extremities(&store).await, sorted(vec![chain[5].clone(), b.carol.clone()]));
        // The graph holds every edge, also the one from the event that waited for its parent,
        // and each history event's auth edges.
        for i in 2..5 {
            let edge: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM event_edges x JOIN events c ON c.stream_position = x.event_pos
                 JOIN events p ON p.stream_position = x.prev_pos WHERE c.event_id = $1 AND p.event_id = $2",
            )
            .bind(&chain[i + 1])
            .bind(&chain[i])
            .fetch_one(&store.pool)
            .await
            .expect("edges");
            assert_eq!(edge, 1, "{} -> {}", chain[i + 1], chain[i]);
            let auth: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM event_auth_edges a JOIN events e ON e.stream_position = a.event_pos
                 WHERE e.event_id = $1",
            )
            .bind(&chain[i])
            .fetch_one(&store.pool)
            .await
            .expect("auth edges");
            assert_eq!(auth, 3, "{}", chain[i]);
        }
        store.close().await;
    }
}

/// A long run of state changes keeps every state group's chain of deltas short, and each group
/// reads back as the state after its event.
#[tokio::test]
async fn state_groups_take_a_snapshot_every_few_deltas() {
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    let auth = [b.create.as_str(), b.pl.as_str(), b.bob.as_str()];
    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol]).await;
    let mut prev = b.carol.clone();
    let n = SNAPSHOT_EVERY as usize + 10;
    for i in 0..n {
        prev = peer.event(BOB, types::NAME, Some(""), json!({"name": format!("n{i}")}), &[&prev], &auth);
        persist_all(&store, &peer, &[&prev]).await;
    }
    let deepest: i64 =
        sqlx::query_scalar("SELECT MAX(delta_depth) FROM state_groups").fetch_one(&store.pool).await.expect("depth");
    assert_eq!(deepest, SNAPSHOT_EVERY - 1);
    let snapshots: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM state_groups WHERE prev_group IS NULL")
        .fetch_one(&store.pool)
        .await
        .expect("snapshots");
    assert_eq!(snapshots, 2, "the create event's group, and one after SNAPSHOT_EVERY deltas");
    let state = current_group_state(&store).await;
    assert_eq!(state.get(&key(types::NAME, "")), Some(&prev));
    assert_eq!(state.len(), 6);
    assert_eq!(room_state(&store).await, state);
    assert_eq!(peer.pdu(&prev).content["name"], json!(format!("n{}", n - 1)));
    store.close().await;
}

/// A database written by the code before migration 8 (rows as it wrote them, among them a room
/// made before migration 4: events without a wire form, no current state, no extremity)
/// upgrades: senders become fqids, the edges come from the stored wire forms, every event gets
/// the state group after it, and the old room's next event has parents and auth events.
#[tokio::test]
async fn the_event_graph_migration_upgrades_a_database_of_today() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = crate::config::sqlite_url(dir.path());
    {
        let opts = SqliteConnectOptions::from_str(&url).expect("url").create_if_missing(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.expect("pool");
        migrator(3).run(&pool).await.expect("migrations 1-3");
        sqlx::raw_sql(
            "INSERT INTO tenants VALUES ('t', 'T', 10, 10, 10, 0);
             INSERT INTO participants (id, tenant_id, local_id, server_name, fqid, display_name, created_at)
                 VALUES ('p', 't', 'al', 'a.test', '@al:a.test', 'Al', 0),
                        ('q', 't', 'bo', 'a.test', '@bo:a.test', 'Bo', 0);
             INSERT INTO workspaces (id, tenant_id, owner_id, name, created_at) VALUES ('w', 't', 'p', 'W', 0);
             INSERT INTO rooms (id, tenant_id, room_type, workspace_id, creator_id, created_at)
                 VALUES ('old', 't', 'group', 'w', 'p', 0), ('new', 't', 'group', 'w', 'p', 0);
             INSERT INTO events (event_id, room_id, event_type, state_key, sender_id, content, origin_ts, event_uuid)
                 VALUES ('evt-o1', 'old', 'swp.room.create', '', 'p', '{\"creator\":\"@al:a.test\"}', 1, 'u1'),
                        ('evt-o2', 'old', 'swp.room.member', '@al:a.test', 'p', '{\"membership\":\"join\"}', 1, 'u2'),
                        ('evt-o3', 'old', 'swp.room.member', '@bo:a.test', 'q', '{\"membership\":\"join\"}', 2, 'u3'),
                        ('evt-o4', 'old', 'swp.room.message', NULL, 'p', '{\"body\":\"hi\"}', 3, 'u4'),
                        ('evt-o5', 'old', 'swp.room.name', '', 'p', '{\"name\":\"Old\"}', 4, 'u5'),
                        ('evt-o6', 'old', 'swp.room.message', NULL, 'q', '{\"body\":\"yo\"}', 5, 'u6');",
        )
        .execute(&pool)
        .await
        .expect("a room of migration 3");
        migrator(7).run(&pool).await.expect("migrations 4-7");
        sqlx::raw_sql(
            "INSERT INTO events (event_id, room_id, event_type, state_key, sender_id, content, origin_ts, event_uuid,
                                 pdu, depth)
                 VALUES ('evt-n1', 'new', 'swp.room.create', '', 'p', '{}', 6, 'u7',
                         '{\"prev_events\":[],\"auth_events\":[]}', 1),
                        ('evt-n2', 'new', 'swp.room.member', '@al:a.test', 'p', '{}', 6, 'u8',
                         '{\"prev_events\":[\"evt-n1\"],\"auth_events\":[\"evt-n1\"]}', 2),
                        ('evt-n3', 'new', 'swp.room.message', NULL, 'p', '{}', 7, 'u9',
                         '{\"prev_events\":[\"evt-n2\"],\"auth_events\":[\"evt-n1\",\"evt-n2\"]}', 3);
             INSERT INTO room_state VALUES ('new', 'swp.room.create', '', 'evt-n1'),
                                           ('new', 'swp.room.member', '@al:a.test', 'evt-n2');
             INSERT INTO room_extremities VALUES ('new', 'evt-n3', 3);",
        )
        .execute(&pool)
        .await
        .expect("a room of migration 7");
        pool.close().await;
    }
    let signer = EventSigner { server_name: "a.test".into(), key: crypto::ServerKey::generate("k1").expect("key") };
    let store = Store::open(&url, Durability::Normal).await.expect("upgrade").with_signer(signer);
    assert_eq!(store.committed_position(), 9);
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM graph_upgrade_pending").fetch_one(&store.pool).await.expect("pending");
    assert_eq!(pending, 0, "the upgrade ran to its end");

    let rows: Vec<(String, String, i64, Option<i64>)> =
        sqlx::query_as("SELECT event_id, sender, status, state_group FROM events ORDER BY stream_position")
            .fetch_all(&store.pool)
            .await
            .expect("events");
    let senders: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(senders[..6], ["@al:a.test", "@al:a.test", "@bo:a.test", "@al:a.test", "@al:a.test", "@bo:a.test"]);
    assert!(rows.iter().all(|r| r.2 == EventStatus::Accepted.code() && r.3.is_some()), "{rows:?}");
    let group = |id: &str| rows.iter().find(|r| r.0 == id).and_then(|r| r.3).expect("a group");
    assert_eq!(group("evt-o4"), group("evt-o3"), "a message shares the group before it");
    assert_eq!(group("evt-o6"), group("evt-o5"));
    assert_ne!(group("evt-o5"), group("evt-o3"));
    let mut tx = store.write().await.expect("write");
    let at_o5 = tx.state_group(group("evt-o5")).await.expect("group");
    let at_o2 = tx.state_group(group("evt-o2")).await.expect("group");
    drop(tx);
    assert_eq!(at_o5.len(), 4);
    assert_eq!(at_o2.len(), 2, "the state after an event, not the room's last");
    let edges: Vec<(i64, i64)> = sqlx::query_as("SELECT event_pos, prev_pos FROM event_edges ORDER BY 1, 2")
        .fetch_all(&store.pool)
        .await
        .expect("e");
    assert_eq!(edges, vec![(8, 7), (9, 8)]);
    let auth: Vec<(i64, i64)> = sqlx::query_as("SELECT event_pos, auth_pos FROM event_auth_edges ORDER BY 1, 2")
        .fetch_all(&store.pool)
        .await
        .expect("a");
    assert_eq!(auth, vec![(8, 7), (9, 7), (9, 8)]);

    // The old room now has its current state and an extremity.
    let state: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type || '/' || state_key, event_id FROM room_state WHERE room_id = 'old' ORDER BY 1",
    )
    .fetch_all(&store.pool)
    .await
    .expect("state");
    assert_eq!(
        state,
        vec![
            ("swp.room.create/".into(), "evt-o1".into()),
            ("swp.room.member/@al:a.test".into(), "evt-o2".into()),
            ("swp.room.member/@bo:a.test".into(), "evt-o3".into()),
            ("swp.room.name/".into(), "evt-o5".into()),
        ]
    );
    let x: Vec<(String, String)> = sqlx::query_as("SELECT room_id, event_id FROM room_extremities ORDER BY 1")
        .fetch_all(&store.pool)
        .await
        .expect("x");
    assert_eq!(x, vec![("new".into(), "evt-n3".into()), ("old".into(), "evt-o6".into())]);

    // Its next event carries parents and auth events, and stands on the upgraded state group.
    let mut tx = store.write().await.expect("write");
    let content = json!({"body": "after"});
    let spec = crate::rooms::NewEventSpec {
        room_id: "old",
        sender_id: "p",
        event_type: types::MESSAGE,
        state_key: None,
        content: &content,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
    };
    let appended = crate::rooms::append_by(&mut tx, spec, "@al:a.test".into()).await.expect("append");
    tx.commit().await.expect("commit");
    assert_eq!(appended.stream_position, 10);
    let (pdu, sg): (String, Option<i64>) =
        sqlx::query_as("SELECT pdu, state_group FROM events WHERE stream_position = 10")
            .fetch_one(&store.pool)
            .await
            .expect("row");
    let pdu: Value = serde_json::from_str(&pdu).expect("json");
    assert_eq!(pdu["prev_events"], json!(["evt-o6"]));
    assert_eq!(pdu["auth_events"], json!(["evt-o1", "evt-o2"]));
    assert_eq!(sg, Some(group("evt-o6")));
    let edges: Vec<(i64, i64)> = sqlx::query_as("SELECT event_pos, prev_pos FROM event_edges WHERE event_pos = 10")
        .fetch_all(&store.pool)
        .await
        .expect("e");
    assert_eq!(edges, vec![(10, 6)]);
    let auth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_auth_edges WHERE event_pos = 10")
        .fetch_one(&store.pool)
        .await
        .expect("a");
    assert_eq!(auth, 2);
    store.close().await;
}

/// The send batch's path: messages chain on the head read once, share the current state
/// group, and a batch's edges are written by one statement per table.
#[tokio::test]
async fn a_send_batch_writes_its_edges_and_shares_the_state_group() {
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol]).await;
    let current: i64 = sqlx::query_scalar("SELECT state_group FROM room_current WHERE room_id = $1")
        .bind(ROOM)
        .fetch_one(&store.pool)
        .await
        .expect("current");
    let mut writer = store.batch_writer().expect("writer");
    let auth = vec![b.create.clone(), b.pl.clone(), b.bob.clone()];
    let positions = tokio::task::spawn_blocking(move || {
        let mut tx = writer.begin().expect("begin");
        let (_, mut head) = tx.auth_state_and_head(ROOM, &[BOB]).expect("head");
        let mut rows = GraphRows::default();
        let mut positions = Vec::new();
        for i in 0..3 {
            let id = format!("evt-batch{i}");
            let e = bobs_message(&id, 10 + i);
            let pos = tx.append_message(&e, &head, &auth, &mut rows).expect("append");
            head.advance(&id, e.depth, pos, None);
            positions.push(pos);
        }
        tx.write_graph_rows(&rows).expect("edges");
        tx.replace_extremities(ROOM, "evt-batch2", 12).expect("extremity");
        tx.commit().expect("commit");
        positions
    })
    .await
    .expect("the writer thread");
    let carol_pos: i64 = sqlx::query_scalar("SELECT stream_position FROM events WHERE event_id = $1")
        .bind(&b.carol)
        .fetch_one(&store.pool)
        .await
        .expect("pos");
    let edges: Vec<(i64, i64)> =
        sqlx::query_as("SELECT event_pos, prev_pos FROM event_edges WHERE event_pos >= $1 ORDER BY 1")
            .bind(positions[0])
            .fetch_all(&store.pool)
            .await
            .expect("edges");
    assert_eq!(edges, vec![(positions[0], carol_pos), (positions[1], positions[0]), (positions[2], positions[1])]);
    let auth_edges: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_auth_edges WHERE event_pos >= $1")
        .bind(positions[0])
        .fetch_one(&store.pool)
        .await
        .expect("auth");
    assert_eq!(auth_edges, 9);
    let groups: Vec<Option<i64>> = sqlx::query_scalar("SELECT state_group FROM events WHERE stream_position >= $1")
        .bind(positions[0])
        .fetch_all(&store.pool)
        .await
        .expect("groups");
    assert_eq!(groups, vec![Some(current); 3]);
    assert_eq!(extremities(&store).await, vec!["evt-batch2".to_string()]);
    store.close().await;
}

/// Measures what the graph tables cost per event (`docs/federation.md`, "Storage of the event
/// graph"): a room of 200 joins (state events, through `persist`) and 2,000 messages (through
/// the send batch's path, 64 a batch), then the tables' pages and payload bytes from SQLite's
/// `dbstat`. Run with `cargo test -p homeserver --lib storage_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn storage_cost() {
    const JOINS: usize = 200;
    const MESSAGES: usize = 2000;
    let (_dir, store) = open().await;
    let mut peer = Peer::new();
    let b = base(&mut peer);
    persist_all(&store, &peer, &[&b.create, &b.bob, &b.pl, &b.jr, &b.carol]).await;
    let table_sizes = |store: &Store| {
        let pool = store.pool.clone();
        async move {
            let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                "SELECT name, COUNT(*), SUM(pgsize), SUM(payload) FROM dbstat
                 WHERE name IN ('state_groups', 'state_group_entries', 'event_edges', 'event_auth_edges', 'events')
                 GROUP BY name ORDER BY name",
            )
            .fetch_all(&pool)
            .await
            .expect("dbstat");
            rows
        }
    };
    let rows_of = |store: &Store, table: &'static str| {
        let pool = store.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
            n
        }
    };
    let before = table_sizes(&store).await;
    let before_rows = (rows_of(&store, "state_groups").await, rows_of(&store, "state_group_entries").await);
    let mut prev = b.carol.clone();
    for i in 0..JOINS {
        let who = format!("@user{i}:beta.test");
        prev = peer.event(&who, types::MEMBER, Some(&who), member("join"), &[&prev], &[&b.create, &b.pl, &b.jr]);
        persist_all(&store, &peer, &[&prev]).await;
    }
    let after_state = table_sizes(&store).await;
    let after_rows = (rows_of(&store, "state_groups").await, rows_of(&store, "state_group_entries").await);
    println!(
        "state events: {JOINS}; groups +{}, entries +{}",
        after_rows.0 - before_rows.0,
        after_rows.1 - before_rows.1
    );
    println!("before: {before:?}\nafter joins: {after_state:?}");

    let mut writer = store.batch_writer().expect("writer");
    let auth = vec![b.create.clone(), b.pl.clone(), b.bob.clone()];
    tokio::task::spawn_blocking(move || {
        for batch in 0..MESSAGES / 64 + 1 {
            let mut tx = writer.begin().expect("begin");
            let (_, mut head) = tx.auth_state_and_head(ROOM, &[BOB]).expect("head");
            let mut rows = GraphRows::default();
            let mut last = None;
            for i in 0..64.min(MESSAGES - batch * 64) {
                let id = format!("evt-m{batch}x{i}");
                let depth = head.extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
                let e = bobs_message(&id, depth);
                let pos = tx.append_message(&e, &head, &auth, &mut rows).expect("append");
                head.advance(&id, depth, pos, None);
                last = Some((id, depth));
            }
            tx.write_graph_rows(&rows).expect("edges");
            if let Some((id, depth)) = last {
                tx.replace_extremities(ROOM, &id, depth).expect("extremity");
            }
            tx.commit().expect("commit");
        }
    })
    .await
    .expect("writer thread");
    let after_messages = table_sizes(&store).await;
    println!("after {MESSAGES} messages: {after_messages:?}");
    println!(
        "edges rows: {}, auth edges rows: {}",
        rows_of(&store, "event_edges").await,
        rows_of(&store, "event_auth_edges").await
    );
    store.close().await;
}

/// A message by Bob in the test room, as the send batch stores one (no wire form needed).
fn bobs_message(id: &str, depth: i64) -> NewEvent<'_> {
    NewEvent {
        event_id: id,
        room_id: ROOM,
        event_type: types::MESSAGE,
        state_key: None,
        sender: BOB,
        content: "{}",
        origin_ts: 1,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
        pdu: "{}",
        depth,
    }
}
