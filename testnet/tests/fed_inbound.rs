//! The receiving side of federation through real nodes: `beta`'s signing key (read from its
//! key file) signs transactions and reads sent straight to `alpha`'s federation listener over
//! the testnet's DNS and TLS, so `alpha` checks them against the keys `beta` really publishes.
//!
//! The homeserver binary and the subnet come from `support` (shared by the test files).

mod support;

use support::graph_of;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{Value, json};
use support::{AsPeer, federated_room, key_document, now_ms, options, serve_tls};
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_checked_deduplicated_and_answered_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start_with(options(2, dir.path())).await.expect("testnet starts");
    let alpha = net.client("alpha").unwrap();
    let alice = net.register("alpha", "alice").await.unwrap();
    let r = alpha
        .post("/v1/rooms", Some(&alice.access_token), &json!({"room_type": "public", "name": "Lobby"}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let room = r.data()["id"].as_str().unwrap().to_string();
    let beta = AsPeer::node(&net, "beta");
    let send = |txn: &str| format!("/_scaiwave/federation/v1/send/{txn}");

    // A room federation is off for: its events are not taken now (retry); an unknown room's
    // are refused; what does not parse as an event gets no verdict.
    let (in_room, e1) = beta.event(&room, "@bob:beta.test", "hi", &["evt-unknownparent"]);
    let (elsewhere, e2) = beta.event("room-nosuchroom", "@bob:beta.test", "hi", &["evt-unknownparent"]);
    let txn = json!({"origin": "beta.test", "origin_ts": now_ms(), "pdus": [e1, e2, 7, {"x": 1}], "edus": []});
    let (status, body) = beta.request("alpha.test", "PUT", &send("t1"), Some(&txn)).await;
    assert_eq!(status, 200, "{body}");
    let pdus = body["data"]["pdus"].as_object().unwrap().clone();
    assert_eq!(pdus.len(), 2, "{body}");
    assert_eq!(pdus[&in_room]["error"]["code"], "SW_FED_DISABLED", "{body}");
    assert_eq!(pdus[&in_room]["error"]["retry"], true, "{body}");
    assert_eq!(pdus[&elsewhere]["error"]["code"], "SW_ROOM_NOT_FOUND", "{body}");
    assert!(pdus[&elsewhere]["error"].get("retry").is_none(), "{body}");

    // The same transaction id again: the first answer, whatever the body.
    let other = json!({"origin": "beta.test", "origin_ts": now_ms(), "pdus": [], "edus": []});
    let (status, again) = beta.request("alpha.test", "PUT", &send("t1"), Some(&other)).await;
    assert_eq!((status, &again), (200, &body));

    // A body naming another origin, or over the limits: 400.
    let forged = json!({"origin": "gamma.test", "origin_ts": now_ms(), "pdus": [], "edus": []});
    let (status, b) = beta.request("alpha.test", "PUT", &send("t2"), Some(&forged)).await;
    assert_eq!((status, b["error"]["code"].as_str()), (400, Some("SW_BAD_REQUEST")), "{b}");
    let many: Vec<Value> = (0..51).map(|_| json!({})).collect();
    let big = json!({"origin": "beta.test", "origin_ts": now_ms(), "pdus": many, "edus": []});
    let (status, b) = beta.request("alpha.test", "PUT", &send("t3"), Some(&big)).await;
    assert_eq!((status, b["error"]["code"].as_str()), (400, Some("SW_BAD_REQUEST")), "{b}");
    // An unsigned request never reaches the pipeline.
    let url = format!("https://alpha.test:{}{}", testnet::FEDERATION_PORT, send("t4"));
    let r = beta.http.put(url).json(&other).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Reads of a room beta never had a member in: 404, never leaking the room.
    for uri in [
        format!("/_scaiwave/federation/v1/rooms/{room}/members"),
        format!("/_scaiwave/federation/v1/rooms/{room}/backfill?v={in_room}&limit=10"),
        format!("/_scaiwave/federation/v1/state_ids/{room}?event_id={in_room}"),
        format!("/_scaiwave/federation/v1/event_auth/{room}/{in_room}"),
    ] {
        let (status, b) = beta.request("alpha.test", "GET", &uri, None).await;
        assert_eq!((status, b["error"]["code"].as_str()), (404, Some("SW_ROOM_NOT_FOUND")), "{uri}: {b}");
    }
    let gme = json!({"earliest_events": [], "latest_events": [in_room], "limit": 10, "min_depth": 0});
    let (status, b) = beta
        .request("alpha.test", "POST", &format!("/_scaiwave/federation/v1/get_missing_events/{room}"), Some(&gme))
        .await;
    assert_eq!((status, b["error"]["code"].as_str()), (404, Some("SW_ROOM_NOT_FOUND")), "{b}");
    let (status, _) =
        beta.request("alpha.test", "GET", &format!("/_scaiwave/federation/v1/event/{in_room}"), None).await;
    assert_eq!(status, 404, "an event never stored");

    // Nothing of it reached alice's room.
    let r = alpha.get(&format!("/v1/rooms/{room}/messages"), Some(&alice.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains("@bob:beta.test"), "{}", r.body);
    net.down().await.unwrap();
}

/// Alice's public room "Lobby" on alpha with federation on, as alpha's database holds it: its
/// current state, its forward extremities and the ids of the events a join stands on.
struct Lobby {
    alice: testnet::User,
    room: String,
    db: rusqlite::Connection,
    state: Vec<((String, String), String)>,
    heads: Vec<(String, i64)>,
    create: String,
    pl: String,
    jr: String,
}

async fn lobby(net: &Testnet) -> Lobby {
    let alice = net.register("alpha", "alice").await.unwrap();
    let room = federated_room(net, "alpha", &alice, "public", "Lobby").await;
    let db = rusqlite::Connection::open(net.node("alpha").unwrap().data_dir.join("homeserver.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let (state, heads) = graph_of(&db, &room);
    let id_of = |t: &str| state.iter().find(|((et, k), _)| et == t && k.is_empty()).unwrap().1.clone();
    let (create, pl, jr) = (id_of("swp.room.create"), id_of("swp.room.power_levels"), id_of("swp.room.join_rules"));
    Lobby { alice, room, db, state, heads, create, pl, jr }
}

/// A public room of alpha's with federation on, which beta's Bob joins by sending his own join:
/// events from beta are checked, ordered, stored and shown to alpha's clients; refused ones
/// never show; a gap beta cannot fill is answered `retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_events_are_checked_ordered_and_shown_like_local_ones() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start_with(options(2, dir.path())).await.expect("testnet starts");
    let Lobby { alice, room, db, heads, create, pl, jr, .. } = lobby(&net).await;
    let alpha = net.client("alpha").unwrap();

    let beta = AsPeer::node(&net, "beta");
    let send = |txn: &str| format!("/_scaiwave/federation/v1/send/{txn}");
    const BOB: &str = "@bob:beta.test";
    let (join, join_v, join_d) = beta.build(
        &room,
        BOB,
        "swp.room.member",
        Some(BOB),
        json!({"membership": "join", "display_name": "Bob"}),
        &heads,
        &[create.clone(), pl.clone(), jr.clone()],
    );
    let member_auth = [create.clone(), pl.clone(), join.clone()];
    let after_join = [(join.clone(), join_d)];
    let (hello, hello_v, hello_d) = beta.build(
        &room,
        BOB,
        "swp.room.message",
        None,
        json!({"msgtype": "swp.text", "body": "hello from beta"}),
        &after_join,
        &member_auth,
    );
    // Its body changed after signing: the hash fails, only the redacted form is kept.
    let (tampered, mut tampered_v, _) = beta.build(
        &room,
        BOB,
        "swp.room.message",
        None,
        json!({"msgtype": "swp.text", "body": "as signed"}),
        &[(hello.clone(), hello_d)],
        &member_auth,
    );
    tampered_v["content"]["body"] = json!("tampered");
    // A sender of another server than the origin.
    let (carol, carol_v, _) = beta.build(
        &room,
        "@carol:gamma.test",
        "swp.room.message",
        None,
        json!({"msgtype": "swp.text", "body": "not beta's"}),
        &after_join,
        &member_auth,
    );
    // A sender who is not a member.
    let (dave, dave_v, _) = beta.build(
        &room,
        "@dave:beta.test",
        "swp.room.message",
        None,
        json!({"msgtype": "swp.text", "body": "not a member"}),
        &after_join,
        &[create.clone(), pl.clone()],
    );
    // A member without power changing the power levels.
    let (grab, grab_v, _) = beta.build(
        &room,
        BOB,
        "swp.room.power_levels",
        Some(""),
        json!({"users": {BOB: 100}, "users_default": 0}),
        &[(hello.clone(), hello_d)],
        &member_auth,
    );
    // The message comes before the join it stands on: the batch is applied in graph order.
    let txn = json!({
        "origin": "beta.test", "origin_ts": now_ms(),
        "pdus": [hello_v, join_v, tampered_v, carol_v, dave_v, grab_v], "edus": [],
    });
    let (status, body) = beta.request("alpha.test", "PUT", &send("j1"), Some(&txn)).await;
    assert_eq!(status, 200, "{body}");
    let v = &body["data"]["pdus"];
    assert_eq!(v[&join], json!({}), "{body}");
    assert_eq!(v[&hello], json!({}), "{body}");
    assert_eq!(v[&tampered], json!({}), "{body}");
    assert_eq!(v[&carol]["error"]["code"], "SW_FED_SIGNATURE_MISMATCH", "{body}");
    assert_eq!(v[&dave]["error"]["code"], "SW_ROOM_FORBIDDEN", "{body}");
    assert_eq!(v[&grab]["error"]["code"], "SW_ROOM_FORBIDDEN", "{body}");
    // Replayed: the same answer, nothing stored twice.
    let (_, again) = beta.request("alpha.test", "PUT", &send("j1"), Some(&txn)).await;
    assert_eq!(again, body);
    // The power levels are still the room's own: the refused change is not in its state.
    let (state_now, _) = graph_of(&db, &room);
    let pl_now = state_now.iter().find(|((t, k), _)| t == "swp.room.power_levels" && k.is_empty()).unwrap();
    assert_eq!(pl_now.1, pl, "a refused power-level change must not become state");

    // A well-formed event of Bob's, in a transaction whose request is signed with another key
    // under beta's key id: refused before the pipeline, so the event never shows.
    let (smuggled, smuggled_v, _) = beta.build(
        &room,
        BOB,
        "swp.room.message",
        None,
        json!({"msgtype": "swp.text", "body": "smuggled"}),
        &[(hello.clone(), hello_d)],
        &member_auth,
    );
    let forger = AsPeer {
        origin: beta.origin.clone(),
        key: crypto::ServerKey::from_seed_base64(
            beta.key.key_id(),
            &crypto::ServerKey::generate(beta.key.version()).unwrap().seed_base64(),
        )
        .unwrap(),
        http: beta.http.clone(),
    };
    let txn_f = json!({"origin": "beta.test", "origin_ts": now_ms(), "pdus": [smuggled_v], "edus": []});
    let (status, b) = forger.request("alpha.test", "PUT", &send("f1"), Some(&txn_f)).await;
    assert_eq!((status, b["error"]["code"].as_str()), (401, Some("SW_FED_SIGNATURE_MISMATCH")), "{b}");

    // Alice sees Bob's messages as she sees local ones; the refused ones never.
    let r = alpha.get(&format!("/v1/rooms/{room}/messages?limit=50"), Some(&alice.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let messages = r.data().as_array().cloned().unwrap_or_default();
    let find = |id: &str| messages.iter().find(|m| m["id"] == id).cloned();
    let shown = find(&hello).expect("Bob's message is shown");
    assert_eq!(shown["sender_fqid"], BOB);
    assert_eq!(shown["content"]["body"], "hello from beta");
    assert!(shown["sender_id"].as_str().is_some_and(|s| s != BOB), "a local participant id: {shown}");
    let redacted = find(&tampered).expect("the tampered message is kept, redacted");
    assert!(redacted["content"].get("body").is_none(), "{redacted}");
    for refused in [&carol, &dave, &smuggled] {
        assert!(find(refused).is_none(), "{refused} must not show");
    }
    let members = alpha.get(&format!("/v1/rooms/{room}/members"), Some(&alice.access_token)).await.unwrap();
    assert!(members.body.to_string().contains(BOB), "Bob is a member: {}", members.body);

    // Presence of beta's own participant is taken; one claimed for another server's is not.
    let edus = json!([
        {"edu_type": "presence", "content": {"fqid": BOB, "presence": "busy"}},
        {"edu_type": "presence", "content": {"fqid": alice.fqid, "presence": "appear_offline"}},
        {"edu_type": "typing", "content": {"room_id": room, "fqid": BOB, "typing": true}},
        {"edu_type": "nonsense", "content": 7},
    ]);
    let txn = json!({"origin": "beta.test", "origin_ts": now_ms(), "pdus": [], "edus": edus});
    let (status, body) = beta.request("alpha.test", "PUT", &send("e1"), Some(&txn)).await;
    assert_eq!((status, &body["data"]), (200, &json!({"pdus": {}})), "{body}");
    let presence_of = |fqid: String| {
        let alpha = alpha.clone();
        let token = alice.access_token.clone();
        async move {
            let r = alpha.get(&format!("/v1/presence?ids={fqid}"), Some(&token)).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            r.data()[&fqid].clone()
        }
    };
    assert_eq!(presence_of(BOB.to_string()).await, "busy");
    assert_ne!(presence_of(alice.fqid.clone()).await, "appear_offline", "beta cannot speak for alpha's users");

    // Now beta may read the room: its members and the state at Bob's join.
    let (status, b) =
        beta.request("alpha.test", "GET", &format!("/_scaiwave/federation/v1/rooms/{room}/members"), None).await;
    assert_eq!(status, 200, "{b}");
    assert!(b["data"].as_array().unwrap().iter().any(|m| m["fqid"] == BOB && m["membership"] == "join"), "{b}");
    let (status, b) = beta
        .request("alpha.test", "GET", &format!("/_scaiwave/federation/v1/state_ids/{room}?event_id={join}"), None)
        .await;
    assert_eq!(status, 200, "{b}");
    assert!(b["data"]["pdu_ids"].as_array().unwrap().contains(&json!(join)), "{b}");
    // A signed request with a malformed query is the peer's mistake: 400 in the envelope.
    for path in
        [format!("/_scaiwave/federation/v1/state/{room}"), format!("/_scaiwave/federation/v1/state_ids/{room}?id=x")]
    {
        let (status, b) = beta.request("alpha.test", "GET", &path, None).await;
        assert_eq!((status, b["error"]["code"].as_str()), (400, Some("SW_BAD_REQUEST")), "{path}: {b}");
    }
    let (status, b) = beta.request("alpha.test", "GET", &format!("/_scaiwave/federation/v1/event/{hello}"), None).await;
    assert_eq!((status, &b["data"]["pdu"]["content"]["body"]), (200, &json!("hello from beta")), "{b}");

    // A parent nobody can give: beta's own node does not know the room, so the gap stays open
    // and the event is answered retry, again at once while its back-off lasts.
    let (orphan, orphan_v, _) = beta.build(
        &room,
        BOB,
        "swp.room.message",
        None,
        json!({"msgtype": "swp.text", "body": "orphan"}),
        &[("evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(), 9)],
        &member_auth,
    );
    for txn_id in ["g1", "g2"] {
        let txn = json!({"origin": "beta.test", "origin_ts": now_ms(), "pdus": [orphan_v], "edus": []});
        let (status, body) = beta.request("alpha.test", "PUT", &send(txn_id), Some(&txn)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["pdus"][&orphan]["error"]["retry"], true, "{txn_id}: {body}");
    }
    net.down().await.unwrap();
}

/// A stand-in peer `name` on `ip:8448`: its well-known document for `key`,
/// `get_missing_events` answering `missing` and `state/` answering `state` (whatever is asked:
/// it stands for a peer that has exactly those).
async fn gap_peer(
    name: &str,
    key: &crypto::ServerKey,
    ip: Ipv4Addr,
    cert_pem: String,
    key_pem: String,
    missing: Vec<Value>,
    state: Value,
) -> axum_server::Handle<SocketAddr> {
    let doc = key_document(name, key, now_ms() + 24 * 3600 * 1000);
    let events = json!({"data": {"events": missing}});
    let state = json!({"data": state});
    let app = axum::Router::new()
        .route("/.well-known/scaiwave/server", axum::routing::get(move || async move { axum::Json(doc.clone()) }))
        .route(
            "/_scaiwave/federation/v1/get_missing_events/{room}",
            axum::routing::post(move || async move { axum::Json(events.clone()) }),
        )
        .route(
            "/_scaiwave/federation/v1/state/{room}",
            axum::routing::get(move || async move { axum::Json(state.clone()) }),
        );
    serve_tls(ip, cert_pem.into_bytes(), key_pem.into_bytes(), app).await
}

/// An event whose parents alpha never saw: alpha fetches them from the origin with
/// `get_missing_events`, verifies them, stores them oldest first, and then the event; all show
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_parents_are_fetched_from_the_origin_before_the_event() {
    gap_filled(false).await;
}

/// When the origin gives no missing events, alpha takes the state at the missing parent from
/// it (`state/`) and stores the event on that state: it shows, its unknown parents do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfillable_gap_falls_back_to_the_state_at_the_parent() {
    gap_filled(true).await;
}

async fn gap_filled(state_fallback: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1, dir.path());
    let subnet = opts.subnet;
    let net = Testnet::start_with(opts).await.expect("testnet starts");
    let Lobby { alice, room, db, state, heads, create, pl, jr } = lobby(&net).await;
    let alpha = net.client("alpha").unwrap();

    // delta.test: a peer of our own, with its key, its certificate from the testnet CA.
    let key = crypto::ServerKey::generate("d1").unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(net.ca_cert_path()).unwrap()).unwrap();
    let delta_ip = Ipv4Addr::new(127, subnet, 0, 96);
    let delta = AsPeer {
        origin: "delta.test".into(),
        key: crypto::ServerKey::from_seed_base64(key.key_id(), &key.seed_base64()).unwrap(),
        http: reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca])
            .resolve("alpha.test", net.node("alpha").unwrap().federation_addr())
            .build()
            .unwrap(),
    };
    const DAVE: &str = "@dave:delta.test";
    let (join, join_v, join_d) = delta.build(
        &room,
        DAVE,
        "swp.room.member",
        Some(DAVE),
        json!({"membership": "join", "display_name": "Dave"}),
        &heads,
        &[create.clone(), pl.clone(), jr.clone()],
    );
    let auth = [create.clone(), pl.clone(), join.clone()];
    let mut prev = (join.clone(), join_d);
    let mut chain = Vec::new();
    for n in 1..=4 {
        let (id, v, d) = delta.build(
            &room,
            DAVE,
            "swp.room.message",
            None,
            json!({"msgtype": "swp.text", "body": format!("m{n}")}),
            std::slice::from_ref(&prev),
            &auth,
        );
        prev = (id.clone(), d);
        chain.push((id, v));
    }
    // The peer answers the three parents, newest first, as a walk back finds them; or nothing,
    // and the room's state after Dave's join for `state/`.
    let missing: Vec<Value> =
        if state_fallback { Vec::new() } else { chain[..3].iter().rev().map(|(_, v)| v.clone()).collect() };
    let mut state_pdus: Vec<Value> = state
        .iter()
        .map(|(_, id)| {
            let pdu: String = db.query_row("SELECT pdu FROM events WHERE event_id = ?1", [id], |r| r.get(0)).unwrap();
            serde_json::from_str(&pdu).unwrap()
        })
        .collect();
    state_pdus.push(join_v.clone());
    let state_answer = json!({"pdus": state_pdus, "auth_chain": []});
    let peer_dir = dir.path().join("delta");
    std::fs::create_dir_all(&peer_dir).unwrap();
    let cert = net.ca.node_cert(&peer_dir, "delta.test").unwrap();
    let handle = gap_peer(
        "delta.test",
        &key,
        delta_ip,
        std::fs::read_to_string(&cert.cert_path).unwrap(),
        std::fs::read_to_string(&cert.key_path).unwrap(),
        missing,
        state_answer,
    )
    .await;
    net.add_host("delta.test", IpAddr::V4(delta_ip), testnet::FEDERATION_PORT);

    let send = |txn: &str| format!("/_scaiwave/federation/v1/send/{txn}");
    let txn = json!({"origin": "delta.test", "origin_ts": now_ms(), "pdus": [join_v], "edus": []});
    let (status, body) = delta.request("alpha.test", "PUT", &send("d1"), Some(&txn)).await;
    assert_eq!((status, &body["data"]["pdus"][&join]), (200, &json!({})), "{body}");
    let (last, last_v) = chain[3].clone();
    let txn = json!({"origin": "delta.test", "origin_ts": now_ms(), "pdus": [last_v], "edus": []});
    let (status, body) = delta.request("alpha.test", "PUT", &send("d2"), Some(&txn)).await;
    assert_eq!((status, &body["data"]["pdus"][&last]), (200, &json!({})), "{body}");

    let r = alpha.get(&format!("/v1/rooms/{room}/messages?limit=50"), Some(&alice.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let bodies: Vec<String> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sender_fqid"] == DAVE && m["event_type"] == "swp.room.message")
        .filter_map(|m| m["content"]["body"].as_str().map(str::to_owned))
        .collect();
    let mut sorted = bodies.clone();
    sorted.sort();
    if state_fallback {
        assert_eq!(bodies, ["m4"], "the event, on the state the origin gave");
        handle.shutdown();
        net.down().await.unwrap();
        return;
    }
    assert_eq!(sorted, ["m1", "m2", "m3", "m4"], "every missing parent was fetched: {bodies:?}");
    let mut reversed = sorted.clone();
    reversed.reverse();
    assert!(bodies == sorted || bodies == reversed, "the page follows the graph: {bodies:?}");
    handle.shutdown();
    net.down().await.unwrap();
}
