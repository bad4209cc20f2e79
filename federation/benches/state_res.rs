//! State resolution of a large conflicted set: two branches of a busy room that split and each
//! made ~750 state changes (power-level changes, joins, kicks, name and topic changes) before
//! they meet again. The budget: a 1,000-event conflicted set resolves in under 200 ms.
//!
//! Run: `cargo bench -p federation --bench state_res -- --warm-up-time 1 --measurement-time 5`.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use federation::auth::RoomVersion;
use federation::event::{EventId, StateMap, types};
use federation::state_res::{auth_chain, resolve, split, subgraph};
use federation::{auth, event};
use serde_json::{Value, json};

#[path = "../src/testing.rs"]
mod testing;

use testing::{ALICE, DAVE, Room, all_events, member};

/// Members of the room before the split, on three servers.
const MEMBERS: usize = 300;
/// Changes per branch after the split.
const CHANGES: usize = 750;

fn user(i: usize) -> String {
    let server = ["alpha.test", "beta.test", "gamma.test"][i % 3];
    format!("@user{i}:{server}")
}

/// A public room with [`MEMBERS`] members; Alice and Dave at 100.
fn base() -> Room {
    let mut room = Room::group(ALICE, "public");
    room.join("evt-dave-join", DAVE);
    for i in 0..MEMBERS {
        room.join(&format!("evt-join-{i}"), &user(i));
    }
    let levels = testing::power_levels(&[(ALICE, 100), (DAVE, 100)]);
    room.send("evt-pl-base", ALICE, types::POWER_LEVELS, Some(""), levels);
    room
}

/// One branch: `by` changes power levels, membership and names, [`CHANGES`] events in all.
fn branch(base: &Room, tag: &str, by: &str, offset: usize) -> Room {
    let mut room = base.clone();
    for i in 0..CHANGES {
        let id = format!("evt-{tag}-{i}");
        let target = user((i * 7 + offset) % MEMBERS);
        match i % 5 {
            0 => {
                let current = room.state_id(types::POWER_LEVELS, "").map(|id| room.events[id].content.clone());
                let mut content = Value::Object(current.unwrap_or_default());
                content["users"][&target] = json!(((i / 5) % 5) as i64 * 10);
                room.send(&id, by, types::POWER_LEVELS, Some(""), content);
            }
            1 => {
                let newcomer = format!("@new{tag}{i}:delta.test");
                room.send(&id, &newcomer, types::MEMBER, Some(&newcomer), member("join"));
            }
            2 => {
                let _ = room.try_send(&id, by, types::MEMBER, Some(&target), member("leave"));
            }
            3 => {
                room.send(&id, by, types::NAME, Some(""), json!({"name": format!("{tag} {i}")}));
            }
            _ => {
                room.send(&id, by, types::TOPIC, Some(""), json!({"topic": format!("{tag} topic {i}")}));
            }
        }
    }
    room
}

fn benches(c: &mut Criterion) {
    let base = base();
    let a = branch(&base, "a", ALICE, 0);
    let b = branch(&base, "b", DAVE, 3);
    let events = all_events(&[&a, &b]);
    let states: Vec<StateMap<EventId>> = vec![a.state.clone(), b.state.clone()];

    let (_, conflicted) = split::split(&states);
    let mut full: BTreeSet<EventId> = conflicted.clone();
    full.extend(auth_chain::auth_difference(&states, &events).expect("auth difference"));
    full.extend(subgraph::conflicted_subgraph(&conflicted, &events).expect("subgraph"));
    eprintln!(
        "room: {} events; state {} entries; conflicted state entries {}; full conflicted set {} events",
        events.len(),
        a.state.len().max(b.state.len()),
        conflicted.len(),
        full.len(),
    );
    let resolved = resolve(RoomVersion::V1, &states, &events).expect("resolves");
    assert!(resolved.contains_key(&(types::POWER_LEVELS.to_owned(), String::new())));

    let mut group = c.benchmark_group("state_res");
    group.sample_size(20);
    group.bench_function("resolve two branches of 750 changes", |bench| {
        bench.iter(|| resolve(RoomVersion::V1, black_box(&states), black_box(&events)).expect("resolves"))
    });
    group.finish();
    // Keeps the imports the shared test support needs in use.
    let _ = (auth::auth_types_for, event::is_event_id);
}

criterion_group!(state_res, benches);
criterion_main!(state_res);
