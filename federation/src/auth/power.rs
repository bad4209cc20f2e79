//! Power levels: `swp.room.power_levels` content, the level of a user and the threshold of an
//! event type, and the rule for changing them.
//!
//! Every threshold is read from the power-levels event; the defaults below apply to keys it
//! leaves out. Before the room has a power-levels event, the creator has 100, everyone else 0,
//! and (as in Matrix) state events need 0, so the creator can set the room up.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::event::{Pdu, parse_fqid, types};

use super::error::{AuthError, malformed};

/// Levels are 0–100 (contract section 4).
pub const MAX_LEVEL: i64 = 100;
/// The creator's level before the room has a power-levels event.
pub const CREATOR_LEVEL: i64 = 100;

/// The top-level thresholds, with their default when the key is left out.
const THRESHOLDS: [(&str, i64); 7] = [
    ("users_default", 0),
    ("events_default", 0),
    ("state_default", 50),
    ("invite", 0),
    ("kick", 50),
    ("ban", 50),
    ("redact", 50),
];

/// Event types whose threshold, when the `events` map does not name them, is 100 rather than
/// `state_default`: they freeze the room or decide which servers take part in it.
const OWNER_TYPES: [&str; 3] = [types::LIFECYCLE, types::FEDERATION, types::SERVER_ACL];

/// `swp.room.power_levels` content as sent: only the keys present (the change rule compares
/// what was written, as Matrix does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PowerLevelsContent {
    pub users: BTreeMap<String, i64>,
    pub events: BTreeMap<String, i64>,
    /// The top-level thresholds present (`users_default`, `events_default`, `state_default`,
    /// `invite`, `kick`, `ban`, `redact`).
    pub thresholds: BTreeMap<&'static str, i64>,
}

impl PowerLevelsContent {
    /// Strict: every level an integer in 0–100, `users` keyed by fqids. Other keys are ignored.
    pub fn parse(content: &Map<String, Value>) -> Result<PowerLevelsContent, AuthError> {
        let mut out = PowerLevelsContent::default();
        for (key, _) in THRESHOLDS {
            if let Some(value) = content.get(key) {
                out.thresholds.insert(key, level(value, key)?);
            }
        }
        if let Some(users) = content.get("users") {
            let users = users.as_object().ok_or_else(|| malformed("users is not an object"))?;
            for (fqid, value) in users {
                if parse_fqid(fqid).is_none() {
                    return Err(malformed("users has a key that is not an fqid"));
                }
                out.users.insert(fqid.clone(), level(value, "users")?);
            }
        }
        if let Some(events) = content.get("events") {
            let events = events.as_object().ok_or_else(|| malformed("events is not an object"))?;
            for (event_type, value) in events {
                if event_type.is_empty() {
                    return Err(malformed("events has an empty event type"));
                }
                out.events.insert(event_type.clone(), level(value, "events")?);
            }
        }
        Ok(out)
    }

    fn threshold(&self, key: &str) -> i64 {
        let default = THRESHOLDS.iter().find(|(k, _)| *k == key).map_or(0, |(_, d)| *d);
        self.thresholds.get(key).copied().unwrap_or(default)
    }
}

fn level(value: &Value, key: &str) -> Result<i64, AuthError> {
    value
        .as_i64()
        .filter(|l| (0..=MAX_LEVEL).contains(l))
        .ok_or_else(|| malformed(format!("{key} holds a level that is not an integer in 0-100")))
}

/// The power structure a check runs against: the room's power-levels event, or the creator
/// alone before there is one.
#[derive(Debug, Clone)]
pub struct Power {
    levels: Option<PowerLevelsContent>,
    creator: String,
}

impl Power {
    pub fn new(power_levels: Option<&Pdu>, creator: &str) -> Result<Power, AuthError> {
        let levels = power_levels.map(|event| PowerLevelsContent::parse(&event.content)).transpose()?;
        Ok(Power { levels, creator: creator.to_owned() })
    }

    pub fn user(&self, fqid: &str) -> i64 {
        match &self.levels {
            Some(levels) => levels.users.get(fqid).copied().unwrap_or_else(|| levels.threshold("users_default")),
            None if fqid == self.creator => CREATOR_LEVEL,
            None => 0,
        }
    }

    /// The level needed to send an event of `event_type` (a state event if `is_state`).
    pub fn to_send(&self, event_type: &str, is_state: bool) -> i64 {
        let owner_default = OWNER_TYPES.contains(&event_type).then_some(MAX_LEVEL);
        match &self.levels {
            Some(levels) => levels
                .events
                .get(event_type)
                .copied()
                .or(owner_default)
                .unwrap_or_else(|| levels.threshold(if is_state { "state_default" } else { "events_default" })),
            None => owner_default.unwrap_or(0),
        }
    }

    /// `invite`, `kick`, `ban` or `redact`.
    pub fn action(&self, key: &str) -> i64 {
        match &self.levels {
            Some(levels) => levels.threshold(key),
            None => PowerLevelsContent::default().threshold(key),
        }
    }

    /// Whether a power-levels event exists yet.
    pub fn is_set(&self) -> bool {
        self.levels.is_some()
    }
}

/// The rule for a new power-levels event `new`, sent by `sender` at `sender_level`, over the
/// current `old` one. For each threshold, per-type level and user level that changes (added,
/// removed or altered): neither the old nor the new value may be above the sender's level,
/// and a user at or above the sender's level cannot be changed, except the sender lowering
/// themselves.
pub fn check_change(
    old: &PowerLevelsContent,
    new: &PowerLevelsContent,
    sender: &str,
    sender_level: i64,
) -> Result<(), AuthError> {
    let above = |value: Option<&i64>| value.copied().filter(|v| *v > sender_level);
    let changed = |old: Option<&i64>, new: Option<&i64>| -> Result<(), AuthError> {
        if old == new {
            return Ok(());
        }
        if let Some(needed) = above(old).or(above(new)) {
            return Err(AuthError::InsufficientPower { needed, has: sender_level });
        }
        Ok(())
    };
    for (key, _) in THRESHOLDS {
        changed(old.thresholds.get(key), new.thresholds.get(key))?;
    }
    let event_types: BTreeSet<&String> = old.events.keys().chain(new.events.keys()).collect();
    for event_type in event_types {
        changed(old.events.get(event_type), new.events.get(event_type))?;
    }
    let users: BTreeSet<&String> = old.users.keys().chain(new.users.keys()).collect();
    for user in users {
        let (was, will) = (old.users.get(user), new.users.get(user));
        if was == will {
            continue;
        }
        if let Some(needed) = above(will) {
            return Err(AuthError::InsufficientPower { needed, has: sender_level });
        }
        if let Some(&target) = was.filter(|&&was| user != sender && was >= sender_level) {
            return Err(AuthError::NotAboveTarget { has: sender_level, target });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content(value: Value) -> PowerLevelsContent {
        PowerLevelsContent::parse(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn parse_is_strict() {
        for bad in [
            json!({"ban": 101}),
            json!({"ban": -1}),
            json!({"ban": "50"}),
            json!({"users": {"alice": 50}}),
            json!({"users": {"@a:x": 1.5}}),
            json!({"users": []}),
            json!({"events": {"": 50}}),
            json!({"events": {"t": true}}),
        ] {
            assert!(PowerLevelsContent::parse(bad.as_object().unwrap()).is_err(), "{bad}");
        }
        let parsed = content(json!({"users": {"@a:x": 100}, "kick": 40, "notifications": {"room": 50}}));
        assert_eq!(parsed.users["@a:x"], 100);
        assert_eq!(parsed.threshold("kick"), 40);
        assert_eq!(parsed.threshold("ban"), 50);
    }

    #[test]
    fn levels_and_thresholds() {
        let none = Power::new(None, "@c:x").unwrap();
        assert_eq!(none.user("@c:x"), 100);
        assert_eq!(none.user("@d:x"), 0);
        assert_eq!(none.to_send(types::NAME, true), 0);
        assert_eq!(none.to_send(types::LIFECYCLE, true), 100);
        assert_eq!(none.action("kick"), 50);

        let mut power = Power::new(None, "@c:x").unwrap();
        power.levels = Some(content(json!({
            "users": {"@c:x": 100}, "users_default": 10, "state_default": 60,
            "events": {"swp.room.topic": 20, "swp.room.lifecycle": 90},
        })));
        assert_eq!(power.user("@c:x"), 100);
        assert_eq!(power.user("@d:x"), 10);
        assert_eq!(power.to_send(types::NAME, true), 60);
        assert_eq!(power.to_send(types::TOPIC, true), 20);
        assert_eq!(power.to_send(types::MESSAGE, false), 0);
        // The events map overrides the owner default; without an entry it is 100.
        assert_eq!(power.to_send(types::LIFECYCLE, true), 90);
        assert_eq!(power.to_send(types::SERVER_ACL, true), 100);
        assert_eq!(power.to_send(types::FEDERATION, true), 100);
    }

    #[test]
    fn change_rule() {
        let old = content(json!({"users": {"@mod:x": 50, "@peer:x": 50, "@low:x": 10}, "kick": 50}));
        let with = |f: &dyn Fn(&mut PowerLevelsContent)| {
            let mut new = old.clone();
            f(&mut new);
            new
        };
        let check = |new: &PowerLevelsContent| check_change(&old, new, "@mod:x", 50);
        // Granting up to one's own level is allowed, above it is not.
        assert_eq!(
            check(&with(&|n| {
                n.users.insert("@low:x".into(), 50);
            })),
            Ok(())
        );
        assert_eq!(
            check(&with(&|n| {
                n.users.insert("@low:x".into(), 51);
            })),
            Err(AuthError::InsufficientPower { needed: 51, has: 50 })
        );
        // An equal cannot be changed, or removed; oneself can be lowered.
        assert_eq!(
            check(&with(&|n| {
                n.users.insert("@peer:x".into(), 0);
            })),
            Err(AuthError::NotAboveTarget { has: 50, target: 50 })
        );
        assert_eq!(
            check(&with(&|n| {
                n.users.remove("@peer:x");
            })),
            Err(AuthError::NotAboveTarget { has: 50, target: 50 })
        );
        assert_eq!(
            check(&with(&|n| {
                n.users.insert("@mod:x".into(), 0);
            })),
            Ok(())
        );
        // Thresholds: neither the old nor the new value may be above the sender.
        assert_eq!(
            check(&with(&|n| {
                n.thresholds.insert("kick", 20);
            })),
            Ok(())
        );
        assert_eq!(
            check(&with(&|n| {
                n.thresholds.insert("ban", 60);
            })),
            Err(AuthError::InsufficientPower { needed: 60, has: 50 })
        );
        let high_old = content(json!({"state_default": 80}));
        assert_eq!(
            check_change(&high_old, &PowerLevelsContent::default(), "@mod:x", 50),
            Err(AuthError::InsufficientPower { needed: 80, has: 50 })
        );
        assert_eq!(
            check(&with(&|n| {
                n.events.insert("swp.room.name".into(), 70);
            })),
            Err(AuthError::InsufficientPower { needed: 70, has: 50 })
        );
        // Unchanged values are not judged, even when above the sender.
        let owner = content(json!({"users": {"@o:x": 100, "@mod:x": 50}}));
        let mut new = owner.clone();
        new.users.insert("@new:x".into(), 10);
        assert_eq!(check_change(&owner, &new, "@mod:x", 50), Ok(()));
    }
}
