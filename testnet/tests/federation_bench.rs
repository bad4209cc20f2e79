//! Federation numbers on the 3-node testnet (issue 14 "Performance"): not tests, measurements.
//! Run them on a release build, one at a time:
//!
//! ```sh
//! cargo test --release -p testnet --test federation_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `fanout`: a send on alpha until it is visible through sync on beta and on gamma (p50/p99);
//! - `sustained`: 16 clients on alpha send; how many federated events per second beta takes;
//! - `catch_up`: beta is stopped while 10,000 events queue on alpha; the drain time once it
//!   starts again.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use testnet::{NodeClient, Testnet, User};

/// Long-polls sync as `u` and records when each message body first shows up.
fn watch(c: NodeClient, u: User, seen: Arc<Mutex<HashMap<String, Instant>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = get(&c, "/v1/sync", &u.access_token).await;
        let mut since = start.data()["next_cursor"].as_str().unwrap_or("0").to_string();
        loop {
            let r = get(&c, &format!("/v1/sync?since={since}&timeout=10000&limit=500"), &u.access_token).await;
            if !r.is_success() {
                continue;
            }
            let now = Instant::now();
            for e in r.data()["events"].as_array().into_iter().flatten() {
                if let Some(body) = e["content"]["body"].as_str() {
                    seen.lock().unwrap().entry(body.to_string()).or_insert(now);
                }
            }
            since = r.data()["next_cursor"].as_str().unwrap_or(&since).to_string();
        }
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn three_node_room(dir: &std::path::Path) -> (Testnet, String, [(NodeClient, User); 3]) {
    let mut opts = options(3, dir);
    // The default tenant's send rate (50/s) would measure the rate limiter.
    for k in ["HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "HOMESERVER_TENANT_DEFAULTS__SEND_BURST"] {
        opts.env.push((k.into(), "1000000".into()));
    }
    opts.log = "warn".into();
    let net = Testnet::start_with(opts).await.expect("testnet starts");
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, "beta", &bob).await;
    invite_and_join(&net, "alpha", &alice, &room, "gamma", &carol).await;
    let c = |n: &str| net.client(n).unwrap();
    let users = [(c("alpha"), alice), (c("beta"), bob), (c("gamma"), carol)];
    (net, room, users)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture on a release build"]
async fn fanout() {
    let dir = tempfile::tempdir().unwrap();
    let (net, room, [(a, alice), (b, bob), (g, carol)]) = three_node_room(dir.path()).await;
    let (seen_b, seen_g) = (Arc::new(Mutex::new(HashMap::new())), Arc::new(Mutex::new(HashMap::new())));
    let wb = watch(b, bob, seen_b.clone());
    let wg = watch(g, carol, seen_g.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = 300;
    let mut sent = HashMap::new();
    for i in 0..n {
        let body = format!("fan-{i}");
        sent.insert(body.clone(), Instant::now());
        send_text(&a, &alice, &room, &body).await;
        // One message in flight at a time: latency, not throughput.
        let key = body.clone();
        let (sb, sg) = (seen_b.clone(), seen_g.clone());
        eventually("fan-out", 30, || {
            let key = key.clone();
            let (sb, sg) = (sb.clone(), sg.clone());
            async move { (sb.lock().unwrap().contains_key(&key) && sg.lock().unwrap().contains_key(&key)).then_some(()) }
        })
        .await;
    }
    for (name, seen) in [("beta", &seen_b), ("gamma", &seen_g)] {
        let seen = seen.lock().unwrap();
        let mut ms: Vec<f64> =
            sent.iter().map(|(k, t0)| (seen[k].duration_since(*t0)).as_secs_f64() * 1000.0).collect();
        ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
        println!(
            "fanout alpha→{name}: {n} sends, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms[ms.len() - 1]
        );
    }
    wb.abort();
    wg.abort();
    net.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture on a release build"]
async fn sustained() {
    let dir = tempfile::tempdir().unwrap();
    let (net, room, [(a, alice), (b, bob), _]) = three_node_room(dir.path()).await;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let w = watch(b, bob, seen.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (clients, per_client) = (16, 250);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (a, alice, room) = (a.clone(), alice.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                send_text(&a, &alice, &room, &format!("s-{c}-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent_in = t0.elapsed();
    let total = clients * per_client;
    let s2 = seen.clone();
    eventually("beta takes every event", 300, || {
        let s2 = s2.clone();
        async move { (s2.lock().unwrap().len() >= total).then_some(()) }
    })
    .await;
    let all_in = t0.elapsed();
    println!(
        "sustained: {total} sends on alpha in {:.2} s ({:.0}/s); all on beta after {:.2} s ({:.0} federated events/s)",
        sent_in.as_secs_f64(),
        total as f64 / sent_in.as_secs_f64(),
        all_in.as_secs_f64(),
        total as f64 / all_in.as_secs_f64()
    );
    w.abort();
    net.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture on a release build"]
async fn catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut net, room, [(a, alice), (b, bob), _]) = three_node_room(dir.path()).await;
    net.stop_node("beta").await.unwrap();
    let n = 10_000;
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (a, alice, room) = (a.clone(), alice.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..n).step_by(16) {
                send_text(&a, &alice, &room, &format!("q-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t0 = Instant::now();
    net.start_node("beta").await.unwrap();
    let last = format!("q-{}", n - 1);
    // Delivery is in order: once alpha's newest event is on beta, everything before it is.
    // Polling for that one event keeps the load generator's reads off the measurement.
    let newest = get(&a, &format!("/v1/rooms/{room}/messages?limit=1"), &alice.access_token).await;
    let newest = newest.data()[0]["id"].as_str().expect("alpha's newest message").to_string();
    eventually("beta holds alpha's newest event", 600, || {
        let (b, bob, path) = (b.clone(), bob.clone(), format!("/v1/rooms/{room}/events/{newest}"));
        async move { b.get(&path, Some(&bob.access_token)).await.ok().filter(|r| r.is_success()).map(|_| ()) }
    })
    .await;
    let drained = t0.elapsed();
    let t = timeline(&b, &bob, &room).await;
    let got = t.iter().filter(|m| m["content"]["body"].as_str().is_some_and(|s| s.starts_with("q-"))).count();
    assert_eq!(got, n, "every queued event is on beta, once");
    assert!(t.iter().any(|m| m["content"]["body"] == last.as_str()));
    println!("catch-up: {n} events drained to beta {:.2} s after it started", drained.as_secs_f64());
    net.down().await.unwrap();
}
