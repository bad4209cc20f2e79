//! The classic state-resolution failures, each on a room forked in two: a power-level change
//! racing a ban, a moderator banned while banning, two moderators acting on one member, a
//! join racing a ban, changes on one side silently reverted ("state resets"), and a frozen room.
//! Every case resolves the same with the forks in either order.

use federation::auth::RoomVersion;
use federation::event::{EventId, StateMap, types};
use federation::state_res::resolve;
use federation::{auth, event};
use serde_json::json;

#[path = "../src/testing.rs"]
mod testing;

use testing::{ALICE, BOB, CAROL, DAVE, Room, all_events, member, power_levels};

const ERIN: &str = "@erin:delta.test";

/// Alice 100, Carol and Dave moderators at 50, Bob at 0; all joined.
fn base() -> Room {
    let mut room = Room::group(ALICE, "public");
    room.join("evt-bob-join", BOB);
    room.join("evt-carol-join", CAROL);
    room.join("evt-dave-join", DAVE);
    room.send(
        "evt-pl-mods",
        ALICE,
        types::POWER_LEVELS,
        Some(""),
        power_levels(&[(ALICE, 100), (CAROL, 50), (DAVE, 50)]),
    );
    room
}

/// Resolves the two forks in both orders, checks they agree, and answers the state.
fn resolved(a: &Room, b: &Room) -> StateMap<EventId> {
    let events = all_events(&[a, b]);
    let ab = resolve(RoomVersion::V1, &[a.state.clone(), b.state.clone()], &events).unwrap();
    let ba = resolve(RoomVersion::V1, &[b.state.clone(), a.state.clone()], &events).unwrap();
    assert_eq!(ab, ba, "the order of the forks matters");
    ab
}

fn get<'a>(state: &'a StateMap<EventId>, event_type: &str, state_key: &str) -> Option<&'a str> {
    state.get(&(event_type.to_owned(), state_key.to_owned())).map(String::as_str)
}

#[test]
fn a_demotion_racing_a_ban_wins_and_the_ban_fails() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-demote-carol", ALICE, types::POWER_LEVELS, Some(""), power_levels(&[(ALICE, 100), (DAVE, 50)]));
    let mut b = room.clone();
    b.send("evt-carol-bans-bob", CAROL, types::MEMBER, Some(BOB), member("ban"));
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::POWER_LEVELS, ""), Some("evt-demote-carol"));
    assert_eq!(get(&state, types::MEMBER, BOB), Some("evt-bob-join"), "Carol had no power left to ban");
}

#[test]
fn a_moderator_banned_while_banning_loses_the_ban() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-alice-bans-carol", ALICE, types::MEMBER, Some(CAROL), member("ban"));
    let mut b = room.clone();
    b.send("evt-carol-bans-bob", CAROL, types::MEMBER, Some(BOB), member("ban"));
    b.send("evt-carol-topic", CAROL, types::TOPIC, Some(""), json!({"topic": "mine"}));
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::MEMBER, CAROL), Some("evt-alice-bans-carol"));
    assert_eq!(get(&state, types::MEMBER, BOB), Some("evt-bob-join"));
    // Nothing Carol did on the other side survives: she was banned.
    assert_eq!(get(&state, types::TOPIC, ""), None);
}

#[test]
fn a_moderator_banned_by_the_owner_loses_a_kick_of_a_lower_member() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-alice-bans-carol", ALICE, types::MEMBER, Some(CAROL), member("ban"));
    let mut b = room.clone();
    b.send("evt-carol-kicks-bob", CAROL, types::MEMBER, Some(BOB), member("leave"));
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::MEMBER, CAROL), Some("evt-alice-bans-carol"));
    assert_eq!(get(&state, types::MEMBER, BOB), Some("evt-bob-join"));
}

#[test]
fn moderators_acting_on_the_same_member_resolve_by_power_then_time_then_id() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-carol-bans-bob", CAROL, types::MEMBER, Some(BOB), member("ban"));
    let mut b = room.clone();
    b.send("evt-dave-kicks-bob", DAVE, types::MEMBER, Some(BOB), member("leave"));
    // Same power, same origin_ts: the smaller id goes first; the kick that follows a ban
    // is an unban, which Dave may make.
    assert_eq!(get(&resolved(&a, &b), types::MEMBER, BOB), Some("evt-dave-kicks-bob"));

    // A higher sender goes first: the owner's kick, then the moderator's ban, the last word.
    let mut a = room.clone();
    a.send("evt-alice-kicks-bob", ALICE, types::MEMBER, Some(BOB), member("leave"));
    let mut b = room.clone();
    b.send("evt-carol-bans-bob", CAROL, types::MEMBER, Some(BOB), member("ban"));
    assert_eq!(get(&resolved(&a, &b), types::MEMBER, BOB), Some("evt-carol-bans-bob"));
}

#[test]
fn a_join_racing_a_ban_stays_out() {
    let room = base();
    let mut a = room.clone();
    a.join("evt-erin-join", ERIN);
    a.send("evt-erin-names", ALICE, types::NAME, Some(""), json!({"name": "with erin"}));
    let mut b = room.clone();
    b.send("evt-carol-bans-erin", CAROL, types::MEMBER, Some(ERIN), member("ban"));
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::MEMBER, ERIN), Some("evt-carol-bans-erin"));
    assert_eq!(get(&state, types::NAME, ""), Some("evt-erin-names"), "unrelated changes stay");
}

#[test]
fn changes_on_one_side_are_not_reset_by_the_other() {
    let room = base();
    let mut a = room.clone();
    a.send(
        "evt-promote-bob",
        ALICE,
        types::POWER_LEVELS,
        Some(""),
        power_levels(&[(ALICE, 100), (BOB, 50), (CAROL, 50), (DAVE, 50)]),
    );
    a.send("evt-bob-names", BOB, types::NAME, Some(""), json!({"name": "bob's"}));
    a.send("evt-carol-kicks-dave", ALICE, types::MEMBER, Some(DAVE), member("leave"));
    let mut b = room.clone();
    b.send("evt-carol-topic", CAROL, types::TOPIC, Some(""), json!({"topic": "t"}));
    b.send("evt-msg", BOB, types::MESSAGE, None, json!({"body": "hi"}));
    let state = resolved(&a, &b);
    let mut expected = a.state.clone();
    expected.insert((types::TOPIC.to_owned(), String::new()), "evt-carol-topic".to_owned());
    assert_eq!(state, expected);

    // A fork that changed no state at all leaves the other side's state exactly.
    let mut quiet = room.clone();
    quiet.send("evt-quiet-msg", BOB, types::MESSAGE, None, json!({"body": "hi"}));
    assert_eq!(resolved(&a, &quiet), a.state);
}

#[test]
fn name_changes_on_both_sides_resolve_the_same_everywhere() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-name-a", CAROL, types::NAME, Some(""), json!({"name": "A"}));
    let mut b = room.clone();
    b.send("evt-name-b", DAVE, types::NAME, Some(""), json!({"name": "B"}));
    // Same mainline position and time: applied by id, so the larger id is the last one kept.
    assert_eq!(get(&resolved(&a, &b), types::NAME, ""), Some("evt-name-b"));
    // The later one wins whatever the ids.
    let mut b = room.clone();
    b.ts -= 1;
    b.send("evt-name-b", DAVE, types::NAME, Some(""), json!({"name": "B"}));
    assert_eq!(get(&resolved(&a, &b), types::NAME, ""), Some("evt-name-a"));
}

#[test]
fn a_change_made_after_a_power_change_follows_the_mainline() {
    let room = base();
    let mut a = room.clone();
    a.send(
        "evt-pl-a",
        ALICE,
        types::POWER_LEVELS,
        Some(""),
        power_levels(&[(ALICE, 100), (CAROL, 50), (DAVE, 50), (BOB, 10)]),
    );
    a.send("evt-name-a", CAROL, types::NAME, Some(""), json!({"name": "A"}));
    let mut b = room.clone();
    b.ts += 100;
    b.send("evt-name-b", DAVE, types::NAME, Some(""), json!({"name": "B"}));
    // evt-name-a hangs off the newer power levels, so it is applied after evt-name-b,
    // even though evt-name-b is later by the clock.
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::POWER_LEVELS, ""), Some("evt-pl-a"));
    assert_eq!(get(&state, types::NAME, ""), Some("evt-name-a"));
}

#[test]
fn an_archived_room_drops_concurrent_changes() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-archive", ALICE, types::LIFECYCLE, Some(""), json!({"state": "archived"}));
    let mut b = room.clone();
    b.send("evt-name-b", CAROL, types::NAME, Some(""), json!({"name": "B"}));
    b.send("evt-bob-leaves", BOB, types::MEMBER, Some(BOB), member("leave"));
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::LIFECYCLE, ""), Some("evt-archive"));
    assert_eq!(get(&state, types::NAME, ""), None);
    assert_eq!(get(&state, types::MEMBER, BOB), Some("evt-bob-join"));
}

#[test]
fn a_server_acl_shuts_out_a_concurrent_change_from_the_denied_server() {
    let room = base();
    let mut a = room.clone();
    a.send("evt-acl", ALICE, types::SERVER_ACL, Some(""), json!({"deny": ["gamma.test"]}));
    let mut b = room.clone();
    b.send("evt-carol-topic", CAROL, types::TOPIC, Some(""), json!({"topic": "from gamma"}));
    let state = resolved(&a, &b);
    assert_eq!(get(&state, types::SERVER_ACL, ""), Some("evt-acl"));
    assert_eq!(get(&state, types::TOPIC, ""), None);
}
