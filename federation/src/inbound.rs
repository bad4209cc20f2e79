//! Pure decisions of the receiving side (`FEDERATION.md`, "Receiving, gaps and history"): the
//! order in which a transaction's events are applied, what an event relates to, and how long a
//! failed fetch is remembered. The homeserver does the I/O around them.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::event::Pdu;

/// Rounds of `get_missing_events` for one event before falling back to the state at its
/// parents. Each round asks for at most [`crate::wire::MAX_MISSING_EVENTS`] events, so one
/// event costs at most `MISSING_ROUNDS × 20` fetched events.
pub const MISSING_ROUNDS: usize = 3;

/// Rooms of one transaction processed at the same time.
pub const PARALLEL_ROOMS: usize = 4;

/// At most this many events of a state or auth chain fetched one by one (`event/{id}`) to
/// fill a gap; past it the event is answered `retry`.
pub const MAX_FETCHED_AUTH_EVENTS: usize = 200;

/// The order in which to apply `pdus` (indices into it), grouped by room: rooms in the order
/// of their first event, and within a room parents before children (by `prev_events` within
/// the batch), ties and cycles broken by depth, then position in the batch.
pub fn order_batch(pdus: &[Pdu]) -> Vec<(String, Vec<usize>)> {
    let mut rooms: Vec<(String, Vec<usize>)> = Vec::new();
    let mut room_index: HashMap<&str, usize> = HashMap::new();
    for (i, p) in pdus.iter().enumerate() {
        let r = *room_index.entry(p.room_id.as_str()).or_insert_with(|| {
            rooms.push((p.room_id.clone(), Vec::new()));
            rooms.len() - 1
        });
        rooms[r].1.push(i);
    }
    for (_, members) in &mut rooms {
        *members = topological(pdus, members);
    }
    rooms
}

/// Kahn's sort of `members` by their `prev_events` among themselves; the ready event with the
/// smallest `(depth, index)` goes first, so the order is deterministic and a cycle (only a
/// forged batch has one) still yields every event once.
fn topological(pdus: &[Pdu], members: &[usize]) -> Vec<usize> {
    let by_id: HashMap<&str, usize> = members.iter().map(|&i| (pdus[i].event_id.as_str(), i)).collect();
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in members {
        let parents: HashSet<usize> =
            pdus[i].prev_events.iter().filter_map(|p| by_id.get(p.as_str()).copied()).filter(|&p| p != i).collect();
        waiting.insert(i, parents.len());
        for p in parents {
            children.entry(p).or_default().push(i);
        }
    }
    let key = |i: usize| (pdus[i].depth, i);
    let mut ready: BTreeMap<(i64, usize), usize> =
        members.iter().filter(|i| waiting[i] == 0).map(|&i| (key(i), i)).collect();
    let mut out = Vec::with_capacity(members.len());
    let mut done: HashSet<usize> = HashSet::new();
    while out.len() < members.len() {
        let next = match ready.pop_first() {
            Some((_, i)) => i,
            // A cycle: take the shallowest event not yet placed.
            None => match members.iter().copied().filter(|i| !done.contains(i)).min_by_key(|&i| key(i)) {
                Some(i) => i,
                None => break,
            },
        };
        if !done.insert(next) {
            continue;
        }
        out.push(next);
        for &c in children.get(&next).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(n) = waiting.get_mut(&c) {
                *n = n.saturating_sub(1);
                if *n == 0 && !done.contains(&c) {
                    ready.insert(key(c), c);
                }
            }
        }
    }
    out
}

/// The event a message-level event points at, as the client API stores it in `relates_to`:
/// an edit's or a reaction's `event_id`, a redaction's `redacts`.
pub fn relates_to(pdu: &Pdu) -> Option<&str> {
    let key = match pdu.event_type.as_str() {
        "swp.room.edit" | crate::event::types::REACTION => "event_id",
        crate::event::types::REDACTION => "redacts",
        _ => return None,
    };
    pdu.content.get(key).and_then(|v| v.as_str()).filter(|s| crate::event::is_event_id(s))
}

/// How long after its `failures`-th failed fetch an event is not asked for again: doubling
/// from 30 s, capped at an hour.
pub fn fetch_backoff_ms(failures: u32) -> u64 {
    let base: u64 = 30_000;
    base.saturating_mul(1u64 << failures.saturating_sub(1).min(20)).min(3_600_000)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pdu(id: &str, room: &str, prev: &[&str], depth: i64) -> Pdu {
        let v = json!({
            "room_id": room, "sender": "@a:x.test", "origin": "x.test", "origin_ts": 1,
            "event_type": "swp.room.message", "content": {}, "prev_events": prev, "auth_events": [],
            "depth": depth,
        });
        Pdu::parse(id, &v).expect("parses")
    }

    #[test]
    fn parents_come_before_children_whatever_the_batch_order() {
        let pdus = vec![
            pdu("evt-c", "room-1", &["evt-b"], 3),
            pdu("evt-x", "room-2", &["evt-out"], 9),
            pdu("evt-b", "room-1", &["evt-a"], 2),
            pdu("evt-a", "room-1", &["evt-out"], 1),
            pdu("evt-d", "room-1", &["evt-a"], 2),
        ];
        let order = order_batch(&pdus);
        assert_eq!(order.len(), 2);
        assert_eq!(order[0].0, "room-1");
        assert_eq!(order[0].1, vec![3, 2, 4, 0], "a, then b and d by depth then index, then c");
        assert_eq!(order[1], ("room-2".to_string(), vec![1]));
    }

    #[test]
    fn a_cycle_still_yields_every_event_once() {
        let pdus = vec![pdu("evt-a", "room-1", &["evt-b"], 5), pdu("evt-b", "room-1", &["evt-a"], 4)];
        let order = order_batch(&pdus);
        assert_eq!(order[0].1, vec![1, 0]);
    }

    #[test]
    fn relations_are_read_from_the_content() {
        let mut e = pdu("evt-e", "room-1", &[], 1);
        e.event_type = "swp.room.edit".into();
        e.content = json!({"event_id": "evt-t", "new_content": {}}).as_object().cloned().unwrap_or_default();
        assert_eq!(relates_to(&e), Some("evt-t"));
        e.event_type = "swp.room.redaction".into();
        assert_eq!(relates_to(&e), None, "a redaction names its target in redacts");
        e.content.insert("redacts".into(), json!("evt-u"));
        assert_eq!(relates_to(&e), Some("evt-u"));
        e.event_type = "swp.room.message".into();
        assert_eq!(relates_to(&e), None);
    }

    #[test]
    fn fetch_backoff_doubles_to_a_cap() {
        assert_eq!(fetch_backoff_ms(1), 30_000);
        assert_eq!(fetch_backoff_ms(2), 60_000);
        assert_eq!(fetch_backoff_ms(40), 3_600_000);
    }
}
