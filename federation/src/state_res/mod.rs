//! State resolution: the one room state that every server derives from the same set of
//! forked states, whatever order it learnt them in. Matrix's state resolution v2 with its 2.1
//! revision (MSC4297), for our events and rules ([`crate::auth`]); one file per step:
//!
//! 1. [`split`]: entries equal in every state are *unconflicted*; every other value is in the
//!    *conflicted set*.
//! 2. [`auth_chain`]: the *auth difference*, the events in some state's auth chain but not in
//!    every one's; and [`subgraph`]: the *conflicted subgraph*, the events on an auth path
//!    between two conflicted events (2.1). All three make the *full conflicted set*.
//! 3. [`power_sort`]: the *power events* of the full conflicted set (power levels, join rules,
//!    and kicks and bans of others; not the lifecycle or the server ACL, see
//!    [`power_sort::is_power_event`]), with the events of their auth chains that are in the
//!    set, in auth order by Kahn's algorithm, ties broken by the sender's power (higher
//!    first), then `origin_ts`, then `depth`, then event id.
//! 4. [`iterative`]: the auth checks, event by event, starting from an **empty** state (2.1):
//!    an event that passes takes its state entry.
//! 5. [`mainline`]: the other events of the full conflicted set, ordered by where they hang off
//!    the resolved power-levels event's chain, then `origin_ts`, then `depth`, then id
//!    (`origin_ts` is in seconds: `depth` orders changes of one second); auth-checked the
//!    same way, continuing from step 4's state.
//! 6. The unconflicted entries are put back on top.
//!
//! Everything is pure: events come from an [`EventSource`] the caller fills, and every
//! collection is ordered, so the answer depends on the set of states alone.

pub mod auth_chain;
pub mod iterative;
pub mod mainline;
pub mod power_sort;
pub mod split;
pub mod subgraph;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::auth::RoomVersion;
use crate::event::{EventId, EventSource, StateMap, types};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// An event of a state, or of an auth chain, that the caller did not supply.
    #[error("event {0} is not available")]
    MissingEvent(EventId),
    /// The auth events form a cycle, which reference hashes make impossible for real events.
    #[error("the auth events form a cycle")]
    AuthCycle,
}

/// The resolution of `states`, the room states at each fork (for instance the states after
/// each `prev_event` of a new event, or at each forward extremity).
pub fn resolve(
    version: RoomVersion,
    states: &[StateMap<EventId>],
    events: &impl EventSource,
) -> Result<StateMap<EventId>, ResolveError> {
    let (unconflicted, conflicted) = split::split(states);
    if conflicted.is_empty() {
        return Ok(unconflicted);
    }
    let mut full_conflicted = conflicted.clone();
    full_conflicted.extend(auth_chain::auth_difference(states, events)?);
    full_conflicted.extend(subgraph::conflicted_subgraph(&conflicted, events)?);

    let mut power_events = BTreeSet::new();
    for id in &full_conflicted {
        let event = events.event(id).ok_or_else(|| ResolveError::MissingEvent(id.clone()))?;
        if power_sort::is_power_event(event) {
            power_events.insert(id.clone());
        }
    }
    let mut power_set = power_events.clone();
    let chains = auth_chain::auth_chain(power_events.iter().map(String::as_str), events)?;
    power_set.extend(chains.into_iter().filter(|id| full_conflicted.contains(id)));
    let sorted_power = power_sort::power_sort(&power_set, events)?;
    let mut resolved = iterative::iterative_auth_checks(version, &sorted_power, StateMap::new(), events)?;

    let others: BTreeSet<EventId> = full_conflicted.difference(&power_set).cloned().collect();
    let power_levels = resolved.get(&(types::POWER_LEVELS.to_owned(), String::new()));
    let sorted_others = mainline::mainline_sort(&others, power_levels.map(String::as_str), events)?;
    resolved = iterative::iterative_auth_checks(version, &sorted_others, resolved, events)?;

    resolved.extend(unconflicted);
    Ok(resolved)
}
