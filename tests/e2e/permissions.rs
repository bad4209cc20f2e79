//! Who may do what to a room: a caller × endpoint table derived from the check order of
//! `docs/api.md` (visible → member → room type → power → open → capacity), run over a group
//! and a public room, plus frozen rooms, capacity, DM invariants and server admins.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::harness::{RawBody, Resp, Server, User};

/// What a cell of the table expects: any 2xx, or an exact status and `SW_` code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Success,
    Fail(u16, &'static str),
}

const OK: Want = Want::Success;
/// Not visible to the caller.
const NF: Want = Want::Fail(404, "SW_ROOM_NOT_FOUND");
/// Visible, but not joined.
const NM: Want = Want::Fail(403, "SW_NOT_MEMBER");
/// Banned, or joined without the power.
const FB: Want = Want::Fail(403, "SW_ROOM_FORBIDDEN");
/// No token.
const AU: Want = Want::Fail(401, "SW_AUTH_INVALID_TOKEN");
/// A well-formed event id that is not in the room.
const EV: Want = Want::Fail(404, "SW_EVENT_NOT_FOUND");
const FROZEN: Want = Want::Fail(409, "SW_ROOM_FROZEN");
const DM_INVARIANT: Want = Want::Fail(400, "SW_ROOM_TYPE_INVARIANT");
/// The last owner (100) leaving members behind.
const LO: Want = Want::Fail(409, "SW_ROOM_LAST_OWNER");

const UNKNOWN_EVENT: &str = "evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Creator,
    Moderator,
    Member,
    Outsider,
    Banned,
    OtherTenant,
    Anonymous,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    GetRoom,
    Members,
    Join,
    Leave,
    Invite,
    Kick,
    Ban,
    Unban,
    Rename,
    Topic,
    Workspace,
    Close,
    Archive,
    Rejoin,
    NotificationMode,
    Mute,
    Read,
    Power,
    /// Set the banned participant's level: members who are out keep a level, so it can be set.
    PowerOfBanned,
    /// Send as the member (power 0).
    SendAs,
    /// Send as the creator: nobody is above the creator, the creator least of all.
    SendAsCreator,
}

/// Columns: creator (100), moderator (50), member (0, also the target of kick/ban/power, so
/// those are self-targeted in its column), outsider of a GROUP room, outsider of a PUBLIC room,
/// banned, other tenant, no token. Only the outsider differs between the two room types: a
/// public room of one's tenant is visible, a group room is not; other tenants see neither.
#[rustfmt::skip]
const TABLE: &[(Op, [Want; 8])] = &[
    //                       creator mod  member out/grp out/pub banned other anon
    (Op::GetRoom,          [OK,     OK,  OK,    NF,     OK,     FB,    NF,   AU]),
    (Op::Members,          [OK,     OK,  OK,    NF,     NM,     FB,    NF,   AU]),
    // Joining again answers 200 unchanged; public rooms are joinable by their tenant.
    (Op::Join,             [OK,     OK,  OK,    NF,     OK,     FB,    NF,   AU]),
    // The creator is the room's only owner, and others are joined.
    (Op::Leave,            [LO,     OK,  OK,    NF,     NM,     FB,    NF,   AU]),
    // Invite needs level 0 only.
    (Op::Invite,           [OK,     OK,  OK,    NF,     NM,     FB,    NF,   AU]),
    // The member kicks or bans itself: nobody is strictly above themselves (403).
    (Op::Kick,             [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::Ban,              [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::Unban,            [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::Rename,           [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::Topic,            [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    // Owner operations: the creator, a joined member at 100, or a server admin.
    (Op::Workspace,        [OK,     FB,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::Close,            [OK,     FB,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::Archive,          [OK,     FB,  FB,    NF,     NM,     FB,    NF,   AU]),
    // Restoring an open room answers 200 unchanged.
    (Op::Rejoin,           [OK,     FB,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::NotificationMode, [OK,     OK,  OK,    NF,     NM,     FB,    NF,   AU]),
    (Op::Mute,             [OK,     OK,  OK,    NF,     NM,     FB,    NF,   AU]),
    (Op::Read,             [EV,     EV,  EV,    NF,     NM,     FB,    NF,   AU]),
    // Member sets itself to 10: needs ≥ 50 first.
    (Op::Power,            [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    // The banned participant (0) is set to 10 while out.
    (Op::PowerOfBanned,    [OK,     OK,  FB,    NF,     NM,     FB,    NF,   AU]),
    // Sending on behalf needs 100 and a joined target strictly below the caller.
    (Op::SendAs,           [OK,     FB,  FB,    NF,     NM,     FB,    NF,   AU]),
    (Op::SendAsCreator,    [FB,     FB,  FB,    NF,     NM,     FB,    NF,   AU]),
];

fn column(role: Role, room_type: &str) -> usize {
    match role {
        Role::Creator => 0,
        Role::Moderator => 1,
        Role::Member => 2,
        Role::Outsider if room_type == "public" => 4,
        Role::Outsider => 3,
        Role::Banned => 5,
        Role::OtherTenant => 6,
        Role::Anonymous => 7,
    }
}

const ROLES: [Role; 7] =
    [Role::Creator, Role::Moderator, Role::Member, Role::Outsider, Role::Banned, Role::OtherTenant, Role::Anonymous];

/// Everyone the table needs; `invitee` is never in any room, so it is a fresh invite target.
struct Cast {
    creator: User,
    moderator: User,
    member: User,
    outsider: User,
    banned: User,
    other: User,
    invitee: User,
}

impl Cast {
    async fn new(s: &Server) -> Cast {
        s.create_tenant("other", &[]);
        Cast {
            creator: s.register("creator").await,
            moderator: s.register("moderator").await,
            member: s.register("member").await,
            outsider: s.register("outsider").await,
            banned: s.register("banned").await,
            other: s.register_in("stranger", Some("other")).await,
            invitee: s.register("invitee").await,
        }
    }

    fn user(&self, role: Role) -> Option<&User> {
        match role {
            Role::Creator => Some(&self.creator),
            Role::Moderator => Some(&self.moderator),
            Role::Member => Some(&self.member),
            Role::Outsider => Some(&self.outsider),
            Role::Banned => Some(&self.banned),
            Role::OtherTenant => Some(&self.other),
            Role::Anonymous => None,
        }
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A fresh room: the creator, a moderator at 50, a member at 0, and a banned participant.
async fn setup_room(s: &Server, c: &Cast, room_type: &str, label: &str) -> String {
    let room = s.create_room(&c.creator, room_type, label).await;
    for u in [&c.moderator, &c.member, &c.banned] {
        if room_type != "public" {
            s.post(&format!("/v1/rooms/{room}/invite"), Some(&c.creator.token), json!({"participant_id": u.id}))
                .await
                .ok();
        }
        s.post(&format!("/v1/rooms/{room}/join"), Some(&u.token), json!({})).await.ok();
    }
    s.set_power(&room, &c.creator, &c.moderator, 50).await;
    s.post(&format!("/v1/rooms/{room}/ban"), Some(&c.creator.token), json!({"participant_id": c.banned.id})).await.ok();
    room
}

/// The request `op` makes in `room` on behalf of `caller` (`None`: no token).
fn request(op: Op, room: &str, c: &Cast, caller: Option<&User>) -> (Method, String, Value) {
    let r = format!("/v1/rooms/{room}");
    let ws = caller.unwrap_or(&c.creator).workspace_id.clone();
    match op {
        Op::GetRoom => (Method::GET, r, Value::Null),
        Op::Members => (Method::GET, format!("{r}/members"), Value::Null),
        Op::Join => (Method::POST, format!("{r}/join"), json!({})),
        Op::Leave => (Method::POST, format!("{r}/leave"), json!({})),
        Op::Invite => (Method::POST, format!("{r}/invite"), json!({"participant_id": c.invitee.id})),
        Op::Kick => (Method::POST, format!("{r}/kick"), json!({"participant_id": c.member.id})),
        Op::Ban => (Method::POST, format!("{r}/ban"), json!({"participant_id": c.member.id, "reason": "spam"})),
        Op::Unban => (Method::POST, format!("{r}/unban"), json!({"participant_id": c.banned.id})),
        Op::Rename => (Method::PUT, format!("{r}/name"), json!({"name": "Renamed"})),
        Op::Topic => (Method::PUT, format!("{r}/topic"), json!({"topic": "a new topic"})),
        Op::Workspace => (Method::PUT, format!("{r}/workspace"), json!({"workspace_id": ws})),
        Op::Close => (Method::POST, format!("{r}/close"), json!({})),
        Op::Archive => (Method::POST, format!("{r}/archive"), json!({})),
        Op::Rejoin => (Method::POST, format!("{r}/rejoin"), json!({})),
        Op::NotificationMode => (Method::PUT, format!("{r}/notification-mode"), json!({"mode": "mentions"})),
        Op::Mute => (Method::PUT, format!("{r}/mute"), json!({"until": now() + 3600})),
        Op::Read => (Method::PUT, format!("{r}/read"), json!({"event_id": UNKNOWN_EVENT})),
        Op::Power => (Method::PUT, format!("{r}/members/{}/power-level", c.member.id), json!({"power_level": 10})),
        Op::PowerOfBanned => {
            (Method::PUT, format!("{r}/members/{}/power-level", c.banned.id), json!({"power_level": 10}))
        }
        Op::SendAs => (Method::POST, format!("{r}/send"), send_as(&c.member)),
        Op::SendAsCreator => (Method::POST, format!("{r}/send"), send_as(&c.creator)),
    }
}

fn send_as(who: &User) -> Value {
    json!({"content": {"msgtype": "swp.text", "body": "on behalf"}, "as_participant_id": who.id})
}

async fn send(s: &Server, op: Op, room: &str, c: &Cast, caller: Option<&User>) -> Resp {
    let (method, path, body) = request(op, room, c, caller);
    let body = (!body.is_null()).then_some(RawBody::Json(body));
    s.raw(method, &path, caller.map(|u| u.token.as_str()), body).await
}

/// `None` when `resp` is what `want` says, else a line describing the mismatch.
fn mismatch(what: &str, want: Want, resp: &Resp) -> Option<String> {
    let fine = match want {
        Want::Success => (200..300).contains(&resp.status),
        Want::Fail(status, code) => resp.status == status && resp.code() == code,
    };
    (!fine).then(|| format!("{what}: expected {want:?}, got {} {}", resp.status, resp.body))
}

#[track_caller]
fn check(what: &str, want: Want, resp: &Resp) {
    if let Some(m) = mismatch(what, want, resp) {
        panic!("{m}");
    }
}

#[tokio::test]
async fn caller_by_endpoint_table_over_group_and_public_rooms() {
    // The creator makes a room per cell, far beyond the default room-creation burst.
    let s =
        Arc::new(Server::start_with_env(&[("HOMESERVER_LIMITS__ROOM_CREATION_PER_PARTICIPANT__BURST", "1000")]).await);
    let cast = Arc::new(Cast::new(&s).await);
    let limit = Arc::new(Semaphore::new(6));
    let mut tasks = JoinSet::new();
    let mut n = 0;
    for room_type in ["group", "public"] {
        for &(op, row) in TABLE {
            for role in ROLES {
                n += 1;
                let want = row[column(role, room_type)];
                let (s, cast, limit) = (s.clone(), cast.clone(), limit.clone());
                tasks.spawn(async move {
                    let _permit = limit.acquire_owned().await.unwrap();
                    let room = setup_room(&s, &cast, room_type, &format!("perm {room_type} {n}")).await;
                    let resp = send(&s, op, &room, &cast, cast.user(role)).await;
                    mismatch(&format!("{room_type} room, {op:?} as {role:?}"), want, &resp)
                });
            }
        }
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.expect("case task"));
    }
    failures.sort();
    assert!(failures.is_empty(), "{} of {n} cells disagree with docs/api.md:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn frozen_rooms_refuse_writes_but_keep_reads_and_personal_settings() {
    let s = Server::start().await;
    let c = Cast {
        creator: s.register("creator").await,
        moderator: s.register("moderator").await,
        member: s.register("member").await,
        outsider: s.register("outsider").await,
        banned: s.register("banned").await,
        other: s.register("pending").await,
        invitee: s.register("invitee").await,
    };
    let room = setup_room(&s, &c, "group", "frozen").await;
    let r = format!("/v1/rooms/{room}");
    // `other` holds a pending invitation, to try joining a frozen room.
    s.post(&format!("{r}/invite"), Some(&c.creator.token), json!({"participant_id": c.other.id})).await.ok();
    let creator = Some(&c.creator);

    let writes =
        [Op::Invite, Op::Kick, Op::Ban, Op::Unban, Op::Rename, Op::Topic, Op::Power, Op::PowerOfBanned, Op::Leave];
    let frozen_checks = |state: &'static str| {
        let (s, c, r, room) = (&s, &c, r.clone(), room.clone());
        async move {
            for op in writes {
                check(&format!("{state}: {op:?} by the creator"), FROZEN, &send(s, op, &room, c, creator).await);
            }
            check(&format!("{state}: member leaves"), FROZEN, &send(s, Op::Leave, &room, c, Some(&c.member)).await);
            check(
                &format!("{state}: pending invitee joins"),
                FROZEN,
                &send(s, Op::Join, &room, c, Some(&c.other)).await,
            );
            // Check order: power (step 4) before open (step 5); visibility first of all.
            check(&format!("{state}: member renames"), FB, &send(s, Op::Rename, &room, c, Some(&c.member)).await);
            check(
                &format!("{state}: moderator renames"),
                FROZEN,
                &send(s, Op::Rename, &room, c, Some(&c.moderator)).await,
            );
            check(&format!("{state}: outsider"), NF, &send(s, Op::Rename, &room, c, Some(&c.outsider)).await);
            // Reads and one's own settings still work; moving between workspaces is allowed.
            for who in [&c.creator, &c.member] {
                let got = s.get(&r, Some(&who.token)).await;
                assert_eq!(got.ok()["state"], state, "{}", got.body);
                for op in [Op::Members, Op::NotificationMode, Op::Mute] {
                    check(&format!("{state}: {op:?} by {}", who.name), OK, &send(s, op, &room, c, Some(who)).await);
                }
                check(&format!("{state}: read by {}", who.name), EV, &send(s, Op::Read, &room, c, Some(who)).await);
            }
            check(&format!("{state}: workspace move"), OK, &send(s, Op::Workspace, &room, c, creator).await);
            let members = s.get(&format!("{r}/members"), Some(&c.member.token)).await;
            assert_eq!(members.ok().as_array().unwrap().len(), 4, "nothing changed: {}", members.body);
        }
    };

    // open → archived; archiving again answers 200 unchanged.
    assert_eq!(
        s.post(&format!("{r}/archive"), creator.map(|u| u.token.as_str()), json!({})).await.ok()["state"],
        "archived"
    );
    assert_eq!(s.post(&format!("{r}/archive"), Some(&c.creator.token), json!({})).await.ok()["state"], "archived");
    frozen_checks("archived").await;
    let archived = s.get("/v1/rooms/archived", Some(&c.member.token)).await;
    assert!(archived.ok().as_array().unwrap().iter().any(|x| x["id"] == room), "{}", archived.body);

    // rejoin restores: writes work again.
    assert_eq!(s.post(&format!("{r}/rejoin"), Some(&c.creator.token), json!({})).await.ok()["state"], "open");
    check("restored: rename", OK, &send(&s, Op::Rename, &room, &c, creator).await);
    check("restored: pending invitee joins", OK, &send(&s, Op::Join, &room, &c, Some(&c.other)).await);
    s.post(&format!("{r}/kick"), Some(&c.creator.token), json!({"participant_id": c.other.id})).await.ok();
    s.post(&format!("{r}/invite"), Some(&c.creator.token), json!({"participant_id": c.other.id})).await.ok();

    // archived → closed is allowed; closed is final.
    s.post(&format!("{r}/archive"), Some(&c.creator.token), json!({})).await.ok();
    assert_eq!(s.post(&format!("{r}/close"), Some(&c.creator.token), json!({})).await.ok()["state"], "closed");
    frozen_checks("closed").await;
    for op in [Op::Close, Op::Archive, Op::Rejoin] {
        check(&format!("closed: {op:?}"), FROZEN, &send(&s, op, &room, &c, creator).await);
    }

    // open → closed directly, then nothing brings it back.
    let other = s.create_room(&c.creator, "public", "closed directly").await;
    check("open → closed", OK, &send(&s, Op::Close, &other, &c, creator).await);
    check("closed → rejoin", FROZEN, &send(&s, Op::Rejoin, &other, &c, creator).await);
    check("closed public room: join", FROZEN, &send(&s, Op::Join, &other, &c, Some(&c.outsider)).await);
    assert_eq!(s.get(&format!("/v1/rooms/{other}"), Some(&c.outsider.token)).await.ok()["state"], "closed");
}

#[tokio::test]
async fn tenant_capacity_bounds_invites_and_joins() {
    let s = Server::start().await;
    s.create_tenant("tiny", &["--max-participants", "2"]);
    let a = s.register_in("tiny-a", Some("tiny")).await;
    let b = s.register_in("tiny-b", Some("tiny")).await;
    let c = s.register_in("tiny-c", Some("tiny")).await;
    let invite = |room: &str, who: &User| {
        let (path, id) = (format!("/v1/rooms/{room}/invite"), who.id.clone());
        let token = a.token.clone();
        let s = &s;
        async move { s.post(&path, Some(&token), json!({"participant_id": id})).await }
    };
    let join = |room: &str, who: &User| {
        let (path, token) = (format!("/v1/rooms/{room}/join"), who.token.clone());
        let s = &s;
        async move { s.post(&path, Some(&token), json!({})).await }
    };

    // Group room: invites count joined plus invited members.
    let group = s.create_room(&a, "group", "tiny group").await;
    invite(&group, &b).await.ok();
    invite(&group, &c).await.expect(409, "SW_ROOM_CAPACITY");
    join(&group, &b).await.ok();
    invite(&group, &c).await.expect(409, "SW_ROOM_CAPACITY");
    join(&group, &c).await.expect(404, "SW_ROOM_NOT_FOUND");

    // Public room: joins count joined members.
    let public = s.create_room(&a, "public", "tiny public").await;
    join(&public, &b).await.ok();
    join(&public, &c).await.expect(409, "SW_ROOM_CAPACITY");
    invite(&public, &c).await.expect(409, "SW_ROOM_CAPACITY");
    // Re-joining is not a new seat.
    join(&public, &b).await.ok();
    // A seat freed by leaving can be taken.
    s.post(&format!("/v1/rooms/{public}/leave"), Some(&b.token), json!({})).await.ok();
    join(&public, &c).await.ok();
    let members = s.get(&format!("/v1/rooms/{public}/members"), Some(&a.token)).await;
    assert_eq!(members.ok().as_array().unwrap().len(), 2, "{}", members.body);
}

#[tokio::test]
async fn direct_messages_keep_their_invariants() {
    let s = Server::start().await;
    s.create_tenant("other", &[]);
    let a = s.register("dm-a").await;
    let b = s.register("dm-b").await;
    let third = s.register("dm-third").await;
    let far = s.register_in("dm-far", Some("other")).await;

    let first = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    first.expect(201, "");
    let dm = first.data()["id"].as_str().unwrap().to_string();
    assert_eq!(first.data()["room_type"], "dm");
    assert_eq!(first.data()["room_alias"], Value::Null);
    let again = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    again.expect(200, "");
    assert_eq!(again.data()["id"], dm.as_str());
    let reverse = s.post("/v1/rooms/dm", Some(&b.token), json!({"fqid": a.fqid})).await;
    reverse.expect(200, "");
    assert_eq!(reverse.data()["id"], dm.as_str());
    // Both sides hold 100.
    assert_eq!(s.get(&format!("/v1/rooms/{dm}"), Some(&b.token)).await.ok()["power_level"], 100);

    let r = format!("/v1/rooms/{dm}");
    let target = |u: &User| json!({"participant_id": u.id});
    let cases = [
        (Method::POST, format!("{r}/invite"), target(&third)),
        (Method::POST, format!("{r}/invitations"), json!({"fqid": third.fqid})),
        (Method::POST, format!("{r}/kick"), target(&b)),
        (Method::POST, format!("{r}/ban"), target(&b)),
        (Method::POST, format!("{r}/ban"), target(&third)),
        (Method::POST, format!("{r}/unban"), target(&b)),
        (Method::PUT, format!("{r}/name"), json!({"name": "not a dm"})),
        (Method::PUT, format!("{r}/members/{}/power-level", b.id), json!({"power_level": 50})),
        // Both sides hold 100, so sending on behalf would let either speak as the other.
        (Method::POST, format!("{r}/send"), send_as(&b)),
    ];
    for (method, path, body) in cases {
        let resp = s.raw(method.clone(), &path, Some(&a.token), Some(RawBody::Json(body))).await;
        check(&format!("DM: {method} {path}"), DM_INVARIANT, &resp);
    }
    // A third party cannot learn the DM exists.
    let c = Cast {
        creator: a.clone(),
        moderator: a.clone(),
        member: b.clone(),
        outsider: third.clone(),
        banned: third.clone(),
        other: third.clone(),
        invitee: third.clone(),
    };
    for op in [Op::GetRoom, Op::Members, Op::Join, Op::Leave, Op::Rename, Op::Mute] {
        check(&format!("DM third party: {op:?}"), NF, &send(&s, op, &dm, &c, Some(&third)).await);
    }
    // A DM with oneself is refused; DMs may cross tenants.
    s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": a.id})).await.expect(400, "SW_ROOM_TYPE_INVARIANT");
    s.post("/v1/rooms/dm", Some(&a.token), json!({"fqid": far.fqid})).await.expect(201, "");

    // A side that left is re-joined by the next POST /v1/rooms/dm, which answers 200 and the same room.
    s.post(&format!("{r}/leave"), Some(&b.token), json!({})).await.ok();
    let back = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    back.expect(200, "");
    assert_eq!(back.data()["id"], dm.as_str());
    let me = s.get(&r, Some(&b.token)).await;
    assert_eq!(me.ok()["membership"], "join", "{}", me.body);
}

#[tokio::test]
async fn a_server_admin_can_close_and_archive_rooms_they_are_not_in() {
    let s = Server::start().await;
    let root = s.server_admin("root").await;
    let alice = s.register("alice").await;
    let mallory = s.register("mallory").await;
    let archived = s.create_room(&alice, "group", "to archive").await;
    let closed = s.create_room(&alice, "incognito", "to close").await;

    // A plain outsider cannot even see these rooms.
    s.post(&format!("/v1/rooms/{closed}/close"), Some(&mallory.token), json!({}))
        .await
        .expect(404, "SW_ROOM_NOT_FOUND");

    let seen = s.get(&format!("/v1/rooms/{archived}"), Some(&root)).await;
    assert_eq!(seen.ok()["membership"], Value::Null, "{}", seen.body);
    let a = s.post(&format!("/v1/rooms/{archived}/archive"), Some(&root), json!({})).await;
    assert_eq!(a.ok()["state"], "archived", "{}", a.body);
    let back = s.post(&format!("/v1/rooms/{archived}/rejoin"), Some(&root), json!({})).await;
    assert_eq!(back.ok()["state"], "open", "{}", back.body);
    let c = s.post(&format!("/v1/rooms/{closed}/close"), Some(&root), json!({})).await;
    assert_eq!(c.ok()["state"], "closed", "{}", c.body);
    assert_eq!(s.get(&format!("/v1/rooms/{closed}"), Some(&alice.token)).await.ok()["state"], "closed");
    // Being an admin is not being a member: member-only operations still say so.
    s.put(&format!("/v1/rooms/{archived}/name"), Some(&root), json!({"name": "mine"}))
        .await
        .expect(403, "SW_NOT_MEMBER");
}

/// A DM's membership is its two participants, for everyone: a server admin sees it and keeps
/// the owner tools, but never takes a seat in it, by joining or by being invited.
#[tokio::test]
async fn a_server_admin_cannot_take_a_seat_in_a_dm() {
    let s = Server::start().await;
    let root_token = s.server_admin("root").await;
    let root_id = s.get("/v1/auth/whoami", Some(&root_token)).await.ok()["participant_id"].clone();
    let a = s.register("dm-a").await;
    let b = s.register("dm-b").await;
    let dm = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await.ok()["id"].clone();
    let r = format!("/v1/rooms/{}", dm.as_str().unwrap());

    // The admin sees the DM, but joining it is against its type.
    assert_eq!(s.get(&r, Some(&root_token)).await.ok()["room_type"], "dm");
    let join = s.post(&format!("{r}/join"), Some(&root_token), json!({})).await;
    check("admin joins a DM", DM_INVARIANT, &join);
    // Neither side can bring the admin in either.
    let invite = s.post(&format!("{r}/invite"), Some(&a.token), json!({"participant_id": root_id})).await;
    check("DM side invites the admin", DM_INVARIANT, &invite);
    let members = s.get(&format!("{r}/members"), Some(&a.token)).await;
    let ids: Vec<&str> =
        members.ok().as_array().unwrap().iter().map(|m| m["participant_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "still two members: {}", members.body);
    assert!(!ids.contains(&root_id.as_str().unwrap()));
    let room = s.get(&r, Some(&root_token)).await;
    assert_eq!(room.ok()["membership"], Value::Null, "{}", room.body);
    assert_eq!(room.ok()["members_count"], 2, "{}", room.body);
    // Not a member, so not a writer either.
    s.post(&format!("{r}/send"), Some(&root_token), json!({"content": {"msgtype": "swp.text", "body": "hi"}}))
        .await
        .expect(403, "SW_NOT_MEMBER");

    // The two sides leave and come back; the admin still cannot take a freed seat.
    s.post(&format!("{r}/leave"), Some(&b.token), json!({})).await.ok();
    check(
        "admin joins a half-empty DM",
        DM_INVARIANT,
        &s.post(&format!("{r}/join"), Some(&root_token), json!({})).await,
    );
    s.post(&format!("{r}/join"), Some(&b.token), json!({})).await.ok();
    // The admin's moderation tools still work on the DM.
    let archived = s.post(&format!("{r}/archive"), Some(&root_token), json!({})).await;
    assert_eq!(archived.ok()["state"], "archived", "{}", archived.body);
}

/// Power held while out is kept for a re-join, so it can be set while out: an owner lowers a
/// kicked moderator, who comes back at the lowered level and cannot moderate.
#[tokio::test]
async fn a_kicked_moderator_comes_back_at_the_level_set_while_out() {
    let s = Server::start().await;
    let owner = s.register("owner").await;
    let moderator = s.register("moderator").await;
    let member = s.register("member").await;
    let stranger = s.register("stranger").await;
    let room = s.team_room(&owner, &[&moderator, &member]).await;
    s.set_power(&room, &owner, &moderator, 50).await;
    let r = format!("/v1/rooms/{room}");
    let power = |by: &User, who: &User, level: i64| {
        let (path, token) = (format!("{r}/members/{}/power-level", who.id), by.token.clone());
        let s = &s;
        async move { s.put(&path, Some(&token), json!({"power_level": level})).await }
    };

    s.post(&format!("{r}/kick"), Some(&owner.token), json!({"participant_id": moderator.id})).await.ok();
    // The same rules as for members: a moderator (50) cannot lower another 50, nobody grants
    // above their own level, and someone never in the room is not found.
    s.set_power(&room, &owner, &member, 50).await;
    power(&member, &moderator, 0).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.set_power(&room, &owner, &member, 0).await;
    power(&owner, &stranger, 0).await.expect(404, "SW_PARTICIPANT_NOT_FOUND");
    let lowered = power(&owner, &moderator, 0).await;
    assert_eq!(lowered.ok()["power_level"], 0, "{}", lowered.body);
    assert_eq!(lowered.ok()["membership"], "leave", "{}", lowered.body);
    let left = s.get(&format!("{r}/members?membership=leave"), Some(&owner.token)).await;
    let row = left.ok().as_array().unwrap().iter().find(|m| m["participant_id"] == moderator.id.as_str()).cloned();
    assert_eq!(row.expect("the kicked moderator is listed")["power_level"], 0);

    // Back in: at 0, so no kicking.
    s.add_member(&room, &owner, &moderator).await;
    let me = s.get(&r, Some(&moderator.token)).await;
    assert_eq!((me.ok()["membership"].clone(), me.ok()["power_level"].clone()), (json!("join"), json!(0)));
    s.post(&format!("{r}/kick"), Some(&moderator.token), json!({"participant_id": member.id}))
        .await
        .expect(403, "SW_ROOM_FORBIDDEN");

    // A banned member's level can be set too, and is kept through unban and re-join.
    s.set_power(&room, &owner, &member, 50).await;
    s.post(&format!("{r}/ban"), Some(&owner.token), json!({"participant_id": member.id})).await.ok();
    assert_eq!(power(&owner, &member, 10).await.ok()["power_level"], 10);
    s.post(&format!("{r}/unban"), Some(&owner.token), json!({"participant_id": member.id})).await.ok();
    s.add_member(&room, &owner, &member).await;
    assert_eq!(s.get(&r, Some(&member.token)).await.ok()["power_level"], 10);
}

/// The last owner (100) cannot leave members behind (409 `SW_ROOM_LAST_OWNER`); another owner,
/// or an empty room, lets them go. The server's service participant, at 100 in every room this
/// server creates, counts neither as an owner nor as a member.
#[tokio::test]
async fn the_last_owner_cannot_leave_members_behind() {
    let s = Server::start().await;
    let owner = s.register("owner").await;
    let member = s.register("member").await;
    let room = s.team_room(&owner, &[&member]).await;
    let r = format!("/v1/rooms/{room}");
    s.post(&format!("{r}/leave"), Some(&owner.token), json!({})).await.expect(409, "SW_ROOM_LAST_OWNER");
    // A second owner frees the first.
    s.set_power(&room, &owner, &member, 100).await;
    s.post(&format!("{r}/leave"), Some(&owner.token), json!({})).await.ok();

    // Alone in a room (the service participant aside), the owner may leave.
    let solo = s.create_room(&owner, "group", "solo").await;
    s.post(&format!("/v1/rooms/{solo}/leave"), Some(&owner.token), json!({})).await.ok();

    // Once the others have gone, the owner may go too; a DM has two owners.
    let third = s.team_room(&owner, &[&member]).await;
    s.post(&format!("/v1/rooms/{third}/leave"), Some(&member.token), json!({})).await.ok();
    s.post(&format!("/v1/rooms/{third}/leave"), Some(&owner.token), json!({})).await.ok();
    let dm = s.post("/v1/rooms/dm", Some(&owner.token), json!({"participant_id": member.id})).await;
    let dm = dm.ok()["id"].as_str().unwrap().to_string();
    s.post(&format!("/v1/rooms/{dm}/leave"), Some(&owner.token), json!({})).await.ok();
}

/// The service participant is not a person: no member list, count or search shows it, and
/// nobody can register its name.
#[tokio::test]
async fn the_service_participant_stays_out_of_sight() {
    let s = Server::start().await;
    let owner = s.register("owner").await;
    let member = s.register("member").await;
    let room = s.team_room(&owner, &[&member]).await;
    let r = format!("/v1/rooms/{room}");
    let members = s.get(&format!("{r}/members"), Some(&owner.token)).await;
    let fqids: Vec<&str> = members.ok().as_array().unwrap().iter().map(|m| m["fqid"].as_str().unwrap_or("")).collect();
    assert_eq!(members.ok().as_array().unwrap().len(), 2, "{}", members.body);
    assert!(fqids.iter().all(|f| !f.starts_with("@_")), "{fqids:?}");
    assert_eq!(s.get(&r, Some(&owner.token)).await.ok()["members_count"], 2);
    let taken = s.post("/v1/auth/register", None, json!({"username": "_server", "password": "password123"})).await;
    assert_eq!(taken.status, 400, "{}", taken.body);
    // Nobody invites, kicks or bans it, or opens a DM with it.
    let service = format!("@_server:{}", owner.fqid.split_once(':').unwrap().1);
    s.post(&format!("{r}/invitations"), Some(&owner.token), json!({"fqid": service}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
    for op in ["kick", "ban"] {
        s.post(&format!("{r}/{op}"), Some(&owner.token), json!({"fqid": service}))
            .await
            .expect(404, "SW_PARTICIPANT_NOT_FOUND");
    }
    s.post("/v1/rooms/dm", Some(&owner.token), json!({"fqid": service})).await.expect(404, "SW_PARTICIPANT_NOT_FOUND");
}
