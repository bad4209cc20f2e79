//! What the multi-node test files share: the homeserver binary (built when stale), a loopback
//! subnet no other testnet uses, and the options of a test testnet. Each test file includes it
//! with `mod support;`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use testnet::{NodeClient, Options, Resp, Testnet, User};

/// The newest modification time under `path` (a file or a directory tree).
fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest_mtime(&e.path())).max()
}

/// The homeserver binary: `$TESTNET_HOMESERVER_BIN`, or the one in this test's target dir,
/// built first when it is missing or older than its sources (once per test process).
pub fn homeserver_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TESTNET_HOMESERVER_BIN") {
            return PathBuf::from(p);
        }
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
        bin
    })
    .clone()
}

/// A second octet that no other testnet of this process has taken and whose first addresses
/// are free on this machine now: tests of one process and test processes run side by side.
pub fn free_subnet() -> u8 {
    static TAKEN: Mutex<Option<HashSet<u8>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap();
    let taken = taken.get_or_insert_with(HashSet::new);
    let start = 20 + (std::process::id() % 200) as u8;
    let s = (0..=255u8)
        .map(|k| start.wrapping_add(k))
        .filter(|s| (2..=250).contains(s) && !taken.contains(s))
        .find(|s| {
            std::net::TcpListener::bind((Ipv4Addr::new(127, *s, 0, 10), testnet::CLIENT_PORT)).is_ok()
                && std::net::TcpListener::bind((Ipv4Addr::new(127, *s, 0, 11), testnet::FEDERATION_PORT)).is_ok()
        })
        .expect("a free 127.x subnet");
    taken.insert(s);
    s
}

pub fn options(nodes: usize, dir: &std::path::Path) -> Options {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut o = Options::new(nodes, dir);
    o.subnet = free_subnet();
    o.homeserver_bin = Some(homeserver_bin());
    o.log = "warn".into();
    // Tests register many users from one address: the password-check allowance is not theirs.
    o.env.push(("HOMESERVER_LIMITS__LOGIN_PER_ADDRESS__BURST".into(), "100000".into()));
    o
}

/// Polls `check` on `client` every 50 ms for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    testnet::poll_until(what, Duration::from_secs(secs), check).await.unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
pub fn ok(r: &Resp, what: &str) -> Value {
    assert!(r.is_success(), "{what}: {} {}", r.status, r.body);
    r.data().clone()
}

pub async fn put(c: &NodeClient, path: &str, token: &str, body: &Value) -> Resp {
    c.request(reqwest::Method::PUT, path, Some(token), Some(body)).await.expect("request")
}

pub async fn post(c: &NodeClient, path: &str, token: &str, body: &Value) -> Resp {
    c.post(path, Some(token), body).await.expect("request")
}

pub async fn get(c: &NodeClient, path: &str, token: &str) -> Resp {
    c.get(path, Some(token)).await.expect("request")
}

/// `owner` (on `node`) creates a room of `room_type` named `name` and turns federation on for it.
pub async fn federated_room(net: &Testnet, node: &str, owner: &User, room_type: &str, name: &str) -> String {
    let c = net.client(node).unwrap();
    let room =
        ok(&post(&c, "/v1/rooms", &owner.access_token, &json!({"room_type": room_type, "name": name})).await, "create");
    let room = room["id"].as_str().unwrap().to_string();
    ok(
        &put(&c, &format!("/v1/admin/rooms/{room}/federate"), &owner.access_token, &json!({"enabled": true})).await,
        "federate",
    );
    room
}

/// `owner` (on her node) creates a federated group room "Shared" and `guest` (on another node)
/// joins it by invitation; answers the room id once the guest is a member on both sides.
pub async fn shared_room(net: &Testnet, owner_node: &str, owner: &User, guest_node: &str, guest: &User) -> String {
    let room = federated_room(net, owner_node, owner, "group", "Shared").await;
    invite_and_join(net, owner_node, owner, &room, guest_node, guest).await;
    room
}

/// `inviter` invites `guest` to `room`; the guest sees the invitation on its node and joins.
pub async fn invite_and_join(
    net: &Testnet,
    inviter_node: &str,
    inviter: &User,
    room: &str,
    guest_node: &str,
    guest: &User,
) {
    let ic = net.client(inviter_node).unwrap();
    let gc = net.client(guest_node).unwrap();
    ok(
        &post(&ic, &format!("/v1/rooms/{room}/invitations"), &inviter.access_token, &json!({"fqid": guest.fqid})).await,
        "invite",
    );
    eventually("the invitation reaches the guest", 20, || async {
        let r = get(&gc, &format!("/v1/rooms/{room}"), &guest.access_token).await;
        (r.is_success() && r.data()["membership"] == "invite").then_some(())
    })
    .await;
    ok(&post(&gc, &format!("/v1/rooms/{room}/join"), &guest.access_token, &json!({})).await, "join");
    eventually("the join reaches the inviter's server", 20, || async {
        let r = get(&ic, &format!("/v1/rooms/{room}/members"), &inviter.access_token).await;
        let members = r.data().as_array().cloned().unwrap_or_default();
        members.iter().any(|m| m["fqid"] == guest.fqid.as_str() && m["membership"] == "join").then_some(())
    })
    .await;
}

/// Every message of `room` as `user` sees it, oldest first (forward from the beginning).
pub async fn timeline(c: &NodeClient, user: &User, room: &str) -> Vec<Value> {
    match try_timeline(c, user, room).await {
        Ok(all) => all,
        Err(e) => panic!("messages: {e}"),
    }
}

/// [`timeline`], or what went wrong (for polling a node that may be starting).
pub async fn try_timeline(c: &NodeClient, user: &User, room: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut from = "0".to_string();
    loop {
        let path = format!("/v1/rooms/{room}/messages?direction=forward&from={from}&limit=200");
        let r = c.get(&path, Some(&user.access_token)).await.map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("{} {}", r.status, r.body));
        }
        out.extend(r.data().as_array().cloned().unwrap_or_default());
        match r.body["meta"]["next_cursor"].as_str() {
            Some(next) if r.body["meta"]["has_more"] == true => from = next.to_string(),
            _ => return Ok(out),
        }
    }
}

/// The text bodies of `messages`, in their order.
pub fn bodies(messages: &[Value]) -> Vec<String> {
    messages.iter().filter_map(|m| m["content"]["body"].as_str().map(str::to_string)).collect()
}

/// `user` sends a text message; answers the event as the server gives it back.
pub async fn send_text(c: &NodeClient, user: &User, room: &str, body: &str) -> Value {
    let r = post(
        c,
        &format!("/v1/rooms/{room}/send"),
        &user.access_token,
        &json!({"event_type": "swp.room.message", "content": {"msgtype": "swp.text", "body": body}}),
    )
    .await;
    ok(&r, &format!("send {body}"))
}

/// A node's database, for reading what it holds (tests only).
pub fn node_db(net: &Testnet, node: &str) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(net.node(node).unwrap().data_dir.join("homeserver.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db
}

/// A room's current state (`(type, state_key)` → event id) and forward extremities (with
/// depths), read from a node's database.
#[allow(clippy::type_complexity)]
pub fn graph_of(db: &rusqlite::Connection, room: &str) -> (Vec<((String, String), String)>, Vec<(String, i64)>) {
    let mut q = db.prepare("SELECT event_type, state_key, event_id FROM room_state WHERE room_id = ?1").unwrap();
    let state = q
        .query_map([room], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut q = db.prepare("SELECT event_id, depth FROM room_extremities WHERE room_id = ?1").unwrap();
    let heads = q.query_map([room], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    (state, heads)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A node's current signing key, read from its key file (`signing.rs` format).
pub fn node_key(net: &Testnet, name: &str) -> crypto::ServerKey {
    let path = net.node(name).unwrap().data_dir.join("keys").join("signing_keys.json");
    let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let cur = &file["current"];
    crypto::ServerKey::from_seed_base64(cur["key_id"].as_str().unwrap(), cur["seed"].as_str().unwrap()).unwrap()
}

/// An HTTPS client that trusts the testnet CA and finds every node's federation listener.
pub fn tls_client(net: &Testnet) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(net.ca.cert_pem.as_bytes()).unwrap();
    let mut b = reqwest::Client::builder().no_proxy().tls_certs_only([ca]).timeout(Duration::from_secs(30));
    for n in &net.nodes {
        b = b.resolve(&n.server_name, n.federation_addr());
    }
    b.build().unwrap()
}

/// The well-known key document of `name` for `key`, self-signed, valid until `valid_until_ts`.
pub fn key_document(name: &str, key: &crypto::ServerKey, valid_until_ts: u64) -> Value {
    let mut doc = json!({
        "server_name": name,
        "public_key": key.public_key_base64(),
        "protocol_versions": ["v1"],
        "verify_keys": {key.key_id(): {"key": key.public_key_base64()}},
        "valid_until_ts": valid_until_ts,
    });
    crypto::sign_json(&mut doc, name, key).unwrap();
    doc
}

/// Serves `app` over TLS (a certificate of the testnet CA) on `ip:8448`, in the background: a
/// stand-in peer.
pub async fn serve_tls(
    ip: Ipv4Addr,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    app: axum::Router,
) -> axum_server::Handle<SocketAddr> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem, key_pem).await.expect("fake peer TLS config");
    let listener = std::net::TcpListener::bind((ip, testnet::FEDERATION_PORT)).expect("bind fake peer");
    listener.set_nonblocking(true).unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap().handle(handle.clone());
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    handle
}

/// An event uuid no other event of this process has: events built within one millisecond
/// must not look like retries of each other.
fn unique_uuid() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("u-{}-{}", now_ms(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Signs requests and events as one server (a node of the testnet, with its own key file, or
/// a stand-in with a key of its own).
pub struct AsPeer {
    pub origin: String,
    pub key: crypto::ServerKey,
    pub http: reqwest::Client,
}

impl AsPeer {
    /// The testnet node `short` (its server name and current key).
    pub fn node(net: &Testnet, short: &str) -> AsPeer {
        let origin = net.node(short).unwrap().server_name.clone();
        AsPeer { origin, key: node_key(net, short), http: tls_client(net) }
    }

    /// A signed request to `dest`; answers the status and the JSON body.
    pub async fn request(&self, dest: &str, method: &str, uri: &str, body: Option<&Value>) -> (u16, Value) {
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

    /// Any event of `room`, hashed and signed with this peer's key; answers its id, its form
    /// and its depth (one more than its deepest parent).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &self,
        room: &str,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[(String, i64)],
        auth: &[String],
    ) -> (String, Value, i64) {
        let depth = prev.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
        let prev_ids: Vec<&str> = prev.iter().map(|(id, _)| id.as_str()).collect();
        let mut value = json!({
            "room_id": room, "sender": sender, "origin": self.origin, "origin_ts": now_ms() / 1000,
            "event_type": event_type, "content": content, "prev_events": prev_ids, "auth_events": auth,
            "depth": depth, "event_uuid": unique_uuid(),
        });
        if let Some(k) = state_key {
            value["state_key"] = json!(k);
        }
        let (id, signed) = crypto::build_and_sign_event(value, &self.origin, &self.key).unwrap();
        (id, signed, depth)
    }

    /// A text message of `room` by `sender` at depth 2, hashed and signed with this peer's key.
    pub fn event(&self, room: &str, sender: &str, body: &str, prev: &[&str]) -> (String, Value) {
        let value = json!({
            "room_id": room, "sender": sender, "origin": self.origin, "origin_ts": now_ms() / 1000,
            "event_type": "swp.room.message", "content": {"msgtype": "swp.text", "body": body},
            "prev_events": prev, "auth_events": [], "depth": 2, "event_uuid": format!("u-{body}"),
        });
        crypto::build_and_sign_event(value, &self.origin, &self.key).unwrap()
    }
}

/// A multipart upload of `bytes` as `file` to the client API at `base`; answers the media id.
pub async fn upload(base: &str, token: &str, bytes: &[u8], mime: &str) -> String {
    let boundary = "peers-test-boundary-7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob.bin\"\r\nContent-Type: {mime}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/media/upload"))
        .bearer_auth(token)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let v: Value = resp.json().await.unwrap();
    v["data"]["media_id"].as_str().unwrap().to_string()
}

/// `GET {base}{path}` with a bearer token: status, content type and bytes.
pub async fn get_bytes(base: &str, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let resp = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
