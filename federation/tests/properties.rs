//! Property tests (proptest).
//!
//! - State resolution depends on the set of forked states alone: for generated forks (power
//!   level changes, bans, kicks, joins, leaves, name changes, with jittered clocks, on two or
//!   three branches) every order of the states, and repeating one, gives the same state, made
//!   of events the branches hold.
//! - Untrusted input never panics: arbitrary JSON through `Pdu::parse`, and events of every
//!   known type with arbitrary content through `auth::check` and `resolve`.

use std::collections::BTreeMap;

use federation::auth::{AuthError, RoomVersion};
use federation::event::{EventId, Pdu, StateMap, types};
use federation::state_res::resolve;
use federation::{auth, event};
use proptest::prelude::*;
use serde_json::{Value, json};

#[path = "../src/testing.rs"]
mod testing;

use testing::{ALICE, BOB, CAROL, DAVE, Room, all_events, member};

const ERIN: &str = "@erin:delta.test";
const USERS: [&str; 5] = [ALICE, BOB, CAROL, DAVE, ERIN];

/// One attempted change on a branch; the rules decide whether it is accepted.
#[derive(Debug, Clone)]
enum Op {
    SetLevel { by: usize, target: usize, level: i64 },
    Ban { by: usize, target: usize },
    Kick { by: usize, target: usize },
    Join { who: usize },
    Leave { who: usize },
    Name { by: usize, name: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS.len();
    prop_oneof![
        (user.clone(), user.clone(), prop::sample::select(vec![0i64, 10, 50, 60, 100]))
            .prop_map(|(by, target, level)| Op::SetLevel { by, target, level }),
        (user.clone(), user.clone()).prop_map(|(by, target)| Op::Ban { by, target }),
        (user.clone(), user.clone()).prop_map(|(by, target)| Op::Kick { by, target }),
        user.clone().prop_map(|who| Op::Join { who }),
        user.clone().prop_map(|who| Op::Leave { who }),
        (user, any::<u8>()).prop_map(|(by, name)| Op::Name { by, name }),
    ]
}

/// Alice 100, Carol and Dave 50, Bob 0, all joined; Erin not in the room; public.
fn base() -> Room {
    let mut room = Room::group(ALICE, "public");
    room.join("evt-bob-join", BOB);
    room.join("evt-carol-join", CAROL);
    room.join("evt-dave-join", DAVE);
    let levels = testing::power_levels(&[(ALICE, 100), (CAROL, 50), (DAVE, 50)]);
    room.send("evt-pl-base", ALICE, types::POWER_LEVELS, Some(""), levels);
    room
}

/// Applies `ops` to a fork of `base`; the refused ones leave no trace.
fn branch(base: &Room, name: usize, ops: &[(Op, u8)]) -> Room {
    let mut room = base.clone();
    for (i, (op, jitter)) in ops.iter().enumerate() {
        room.ts += i64::from(*jitter % 4);
        let id = format!("evt-b{name}-{i}");
        let _refused_or_not: Result<EventId, AuthError> = match op.clone() {
            Op::SetLevel { by, target, level } => {
                let current = room.state_id(types::POWER_LEVELS, "").map(|id| room.events[id].content.clone());
                let mut content = Value::Object(current.unwrap_or_default());
                content["users"][USERS[target]] = json!(level);
                room.try_send(&id, USERS[by], types::POWER_LEVELS, Some(""), content)
            }
            Op::Ban { by, target } => room.try_send(&id, USERS[by], types::MEMBER, Some(USERS[target]), member("ban")),
            Op::Kick { by, target } => {
                room.try_send(&id, USERS[by], types::MEMBER, Some(USERS[target]), member("leave"))
            }
            Op::Join { who } => room.try_send(&id, USERS[who], types::MEMBER, Some(USERS[who]), member("join")),
            Op::Leave { who } => room.try_send(&id, USERS[who], types::MEMBER, Some(USERS[who]), member("leave")),
            Op::Name { by, name } => room.try_send(&id, USERS[by], types::NAME, Some(""), json!({"name": name})),
        };
    }
    room
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(at, n - 1);
            out.push(p);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn resolution_does_not_depend_on_the_order_of_the_forks(
        forks in prop::collection::vec(prop::collection::vec((op(), any::<u8>()), 0..6), 2..=3),
    ) {
        let base = base();
        let branches: Vec<Room> = forks.iter().enumerate().map(|(i, ops)| branch(&base, i, ops)).collect();
        let events = all_events(&branches.iter().collect::<Vec<_>>());
        let states: Vec<StateMap<EventId>> = branches.iter().map(|b| b.state.clone()).collect();

        let first = resolve(RoomVersion::V1, &states, &events).unwrap();
        for order in permutations(states.len()) {
            let permuted: Vec<_> = order.iter().map(|&i| states[i].clone()).collect();
            prop_assert_eq!(&resolve(RoomVersion::V1, &permuted, &events).unwrap(), &first, "order {:?}", order);
        }
        let mut repeated = states.clone();
        repeated.push(states[0].clone());
        prop_assert_eq!(&resolve(RoomVersion::V1, &repeated, &events).unwrap(), &first);

        // The result is made of known state events, each under its own key, and keeps the
        // room's create event and a power-levels event.
        for (key, id) in &first {
            let event = &events[id];
            prop_assert_eq!(Some(key.clone()), event.state_entry());
        }
        prop_assert_eq!(first.get(&(types::CREATE.to_owned(), String::new())).map(String::as_str), Some("evt-create"));
        prop_assert!(first.contains_key(&(types::POWER_LEVELS.to_owned(), String::new())));
        // Resolving a state with itself changes nothing.
        prop_assert_eq!(&resolve(RoomVersion::V1, &[first.clone(), first.clone()], &events).unwrap(), &first);
    }
}

/// Arbitrary JSON: scalars, strings that look like ids, nested arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1000i64..1000).prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            "1",
            "join",
            "invite",
            "leave",
            "ban",
            "knock",
            "public",
            "open",
            "archived",
            "closed",
            ALICE,
            BOB,
            "@x:y",
            "evt-a",
            "*",
            "alpha.test",
            "dm",
            "group",
        ])
        .prop_map(|s| json!(s)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let keys = prop::sample::select(vec![
            "membership",
            "join_rule",
            "state",
            "enabled",
            "allow",
            "deny",
            "users",
            "events",
            "ban",
            "kick",
            "invite",
            "redact",
            "state_default",
            "events_default",
            "users_default",
            "redacts",
            "room_version",
            "creator",
            "room_type",
            "dm_parties",
            ALICE,
            BOB,
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event_type() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        types::CREATE,
        types::MEMBER,
        types::POWER_LEVELS,
        types::JOIN_RULES,
        types::NAME,
        types::LIFECYCLE,
        types::FEDERATION,
        types::SERVER_ACL,
        types::MESSAGE,
        types::REDACTION,
        "swp.other",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsing_arbitrary_json_never_panics(value in json_value(), fields in json_value()) {
        let _ = Pdu::parse("evt-x", &value);
        let _ = Pdu::from_wire(&value);
        // Event-shaped objects with arbitrary field values.
        let mut event = json!({
            "room_id": "room-1", "sender": ALICE, "origin": "alpha.test", "origin_ts": 1,
            "event_type": types::NAME, "content": {}, "prev_events": ["evt-a"], "auth_events": [], "depth": 2,
        });
        if let Value::Object(fields) = fields {
            for (k, v) in fields {
                event[k] = v;
            }
        }
        let _ = Pdu::parse("evt-x", &event);
    }

    #[test]
    fn the_rules_and_resolution_never_panic_on_arbitrary_content(
        event_type in event_type(),
        sender in prop::sample::select(USERS.to_vec()),
        state_key in prop::option::of(prop::sample::select(vec!["", ALICE, BOB, "x"])),
        content in json_value(),
    ) {
        let base = base();
        let content = match content {
            Value::Object(map) => Value::Object(map),
            other => json!({"membership": other}),
        };
        let mut fork = base.clone();
        let event = fork.event("evt-fuzz", sender, event_type, state_key, content);
        let _ = auth::auth_types_for(&event);
        let _ = auth::auth_state_from_auth_events(&event, &fork.events).map(|s| auth::check(RoomVersion::V1, &event, &s));
        // Accepted or not, the event is in the graph: resolution must cope either way.
        if fork.try_add(event.clone()).is_err() {
            fork.events.insert(event.event_id.clone(), event.clone());
            if let Some(key) = event.state_entry() {
                fork.state.insert(key, event.event_id.clone());
            }
        }
        let mut other = base.clone();
        other.send("evt-other-name", CAROL, types::NAME, Some(""), json!({"name": "n"}));
        let events: BTreeMap<EventId, Pdu> = all_events(&[&fork, &other]);
        let _ = resolve(RoomVersion::V1, &[fork.state.clone(), other.state.clone()], &events);
    }
}
