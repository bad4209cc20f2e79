//! Backfill through real nodes: a server that joins a room late fetches its history through
//! the admin endpoint and, for a client paging back, on demand through `/messages`; every
//! event verified, in the graph's order, below what the server had. The serving side answers
//! only the room's events, only to servers of the room.

mod support;

use std::time::Instant;

use serde_json::{Value, json};
use support::{AsPeer, bodies, federated_room, get, invite_and_join, ok, options, post, send_text, timeline};
use testnet::{NodeClient, Testnet, User};

const FED: &str = "/_scaiwave/federation/v1";

async fn fast_testnet(nodes: usize, dir: &std::path::Path) -> Testnet {
    let mut opts = options(nodes, dir);
    opts.log = "warn,homeserver::fed::backfill=info".into();
    // The default tenant's send rate (50/s) would make writing history slow.
    for k in ["HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "HOMESERVER_TENANT_DEFAULTS__SEND_BURST"] {
        opts.env.push((k.into(), "1000000".into()));
    }
    Testnet::start_with(opts).await.expect("testnet starts")
}

/// `n` messages by `user`, from 8 senders at once.
async fn write_history(c: &NodeClient, user: &User, room: &str, n: usize) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (c, user, room) = (c.clone(), user.clone(), room.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(8) {
                send_text(&c, &user, &room, &format!("h{i:05}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every message body of the room as `user` pages it backwards, oldest first; the last page's
/// meta.
async fn page_back(c: &NodeClient, user: &User, room: &str, limit: usize) -> (Vec<String>, Value) {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/v1/rooms/{room}/messages?limit={limit}");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let r = get(c, &path, &user.access_token).await;
        let page = ok(&r, "page back").as_array().cloned().unwrap_or_default();
        out.extend(bodies(&page));
        let meta = r.body["meta"].clone();
        if meta["has_more"] != true {
            out.reverse();
            return (out, meta);
        }
        from = meta["next_cursor"].as_str().map(str::to_string);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_server_backfills_history_in_order_by_admin_request_and_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let net = fast_testnet(3, dir.path()).await;
    let (alpha, beta, gamma) =
        (net.client("alpha").unwrap(), net.client("beta").unwrap(), net.client("gamma").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    let room = federated_room(&net, "alpha", &alice, "group", "History").await;
    write_history(&alpha, &alice, &room, 1000).await;
    let history = bodies(&timeline(&alpha, &alice, &room).await);
    assert_eq!(history.len(), 1000);
    // Alpha has the room from its creation: its pages end at the start, no gap.
    let (_, meta) = page_back(&alpha, &alice, &room, 500).await;
    assert_eq!(meta["gap_before"], false, "{meta}");

    // The serving side: a server of no member gets nothing; another room's events never come.
    let as_gamma = AsPeer::node(&net, "gamma");
    let first = timeline(&alpha, &alice, &room).await[0]["id"].as_str().unwrap().to_string();
    let (status, answer) =
        as_gamma.request("alpha.test", "GET", &format!("{FED}/rooms/{room}/backfill?v={first}&limit=10"), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("SW_ROOM_NOT_FOUND")), "{answer}");

    // Beta joins after the history was written: its admin backfills through the endpoint.
    invite_and_join(&net, "alpha", &alice, &room, "beta", &bob).await;
    let other = federated_room(&net, "alpha", &alice, "group", "Other").await;
    let elsewhere = send_text(&alpha, &alice, &other, "in another room").await["id"].as_str().unwrap().to_string();
    let as_beta = AsPeer::node(&net, "beta");
    let (status, answer) = as_beta
        .request("alpha.test", "GET", &format!("{FED}/rooms/{room}/backfill?v={elsewhere}&v={first}&limit=50"), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let pdus = answer["data"]["pdus"].as_array().unwrap();
    assert!(!pdus.is_empty() && pdus.iter().all(|p| p["room_id"] == room.as_str()), "only the room's events: {answer}");

    let path = format!("/v1/admin/rooms/{room}/federation/backfill");
    let refused = post(&beta, &path, &bob.access_token, &json!({"limit": 10})).await;
    assert_eq!((refused.status, refused.code()), (403, "SW_ROOM_FORBIDDEN"), "{}", refused.body);
    let admin = net.admin_token("beta").await.unwrap();
    for bad in [json!({"limit": 0}), json!({"limit": 10001}), json!({"server": "beta.test"}), json!({"limit": "x"})] {
        let r = post(&beta, &path, &admin, &bad).await;
        assert_eq!((r.status, r.code()), (400, "SW_BAD_REQUEST"), "{bad}: {}", r.body);
    }
    let t0 = Instant::now();
    let done = ok(&post(&beta, &path, &admin, &json!({"server": "alpha.test", "limit": 5000})).await, "backfill");
    println!("beta backfilled {} events in {:?}", done["fetched"], t0.elapsed());
    let shown = bodies(&timeline(&beta, &bob, &room).await);
    let missing: Vec<&String> = history.iter().filter(|h| !shown.contains(h)).collect();
    assert!(missing.is_empty(), "beta lacks {} messages: {missing:?} ({done})", missing.len());
    assert_eq!(shown, history, "beta shows the history in alpha's order");
    assert!(done["fetched"].as_u64().unwrap() >= 1000, "{done}");
    assert_eq!(done["history_complete"], true, "{done}");
    let (paged, meta) = page_back(&beta, &bob, &room, 100).await;
    assert_eq!(paged, history);
    assert_eq!(meta["gap_before"], false, "{meta}");
    // Sending after the backfill builds on the present, not on the past.
    send_text(&beta, &bob, &room, "after the backfill").await;
    support::eventually("alpha gets beta's message", 30, || async {
        let b = bodies(&timeline(&alpha, &alice, &room).await);
        (b.last().map(String::as_str) == Some("after the backfill")).then_some(())
    })
    .await;

    // Gamma joins late too; carol only pages back, and history arrives on demand.
    invite_and_join(&net, "alpha", &alice, &room, "gamma", &carol).await;
    let (paged, meta) = page_back(&gamma, &carol, &room, 100).await;
    assert_eq!(meta["gap_before"], false, "the start of the room was reached: {meta}");
    let mut want = history.clone();
    want.push("after the backfill".into());
    assert_eq!(paged, want, "carol pages through the whole history in order");
    net.down().await.unwrap();
}

/// Backfill throughput: a server joins a room of 10,000 messages and backfills all of them
/// through the admin endpoint; prints verified and stored events per second.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture on a release build"]
async fn backfill_10000_measure() {
    let dir = tempfile::tempdir().unwrap();
    let net = fast_testnet(2, dir.path()).await;
    let (alpha, beta) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = federated_room(&net, "alpha", &alice, "group", "Long history").await;
    let n: usize = std::env::var("BACKFILL_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    write_history(&alpha, &alice, &room, n).await;
    invite_and_join(&net, "alpha", &alice, &room, "beta", &bob).await;
    let admin = net.admin_token("beta").await.unwrap();
    let members = get(&beta, &format!("/v1/rooms/{room}/members"), &bob.access_token).await;
    println!("members on beta: {}", members.body);
    let path = format!("/v1/admin/rooms/{room}/federation/backfill");
    let t0 = Instant::now();
    let done = ok(&post(&beta, &path, &admin, &json!({"limit": 10000})).await, "backfill");
    let secs = t0.elapsed().as_secs_f64();
    let fetched = done["fetched"].as_u64().unwrap();
    println!(
        "backfill: {fetched} events verified and stored in {secs:.2} s = {:.0} events/s (complete: {})",
        fetched as f64 / secs,
        done["history_complete"]
    );
    let log = std::fs::read_to_string(&net.node("beta").unwrap().log_path).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("backfill stored")) {
        println!("{line}");
    }
    assert_eq!(bodies(&timeline(&beta, &bob, &room).await).len(), n);
    net.down().await.unwrap();
}
