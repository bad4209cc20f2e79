//! Federated rooms on real servers: the federation switch, invites of remote participants,
//! remote joins (through a second resident server when the first is down, and of a public room
//! by id with `via`), declining a remote invite, federated DMs.
//!
//! The homeserver binary and the subnet come from `support` (shared by the test files).

mod support;

use serde_json::json;
use support::{options, put};
use testnet::{NodeClient, Testnet, User};

/// `(fqid, membership)` of a room's joined and invited members as `user` sees them on `c`.
async fn members(c: &NodeClient, room: &str, user: &User) -> Vec<(String, String)> {
    let r = c.get(&format!("/v1/rooms/{room}/members"), Some(&user.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "members: {}", r.body);
    let mut out: Vec<(String, String)> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["fqid"].as_str().unwrap().to_owned(), m["membership"].as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

/// The caller's membership of `room` in `GET /v1/rooms`, if it is listed.
async fn listed(c: &NodeClient, room: &str, user: &User) -> Option<String> {
    let r = c.get("/v1/rooms", Some(&user.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "rooms: {}", r.body);
    r.data()
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == room)
        .map(|v| v["membership"].as_str().unwrap_or("").to_owned())
}

fn pair(fqid: &str, m: &str) -> (String, String) {
    (fqid.to_owned(), m.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_join_decline_and_join_through_a_second_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start_with(options(3, dir.path())).await.expect("testnet starts");
    let (a, b, g) = (net.client("alpha").unwrap(), net.client("beta").unwrap(), net.client("gamma").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let dave = net.register("beta", "dave").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();

    // A group room, not federated yet: a remote invite is refused and nothing is stored.
    let r =
        a.post("/v1/rooms", Some(&alice.access_token), &json!({"room_type": "group", "name": "Shared"})).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let room = r.data()["id"].as_str().unwrap().to_owned();
    let invite = |fqid: &str| json!({"fqid": fqid});
    let r =
        a.post(&format!("/v1/rooms/{room}/invitations"), Some(&alice.access_token), &invite(&bob.fqid)).await.unwrap();
    assert_eq!((r.status, r.code()), (409, "SW_FED_DISABLED"), "{}", r.body);

    // Federating it: the creator may; the answer is the room view.
    let r = put(&a, &format!("/v1/admin/rooms/{room}/federate"), &alice.access_token, &json!({"enabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["federated"], true);

    // An invite to an unknown participant of beta is refused by beta, and not stored.
    let r = a
        .post(&format!("/v1/rooms/{room}/invitations"), Some(&alice.access_token), &invite("@nobody:beta.test"))
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (404, "SW_PARTICIPANT_NOT_FOUND"), "{}", r.body);
    assert_eq!(members(&a, &room, &alice).await, vec![pair(&alice.fqid, "join")]);

    // bob is invited; beta countersigns and shows the invitation in his room list and sync.
    let r =
        a.post(&format!("/v1/rooms/{room}/invitations"), Some(&alice.access_token), &invite(&bob.fqid)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["membership"], "invite");
    assert_eq!(listed(&b, &room, &bob).await.as_deref(), Some("invite"));
    let r = b.get(&format!("/v1/rooms/{room}"), Some(&bob.access_token)).await.unwrap();
    assert_eq!((r.status, &r.data()["membership"]), (200, &json!("invite")), "{}", r.body);
    assert_eq!(r.data()["name"], "Shared");
    let r = b.get("/v1/sync?since=0&timeout=0", Some(&bob.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.to_string().contains(&room), "the invite is in bob's sync: {}", r.body);

    // dave declines his invitation while beta is in no way in the room: the leave is made on
    // alpha (make_leave / send_leave).
    let r =
        a.post(&format!("/v1/rooms/{room}/invitations"), Some(&alice.access_token), &invite(&dave.fqid)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(listed(&b, &room, &dave).await.as_deref(), Some("invite"));
    let r = b.post(&format!("/v1/rooms/{room}/leave"), Some(&dave.access_token), &json!({})).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(listed(&b, &room, &dave).await, None);
    assert_eq!(members(&a, &room, &alice).await, vec![pair(&alice.fqid, "join"), pair(&bob.fqid, "invite")]);

    // bob joins through alpha: both servers list both members.
    let r = b.post(&format!("/v1/rooms/{room}/join"), Some(&bob.access_token), &json!({})).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["membership"], "join");
    assert_eq!(r.data()["name"], "Shared");
    assert_eq!(r.data()["federated"], true);
    let mut both_sorted = vec![pair(&alice.fqid, "join"), pair(&bob.fqid, "join")];
    both_sorted.sort();
    assert_eq!(members(&a, &room, &alice).await, both_sorted);
    assert_eq!(members(&b, &room, &bob).await, both_sorted);
    let state_a = a.get(&format!("/v1/rooms/{room}"), Some(&alice.access_token)).await.unwrap();
    let state_b = b.get(&format!("/v1/rooms/{room}"), Some(&bob.access_token)).await.unwrap();
    for k in ["name", "topic", "room_type", "federated", "members_count", "state"] {
        assert_eq!(state_a.data()[k], state_b.data()[k], "{k}");
    }

    // A public federated room: carol on gamma joins it by id with `via`, through beta while
    // alpha is down.
    let r =
        a.post("/v1/rooms", Some(&alice.access_token), &json!({"room_type": "public", "name": "Lobby"})).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let lobby = r.data()["id"].as_str().unwrap().to_owned();
    let r = put(&a, &format!("/v1/admin/rooms/{lobby}/federate"), &alice.access_token, &json!({"enabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Without `via` gamma knows no server of the room.
    let r = g.post(&format!("/v1/rooms/{lobby}/join"), Some(&carol.access_token), &json!({})).await.unwrap();
    assert_eq!((r.status, r.code()), (404, "SW_ROOM_NOT_FOUND"), "{}", r.body);
    let r = b
        .post(&format!("/v1/rooms/{lobby}/join"), Some(&bob.access_token), &json!({"via": ["alpha.test"]}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // gamma has heard from alpha before (an invite), so it holds alpha's keys: a server that
    // never did would need a notary it trusts to verify alpha's events while alpha is down.
    let r = a
        .post(&format!("/v1/rooms/{room}/invitations"), Some(&alice.access_token), &invite(&carol.fqid))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    net.stop_node("alpha").await.unwrap();
    let r = g
        .post(
            &format!("/v1/rooms/{lobby}/join"),
            Some(&carol.access_token),
            &json!({"via": ["alpha.test", "beta.test"]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["name"], "Lobby");
    let mut three = vec![pair(&alice.fqid, "join"), pair(&bob.fqid, "join"), pair(&carol.fqid, "join")];
    three.sort();
    assert_eq!(members(&g, &lobby, &carol).await, three);
    assert_eq!(members(&b, &lobby, &bob).await, three);
    // The joiner's record on the other servers takes its name from its join.
    let r = b.get(&format!("/v1/rooms/{lobby}/members"), Some(&bob.access_token)).await.unwrap();
    let carol_there = r.data().as_array().unwrap().iter().find(|m| m["fqid"] == carol.fqid.as_str()).unwrap().clone();
    assert_eq!(carol_there["display_name"], "carol", "{carol_there}");
    assert_eq!(carol_there["server_name"], "gamma.test");
    net.start_node("alpha").await.unwrap();
    net.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_dms_are_one_room_per_pair_from_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start_with(options(2, dir.path())).await.expect("testnet starts");
    let (a, b) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let dm = |c: &NodeClient, me: &User, other: &User| {
        let (c, token, body) = (c.clone(), me.access_token.clone(), json!({"fqid": other.fqid}));
        async move { c.post("/v1/me/federated-dms", Some(&token), &body).await.unwrap() }
    };

    // One side first: created, then the same room again from both sides; bob's call joins it.
    let r = dm(&a, &alice, &bob).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.data()["room_type"], "dm");
    assert_eq!(r.data()["federated"], true);
    let room = r.data()["id"].as_str().unwrap().to_owned();
    let r = dm(&a, &alice, &bob).await;
    assert_eq!((r.status, r.data()["id"].as_str()), (200, Some(room.as_str())), "{}", r.body);
    assert_eq!(listed(&b, &room, &bob).await.as_deref(), Some("invite"));
    let r = dm(&b, &bob, &alice).await;
    assert_eq!((r.status, r.data()["id"].as_str()), (200, Some(room.as_str())), "{}", r.body);
    assert_eq!(r.data()["membership"], "join");
    let mut both = vec![pair(&alice.fqid, "join"), pair(&bob.fqid, "join")];
    both.sort();
    assert_eq!(members(&a, &room, &alice).await, both);
    assert_eq!(members(&b, &room, &bob).await, both);

    // Both sides at the same moment: every later call on either side answers the room whose
    // id sorts first.
    let carol = net.register("alpha", "carol").await.unwrap();
    let dan = net.register("beta", "dan").await.unwrap();
    let (ra, rb) = tokio::join!(dm(&a, &carol, &dan), dm(&b, &dan, &carol));
    assert!(ra.is_success() && rb.is_success(), "{} / {}", ra.body, rb.body);
    let first: Vec<String> = [&ra, &rb].iter().map(|r| r.data()["id"].as_str().unwrap().to_owned()).collect();
    let kept = first.iter().min().unwrap().clone();
    let ra = dm(&a, &carol, &dan).await;
    let rb = dm(&b, &dan, &carol).await;
    assert_eq!(ra.data()["id"].as_str(), Some(kept.as_str()), "{}", ra.body);
    assert_eq!(rb.data()["id"].as_str(), Some(kept.as_str()), "{}", rb.body);
    let mut pair_members = vec![pair(&carol.fqid, "join"), pair(&dan.fqid, "join")];
    pair_members.sort();
    assert_eq!(members(&a, &kept, &carol).await, pair_members);
    assert_eq!(members(&b, &kept, &dan).await, pair_members);

    // Both made one while cut off from each other (each invite failed): once they meet again,
    // two rounds of calls end on the room whose id sorts first, on both sides, and the other
    // is closed with a pointer to it.
    let erin = net.register("alpha", "erin").await.unwrap();
    let finn = net.register("beta", "finn").await.unwrap();
    net.partition("alpha", "beta").unwrap();
    let ra = dm(&a, &erin, &finn).await;
    let rb = dm(&b, &finn, &erin).await;
    assert_eq!((ra.status, ra.code()), (502, "SW_FED_UNAVAILABLE"), "{}", ra.body);
    assert_eq!((rb.status, rb.code()), (502, "SW_FED_UNAVAILABLE"), "{}", rb.body);
    let made_a = listed_id(&a, &erin).await;
    let made_b = listed_id(&b, &finn).await;
    assert_ne!(made_a, made_b);
    net.heal().unwrap();
    for _ in 0..2 {
        let ra = dm(&a, &erin, &finn).await;
        assert!(ra.is_success(), "{}", ra.body);
        let rb = dm(&b, &finn, &erin).await;
        assert!(rb.is_success(), "{}", rb.body);
    }
    let kept = made_a.clone().min(made_b.clone());
    let (lost, lost_on, lost_user) = if kept == made_a { (made_b, &b, &finn) } else { (made_a, &a, &erin) };
    let ra = dm(&a, &erin, &finn).await;
    let rb = dm(&b, &finn, &erin).await;
    assert_eq!(ra.data()["id"].as_str(), Some(kept.as_str()), "{}", ra.body);
    assert_eq!(rb.data()["id"].as_str(), Some(kept.as_str()), "{}", rb.body);
    let closed = lost_on.get(&format!("/v1/rooms/{lost}"), Some(&lost_user.access_token)).await.unwrap();
    assert_eq!(closed.data()["state"], "closed", "{}", closed.body);
    let mut pair_members = vec![pair(&erin.fqid, "join"), pair(&finn.fqid, "join")];
    pair_members.sort();
    assert_eq!(members(&a, &kept, &erin).await, pair_members);
    assert_eq!(members(&b, &kept, &finn).await, pair_members);
    net.down().await.unwrap();
}

/// The id of the only room `user` lists on `c`.
async fn listed_id(c: &NodeClient, user: &User) -> String {
    let r = c.get("/v1/rooms", Some(&user.access_token)).await.unwrap();
    let rooms = r.data().as_array().unwrap();
    assert_eq!(rooms.len(), 1, "{}", r.body);
    rooms[0]["id"].as_str().unwrap().to_owned()
}
