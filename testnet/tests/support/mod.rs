//! What the multi-node test files share: the homeserver binary (built when stale), a loopback
//! subnet no other testnet uses, and the options of a test testnet. Each test file includes it
//! with `mod support;`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
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

/// `alice` (on her node) creates a federated group room and `invitee` (on another node)
/// joins it by invitation; answers the room id once the invitee is a member on both sides.
pub async fn shared_room(net: &Testnet, owner_node: &str, owner: &User, guest_node: &str, guest: &User) -> String {
    let oc = net.client(owner_node).unwrap();
    let gc = net.client(guest_node).unwrap();
    let room = ok(
        &post(&oc, "/v1/rooms", &owner.access_token, &json!({"room_type": "group", "name": "Shared"})).await,
        "create",
    );
    let room = room["id"].as_str().unwrap().to_string();
    ok(
        &put(&oc, &format!("/v1/admin/rooms/{room}/federate"), &owner.access_token, &json!({"enabled": true})).await,
        "federate",
    );
    invite_and_join(net, owner_node, owner, &room, guest_node, guest).await;
    let _ = gc;
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
    let mut out = Vec::new();
    let mut from = "0".to_string();
    loop {
        let r =
            get(c, &format!("/v1/rooms/{room}/messages?direction=forward&from={from}&limit=200"), &user.access_token)
                .await;
        let page = ok(&r, "messages");
        out.extend(page.as_array().cloned().unwrap_or_default());
        match r.body["meta"]["next_cursor"].as_str() {
            Some(next) if r.body["meta"]["has_more"] == true => from = next.to_string(),
            _ => break,
        }
    }
    out
}
