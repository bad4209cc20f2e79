//! Typed contents of the state events the rules read, other than power levels
//! ([`super::power`]) and the server ACL ([`super::server_acl`]).
//!
//! Each is parsed strictly when its event is authorised, so what is in a room's state always
//! parses again. The exception is redaction, which keeps only the content keys of
//! `crypto::redaction` (see each type for how its redacted form reads).

use std::fmt;

use serde_json::{Map, Value};

use crate::event::{Pdu, parse_fqid};

use super::RoomVersion;
use super::error::{AuthError, malformed};

/// The `room_type` whose seats belong to `dm_parties`.
pub const ROOM_TYPE_DM: &str = "dm";

/// `swp.room.create` content: `{creator?, room_type?, room_version?, dm_parties?, dm_service?,
/// tenant_id?}`.
///
/// The creator is the create event's sender; `creator`, which today's rooms carry, must name
/// the same fqid. `tenant_id` is local bookkeeping and never read here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateContent {
    pub room_version: RoomVersion,
    pub creator: String,
    pub room_type: Option<String>,
    /// The two parties of a DM (`room_type` `"dm"`), the creator one of them.
    pub dm_parties: Option<[String; 2]>,
    /// A DM's third seat: the service participant of the creator's server, through which that
    /// server's admins act (close, archive). It is not a person and takes no party's seat; only
    /// the creator's server can name one, and only at creation, so no server gains a seat in a
    /// DM it did not create.
    pub dm_service: Option<String>,
}

impl CreateContent {
    pub fn of(create: &Pdu) -> Result<CreateContent, AuthError> {
        let content = &create.content;
        let room_version = match content.get("room_version") {
            None => RoomVersion::V1,
            Some(Value::String(v)) => RoomVersion::parse(v)?,
            Some(_) => return Err(malformed("room_version is not a string")),
        };
        match content.get("creator") {
            None => {}
            Some(Value::String(c)) if *c == create.sender => {}
            Some(_) => return Err(malformed("creator is not the create event's sender")),
        }
        let room_type = match content.get("room_type") {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(malformed("room_type is not a string")),
        };
        let dm_parties = match (room_type.as_deref(), content.get("dm_parties")) {
            (Some(ROOM_TYPE_DM), Some(parties)) => Some(dm_parties(parties, &create.sender)?),
            (Some(ROOM_TYPE_DM), None) => return Err(malformed("a dm needs dm_parties")),
            (_, Some(_)) => return Err(malformed("dm_parties outside a dm")),
            (_, None) => None,
        };
        let dm_service = match (&dm_parties, content.get("dm_service")) {
            (_, None) => None,
            (Some(parties), Some(Value::String(service))) => {
                let creator_server = parse_fqid(&create.sender).map(|(_, server)| server);
                let service_server = parse_fqid(service).map(|(_, server)| server);
                if service_server.is_none() || service_server != creator_server || parties.contains(service) {
                    return Err(malformed("dm_service must be an fqid of the creator's server, not a party"));
                }
                Some(service.clone())
            }
            (Some(_), Some(_)) => return Err(malformed("dm_service is not a string")),
            (None, Some(_)) => return Err(malformed("dm_service outside a dm")),
        };
        Ok(CreateContent { room_version, creator: create.sender.clone(), room_type, dm_parties, dm_service })
    }

    pub fn is_dm(&self) -> bool {
        self.dm_parties.is_some()
    }

    /// Whether `fqid` holds a seat: everyone outside a DM, only the two parties (and the
    /// creator's service participant, if the create event names one) inside one.
    pub fn may_be_seated(&self, fqid: &str) -> bool {
        self.dm_parties.as_ref().is_none_or(|parties| parties.iter().any(|p| p == fqid))
            || self.dm_service.as_deref() == Some(fqid)
    }
}

fn dm_parties(value: &Value, creator: &str) -> Result<[String; 2], AuthError> {
    let bad = || malformed("dm_parties must be two different fqids, the creator one of them");
    let [a, b] = value.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (Some(a), Some(b)) = (a.as_str(), b.as_str()) else {
        return Err(bad());
    };
    if a == b || parse_fqid(a).is_none() || parse_fqid(b).is_none() || (a != creator && b != creator) {
        return Err(bad());
    }
    Ok([a.to_owned(), b.to_owned()])
}

/// `swp.room.member` `content.membership`. There is no knocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Join,
    Invite,
    Leave,
    Ban,
}

impl Membership {
    /// The membership a member event sets. Redaction keeps `membership`, so this reads the same
    /// on a redacted event.
    pub fn of(event: &Pdu) -> Result<Membership, AuthError> {
        match event.content.get("membership").and_then(Value::as_str) {
            Some("join") => Ok(Membership::Join),
            Some("invite") => Ok(Membership::Invite),
            Some("leave") => Ok(Membership::Leave),
            Some("ban") => Ok(Membership::Ban),
            _ => Err(malformed("membership is not join, invite, leave or ban")),
        }
    }

    /// The current membership held by a member state event; no event is [`Membership::Leave`].
    pub fn of_state(event: Option<&Pdu>) -> Result<Membership, AuthError> {
        event.map_or(Ok(Membership::Leave), Membership::of)
    }
}

/// `swp.room.join_rules` `content.join_rule`. With no join rules event a room is invite-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRule {
    Public,
    Invite,
}

impl JoinRule {
    pub fn of(event: &Pdu) -> Result<JoinRule, AuthError> {
        match event.content.get("join_rule").and_then(Value::as_str) {
            Some("public") => Ok(JoinRule::Public),
            Some("invite") => Ok(JoinRule::Invite),
            _ => Err(malformed("join_rule is not public or invite")),
        }
    }

    pub fn of_state(event: Option<&Pdu>) -> Result<JoinRule, AuthError> {
        event.map_or(Ok(JoinRule::Invite), JoinRule::of)
    }
}

/// `swp.room.lifecycle` `content.state`: open, archived (frozen, restorable), closed (frozen
/// for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Open,
    Archived,
    Closed,
}

impl Lifecycle {
    /// The state a lifecycle event sets; strict, for authorising the event.
    pub fn of(event: &Pdu) -> Result<Lifecycle, AuthError> {
        Lifecycle::from_content(&event.content)?.ok_or_else(|| malformed("a lifecycle event needs a state"))
    }

    /// The lifecycle held by the room state. No event is `Open`. A redacted event (the
    /// redaction table keeps no key of it today) also reads `Open`: a frozen room accepts no
    /// redaction, so only an `open` lifecycle event can be the current one when it is redacted.
    pub fn of_state(event: Option<&Pdu>) -> Result<Lifecycle, AuthError> {
        match event {
            None => Ok(Lifecycle::Open),
            Some(event) => Ok(Lifecycle::from_content(&event.content)?.unwrap_or(Lifecycle::Open)),
        }
    }

    fn from_content(content: &Map<String, Value>) -> Result<Option<Lifecycle>, AuthError> {
        match content.get("state") {
            None => Ok(None),
            Some(Value::String(s)) if s == "open" => Ok(Some(Lifecycle::Open)),
            Some(Value::String(s)) if s == "archived" => Ok(Some(Lifecycle::Archived)),
            Some(Value::String(s)) if s == "closed" => Ok(Some(Lifecycle::Closed)),
            Some(_) => Err(malformed("lifecycle state is not open, archived or closed")),
        }
    }

    pub fn is_frozen(self) -> bool {
        self != Lifecycle::Open
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lifecycle::Open => "open",
            Lifecycle::Archived => "archived",
            Lifecycle::Closed => "closed",
        })
    }
}

/// `swp.room.federation` `{enabled: bool}`: the room's federation switch. It gates transport,
/// never acceptance, so the rules only check its shape and who may send it.
pub fn federation_enabled(event: &Pdu) -> Result<bool, AuthError> {
    event.content.get("enabled").and_then(Value::as_bool).ok_or_else(|| malformed("enabled is not a boolean"))
}
