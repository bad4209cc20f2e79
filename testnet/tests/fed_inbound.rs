//! The receiving side of federation through real nodes: `beta`'s signing key (read from its
//! key file) signs transactions and reads sent straight to `alpha`'s federation listener over
//! the testnet's DNS and TLS, so `alpha` checks them against the keys `beta` really publishes.
//!
//! The homeserver binary comes from `$TESTNET_HOMESERVER_BIN`, or is built here (see
//! `testnet.rs`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};
use testnet::{Options, Testnet};

/// The newest modification time under `path` (a file or a directory tree).
fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest_mtime(&e.path())).max()
}

/// Finds the homeserver binary, building it first when it is missing or older than its
/// sources (once per test process). Under `cargo test --workspace` it is already fresh: cargo
/// builds every target, the homeserver binary included, before it runs any test.
fn homeserver_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TESTNET_HOMESERVER_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/testnet-…: the profile dir holds the binaries.
        let exe = std::env::current_exe().expect("test executable");
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let bin = profile_dir.join(format!("homeserver{}", std::env::consts::EXE_SUFFIX));
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let sources = [
            "homeserver/src",
            "homeserver/Cargo.toml",
            "federation",
            "crypto/src",
            "crypto/Cargo.toml",
            "migrations",
            "Cargo.lock",
        ];
        let newest_source = sources.iter().filter_map(|s| newest_mtime(&root.join(s))).max();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_some() && built >= newest_source {
            return bin;
        }
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "homeserver", "--bin", "homeserver", "--profile", &profile])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("run cargo build -p homeserver");
        assert!(status.success(), "cargo build -p homeserver failed");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A second octet no other testnet on this machine uses now: tests and test processes run
/// side by side.
fn free_subnet(offset: u8) -> u8 {
    let start = 100 + (std::process::id() % 64) as u8 + offset * 64;
    (0..120u8)
        .map(|k| start.wrapping_add(k).max(1))
        .find(|s| {
            std::net::TcpListener::bind((Ipv4Addr::new(127, *s, 0, 10), testnet::CLIENT_PORT)).is_ok()
                && std::net::TcpListener::bind((Ipv4Addr::new(127, *s, 0, 11), testnet::FEDERATION_PORT)).is_ok()
        })
        .expect("a free 127.x subnet")
}

fn options(nodes: usize, dir: &std::path::Path, offset: u8) -> Options {
    Options {
        nodes,
        state_dir: dir.to_path_buf(),
        subnet: free_subnet(offset),
        homeserver_bin: Some(homeserver_bin()),
        log: "warn".into(),
    }
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Signs requests as one node of the testnet, with that node's own key.
struct AsPeer {
    origin: String,
    key: crypto::ServerKey,
    http: reqwest::Client,
}

impl AsPeer {
    fn new(net: &Testnet, short: &str, to: &str) -> AsPeer {
        let node = net.node(short).unwrap();
        let file: Value =
            serde_json::from_slice(&std::fs::read(node.data_dir.join("keys").join("signing_keys.json")).unwrap())
                .unwrap();
        let key = crypto::ServerKey::from_seed_base64(
            file["current"]["key_id"].as_str().unwrap(),
            file["current"]["seed"].as_str().unwrap(),
        )
        .unwrap();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(net.ca_cert_path()).unwrap()).unwrap();
        let target = net.node(to).unwrap().federation_addr();
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca])
            .resolve(&net.node(to).unwrap().server_name, target)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        AsPeer { origin: node.server_name.clone(), key, http }
    }

    /// A signed request to `dest`; answers the status and the JSON body.
    async fn request(&self, dest: &str, method: &str, uri: &str, body: Option<&Value>) -> (u16, Value) {
        let header =
            crypto::RequestToSign { method, uri, origin: &self.origin, destination: dest, ts: now_ms(), content: body }
                .authorization_header(&self.key)
                .unwrap();
        let url = format!("https://{dest}:{}{uri}", testnet::FEDERATION_PORT);
        let mut req = self.http.request(method.parse().unwrap(), url).header("authorization", header);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("the request reaches the node");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// An event of `room` by `sender`, hashed and signed with this peer's key.
    fn event(&self, room: &str, sender: &str, body: &str, prev: &[&str]) -> (String, Value) {
        let value = json!({
            "room_id": room, "sender": sender, "origin": self.origin, "origin_ts": now_ms() / 1000,
            "event_type": "swp.room.message", "content": {"msgtype": "swp.text", "body": body},
            "prev_events": prev, "auth_events": [], "depth": 2, "event_uuid": format!("u-{body}"),
        });
        crypto::build_and_sign_event(value, &self.origin, &self.key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_checked_deduplicated_and_answered_per_event() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start_with(options(2, dir.path(), 0)).await.expect("testnet starts");
    let alpha = net.client("alpha").unwrap();
    let alice = net.register("alpha", "alice").await.unwrap();
    let r = alpha
        .post("/v1/rooms", Some(&alice.access_token), &json!({"room_type": "public", "name": "Lobby"}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let room = r.data()["id"].as_str().unwrap().to_string();
    let beta = AsPeer::new(&net, "beta", "alpha");
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
