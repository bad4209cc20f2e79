//! Durable delivery across real nodes (`docs/federation.md`, "Delivery: the per-destination
//! sender"): the peers' admin list, and delivery through stops, kills and dead peers.
//!
//! The homeserver binary and the subnets come from `support` (shared by the test files).

mod support;

use std::time::Duration;

use support::{federated_room, invite_and_join, options, send_text, try_timeline};
use testnet::{NodeClient, Testnet, User, poll_until};

async fn start(nodes: usize, dir: &std::path::Path) -> Testnet {
    let mut opts = options(nodes, dir);
    // The default tenant's send rate (50/s) would make the bursts slow.
    for k in ["HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "HOMESERVER_TENANT_DEFAULTS__SEND_BURST"] {
        opts.env.push((k.into(), "1000000".into()));
    }
    Testnet::start_with(opts).await.expect("testnet starts")
}

/// `alice` on `home` makes a federated room and each `(node, user)` joins it; answers the
/// room id once every joiner is in on both sides.
async fn shared_room(net: &Testnet, home: &str, alice: &User, joiners: &[(&str, &User)]) -> String {
    let room = federated_room(net, home, alice, "group", "fed").await;
    for (node, user) in joiners {
        invite_and_join(net, home, alice, &room, node, user).await;
    }
    room
}

async fn send(c: &NodeClient, user: &User, room: &str, body: &str) {
    send_text(c, user, room, body).await;
}

/// Every message body in the room as `user` sees it, oldest first (all pages); `None` while
/// the node does not answer.
async fn bodies(c: &NodeClient, user: &User, room: &str) -> Option<Vec<String>> {
    try_timeline(c, user, room).await.ok().map(|m| support::bodies(&m))
}

/// Waits until `user` on `node` sees exactly `expected` messages whose body starts with
/// `prefix`, and checks each arrived once.
async fn wait_for_burst(net: &Testnet, node: &str, user: &User, room: &str, prefix: &str, expected: usize) {
    let c = net.client(node).unwrap();
    let seen = poll_until("the burst arrives", Duration::from_secs(120), || async {
        let got: Vec<String> = bodies(&c, user, room).await?.into_iter().filter(|b| b.starts_with(prefix)).collect();
        (got.len() >= expected).then_some(got)
    })
    .await
    .unwrap();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "every message exactly once");
    assert_eq!(seen.len(), expected);
}

async fn peers(net: &Testnet, node: &str) -> testnet::Resp {
    let token = net.admin_token(node).await.unwrap();
    net.client(node).unwrap().get("/v1/admin/federation/peers", Some(&token)).await.unwrap()
}

/// The admin list answers from a running node; a non-admin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_list_is_for_server_admins() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = start(2, dir.path()).await;
    let r = peers(&net, "alpha").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.data().is_array(), "{}", r.body);
    for p in r.data().as_array().unwrap() {
        for key in
            ["server_name", "last_seen", "last_success", "last_error", "queue_depth", "backoff_until", "failures"]
        {
            assert!(p.get(key).is_some(), "{key} missing: {p}");
        }
    }
    let bob = net.register("alpha", "bob").await.unwrap();
    let r = net.client("alpha").unwrap().get("/v1/admin/federation/peers", Some(&bob.access_token)).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), "SW_AUTH_INSUFFICIENT_PERMISSION");
    let r = net.client("alpha").unwrap().get("/v1/admin/federation/peers", None).await.unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    net.stop_all().await.unwrap();
}

/// A peer stopped after the first 100 messages of a burst receives all of them, the 500 sent
/// while it was down too, exactly once, after it starts again; meanwhile the admin list shows
/// its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_gets_the_whole_burst_once_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = start(2, dir.path()).await;
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, &[("beta", &bob)]).await;
    let c = net.client("alpha").unwrap();

    // Stopped halfway: some of the first half may be in flight when beta goes down.
    for i in 0..100 {
        send(&c, &alice, &room, &format!("burst-{i:03}")).await;
    }
    net.stop_node("beta").await.unwrap();
    for i in 100..600 {
        send(&c, &alice, &room, &format!("burst-{i:03}")).await;
    }
    let r = peers(&net, "alpha").await;
    let beta = r.data().as_array().unwrap().iter().find(|p| p["server_name"] == "beta.test").cloned().unwrap();
    assert!(beta["queue_depth"].as_i64().unwrap() > 0, "{beta}");
    net.start_node("beta").await.unwrap();
    wait_for_burst(&net, "beta", &bob, &room, "burst-", 600).await;
    // Order kept: positions follow the graph.
    let seen: Vec<String> = bodies(&net.client("beta").unwrap(), &bob, &room)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.starts_with("burst-"))
        .collect();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    net.stop_all().await.unwrap();
}

/// A peer far behind (more than `catch_up_above` events) catches up newest first: the sender
/// sends the newest event of each room and the peer pulls the rest through it (missing events,
/// then backfill pages), until every message is there, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_far_behind_catches_up_newest_first_and_pulls_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(2, dir.path());
    for k in ["HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "HOMESERVER_TENANT_DEFAULTS__SEND_BURST"] {
        opts.env.push((k.into(), "1000000".into()));
    }
    opts.env.push(("HOMESERVER_FEDERATION__CATCH_UP_ABOVE".into(), "50".into()));
    opts.log = "warn,homeserver::fed::sender=info".into();
    let mut net = Testnet::start_with(opts).await.expect("testnet starts");
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let big = shared_room(&net, "alpha", &alice, &[("beta", &bob)]).await;
    let small = shared_room(&net, "alpha", &alice, &[("beta", &bob)]).await;
    let c = net.client("alpha").unwrap();
    send(&c, &alice, &big, "before").await;
    wait_for_burst(&net, "beta", &bob, &big, "before", 1).await;

    net.stop_node("beta").await.unwrap();
    for i in 0..300 {
        send(&c, &alice, &big, &format!("big-{i:03}")).await;
        if i % 3 == 0 {
            send(&c, &alice, &small, &format!("small-{i:03}")).await;
        }
    }
    net.start_node("beta").await.unwrap();
    wait_for_burst(&net, "beta", &bob, &big, "big-", 300).await;
    wait_for_burst(&net, "beta", &bob, &small, "small-", 100).await;
    for (room, prefix) in [(&big, "big-"), (&small, "small-")] {
        let seen: Vec<String> = bodies(&net.client("beta").unwrap(), &bob, room)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.starts_with(prefix))
            .collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "in order");
    }
    let log = std::fs::read_to_string(&net.node("alpha").unwrap().log_path).unwrap();
    assert!(log.contains("catching up"), "alpha caught beta up newest first");
    net.stop_all().await.unwrap();
}

/// A dead peer does not slow delivery to a live one, whether it hangs (its process frozen: its
/// connections open and nothing answers) or refuses (killed): beta gets every message while
/// alpha waits on or backs off from gamma, and gamma gets them all once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_does_not_slow_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = start(3, dir.path()).await;
    // Alpha waits ten minutes for an answer: a sender that let a hung peer hold the others
    // would keep beta waiting far past the polls' bounds.
    net.set_node_env("alpha", "HOMESERVER_FEDERATION__REQUEST_TIMEOUT_SECS", "600").unwrap();
    net.stop_node("alpha").await.unwrap();
    net.start_node("alpha").await.unwrap();
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, &[("beta", &bob), ("gamma", &carol)]).await;
    let c = net.client("alpha").unwrap();

    let gamma_pid = net.node("gamma").unwrap().pid().expect("gamma runs");
    // SAFETY: kill(2) has no memory effects; gamma is this test's own child process.
    assert_eq!(unsafe { libc::kill(gamma_pid as libc::pid_t, libc::SIGSTOP) }, 0);
    for i in 0..25 {
        send(&c, &alice, &room, &format!("hung-{i:02}")).await;
    }
    // Bounded by the poll, far below alpha's timeout for gamma.
    wait_for_burst(&net, "beta", &bob, &room, "hung-", 25).await;
    // And gamma truly hangs: what was sent to it is still queued.
    let r = peers(&net, "alpha").await;
    let gamma = r.data().as_array().unwrap().iter().find(|p| p["server_name"] == "gamma.test").cloned().unwrap();
    assert!(gamma["queue_depth"].as_i64().unwrap() > 0, "{gamma}");

    // Killed while frozen: what alpha had in flight to it fails, later connections are refused.
    net.kill_node("gamma").await.unwrap();
    for i in 0..25 {
        send(&c, &alice, &room, &format!("dead-{i:02}")).await;
    }
    wait_for_burst(&net, "beta", &bob, &room, "dead-", 25).await;
    let gamma = poll_until("alpha counts gamma's failures", Duration::from_secs(60), || async {
        let r = peers(&net, "alpha").await;
        let gamma = r.data().as_array()?.iter().find(|p| p["server_name"] == "gamma.test").cloned()?;
        (gamma["failures"].as_i64()? >= 1).then_some(gamma)
    })
    .await
    .unwrap();
    assert!(gamma["last_error"].is_string(), "{gamma}");

    net.start_node("gamma").await.unwrap();
    wait_for_burst(&net, "gamma", &carol, &room, "hung-", 25).await;
    wait_for_burst(&net, "gamma", &carol, &room, "dead-", 25).await;
    net.stop_all().await.unwrap();
}

/// A peer killed while transactions are in flight loses nothing: the batch it never answered
/// is sent again (same content, same transaction id) once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = start(2, dir.path()).await;
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, &[("beta", &bob)]).await;
    let c = net.client("alpha").unwrap();

    let sender = {
        let (c, alice, room) = (c.clone(), alice.clone(), room.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                send(&c, &alice, &room, &format!("kill-{i:03}")).await;
            }
        })
    };
    // Kill beta once some of the stream has landed, so later batches are cut mid-flight.
    let beta = net.client("beta").unwrap();
    poll_until("the first messages land", Duration::from_secs(60), || async {
        let n = bodies(&beta, &bob, &room).await?.iter().filter(|b| b.starts_with("kill-")).count();
        (n >= 10).then_some(())
    })
    .await
    .unwrap();
    net.kill_node("beta").await.unwrap();
    sender.await.unwrap();
    // Alpha restarts too: its cursor and back-off come back from the database.
    net.stop_node("alpha").await.unwrap();
    net.start_node("alpha").await.unwrap();
    net.start_node("beta").await.unwrap();
    wait_for_burst(&net, "beta", &bob, &room, "kill-", 150).await;
    net.stop_all().await.unwrap();
}

/// Catch-up measured: beta stopped while `CATCHUP_N` messages (10,000) queue on alpha, then
/// started; prints the time until beta shows the last one. `CATCHUP_ABOVE` sets alpha's
/// `catch_up_above` (default 1000: newest first and pulled; 0: replayed in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture on a release build"]
async fn catch_up_measure() {
    use futures_util::StreamExt;
    let n: usize = std::env::var("CATCHUP_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let above = std::env::var("CATCHUP_ABOVE").unwrap_or_else(|_| "1000".into());
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(2, dir.path());
    for k in ["HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "HOMESERVER_TENANT_DEFAULTS__SEND_BURST"] {
        opts.env.push((k.into(), "1000000".into()));
    }
    opts.env.push(("HOMESERVER_FEDERATION__CATCH_UP_ABOVE".into(), above.clone()));
    opts.env.push(("HOMESERVER_FEDERATION__BACKOFF_CAP_SECS".into(), "1".into()));
    let mut net = Testnet::start_with(opts).await.expect("testnet starts");
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, &[("beta", &bob)]).await;
    let c = net.client("alpha").unwrap();
    net.stop_node("beta").await.unwrap();
    let (c_ref, alice_ref, room_ref) = (&c, &alice, &room);
    futures_util::stream::iter(0..n)
        .map(|i| async move { send(c_ref, alice_ref, room_ref, &format!("queued-{i:05}")).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    send(&c, &alice, &room, "the last one").await;
    let start = std::time::Instant::now();
    net.start_node("beta").await.unwrap();
    let beta = net.client("beta").unwrap();
    poll_until("the last message arrives", Duration::from_secs(600), || async {
        let r = beta.get(&format!("/v1/rooms/{room}/messages?dir=b&limit=1"), Some(&bob.access_token)).await.ok()?;
        r.data().as_array()?.first()?["content"]["body"].as_str().filter(|b| *b == "the last one").map(|_| ())
    })
    .await
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let db = support::node_db(&net, "beta");
    let held: i64 = db
        .query_row("SELECT COUNT(*) FROM events WHERE room_id = ?1 AND content LIKE '%queued-%'", [&room], |r| r.get(0))
        .unwrap();
    println!(
        "catch-up of {n} events (catch_up_above {above}): {secs:.2} s from start to the last one shown, \
         {held} held by beta then ({:.0} events/s)",
        held as f64 / secs
    );
    net.stop_all().await.unwrap();
}
