//! The rules for `swp.room.member` events: join, invite, leave (own leave, kick, unban) and ban.
//!
//! The state key is the target's fqid. Only joined members act on others, and only with the
//! power-levels threshold for the action (`invite`, `kick`, `ban`); kicking, banning and
//! unbanning also need a level strictly above the target's. A DM seats its two parties only
//! and has no moderation.

use crate::event::{Pdu, parse_fqid, types};

use super::content::{CreateContent, JoinRule, Membership};
use super::error::{AuthError, malformed};
use super::power::Power;
use super::{Lookup, membership_of_sender};

pub(super) fn check(
    event: &Pdu,
    create: (&Pdu, &CreateContent),
    state: &Lookup<'_>,
    power: &Power,
) -> Result<(), AuthError> {
    let (create_event, room) = create;
    let target = event
        .state_key
        .as_deref()
        .filter(|t| parse_fqid(t).is_some())
        .ok_or_else(|| malformed("a member event's state key is not an fqid"))?;
    let membership = Membership::of(event)?;
    let target_now = Membership::of_state(state.get(types::MEMBER, target)?)?;
    let sender = event.sender.as_str();

    // The creator's own join, right after the create event, starts the room.
    if membership == Membership::Join
        && target == sender
        && sender == room.creator
        && event.prev_events.len() == 1
        && event.prev_events[0] == create_event.event_id
    {
        return Ok(());
    }

    match membership {
        Membership::Join => {
            if sender != target {
                return Err(AuthError::NotForOthers);
            }
            if !room.may_be_seated(target) {
                return Err(AuthError::DmSeatsTaken);
            }
            match target_now {
                Membership::Ban => Err(AuthError::Banned),
                // Joined already (a profile change), invited, or a DM party, whose seat waits.
                Membership::Join | Membership::Invite => Ok(()),
                Membership::Leave if room.is_dm() => Ok(()),
                Membership::Leave => match JoinRule::of_state(state.get(types::JOIN_RULES, "")?)? {
                    JoinRule::Public => Ok(()),
                    JoinRule::Invite => Err(AuthError::NotInvited),
                },
            }
        }
        Membership::Invite => {
            if !room.may_be_seated(target) {
                return Err(AuthError::DmSeatsTaken);
            }
            require_joined(state, sender)?;
            match target_now {
                Membership::Ban => return Err(AuthError::Banned),
                Membership::Join => return Err(AuthError::AlreadyJoined),
                Membership::Invite | Membership::Leave => {}
            }
            require_level(power, sender, power.action("invite"))
        }
        Membership::Leave if sender == target => match target_now {
            Membership::Join | Membership::Invite => Ok(()),
            Membership::Ban => Err(AuthError::Banned),
            Membership::Leave => Err(AuthError::NotJoined),
        },
        Membership::Leave | Membership::Ban => {
            require_joined(state, sender)?;
            if room.is_dm() {
                return Err(AuthError::DmNoModeration);
            }
            // An unban is a leave over a ban, and needs the power to ban.
            let action = match (membership, target_now) {
                (Membership::Leave, Membership::Ban) | (Membership::Ban, _) => "ban",
                _ => "kick",
            };
            require_level(power, sender, power.action(action))?;
            let (has, target) = (power.user(sender), power.user(target));
            if has > target { Ok(()) } else { Err(AuthError::NotAboveTarget { has, target }) }
        }
    }
}

fn require_joined(state: &Lookup<'_>, sender: &str) -> Result<(), AuthError> {
    match membership_of_sender(state, sender)? {
        Membership::Join => Ok(()),
        Membership::Ban => Err(AuthError::Banned),
        Membership::Invite | Membership::Leave => Err(AuthError::NotJoined),
    }
}

fn require_level(power: &Power, sender: &str, needed: i64) -> Result<(), AuthError> {
    let has = power.user(sender);
    if has >= needed { Ok(()) } else { Err(AuthError::InsufficientPower { needed, has }) }
}
