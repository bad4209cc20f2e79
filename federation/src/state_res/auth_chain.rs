//! Auth chains and step 2's auth difference.

use std::collections::BTreeSet;

use crate::event::{EventId, EventSource, StateMap};

use super::ResolveError;

/// Every event reachable from `start` through `auth_events`, recursively (not `start`
/// itself, unless one is in another's chain). Iterative, so a long chain cannot overflow the
/// stack, and each event is visited once.
pub fn auth_chain<'a>(
    start: impl IntoIterator<Item = &'a str>,
    events: &impl EventSource,
) -> Result<BTreeSet<EventId>, ResolveError> {
    let mut chain = BTreeSet::new();
    let mut stack: Vec<&str> = start.into_iter().collect();
    while let Some(id) = stack.pop() {
        let event = events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.to_owned()))?;
        for auth in &event.auth_events {
            if chain.insert(auth.clone()) {
                stack.push(auth);
            }
        }
    }
    Ok(chain)
}

/// The events in the auth chain of some state but not of every one. A state's auth chain is
/// the union of its events' auth chains.
pub fn auth_difference(
    states: &[StateMap<EventId>],
    events: &impl EventSource,
) -> Result<BTreeSet<EventId>, ResolveError> {
    let chains = states
        .iter()
        .map(|state| auth_chain(state.values().map(String::as_str), events))
        .collect::<Result<Vec<_>, _>>()?;
    let union: BTreeSet<&EventId> = chains.iter().flatten().collect();
    Ok(union.into_iter().filter(|id| !chains.iter().all(|c| c.contains(*id))).cloned().collect())
}
