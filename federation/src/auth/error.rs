//! Why an event is not authorised. Each variant names one rule, so the homeserver can map it to
//! one `SW_` code (suggested mapping in `docs/federation.md`), and a peer's verdict can say why.

use crate::event::{EventId, MalformedEvent};

use super::content::Lifecycle;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The event, or a state event the rules read, does not have the shape the rules need.
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("room version {0:?} is not supported")]
    UnsupportedRoomVersion(String),
    /// A create event that is not the room's first event (depth 1, no `prev_events`, no
    /// `auth_events`), or a non-create event without `prev_events`.
    #[error("a room has one create event, and it comes first")]
    NotFirstEvent,
    #[error("the room's create event is not in the auth state")]
    MissingCreate,
    /// A state event of another room was offered as auth state.
    #[error("an auth event belongs to another room")]
    WrongRoom,
    #[error("the sender's server {sender_server:?} is not the origin {origin:?}")]
    OriginMismatch { sender_server: String, origin: String },
    #[error("the room's server ACL denies {origin:?}")]
    ServerDenied { origin: String },
    /// A server ACL that denies the server sending it would lock its own sender out.
    #[error("a server ACL may not deny its own origin")]
    AclDeniesSender,
    #[error("the room is {lifecycle}")]
    RoomFrozen { lifecycle: Lifecycle },
    #[error("the sender is not joined to the room")]
    NotJoined,
    /// The sender (or, for a join or an invite, the target) is banned.
    #[error("banned from the room")]
    Banned,
    #[error("joining needs a public join rule or an invitation")]
    NotInvited,
    #[error("the target is already joined")]
    AlreadyJoined,
    /// Only the user themselves may join, or fill a state key that is their fqid.
    #[error("the sender may not act as another user here")]
    NotForOthers,
    #[error("needs power level {needed}, the sender has {has}")]
    InsufficientPower { needed: i64, has: i64 },
    #[error("the sender's power level {has} is not above the target's {target}")]
    NotAboveTarget { has: i64, target: i64 },
    #[error("a direct message seats only its two parties")]
    DmSeatsTaken,
    #[error("nobody can be kicked or banned from a direct message")]
    DmNoModeration,
    #[error("auth event {0} is not available")]
    MissingAuthEvent(EventId),
    /// An auth event the rules do not read for this event, or not a state event.
    #[error("auth event {0} is not one the rules select")]
    UnexpectedAuthEvent(EventId),
    #[error("two auth events fill the same state entry")]
    DuplicateAuthEvent,
}

impl From<MalformedEvent> for AuthError {
    fn from(e: MalformedEvent) -> Self {
        AuthError::Malformed(e.0)
    }
}

pub(crate) fn malformed(what: impl Into<String>) -> AuthError {
    AuthError::Malformed(what.into())
}
