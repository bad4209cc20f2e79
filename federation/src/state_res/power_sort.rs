//! Step 3: which events are power events, and their order (Kahn's algorithm over the auth
//! graph, ties broken by the sender's power, then `origin_ts`, then `depth`, then event id;
//! `depth` orders two changes of one second, as in [`super::mainline`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::auth::Membership;
use crate::auth::power::Power;
use crate::event::{EventId, EventSource, Pdu, types};

use super::ResolveError;
use super::auth_chain::auth_chain;

/// An event that can take an ability away: power levels, join rules, and a leave or ban of
/// someone by someone else (Matrix's set). These are resolved first, so the rest is checked
/// against them.
///
/// The lifecycle and the server ACL are deliberately *not* power events, though they take
/// abilities away too: a power event is checked before every other conflicted event, also
/// those that came before it, so an archive (or an ACL) would make the joins and changes that
/// preceded it fail their re-check and vanish from the state — a state reset. In the mainline
/// order they take their place among the other changes instead.
pub fn is_power_event(event: &Pdu) -> bool {
    let Some(state_key) = &event.state_key else { return false };
    match event.event_type.as_str() {
        types::POWER_LEVELS | types::JOIN_RULES => state_key.is_empty(),
        types::MEMBER => {
            *state_key != event.sender && matches!(Membership::of(event), Ok(Membership::Leave | Membership::Ban))
        }
        _ => false,
    }
}

/// The sender's level by the power-levels event among the event's own auth events (the
/// creator's 100 without one). Unreadable power levels count as level 0: this only orders.
pub fn sender_power(event: &Pdu, events: &impl EventSource) -> i64 {
    let auth_events = event.auth_events.iter().filter_map(|id| events.event(id));
    let (mut power_levels, mut creator) = (None, "");
    for auth in auth_events {
        if auth.is_room_state(types::POWER_LEVELS) {
            power_levels = Some(auth);
        } else if auth.is_room_state(types::CREATE) {
            creator = auth.sender.as_str();
        }
    }
    Power::new(power_levels, creator).map_or(0, |power| power.user(&event.sender))
}

/// `set` in auth order: an event after every event of its auth chain that is in `set`; among
/// the events ready at once, the highest sender power first, then the earliest `origin_ts`,
/// then the smallest `depth`, then the smallest event id.
pub fn power_sort(set: &BTreeSet<EventId>, events: &impl EventSource) -> Result<Vec<EventId>, ResolveError> {
    let mut waiting_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unblocks: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut keys: BTreeMap<&str, (Reverse<i64>, i64, i64)> = BTreeMap::new();
    for id in set {
        let event = events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.clone()))?;
        keys.insert(id, (Reverse(sender_power(event, events)), event.origin_ts, event.depth));
        // The whole chain, not only the direct auth events: a path through events outside
        // `set` still orders its two ends.
        let before: Vec<EventId> = auth_chain([id.as_str()], events)?.into_iter().filter(|a| set.contains(a)).collect();
        waiting_on.insert(id, before.len());
        for auth in before {
            let auth = set.get(&auth).map_or("", String::as_str);
            unblocks.entry(auth).or_default().push(id);
        }
    }
    let mut ready: BinaryHeap<Reverse<(Reverse<i64>, i64, i64, &str)>> = BinaryHeap::new();
    for (&id, &count) in &waiting_on {
        if count == 0 {
            let (power, ts, depth) = keys.get(id).copied().unwrap_or((Reverse(0), 0, 0));
            ready.push(Reverse((power, ts, depth, id)));
        }
    }
    let mut sorted = Vec::with_capacity(set.len());
    while let Some(Reverse((_, _, _, id))) = ready.pop() {
        sorted.push(id.to_owned());
        for &next in unblocks.get(id).into_iter().flatten() {
            let count = waiting_on.entry(next).or_default();
            *count = count.saturating_sub(1);
            if *count == 0 {
                let (power, ts, depth) = keys.get(next).copied().unwrap_or((Reverse(0), 0, 0));
                ready.push(Reverse((power, ts, depth, next)));
            }
        }
    }
    if sorted.len() == set.len() { Ok(sorted) } else { Err(ResolveError::AuthCycle) }
}
