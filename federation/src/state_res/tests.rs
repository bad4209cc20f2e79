//! Tests per step of state resolution, on hand-made graphs ([`raw`]) where a step only reads
//! the auth graph, and on rooms built by the rules ([`crate::testing`]) where it runs them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, json};

use super::auth_chain::{auth_chain, auth_difference};
use super::mainline::mainline_sort;
use super::power_sort::{is_power_event, power_sort, sender_power};
use super::subgraph::conflicted_subgraph;
use super::{ResolveError, iterative::iterative_auth_checks, resolve};
use crate::auth::RoomVersion;
use crate::event::{EventId, Pdu, types};
use crate::testing::{ALICE, BOB, CAROL, DAVE, Room, all_events, member, power_levels};

/// An event that only the graph steps read: its type, sender, `origin_ts` and auth events.
fn raw(id: &str, event_type: &str, sender: &str, ts: i64, auth: &[&str], content: serde_json::Value) -> Pdu {
    Pdu {
        event_id: id.into(),
        room_id: "room-1".into(),
        sender: sender.into(),
        origin: sender.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default(),
        origin_ts: ts,
        event_type: event_type.into(),
        content: content.as_object().cloned().unwrap_or_else(Map::new),
        state_key: Some(String::new()),
        prev_events: vec!["evt-prev".into()],
        auth_events: auth.iter().map(|a| (*a).to_owned()).collect(),
        depth: 2,
    }
}

fn source(events: Vec<Pdu>) -> BTreeMap<EventId, Pdu> {
    events.into_iter().map(|e| (e.event_id.clone(), e)).collect()
}

fn ids(list: &[&str]) -> BTreeSet<EventId> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn auth_chains_walk_every_auth_event_once() {
    let events = source(vec![
        raw("evt-a", "t", ALICE, 0, &[], json!({})),
        raw("evt-b", "t", ALICE, 0, &["evt-a"], json!({})),
        raw("evt-c", "t", ALICE, 0, &["evt-a", "evt-b"], json!({})),
    ]);
    assert_eq!(auth_chain(["evt-c"], &events), Ok(ids(&["evt-a", "evt-b"])));
    assert_eq!(auth_chain(["evt-a"], &events), Ok(BTreeSet::new()));
    assert_eq!(auth_chain(["evt-x"], &events), Err(ResolveError::MissingEvent("evt-x".into())));
}

#[test]
fn the_auth_difference_is_what_not_every_state_s_chain_holds() {
    let base = Room::group(ALICE, "public");
    let mut a = base.clone();
    a.join("evt-bob-join", BOB);
    a.send("evt-pl1", ALICE, types::POWER_LEVELS, Some(""), power_levels(&[(ALICE, 100), (BOB, 50)]));
    a.send("evt-name-a", BOB, types::NAME, Some(""), json!({"name": "A"}));
    let mut b = base.clone();
    b.send("evt-name-b", ALICE, types::NAME, Some(""), json!({"name": "B"}));
    let events = all_events(&[&a, &b]);
    let diff = auth_difference(&[a.state.clone(), b.state.clone()], &events).unwrap();
    assert!(diff.contains("evt-pl1") && diff.contains("evt-bob-join"), "{diff:?}");
    assert!(!diff.contains("evt-create") && !diff.contains("evt-pl0"), "{diff:?}");
    assert_eq!(auth_difference(&[a.state.clone(), a.state.clone()], &events), Ok(BTreeSet::new()));
}

#[test]
fn the_conflicted_subgraph_is_every_auth_path_between_conflicted_events() {
    // x ← y ← z: y lies between the conflicted x and z. w is only below z, v only above y.
    let events = source(vec![
        raw("evt-w", "t", ALICE, 0, &[], json!({})),
        raw("evt-x", "t", ALICE, 0, &["evt-w"], json!({})),
        raw("evt-y", "t", ALICE, 0, &["evt-x"], json!({})),
        raw("evt-z", "t", ALICE, 0, &["evt-y", "evt-w"], json!({})),
        raw("evt-v", "t", ALICE, 0, &["evt-y"], json!({})),
    ]);
    assert_eq!(conflicted_subgraph(&ids(&["evt-x", "evt-z"]), &events), Ok(ids(&["evt-x", "evt-y", "evt-z"])));
    assert_eq!(conflicted_subgraph(&ids(&["evt-z"]), &events), Ok(ids(&["evt-z"])));
    assert_eq!(conflicted_subgraph(&ids(&["evt-w", "evt-v"]), &events), Ok(ids(&["evt-w", "evt-x", "evt-y", "evt-v"])));
}

#[test]
fn power_events_are_the_ones_that_take_abilities_away() {
    let mut room = Room::group(ALICE, "public");
    room.join("evt-bob-join", BOB);
    room.join("evt-carol-join", CAROL);
    room.send("evt-kick", ALICE, types::MEMBER, Some(CAROL), member("leave"));
    room.send("evt-bob-leaves", BOB, types::MEMBER, Some(BOB), member("leave"));
    room.send("evt-ban", ALICE, types::MEMBER, Some(BOB), member("ban"));
    room.send("evt-name", ALICE, types::NAME, Some(""), json!({"name": "x"}));
    room.send("evt-acl", ALICE, types::SERVER_ACL, Some(""), json!({"deny": ["evil.test"]}));
    room.send("evt-life", ALICE, types::LIFECYCLE, Some(""), json!({"state": "open"}));
    room.send("evt-fed", ALICE, types::FEDERATION, Some(""), json!({"enabled": true}));
    let power: BTreeSet<&str> =
        room.events.values().filter(|e| is_power_event(e)).map(|e| e.event_id.as_str()).collect();
    assert_eq!(power, ["evt-ban", "evt-jr0", "evt-kick", "evt-pl0"].into());
}

#[test]
fn power_sort_is_kahn_with_power_then_time_then_id() {
    let pl = json!({"users": {(ALICE): 100, (BOB): 50}});
    let events = source(vec![
        raw("evt-create", types::CREATE, ALICE, 0, &[], json!({})),
        raw("evt-pl", types::POWER_LEVELS, ALICE, 50, &["evt-create"], pl),
        raw("evt-bob", "t", BOB, 1, &["evt-create", "evt-pl"], json!({})),
        raw("evt-alice-b", "t", ALICE, 9, &["evt-create", "evt-pl"], json!({})),
        raw("evt-alice-a", "t", ALICE, 9, &["evt-create", "evt-pl"], json!({})),
        raw("evt-after", "t", BOB, 0, &["evt-create", "evt-pl", "evt-alice-b"], json!({})),
    ]);
    assert_eq!(sender_power(&events["evt-pl"], &events), 100, "the creator, before power levels");
    assert_eq!(sender_power(&events["evt-bob"], &events), 50);
    let set = ids(&["evt-pl", "evt-bob", "evt-alice-a", "evt-alice-b", "evt-after"]);
    // evt-after waits for evt-alice-b, then goes before evt-bob (same power, earlier).
    assert_eq!(
        power_sort(&set, &events).unwrap(),
        ["evt-pl", "evt-alice-a", "evt-alice-b", "evt-after", "evt-bob"].map(String::from)
    );
}

#[test]
fn power_sort_refuses_a_cycle() {
    let events = source(vec![
        raw("evt-a", "t", ALICE, 0, &["evt-b"], json!({})),
        raw("evt-b", "t", ALICE, 0, &["evt-a"], json!({})),
    ]);
    assert_eq!(power_sort(&ids(&["evt-a", "evt-b"]), &events), Err(ResolveError::AuthCycle));
}

#[test]
fn mainline_sort_orders_by_the_power_levels_an_event_hangs_off() {
    let events = source(vec![
        raw("evt-pl1", types::POWER_LEVELS, ALICE, 0, &[], json!({})),
        raw("evt-pl2", types::POWER_LEVELS, ALICE, 0, &["evt-pl1"], json!({})),
        raw("evt-pl3", types::POWER_LEVELS, ALICE, 0, &["evt-pl2"], json!({})),
        raw("evt-w", "t", ALICE, 50, &[], json!({})),
        raw("evt-x", "t", ALICE, 10, &["evt-pl1"], json!({})),
        raw("evt-y", "t", ALICE, 1, &["evt-pl3"], json!({})),
        raw("evt-z", "t", ALICE, 5, &["evt-pl2"], json!({})),
        raw("evt-z2", "t", ALICE, 5, &["evt-pl2"], json!({})),
        // Hangs off pl2 through a power-levels event outside the mainline.
        raw("evt-side-pl", types::POWER_LEVELS, ALICE, 0, &["evt-pl2"], json!({})),
        raw("evt-u", "t", ALICE, 0, &["evt-side-pl"], json!({})),
    ]);
    let set = ids(&["evt-w", "evt-x", "evt-y", "evt-z", "evt-z2", "evt-u"]);
    assert_eq!(
        mainline_sort(&set, Some("evt-pl3"), &events).unwrap(),
        ["evt-w", "evt-x", "evt-u", "evt-z", "evt-z2", "evt-y"].map(String::from)
    );
    // With no power-levels event, time then id.
    assert_eq!(
        mainline_sort(&set, None, &events).unwrap(),
        ["evt-u", "evt-y", "evt-z", "evt-z2", "evt-x", "evt-w"].map(String::from)
    );
}

#[test]
fn iterative_auth_checks_keep_what_passes_in_order() {
    let base = Room::group(ALICE, "public");
    let mut a = base.clone();
    a.join("evt-bob-join", BOB);
    let mut b = base.clone();
    b.send("evt-ban-bob", ALICE, types::MEMBER, Some(BOB), member("ban"));
    let events = all_events(&[&a, &b]);
    let bob = (types::MEMBER.to_owned(), BOB.to_owned());
    // The ban first: the join then fails against it.
    let state = iterative_auth_checks(
        RoomVersion::V1,
        &["evt-ban-bob".into(), "evt-bob-join".into()],
        base.state.clone(),
        &events,
    )
    .unwrap();
    assert_eq!(state[&bob], "evt-ban-bob");
    // The join first: the ban still passes, and wins.
    let state = iterative_auth_checks(
        RoomVersion::V1,
        &["evt-bob-join".into(), "evt-ban-bob".into()],
        base.state.clone(),
        &events,
    )
    .unwrap();
    assert_eq!(state[&bob], "evt-ban-bob");
    // From an empty state an event still finds its own auth events.
    let state = iterative_auth_checks(RoomVersion::V1, &["evt-bob-join".into()], Default::default(), &events).unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(
        iterative_auth_checks(RoomVersion::V1, &["evt-nope".into()], Default::default(), &events),
        Err(ResolveError::MissingEvent("evt-nope".into()))
    );
}

#[test]
fn no_conflict_is_the_states_themselves() {
    let room = Room::group(ALICE, "public");
    assert_eq!(resolve(RoomVersion::V1, &[], &room.events), Ok(Default::default()));
    assert_eq!(resolve(RoomVersion::V1, std::slice::from_ref(&room.state), &room.events), Ok(room.state.clone()));
    assert_eq!(
        resolve(RoomVersion::V1, &[room.state.clone(), room.state.clone()], &room.events),
        Ok(room.state.clone())
    );
}

#[test]
fn a_missing_event_is_an_error_not_a_guess() {
    let base = Room::group(ALICE, "public");
    let mut a = base.clone();
    a.join("evt-bob-join", BOB);
    let mut b = base.clone();
    b.join("evt-dave-join", DAVE);
    // The caller only has branch a's events.
    assert_eq!(
        resolve(RoomVersion::V1, &[a.state.clone(), b.state.clone()], &a.events),
        Err(ResolveError::MissingEvent("evt-dave-join".into()))
    );
}

/// `origin_ts` counts seconds: a switch turned off and on again within one second ties on it,
/// and the later change (deeper in the graph) wins everywhere, whatever the event ids say.
#[test]
fn changes_within_one_second_resolve_to_the_later_one() {
    let mut base = Room::group(ALICE, "public");
    base.join("evt-bob-join", BOB);
    // Ids chosen so that the id order is the wrong one.
    base.send("evt-z-off", ALICE, types::FEDERATION, Some(""), json!({"enabled": false}));
    let second = base.ts;
    let mut ours = base.clone();
    ours.ts = second - 1;
    ours.send("evt-m-msg", ALICE, types::MESSAGE, None, json!({"body": "while off"}));
    ours.ts = second - 1;
    ours.send("evt-a-on", ALICE, types::FEDERATION, Some(""), json!({"enabled": true}));
    assert_eq!(ours.events["evt-a-on"].origin_ts, ours.events["evt-z-off"].origin_ts);
    let mut theirs = base.clone();
    theirs.send("evt-bob-msg", BOB, types::MESSAGE, None, json!({"body": "meanwhile"}));
    let events = all_events(&[&ours, &theirs]);
    let key = (types::FEDERATION.to_owned(), String::new());
    for states in [[ours.state.clone(), theirs.state.clone()], [theirs.state.clone(), ours.state.clone()]] {
        let resolved = resolve(RoomVersion::V1, &states, &events).unwrap();
        assert_eq!(resolved[&key], "evt-a-on");
    }
    // The same in step 3's order: two join-rules changes of one second keep their graph order.
    let mut rules = Room::group(ALICE, "public");
    let second = rules.ts;
    rules.ts = second;
    rules.send("evt-z-invite", ALICE, types::JOIN_RULES, Some(""), json!({"join_rule": "invite"}));
    rules.ts = second;
    rules.send("evt-a-public", ALICE, types::JOIN_RULES, Some(""), json!({"join_rule": "public"}));
    let set = ids(&["evt-z-invite", "evt-a-public"]);
    assert_eq!(power_sort(&set, &rules.events).unwrap(), ["evt-z-invite", "evt-a-public"].map(String::from));
}
