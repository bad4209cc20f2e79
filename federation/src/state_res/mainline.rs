//! Step 5's order: the *mainline* is the resolved power-levels event, the power-levels event
//! in its auth events, and so on back to the first one. An event sorts by the mainline event
//! it hangs off (the first one met walking power-levels auth events up from it), the older
//! first, then by `origin_ts`, then by `depth`, then by id.
//!
//! `origin_ts` counts whole seconds (the contract's unit), so two changes made within one
//! second tie on it; `depth` then keeps an event after its ancestors (a switch turned off and
//! on again within a second resolves to "on" everywhere), where the id alone would pick one at
//! random.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{EventId, EventSource, Pdu, types};

use super::ResolveError;

/// The power-levels event among `event`'s auth events.
fn power_levels_of<'a>(event: &Pdu, events: &'a impl EventSource) -> Result<Option<&'a Pdu>, ResolveError> {
    for id in &event.auth_events {
        let auth = events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.clone()))?;
        if auth.is_room_state(types::POWER_LEVELS) {
            return Ok(Some(auth));
        }
    }
    Ok(None)
}

/// `set` in mainline order relative to `power_levels` (the resolved power-levels event, if any).
pub fn mainline_sort(
    set: &BTreeSet<EventId>,
    power_levels: Option<&str>,
    events: &impl EventSource,
) -> Result<Vec<EventId>, ResolveError> {
    // Position 1 is the room's first power-levels event; events hanging off none get 0.
    let mut mainline: Vec<&str> = Vec::new();
    let mut next =
        power_levels.map(|id| events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.to_owned()))).transpose()?;
    while let Some(event) = next {
        if mainline.contains(&event.event_id.as_str()) {
            return Err(ResolveError::AuthCycle);
        }
        mainline.push(&event.event_id);
        next = power_levels_of(event, events)?;
    }
    let position: BTreeMap<&str, usize> = mainline.iter().rev().enumerate().map(|(i, id)| (*id, i + 1)).collect();

    let mut keyed = Vec::with_capacity(set.len());
    for id in set {
        let event = events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.clone()))?;
        let mut at = Some(event);
        let mut seen = BTreeSet::new();
        let mut depth = 0;
        while let Some(current) = at {
            if let Some(&p) = position.get(current.event_id.as_str()) {
                depth = p;
                break;
            }
            if !seen.insert(current.event_id.as_str()) {
                return Err(ResolveError::AuthCycle);
            }
            at = power_levels_of(current, events)?;
        }
        keyed.push(((depth, event.origin_ts, event.depth, id.as_str()), id));
    }
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, id)| id.clone()).collect())
}
