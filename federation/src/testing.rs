//! Test support: rooms built from plain JSON events, each checked by the rules against the
//! branch's current state as it is added, with `prev_events`, `auth_events` and `depth`
//! filled in as a server would. A [`Room`] is one branch of the graph: clone it to fork.
//!
//! Shared by the unit tests and by `tests/` (included there with `#[path]`, its crate root
//! importing `federation::{auth, event}` so the `crate::` paths below resolve in both).
// Each of the two crates that include this file uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::auth::{self, AuthError, RoomVersion};
use crate::event::{EventId, Pdu, StateMap, types};

pub const ALICE: &str = "@alice:alpha.test";
pub const BOB: &str = "@bob:beta.test";
pub const CAROL: &str = "@carol:gamma.test";
pub const DAVE: &str = "@dave:alpha.test";
pub const CREATE_ID: &str = "evt-create";

/// One branch of a room's graph, and every event it knows.
#[derive(Debug, Clone)]
pub struct Room {
    pub room_id: String,
    pub events: BTreeMap<EventId, Pdu>,
    /// The state after `head`.
    pub state: StateMap<EventId>,
    pub head: EventId,
    pub depth: i64,
    pub ts: i64,
}

pub fn server_of(fqid: &str) -> &str {
    fqid.split_once(':').map_or("", |(_, server)| server)
}

/// `swp.room.member` content.
pub fn member(membership: &str) -> Value {
    json!({"membership": membership, "display_name": "someone"})
}

/// `swp.room.power_levels` content as the homeserver emits it today, with these users.
pub fn power_levels(users: &[(&str, i64)]) -> Value {
    let users: serde_json::Map<String, Value> = users.iter().map(|(u, l)| ((*u).to_owned(), json!(l))).collect();
    json!({
        "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
        "invite": 0, "kick": 50, "ban": 50, "redact": 50,
    })
}

impl Room {
    /// A room with only its create event, sent by `creator` with `content`.
    pub fn created(creator: &str, content: Value) -> Room {
        let value = json!({
            "room_id": "room-1", "sender": creator, "origin": server_of(creator), "origin_ts": 0,
            "event_type": types::CREATE, "content": content, "state_key": "",
            "prev_events": [], "auth_events": [], "depth": 1,
        });
        let create = Pdu::parse(CREATE_ID, &value).expect("the create event parses");
        auth::check(RoomVersion::V1, &create, &StateMap::<Pdu>::new()).expect("the create event is allowed");
        let mut room = Room {
            room_id: "room-1".into(),
            events: BTreeMap::new(),
            state: StateMap::new(),
            head: CREATE_ID.into(),
            depth: 1,
            ts: 0,
        };
        room.apply(create);
        room
    }

    /// A group room as today's homeserver opens it: create, the creator's join, power levels
    /// (creator 100), join rules.
    pub fn group(creator: &str, join_rule: &str) -> Room {
        let mut room = Room::created(creator, json!({"creator": creator, "room_type": "group", "tenant_id": "t"}));
        room.send("evt-creator-join", creator, types::MEMBER, Some(creator), member("join"));
        room.send("evt-pl0", creator, types::POWER_LEVELS, Some(""), power_levels(&[(creator, 100)]));
        room.send("evt-jr0", creator, types::JOIN_RULES, Some(""), json!({"join_rule": join_rule}));
        room
    }

    /// The next event of this branch, not yet checked: `prev_events` is the head, and
    /// `auth_events` name the current state's entries among what the rules read.
    pub fn event(&self, id: &str, sender: &str, event_type: &str, state_key: Option<&str>, content: Value) -> Pdu {
        let mut value = json!({
            "room_id": self.room_id, "sender": sender, "origin": server_of(sender),
            "origin_ts": self.ts + 1, "event_type": event_type, "content": content,
            "prev_events": [self.head], "auth_events": [], "depth": self.depth + 1,
        });
        if let Some(key) = state_key {
            value["state_key"] = json!(key);
        }
        let mut pdu = Pdu::parse(id, &value).expect("test events parse");
        pdu.auth_events = auth::auth_types_for(&pdu).iter().filter_map(|k| self.state.get(k).cloned()).collect();
        pdu
    }

    /// Checks `event` against the current state; if allowed, adds it to the branch.
    pub fn try_add(&mut self, event: Pdu) -> Result<EventId, AuthError> {
        auth::check(RoomVersion::V1, &event, &self.state_events())?;
        let id = event.event_id.clone();
        self.apply(event);
        Ok(id)
    }

    pub fn try_send(
        &mut self,
        id: &str,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<EventId, AuthError> {
        let event = self.event(id, sender, event_type, state_key, content);
        self.try_add(event)
    }

    /// [`Room::try_send`], for events the test expects to be allowed.
    pub fn send(
        &mut self,
        id: &str,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> EventId {
        match self.try_send(id, sender, event_type, state_key, content) {
            Ok(id) => id,
            Err(e) => panic!("{id} was refused: {e}"),
        }
    }

    pub fn join(&mut self, id: &str, who: &str) -> EventId {
        self.send(id, who, types::MEMBER, Some(who), member("join"))
    }

    /// The current state as events, for [`auth::check`].
    pub fn state_events(&self) -> StateMap<&Pdu> {
        self.state.iter().filter_map(|(k, id)| self.events.get(id).map(|e| (k.clone(), e))).collect()
    }

    pub fn state_id(&self, event_type: &str, state_key: &str) -> Option<&str> {
        self.state.get(&(event_type.to_owned(), state_key.to_owned())).map(String::as_str)
    }

    fn apply(&mut self, event: Pdu) {
        if let Some(key) = event.state_entry() {
            self.state.insert(key, event.event_id.clone());
        }
        self.head = event.event_id.clone();
        self.depth = event.depth;
        self.ts = event.origin_ts;
        self.events.insert(event.event_id.clone(), event);
    }
}

/// Every event known to any of `branches`.
pub fn all_events(branches: &[&Room]) -> BTreeMap<EventId, Pdu> {
    branches.iter().flat_map(|b| b.events.clone()).collect()
}
