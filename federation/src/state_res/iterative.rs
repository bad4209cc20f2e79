//! Steps 4 and 5's auth checks: apply events in order, each checked against its own auth
//! events overridden by the state resolved so far.

use crate::auth::{self, RoomVersion};
use crate::event::{EventId, EventSource, Pdu, StateMap};

use super::ResolveError;

/// Checks `sorted` in order, starting from `state`. An event's auth state is what its own
/// `auth_events` say for the entries the rules read ([`auth::auth_types_for`]), with the
/// entries `state` already has taking precedence. An event that passes takes its state entry;
/// one that fails is left out.
pub fn iterative_auth_checks(
    version: RoomVersion,
    sorted: &[EventId],
    mut state: StateMap<EventId>,
    events: &impl EventSource,
) -> Result<StateMap<EventId>, ResolveError> {
    let fetch = |id: &str| events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.to_owned()));
    for id in sorted {
        let event = fetch(id)?;
        let wanted = auth::auth_types_for(event);
        let mut auth_state: StateMap<&Pdu> = StateMap::new();
        for auth_id in &event.auth_events {
            let auth_event = fetch(auth_id)?;
            if let Some(key) = auth_event.state_entry().filter(|k| wanted.contains(k)) {
                auth_state.insert(key, auth_event);
            }
        }
        for key in wanted {
            if let Some(current) = state.get(&key) {
                auth_state.insert(key, fetch(current)?);
            }
        }
        if auth::check(version, event, &auth_state).is_ok()
            && let Some(key) = event.state_entry()
        {
            state.insert(key, id.clone());
        }
    }
    Ok(state)
}
