//! The testnet end to end: real homeserver processes, DNS, verified TLS, faults.
//!
//! The homeserver binary and the subnets come from `support` (shared by the test files): it is
//! built there when stale, because `cargo test --workspace` does not promise to build it before
//! this test runs.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{free_subnet, homeserver_bin, key_document, now_ms, options, serve_tls};
use testnet::{NodeClient, Testnet, poll_until, process_alive};

#[track_caller]
fn assert_resolved(r: &testnet::Resp, name: &str) {
    assert_eq!(r.status, 200, "resolving {name}: {}", r.body);
    let d = r.data();
    assert_eq!(d["server_name"], name);
    assert_eq!(d["port"], 8448);
    assert!(d["addresses"].as_array().is_some_and(|a| !a.is_empty()), "{}", r.body);
    assert!(d["verify_keys"].as_object().is_some_and(|k| !k.is_empty()), "{}", r.body);
    assert!(d["protocol_versions"].as_array().unwrap().contains(&json!("v1")), "{}", r.body);
}

#[track_caller]
fn assert_unavailable(r: &testnet::Resp, what: &str) {
    assert_eq!(r.status, 502, "{what}: {}", r.body);
    assert_eq!(r.code(), "SW_FED_UNAVAILABLE", "{what}: {}", r.body);
}

/// A stand-in peer on `ip:8448` serving a correctly self-signed well-known document for
/// `name` (valid for a day) over TLS with the given certificate.
async fn fake_peer(name: &str, ip: Ipv4Addr, cert_pem: String, key_pem: String) -> axum_server::Handle<SocketAddr> {
    fake_peer_until(name, now_ms() + 24 * 3600 * 1000, ip, cert_pem, key_pem).await
}

/// [`fake_peer`] with the document's `valid_until_ts` given.
async fn fake_peer_until(
    name: &str,
    valid_until_ts: u64,
    ip: Ipv4Addr,
    cert_pem: String,
    key_pem: String,
) -> axum_server::Handle<SocketAddr> {
    let key = crypto::ServerKey::generate("k1").unwrap();
    let doc = key_document(name, &key, valid_until_ts);
    let app = axum::Router::new()
        .route("/.well-known/scaiwave/server", axum::routing::get(move || async move { axum::Json(doc.clone()) }));
    serve_tls(ip, cert_pem.into_bytes(), key_pem.into_bytes(), app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discover_each_other_and_survive_faults() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(3, dir.path());
    let s = opts.subnet;

    let started = Instant::now();
    let mut net = Testnet::start_with(opts).await.expect("testnet starts");
    let up = started.elapsed();
    eprintln!("testnet of 3 nodes up in {:.2} s", up.as_secs_f64());
    assert!(up < Duration::from_secs(10), "3 nodes took {up:?} to start");

    let state: Value = serde_json::from_slice(&std::fs::read(dir.path().join("testnet.json")).unwrap()).unwrap();
    assert_eq!(state["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(state["nodes"][1]["server_name"], "beta.test");
    assert!(state["nodes"][1]["pid"].as_u64().is_some());
    assert!(state["nodes"][1]["admin"]["password"].as_str().is_some_and(|p| !p.is_empty()));
    assert!(state["ca_cert"].as_str().is_some());

    // Every node resolves every node (itself included) through testnet DNS and verified TLS.
    let names = ["alpha.test", "beta.test", "gamma.test"];
    for from in names {
        for to in names {
            assert_resolved(&net.resolve(from, to).await.unwrap(), to);
        }
    }
    // The keys discovered are the ones the peer publishes.
    let r = net.resolve("alpha", "beta.test").await.unwrap();
    let beta_doc = net.resolve("beta", "beta.test").await.unwrap();
    assert_eq!(r.data()["verify_keys"], beta_doc.data()["verify_keys"]);

    // Only server admins may resolve; bad names are a 400.
    let alpha = net.client("alpha").unwrap();
    let user = net.register("alpha", "mallory").await.unwrap();
    let r = alpha
        .post("/v1/admin/federation/resolve", Some(&user.access_token), &json!({"server_name": "beta.test"}))
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, "SW_AUTH_INSUFFICIENT_PERMISSION"), "{}", r.body);
    // The admin check comes before the body: a non-admin's malformed body is a 403 too.
    for bad_body in [json!([1]), json!({}), json!({"server_name": 7})] {
        let r = alpha.post("/v1/admin/federation/resolve", Some(&user.access_token), &bad_body).await.unwrap();
        assert_eq!((r.status, r.code()), (403, "SW_AUTH_INSUFFICIENT_PERMISSION"), "{bad_body}: {}", r.body);
        let admin = net.admin_token("alpha").await.unwrap();
        let r = alpha.post("/v1/admin/federation/resolve", Some(&admin), &bad_body).await.unwrap();
        assert_eq!(r.status, 400, "an admin's {bad_body} body: {}", r.body);
    }
    let r = alpha.post("/v1/admin/federation/resolve", None, &json!({"server_name": "beta.test"})).await.unwrap();
    assert_eq!(r.status, 401);
    let r = alpha.post("/v1/admin/federation/resolve", None, &json!([1])).await.unwrap();
    assert_eq!(r.status, 401, "authentication comes before the body: {}", r.body);
    assert_eq!(net.resolve("alpha", "not a name").await.unwrap().status, 400);
    assert_eq!(net.resolve("alpha", "::1").await.unwrap().status, 400, "IPv6 literals need brackets");
    assert_unavailable(&net.resolve("alpha", "nobody.test").await.unwrap(), "unknown name");

    // A peer with a certificate from the testnet CA is trusted; one with a self-signed
    // certificate is not, although its document is correctly signed.
    let trusted_ip = Ipv4Addr::new(127, s, 0, 98);
    let trusted_dir = dir.path().join("trusted");
    std::fs::create_dir_all(&trusted_dir).unwrap();
    let cert = net.ca.node_cert(&trusted_dir, "trusted.test").unwrap();
    let trusted = fake_peer(
        "trusted.test",
        trusted_ip,
        std::fs::read_to_string(&cert.cert_path).unwrap(),
        std::fs::read_to_string(&cert.key_path).unwrap(),
    )
    .await;
    net.add_host("trusted.test", IpAddr::V4(trusted_ip), testnet::FEDERATION_PORT);
    let rogue_ip = Ipv4Addr::new(127, s, 0, 99);
    let (cert_pem, key_pem) = testnet::certs::self_signed("rogue.test").unwrap();
    let rogue = fake_peer("rogue.test", rogue_ip, cert_pem, key_pem).await;
    net.add_host("rogue.test", IpAddr::V4(rogue_ip), testnet::FEDERATION_PORT);
    let r = poll_until("the trusted fake peer answers", Duration::from_secs(10), || async {
        net.resolve("alpha", "trusted.test").await.ok().filter(|r| r.status == 200)
    })
    .await
    .unwrap();
    assert_resolved(&r, "trusted.test");
    for from in names {
        let r = net.resolve(from, "rogue.test").await.unwrap();
        assert_unavailable(&r, "rogue certificate");
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.to_lowercase().contains("certificate"), "the reason names the certificate: {msg}");
    }
    trusted.shutdown();
    rogue.shutdown();

    // A server whose name carries its port names itself with that port and is found by it;
    // the bare host is another server name and does not match that document.
    let ported_ip = Ipv4Addr::new(127, s, 0, 97);
    let ported_dir = dir.path().join("ported");
    std::fs::create_dir_all(&ported_dir).unwrap();
    let cert = net.ca.node_cert(&ported_dir, "ported.test").unwrap();
    let ported = fake_peer(
        "ported.test:8448",
        ported_ip,
        std::fs::read_to_string(&cert.cert_path).unwrap(),
        std::fs::read_to_string(&cert.key_path).unwrap(),
    )
    .await;
    net.add_host("ported.test", IpAddr::V4(ported_ip), testnet::FEDERATION_PORT);
    let r = poll_until("the fake peer with a port in its name answers", Duration::from_secs(10), || async {
        net.resolve("alpha", "ported.test:8448").await.ok().filter(|r| r.status == 200)
    })
    .await
    .unwrap();
    assert_resolved(&r, "ported.test:8448");
    let r = net.resolve("alpha", "ported.test").await.unwrap();
    assert_unavailable(&r, "the bare host of a name with a port");
    assert!(r.body["error"]["message"].as_str().unwrap_or("").contains("ported.test:8448"), "{}", r.body);
    ported.shutdown();

    // A correctly signed document whose valid_until_ts has passed is refused.
    let expired_ip = Ipv4Addr::new(127, s, 0, 96);
    let expired_dir = dir.path().join("expired");
    std::fs::create_dir_all(&expired_dir).unwrap();
    let cert = net.ca.node_cert(&expired_dir, "expired.test").unwrap();
    let expired = fake_peer_until(
        "expired.test",
        now_ms() - 60_000,
        expired_ip,
        std::fs::read_to_string(&cert.cert_path).unwrap(),
        std::fs::read_to_string(&cert.key_path).unwrap(),
    )
    .await;
    net.add_host("expired.test", IpAddr::V4(expired_ip), testnet::FEDERATION_PORT);
    let r = poll_until("the expired fake peer answers", Duration::from_secs(10), || async {
        net.resolve("alpha", "expired.test")
            .await
            .ok()
            .filter(|r| r.body["error"]["message"].as_str().unwrap_or("").contains("valid_until_ts") || r.status == 200)
    })
    .await
    .unwrap();
    assert_unavailable(&r, "an expired well-known document");
    expired.shutdown();

    // Stop and start keep the node's data: a user registered before still logs in.
    let carol = net.register("beta", "carol").await.unwrap();
    let beta_pid = net.node("beta").unwrap().pid().unwrap();
    net.stop_node("beta").await.unwrap();
    assert!(!process_alive(beta_pid), "beta's process is gone after stop");
    assert_unavailable(&net.resolve("alpha", "beta.test").await.unwrap(), "beta stopped");
    net.start_node("beta").await.unwrap();
    assert_ne!(net.node("beta").unwrap().pid(), Some(beta_pid));
    let token = net.client("beta").unwrap().login("carol", &carol.password).await.unwrap();
    assert!(!token.is_empty());
    assert_resolved(&net.resolve("alpha", "beta.test").await.unwrap(), "beta.test");

    // Kill (as in a crash) and restart recovers, data included.
    let dave = net.register("gamma", "dave").await.unwrap();
    let gamma_pid = net.node("gamma").unwrap().pid().unwrap();
    net.kill_node("gamma").await.unwrap();
    assert!(!process_alive(gamma_pid));
    assert_unavailable(&net.resolve("beta", "gamma.test").await.unwrap(), "gamma killed");
    net.start_node("gamma").await.unwrap();
    net.client("gamma").unwrap().login("dave", &dave.password).await.unwrap();
    assert_resolved(&net.resolve("beta", "gamma.test").await.unwrap(), "gamma.test");
    assert_resolved(&net.resolve("gamma", "alpha.test").await.unwrap(), "alpha.test");

    // A partition cuts alpha and beta apart, both ways; each still reaches gamma, and gamma
    // both of them.
    net.partition("alpha", "beta.test").unwrap();
    assert_unavailable(&net.resolve("alpha", "beta.test").await.unwrap(), "alpha → beta partitioned");
    assert_unavailable(&net.resolve("beta", "alpha.test").await.unwrap(), "beta → alpha partitioned");
    for (from, to) in [("alpha", "gamma.test"), ("beta", "gamma.test"), ("gamma", "alpha.test"), ("gamma", "beta.test")]
    {
        assert_resolved(&net.resolve(from, to).await.unwrap(), to);
    }
    let state: Value = serde_json::from_slice(&std::fs::read(dir.path().join("testnet.json")).unwrap()).unwrap();
    assert_eq!(state["partitions"], json!([["alpha.test", "beta.test"]]));
    net.heal().unwrap();
    for (from, to) in [("alpha", "beta.test"), ("beta", "alpha.test")] {
        let r = net
            .wait_until(from, Duration::from_secs(10), |_c: NodeClient| async {
                net.resolve(from, to).await.ok().filter(|r| r.status == 200)
            })
            .await
            .unwrap();
        assert_resolved(&r, to);
    }

    // Down stops every node; no process stays behind.
    let pids: Vec<u32> = net.nodes.iter().filter_map(|n| n.pid()).collect();
    assert_eq!(pids.len(), 3);
    net.down().await.unwrap();
    for pid in pids {
        assert!(!process_alive(pid), "node process {pid} survived down");
    }
}

/// The command line: `up` in the foreground, control from "another shell", `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_up_control_and_down() {
    let dir = tempfile::tempdir().unwrap();
    let subnet = free_subnet();
    let testnet_bin = env!("CARGO_BIN_EXE_testnet");
    let mut up = tokio::process::Command::new(testnet_bin)
        .args(["up", "--nodes", "2", "--log", "warn", "--subnet", &subnet.to_string()])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--homeserver-bin")
        .arg(homeserver_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn testnet up");
    let state_path = dir.path().join("testnet.json");
    let state = poll_until("testnet.json with a control address", Duration::from_secs(30), || async {
        let s: Value = serde_json::from_slice(&std::fs::read(&state_path).ok()?).ok()?;
        s["control"].is_string().then_some(s)
    })
    .await
    .unwrap();
    let nodes = state["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["client_url"], format!("http://127.{subnet}.0.10:8008"));

    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(testnet_bin)
            .args(args)
            .arg("--state-dir")
            .arg(dir.path())
            .output()
            .expect("run testnet");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let alpha = NodeClient::new(nodes[0]["client_url"].as_str().unwrap());
    let admin = &nodes[0]["admin"];
    let token = alpha.login(admin["username"].as_str().unwrap(), admin["password"].as_str().unwrap()).await.unwrap();
    let resolve = |name: &'static str| {
        let alpha = alpha.clone();
        let token = token.clone();
        async move { alpha.post("/v1/admin/federation/resolve", Some(&token), &json!({"server_name": name})).await.unwrap() }
    };
    assert_resolved(&resolve("beta.test").await, "beta.test");

    let (ok, text) = tokio::task::block_in_place(|| ctl(&["partition", "alpha", "beta"]));
    assert!(ok, "{text}");
    assert_unavailable(&resolve("beta.test").await, "partitioned through the CLI");
    let (ok, text) = tokio::task::block_in_place(|| ctl(&["heal"]));
    assert!(ok, "{text}");
    assert_resolved(&resolve("beta.test").await, "beta.test");

    let beta_pid = nodes[1]["pid"].as_u64().unwrap() as u32;
    let (ok, text) = tokio::task::block_in_place(|| ctl(&["node", "stop", "beta"]));
    assert!(ok, "{text}");
    assert!(!process_alive(beta_pid));
    assert_unavailable(&resolve("beta.test").await, "beta stopped through the CLI");
    let (ok, text) = tokio::task::block_in_place(|| ctl(&["node", "start", "beta.test"]));
    assert!(ok, "{text}");
    assert_resolved(&resolve("beta.test").await, "beta.test");
    let (ok, text) = tokio::task::block_in_place(|| ctl(&["node", "kill", "nobody"]));
    assert!(!ok && text.contains("no node"), "{text}");

    let state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let pids: Vec<u32> =
        state["nodes"].as_array().unwrap().iter().filter_map(|n| n["pid"].as_u64()).map(|p| p as u32).collect();
    assert_eq!(pids.len(), 2);
    let (ok, text) = tokio::task::block_in_place(|| ctl(&["down"]));
    assert!(ok, "{text}");
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await.expect("up exits after down").unwrap();
    assert!(status.success());
    for pid in pids {
        assert!(!process_alive(pid), "node process {pid} survived down");
    }
}
