//! Step 1: the unconflicted state map and the conflicted set.

use std::collections::BTreeSet;

use crate::event::{EventId, StateKey, StateMap};

/// `(unconflicted, conflicted)`: an entry with the same event in every state is unconflicted;
/// every event of any other entry (also one some states lack) is conflicted.
pub fn split(states: &[StateMap<EventId>]) -> (StateMap<EventId>, BTreeSet<EventId>) {
    let keys: BTreeSet<&StateKey> = states.iter().flat_map(|s| s.keys()).collect();
    let mut unconflicted = StateMap::new();
    let mut conflicted = BTreeSet::new();
    for key in keys {
        let values: Vec<Option<&EventId>> = states.iter().map(|s| s.get(key)).collect();
        match values.first() {
            Some(Some(first)) if values.iter().all(|v| *v == Some(*first)) => {
                unconflicted.insert(key.clone(), (*first).clone());
            }
            _ => conflicted.extend(values.into_iter().flatten().cloned()),
        }
    }
    (unconflicted, conflicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(&str, &str, &str)]) -> StateMap<EventId> {
        entries.iter().map(|(t, k, id)| (((*t).to_owned(), (*k).to_owned()), (*id).to_owned())).collect()
    }

    #[test]
    fn equal_entries_are_unconflicted_the_rest_conflicted() {
        let a = state(&[("name", "", "evt-n1"), ("pl", "", "evt-p1"), ("only_a", "", "evt-o")]);
        let b = state(&[("name", "", "evt-n1"), ("pl", "", "evt-p2")]);
        let (unconflicted, conflicted) = split(&[a.clone(), b.clone()]);
        assert_eq!(unconflicted, state(&[("name", "", "evt-n1")]));
        assert_eq!(conflicted, ["evt-o", "evt-p1", "evt-p2"].map(String::from).into());
        assert_eq!(split(&[b, a]), (unconflicted, conflicted));
    }

    #[test]
    fn one_state_or_none() {
        let a = state(&[("name", "", "evt-n1")]);
        assert_eq!(split(std::slice::from_ref(&a)), (a, BTreeSet::new()));
        assert_eq!(split(&[]), (StateMap::new(), BTreeSet::new()));
    }
}
