//! The Rooms API end to end: creation, DMs, directory, members, membership flows, metadata,
//! lifecycle, personal settings, power levels, and persistence across restarts.

use serde_json::{Value, json};

use crate::harness::Server;

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn create_room_answers_the_documented_room() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let r = s
        .post(
            "/v1/rooms",
            Some(&a.token),
            json!({"room_type": "group", "name": "Engineering", "topic": "All things eng", "is_public": false, "scope_kind": null}),
        )
        .await;
    r.expect(201, "");
    let room = r.data();
    assert!(room["id"].as_str().unwrap().starts_with("room-"));
    assert_eq!(room["room_alias"], "#engineering:localhost");
    assert_eq!(room["room_type"], "group");
    assert_eq!(room["name"], "Engineering");
    assert_eq!(room["topic"], "All things eng");
    assert_eq!(room["is_public"], false);
    assert_eq!(room["workspace_id"], a.workspace_id.as_str());
    assert_eq!(room["creator_id"], a.id.as_str());
    assert_eq!(room["members_count"], 1);
    assert_eq!(room["state"], "open");
    assert_eq!(room["federated"], false);
    assert_eq!(room["membership"], "join");
    assert_eq!(room["power_level"], 100);
    assert!(room["created_at"].as_str().unwrap().ends_with('Z'));

    // A second room of the same name gets a numbered alias.
    let again = s.post("/v1/rooms", Some(&a.token), json!({"name": "Engineering"})).await;
    assert_eq!(again.ok()["room_alias"], "#engineering-2:localhost");
    assert_eq!(again.ok()["room_type"], "group");

    let public = s.post("/v1/rooms", Some(&a.token), json!({"is_public": true, "name": "Lobby"})).await;
    assert_eq!(public.ok()["room_type"], "public");
    assert_eq!(public.ok()["is_public"], true);
    let incognito = s.post("/v1/rooms", Some(&a.token), json!({"scope_kind": "incognito"})).await;
    assert_eq!(incognito.ok()["room_type"], "incognito");

    let ws = s.post("/v1/workspaces", Some(&a.token), json!({"name": "Side project"})).await;
    let ws_id = ws.ok()["id"].as_str().unwrap().to_string();
    let in_ws = s.post("/v1/rooms", Some(&a.token), json!({"name": "x", "workspace_id": ws_id})).await;
    assert_eq!(in_ws.ok()["workspace_id"], ws_id.as_str());
}

#[tokio::test]
async fn create_room_enforces_type_invariants() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let t = Some(a.token.as_str());
    s.post("/v1/rooms", t, json!({"room_type": "dm", "name": "x"})).await.expect(400, "SW_ROOM_TYPE_INVARIANT");
    s.post("/v1/rooms", t, json!({"room_type": "public", "name": "x", "is_public": false}))
        .await
        .expect(400, "SW_ROOM_TYPE_INVARIANT");
    s.post("/v1/rooms", t, json!({"room_type": "group", "name": "x", "is_public": true}))
        .await
        .expect(400, "SW_ROOM_TYPE_INVARIANT");
    s.post("/v1/rooms", t, json!({"room_type": "group", "name": "x", "scope_kind": "incognito"}))
        .await
        .expect(400, "SW_ROOM_TYPE_INVARIANT");
    s.post("/v1/rooms", t, json!({"room_type": "group"})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/rooms", t, json!({"room_type": "group", "name": "   "})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/rooms", t, json!({"room_type": "group", "name": "x".repeat(256)})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/rooms", t, json!({"room_type": "galaxy", "name": "x"})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/rooms", t, json!({"name": "x", "workspace_id": b.workspace_id})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/rooms", t, json!({"name": "x", "workspace_id": "ws-nope"})).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn dms_are_idempotent_per_pair() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let first = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    first.expect(201, "");
    let dm = first.data().clone();
    assert_eq!(dm["room_type"], "dm");
    assert_eq!(dm["members_count"], 2);
    assert_eq!(dm["room_alias"], Value::Null);
    // Either side, by id or fqid, gets the same room.
    let again = s.post("/v1/rooms/dm", Some(&b.token), json!({"fqid": a.fqid})).await;
    again.expect(200, "");
    assert_eq!(again.data()["id"], dm["id"]);
    // Leaving and asking again re-joins.
    let id = dm["id"].as_str().unwrap();
    s.post(&format!("/v1/rooms/{id}/leave"), Some(&b.token), json!({})).await.expect(200, "");
    let back = s.post("/v1/rooms/dm", Some(&b.token), json!({"participant_id": a.id})).await;
    assert_eq!(back.ok()["id"], dm["id"]);
    assert_eq!(back.ok()["members_count"], 2);
    s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": a.id})).await.expect(400, "SW_ROOM_TYPE_INVARIANT");
    s.post("/v1/rooms/dm", Some(&a.token), json!({"fqid": "@ghost:localhost"}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
    s.post("/v1/rooms/dm", Some(&a.token), json!({})).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn directory_filters_pages_and_hides_what_it_must() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.create_tenant("other", &[]);
    let o = s.register_in("olga", Some("other")).await;
    let lobby = s.create_room(&a, "public", "Lobby").await;
    let eng = s.create_room(&a, "group", "Engineering").await;
    let secret = s.create_room(&a, "incognito", "Secret").await;
    let mut public_rooms = vec![lobby.clone()];
    for i in 0..4 {
        public_rooms.push(s.create_room(&a, "public", &format!("Public {i}")).await);
    }

    // Alice sees her group room and every public room; never the incognito one.
    let all = s.get("/v1/directory/rooms", Some(&a.token)).await;
    assert_eq!(all.body["meta"]["total"], 6);
    assert!(!ids(all.data()).contains(&secret));
    assert!(ids(all.data()).contains(&eng));
    // Bob sees only the public rooms of his tenant; Olga of another tenant sees none of them.
    let bob_view = s.get("/v1/directory/rooms", Some(&b.token)).await;
    assert_eq!(bob_view.body["meta"]["total"], 5);
    assert!(!ids(bob_view.data()).contains(&eng));
    let olga_view = s.get("/v1/directory/rooms", Some(&o.token)).await;
    assert_eq!(olga_view.body["meta"]["total"], 0);

    let q = s.get("/v1/directory/rooms?q=engin", Some(&a.token)).await;
    assert_eq!(ids(q.data()), vec![eng.clone()]);
    let q = s.get("/v1/directory/rooms?q=LOBBY", Some(&b.token)).await;
    assert_eq!(ids(q.data()), vec![lobby.clone()]);
    let q = s.get("/v1/directory/rooms?q=%25", Some(&a.token)).await;
    assert_eq!(q.body["meta"]["total"], 0, "% is matched literally");
    let typed = s.get("/v1/directory/rooms?room_type=group", Some(&a.token)).await;
    assert_eq!(ids(typed.data()), vec![eng.clone()]);

    // Pages of 2 cover the 6 rooms exactly once.
    let mut seen = Vec::new();
    for offset in [0, 2, 4, 6] {
        let page = s.get(&format!("/v1/directory/rooms?limit=2&offset={offset}"), Some(&a.token)).await;
        assert_eq!(page.body["meta"]["total"], 6);
        seen.extend(ids(page.data()));
    }
    seen.sort();
    let mut expected: Vec<String> = public_rooms.iter().cloned().chain([eng.clone()]).collect();
    expected.sort();
    assert_eq!(seen, expected);

    // The caller's own listing includes incognito rooms.
    let mine = s.get("/v1/rooms", Some(&a.token)).await;
    assert!(ids(mine.data()).contains(&secret));
    s.get("/v1/directory/rooms?limit=0", Some(&a.token)).await.expect(400, "SW_BAD_REQUEST");
    // Over the maximum is capped, not refused.
    let capped = s.get("/v1/directory/rooms?limit=201", Some(&a.token)).await;
    capped.ok();
    assert_eq!(capped.body["meta"]["limit"], 200, "{}", capped.body);
}

#[tokio::test]
async fn invite_join_leave_kick_ban_unban() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    let room = s.create_room(&a, "group", "Team").await;
    let path = |p: &str| format!("/v1/rooms/{room}/{p}");

    // Bob cannot see the room until invited.
    s.get(&format!("/v1/rooms/{room}"), Some(&b.token)).await.expect(404, "SW_ROOM_NOT_FOUND");
    s.post(&path("join"), Some(&b.token), json!({})).await.expect(404, "SW_ROOM_NOT_FOUND");
    let inv = s.post(&path("invite"), Some(&a.token), json!({"fqid": b.fqid})).await;
    assert_eq!(inv.ok()["membership"], "invite");
    assert_eq!(inv.ok()["fqid"], b.fqid.as_str());
    assert_eq!(s.get(&format!("/v1/rooms/{room}"), Some(&b.token)).await.ok()["membership"], "invite");
    // Re-inviting is harmless; inviting a member is a conflict.
    s.post(&path("invite"), Some(&a.token), json!({"participant_id": b.id})).await.expect(200, "");
    let joined = s.post(&path("join"), Some(&b.token), json!({})).await;
    assert_eq!(joined.ok()["membership"], "join");
    assert_eq!(joined.ok()["members_count"], 2);
    s.post(&path("invite"), Some(&a.token), json!({"participant_id": b.id})).await.expect(409, "SW_CONFLICT");

    let members = s.get(&path("members"), Some(&b.token)).await;
    let list = members.ok().as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let alice = list.iter().find(|m| m["participant_id"] == a.id.as_str()).unwrap();
    assert_eq!(alice["power_level"], 100);
    assert_eq!(alice["membership"], "join");
    assert_eq!(alice["notification_mode"], "all");
    assert_eq!(alice["muted_until"], Value::Null);
    assert_eq!(alice["fqid"], a.fqid.as_str());
    assert!(alice["joined_at"].as_str().is_some());
    for k in ["local_id", "server_name", "display_name"] {
        assert!(alice[k].is_string(), "{k}");
    }

    // Bob (power 0) invites Carol; only Alice may kick.
    s.post(&path("invite"), Some(&b.token), json!({"participant_id": c.id})).await.expect(200, "");
    s.post(&path("kick"), Some(&b.token), json!({"participant_id": c.id})).await.expect(403, "SW_ROOM_FORBIDDEN");
    // Kicking an invitee revokes the invitation.
    let k = s.post(&path("kick"), Some(&a.token), json!({"participant_id": c.id, "reason": "oops"})).await;
    assert_eq!(k.ok()["membership"], "leave");
    s.post(&path("join"), Some(&c.token), json!({})).await.expect(404, "SW_ROOM_NOT_FOUND");

    // Ban Bob: he can no longer join, is told he is banned, and shows in the ban list.
    s.post(&path("ban"), Some(&a.token), json!({"participant_id": b.id})).await.expect(200, "");
    s.post(&path("join"), Some(&b.token), json!({})).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.get(&path("members"), Some(&b.token)).await.expect(403, "SW_ROOM_FORBIDDEN");
    let bans = s.get(&format!("/v1/rooms/{room}/members?membership=ban"), Some(&a.token)).await;
    assert_eq!(ids_of_members(bans.ok()), vec![b.id.clone()]);
    s.post(&path("invite"), Some(&a.token), json!({"participant_id": b.id})).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.post(&path("unban"), Some(&a.token), json!({"participant_id": b.id})).await.expect(200, "");
    s.post(&path("unban"), Some(&a.token), json!({"participant_id": b.id}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
    s.get(&format!("/v1/rooms/{room}"), Some(&b.token)).await.expect(404, "SW_ROOM_NOT_FOUND");

    // Leave, then the room is gone for the leaver.
    s.add_member(&room, &a, &c).await;
    s.post(&path("leave"), Some(&c.token), json!({})).await.expect(200, "");
    s.get(&format!("/v1/rooms/{room}"), Some(&c.token)).await.expect(404, "SW_ROOM_NOT_FOUND");
    s.post(&path("kick"), Some(&a.token), json!({"participant_id": c.id}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
    // Nobody is strictly above themselves: kicking oneself is refused (leave instead).
    s.post(&path("kick"), Some(&a.token), json!({"participant_id": a.id})).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.post(&path("invite"), Some(&a.token), json!({"participant_id": "nobody"}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
}

fn ids_of_members(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| m["participant_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn public_rooms_are_joinable_within_the_tenant_only() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.create_tenant("other", &[]);
    let o = s.register_in("olga", Some("other")).await;
    let lobby = s.create_room(&a, "public", "Lobby").await;
    let seen = s.get(&format!("/v1/rooms/{lobby}"), Some(&b.token)).await;
    assert_eq!(seen.ok()["membership"], Value::Null);
    s.get(&format!("/v1/rooms/{lobby}/members"), Some(&b.token)).await.expect(403, "SW_NOT_MEMBER");
    s.post(&format!("/v1/rooms/{lobby}/join"), Some(&b.token), json!({"via": ["localhost"]})).await.expect(200, "");
    s.post(&format!("/v1/rooms/{lobby}/join"), Some(&b.token), json!({})).await.expect(200, "");
    s.post(&format!("/v1/rooms/{lobby}/join"), Some(&o.token), json!({})).await.expect(404, "SW_ROOM_NOT_FOUND");
    // Invited, a participant of another tenant may join.
    s.post(&format!("/v1/rooms/{lobby}/invite"), Some(&b.token), json!({"fqid": o.fqid})).await.expect(200, "");
    let j = s.post(&format!("/v1/rooms/{lobby}/join"), Some(&o.token), json!({})).await;
    assert_eq!(j.ok()["members_count"], 3);
}

#[tokio::test]
async fn rename_topic_and_power_levels() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    let room = s.team_room(&a, &[&b, &c]).await;
    let p = |x: &str| format!("/v1/rooms/{room}/{x}");

    s.put(&p("name"), Some(&b.token), json!({"name": "Mine"})).await.expect(403, "SW_ROOM_FORBIDDEN");
    let pl = s
        .put(&format!("/v1/rooms/{room}/members/{}/power-level", b.id), Some(&a.token), json!({"power_level": 50}))
        .await;
    assert_eq!(pl.ok()["power_level"], 50);
    let renamed = s.put(&p("name"), Some(&b.token), json!({"name": "Renamed"})).await;
    assert_eq!(renamed.ok()["name"], "Renamed");
    assert_eq!(renamed.ok()["room_alias"], "#team:localhost", "aliases are stable");
    let topic = s.put(&p("topic"), Some(&b.token), json!({"topic": "New topic"})).await;
    assert_eq!(topic.ok()["topic"], "New topic");
    let cleared = s.put(&p("topic"), Some(&b.token), json!({"topic": null})).await;
    assert_eq!(cleared.ok()["topic"], Value::Null);

    // Bob (50) may raise Carol to 50 but not above, and may not touch Alice.
    let by_fqid = format!("/v1/rooms/{room}/members/{}/power-level", c.fqid);
    s.put(&by_fqid, Some(&b.token), json!({"power_level": 51})).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.put(&by_fqid, Some(&b.token), json!({"power_level": 50})).await.expect(200, "");
    s.put(&format!("/v1/rooms/{room}/members/{}/power-level", a.id), Some(&b.token), json!({"power_level": 0}))
        .await
        .expect(403, "SW_ROOM_FORBIDDEN");
    // Equals cannot kick each other; Alice can.
    s.post(&p("kick"), Some(&b.token), json!({"participant_id": c.id})).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.post(&p("kick"), Some(&a.token), json!({"participant_id": c.id})).await.expect(200, "");
    // Lowering oneself is allowed; then the power is gone.
    s.put(&format!("/v1/rooms/{room}/members/{}/power-level", b.id), Some(&b.token), json!({"power_level": 0}))
        .await
        .expect(200, "");
    s.put(&p("name"), Some(&b.token), json!({"name": "Again"})).await.expect(403, "SW_ROOM_FORBIDDEN");
    for bad in [json!({"power_level": 101}), json!({"power_level": -1}), json!({"power_level": "50"})] {
        s.put(&format!("/v1/rooms/{room}/members/{}/power-level", b.id), Some(&a.token), bad)
            .await
            .expect(400, "SW_BAD_REQUEST");
    }
    // Carol was kicked: her level is kept for a re-join, so it can still be set.
    let out = s
        .put(&format!("/v1/rooms/{room}/members/{}/power-level", c.id), Some(&a.token), json!({"power_level": 10}))
        .await;
    assert_eq!(out.ok()["power_level"], 10);
    // Someone never in the room has no level here.
    let never = s.register("never").await;
    s.put(&format!("/v1/rooms/{room}/members/{}/power-level", never.id), Some(&a.token), json!({"power_level": 10}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
}

/// `limits.room_creation_per_participant` bounds `POST /v1/rooms`, new DMs and imports per
/// participant: 429 `SW_RATE_LIMIT_EXCEEDED` with `Retry-After`. Opening an existing DM is
/// not a creation.
#[tokio::test]
async fn room_creation_is_rate_limited_per_participant() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__ROOM_CREATION_PER_PARTICIPANT__BURST", "3"),
        ("HOMESERVER_LIMITS__ROOM_CREATION_PER_PARTICIPANT__PER_MINUTE", "1"),
    ])
    .await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    s.create_room(&a, "group", "One").await;
    s.create_room(&a, "public", "Two").await;
    let dm = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    dm.expect(201, "");

    let limited = |r: &crate::harness::Resp| {
        r.expect(429, "SW_RATE_LIMIT_EXCEEDED");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    };
    limited(&s.post("/v1/rooms", Some(&a.token), json!({"room_type": "group", "name": "Four"})).await);
    limited(&s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": c.id})).await);
    // Checked before the body is read: the bundle does not matter.
    let import = s
        .raw(
            reqwest::Method::POST,
            "/v1/rooms/import",
            Some(&a.token),
            Some(crate::harness::RawBody::Bytes(
                b"--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"x.zip\"\r\n\r\nPK\r\n--b--\r\n"
                    .to_vec(),
                "multipart/form-data; boundary=b",
            )),
        )
        .await;
    limited(&import);
    // The DM that exists opens again (from either side), and nothing was created meanwhile.
    let again = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    again.expect(200, "");
    assert_eq!(again.data()["id"], dm.data()["id"]);
    let rooms = s.get("/v1/rooms", Some(&a.token)).await;
    assert_eq!(rooms.ok().as_array().unwrap().len(), 3, "{}", rooms.body);
    // Each participant has an allowance of their own.
    s.create_room(&c, "group", "Carol's").await;
    s.post("/v1/rooms/dm", Some(&b.token), json!({"participant_id": c.id})).await.expect(201, "");
}

#[tokio::test]
async fn lifecycle_archive_restore_close() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let p = |x: &str| format!("/v1/rooms/{room}/{x}");

    s.post(&p("archive"), Some(&b.token), json!({})).await.expect(403, "SW_ROOM_FORBIDDEN");
    let archived = s.post(&p("archive"), Some(&a.token), json!({})).await;
    assert_eq!(archived.ok()["state"], "archived");
    s.post(&p("archive"), Some(&a.token), json!({})).await.expect(200, "");
    let list = s.get("/v1/rooms/archived", Some(&b.token)).await;
    assert_eq!(ids(list.ok()), vec![room.clone()]);
    assert!(!ids(s.get("/v1/directory/rooms", Some(&b.token)).await.ok()).contains(&room));
    s.put(&p("name"), Some(&a.token), json!({"name": "x"})).await.expect(409, "SW_ROOM_FROZEN");
    s.post(&p("leave"), Some(&b.token), json!({})).await.expect(409, "SW_ROOM_FROZEN");
    s.put(&p("notification-mode"), Some(&b.token), json!({"mode": "mentions"})).await.expect(200, "");

    let restored = s.post(&p("rejoin"), Some(&a.token), json!({})).await;
    assert_eq!(restored.ok()["state"], "open");
    assert!(s.get("/v1/rooms/archived", Some(&b.token)).await.ok().as_array().unwrap().is_empty());

    let closed = s.post(&p("close"), Some(&a.token), json!({})).await;
    assert_eq!(closed.ok()["state"], "closed");
    s.post(&p("rejoin"), Some(&a.token), json!({})).await.expect(409, "SW_ROOM_FROZEN");
    s.post(&p("archive"), Some(&a.token), json!({})).await.expect(409, "SW_ROOM_FROZEN");
    s.post(&p("close"), Some(&a.token), json!({})).await.expect(409, "SW_ROOM_FROZEN");
    // Members still read a closed room.
    assert_eq!(s.get(&format!("/v1/rooms/{room}"), Some(&b.token)).await.ok()["state"], "closed");
    s.get(&p("members"), Some(&b.token)).await.expect(200, "");
}

#[tokio::test]
async fn workspace_moves_stay_within_the_callers_workspaces() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let ws = s.post("/v1/workspaces", Some(&a.token), json!({"name": "Projects"})).await;
    let ws_id = ws.ok()["id"].as_str().unwrap().to_string();
    assert_eq!(s.get("/v1/workspaces", Some(&a.token)).await.ok().as_array().unwrap().len(), 2);
    let moved = s.put(&format!("/v1/rooms/{room}/workspace"), Some(&a.token), json!({"workspace_id": ws_id})).await;
    assert_eq!(moved.ok()["workspace_id"], ws_id.as_str());
    s.put(&format!("/v1/rooms/{room}/workspace"), Some(&a.token), json!({"workspace_id": b.workspace_id}))
        .await
        .expect(400, "SW_BAD_REQUEST");
    s.put(&format!("/v1/rooms/{room}/workspace"), Some(&b.token), json!({"workspace_id": b.workspace_id}))
        .await
        .expect(403, "SW_ROOM_FORBIDDEN");
    s.post("/v1/workspaces", Some(&a.token), json!({"name": ""})).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn personal_settings_notification_mute_read() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Team").await;
    let p = |x: &str| format!("/v1/rooms/{room}/{x}");
    let m = s.put(&p("notification-mode"), Some(&a.token), json!({"mode": "none"})).await;
    assert_eq!(m.ok()["notification_mode"], "none");
    s.put(&p("notification-mode"), Some(&a.token), json!({"mode": "loud"})).await.expect(400, "SW_BAD_REQUEST");

    let until = 4_102_444_800i64; // 2100-01-01
    let muted = s.put(&p("mute"), Some(&a.token), json!({"until": until})).await;
    assert_eq!(muted.ok()["muted_until"], until);
    let me = s.get(&p("members"), Some(&a.token)).await;
    assert_eq!(me.ok()[0]["muted_until"], until);
    assert_eq!(me.ok()[0]["notification_mode"], "none");
    let past = s.put(&p("mute"), Some(&a.token), json!({"until": 1})).await;
    assert_eq!(past.ok()["muted_until"], Value::Null, "a time already past unmutes");
    let unmuted = s.put(&p("mute"), Some(&a.token), json!({"until": null})).await;
    assert_eq!(unmuted.ok()["muted_until"], Value::Null);
    s.put(&p("mute"), Some(&a.token), json!({})).await.expect(400, "SW_BAD_REQUEST");
    s.put(&p("mute"), Some(&a.token), json!({"until": "tomorrow"})).await.expect(400, "SW_BAD_REQUEST");

    s.put(&p("read"), Some(&a.token), json!({"event_id": "evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}))
        .await
        .expect(404, "SW_EVENT_NOT_FOUND");
    s.put(&p("read"), Some(&a.token), json!({"event_id": "not-an-event"})).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn everything_survives_a_kill_and_a_restart() {
    let mut s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.create_room(&a, "group", "Durable").await;
    s.add_member(&room, &a, &b).await;
    s.set_power(&room, &a, &b, 50).await;
    s.post(&format!("/v1/rooms/{room}/archive"), Some(&a.token), json!({})).await.expect(200, "");
    let dm = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    let dm_id = dm.ok()["id"].clone();
    let before = s.get(&format!("/v1/rooms/{room}/members"), Some(&a.token)).await.ok().clone();

    s.kill().await;
    s.restart().await;

    let r = s.get(&format!("/v1/rooms/{room}"), Some(&b.token)).await;
    assert_eq!(r.ok()["state"], "archived");
    assert_eq!(r.ok()["power_level"], 50);
    assert_eq!(r.ok()["name"], "Durable");
    assert_eq!(s.get(&format!("/v1/rooms/{room}/members"), Some(&a.token)).await.ok(), &before);
    let again = s.post("/v1/rooms/dm", Some(&b.token), json!({"participant_id": a.id})).await;
    again.expect(200, "");
    assert_eq!(again.data()["id"], dm_id);
}
