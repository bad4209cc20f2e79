//! The permission rules of rooms (contract section 4) as pure functions over data.
//!
//! Checks run in a fixed order so every endpoint answers the same way: can the caller know the
//! room exists (`SW_ROOM_NOT_FOUND`), are they a member (`SW_NOT_MEMBER`, or `SW_ROOM_FORBIDDEN`
//! when banned), does the room type allow the operation (`SW_ROOM_TYPE_INVARIANT`), do they
//! have the power (`SW_ROOM_FORBIDDEN`), is the room open (`SW_ROOM_FROZEN`), is there room
//! (`SW_ROOM_CAPACITY`).
//!
//! These run before the room's authorization rules (`federation::auth::check`, over the
//! event that the operation builds), so every refusal keeps its code; the levels they compare
//! with come from the room's power-levels event ([`Thresholds`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use federation::auth::power::PowerLevelsContent;
use federation::event::types;

use crate::error::{ApiError, ApiResult};
use crate::storage::{MemberRow, Membership, Participant, Room, RoomState, RoomType};

/// Kick, ban, unban, rename, topic, and granting power: the default `state_default`, `kick`,
/// `ban` and `redact` of a new room's power-levels event.
pub const POWER_MODERATOR: i64 = 50;
/// Close, archive, restore, move between workspaces: the level the rules require for the
/// lifecycle (and federation switch, server ACL) unless the power-levels event says otherwise.
pub const POWER_OWNER: i64 = 100;
/// Inviting is open to every joined member: the default `invite`.
pub const POWER_INVITE: i64 = 0;
pub const POWER_MAX: i64 = 100;

/// The event types whose level is [`POWER_OWNER`] unless the power-levels event names them.
const OWNER_TYPES: [&str; 3] = [types::LIFECYCLE, types::FEDERATION, types::SERVER_ACL];

/// The content of a new room's power-levels event: the defaults above, and `users`.
pub fn default_power_levels(users: Map<String, Value>) -> Value {
    json!({
        "users": users,
        "users_default": 0,
        "events_default": 0,
        "state_default": POWER_MODERATOR,
        "invite": POWER_INVITE,
        "kick": POWER_MODERATOR,
        "ban": POWER_MODERATOR,
        "redact": POWER_MODERATOR,
    })
}

/// The levels a room's power-levels event sets for what the homeserver checks before the
/// rules do; a key it leaves out has the rules' default, which is the constant above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub invite: i64,
    pub kick: i64,
    pub ban: i64,
    pub redact: i64,
    state_default: i64,
    events: BTreeMap<String, i64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            invite: POWER_INVITE,
            kick: POWER_MODERATOR,
            ban: POWER_MODERATOR,
            redact: POWER_MODERATOR,
            state_default: POWER_MODERATOR,
            events: BTreeMap::new(),
        }
    }
}

impl Thresholds {
    /// From a power-levels event's content; `None` if the rules would not read it.
    pub fn of(content: &Map<String, Value>) -> Option<Thresholds> {
        let levels = PowerLevelsContent::parse(content).ok()?;
        let d = Thresholds::default();
        let get = |key: &str, default: i64| levels.thresholds.get(key).copied().unwrap_or(default);
        Some(Thresholds {
            invite: get("invite", d.invite),
            kick: get("kick", d.kick),
            ban: get("ban", d.ban),
            redact: get("redact", d.redact),
            state_default: get("state_default", d.state_default),
            events: levels.events,
        })
    }

    /// The level needed to send a state event of `event_type`.
    pub fn state(&self, event_type: &str) -> i64 {
        let owner = OWNER_TYPES.contains(&event_type).then_some(POWER_OWNER);
        self.events.get(event_type).copied().or(owner).unwrap_or(self.state_default)
    }
}

/// Where the caller stands in a room.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seat {
    pub membership: Option<Membership>,
    pub power: i64,
}

impl Seat {
    pub fn of(row: Option<&MemberRow>) -> Seat {
        row.map(|m| Seat { membership: Some(m.membership), power: m.power_level }).unwrap_or_default()
    }
    pub fn joined(&self) -> bool {
        self.membership == Some(Membership::Join)
    }
    /// The power that counts: only joined members wield theirs.
    pub fn effective_power(&self) -> i64 {
        if self.joined() { self.power } else { 0 }
    }
}

pub fn dm_key(a: &str, b: &str) -> String {
    if a <= b { format!("{a}|{b}") } else { format!("{b}|{a}") }
}

fn is_dm_party(room: &Room, participant_id: &str) -> bool {
    room.dm_key.as_deref().is_some_and(|k| k.split('|').any(|p| p == participant_id))
}

/// Whether the caller may learn that the room exists.
pub fn can_see(room: &Room, seat: Seat, caller: &Participant) -> bool {
    caller.is_admin
        || matches!(seat.membership, Some(Membership::Join | Membership::Invite | Membership::Ban))
        || (room.room_type == RoomType::Public && room.tenant_id == caller.tenant_id)
        || (room.room_type == RoomType::Dm && is_dm_party(room, &caller.id))
}

pub fn require_visible(room: &Room, seat: Seat, caller: &Participant) -> ApiResult<()> {
    if can_see(room, seat, caller) { Ok(()) } else { Err(ApiError::RoomNotFound) }
}

pub fn require_joined(room: &Room, seat: Seat, caller: &Participant) -> ApiResult<()> {
    require_visible(room, seat, caller)?;
    match seat.membership {
        Some(Membership::Join) => Ok(()),
        Some(Membership::Ban) => Err(ApiError::RoomForbidden("you are banned from this room".into())),
        _ => Err(ApiError::NotMember("you are not a member of this room".into())),
    }
}

/// Joined or invited: enough to read the member list.
pub fn require_joined_or_invited(room: &Room, seat: Seat, caller: &Participant) -> ApiResult<()> {
    if seat.membership == Some(Membership::Invite) && can_see(room, seat, caller) {
        return Ok(());
    }
    require_joined(room, seat, caller)
}

pub fn require_open(room: &Room) -> ApiResult<()> {
    match room.state {
        RoomState::Open => Ok(()),
        RoomState::Archived => Err(ApiError::RoomFrozen("the room is archived".into())),
        RoomState::Closed => Err(ApiError::RoomFrozen("the room is closed".into())),
    }
}

pub fn require_power(seat: Seat, needed: i64, what: &str) -> ApiResult<()> {
    if seat.effective_power() >= needed {
        Ok(())
    } else {
        Err(ApiError::RoomForbidden(format!("{what} needs power level {needed}")))
    }
}

pub fn require_not_dm(room: &Room, what: &str) -> ApiResult<()> {
    if room.room_type == RoomType::Dm {
        Err(ApiError::RoomTypeInvariant(format!("{what} is not possible in a direct message")))
    } else {
        Ok(())
    }
}

/// Owner operations: the creator while joined, a joined member at the `needed` level (the
/// lifecycle's, 100 by default), or a server admin, who acts through the service participant
/// (`rooms::service`) where the room's own power does not reach. The room's rules then judge
/// the event: a creator who lowered their own level is refused there.
pub fn require_owner(room: &Room, seat: Seat, caller: &Participant, what: &str, needed: i64) -> ApiResult<()> {
    require_visible(room, seat, caller)?;
    if caller.is_admin {
        return Ok(());
    }
    require_joined(room, seat, caller)?;
    if room.creator_id == caller.id || seat.effective_power() >= needed {
        Ok(())
    } else {
        Err(ApiError::RoomForbidden(format!("{what} needs the room's creator or power level {needed}")))
    }
}

/// Leaving as an owner: refused while other members are joined and no other owner is
/// (`others` and `other_owners` count joined members besides the caller).
pub fn require_not_last_owner(others: i64, other_owners: i64) -> ApiResult<()> {
    if others > 0 && other_owners <= 0 {
        Err(ApiError::RoomLastOwner(format!(
            "you are the room's last owner (power level {POWER_OWNER}): give another member that level first"
        )))
    } else {
        Ok(())
    }
}

/// Kick and ban: at least the room's `needed` level for it, and strictly above the target.
pub fn require_above(seat: Seat, needed: i64, target_power: i64, what: &str) -> ApiResult<()> {
    require_power(seat, needed, what)?;
    if seat.effective_power() > target_power {
        Ok(())
    } else {
        Err(ApiError::RoomForbidden(format!("{what} needs a power level above the target's")))
    }
}

/// Setting a member's power: caller at the level of the power-levels event (`needed`, 50 by
/// default), never above their own level, and never over someone at or above them (lowering
/// one's own level is allowed).
pub fn check_power_change(
    seat: Seat,
    needed: i64,
    target_is_self: bool,
    target_current: i64,
    new_level: i64,
) -> ApiResult<()> {
    require_power(seat, needed, "changing power levels")?;
    let mine = seat.effective_power();
    if new_level > mine {
        return Err(ApiError::RoomForbidden("cannot grant a power level above your own".into()));
    }
    if !target_is_self && target_current >= mine {
        return Err(ApiError::RoomForbidden("cannot change the power level of a member at or above yours".into()));
    }
    Ok(())
}

/// A direct message's seats belong to its two participants, for everyone: joining one (or being
/// added to one) as anybody else, a server admin included, breaks the room type. Admins keep
/// their moderation tools over a DM (close, archive), not a seat in it.
pub fn require_dm_party(room: &Room, participant_id: &str) -> ApiResult<()> {
    if room.room_type == RoomType::Dm && !is_dm_party(room, participant_id) {
        Err(ApiError::RoomTypeInvariant("a direct message has only its two participants".into()))
    } else {
        Ok(())
    }
}

/// Sending on behalf of another participant (`as_participant_id`): never in a DM (either side
/// could speak as the other), power 100, and only as a joined member whose level is strictly
/// below the caller's. `target` is the named participant's `(membership, power)` in the room.
pub fn check_send_as(room: &Room, seat: Seat, target: Option<(Membership, i64)>) -> ApiResult<()> {
    let what = "sending on behalf of another participant";
    require_not_dm(room, what)?;
    require_power(seat, POWER_MAX, what)?;
    match target {
        Some((Membership::Join, power)) if power < seat.effective_power() => Ok(()),
        Some((Membership::Join, _)) => Err(ApiError::RoomForbidden(format!(
            "{what} needs a power level above theirs (never as oneself or an equal)"
        ))),
        _ => Err(ApiError::ParticipantNotFound("as_participant_id is not a member of this room".into())),
    }
}

/// Whose power level can be set: anyone with a membership in the room, whether joined, invited,
/// left, kicked or banned. A level held while out is kept for a re-join, so it must stay
/// changeable (or a kicked moderator would come back a moderator). Never in the room: 404.
pub fn require_power_target(target: Option<Membership>) -> ApiResult<()> {
    match target {
        Some(_) => Ok(()),
        None => Err(ApiError::ParticipantNotFound("the participant has never been in this room".into())),
    }
}

pub fn require_capacity(current: i64, max: i64) -> ApiResult<()> {
    if current < max { Ok(()) } else { Err(ApiError::RoomCapacity(format!("the room is full ({max} participants)"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: &str, tenant: &str, admin: bool) -> Participant {
        Participant {
            id: id.into(),
            tenant_id: tenant.into(),
            local_id: id.into(),
            server_name: "t".into(),
            fqid: format!("@{id}:t"),
            display_name: id.into(),
            is_admin: admin,
            created_at: 0,
        }
    }

    fn room(t: RoomType) -> Room {
        Room {
            id: "room-1".into(),
            tenant_id: "default".into(),
            room_alias: None,
            room_type: t,
            name: None,
            topic: None,
            workspace_id: "ws-1".into(),
            creator_id: "creator".into(),
            created_at: 0,
            state: RoomState::Open,
            federated: false,
            dm_key: (t == RoomType::Dm).then(|| dm_key("a", "b")),
        }
    }

    fn seat(m: Option<Membership>, power: i64) -> Seat {
        Seat { membership: m, power }
    }

    #[test]
    fn visibility() {
        let stranger = person("x", "default", false);
        let other_tenant = person("y", "other", false);
        assert!(!can_see(&room(RoomType::Group), Seat::default(), &stranger));
        assert!(can_see(&room(RoomType::Public), Seat::default(), &stranger));
        assert!(!can_see(&room(RoomType::Public), Seat::default(), &other_tenant));
        assert!(!can_see(&room(RoomType::Group), seat(Some(Membership::Leave), 0), &stranger));
        assert!(can_see(&room(RoomType::Group), seat(Some(Membership::Ban), 0), &stranger));
        assert!(can_see(&room(RoomType::Dm), Seat::default(), &person("a", "default", false)));
        assert!(can_see(&room(RoomType::Incognito), Seat::default(), &person("z", "other", true)));
    }

    #[test]
    fn membership_errors() {
        let p = person("x", "default", false);
        let r = room(RoomType::Public);
        assert!(matches!(require_joined(&r, Seat::default(), &p), Err(ApiError::NotMember(_))));
        assert!(matches!(require_joined(&r, seat(Some(Membership::Ban), 0), &p), Err(ApiError::RoomForbidden(_))));
        assert!(matches!(require_joined(&room(RoomType::Group), Seat::default(), &p), Err(ApiError::RoomNotFound)));
    }

    #[test]
    fn power() {
        let joined = |p| seat(Some(Membership::Join), p);
        assert!(require_above(joined(50), 50, 0, "kick").is_ok());
        assert!(require_above(joined(50), 50, 50, "kick").is_err());
        assert!(require_above(joined(40), 50, 0, "kick").is_err());
        // The room's own level for the action counts, not the default.
        assert!(require_above(joined(40), 30, 0, "kick").is_ok());
        // Power held while not joined does not count.
        assert!(require_above(seat(Some(Membership::Invite), 100), 50, 0, "kick").is_err());
        assert!(check_power_change(joined(50), 50, false, 0, 50).is_ok());
        assert!(check_power_change(joined(50), 50, false, 0, 51).is_err());
        assert!(check_power_change(joined(50), 50, false, 50, 0).is_err());
        assert!(check_power_change(joined(50), 50, true, 50, 0).is_ok());
        assert!(check_power_change(joined(0), 50, true, 0, 0).is_err());
        assert!(check_power_change(joined(50), 60, false, 0, 10).is_err());
    }

    #[test]
    fn owner() {
        let mut r = room(RoomType::Group);
        let creator = person("creator", "default", false);
        let admin = person("root", "default", true);
        let member = person("m", "default", false);
        assert!(require_owner(&r, seat(Some(Membership::Join), 0), &creator, "close", 100).is_ok());
        assert!(require_owner(&r, seat(Some(Membership::Leave), 100), &creator, "close", 100).is_err());
        assert!(require_owner(&r, Seat::default(), &admin, "close", 100).is_ok());
        assert!(require_owner(&r, seat(Some(Membership::Join), 99), &member, "close", 100).is_err());
        assert!(require_owner(&r, seat(Some(Membership::Join), 100), &member, "close", 100).is_ok());
        assert!(require_owner(&r, seat(Some(Membership::Join), 90), &member, "close", 90).is_ok());
        r.state = RoomState::Closed;
        assert!(matches!(require_open(&r), Err(ApiError::RoomFrozen(_))));
    }

    #[test]
    fn dm_seats_are_the_two_parties() {
        let dm = room(RoomType::Dm);
        assert!(require_dm_party(&dm, "a").is_ok());
        assert!(require_dm_party(&dm, "b").is_ok());
        // Anybody else, a server admin included.
        assert!(matches!(require_dm_party(&dm, "root"), Err(ApiError::RoomTypeInvariant(_))));
        assert!(require_dm_party(&room(RoomType::Group), "root").is_ok());
    }

    #[test]
    fn sending_as_another() {
        let joined = |p| seat(Some(Membership::Join), p);
        let group = room(RoomType::Group);
        assert!(check_send_as(&group, joined(100), Some((Membership::Join, 0))).is_ok());
        assert!(check_send_as(&group, joined(100), Some((Membership::Join, 99))).is_ok());
        // Never as an equal (or oneself), never below 100, never in a DM.
        assert!(matches!(
            check_send_as(&group, joined(100), Some((Membership::Join, 100))),
            Err(ApiError::RoomForbidden(_))
        ));
        assert!(matches!(
            check_send_as(&group, joined(99), Some((Membership::Join, 0))),
            Err(ApiError::RoomForbidden(_))
        ));
        assert!(matches!(
            check_send_as(&room(RoomType::Dm), joined(100), Some((Membership::Join, 0))),
            Err(ApiError::RoomTypeInvariant(_))
        ));
        // The named participant must be joined.
        for target in [None, Some((Membership::Leave, 0)), Some((Membership::Invite, 0)), Some((Membership::Ban, 0))] {
            assert!(matches!(check_send_as(&group, joined(100), target), Err(ApiError::ParticipantNotFound(_))));
        }
    }

    #[test]
    fn power_of_members_who_are_out() {
        for m in [Membership::Join, Membership::Invite, Membership::Leave, Membership::Ban] {
            assert!(require_power_target(Some(m)).is_ok(), "{m:?}");
        }
        assert!(matches!(require_power_target(None), Err(ApiError::ParticipantNotFound(_))));
        // The same level rules as for members: an owner lowers a kicked moderator.
        let owner = seat(Some(Membership::Join), 100);
        assert!(check_power_change(owner, 50, false, 50, 0).is_ok());
        assert!(check_power_change(seat(Some(Membership::Join), 50), 50, false, 50, 0).is_err());
    }

    #[test]
    fn thresholds_come_from_the_power_levels_event() {
        let defaults = Thresholds::default();
        assert_eq!(defaults.state(types::NAME), POWER_MODERATOR);
        assert_eq!(defaults.state(types::LIFECYCLE), POWER_OWNER);
        let written = default_power_levels(Map::new());
        assert_eq!(Thresholds::of(written.as_object().unwrap()), Some(Thresholds::default()));
        let custom = json!({"kick": 30, "state_default": 70, "events": {"swp.room.lifecycle": 80}});
        let t = Thresholds::of(custom.as_object().unwrap()).unwrap();
        assert_eq!((t.kick, t.ban, t.invite), (30, POWER_MODERATOR, POWER_INVITE));
        assert_eq!((t.state(types::TOPIC), t.state(types::LIFECYCLE), t.state(types::SERVER_ACL)), (70, 80, 100));
        assert_eq!(Thresholds::of(json!({"kick": "x"}).as_object().unwrap()), None);
    }

    #[test]
    fn the_last_owner_stays_while_others_are_joined() {
        assert!(matches!(require_not_last_owner(2, 0), Err(ApiError::RoomLastOwner(_))));
        assert!(require_not_last_owner(2, 1).is_ok());
        assert!(require_not_last_owner(0, 0).is_ok());
    }

    #[test]
    fn capacity() {
        assert!(require_capacity(1, 2).is_ok());
        assert!(matches!(require_capacity(2, 2), Err(ApiError::RoomCapacity(_))));
    }
}
