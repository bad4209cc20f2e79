//! Federated rooms through one real server: the federation switch's permissions and refusals,
//! and remote invites, joins and DMs when the peer cannot be reached (nothing is stored). The
//! flows between servers are tested on the testnet (`testnet/tests/fed_join.rs`).

use serde_json::json;

use crate::harness::Server;

#[tokio::test]
async fn federate_is_for_the_creator_power_100_or_an_admin_and_refused_for_incognito_rooms() {
    let s = Server::start().await;
    let owner = s.register("owner").await;
    let member = s.register("member").await;
    let outsider = s.register("outsider").await;
    let admin = s.server_admin("root").await;
    let room = s.team_room(&owner, &[&member]).await;
    let path = format!("/v1/admin/rooms/{room}/federate");

    s.put(&path, Some(&member.token), json!({"enabled": true})).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.put(&path, Some(&outsider.token), json!({"enabled": true})).await.expect(404, "SW_ROOM_NOT_FOUND");
    s.put(&path, Some(&owner.token), json!({"enabled": "yes"})).await.expect(400, "SW_BAD_REQUEST");
    s.put(&path, Some(&owner.token), json!({})).await.expect(400, "SW_BAD_REQUEST");
    s.put("/v1/admin/rooms/room-nope/federate", Some(&owner.token), json!({"enabled": true}))
        .await
        .expect(404, "SW_ROOM_NOT_FOUND");

    let r = s.put(&path, Some(&owner.token), json!({"enabled": true})).await;
    assert_eq!(r.ok()["federated"], true);
    // Again: no change, the same view.
    assert_eq!(s.put(&path, Some(&owner.token), json!({"enabled": true})).await.ok()["federated"], true);
    // A server admin outside the room turns it off through the service participant.
    let r = s.put(&path, Some(&admin), json!({"enabled": false})).await;
    assert_eq!(r.ok()["federated"], false);
    let state = s.get(&format!("/v1/rooms/{room}"), Some(&member.token)).await;
    assert_eq!(state.ok()["federated"], false);

    // A member raised to 100 may.
    s.set_power(&room, &owner, &member, 100).await;
    assert_eq!(s.put(&path, Some(&member.token), json!({"enabled": true})).await.ok()["federated"], true);

    let r = s.post("/v1/rooms", Some(&owner.token), json!({"room_type": "incognito"})).await;
    let incognito = r.ok()["id"].as_str().unwrap().to_string();
    s.put(&format!("/v1/admin/rooms/{incognito}/federate"), Some(&owner.token), json!({"enabled": true}))
        .await
        .expect(400, "SW_ROOM_TYPE_INVARIANT");
}

#[tokio::test]
async fn remote_invites_need_a_federated_room_and_a_reachable_peer_and_store_nothing_otherwise() {
    let s = Server::start().await;
    let owner = s.register("owner").await;
    let room = s.create_room(&owner, "group", "Team").await;
    let invite = format!("/v1/rooms/{room}/invitations");
    let admin_invite = format!("/v1/admin/rooms/{room}/federation/invite");
    let remote = json!({"fqid": "@bob:peer.invalid"});

    s.post(&invite, Some(&owner.token), remote.clone()).await.expect(409, "SW_FED_DISABLED");
    s.post(&admin_invite, Some(&owner.token), remote.clone()).await.expect(409, "SW_FED_DISABLED");
    s.post(&admin_invite, Some(&owner.token), json!({"fqid": "bob"})).await.expect(400, "SW_BAD_REQUEST");
    s.post(&admin_invite, Some(&owner.token), json!({"fqid": owner.fqid})).await.expect(400, "SW_BAD_REQUEST");

    s.put(&format!("/v1/admin/rooms/{room}/federate"), Some(&owner.token), json!({"enabled": true})).await.ok();
    s.post(&invite, Some(&owner.token), remote.clone()).await.expect(502, "SW_FED_UNAVAILABLE");
    s.post(&admin_invite, Some(&owner.token), remote.clone()).await.expect(502, "SW_FED_UNAVAILABLE");
    let members = s.get(&format!("/v1/rooms/{room}/members"), Some(&owner.token)).await;
    assert_eq!(members.ok().as_array().unwrap().len(), 1, "nothing stored: {}", members.body);

    // Joining a room this server is not in, through a server that cannot be reached.
    let r = s.post("/v1/rooms/room-elsewhere/join", Some(&owner.token), json!({"via": ["peer.invalid"]})).await;
    r.expect(502, "SW_FED_UNAVAILABLE");
    s.post("/v1/rooms/room-elsewhere/join", Some(&owner.token), json!({"via": ["not a name"]}))
        .await
        .expect(400, "SW_BAD_REQUEST");
    s.post("/v1/rooms/room-elsewhere/join", Some(&owner.token), json!({})).await.expect(404, "SW_ROOM_NOT_FOUND");

    s.post("/v1/me/federated-dms", Some(&owner.token), json!({"fqid": owner.fqid})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/me/federated-dms", Some(&owner.token), json!({"fqid": 3})).await.expect(400, "SW_BAD_REQUEST");
}
