//! Step 2, the 2.1 addition: the conflicted subgraph.
//!
//! An event between two conflicted events in the auth graph (in the auth chain of one, with
//! another in its own auth chain) decided how the later one was authorised. v2 could leave
//! such an event out of the full conflicted set when every state's auth chain held it, and
//! then check the later event against an unconflicted state that no longer matched
//! (MSC4297's state resets). 2.1 adds them all.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{EventId, EventSource};

use super::ResolveError;

/// The events on an auth path from one conflicted event down to another, both included.
pub fn conflicted_subgraph(
    conflicted: &BTreeSet<EventId>,
    events: &impl EventSource,
) -> Result<BTreeSet<EventId>, ResolveError> {
    // Below: the conflicted events and everything in their auth chains, with the reversed
    // edges (auth event → the events that name it).
    let mut below: BTreeSet<&str> = conflicted.iter().map(String::as_str).collect();
    let mut named_by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut stack: Vec<&str> = below.iter().copied().collect();
    while let Some(id) = stack.pop() {
        let event = events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.to_owned()))?;
        for auth in &event.auth_events {
            named_by.entry(auth.as_str()).or_default().push(id);
            if below.insert(auth.as_str()) {
                stack.push(auth.as_str());
            }
        }
    }
    // Walking the reversed edges up from the conflicted events stays below some conflicted
    // event, so what it reaches is both above one conflicted event and below another.
    let mut between: BTreeSet<&str> = conflicted.iter().map(String::as_str).collect();
    let mut stack: Vec<&str> = between.iter().copied().collect();
    while let Some(id) = stack.pop() {
        for &parent in named_by.get(id).into_iter().flatten() {
            if between.insert(parent) {
                stack.push(parent);
            }
        }
    }
    Ok(between.into_iter().map(str::to_owned).collect())
}
