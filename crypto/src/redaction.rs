//! The redaction algorithm for our event format.
//!
//! Modelled on the Matrix room version 11 rules, mapped to our field names and event types.
//! Redaction keeps the top-level keys in [`KEPT_TOP_LEVEL_KEYS`] (everything else, `unsigned`
//! included, goes) and, inside `content`, the keys [`kept_content_keys`] lists for the event's
//! `event_type`; the content of every other type becomes `{}`. `docs/federation.md` carries
//! the same table.
//!
//! Redaction is idempotent, and the reference hash (hence the event id, see
//! [`crate::event`]) is computed over the redacted form, so redacting an event changes neither
//! its id nor the validity of its signatures.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Top-level keys that survive redaction.
pub const KEPT_TOP_LEVEL_KEYS: &[&str] = &[
    "auth_events",
    "content",
    "depth",
    "event_type",
    "event_uuid",
    "hashes",
    "origin",
    "origin_ts",
    "prev_events",
    "room_id",
    "sender",
    "signatures",
    "state_key",
];

/// Which content keys of an event type survive redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptContent {
    /// The whole content is kept.
    All,
    /// Only these keys are kept (an empty list: content becomes `{}`).
    Keys(&'static [&'static str]),
}

/// Which redaction table applies: the room version picks it (`federation::auth::RoomVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactionRules {
    /// Room version "1": keeps every content key the authorization rules read.
    V1,
    /// The table before room version "1" was fixed: it dropped the lifecycle event's `state`.
    /// Events signed under it before the fix still exist (stored, and in exported bundles); it
    /// serves only to verify those, never to make or accept a new event.
    PreV1,
}

/// The content keys of `event_type` that survive redaction (room version "1").
#[must_use]
pub fn kept_content_keys(event_type: &str) -> KeptContent {
    kept_content_keys_with(RedactionRules::V1, event_type)
}

/// The content keys of `event_type` that survive redaction under `rules`.
#[must_use]
pub fn kept_content_keys_with(rules: RedactionRules, event_type: &str) -> KeptContent {
    match event_type {
        // The rules read it: a redacted close must not read as an open room.
        "swp.room.lifecycle" if rules == RedactionRules::V1 => KeptContent::Keys(&["state"]),
        "swp.room.create" => KeptContent::All,
        "swp.room.member" => KeptContent::Keys(&["membership"]),
        "swp.room.join_rules" => KeptContent::Keys(&["allow", "join_rule"]),
        "swp.room.power_levels" => KeptContent::Keys(&[
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ]),
        "swp.room.history_visibility" => KeptContent::Keys(&["history_visibility"]),
        "swp.room.redaction" => KeptContent::Keys(&["redacts"]),
        "swp.room.federation" => KeptContent::Keys(&["allow", "deny", "enabled"]),
        // The rules read the lists: redacting an ACL must not open the room to every server.
        "swp.room.server_acl" => KeptContent::Keys(&["allow", "deny"]),
        _ => KeptContent::Keys(&[]),
    }
}

/// The redacted form of `event`.
///
/// Errors with [`Error::NotAnObject`] if `event` is not an object, and with
/// [`Error::MalformedEvent`] if `event_type` is present but not a string or `content` is
/// present but not an object. A missing `content` stays missing; a missing `event_type` is
/// treated as an unknown type.
pub fn redact(event: &Value) -> Result<Value> {
    redact_with(RedactionRules::V1, event)
}

/// [`redact`] under the table `rules` names.
pub fn redact_with(rules: RedactionRules, event: &Value) -> Result<Value> {
    let map = event.as_object().ok_or(Error::NotAnObject)?;
    let event_type = match map.get("event_type") {
        None => "",
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(Error::MalformedEvent("event_type is not a string")),
    };
    let mut out = Map::new();
    for &key in KEPT_TOP_LEVEL_KEYS {
        if let Some(value) = map.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(content) = map.get("content") {
        let content = content.as_object().ok_or(Error::MalformedEvent("content is not an object"))?;
        let kept = match kept_content_keys_with(rules, event_type) {
            KeptContent::All => content.clone(),
            KeptContent::Keys(keys) => {
                keys.iter().filter_map(|&k| content.get(k).map(|v| (k.to_owned(), v.clone()))).collect()
            }
        };
        out.insert("content".to_owned(), Value::Object(kept));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, content: Value) -> Value {
        json!({
            "event_uuid": "u", "room_id": "room-1", "sender": "@a:alpha.test",
            "origin": "alpha.test", "origin_ts": 1, "event_type": event_type,
            "content": content, "state_key": "", "prev_events": [], "auth_events": [],
            "depth": 1, "hashes": {"sha256": "x"}, "signatures": {},
            "unsigned": {"age": 1}, "extra_top_level": true,
        })
    }

    #[test]
    fn drops_unknown_top_level_and_unsigned() {
        let r = redact(&event("swp.room.message", json!({"body": "hi"}))).unwrap();
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, KEPT_TOP_LEVEL_KEYS);
        assert_eq!(r["content"], json!({}));
    }

    #[test]
    fn content_rules_per_type() {
        let everything = json!({
            "membership": "join", "displayname": "A", "join_rule": "invite", "allow": ["a"],
            "deny": ["b"], "enabled": true, "ban": 50, "events": {}, "events_default": 0,
            "invite": 0, "kick": 50, "redact": 50, "state_default": 50, "users": {},
            "users_default": 0, "notifications": {}, "history_visibility": "shared",
            "redacts": "evt-x", "reason": "spam", "creator": "@a:alpha.test", "state": "closed",
        });
        let pick = |keys: &[&str]| -> Value {
            keys.iter().map(|&k| (k.to_owned(), everything[k].clone())).collect::<Map<_, _>>().into()
        };
        let cases = [
            ("swp.room.create", everything.clone()),
            ("swp.room.member", pick(&["membership"])),
            ("swp.room.join_rules", pick(&["join_rule", "allow"])),
            (
                "swp.room.power_levels",
                pick(&[
                    "ban",
                    "events",
                    "events_default",
                    "invite",
                    "kick",
                    "redact",
                    "state_default",
                    "users",
                    "users_default",
                ]),
            ),
            ("swp.room.history_visibility", pick(&["history_visibility"])),
            ("swp.room.redaction", pick(&["redacts"])),
            ("swp.room.federation", pick(&["enabled", "allow", "deny"])),
            ("swp.room.server_acl", pick(&["allow", "deny"])),
            ("swp.room.lifecycle", pick(&["state"])),
            ("swp.room.message", json!({})),
            ("swp.room.name", json!({})),
            ("m.room.member", json!({})),
        ];
        for (t, want) in cases {
            let r = redact(&event(t, everything.clone())).unwrap();
            assert_eq!(r["content"], want, "{t}");
            assert_eq!(redact(&r).unwrap(), r, "idempotent for {t}");
        }
    }

    #[test]
    fn only_the_lifecycle_state_differs_before_version_1() {
        let closing = event("swp.room.lifecycle", json!({"state": "closed", "reason": "done"}));
        assert_eq!(redact(&closing).unwrap()["content"], json!({"state": "closed"}));
        assert_eq!(redact_with(RedactionRules::PreV1, &closing).unwrap()["content"], json!({}));
        for t in ["swp.room.create", "swp.room.member", "swp.room.power_levels", "swp.room.server_acl", "x.y"] {
            assert_eq!(kept_content_keys_with(RedactionRules::PreV1, t), kept_content_keys(t), "{t}");
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(redact(&json!([])), Err(Error::NotAnObject));
        assert!(matches!(redact(&json!({"event_type": 1})), Err(Error::MalformedEvent(_))));
        assert!(matches!(redact(&json!({"content": []})), Err(Error::MalformedEvent(_))));
        assert_eq!(redact(&json!({"x": 1})).unwrap(), json!({}));
        assert_eq!(redact(&json!({"content": {"a": 1}})).unwrap(), json!({"content": {}}));
    }
}
