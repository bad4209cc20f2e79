//! One test per rule of [`crate::auth::check`], on rooms built as today's homeserver builds
//! them ([`crate::testing`]).

use serde_json::json;

use crate::auth::{self, AuthError, Lifecycle, RoomVersion, auth_state_from_auth_events, auth_types_for};
use crate::event::{Pdu, StateMap, types};
use crate::testing::{ALICE, BOB, CAROL, CREATE_ID, DAVE, Room, member, power_levels};

fn key(event_type: &str, state_key: &str) -> (String, String) {
    (event_type.to_owned(), state_key.to_owned())
}

fn message(room: &mut Room, id: &str, sender: &str) -> Result<String, AuthError> {
    room.try_send(id, sender, types::MESSAGE, None, json!({"msgtype": "swp.text", "body": "hi"}))
}

/// A group room where Bob is joined at 0 and Carol at 50 (a moderator).
fn room_with_moderator() -> Room {
    let mut room = Room::group(ALICE, "public");
    room.join("evt-bob-join", BOB);
    room.join("evt-carol-join", CAROL);
    room.send("evt-pl-mod", ALICE, types::POWER_LEVELS, Some(""), power_levels(&[(ALICE, 100), (CAROL, 50)]));
    room
}

fn dm() -> Room {
    let mut room = Room::created(ALICE, json!({"creator": ALICE, "room_type": "dm", "dm_parties": [ALICE, BOB]}));
    room.join("evt-alice-join", ALICE);
    room
}

fn create_event(content: serde_json::Value, tweak: impl Fn(&mut serde_json::Value)) -> Result<(), AuthError> {
    let mut value = json!({
        "room_id": "room-2", "sender": ALICE, "origin": "alpha.test", "origin_ts": 0,
        "event_type": types::CREATE, "content": content, "state_key": "",
        "prev_events": [], "auth_events": [], "depth": 1,
    });
    tweak(&mut value);
    let event = Pdu::parse("evt-c2", &value).map_err(AuthError::from)?;
    auth::check(RoomVersion::V1, &event, &StateMap::<Pdu>::new())
}

#[test]
fn create_comes_first_and_is_well_formed() {
    let group = json!({"creator": ALICE, "room_type": "group"});
    assert_eq!(create_event(group.clone(), |_| {}), Ok(()));
    assert_eq!(create_event(json!({}), |_| {}), Ok(()), "today's minimal create: version 1, no type");
    assert_eq!(create_event(json!({"room_version": "1"}), |_| {}), Ok(()));
    assert_eq!(create_event(group.clone(), |v| v["prev_events"] = json!(["evt-x"])), Err(AuthError::NotFirstEvent));
    assert_eq!(create_event(group.clone(), |v| v["auth_events"] = json!(["evt-x"])), Err(AuthError::NotFirstEvent));
    assert_eq!(create_event(group.clone(), |v| v["depth"] = json!(2)), Err(AuthError::NotFirstEvent));
    assert!(matches!(create_event(group.clone(), |v| v["state_key"] = json!("x")), Err(AuthError::Malformed(_))));
    assert_eq!(create_event(json!({"room_version": "2"}), |_| {}), Err(AuthError::UnsupportedRoomVersion("2".into())));
    assert!(matches!(create_event(json!({"room_version": 1}), |_| {}), Err(AuthError::Malformed(_))));
    assert!(matches!(create_event(json!({"creator": BOB}), |_| {}), Err(AuthError::Malformed(_))));
    assert!(matches!(create_event(group, |v| v["origin"] = json!("beta.test")), Err(AuthError::OriginMismatch { .. })));
}

#[test]
fn dm_create_names_its_two_parties() {
    let dm = |parties: serde_json::Value| create_event(json!({"room_type": "dm", "dm_parties": parties}), |_| {});
    assert_eq!(dm(json!([ALICE, BOB])), Ok(()));
    assert_eq!(dm(json!([BOB, ALICE])), Ok(()));
    for bad in [
        json!([BOB, CAROL]),
        json!([ALICE, ALICE]),
        json!([ALICE]),
        json!([ALICE, BOB, CAROL]),
        json!([ALICE, "bob"]),
        json!("x"),
    ] {
        assert!(matches!(dm(bad.clone()), Err(AuthError::Malformed(_))), "{bad}");
    }
    assert!(matches!(create_event(json!({"room_type": "dm"}), |_| {}), Err(AuthError::Malformed(_))));
    assert!(matches!(
        create_event(json!({"room_type": "group", "dm_parties": [ALICE, BOB]}), |_| {}),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn every_other_event_needs_the_create_event_of_its_room() {
    let room = Room::group(ALICE, "public");
    let event = room.event("evt-m", ALICE, types::MESSAGE, None, json!({}));
    let mut state = room.state_events();
    state.remove(&key(types::CREATE, ""));
    assert_eq!(auth::check(RoomVersion::V1, &event, &state), Err(AuthError::MissingCreate));

    let mut foreign = room.events[CREATE_ID].clone();
    foreign.room_id = "room-other".into();
    let mut state = room.state_events();
    state.insert(key(types::CREATE, ""), &foreign);
    assert_eq!(auth::check(RoomVersion::V1, &event, &state), Err(AuthError::WrongRoom));

    let mut orphan = event.clone();
    orphan.prev_events.clear();
    assert_eq!(auth::check(RoomVersion::V1, &orphan, &room.state_events()), Err(AuthError::NotFirstEvent));
}

#[test]
fn the_sender_server_is_the_origin() {
    let mut room = Room::group(ALICE, "public");
    let mut event = room.event("evt-m", ALICE, types::MESSAGE, None, json!({}));
    event.origin = "beta.test".into();
    assert_eq!(
        room.try_add(event),
        Err(AuthError::OriginMismatch { sender_server: "alpha.test".into(), origin: "beta.test".into() })
    );
}

#[test]
fn the_creator_joins_first_then_joins_follow_the_join_rule() {
    let mut room = Room::created(ALICE, json!({"creator": ALICE}));
    // Right after the create event only the creator may join: no join rules means invite-only.
    assert_eq!(
        room.try_send("evt-bob-early", BOB, types::MEMBER, Some(BOB), member("join")),
        Err(AuthError::NotInvited)
    );
    room.join("evt-alice-join", ALICE);

    let mut public = Room::group(ALICE, "public");
    public.join("evt-bob-join", BOB);
    // Joining again is a profile change.
    public.join("evt-bob-join-again", BOB);

    let mut private = Room::group(ALICE, "invite");
    assert_eq!(
        private.try_send("evt-bob-join", BOB, types::MEMBER, Some(BOB), member("join")),
        Err(AuthError::NotInvited)
    );
    private.send("evt-invite-bob", ALICE, types::MEMBER, Some(BOB), member("invite"));
    private.join("evt-bob-join", BOB);
}

#[test]
fn nobody_joins_for_someone_else() {
    let mut room = Room::group(ALICE, "public");
    assert_eq!(room.try_send("evt-j", ALICE, types::MEMBER, Some(BOB), member("join")), Err(AuthError::NotForOthers));
}

#[test]
fn member_events_must_be_well_formed() {
    let mut room = Room::group(ALICE, "public");
    for (state_key, content) in [
        (Some("bob"), member("join")),
        (None, member("join")),
        (Some(BOB), member("knock")),
        (Some(BOB), json!({"membership": 1})),
        (Some(BOB), json!({})),
    ] {
        let result = room.try_send("evt-bad", ALICE, types::MEMBER, state_key, content.clone());
        assert!(matches!(result, Err(AuthError::Malformed(_))), "{state_key:?} {content}");
    }
}

#[test]
fn a_banned_user_cannot_join_or_be_invited() {
    let mut room = room_with_moderator();
    room.send("evt-ban-bob", CAROL, types::MEMBER, Some(BOB), member("ban"));
    assert_eq!(room.try_send("evt-bob-back", BOB, types::MEMBER, Some(BOB), member("join")), Err(AuthError::Banned));
    assert_eq!(room.try_send("evt-inv", ALICE, types::MEMBER, Some(BOB), member("invite")), Err(AuthError::Banned));
    assert_eq!(room.try_send("evt-leave", BOB, types::MEMBER, Some(BOB), member("leave")), Err(AuthError::Banned));
    assert_eq!(message(&mut room, "evt-m", BOB), Err(AuthError::Banned));
}

#[test]
fn invites_need_a_joined_inviter_with_the_invite_level() {
    let mut room = Room::group(ALICE, "invite");
    // Bob is not in the room.
    assert_eq!(room.try_send("evt-i1", BOB, types::MEMBER, Some(CAROL), member("invite")), Err(AuthError::NotJoined));
    room.send("evt-invite-bob", ALICE, types::MEMBER, Some(BOB), member("invite"));
    // Invited is not joined.
    assert_eq!(room.try_send("evt-i2", BOB, types::MEMBER, Some(CAROL), member("invite")), Err(AuthError::NotJoined));
    room.join("evt-bob-join", BOB);
    room.send("evt-i3", BOB, types::MEMBER, Some(CAROL), member("invite"));
    assert_eq!(
        room.try_send("evt-i4", ALICE, types::MEMBER, Some(BOB), member("invite")),
        Err(AuthError::AlreadyJoined)
    );

    let mut pl = power_levels(&[(ALICE, 100)]);
    pl["invite"] = json!(50);
    room.send("evt-pl-invite50", ALICE, types::POWER_LEVELS, Some(""), pl);
    assert_eq!(
        room.try_send("evt-i5", BOB, types::MEMBER, Some(DAVE), member("invite")),
        Err(AuthError::InsufficientPower { needed: 50, has: 0 })
    );
}

#[test]
fn leaving_is_for_members_and_invitees() {
    let mut room = Room::group(ALICE, "invite");
    assert_eq!(room.try_send("evt-l1", BOB, types::MEMBER, Some(BOB), member("leave")), Err(AuthError::NotJoined));
    room.send("evt-invite-bob", ALICE, types::MEMBER, Some(BOB), member("invite"));
    // Declining an invitation.
    room.send("evt-bob-declines", BOB, types::MEMBER, Some(BOB), member("leave"));
    room.send("evt-invite-bob-2", ALICE, types::MEMBER, Some(BOB), member("invite"));
    room.join("evt-bob-join", BOB);
    room.send("evt-bob-leaves", BOB, types::MEMBER, Some(BOB), member("leave"));
    assert_eq!(message(&mut room, "evt-m", BOB), Err(AuthError::NotJoined));
}

#[test]
fn kicks_need_the_kick_level_and_a_level_above_the_target() {
    let mut room = room_with_moderator();
    room.join("evt-dave-join", DAVE);
    assert_eq!(
        room.try_send("evt-k1", BOB, types::MEMBER, Some(DAVE), member("leave")),
        Err(AuthError::InsufficientPower { needed: 50, has: 0 })
    );
    // A moderator cannot kick the owner, nor an equal.
    assert_eq!(
        room.try_send("evt-k2", CAROL, types::MEMBER, Some(ALICE), member("leave")),
        Err(AuthError::NotAboveTarget { has: 50, target: 100 })
    );
    room.send("evt-kick-dave", CAROL, types::MEMBER, Some(DAVE), member("leave"));
    assert_eq!(message(&mut room, "evt-m", DAVE), Err(AuthError::NotJoined));
    // Power held while out of the room does not count.
    room.send("evt-carol-leaves", CAROL, types::MEMBER, Some(CAROL), member("leave"));
    assert_eq!(room.try_send("evt-k3", CAROL, types::MEMBER, Some(BOB), member("leave")), Err(AuthError::NotJoined));
}

#[test]
fn bans_and_unbans_need_the_ban_level_and_a_level_above_the_target() {
    let mut room = room_with_moderator();
    assert_eq!(
        room.try_send("evt-b1", BOB, types::MEMBER, Some(CAROL), member("ban")),
        Err(AuthError::InsufficientPower { needed: 50, has: 0 })
    );
    assert_eq!(
        room.try_send("evt-b2", CAROL, types::MEMBER, Some(CAROL), member("ban")),
        Err(AuthError::NotAboveTarget { has: 50, target: 50 })
    );
    room.send("evt-ban-bob", CAROL, types::MEMBER, Some(BOB), member("ban"));
    // Unbanning is a leave over a ban, and needs the ban level, not the kick level.
    let mut pl = power_levels(&[(ALICE, 100), (CAROL, 50)]);
    pl["ban"] = json!(60);
    room.send("evt-pl-ban60", ALICE, types::POWER_LEVELS, Some(""), pl);
    assert_eq!(
        room.try_send("evt-unban1", CAROL, types::MEMBER, Some(BOB), member("leave")),
        Err(AuthError::InsufficientPower { needed: 60, has: 50 })
    );
    room.send("evt-unban", ALICE, types::MEMBER, Some(BOB), member("leave"));
    room.join("evt-bob-back", BOB);
}

#[test]
fn a_dm_seats_its_two_parties_and_has_no_moderation() {
    let mut room = dm();
    // The creator cannot write the other party's join: only the party can.
    assert_eq!(room.try_send("evt-j1", ALICE, types::MEMBER, Some(BOB), member("join")), Err(AuthError::NotForOthers));
    // The other party's seat waits for them: no invitation needed.
    room.join("evt-bob-join", BOB);
    room.send("evt-pl", ALICE, types::POWER_LEVELS, Some(""), power_levels(&[(ALICE, 100), (BOB, 100)]));
    room.send("evt-jr", ALICE, types::JOIN_RULES, Some(""), json!({"join_rule": "public"}));
    // Nobody else, even with a public join rule, even invited.
    assert_eq!(
        room.try_send("evt-j2", CAROL, types::MEMBER, Some(CAROL), member("join")),
        Err(AuthError::DmSeatsTaken)
    );
    assert_eq!(
        room.try_send("evt-i", ALICE, types::MEMBER, Some(CAROL), member("invite")),
        Err(AuthError::DmSeatsTaken)
    );
    assert_eq!(
        room.try_send("evt-k", ALICE, types::MEMBER, Some(BOB), member("leave")),
        Err(AuthError::DmNoModeration)
    );
    assert_eq!(room.try_send("evt-b", ALICE, types::MEMBER, Some(BOB), member("ban")), Err(AuthError::DmNoModeration));
    // A party leaves and comes back, or is invited back.
    room.send("evt-bob-leaves", BOB, types::MEMBER, Some(BOB), member("leave"));
    room.send("evt-bob-invited", ALICE, types::MEMBER, Some(BOB), member("invite"));
    room.join("evt-bob-back", BOB);
}

/// The creator's server's service participant, named by a DM's create event, takes a third
/// seat: it joins without an invitation and, at 100, can archive the DM; it is no party, so
/// the parties' seats stay theirs, and no other server can name one.
#[test]
fn a_dm_seats_the_service_participant_its_create_event_names() {
    const SERVICE: &str = "@_server:alpha.test";
    let parties = json!([ALICE, BOB]);
    let with = |service: serde_json::Value| {
        create_event(json!({"room_type": "dm", "dm_parties": parties, "dm_service": service}), |_| {})
    };
    assert_eq!(with(json!(SERVICE)), Ok(()));
    // Another server's participant, a party, or not an fqid: refused.
    for bad in [json!("@_server:beta.test"), json!(BOB), json!(ALICE), json!("_server"), json!(1)] {
        assert!(matches!(with(bad.clone()), Err(AuthError::Malformed(_))), "{bad}");
    }
    assert!(matches!(
        create_event(json!({"room_type": "group", "dm_service": SERVICE}), |_| {}),
        Err(AuthError::Malformed(_))
    ));

    let mut room = Room::created(
        ALICE,
        json!({"creator": ALICE, "room_type": "dm", "dm_parties": [ALICE, BOB], "dm_service": SERVICE}),
    );
    room.join("evt-alice-join", ALICE);
    room.join("evt-bob-join", BOB);
    room.join("evt-service-join", SERVICE);
    room.send(
        "evt-pl",
        ALICE,
        types::POWER_LEVELS,
        Some(""),
        power_levels(&[(ALICE, 100), (BOB, 100), (SERVICE, 100)]),
    );
    // Still no fourth seat, and no moderation through the service participant either.
    assert_eq!(room.try_send("evt-j", DAVE, types::MEMBER, Some(DAVE), member("join")), Err(AuthError::DmSeatsTaken));
    assert_eq!(
        room.try_send("evt-k", SERVICE, types::MEMBER, Some(BOB), member("leave")),
        Err(AuthError::DmNoModeration)
    );
    room.send("evt-archive", SERVICE, types::LIFECYCLE, Some(""), json!({"state": "archived"}));
    room.send("evt-restore", SERVICE, types::LIFECYCLE, Some(""), json!({"state": "open"}));
}

#[test]
fn other_events_need_a_joined_sender_with_the_level_for_the_type() {
    let mut room = room_with_moderator();
    assert_eq!(message(&mut room, "evt-m1", DAVE), Err(AuthError::NotJoined));
    message(&mut room, "evt-m2", BOB).unwrap();
    assert_eq!(
        room.try_send("evt-n1", BOB, types::NAME, Some(""), json!({"name": "x"})),
        Err(AuthError::InsufficientPower { needed: 50, has: 0 })
    );
    room.send("evt-n2", CAROL, types::NAME, Some(""), json!({"name": "x"}));
    // The events map overrides the defaults, for timeline events too.
    let mut pl = power_levels(&[(ALICE, 100), (CAROL, 50)]);
    pl["events"] = json!({"swp.room.topic": 0, "swp.room.message": 10});
    room.send("evt-pl-events", ALICE, types::POWER_LEVELS, Some(""), pl);
    room.send("evt-t", BOB, types::TOPIC, Some(""), json!({"topic": "t"}));
    assert_eq!(message(&mut room, "evt-m3", BOB), Err(AuthError::InsufficientPower { needed: 10, has: 0 }));
}

#[test]
fn before_power_levels_the_creator_has_100_and_others_0() {
    let mut room = Room::created(ALICE, json!({"creator": ALICE}));
    room.join("evt-alice-join", ALICE);
    room.send("evt-name", ALICE, types::NAME, Some(""), json!({"name": "x"}));
    room.send("evt-close", ALICE, types::LIFECYCLE, Some(""), json!({"state": "archived"}));
}

#[test]
fn a_state_key_naming_a_user_is_theirs_alone() {
    let mut room = room_with_moderator();
    let custom = "swp.room.custom";
    room.send("evt-own", CAROL, custom, Some(CAROL), json!({}));
    assert_eq!(room.try_send("evt-other", CAROL, custom, Some(BOB), json!({})), Err(AuthError::NotForOthers));
}

#[test]
fn power_level_changes_follow_the_matrix_rule() {
    let mut room = room_with_moderator();
    let change = |users: &[(&str, i64)]| power_levels(users);
    assert_eq!(
        room.try_send("evt-p1", CAROL, types::POWER_LEVELS, Some(""), change(&[(ALICE, 100), (CAROL, 50), (BOB, 51)])),
        Err(AuthError::InsufficientPower { needed: 51, has: 50 })
    );
    assert_eq!(
        room.try_send("evt-p2", CAROL, types::POWER_LEVELS, Some(""), change(&[(ALICE, 0), (CAROL, 50)])),
        Err(AuthError::NotAboveTarget { has: 50, target: 100 })
    );
    room.send("evt-p3", CAROL, types::POWER_LEVELS, Some(""), change(&[(ALICE, 100), (CAROL, 50), (BOB, 50)]));
    // Bob, now an equal, cannot be lowered by Carol; Carol can lower herself.
    assert_eq!(
        room.try_send("evt-p4", CAROL, types::POWER_LEVELS, Some(""), change(&[(ALICE, 100), (CAROL, 50)])),
        Err(AuthError::NotAboveTarget { has: 50, target: 50 })
    );
    room.send("evt-p5", CAROL, types::POWER_LEVELS, Some(""), change(&[(ALICE, 100), (CAROL, 0), (BOB, 50)]));
    assert!(matches!(
        room.try_send("evt-p6", ALICE, types::POWER_LEVELS, Some(""), json!({"users": {(ALICE): 101}})),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn lifecycle_needs_100_and_a_frozen_room_refuses_everything_else() {
    let mut room = room_with_moderator();
    assert_eq!(
        room.try_send("evt-a1", CAROL, types::LIFECYCLE, Some(""), json!({"state": "archived"})),
        Err(AuthError::InsufficientPower { needed: 100, has: 50 })
    );
    assert!(matches!(
        room.try_send("evt-a2", ALICE, types::LIFECYCLE, Some(""), json!({"state": "frozen"})),
        Err(AuthError::Malformed(_))
    ));
    room.send("evt-archive", ALICE, types::LIFECYCLE, Some(""), json!({"state": "archived"}));
    let archived = Err(AuthError::RoomFrozen { lifecycle: Lifecycle::Archived });
    assert_eq!(message(&mut room, "evt-m1", BOB), archived);
    assert_eq!(room.try_send("evt-l", BOB, types::MEMBER, Some(BOB), member("leave")), archived);
    assert_eq!(room.try_send("evt-n", CAROL, types::NAME, Some(""), json!({"name": "x"})), archived);
    assert_eq!(
        room.try_send("evt-a3", CAROL, types::LIFECYCLE, Some(""), json!({"state": "open"})),
        Err(AuthError::InsufficientPower { needed: 100, has: 50 })
    );
    room.send("evt-restore", ALICE, types::LIFECYCLE, Some(""), json!({"state": "open"}));
    message(&mut room, "evt-m2", BOB).unwrap();

    room.send("evt-close", ALICE, types::LIFECYCLE, Some(""), json!({"state": "closed"}));
    let closed = Err(AuthError::RoomFrozen { lifecycle: Lifecycle::Closed });
    assert_eq!(room.try_send("evt-reopen", ALICE, types::LIFECYCLE, Some(""), json!({"state": "open"})), closed);
    assert_eq!(message(&mut room, "evt-m3", ALICE), closed);
}

#[test]
fn a_redacted_lifecycle_event_reads_open() {
    let mut room = room_with_moderator();
    room.send("evt-open", ALICE, types::LIFECYCLE, Some(""), json!({"state": "open"}));
    let redacted = room.events.get_mut("evt-open").unwrap();
    redacted.content.clear();
    message(&mut room, "evt-m", BOB).unwrap();
}

/// A redacted state event means to the rules what it meant before: the version's redaction
/// table keeps every content key the rules read (else a redacted close would reopen a room on
/// the servers that saw the redaction, and only there).
#[test]
fn the_redaction_table_keeps_what_the_rules_read() {
    let read_by_rules: [(&str, &[&str]); 7] = [
        (types::MEMBER, &["membership"]),
        (
            types::POWER_LEVELS,
            &["users", "users_default", "events", "events_default", "state_default", "invite", "kick", "ban", "redact"],
        ),
        (types::JOIN_RULES, &["join_rule"]),
        (types::LIFECYCLE, &["state"]),
        (types::FEDERATION, &["enabled"]),
        (types::SERVER_ACL, &["allow", "deny"]),
        (types::REDACTION, &["redacts"]),
    ];
    let rules = RoomVersion::V1.redaction_rules();
    assert_eq!(crypto::kept_content_keys_with(rules, types::CREATE), crypto::KeptContent::All);
    for (event_type, keys) in read_by_rules {
        let crypto::KeptContent::Keys(kept) = crypto::kept_content_keys_with(rules, event_type) else {
            continue;
        };
        for key in keys {
            assert!(kept.contains(key), "{event_type} loses {key} when redacted");
        }
    }

    // And so a redacted close keeps the room closed.
    let mut room = room_with_moderator();
    room.send("evt-close", ALICE, types::LIFECYCLE, Some(""), json!({"state": "closed"}));
    let wire = json!({"event_type": types::LIFECYCLE, "content": room.events["evt-close"].content});
    let redacted = crypto::redact_with(rules, &wire).unwrap();
    let close = room.events.get_mut("evt-close").unwrap();
    close.content = redacted["content"].as_object().unwrap().clone();
    assert_eq!(message(&mut room, "evt-m", BOB), Err(AuthError::RoomFrozen { lifecycle: Lifecycle::Closed }));
}

#[test]
fn the_federation_switch_needs_100_and_a_boolean() {
    let mut room = room_with_moderator();
    assert_eq!(
        room.try_send("evt-f1", CAROL, types::FEDERATION, Some(""), json!({"enabled": true})),
        Err(AuthError::InsufficientPower { needed: 100, has: 50 })
    );
    assert!(matches!(
        room.try_send("evt-f2", ALICE, types::FEDERATION, Some(""), json!({"enabled": "yes"})),
        Err(AuthError::Malformed(_))
    ));
    room.send("evt-f3", ALICE, types::FEDERATION, Some(""), json!({"enabled": false}));
    // It gates transport, never acceptance.
    message(&mut room, "evt-m", BOB).unwrap();
}

#[test]
fn the_server_acl_refuses_denied_origins() {
    let mut room = room_with_moderator();
    assert_eq!(
        room.try_send("evt-acl1", CAROL, types::SERVER_ACL, Some(""), json!({"deny": ["beta.test"]})),
        Err(AuthError::InsufficientPower { needed: 100, has: 50 })
    );
    assert_eq!(
        room.try_send("evt-acl2", ALICE, types::SERVER_ACL, Some(""), json!({"deny": ["*.test"]})),
        Err(AuthError::AclDeniesSender)
    );
    assert_eq!(
        room.try_send("evt-acl3", ALICE, types::SERVER_ACL, Some(""), json!({"allow": []})),
        Err(AuthError::AclDeniesSender)
    );
    assert!(matches!(
        room.try_send("evt-acl4", ALICE, types::SERVER_ACL, Some(""), json!({"deny": "beta.test"})),
        Err(AuthError::Malformed(_))
    ));
    // A deny list alone leaves everyone else in.
    room.send("evt-acl", ALICE, types::SERVER_ACL, Some(""), json!({"deny": ["beta.*"]}));
    let denied = Err(AuthError::ServerDenied { origin: "beta.test".into() });
    assert_eq!(message(&mut room, "evt-m1", BOB), denied);
    assert_eq!(room.try_send("evt-l", BOB, types::MEMBER, Some(BOB), member("leave")), denied);
    message(&mut room, "evt-m2", CAROL).unwrap();
    // An allow list lets in only what it names.
    room.send("evt-acl-allow", ALICE, types::SERVER_ACL, Some(""), json!({"allow": ["alpha.test"]}));
    assert_eq!(message(&mut room, "evt-m3", CAROL), Err(AuthError::ServerDenied { origin: "gamma.test".into() }));
    message(&mut room, "evt-m4", DAVE).unwrap_err();
    room.join("evt-dave-join", DAVE);
    message(&mut room, "evt-m5", DAVE).unwrap();
}

#[test]
fn timeline_types_are_not_state_and_room_state_types_have_an_empty_key() {
    let mut room = room_with_moderator();
    for (event_type, state_key, content) in [
        (types::MESSAGE, Some(""), json!({})),
        (types::REDACTION, Some(""), json!({"redacts": "evt-m"})),
        (types::NAME, None, json!({"name": "x"})),
        (types::NAME, Some("x"), json!({"name": "x"})),
        (types::POWER_LEVELS, Some(ALICE), power_levels(&[(ALICE, 100)])),
        (types::REDACTION, None, json!({})),
        (types::REDACTION, None, json!({"redacts": "nope"})),
    ] {
        let result = room.try_send("evt-x", ALICE, event_type, state_key, content);
        assert!(matches!(result, Err(AuthError::Malformed(_))), "{event_type} {state_key:?}");
    }
    room.send("evt-redaction", BOB, types::REDACTION, None, json!({"redacts": "evt-bob-join"}));
}

#[test]
fn auth_types_are_what_the_rules_read() {
    let room = room_with_moderator();
    let base = [
        key(types::CREATE, ""),
        key(types::LIFECYCLE, ""),
        key(types::MEMBER, BOB),
        key(types::POWER_LEVELS, ""),
        key(types::SERVER_ACL, ""),
    ];
    let message = room.event("evt-m", BOB, types::MESSAGE, None, json!({}));
    assert_eq!(auth_types_for(&message), base.to_vec());
    let kick = room.event("evt-k", BOB, types::MEMBER, Some(CAROL), member("leave"));
    let mut want = base.to_vec();
    want.push(key(types::MEMBER, CAROL));
    want.sort();
    assert_eq!(auth_types_for(&kick), want);
    let invite = room.event("evt-i", BOB, types::MEMBER, Some(CAROL), member("invite"));
    want.push(key(types::JOIN_RULES, ""));
    want.sort();
    assert_eq!(auth_types_for(&invite), want);
    assert!(auth_types_for(&room.events[CREATE_ID]).is_empty());
}

#[test]
fn auth_state_from_the_events_own_auth_events() {
    let room = room_with_moderator();
    let kick = room.event("evt-k", CAROL, types::MEMBER, Some(BOB), member("leave"));
    let state = auth_state_from_auth_events(&kick, &room.events).unwrap();
    assert_eq!(state.len(), 4, "create, power levels, both members");
    auth::check(RoomVersion::V1, &kick, &state).unwrap();

    let mut missing = kick.clone();
    missing.auth_events.push("evt-unknown".into());
    assert_eq!(
        auth_state_from_auth_events(&missing, &room.events),
        Err(AuthError::MissingAuthEvent("evt-unknown".into()))
    );
    let mut unexpected = kick.clone();
    unexpected.auth_events.push("evt-jr0".into());
    assert_eq!(
        auth_state_from_auth_events(&unexpected, &room.events),
        Err(AuthError::UnexpectedAuthEvent("evt-jr0".into()))
    );
    let mut twice = kick.clone();
    twice.auth_events.push("evt-pl0".into());
    assert_eq!(auth_state_from_auth_events(&twice, &room.events), Err(AuthError::DuplicateAuthEvent));
    let mut events = room.events.clone();
    events.get_mut("evt-pl-mod").unwrap().room_id = "room-other".into();
    assert_eq!(auth_state_from_auth_events(&kick, &events), Err(AuthError::WrongRoom));
}

#[test]
fn the_room_version_comes_from_the_create_event() {
    let room = Room::group(ALICE, "public");
    assert_eq!(RoomVersion::of_create(&room.events[CREATE_ID]), Ok(RoomVersion::V1));
    assert_eq!(RoomVersion::parse("1"), Ok(RoomVersion::V1));
    assert!(RoomVersion::parse("11").is_err());
}
