//! Convergence under faults through real nodes: servers cut apart keep accepting their users'
//! changes and messages; once healed, every server holds the same events and resolves the same
//! state, whatever order things arrived in — also when a power-level change races a ban (the
//! classic "state reset"), and against a banned participant's server sending concurrently with
//! the ban.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{AsPeer, bodies, eventually, get, invite_and_join, ok, options, post, put, send_text, timeline};
use testnet::{NodeClient, Testnet, User};

/// The tests of this file run one at a time: each drives three servers through faults, and
/// four such testnets at once on a two-core machine measure the machine, not convergence.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A testnet whose senders retry within two seconds after a partition heals.
async fn quick_retry_testnet(nodes: usize, dir: &std::path::Path) -> Testnet {
    let mut opts = options(nodes, dir);
    opts.env.push(("HOMESERVER_FEDERATION__BACKOFF_CAP_SECS".into(), "2".into()));
    opts.env.push(("HOMESERVER_FEDERATION__BACKOFF_BASE_MS".into(), "200".into()));
    Testnet::start_with(opts).await.expect("testnet starts")
}

/// A node's replica of the room: the events it holds and its current (resolved) state.
#[derive(Debug, PartialEq, Eq)]
struct Replica {
    events: BTreeSet<String>,
    state: BTreeSet<(String, String, String)>,
}

fn replica(net: &Testnet, node: &str, room: &str) -> Replica {
    let db = rusqlite::Connection::open(net.node(node).unwrap().data_dir.join("homeserver.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    // Held in any form but rejected: accepted, soft-failed, or an outlier (what a server that
    // joined late holds of the room's beginning, from the state its join brought).
    let mut q = db.prepare("SELECT event_id FROM events WHERE room_id = ?1 AND status <> 2").unwrap();
    let events = q.query_map([room], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    let mut q = db.prepare("SELECT event_type, state_key, event_id FROM room_state WHERE room_id = ?1").unwrap();
    let state =
        q.query_map([room], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
    Replica { events, state }
}

/// The room as each client sees it: name, and every member's membership and power.
async fn view(c: &NodeClient, user: &User, room: &str) -> (Value, Vec<(String, String, i64)>) {
    let r = ok(&get(c, &format!("/v1/rooms/{room}"), &user.access_token).await, "room");
    let mut members = Vec::new();
    for filter in ["join", "ban"] {
        let list =
            ok(&get(c, &format!("/v1/rooms/{room}/members?membership={filter}"), &user.access_token).await, "members");
        for m in list.as_array().unwrap() {
            members.push((
                m["fqid"].as_str().unwrap().to_string(),
                m["membership"].as_str().unwrap().to_string(),
                m["power_level"].as_i64().unwrap_or(0),
            ));
        }
    }
    members.sort();
    (r["name"].clone(), members)
}

/// The participant id `c`'s server gives `fqid` in the room.
async fn member_id(c: &NodeClient, user: &User, room: &str, fqid: &str) -> String {
    let list = ok(&get(c, &format!("/v1/rooms/{room}/members"), &user.access_token).await, "members");
    list.as_array().unwrap().iter().find(|m| m["fqid"] == fqid).unwrap()["participant_id"].as_str().unwrap().to_string()
}

async fn set_power(c: &NodeClient, user: &User, room: &str, fqid: &str, level: i64) {
    let id = member_id(c, user, room, fqid).await;
    ok(
        &put(
            c,
            &format!("/v1/rooms/{room}/members/{id}/power-level"),
            &user.access_token,
            &json!({"power_level": level}),
        )
        .await,
        "power level",
    );
}

/// Waits until every node holds the same replica of the room and shows it alike; answers it.
/// On failure, says how the replicas differ.
async fn converged(
    net: &Testnet,
    room: &str,
    users: &[(&str, &User)],
) -> (Replica, (Value, Vec<(String, String, i64)>)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let replicas: Vec<Replica> = users.iter().map(|(n, _)| replica(net, n, room)).collect();
        let mut views = Vec::new();
        for (n, u) in users {
            views.push(view(&net.client(n).unwrap(), u, room).await);
        }
        if replicas.windows(2).all(|w| w[0] == w[1]) && views.windows(2).all(|w| w[0] == w[1]) {
            return (replicas.into_iter().next().unwrap(), views.into_iter().next().unwrap());
        }
        if std::time::Instant::now() > deadline {
            let mut why = String::new();
            for (i, (n, _)) in users.iter().enumerate().skip(1) {
                let (a, b) = (&replicas[0], &replicas[i]);
                why.push_str(&format!(
                    "\n{} vs {n}: events only in {}: {:?}; only in {n}: {:?}; state only in {}: {:?}; only in {n}: {:?}; views {:?} / {:?}",
                    users[0].0,
                    users[0].0,
                    a.events.difference(&b.events).collect::<Vec<_>>(),
                    b.events.difference(&a.events).collect::<Vec<_>>(),
                    users[0].0,
                    a.state.difference(&b.state).collect::<Vec<_>>(),
                    b.state.difference(&a.state).collect::<Vec<_>>(),
                    views[0],
                    views[i],
                ));
            }
            panic!("the replicas did not converge within 120 s:{why}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

struct Room3 {
    net: Testnet,
    room: String,
    alice: User,
    bob: User,
    carol: User,
}

/// Alice's room on alpha with Bob (beta) and Carol (gamma) joined.
async fn room_of_three(dir: &std::path::Path) -> Room3 {
    let net = quick_retry_testnet(3, dir).await;
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    let room = support::federated_room(&net, "alpha", &alice, "group", "Converge").await;
    invite_and_join(&net, "alpha", &alice, &room, "beta", &bob).await;
    invite_and_join(&net, "alpha", &alice, &room, "gamma", &carol).await;
    Room3 { net, room, alice, bob, carol }
}

/// Waits until `c` shows `fqid` with `power` in the room.
async fn sees_power(c: &NodeClient, user: &User, room: &str, fqid: &str, power: i64) {
    eventually("a power level replicates", 30, || async {
        let (_, members) = view(c, user, room).await;
        members.iter().any(|(f, _, p)| f == fqid && *p == power).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_servers_converge_on_one_history_and_one_state() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Room3 { mut net, room, alice, bob, carol } = room_of_three(dir.path()).await;
    let (alpha, beta) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    set_power(&alpha, &alice, &room, &bob.fqid, 100).await;
    sees_power(&beta, &bob, &room, &bob.fqid, 100).await;

    // Cut alpha from beta (gamma still reaches both): each side renames the room, changes
    // Carol's power and talks.
    net.partition("alpha", "beta").unwrap();
    ok(
        &put(&alpha, &format!("/v1/rooms/{room}/name"), &alice.access_token, &json!({"name": "Named on alpha"})).await,
        "rename",
    );
    ok(
        &put(&beta, &format!("/v1/rooms/{room}/name"), &bob.access_token, &json!({"name": "Named on beta"})).await,
        "rename",
    );
    set_power(&alpha, &alice, &room, &carol.fqid, 10).await;
    set_power(&beta, &bob, &room, &carol.fqid, 20).await;
    for i in 0..5 {
        send_text(&alpha, &alice, &room, &format!("alpha in the partition {i}")).await;
        send_text(&beta, &bob, &room, &format!("beta in the partition {i}")).await;
    }
    net.heal().unwrap();
    // One more message from each side after healing names both branches as its parents.
    send_text(&alpha, &alice, &room, "alpha after healing").await;
    send_text(&beta, &bob, &room, "beta after healing").await;

    let users = [("alpha", &alice), ("beta", &bob), ("gamma", &carol)];
    let (replica, (name, members)) = converged(&net, &room, &users).await;
    assert!(name == "Named on alpha" || name == "Named on beta", "{name}");
    let carol_power = members.iter().find(|(f, _, _)| *f == carol.fqid).unwrap().2;
    assert!(carol_power == 10 || carol_power == 20, "{members:?}");
    assert!(replica.state.iter().any(|(t, _, _)| t == "swp.room.name"));
    for (n, u) in users {
        let b = bodies(&timeline(&net.client(n).unwrap(), u, &room).await);
        for side in ["alpha", "beta"] {
            for i in 0..5 {
                assert!(b.contains(&format!("{side} in the partition {i}")), "{n} lacks {side}'s message {i}: {b:?}");
            }
        }
    }
    net.down().await.unwrap();
}

/// The state-reset case: alpha's admin demotes Bob while Bob, cut off on beta, bans Carol with
/// the power he had. Every server resolves the same: the demotion (by the higher power) is
/// applied first, so the ban does not hold, and nobody gets back power they lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_racing_a_ban_resolves_alike_everywhere() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Room3 { mut net, room, alice, bob, carol } = room_of_three(dir.path()).await;
    let (alpha, beta) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    set_power(&alpha, &alice, &room, &bob.fqid, 50).await;
    sees_power(&beta, &bob, &room, &bob.fqid, 50).await;

    net.partition("alpha", "beta").unwrap();
    set_power(&alpha, &alice, &room, &bob.fqid, 0).await;
    ok(&post(&beta, &format!("/v1/rooms/{room}/ban"), &bob.access_token, &json!({"fqid": carol.fqid})).await, "ban");
    net.heal().unwrap();
    send_text(&alpha, &alice, &room, "alpha after healing").await;

    let users = [("alpha", &alice), ("beta", &bob), ("gamma", &carol)];
    let (_, (_, members)) = converged(&net, &room, &users).await;
    let of = |fqid: &str| members.iter().find(|(f, _, _)| f == fqid).cloned().unwrap();
    assert_eq!(of(&bob.fqid).2, 0, "bob's demotion holds everywhere: {members:?}");
    assert_eq!(of(&carol.fqid).1, "join", "the ban by a demoted moderator does not hold: {members:?}");
    assert_eq!(of(&alice.fqid).2, 100, "{members:?}");
    net.down().await.unwrap();
}

/// Moderation of remote participants: a ban replicates and every server enforces it, also
/// against what the banned participant's server sent concurrently with it; a moderator's
/// redaction of a remote message replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_bans_and_redactions_are_enforced_everywhere() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Room3 { mut net, room, alice, bob, carol } = room_of_three(dir.path()).await;
    let (alpha, beta, gamma) =
        (net.client("alpha").unwrap(), net.client("beta").unwrap(), net.client("gamma").unwrap());
    let said = send_text(&beta, &bob, &room, "bob says something regrettable").await;
    let said_id = said["id"].as_str().unwrap().to_string();
    eventually("bob's message reaches alpha", 30, || async {
        bodies(&timeline(&alpha, &alice, &room).await)
            .contains(&"bob says something regrettable".to_string())
            .then_some(())
    })
    .await;
    ok(
        &post(&alpha, &format!("/v1/rooms/{room}/events/{said_id}/redact"), &alice.access_token, &json!({})).await,
        "redact",
    );
    eventually("the redaction replicates to beta and gamma", 30, || async {
        for (c, u) in [(&beta, &bob), (&gamma, &carol)] {
            let t = timeline(c, u, &room).await;
            let m = t.iter().find(|m| m["id"] == said_id.as_str());
            if std::env::var("DEBUG_CONVERGE").is_ok() {
                println!("{}: {:?}", u.fqid, m.map(|m| m["redacted_at"].clone()));
            }
            m?["redacted_at"].as_str()?;
        }
        Some(())
    })
    .await;

    // Alpha bans Carol while gamma is cut off from alpha; beta learns of the ban, then Carol's
    // server sends her message, not knowing yet.
    net.partition("alpha", "gamma").unwrap();
    ok(&post(&alpha, &format!("/v1/rooms/{room}/ban"), &alice.access_token, &json!({"fqid": carol.fqid})).await, "ban");
    eventually("beta sees carol banned", 30, || async {
        let (_, members) = view(&beta, &bob, &room).await;
        members.iter().any(|(f, m, _)| *f == carol.fqid && m == "ban").then_some(())
    })
    .await;
    // Gamma may hear of the ban from beta's next events; she sends before either reaches it.
    send_text(&gamma, &carol, &room, "carol concurrent with her ban").await;
    net.heal().unwrap();
    send_text(&alpha, &alice, &room, "alpha after the ban").await;
    eventually("gamma learns of the ban", 60, || async {
        let r = post(&gamma, &format!("/v1/rooms/{room}/send"), &carol.access_token,
            &json!({"event_type": "swp.room.message", "content": {"msgtype": "swp.text", "body": "carol after her ban"}})).await;
        (r.status == 403 || r.status == 404).then_some(())
    })
    .await;
    eventually("beta and alpha hear from each other after healing", 30, || async {
        bodies(&timeline(&beta, &bob, &room).await).contains(&"alpha after the ban".to_string()).then_some(())
    })
    .await;
    // Carol's concurrent message reached alpha and beta, whose current state bans her: stored,
    // never shown.
    eventually("alpha has carol's concurrent message stored", 60, || async {
        let db = rusqlite::Connection::open(net.node("alpha").unwrap().data_dir.join("homeserver.db")).ok()?;
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM events WHERE room_id = ?1 AND content LIKE '%carol concurrent%'",
                [&room],
                |r| r.get(0),
            )
            .ok()?;
        (n > 0).then_some(())
    })
    .await;
    for (c, u) in [(&alpha, &alice), (&beta, &bob)] {
        let b = bodies(&timeline(c, u, &room).await);
        assert!(!b.iter().any(|m| m.starts_with("carol")), "a banned participant's messages never show: {b:?}");
    }
    // A message built on the ban is refused outright (the state before it bans her).
    let as_gamma = AsPeer::node(&net, "gamma");
    let db = support::node_db(&net, "alpha");
    let (_, heads) = support::graph_of(&db, &room);
    let id_of = |t: &str, k: &str| -> String {
        db.query_row(
            "SELECT event_id FROM room_state WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3",
            [&room, t, k],
            |r| r.get(0),
        )
        .unwrap()
    };
    let auth =
        [id_of("swp.room.create", ""), id_of("swp.room.power_levels", ""), id_of("swp.room.member", &carol.fqid)];
    let content = json!({"msgtype": "swp.text", "body": "carol forged after her ban"});
    let (id, pdu, _) = as_gamma.build(&room, &carol.fqid, "swp.room.message", None, content, &heads, &auth);
    let body = json!({"origin": "gamma.test", "origin_ts": support::now_ms(), "pdus": [pdu], "edus": []});
    let (status, answer) =
        as_gamma.request("alpha.test", "PUT", "/_scaiwave/federation/v1/send/after-ban-1", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["pdus"][&id]["error"]["code"], "SW_ROOM_FORBIDDEN", "{answer}");
    net.down().await.unwrap();
}

/// A small deterministic generator (xorshift64*): the run is the same for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Twenty seeded rounds of faults — a partition, a heal, a node killed or stopped and started
/// again — each followed by concurrent sends and renames on every live node. At the end, with
/// everything healed and running: every acknowledged message is on every server, and every
/// server holds the same events and state. `CONVERGE_SEED` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_random_rounds_of_faults_end_in_one_history() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let seed: u64 = std::env::var("CONVERGE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261203);
    println!("CONVERGE_SEED={seed}");
    let mut rng = Rng(seed.max(1));
    let dir = tempfile::tempdir().unwrap();
    let Room3 { mut net, room, alice, bob, carol } = room_of_three(dir.path()).await;
    let alpha = net.client("alpha").unwrap();
    set_power(&alpha, &alice, &room, &bob.fqid, 100).await;
    sees_power(&net.client("beta").unwrap(), &bob, &room, &bob.fqid, 100).await;
    let nodes: [&'static str; 3] = ["alpha", "beta", "gamma"];
    let users = [&alice, &bob, &carol];
    let mut down = [false; 3];
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..20 {
        match rng.below(4) {
            0 => {
                let a = rng.below(3) as usize;
                let b = (a + 1 + rng.below(2) as usize) % 3;
                net.partition(nodes[a], nodes[b]).unwrap();
            }
            1 => net.heal().unwrap(),
            2 | 3 => {
                let n = rng.below(3) as usize;
                if down[n] {
                    net.start_node(nodes[n]).await.unwrap();
                    down[n] = false;
                } else if rng.below(2) == 0 {
                    net.kill_node(nodes[n]).await.unwrap();
                    net.start_node(nodes[n]).await.unwrap();
                } else {
                    net.stop_node(nodes[n]).await.unwrap();
                    down[n] = true;
                }
            }
            _ => unreachable!(),
        }
        let mut sends = Vec::new();
        for (i, &node) in nodes.iter().enumerate() {
            if down[i] {
                continue;
            }
            let (c, u, room) = (net.client(node).unwrap(), users[i].clone(), room.clone());
            let rename = i < 2 && rng.below(3) == 0;
            sends.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for k in 0..3 {
                    let body = format!("r{round:02}-{node}-{k}");
                    let r = post(
                        &c,
                        &format!("/v1/rooms/{room}/send"),
                        &u.access_token,
                        &json!({"event_type": "swp.room.message", "content": {"msgtype": "swp.text", "body": body}}),
                    )
                    .await;
                    if r.is_success() {
                        sent.push(body);
                    }
                }
                if rename {
                    let name = json!({"name": format!("round {round} on {node}")});
                    let _ = put(&c, &format!("/v1/rooms/{room}/name"), &u.access_token, &name).await;
                }
                sent
            }));
        }
        for s in sends {
            acknowledged.extend(s.await.unwrap());
        }
    }
    net.heal().unwrap();
    for (i, node) in nodes.iter().enumerate() {
        if down[i] {
            net.start_node(node).await.unwrap();
        }
    }
    // A last word from each server names what it holds as parents, so every gap gets filled.
    for (i, node) in nodes.iter().enumerate() {
        send_text(&net.client(node).unwrap(), users[i], &room, &format!("last word from {node}")).await;
    }
    let everyone = [("alpha", &alice), ("beta", &bob), ("gamma", &carol)];
    converged(&net, &room, &everyone).await;
    for (node, u) in everyone {
        let shown = bodies(&timeline(&net.client(node).unwrap(), u, &room).await);
        let missing: Vec<&String> = acknowledged.iter().filter(|b| !shown.contains(b)).collect();
        assert!(missing.is_empty(), "{node} lacks acknowledged messages {missing:?} (seed {seed})");
    }
    println!("{} acknowledged messages on every server after 20 rounds", acknowledged.len());
    net.down().await.unwrap();
}

/// Convergence time: alpha and beta cut apart while each writes 1,000 messages; prints the
/// time from healing until both hold the same events and state.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture on a release build"]
async fn convergence_after_1000_events_on_each_side_measure() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(2, dir.path());
    opts.env.push(("HOMESERVER_FEDERATION__BACKOFF_CAP_SECS".into(), "1".into()));
    opts.env.push(("HOMESERVER_FEDERATION__BACKOFF_BASE_MS".into(), "100".into()));
    for k in ["HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "HOMESERVER_TENANT_DEFAULTS__SEND_BURST"] {
        opts.env.push((k.into(), "1000000".into()));
    }
    let mut net = Testnet::start_with(opts).await.expect("testnet starts");
    let (alpha, beta) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = support::shared_room(&net, "alpha", &alice, "beta", &bob).await;
    net.partition("alpha", "beta").unwrap();
    let mut tasks = Vec::new();
    for (c, u, side) in [(alpha.clone(), alice.clone(), "alpha"), (beta.clone(), bob.clone(), "beta")] {
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 {
                send_text(&c, &u, &room, &format!("{side} {i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t0 = std::time::Instant::now();
    net.heal().unwrap();
    let users = [("alpha", &alice), ("beta", &bob)];
    converged(&net, &room, &users).await;
    let secs = t0.elapsed().as_secs_f64();
    let n = bodies(&timeline(&alpha, &alice, &room).await).len();
    println!("convergence: {n} messages on both servers, identical events and state {secs:.2} s after healing");
    net.down().await.unwrap();
}
