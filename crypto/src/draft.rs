//! Building a new event from members that are each encoded to canonical JSON once.
//!
//! [`build_and_sign_event`](crate::build_and_sign_event) takes a `serde_json::Value`: to hash,
//! identify and sign it, the event is encoded three times (content hash, redacted form, stored
//! form) and its redacted form is copied. A server that makes thousands of events a second on
//! one ordering thread wants less: [`EventDraft`] takes each top-level member as canonical JSON
//! text (the content usually encoded earlier, by whoever checked it), concatenates the members
//! in key order, and hashes and signs those bytes. The result is byte for byte the canonical
//! JSON of what `build_and_sign_event` makes of the same event (the crate's tests check this on
//! generated events), with the same id and the same signature.
//!
//! Canonical JSON of an object is `{`, its members `"key":value` sorted by key and joined by
//! `,`, then `}`; so given each member's canonical text, the object's is a concatenation.

use std::borrow::Cow;

use serde_json::Value;

use crate::b64;
use crate::canonical::{MAX_SAFE_INTEGER, to_canonical_string, write_string};
use crate::error::{Error, Result};
use crate::event::EVENT_ID_PREFIX;
use crate::hash::sha256;
use crate::keys::ServerKey;
use crate::redaction::{KEPT_TOP_LEVEL_KEYS, KeptContent, kept_content_keys};

/// Members that [`EventDraft`] computes itself, or that an event being built may not carry.
const RESERVED: &[&str] = &["content", "event_type", "hashes", "signatures", "unsigned"];

/// A new event as top-level members in canonical JSON, not yet hashed or signed.
#[derive(Debug, Clone)]
pub struct EventDraft<'a> {
    /// `(key, canonical JSON of the value)`, in the order given.
    members: Vec<(&'a str, Cow<'a, str>)>,
    /// Canonical JSON of the content's redacted form.
    redacted_content: String,
}

impl<'a> EventDraft<'a> {
    /// A draft of an event of `event_type` with `content`, given with its canonical JSON
    /// `content_json` (as [`to_canonical_string`] writes it; not checked again here).
    ///
    /// Errors with [`Error::MalformedEvent`] when `content` is not an object, and with the
    /// encoder's errors when the kept part of the content cannot be encoded.
    pub fn new(event_type: &'a str, content: &'a Value, content_json: &'a str) -> Result<Self> {
        let content_map = content.as_object().ok_or(Error::MalformedEvent("content is not an object"))?;
        // A caller's mistake here would sign a hash of other bytes than the canonical event:
        // debug builds (every test run) check what release builds trust.
        debug_assert_eq!(to_canonical_string(content).ok().as_deref(), Some(content_json), "content_json");
        let redacted_content = match kept_content_keys(event_type) {
            KeptContent::All => content_json.to_owned(),
            KeptContent::Keys(keys) if keys.is_empty() => "{}".to_owned(),
            KeptContent::Keys(keys) => {
                let kept: serde_json::Map<String, Value> =
                    keys.iter().filter_map(|&k| content_map.get(k).map(|v| (k.to_owned(), v.clone()))).collect();
                to_canonical_string(&Value::Object(kept))?
            }
        };
        let mut type_json = String::with_capacity(event_type.len() + 2);
        write_string(&mut type_json, event_type);
        Ok(EventDraft {
            members: vec![("content", Cow::Borrowed(content_json)), ("event_type", Cow::Owned(type_json))],
            redacted_content,
        })
    }

    /// Adds a string member.
    pub fn string(&mut self, key: &'a str, value: &str) -> &mut Self {
        let mut json = String::with_capacity(value.len() + 2);
        write_string(&mut json, value);
        self.members.push((key, Cow::Owned(json)));
        self
    }

    /// Adds an integer member; errors with [`Error::IntegerOutOfRange`] outside ±(2^53 − 1).
    pub fn integer(&mut self, key: &'a str, value: i64) -> Result<&mut Self> {
        if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&value) {
            return Err(Error::IntegerOutOfRange);
        }
        self.members.push((key, Cow::Owned(value.to_string())));
        Ok(self)
    }

    /// Adds a member holding an array of strings.
    pub fn strings<S: AsRef<str>>(&mut self, key: &'a str, values: &[S]) -> &mut Self {
        let mut json = String::from("[");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            write_string(&mut json, v.as_ref());
        }
        json.push(']');
        self.members.push((key, Cow::Owned(json)));
        self
    }

    /// Computes the content hash and the event id; signing is the next step.
    ///
    /// Errors with [`Error::MalformedEvent`] when a key is given twice or is one the draft
    /// sets itself (`content`, `event_type`, `hashes`, `signatures`, `unsigned`).
    pub fn prepare(self) -> Result<PreparedDraft<'a>> {
        let EventDraft { mut members, redacted_content } = self;
        if members[2..].iter().any(|(k, _)| RESERVED.contains(k)) {
            return Err(Error::MalformedEvent("a draft member names a key the draft sets itself"));
        }
        members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::MalformedEvent("a draft member is given twice"));
        }
        // The content hash covers everything but hashes, signatures and unsigned: all members.
        let hash = b64::encode(sha256(encode(members.iter().map(|(k, v)| (*k, v.as_ref())), 0).as_bytes()));
        let mut hashes = String::with_capacity(hash.len() + 13);
        hashes.push_str("{\"sha256\":");
        write_string(&mut hashes, &hash);
        hashes.push('}');
        let at = members.partition_point(|(k, _)| k.as_bytes() < b"hashes".as_slice());
        members.insert(at, ("hashes", Cow::Owned(hashes)));
        // The signature and the reference hash cover the redacted form (no signatures yet).
        let redacted = members.iter().filter(|(k, _)| KEPT_TOP_LEVEL_KEYS.contains(k)).map(|(k, v)| {
            let v = if *k == "content" { redacted_content.as_str() } else { v.as_ref() };
            (*k, v)
        });
        let signed_bytes = encode(redacted, 0).into_bytes();
        let event_id = format!("{EVENT_ID_PREFIX}{}", b64::encode_url_safe(sha256(&signed_bytes)));
        Ok(PreparedDraft { members, signed_bytes, event_id })
    }
}

/// A draft with its content hash and id, waiting for its signature.
#[derive(Debug)]
pub struct PreparedDraft<'a> {
    /// Sorted, `hashes` included.
    members: Vec<(&'a str, Cow<'a, str>)>,
    signed_bytes: Vec<u8>,
    event_id: String,
}

impl PreparedDraft<'_> {
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// Signs as `server_name` with `key`: `(event_id, canonical JSON of the signed event)`.
    pub fn sign(self, server_name: &str, key: &ServerKey) -> (String, String) {
        let signature = b64::encode(key.sign_bytes(&self.signed_bytes));
        let mut signatures = String::with_capacity(server_name.len() + key.key_id().len() + signature.len() + 12);
        signatures.push('{');
        write_string(&mut signatures, server_name);
        signatures.push_str(":{");
        write_string(&mut signatures, key.key_id());
        signatures.push(':');
        write_string(&mut signatures, &signature);
        signatures.push_str("}}");
        let at = self.members.partition_point(|(k, _)| k.as_bytes() < b"signatures".as_slice());
        let extra = signatures.len() + 13;
        let members = self.members.iter().map(|(k, v)| (*k, v.as_ref()));
        let with_signatures =
            members.clone().take(at).chain([("signatures", signatures.as_str())]).chain(members.skip(at));
        (self.event_id, encode(with_signatures, extra))
    }
}

/// `{"k":v,…}` from members already sorted, each value canonical JSON.
fn encode<'m>(members: impl Iterator<Item = (&'m str, &'m str)> + Clone, extra: usize) -> String {
    let size: usize = members.clone().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 2 + extra;
    let mut out = String::with_capacity(size);
    out.push('{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, k);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_and_sign_event, verify_event};
    use serde_json::json;

    fn draft_of<'a>(v: &'a Value, content_json: &'a str) -> EventDraft<'a> {
        let mut d = EventDraft::new(v["event_type"].as_str().unwrap(), &v["content"], content_json).unwrap();
        d.string("event_uuid", v["event_uuid"].as_str().unwrap())
            .string("room_id", v["room_id"].as_str().unwrap())
            .string("sender", v["sender"].as_str().unwrap())
            .string("origin", v["origin"].as_str().unwrap());
        d.integer("origin_ts", v["origin_ts"].as_i64().unwrap()).unwrap();
        d.integer("depth", v["depth"].as_i64().unwrap()).unwrap();
        let ids = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect::<Vec<_>>();
        d.strings("prev_events", &ids("prev_events")).strings("auth_events", &ids("auth_events"));
        if let Some(k) = v.get("state_key") {
            d.string("state_key", k.as_str().unwrap());
        }
        d
    }

    fn same_as_value_path(v: Value) {
        let key = ServerKey::from_seed("1", &[3; 32]).unwrap();
        let content_json = to_canonical_string(&v["content"]).unwrap();
        let prepared = draft_of(&v, &content_json).prepare().unwrap();
        let id = prepared.event_id().to_owned();
        let (drafted_id, drafted) = prepared.sign("alpha.test", &key);
        let (expected_id, expected) = build_and_sign_event(v.clone(), "alpha.test", &key).unwrap();
        assert_eq!(drafted_id, expected_id);
        assert_eq!(id, expected_id);
        assert_eq!(drafted, to_canonical_string(&expected).unwrap());
        let parsed = crate::parse_canonical(drafted.as_bytes()).unwrap();
        verify_event(&parsed, "alpha.test", key.key_id(), &key.public_key()).unwrap();
        assert!(crate::check_content_hash(&parsed));
    }

    fn event(event_type: &str, content: Value) -> Value {
        json!({
            "event_uuid": "01jd3k-\u{1}\"x", "room_id": "room-01JD3K", "sender": "@alice:alpha.test",
            "origin": "alpha.test", "origin_ts": 1778939467, "event_type": event_type, "content": content,
            "prev_events": ["evt-a", "evt-b"], "auth_events": [], "depth": 7,
        })
    }

    #[test]
    fn matches_the_value_path_for_every_redaction_rule() {
        same_as_value_path(event("swp.room.message", json!({"body": "hé\n", "msgtype": "swp.text", "n": -3})));
        same_as_value_path(event("swp.room.create", json!({"creator": "@a:b", "z": [1, {"y": null}]})));
        same_as_value_path(event("swp.room.member", json!({"membership": "join", "display_name": "A"})));
        same_as_value_path(event("swp.room.power_levels", json!({"users": {"@a:b": 100}, "ban": 50, "x": 1})));
        same_as_value_path(event("swp.room.redaction", json!({"reason": "spam"})));
        same_as_value_path(event("swp.room.join_rules", json!({})));
        let mut state = event("swp.room.member", json!({"membership": "leave"}));
        state["state_key"] = json!("@bob:beta.test");
        same_as_value_path(state);
    }

    #[test]
    fn refuses_reserved_and_repeated_members_and_bad_values() {
        let content = json!({});
        let new = || EventDraft::new("swp.room.message", &content, "{}").unwrap();
        for reserved in RESERVED {
            let mut d = new();
            d.string(reserved, "x");
            assert!(matches!(d.prepare(), Err(Error::MalformedEvent(_))), "{reserved}");
        }
        let mut d = new();
        d.string("room_id", "a").string("room_id", "b");
        assert!(matches!(d.prepare(), Err(Error::MalformedEvent(_))));
        assert_eq!(new().integer("depth", MAX_SAFE_INTEGER + 1).unwrap_err(), Error::IntegerOutOfRange);
        assert!(matches!(EventDraft::new("t", &json!("x"), "\"x\""), Err(Error::MalformedEvent(_))));
    }
}
