//! A typed, validated view of a PDU (contract section 8, "Events").
//!
//! The authorization rules and state resolution see events from untrusted peers, so a
//! [`Pdu`] is only ever built by [`Pdu::parse`], which checks every field it keeps and answers
//! [`MalformedEvent`] instead of panicking. Signatures, hashes and `event_uuid` are not kept:
//! they are checked before the rules run (`FEDERATION.md`, "Checks on every inbound event"),
//! and the rules never read them.
//!
//! The event id is the reference hash of the redacted event. The caller usually knows it
//! already (it computed it to de-duplicate), so [`Pdu::parse`] takes it as an argument;
//! [`Pdu::from_wire`] computes it with `crypto`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// An event id: `evt-` followed by the unpadded URL-safe base64 of the reference hash.
pub type EventId = String;

/// Which state entry an event fills: `(event_type, state_key)`.
pub type StateKey = (String, String);

/// A room state: one value per [`StateKey`]. Ordered, so that everything derived from it by
/// iteration is deterministic.
pub type StateMap<T> = BTreeMap<StateKey, T>;

/// The event types the rules know.
pub mod types {
    pub const CREATE: &str = "swp.room.create";
    pub const MEMBER: &str = "swp.room.member";
    pub const POWER_LEVELS: &str = "swp.room.power_levels";
    pub const JOIN_RULES: &str = "swp.room.join_rules";
    pub const NAME: &str = "swp.room.name";
    pub const TOPIC: &str = "swp.room.topic";
    pub const LIFECYCLE: &str = "swp.room.lifecycle";
    /// The room's federation switch: gates transport, not acceptance.
    pub const FEDERATION: &str = "swp.room.federation";
    /// The room's server allow/deny lists: part of acceptance.
    pub const SERVER_ACL: &str = "swp.room.server_acl";
    pub const MESSAGE: &str = "swp.room.message";
    pub const REACTION: &str = "swp.room.reaction";
    pub const REDACTION: &str = "swp.room.redaction";
}

/// At most this many `prev_events` (Matrix's limit; a server takes at most 10 extremities).
pub const MAX_PREV_EVENTS: usize = 20;
/// At most this many `auth_events`: more than the rules can ever select.
pub const MAX_AUTH_EVENTS: usize = 10;
/// The longest event id accepted (the homeserver's own limit for ids).
pub const MAX_EVENT_ID_LEN: usize = 128;
/// The longest room id, event type and state key accepted.
pub const MAX_ID_LEN: usize = 255;

/// An event that does not have the shape of contract section 8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct MalformedEvent(pub String);

fn malformed(what: impl Into<String>) -> MalformedEvent {
    MalformedEvent(what.into())
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Pdu {
    pub event_id: EventId,
    pub room_id: String,
    /// `@local:server`, validated; [`Pdu::sender_server`] is its server part.
    pub sender: String,
    /// The server that built and signed the event.
    pub origin: String,
    /// Unix seconds, as claimed by the origin. Only state resolution reads it, to break ties.
    pub origin_ts: i64,
    pub event_type: String,
    pub content: Map<String, Value>,
    /// `Some` for state events, `None` for timeline events.
    pub state_key: Option<String>,
    pub prev_events: Vec<EventId>,
    pub auth_events: Vec<EventId>,
    pub depth: i64,
}

impl Pdu {
    /// Reads `value` as the event `event_id`. Unknown top-level keys (`hashes`, `signatures`,
    /// `event_uuid`, `unsigned`) are ignored.
    pub fn parse(event_id: &str, value: &Value) -> Result<Pdu, MalformedEvent> {
        if !is_event_id(event_id) {
            return Err(malformed("event_id is not an event id"));
        }
        let map = value.as_object().ok_or_else(|| malformed("the event is not an object"))?;
        let text = |key: &'static str| -> Result<&str, MalformedEvent> {
            map.get(key).and_then(Value::as_str).ok_or_else(|| malformed(format!("{key} is not a string")))
        };
        let integer = |key: &'static str| -> Result<i64, MalformedEvent> {
            map.get(key).and_then(Value::as_i64).ok_or_else(|| malformed(format!("{key} is not an integer")))
        };
        let room_id = text("room_id")?;
        if room_id.is_empty() || room_id.len() > MAX_ID_LEN {
            return Err(malformed("room_id is empty or too long"));
        }
        let sender = text("sender")?;
        if parse_fqid(sender).is_none() {
            return Err(malformed("sender is not an fqid"));
        }
        let origin = text("origin")?;
        if !is_server_name(origin) {
            return Err(malformed("origin is not a server name"));
        }
        let origin_ts = integer("origin_ts")?;
        if origin_ts < 0 {
            return Err(malformed("origin_ts is negative"));
        }
        let event_type = text("event_type")?;
        if event_type.is_empty() || event_type.len() > MAX_ID_LEN {
            return Err(malformed("event_type is empty or too long"));
        }
        let content = match map.get("content") {
            Some(Value::Object(content)) => content.clone(),
            _ => return Err(malformed("content is not an object")),
        };
        let state_key = match map.get("state_key") {
            None => None,
            Some(Value::String(key)) if key.len() <= MAX_ID_LEN => Some(key.clone()),
            Some(_) => return Err(malformed("state_key is not a string of at most 255 bytes")),
        };
        let prev_events = event_ids(map.get("prev_events"), "prev_events", MAX_PREV_EVENTS)?;
        let auth_events = event_ids(map.get("auth_events"), "auth_events", MAX_AUTH_EVENTS)?;
        let depth = integer("depth")?;
        if depth < 1 {
            return Err(malformed("depth is below 1"));
        }
        Ok(Pdu {
            event_id: event_id.to_owned(),
            room_id: room_id.to_owned(),
            sender: sender.to_owned(),
            origin: origin.to_owned(),
            origin_ts,
            event_type: event_type.to_owned(),
            content,
            state_key,
            prev_events,
            auth_events,
            depth,
        })
    }

    /// Reads a wire event, computing its id (the reference hash) with `crypto`.
    pub fn from_wire(value: &Value) -> Result<Pdu, MalformedEvent> {
        let event_id = crypto::event_id(value).map_err(|e| malformed(format!("no event id: {e}")))?;
        Pdu::parse(&event_id, value)
    }

    /// The server part of `sender`.
    pub fn sender_server(&self) -> &str {
        // `parse` validated the sender, so the split exists; an empty answer never matches an
        // origin, which keeps a hand-built `Pdu` from slipping through.
        parse_fqid(&self.sender).map_or("", |(_, server)| server)
    }

    /// The state entry this event fills, if it is a state event.
    pub fn state_entry(&self) -> Option<StateKey> {
        self.state_key.as_ref().map(|key| (self.event_type.clone(), key.clone()))
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// Whether this is a state event of `event_type` with an empty state key.
    pub fn is_room_state(&self, event_type: &str) -> bool {
        self.event_type == event_type && self.state_key.as_deref() == Some("")
    }
}

/// Where the rules and state resolution find events by id: the caller's in-memory view of
/// the events it holds (no I/O behind it). An event the caller has *rejected* must answer
/// `None`, so that nothing is ever authorised by it.
pub trait EventSource {
    fn event(&self, event_id: &str) -> Option<&Pdu>;
}

impl<S: std::hash::BuildHasher> EventSource for std::collections::HashMap<EventId, Pdu, S> {
    fn event(&self, event_id: &str) -> Option<&Pdu> {
        self.get(event_id)
    }
}

impl EventSource for BTreeMap<EventId, Pdu> {
    fn event(&self, event_id: &str) -> Option<&Pdu> {
        self.get(event_id)
    }
}

fn event_ids(value: Option<&Value>, key: &'static str, max: usize) -> Result<Vec<EventId>, MalformedEvent> {
    let list = value.and_then(Value::as_array).ok_or_else(|| malformed(format!("{key} is not a list")))?;
    if list.len() > max {
        return Err(malformed(format!("{key} has more than {max} entries")));
    }
    let mut ids: Vec<EventId> = Vec::with_capacity(list.len());
    for id in list {
        let id = id.as_str().filter(|id| is_event_id(id)).ok_or_else(|| malformed(format!("{key} holds a non-id")))?;
        if ids.iter().any(|seen| seen == id) {
            return Err(malformed(format!("{key} names an event twice")));
        }
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// `evt-` and at most [`MAX_EVENT_ID_LEN`] bytes of URL-safe base64.
pub fn is_event_id(s: &str) -> bool {
    s.len() <= MAX_EVENT_ID_LEN
        && s.strip_prefix("evt-").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Splits `@local:server` into its parts when well-formed: `local` is `[a-z0-9._=-]{1,64}`,
/// `server` a DNS name with an optional port (the homeserver's own definition of an fqid).
pub fn parse_fqid(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('@')?;
    let (local, server) = rest.split_once(':')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'=' | b'-'));
    (local_ok && is_server_name(server)).then_some((local, server))
}

/// A DNS name with an optional `:port`.
pub fn is_server_name(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return false;
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire() -> Value {
        json!({
            "event_uuid": "u1", "room_id": "room-1", "sender": "@alice:alpha.test",
            "origin": "alpha.test", "origin_ts": 10, "event_type": "swp.room.name",
            "content": {"name": "Lobby"}, "state_key": "", "prev_events": ["evt-a"],
            "auth_events": ["evt-b", "evt-c"], "depth": 3, "hashes": {"sha256": "x"},
            "signatures": {}, "unsigned": {"age": 1},
        })
    }

    #[test]
    fn parses_the_contract_fields() {
        let pdu = Pdu::parse("evt-x", &wire()).unwrap();
        assert_eq!(pdu.event_id, "evt-x");
        assert_eq!(pdu.sender_server(), "alpha.test");
        assert_eq!(pdu.state_entry(), Some(("swp.room.name".to_owned(), String::new())));
        assert!(pdu.is_room_state(types::NAME));
        assert_eq!(pdu.prev_events, vec!["evt-a"]);
        assert_eq!(pdu.auth_events, vec!["evt-b", "evt-c"]);
        assert_eq!(pdu.depth, 3);
    }

    #[test]
    fn from_wire_computes_the_reference_hash() {
        let pdu = Pdu::from_wire(&wire()).unwrap();
        assert_eq!(pdu.event_id, crypto::event_id(&wire()).unwrap());
    }

    #[test]
    fn rejects_every_malformed_field() {
        let cases: Vec<(&str, Value)> = vec![
            ("room_id", json!(1)),
            ("room_id", json!("")),
            ("sender", json!("alice")),
            ("sender", json!("@Alice:alpha.test")),
            ("origin", json!("bad host")),
            ("origin_ts", json!(-1)),
            ("origin_ts", json!("1")),
            ("event_type", json!("")),
            ("content", json!([])),
            ("state_key", json!(1)),
            ("prev_events", json!("evt-a")),
            ("prev_events", json!(["evt-a", "evt-a"])),
            ("prev_events", json!(["not-an-id"])),
            ("auth_events", json!((0..11).map(|i| format!("evt-{i}")).collect::<Vec<_>>())),
            ("depth", json!(0)),
            ("depth", json!(1.5)),
        ];
        for (key, bad) in cases {
            let mut event = wire();
            event[key] = bad.clone();
            assert!(Pdu::parse("evt-x", &event).is_err(), "{key} = {bad}");
        }
        for key in ["room_id", "sender", "origin", "origin_ts", "event_type", "content", "prev_events", "depth"] {
            let mut event = wire();
            event.as_object_mut().unwrap().remove(key);
            assert!(Pdu::parse("evt-x", &event).is_err(), "missing {key}");
        }
        assert!(Pdu::parse("x", &wire()).is_err());
        assert!(Pdu::parse("evt-x", &json!([])).is_err());
    }

    #[test]
    fn a_missing_state_key_is_a_timeline_event() {
        let mut event = wire();
        event.as_object_mut().unwrap().remove("state_key");
        let pdu = Pdu::parse("evt-x", &event).unwrap();
        assert!(!pdu.is_state());
        assert_eq!(pdu.state_entry(), None);
    }

    #[test]
    fn fqids_and_server_names() {
        assert_eq!(parse_fqid("@alice:alpha.test"), Some(("alice", "alpha.test")));
        assert_eq!(parse_fqid("@alice:localhost:8448"), Some(("alice", "localhost:8448")));
        for bad in ["alice:alpha.test", "@:alpha.test", "@alice:", "@alice:a..b", "@alice:host:99999", "@a b:x"] {
            assert_eq!(parse_fqid(bad), None, "{bad}");
        }
        assert!(is_event_id("evt-AZaz09-_"));
        assert!(!is_event_id("evt-"));
        assert!(!is_event_id("evt-a/b"));
    }
}
