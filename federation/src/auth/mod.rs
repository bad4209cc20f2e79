//! The authorization rules: whether an event may be part of a room, given the room state the
//! rules read ([`auth_types_for`]). One pure function, [`check`], serves a local change (over
//! the current state), an inbound event (over its own `auth_events`, then the state before
//! it, then the current state) and state resolution. Acceptance depends on the event, that
//! state and the room version alone: never on configuration or the clock.
//!
//! Room version `"1"` ([`RoomVersion::V1`]), modelled on Matrix room version 11 and mapped to
//! our event types. In order:
//! 1. The sender's server is the event's `origin`.
//! 2. `swp.room.create` comes first (depth 1, no `prev_events`, no `auth_events`), has an
//!    empty state key and a well-formed content ([`CreateContent`]); nothing else is checked.
//!    Our room ids (`room-…`) name no server, so unlike Matrix nothing ties the room id to
//!    the creator's server: a room is its create event, which every other event must have in
//!    its auth state ([`AuthError::MissingCreate`]), from the same room.
//! 3. Every other event has `prev_events`, and the state events of the rules' own types have
//!    an empty state key; messages, reactions and redactions are not state.
//! 4. The room's server ACL must let the event's origin in.
//! 5. An archived or closed room refuses everything except, while archived, a lifecycle
//!    event; a closed room never reopens.
//! 6. Member events follow the rules in `membership.rs`.
//! 7. Any other event needs a joined sender with the level the power-levels event sets for
//!    its type; a state key that is an fqid may only be the sender's own.
//! 8. Power-levels changes follow [`power::check_change`]; join rules, lifecycle, federation
//!    switch, ACL and redaction contents must be well-formed, and an ACL may not deny its own
//!    origin.

pub mod content;
mod error;
mod membership;
pub mod power;
pub mod server_acl;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::event::{EventSource, Pdu, StateKey, StateMap, is_event_id, parse_fqid, types};

pub use content::{CreateContent, JoinRule, Lifecycle, Membership};
pub use error::AuthError;
use error::malformed;
use power::{Power, PowerLevelsContent};
use server_acl::ServerAcl;

/// A room version: which authorization rules, redaction table and state resolution apply.
/// Chosen by the create event's `content.room_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomVersion {
    /// `"1"`, and rooms whose create event carries no `room_version` (every room made before
    /// federation).
    V1,
}

impl RoomVersion {
    pub fn parse(version: &str) -> Result<RoomVersion, AuthError> {
        match version {
            "1" => Ok(RoomVersion::V1),
            other => Err(AuthError::UnsupportedRoomVersion(other.chars().take(32).collect())),
        }
    }

    /// The version a create event selects.
    pub fn of_create(create: &Pdu) -> Result<RoomVersion, AuthError> {
        Ok(CreateContent::of(create)?.room_version)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoomVersion::V1 => "1",
        }
    }

    /// The redaction table of the version: it keeps every content key these rules read, so a
    /// redacted state event still means to the rules what it meant before.
    pub fn redaction_rules(self) -> crypto::RedactionRules {
        match self {
            RoomVersion::V1 => crypto::RedactionRules::V1,
        }
    }
}

/// The room state the rules read: a [`StateMap`] of events, or of references to them.
pub trait AuthState {
    fn state_event(&self, key: &StateKey) -> Option<&Pdu>;
}

impl AuthState for StateMap<Pdu> {
    fn state_event(&self, key: &StateKey) -> Option<&Pdu> {
        self.get(key)
    }
}

impl AuthState for StateMap<&Pdu> {
    fn state_event(&self, key: &StateKey) -> Option<&Pdu> {
        self.get(key).copied()
    }
}

/// Reads the auth state for one room: an event of another room in it is an error, not state.
pub(crate) struct Lookup<'a> {
    state: &'a dyn AuthState,
    room_id: &'a str,
}

impl<'a> Lookup<'a> {
    pub(crate) fn get(&self, event_type: &str, state_key: &str) -> Result<Option<&'a Pdu>, AuthError> {
        let found = self.state.state_event(&(event_type.to_owned(), state_key.to_owned()));
        match found {
            Some(event) if event.room_id != self.room_id => Err(AuthError::WrongRoom),
            Some(event) if event.event_type != event_type || event.state_key.as_deref() != Some(state_key) => {
                Err(malformed("the auth state holds an event under another key"))
            }
            found => Ok(found),
        }
    }
}

fn membership_of_sender(state: &Lookup<'_>, sender: &str) -> Result<Membership, AuthError> {
    Membership::of_state(state.get(types::MEMBER, sender)?)
}

/// State event types whose state key must be empty.
const ROOM_STATE_TYPES: [&str; 8] = [
    types::CREATE,
    types::POWER_LEVELS,
    types::JOIN_RULES,
    types::NAME,
    types::TOPIC,
    types::LIFECYCLE,
    types::FEDERATION,
    types::SERVER_ACL,
];
/// Event types that are never state.
const TIMELINE_TYPES: [&str; 3] = [types::MESSAGE, types::REACTION, types::REDACTION];

/// Whether `event` may be part of its room, given `auth_state`: the room state before it, or
/// the state its `auth_events` name (see [`auth_state_from_auth_events`]).
pub fn check(version: RoomVersion, event: &Pdu, auth_state: &impl AuthState) -> Result<(), AuthError> {
    let sender_server = event.sender_server();
    if sender_server != event.origin {
        return Err(AuthError::OriginMismatch {
            sender_server: sender_server.to_owned(),
            origin: event.origin.clone(),
        });
    }
    check_shape(event)?;
    if event.event_type == types::CREATE {
        if !event.prev_events.is_empty() || !event.auth_events.is_empty() || event.depth != 1 {
            return Err(AuthError::NotFirstEvent);
        }
        let room = CreateContent::of(event)?;
        return if room.room_version == version {
            Ok(())
        } else {
            Err(AuthError::UnsupportedRoomVersion(room.room_version.as_str().to_owned()))
        };
    }
    if event.prev_events.is_empty() {
        return Err(AuthError::NotFirstEvent);
    }

    let state = Lookup { state: auth_state, room_id: &event.room_id };
    let create_event = state.get(types::CREATE, "")?.ok_or(AuthError::MissingCreate)?;
    let room = CreateContent::of(create_event)?;
    if room.room_version != version {
        return Err(AuthError::UnsupportedRoomVersion(room.room_version.as_str().to_owned()));
    }

    if let Some(acl) = state.get(types::SERVER_ACL, "")?
        && !ServerAcl::parse(&acl.content)?.allows(&event.origin)
    {
        return Err(AuthError::ServerDenied { origin: event.origin.clone() });
    }

    let lifecycle = Lifecycle::of_state(state.get(types::LIFECYCLE, "")?)?;
    let reopening = lifecycle == Lifecycle::Archived && event.is_room_state(types::LIFECYCLE);
    if lifecycle.is_frozen() && !reopening {
        return Err(AuthError::RoomFrozen { lifecycle });
    }

    let power_levels = state.get(types::POWER_LEVELS, "")?;
    let power = Power::new(power_levels, &room.creator)?;

    if event.event_type == types::MEMBER {
        return membership::check(event, (create_event, &room), &state, &power);
    }

    match membership_of_sender(&state, &event.sender)? {
        Membership::Join => {}
        Membership::Ban => return Err(AuthError::Banned),
        Membership::Invite | Membership::Leave => return Err(AuthError::NotJoined),
    }
    let has = power.user(&event.sender);
    let needed = power.to_send(&event.event_type, event.is_state());
    if has < needed {
        return Err(AuthError::InsufficientPower { needed, has });
    }
    if let Some(key) = &event.state_key
        && key.starts_with('@')
        && *key != event.sender
    {
        return Err(AuthError::NotForOthers);
    }

    match event.event_type.as_str() {
        types::POWER_LEVELS => {
            let new = PowerLevelsContent::parse(&event.content)?;
            match power_levels {
                Some(old) => power::check_change(&PowerLevelsContent::parse(&old.content)?, &new, &event.sender, has),
                None => Ok(()),
            }
        }
        types::JOIN_RULES => JoinRule::of(event).map(drop),
        types::LIFECYCLE => Lifecycle::of(event).map(drop),
        types::FEDERATION => content::federation_enabled(event).map(drop),
        types::SERVER_ACL => {
            if ServerAcl::parse(&event.content)?.allows(&event.origin) {
                Ok(())
            } else {
                Err(AuthError::AclDeniesSender)
            }
        }
        types::REDACTION => match event.content.get("redacts") {
            // Whether the redaction takes effect (the sender's own event, or `redact` power)
            // is decided when it is applied, as in Matrix since room version 3.
            Some(Value::String(id)) if is_event_id(id) => Ok(()),
            _ => Err(malformed("redacts is not an event id")),
        },
        _ => Ok(()),
    }
}

fn check_shape(event: &Pdu) -> Result<(), AuthError> {
    let event_type = event.event_type.as_str();
    if ROOM_STATE_TYPES.contains(&event_type) && event.state_key.as_deref() != Some("") {
        return Err(malformed(format!("{event_type} needs an empty state key")));
    }
    if TIMELINE_TYPES.contains(&event_type) && event.is_state() {
        return Err(malformed(format!("{event_type} is not a state event")));
    }
    if event_type == types::MEMBER && event.state_key.as_deref().is_none_or(|k| parse_fqid(k).is_none()) {
        return Err(malformed("a member event's state key is not an fqid"));
    }
    Ok(())
}

/// The state entries [`check`] reads for `event`: what its `auth_events` should name.
pub fn auth_types_for(event: &Pdu) -> Vec<StateKey> {
    if event.event_type == types::CREATE {
        return Vec::new();
    }
    let room = |event_type: &str| (event_type.to_owned(), String::new());
    let mut keys = vec![
        room(types::CREATE),
        room(types::POWER_LEVELS),
        room(types::LIFECYCLE),
        room(types::SERVER_ACL),
        (types::MEMBER.to_owned(), event.sender.clone()),
    ];
    if event.event_type == types::MEMBER {
        if let Some(target) = event.state_key.as_ref().filter(|t| **t != event.sender) {
            keys.push((types::MEMBER.to_owned(), target.clone()));
        }
        if matches!(Membership::of(event), Ok(Membership::Join | Membership::Invite)) {
            keys.push(room(types::JOIN_RULES));
        }
    }
    keys.sort();
    keys
}

/// The auth state `event`'s own `auth_events` name, for the first of the three checks on an
/// inbound event. Each must be available (`events` answers `None` for rejected ones), a state
/// event of the same room, and one of [`auth_types_for`], each entry named at most once.
pub fn auth_state_from_auth_events<'a>(
    event: &Pdu,
    events: &'a impl EventSource,
) -> Result<StateMap<&'a Pdu>, AuthError> {
    let wanted = auth_types_for(event);
    let mut state = StateMap::new();
    for id in &event.auth_events {
        let auth_event = events.event(id).ok_or_else(|| AuthError::MissingAuthEvent(id.clone()))?;
        if auth_event.room_id != event.room_id {
            return Err(AuthError::WrongRoom);
        }
        let key = auth_event.state_entry().filter(|k| wanted.contains(k));
        let key = key.ok_or_else(|| AuthError::UnexpectedAuthEvent(id.clone()))?;
        if state.insert(key, auth_event).is_some() {
            return Err(AuthError::DuplicateAuthEvent);
        }
    }
    Ok(state)
}
