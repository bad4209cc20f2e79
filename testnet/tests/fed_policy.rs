//! Who a server federates with, through real nodes: the server's own policy
//! (`/v1/admin/federation/policy`: open, invite-only, closed, allowed and denied peers, the cap
//! on foreign participants) and a room's server lists
//! (`/v1/admin/rooms/{room_id}/federation/servers`, a state event every resident server
//! enforces, also one that joined after the lists were set).

mod support;

use support::graph_of;

use serde_json::{Value, json};
use support::{
    AsPeer, bodies, eventually, federated_room, get, invite_and_join, ok, options, post, put, send_text, timeline,
};
use testnet::Testnet;

const FED: &str = "/_scaiwave/federation/v1";

/// A message of `sender` (a participant of `peer`'s server) in `room`, built on `node`'s view of
/// the room: a valid event but for who sends it.
fn message_of(net: &Testnet, node: &str, peer: &AsPeer, room: &str, sender: &str, body: &str) -> (String, Value) {
    let (state, heads) = graph_of(&support::node_db(net, node), room);
    let id_of = |t: &str, k: &str| state.iter().find(|((et, sk), _)| et == t && sk == k).unwrap().1.clone();
    let auth = [id_of("swp.room.create", ""), id_of("swp.room.power_levels", ""), id_of("swp.room.member", sender)];
    let content = json!({"msgtype": "swp.text", "body": body});
    let (id, v, _) = peer.build(room, sender, "swp.room.message", None, content, &heads, &auth);
    (id, v)
}

/// Every federation endpoint about `room` answers `peer` 403 `SW_FED_PEER_UNKNOWN` on `dest`,
/// and a transaction's event of the room gets that verdict (and is not taken).
/// (A peer the server policy refuses gets 403 for the whole transaction instead.)
async fn refused_on_every_room_endpoint(net: &Testnet, peer: &AsPeer, dest: &str, room: &str, sender: &str) {
    let short = dest.trim_end_matches(".test");
    let (state, _) = graph_of(&support::node_db(net, short), room);
    let create = state.iter().find(|((t, _), _)| t == "swp.room.create").unwrap().1.clone();
    let someone = format!("@newcomer:{}", peer.origin);
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{FED}/state/{room}?event_id={create}"), None),
        ("GET", format!("{FED}/state_ids/{room}?event_id={create}"), None),
        ("GET", format!("{FED}/event_auth/{room}/{create}"), None),
        ("GET", format!("{FED}/event/{create}"), None),
        (
            "POST",
            format!("{FED}/get_missing_events/{room}"),
            Some(json!({"earliest_events": [], "latest_events": [create], "limit": 10, "min_depth": 0})),
        ),
        ("GET", format!("{FED}/rooms/{room}/backfill?v={create}&limit=10"), None),
        ("GET", format!("{FED}/rooms/{room}/members"), None),
        ("GET", format!("{FED}/make_join/{room}/{someone}"), None),
        ("PUT", format!("{FED}/send_join/{room}/{create}"), Some(json!({}))),
        ("GET", format!("{FED}/make_leave/{room}/{someone}"), None),
        ("PUT", format!("{FED}/send_leave/{room}/{create}"), Some(json!({}))),
        ("PUT", format!("{FED}/invite/{room}/{create}"), Some(json!({"event": {}, "invite_room_state": []}))),
    ];
    for (method, uri, body) in calls {
        let (status, answer) = peer.request(dest, method, &uri, body.as_ref()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("SW_FED_PEER_UNKNOWN")),
            "{method} {uri} on {dest}: {answer}"
        );
    }
    let (id, pdu) = message_of(net, short, peer, room, sender, "refused by the room's lists");
    let txn = format!("{FED}/send/refused-{}", support::now_ms());
    let body = json!({"origin": peer.origin, "origin_ts": support::now_ms(), "pdus": [pdu], "edus": []});
    let (status, answer) = peer.request(dest, "PUT", &txn, Some(&body)).await;
    match status {
        200 => assert_eq!(answer["data"]["pdus"][&id]["error"]["code"], "SW_FED_PEER_UNKNOWN", "{answer}"),
        _ => assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("SW_FED_PEER_UNKNOWN")), "{answer}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_policy_decides_whom_a_server_answers_and_sends_to() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start_with(options(3, dir.path())).await.expect("testnet starts");
    let (alpha, beta, gamma) =
        (net.client("alpha").unwrap(), net.client("beta").unwrap(), net.client("gamma").unwrap());
    let admin = net.admin_token("alpha").await.unwrap();
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    // R: alice's room, bob invited by alice (an invitation crossed between alpha and beta).
    let r = federated_room(&net, "alpha", &alice, "group", "R").await;
    invite_and_join(&net, "alpha", &alice, &r, "beta", &bob).await;
    // S: bob's room on beta, alice and carol invited by bob (nothing crossed alpha–gamma).
    let s = federated_room(&net, "beta", &bob, "group", "S").await;
    invite_and_join(&net, "beta", &bob, &s, "alpha", &alice).await;
    invite_and_join(&net, "beta", &bob, &s, "gamma", &carol).await;
    let (as_beta, as_gamma) = (AsPeer::node(&net, "beta"), AsPeer::node(&net, "gamma"));
    let policy = "/v1/admin/federation/policy";

    // Server admins only; the default is open; bad documents are refused.
    let r403 = get(&alpha, policy, &alice.access_token).await;
    assert_eq!((r403.status, r403.code()), (403, "SW_AUTH_INSUFFICIENT_PERMISSION"));
    let r403 = put(&alpha, policy, &alice.access_token, &json!({"default_mode": "closed"})).await;
    assert_eq!((r403.status, r403.code()), (403, "SW_AUTH_INSUFFICIENT_PERMISSION"));
    let current = ok(&get(&alpha, policy, &admin).await, "policy");
    assert_eq!(
        current,
        json!({"default_mode": "open", "allowed_peers": [], "denied_peers": [],
               "max_foreign_participants_per_room": null})
    );
    for bad in [
        json!({"default_mode": "sometimes"}),
        json!({"denied_peers": "beta.test"}),
        json!({"denied_peers": ["alpha.test"]}),
        json!({"allowed_peers": ["not a name"]}),
        json!({"max_foreign_participants_per_room": -2}),
        json!({"surprise": true}),
    ] {
        let r = put(&alpha, policy, &admin, &bad).await;
        assert_eq!((r.status, r.code()), (400, "SW_BAD_REQUEST"), "{bad}: {}", r.body);
    }

    // invite_only: beta is answered about S (bob invited alice), gamma is not (no invitation
    // crossed between alpha and gamma), though carol is in S.
    ok(&put(&alpha, policy, &admin, &json!({"default_mode": "invite_only"})).await, "invite_only");
    let (status, answer) = as_beta.request("alpha.test", "GET", &format!("{FED}/rooms/{s}/members"), None).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = as_gamma.request("alpha.test", "GET", &format!("{FED}/rooms/{s}/members"), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("SW_FED_PEER_UNKNOWN")), "{answer}");

    // closed, but for the allowed peers.
    ok(
        &put(&alpha, policy, &admin, &json!({"default_mode": "closed", "allowed_peers": ["beta.test"]})).await,
        "closed",
    );
    let (status, _) = as_beta.request("alpha.test", "GET", &format!("{FED}/profile/alice"), None).await;
    assert_eq!(status, 200);
    let (status, answer) = as_gamma.request("alpha.test", "GET", &format!("{FED}/profile/alice"), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("SW_FED_PEER_UNKNOWN")), "{answer}");

    // A denied peer: refused on every endpoint, server-wide ones too; nothing is sent to it,
    // and no invitation goes to its users.
    let denied = ok(&put(&alpha, policy, &admin, &json!({"denied_peers": ["beta.test"]})).await, "deny beta");
    assert_eq!(denied["denied_peers"], json!(["beta.test"]));
    assert_eq!(ok(&get(&alpha, policy, &admin).await, "policy"), denied, "kept as set");
    for (method, uri, body) in [
        ("GET", format!("{FED}/profile/alice"), None),
        ("POST", format!("{FED}/keys/query"), Some(json!({"server_keys": {"gamma.test": {}}}))),
        ("GET", format!("{FED}/rooms/{r}/members"), None),
        (
            "PUT",
            format!("{FED}/send/denied-1"),
            Some(json!({"origin": "beta.test", "origin_ts": 1, "pdus": [], "edus": []})),
        ),
    ] {
        let (status, answer) = as_beta.request("alpha.test", method, &uri, body.as_ref()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("SW_FED_PEER_UNKNOWN")), "{uri}: {answer}");
    }
    refused_on_every_room_endpoint(&net, &as_beta, "alpha.test", &r, &bob.fqid).await;
    let inv =
        post(&alpha, &format!("/v1/rooms/{r}/invitations"), &alice.access_token, &json!({"fqid": "@zed:beta.test"}))
            .await;
    assert_eq!((inv.status, inv.code()), (403, "SW_FED_PEER_UNKNOWN"), "{}", inv.body);
    send_text(&alpha, &alice, &r, "while beta is denied").await;
    eventually("alpha's sender passes the event by for beta", 30, || async {
        let peers = ok(&get(&alpha, "/v1/admin/federation/peers", &admin).await, "peers");
        let beta_row = peers.as_array().unwrap().iter().find(|p| p["server_name"] == "beta.test").cloned();
        beta_row.filter(|p| p["queue_depth"] == 0).map(|_| ())
    })
    .await;
    assert!(!bodies(&timeline(&beta, &bob, &r).await).iter().any(|b| b == "while beta is denied"));

    // Open again: the next event reaches beta, and the one it missed comes with it (its parent).
    ok(&put(&alpha, policy, &admin, &json!({})).await, "open");
    send_text(&alpha, &alice, &r, "open again").await;
    eventually("beta catches up once answered again", 30, || async {
        let b = bodies(&timeline(&beta, &bob, &r).await);
        (b.iter().any(|m| m == "while beta is denied") && b.iter().any(|m| m == "open again")).then_some(())
    })
    .await;

    // The cap on foreign participants: R has one (bob); carol's join is not served.
    ok(&put(&alpha, policy, &admin, &json!({"max_foreign_participants_per_room": 1})).await, "cap");
    ok(
        &post(&alpha, &format!("/v1/rooms/{r}/invitations"), &alice.access_token, &json!({"fqid": carol.fqid})).await,
        "invite carol",
    );
    eventually("the invitation reaches carol", 20, || async {
        let v = get(&gamma, &format!("/v1/rooms/{r}"), &carol.access_token).await;
        (v.is_success() && v.data()["membership"] == "invite").then_some(())
    })
    .await;
    let join = post(&gamma, &format!("/v1/rooms/{r}/join"), &carol.access_token, &json!({})).await;
    assert_eq!((join.status, join.code()), (403, "SW_FED_PEER_UNKNOWN"), "{}", join.body);
    ok(&put(&alpha, policy, &admin, &json!({"max_foreign_participants_per_room": 2})).await, "cap 2");
    ok(&post(&gamma, &format!("/v1/rooms/{r}/join"), &carol.access_token, &json!({})).await, "join under the cap");
    net.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_server_lists_are_enforced_by_every_resident_server() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start_with(options(4, dir.path())).await.expect("testnet starts");
    let (alpha, beta) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let dave = net.register("alpha", "dave").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    let dan = net.register("delta", "dan").await.unwrap();
    let r = federated_room(&net, "alpha", &alice, "group", "Listed").await;
    invite_and_join(&net, "alpha", &alice, &r, "beta", &bob).await;
    invite_and_join(&net, "alpha", &alice, &r, "gamma", &carol).await;
    ok(
        &post(&alpha, &format!("/v1/rooms/{r}/invitations"), &alice.access_token, &json!({"fqid": dave.fqid})).await,
        "invite dave",
    );
    ok(&post(&alpha, &format!("/v1/rooms/{r}/join"), &dave.access_token, &json!({})).await, "dave joins");
    let servers = format!("/v1/admin/rooms/{r}/federation/servers");

    // Who may set them, and what is refused.
    let r403 = put(&alpha, &servers, &dave.access_token, &json!({"deny": ["gamma.test"]})).await;
    assert_eq!((r403.status, r403.code()), (403, "SW_ROOM_FORBIDDEN"), "{}", r403.body);
    for bad in [
        json!({"deny": ["alpha.test"]}),
        json!({"allow": ["beta.test"]}),
        json!({"deny": ["no spaces"]}),
        json!({"deny": "x"}),
    ] {
        let r = put(&alpha, &servers, &alice.access_token, &bad).await;
        assert_eq!((r.status, r.code()), (400, "SW_BAD_REQUEST"), "{bad}: {}", r.body);
    }
    assert_eq!(ok(&get(&alpha, &servers, &alice.access_token).await, "lists"), json!({"allow": null, "deny": []}));

    // No allow list bans nobody: beta's messages still flow both ways.
    let set = ok(&put(&alpha, &servers, &alice.access_token, &json!({"deny": ["gamma.*"]})).await, "deny gamma");
    assert_eq!(set, json!({"allow": null, "deny": ["gamma.*"]}));
    assert_eq!(ok(&get(&alpha, &servers, &alice.access_token).await, "lists"), set);
    send_text(&beta, &bob, &r, "beta is still welcome").await;
    send_text(&alpha, &alice, &r, "after the lists").await;
    eventually("beta and alpha still hear each other", 30, || async {
        let a = bodies(&timeline(&alpha, &alice, &r).await);
        let b = bodies(&timeline(&beta, &bob, &r).await);
        (a.iter().any(|m| m == "beta is still welcome") && b.iter().any(|m| m == "after the lists")).then_some(())
    })
    .await;

    // Gamma is refused by alpha and by beta on every endpoint of the room; its events are not
    // taken, and none shows.
    let as_gamma = AsPeer::node(&net, "gamma");
    refused_on_every_room_endpoint(&net, &as_gamma, "alpha.test", &r, &carol.fqid).await;
    refused_on_every_room_endpoint(&net, &as_gamma, "beta.test", &r, &carol.fqid).await;

    // Gamma's typing notices for the room are dropped; an allowed server's still show. Gamma's
    // goes first: the first typing frame alpha's stream shows must be beta's.
    let ws_url = format!("{}/v1/stream?token={}", alpha.base.replacen("http://", "ws://", 1), alice.access_token);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("stream connects");
    let typing = |origin: &str, fqid: &str| {
        json!({"origin": origin, "origin_ts": support::now_ms(), "pdus": [],
               "edus": [{"edu_type": "typing", "content": {"room_id": r, "fqid": fqid, "typing": true}}]})
    };
    let (status, answer) = as_gamma
        .request("alpha.test", "PUT", &format!("{FED}/send/typing-denied"), Some(&typing("gamma.test", &carol.fqid)))
        .await;
    assert_eq!(status, 200, "{answer}");
    let as_beta = AsPeer::node(&net, "beta");
    let (status, answer) = as_beta
        .request("alpha.test", "PUT", &format!("{FED}/send/typing-allowed"), Some(&typing("beta.test", &bob.fqid)))
        .await;
    assert_eq!(status, 200, "{answer}");
    let frame = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        use futures_util::StreamExt;
        loop {
            if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = ws.next().await {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["type"] == "typing"
                    && f["room_id"] == r.as_str()
                    && f["participant_ids"].as_array().is_some_and(|p| !p.is_empty())
                {
                    return f;
                }
            }
        }
    })
    .await
    .expect("a typing frame within 20 s");
    let bob_on_alpha = ok(&get(&alpha, &format!("/v1/participants/{}", bob.fqid), &alice.access_token).await, "bob");
    assert_eq!(frame["participant_ids"], json!([bob_on_alpha["participant_id"]]), "only beta's typing shows: {frame}");

    // Delta joins after the lists were set, and enforces them too.
    invite_and_join(&net, "alpha", &alice, &r, "delta", &dan).await;
    refused_on_every_room_endpoint(&net, &as_gamma, "delta.test", &r, &carol.fqid).await;
    for (node, user) in [("alpha", &alice), ("beta", &bob), ("delta", &dan)] {
        let b = bodies(&timeline(&net.client(node).unwrap(), user, &r).await);
        assert!(!b.iter().any(|m| m.contains("refused")), "{node} shows none of gamma's events: {b:?}");
    }

    // Lifting the lists lets gamma in again.
    ok(&put(&alpha, &servers, &alice.access_token, &json!({})).await, "lift");
    eventually("beta answers gamma again", 30, || async {
        let (status, _) = as_gamma.request("beta.test", "GET", &format!("{FED}/rooms/{r}/members"), None).await;
        (status == 200).then_some(())
    })
    .await;
    net.down().await.unwrap();
}
