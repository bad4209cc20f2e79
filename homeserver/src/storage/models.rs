//! Rows as the storage layer returns them. Text columns with a fixed vocabulary map to enums.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum RoomType {
    Group,
    Public,
    Incognito,
    Dm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum RoomState {
    Open,
    Archived,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Membership {
    Join,
    Invite,
    Leave,
    Ban,
}

impl Membership {
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Join => "join",
            Membership::Invite => "invite",
            Membership::Leave => "leave",
            Membership::Ban => "ban",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum NotificationMode {
    All,
    Mentions,
    None,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub max_participants: i64,
    pub send_rate_per_s: i64,
    pub send_burst: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Participant {
    pub id: String,
    pub tenant_id: String,
    pub local_id: String,
    pub server_name: String,
    pub fqid: String,
    pub display_name: String,
    pub is_admin: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Workspace {
    pub id: String,
    pub tenant_id: String,
    pub owner_id: String,
    pub name: String,
    pub personal: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Room {
    pub id: String,
    pub tenant_id: String,
    pub room_alias: Option<String>,
    pub room_type: RoomType,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub workspace_id: String,
    pub creator_id: String,
    pub created_at: i64,
    pub state: RoomState,
    pub federated: bool,
    pub dm_key: Option<String>,
}

/// A room as one caller sees it: the room, its joined-member count and the caller's membership.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RoomView {
    #[sqlx(flatten)]
    pub room: Room,
    pub members_count: i64,
    pub my_membership: Option<Membership>,
    pub my_power_level: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MemberRow {
    pub room_id: String,
    pub participant_id: String,
    pub membership: Membership,
    pub power_level: i64,
    pub joined_at: Option<i64>,
    pub notification_mode: NotificationMode,
    pub muted_until: Option<i64>,
    pub last_read_pos: i64,
    pub last_read_event_id: Option<String>,
}

/// A member joined with the participant it names, for member listings.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MemberWithParticipant {
    #[sqlx(flatten)]
    pub member: MemberRow,
    #[sqlx(flatten)]
    pub participant: Participant,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventRow {
    pub stream_position: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender_id: String,
    pub content: String,
    pub origin_ts: i64,
}

/// What an access token resolves to.
#[derive(Clone, Debug)]
pub struct TokenOwner {
    pub participant: Participant,
    pub session_id: String,
    pub expires_at: i64,
}

/// The outcome of presenting a refresh token.
pub enum RefreshOutcome {
    /// The session's tokens were replaced (the session id is given so caches can drop the old).
    Rotated(Participant, String),
    /// Unknown, expired or revoked.
    Invalid,
    /// Already used once: the session (given) is revoked, since the token may have been stolen.
    Reused(String),
}
