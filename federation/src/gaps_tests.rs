//! The gap filler against a host and a peer held in memory: a room's events as wire JSON on
//! the peer's side, the events stored here in a map. Signatures are not the subject here
//! (`verify.rs` has them): the peer's events are only checked for shape and id.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::event::types;
use crate::host::Status;
use crate::verify::{Refusal, well_formed};

const ALICE: &str = "@alice:alpha.test";
const ROOM: &str = "room-1";
const V: RoomVersion = RoomVersion::V1;

/// One store of an event: its id, the status given, the state it was stored on.
type Stored = (EventId, Status, Option<StateMap<EventId>>);

/// Storage held in memory: what is stored, in the order it was, with the state given.
#[derive(Default)]
struct MemHost {
    /// event id → (status, depth).
    events: Mutex<BTreeMap<EventId, (Status, i64)>>,
    log: Mutex<Vec<Stored>>,
}

impl MemHost {
    fn with(stored: &[Value]) -> MemHost {
        let host = MemHost::default();
        host.events
            .lock()
            .unwrap()
            .extend(stored.iter().map(|v| (id_of(v), (Status::Accepted, verified(v).pdu.depth))));
        host
    }

    fn stored_in_order(&self) -> Vec<(EventId, Status)> {
        self.log.lock().unwrap().iter().map(|(id, s, _)| (id.clone(), *s)).collect()
    }

    fn put(&self, v: &Verified, state: Option<&StateMap<EventId>>) -> Status {
        let mut events = self.events.lock().unwrap();
        // As the store does: placed when its parents are known (or its state is given).
        let placed = state.is_some() || v.pdu.prev_events.iter().all(|p| events.contains_key(p));
        let status = if placed { Status::Accepted } else { Status::Outlier };
        events.insert(v.pdu.event_id.clone(), (status, v.pdu.depth));
        self.log.lock().unwrap().push((v.pdu.event_id.clone(), status, state.cloned()));
        status
    }
}

impl Host for MemHost {
    async fn stored_event_ids(&self, ids: &[EventId]) -> Result<HashSet<EventId>, HostError> {
        let events = self.events.lock().unwrap();
        Ok(ids.iter().filter(|id| events.contains_key(*id)).cloned().collect())
    }

    async fn event_status(&self, event_id: &str) -> Result<Option<Status>, HostError> {
        Ok(self.events.lock().unwrap().get(event_id).map(|(s, _)| *s))
    }

    async fn placed_event_ids(&self, ids: &[EventId]) -> Result<HashSet<EventId>, HostError> {
        let events = self.events.lock().unwrap();
        Ok(ids.iter().filter(|id| events.get(*id).is_some_and(|(s, _)| *s != Status::Outlier)).cloned().collect())
    }

    async fn forward_extremities(&self, _room_id: &str) -> Result<Vec<EventId>, HostError> {
        let events = self.events.lock().unwrap();
        // A line of events: the deepest one is the only extremity.
        Ok(events.iter().max_by_key(|(_, (_, depth))| *depth).map(|(id, _)| id.clone()).into_iter().collect())
    }

    async fn store_outliers(&self, events: Vec<Verified>) -> Result<(), HostError> {
        for v in &events {
            self.put(v, None);
        }
        Ok(())
    }

    async fn store_event(&self, event: &Verified, state: Option<&StateMap<EventId>>) -> Result<Status, Verdict> {
        Ok(self.put(event, state))
    }

    async fn store_events(&self, events: &[(&Verified, Option<StateMap<EventId>>)]) -> Result<(), Verdict> {
        for (v, state) in events {
            self.put(v, state.as_ref());
        }
        Ok(())
    }
}

/// A peer holding the whole room; answers the three requests of the gap filler from it, or
/// is down. Counts the requests.
struct MemPeer {
    events: BTreeMap<EventId, Value>,
    down: bool,
    /// Whether `get_missing_events` and `backfill` answer nothing (so the state is asked for).
    no_missing: bool,
    requests: Mutex<Vec<String>>,
    backfills: Mutex<Vec<String>>,
}

impl MemPeer {
    fn new(events: &[Value]) -> MemPeer {
        let events = events.iter().map(|v| (id_of(v), v.clone())).collect();
        MemPeer {
            events,
            down: false,
            no_missing: false,
            requests: Mutex::new(Vec::new()),
            backfills: Default::default(),
        }
    }

    fn pdu(&self, id: &str) -> Option<Pdu> {
        self.events.get(id).and_then(|v| well_formed(v, V, None).ok())
    }

    fn auth_chain(&self, id: &str) -> Vec<Value> {
        let mut out = BTreeMap::new();
        let mut todo: Vec<EventId> = self.pdu(id).map(|p| p.auth_events).unwrap_or_default();
        while let Some(a) = todo.pop() {
            if let (Some(v), Some(p)) = (self.events.get(&a), self.pdu(&a)) {
                if out.insert(a.clone(), v.clone()).is_none() {
                    todo.extend(p.auth_events);
                }
            }
        }
        out.into_values().collect()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Remote for MemPeer {
    async fn request(&self, dest: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, FedError> {
        self.requests.lock().unwrap().push(format!("{method} {path}"));
        if self.down {
            return Err(FedError::Unreachable(dest.into(), "down".into()));
        }
        let ids = |k: &str| -> Vec<String> {
            body.and_then(|b| b.get(k))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        if path == wire::path::get_missing_events(ROOM) {
            if self.no_missing {
                return Ok(json!({"events": []}));
            }
            // Parents of the latest events back to the earliest ones, deepest first.
            let earliest: HashSet<String> = ids("earliest_events").into_iter().collect();
            let (mut seen, mut out) = (HashSet::new(), Vec::new());
            let mut todo: Vec<String> =
                ids("latest_events").iter().filter_map(|l| self.pdu(l)).flat_map(|p| p.prev_events).collect();
            while let Some(id) = todo.pop() {
                if earliest.contains(&id) || !seen.insert(id.clone()) {
                    continue;
                }
                if let Some(p) = self.pdu(&id) {
                    todo.extend(p.prev_events.iter().cloned());
                    out.push(self.events[&id].clone());
                }
            }
            return Ok(json!({"events": out}));
        }
        if let Some(query) = path.strip_prefix(
            &wire::path::backfill(ROOM, &[], 0)[..wire::path::backfill(ROOM, &[], 0).find('?').unwrap() + 1],
        ) {
            self.backfills.lock().unwrap().push(path.to_string());
            if self.no_missing {
                return Ok(json!({"pdus": []}));
            }
            // Walking back from the given events (included), deepest first, up to the limit.
            let mut from = Vec::new();
            let mut limit = 0;
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("v", id)) => from.push(id.to_string()),
                    Some(("limit", n)) => limit = n.parse().unwrap(),
                    _ => {}
                }
            }
            let (mut seen, mut out) = (HashSet::new(), Vec::new());
            let mut todo = from;
            while let Some(id) = todo.pop() {
                if out.len() == limit || !seen.insert(id.clone()) {
                    continue;
                }
                if let Some(p) = self.pdu(&id) {
                    todo.extend(p.prev_events.iter().cloned());
                    out.push(self.events[&id].clone());
                }
            }
            return Ok(json!({"pdus": out}));
        }
        for id in self.events.keys() {
            if path == wire::path::event_auth(ROOM, id) {
                return Ok(json!({"auth_chain": self.auth_chain(id)}));
            }
            if path == wire::path::state(ROOM, id) {
                // The state at `id` in a line of events: every state event up to it.
                let depth = self.pdu(id).map_or(0, |p| p.depth);
                let pdus: Vec<Value> = self
                    .events
                    .keys()
                    .filter_map(|e| self.pdu(e))
                    .filter(|p| p.is_state() && p.depth <= depth)
                    .map(|p| self.events[&p.event_id].clone())
                    .collect();
                return Ok(json!({"pdus": pdus, "auth_chain": self.auth_chain(id)}));
            }
        }
        Err(FedError::BadAnswer(dest.into(), format!("no such endpoint here: {path}")))
    }

    async fn verify(&self, value: &Value, version: RoomVersion) -> Result<Verified, Refusal> {
        let pdu = well_formed(value, version, None)?;
        Ok(Verified { pdu, json: value.clone(), redacted: false })
    }
}

fn id_of(v: &Value) -> EventId {
    well_formed(v, V, None).expect("test events are well formed").event_id
}

/// A line of events: the create event, Alice's join, then `messages` messages, each the
/// parent of the next.
fn line(messages: usize) -> Vec<Value> {
    let create = json!({
        "room_id": ROOM, "sender": ALICE, "origin": "alpha.test", "origin_ts": 1,
        "event_type": types::CREATE, "content": {"creator": ALICE}, "state_key": "",
        "prev_events": [], "auth_events": [], "depth": 1,
    });
    let create_id = id_of(&create);
    let join = json!({
        "room_id": ROOM, "sender": ALICE, "origin": "alpha.test", "origin_ts": 2,
        "event_type": types::MEMBER, "content": {"membership": "join"}, "state_key": ALICE,
        "prev_events": [create_id], "auth_events": [create_id], "depth": 2,
    });
    let join_id = id_of(&join);
    let mut out = vec![create, join];
    for i in 0..messages {
        let prev = id_of(out.last().unwrap());
        out.push(json!({
            "room_id": ROOM, "sender": ALICE, "origin": "alpha.test", "origin_ts": 3 + i,
            "event_type": types::MESSAGE, "content": {"body": format!("m{i}")},
            "prev_events": [prev], "auth_events": [create_id, join_id], "depth": 3 + i,
        }));
    }
    out
}

fn verified(v: &Value) -> Verified {
    Verified { pdu: well_formed(v, V, None).unwrap(), json: v.clone(), redacted: false }
}

#[tokio::test]
async fn missing_parents_are_fetched_and_stored_oldest_first() {
    let room = line(4);
    let ids: Vec<EventId> = room.iter().map(id_of).collect();
    let host = MemHost::with(&room[..3]);
    let peer = MemPeer::new(&room);
    let memory = FetchBackoff::default();
    let verdict = receive(&host, &peer, &memory, "alpha.test", &verified(&room[5]), V).await;
    assert_eq!(verdict, Verdict::Accepted);
    let stored = host.stored_in_order();
    assert_eq!(
        stored,
        vec![
            (ids[3].clone(), Status::Accepted),
            (ids[4].clone(), Status::Accepted),
            (ids[5].clone(), Status::Accepted)
        ]
    );
    assert_eq!(peer.requests(), vec![format!("POST {}", wire::path::get_missing_events(ROOM))]);
    // Sent again: the decision made then, nothing fetched.
    assert_eq!(receive(&host, &peer, &memory, "alpha.test", &verified(&room[5]), V).await, Verdict::Accepted);
    assert_eq!(peer.requests().len(), 1);
}

#[tokio::test]
async fn a_missing_auth_chain_is_fetched_as_outliers_first() {
    let room = line(0);
    let ids: Vec<EventId> = room.iter().map(id_of).collect();
    let host = MemHost::default();
    let peer = MemPeer::new(&room);
    let verdict = receive(&host, &peer, &FetchBackoff::default(), "alpha.test", &verified(&room[1]), V).await;
    assert_eq!(verdict, Verdict::Accepted);
    // The create event came as the join's auth chain; then the join, its parent now known.
    assert_eq!(host.stored_in_order(), vec![(ids[0].clone(), Status::Accepted), (ids[1].clone(), Status::Accepted)]);
    assert_eq!(peer.requests(), vec![format!("GET {}", wire::path::event_auth(ROOM, &ids[1]))]);
}

#[tokio::test]
async fn an_open_gap_takes_the_state_at_the_missing_parent() {
    let room = line(3);
    let ids: Vec<EventId> = room.iter().map(id_of).collect();
    let host = MemHost::with(&room[..2]);
    let mut peer = MemPeer::new(&room);
    peer.no_missing = true;
    let verdict = receive(&host, &peer, &FetchBackoff::default(), "alpha.test", &verified(&room[4]), V).await;
    assert_eq!(verdict, Verdict::Accepted);
    let log = host.log.lock().unwrap().clone();
    let (last_id, _, state) = log.last().cloned().expect("the event is stored");
    assert_eq!(last_id, ids[4]);
    let state = state.expect("stored with the state at its missing parent");
    assert_eq!(state.get(&(types::CREATE.to_string(), String::new())), Some(&ids[0]));
    assert_eq!(state.get(&(types::MEMBER.to_string(), ALICE.to_string())), Some(&ids[1]));
    assert_eq!(
        peer.requests(),
        vec![
            format!("POST {}", wire::path::get_missing_events(ROOM)),
            format!("GET {}", wire::path::backfill(ROOM, &[ids[3].clone()], wire::MAX_BACKFILL)),
            format!("GET {}", wire::path::state(ROOM, &ids[3])),
        ]
    );
}

#[tokio::test]
async fn an_unfillable_gap_is_retried_later_without_asking_again() {
    let room = line(2);
    let ids: Vec<EventId> = room.iter().map(id_of).collect();
    let host = MemHost::with(&room[..2]);
    let mut peer = MemPeer::new(&room);
    peer.down = true;
    let memory = FetchBackoff::default();
    let event = verified(&room[3]);
    for _ in 0..2 {
        let verdict = receive(&host, &peer, &memory, "alpha.test", &event, V).await;
        assert!(matches!(verdict, Verdict::Retry { ref code, .. } if code == "SW_FED_UNAVAILABLE"), "{verdict:?}");
    }
    // The second time the back-off answered: one request in all, nothing stored.
    assert_eq!(peer.requests().len(), 1);
    assert!(host.stored_in_order().is_empty());
    assert!(memory.backing_off(&ids[3], crate::now_ms()));
}

/// A server that joined late holds the room's older events as outliers (from its join's
/// state). An event made concurrently with its join, on such a parent, is placed on the state
/// after that parent as the origin answers it, whether it comes in a transaction or as a
/// fetched parent: never an outlier that no page would show.
#[tokio::test]
async fn an_event_on_outlier_parents_is_placed_on_the_state_the_origin_gives() {
    let room = line(3);
    let ids: Vec<EventId> = room.iter().map(id_of).collect();
    let peer = MemPeer::new(&room);
    // Directly: its parent is stored, as an outlier.
    let host = MemHost::with(&room[..1]);
    host.events.lock().unwrap().extend(room[1..3].iter().map(|v| (id_of(v), (Status::Outlier, verified(v).pdu.depth))));
    let verdict = receive(&host, &peer, &FetchBackoff::default(), "alpha.test", &verified(&room[3]), V).await;
    assert_eq!(verdict, Verdict::Accepted);
    let log = host.log.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    let state = log[0].2.clone().expect("placed on the state after its parent");
    assert_eq!(state.get(&(types::MEMBER.to_string(), ALICE.to_string())), Some(&ids[1]));
    assert_eq!(peer.requests(), vec![format!("GET {}", wire::path::state(ROOM, &ids[2]))]);

    // As a fetched parent: the first fetched event hangs off the outlier and gets the state;
    // its child then hangs off a placed event.
    let host = MemHost::with(&room[..1]);
    host.events.lock().unwrap().extend(room[1..3].iter().map(|v| (id_of(v), (Status::Outlier, verified(v).pdu.depth))));
    let peer = MemPeer::new(&room);
    let verdict = receive(&host, &peer, &FetchBackoff::default(), "alpha.test", &verified(&room[4]), V).await;
    assert_eq!(verdict, Verdict::Accepted);
    let log = host.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().map(|(id, s, st)| (id.clone(), *s, st.is_some())).collect::<Vec<_>>(),
        vec![(ids[3].clone(), Status::Accepted, true), (ids[4].clone(), Status::Accepted, false)]
    );
}

/// A gap longer than the missing-events rounds reach (a peer catching up sends only its newest
/// event): the rest is pulled with backfill until it closes, and everything is stored oldest
/// first, placed.
#[tokio::test]
async fn a_long_gap_is_pulled_with_backfill_until_it_closes() {
    let room = line(2500);
    let ids: Vec<EventId> = room.iter().map(id_of).collect();
    let host = MemHost::with(&room[..3]);
    let peer = MemPeer::new(&room);
    let verdict =
        receive(&host, &peer, &FetchBackoff::default(), "alpha.test", &verified(room.last().unwrap()), V).await;
    assert_eq!(verdict, Verdict::Accepted);
    let stored = host.stored_in_order();
    assert_eq!(stored.len(), room.len() - 3, "every event of the gap, and the event itself");
    assert!(stored.iter().all(|(_, s)| *s == Status::Accepted));
    assert_eq!(stored.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[3..].to_vec(), "oldest first");
    // Three rounds of 20, then backfill requests of up to 1000.
    let pulls = peer.backfills.lock().unwrap().len();
    assert!((3..=4).contains(&pulls), "{pulls} backfill requests");
    assert!(host.log.lock().unwrap().iter().all(|(_, _, state)| state.is_none()), "no state fallback");
}
