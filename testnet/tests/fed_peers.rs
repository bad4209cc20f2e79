//! Peers on the testnet: forged requests refused, limits per origin, remote participants,
//! remote media, this server's identity. Real processes, DNS and verified TLS; this test signs
//! requests as one node (with that node's key file) to reach another node's federation API.
//!
//! The homeserver binary and the subnet come from `support` (shared by the test files).

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use support::{get_bytes, node_key, now_ms, serve_tls, sha256_hex, tls_client, upload};
use testnet::{Testnet, poll_until};

/// What a forged (or honest) request is made of.
struct Signed<'a> {
    origin: &'a str,
    destination: &'a str,
    key: &'a crypto::ServerKey,
    ts: u64,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_string()
    }
}

/// `GET https://{to}{path}` with `authorization` (none when `None`).
async fn get_fed(http: &reqwest::Client, to: &str, path: &str, authorization: Option<String>) -> Answer {
    let mut req = http.get(format!("https://{to}:{}{path}", testnet::FEDERATION_PORT));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap().to_vec();
    Answer { status, headers, bytes }
}

/// A signed `POST https://{to}{path}` with a JSON body.
async fn post_fed(http: &reqwest::Client, s: &Signed<'_>, path: &str, body: &Value) -> Answer {
    let auth = crypto::RequestToSign {
        method: "POST",
        uri: path,
        origin: s.origin,
        destination: s.destination,
        ts: s.ts,
        content: Some(body),
    }
    .authorization_header(s.key)
    .unwrap();
    let resp = http
        .post(format!("https://{}:{}{path}", s.destination, testnet::FEDERATION_PORT))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(crypto::to_canonical_bytes(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap().to_vec();
    Answer { status, headers, bytes }
}

fn sign(s: &Signed<'_>, method: &str, uri: &str) -> String {
    crypto::RequestToSign { method, uri, origin: s.origin, destination: s.destination, ts: s.ts, content: None }
        .authorization_header(s.key)
        .unwrap()
}

fn code_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A stand-in origin on `ip:8448` (TLS from the testnet CA) whose `media/` answers `bytes` with
/// `announced` as their hash, true or not.
async fn lying_media_origin(
    net: &Testnet,
    name: &str,
    ip: Ipv4Addr,
    bytes: Vec<u8>,
    announced: String,
) -> axum_server::Handle<std::net::SocketAddr> {
    let dir = net.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cert = net.ca.node_cert(&dir, name).unwrap();
    let app = axum::Router::new().route(
        "/_scaiwave/federation/v1/media/{id}",
        axum::routing::get(move || {
            let (bytes, announced) = (bytes.clone(), announced.clone());
            async move { ([("content-type", "text/plain".to_string()), ("x-scaiwave-sha256", announced)], bytes) }
        }),
    );
    let handle =
        serve_tls(ip, std::fs::read(&cert.cert_path).unwrap(), std::fs::read(&cert.key_path).unwrap(), app).await;
    net.add_host(name, std::net::IpAddr::V4(ip), testnet::FEDERATION_PORT);
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_forgeries_participants_media_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let opts = support::options(2, dir.path());
    let subnet = opts.subnet;
    let mut net = Testnet::start_with(opts).await.expect("testnet starts");
    let http = tls_client(&net);
    let alpha = net.client("alpha").unwrap();
    let beta = net.client("beta").unwrap();
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob_reg = beta
        .post(
            "/v1/auth/register",
            None,
            &json!({"username": "bob", "password": "password-of-bob", "display_name": "Bob Builder"}),
        )
        .await
        .unwrap();
    assert_eq!(bob_reg.status, 201, "{}", bob_reg.body);
    let bob_token = bob_reg.data()["access_token"].as_str().unwrap().to_string();

    // --- Signed requests: an honest one as beta passes, each forgery is a 401.
    let beta_key = node_key(&net, "beta");
    let path = "/_scaiwave/federation/v1/profile/alice";
    let honest = Signed { origin: "beta.test", destination: "alpha.test", key: &beta_key, ts: now_ms() };
    let a = get_fed(&http, "alpha.test", path, Some(sign(&honest, "GET", path))).await;
    assert_eq!(a.status, 200, "{}", a.json());
    assert_eq!(a.json()["data"]["fqid"], "@alice:alpha.test");

    let mut forgeries: Vec<(&str, Option<String>)> = vec![("no header", None)];
    // Signed over another path: the signature does not cover what is sent.
    forgeries.push(("a bad signature", Some(sign(&honest, "GET", "/_scaiwave/federation/v1/profile/bob"))));
    let wrong_dest = Signed { destination: "gamma.test", ..honest };
    forgeries.push(("the wrong destination", Some(sign(&wrong_dest, "GET", path))));
    let old = Signed { ts: now_ms() - 120_000, ..honest };
    forgeries.push(("a ts 120 s old", Some(sign(&old, "GET", path))));
    let unknown_key = crypto::ServerKey::from_seed_base64("ed25519:nope", &beta_key.seed_base64()).unwrap();
    let unknown = Signed { key: &unknown_key, ..honest };
    forgeries.push(("an unknown key id", Some(sign(&unknown, "GET", path))));
    let other_key = crypto::ServerKey::generate(beta_key.version()).unwrap();
    let impostor = Signed { key: &other_key, ..honest };
    forgeries.push(("another key under beta's key id", Some(sign(&impostor, "GET", path))));
    for (what, header) in forgeries {
        let a = get_fed(&http, "alpha.test", path, header).await;
        assert_eq!((a.status, a.code().as_str()), (401, "SW_FED_SIGNATURE_MISMATCH"), "{what}: {}", a.json());
    }

    // --- Alpha as a notary: it answers beta's document (signed by beta, and by alpha added)
    // and its own, as the key ring holds them.
    let q = json!({"server_keys": {"beta.test": {}, "alpha.test": {}}});
    let a = post_fed(&http, &honest, "/_scaiwave/federation/v1/keys/query", &q).await;
    assert_eq!(a.status, 200, "{}", a.json());
    let docs = a.json()["data"]["server_keys"].as_array().cloned().unwrap_or_default();
    let beta_doc = docs.iter().find(|d| d["server_name"] == "beta.test").expect("beta's document");
    assert!(beta_doc["verify_keys"].get(beta_key.key_id()).is_some(), "{beta_doc}");
    assert!(beta_doc["signatures"]["beta.test"].is_object() && beta_doc["signatures"]["alpha.test"].is_object());
    assert!(docs.iter().any(|d| d["server_name"] == "alpha.test"), "{docs:?}");

    // --- Identity and the well-known endpoints.
    let admin = net.admin_token("alpha").await.unwrap();
    let r = alpha.get("/v1/admin/federation/identity", Some(&admin)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.data();
    assert_eq!(id["server_name"], "alpha.test");
    assert_eq!(id["key_id"], node_key(&net, "alpha").key_id());
    assert_eq!(id["public_key"], node_key(&net, "alpha").public_key_base64());
    assert_eq!(id["protocol_versions"], json!(["v1"]));
    assert!(id["valid_until_ts"].as_u64().unwrap() > now_ms());
    assert!(id["old_verify_keys"].is_object());
    assert_eq!(id["federation_listen"], net.node("alpha").unwrap().federation_addr().to_string());
    assert_eq!(id["well_known"]["endpoints"], json!({"federation": "/_scaiwave/federation/v1"}));
    let r = alpha.get("/v1/admin/federation/identity", Some(&alice.access_token)).await.unwrap();
    assert_eq!((r.status, r.code()), (403, "SW_AUTH_INSUFFICIENT_PERMISSION"));
    assert_eq!(alpha.get("/v1/admin/federation/identity", None).await.unwrap().status, 401);

    // --- Remote participants.
    let r = alpha.get("/v1/participants/@bob:beta.test", Some(&alice.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let bob = r.data().clone();
    assert_eq!(bob["fqid"], "@bob:beta.test");
    assert_eq!(bob["local_id"], "bob");
    assert_eq!(bob["server_name"], "beta.test");
    assert_eq!(bob["display_name"], "Bob Builder");
    let bob_id = bob["participant_id"].as_str().unwrap().to_string();
    // The local record answers by its id too.
    let r = alpha.get(&format!("/v1/participants/{bob_id}"), Some(&alice.access_token)).await.unwrap();
    assert_eq!((r.status, &r.data()["fqid"]), (200, &json!("@bob:beta.test")), "{}", r.body);
    let r = alpha.get("/v1/participants/@nobody:beta.test", Some(&alice.access_token)).await.unwrap();
    assert_eq!((r.status, r.code()), (404, "SW_PARTICIPANT_NOT_FOUND"), "{}", r.body);
    let r = alpha.get("/v1/participants/@bob:nowhere.test", Some(&alice.access_token)).await.unwrap();
    assert_eq!((r.status, r.code()), (502, "SW_FED_UNAVAILABLE"), "{}", r.body);
    // Refresh: admins only; it answers the participant as its server has it now.
    let refresh = format!("/v1/admin/federation/foreign/{bob_id}/refresh");
    let r = alpha.post(&refresh, Some(&alice.access_token), &json!({})).await.unwrap();
    assert_eq!((r.status, r.code()), (403, "SW_AUTH_INSUFFICIENT_PERMISSION"));
    let r = alpha.post(&refresh, Some(&admin), &json!({})).await.unwrap();
    assert_eq!((r.status, &r.data()["fqid"]), (200, &json!("@bob:beta.test")), "{}", r.body);
    let r =
        alpha.post("/v1/admin/federation/foreign/@alice:alpha.test/refresh", Some(&admin), &json!({})).await.unwrap();
    assert_eq!(r.status, 400, "a local participant is not foreign: {}", r.body);

    // --- Remote media: uploaded on beta, downloaded on alpha byte for byte.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let media_id = upload(&beta.base, &bob_token, &bytes, "image/png").await;
    // beta serves it to a verified peer with its hash.
    let mpath = format!("/_scaiwave/federation/v1/media/{media_id}");
    let alpha_key = node_key(&net, "alpha");
    let as_alpha = Signed { origin: "alpha.test", destination: "beta.test", key: &alpha_key, ts: now_ms() };
    let a = get_fed(&http, "beta.test", &mpath, Some(sign(&as_alpha, "GET", &mpath))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.bytes, bytes);
    assert_eq!(a.headers["x-scaiwave-sha256"].to_str().unwrap(), sha256_hex(&bytes));
    assert_eq!(a.headers["content-type"].to_str().unwrap(), "image/png");
    assert_eq!(get_fed(&http, "beta.test", &mpath, None).await.status, 401);
    let missing = "/_scaiwave/federation/v1/media/med-0000000000000000000000";
    let a = get_fed(&http, "beta.test", missing, Some(sign(&as_alpha, "GET", missing))).await;
    assert_eq!((a.status, a.code().as_str()), (404, "SW_MEDIA_NOT_FOUND"), "{}", a.json());

    // Alpha has never seen it: without a hint it cannot place it.
    let (status, _, body) =
        get_bytes(&alpha.base, &format!("/v1/media/download/{media_id}"), &alice.access_token).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (404, "SW_MEDIA_NOT_FOUND"),
        "{}",
        testnet::log_tail(&net.node("alpha").unwrap().log_path, 20)
    );
    let (status, ct, body) =
        get_bytes(&alpha.base, &format!("/v1/media/download/{media_id}?server=beta.test"), &alice.access_token).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    assert_eq!(ct, "image/png");
    assert!(body == bytes, "remote media differs byte for byte");
    // Now it is local: no hint needed, and it survives its origin going away.
    let r = alpha.get(&format!("/v1/media/{media_id}/info"), Some(&alice.access_token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["sha256"], sha256_hex(&bytes));
    assert_eq!(r.data()["size"], bytes.len());

    // An origin whose bytes do not match its hash: 502, and nothing is stored.
    let liar =
        lying_media_origin(&net, "liar.test", Ipv4Addr::new(127, subnet, 0, 90), b"evil".to_vec(), sha256_hex(b"good"))
            .await;
    let lied = "med-LiedAboutItsHash0000";
    for _ in 0..2 {
        let (status, _, body) =
            get_bytes(&alpha.base, &format!("/v1/media/download/{lied}?server=liar.test"), &alice.access_token).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (502, "SW_FED_UNAVAILABLE"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(String::from_utf8_lossy(&body).contains("hash"), "{}", String::from_utf8_lossy(&body));
    }
    let r = alpha.get(&format!("/v1/media/{lied}/info"), Some(&alice.access_token)).await.unwrap();
    assert_eq!(r.status, 404, "nothing stored, and no hint now: {}", r.body);
    liar.shutdown();

    // --- beta down: cached answers where there is a cache, 502 where there is none.
    net.stop_node("beta").await.unwrap();
    let r = alpha.get("/v1/participants/@bob:beta.test", Some(&alice.access_token)).await.unwrap();
    assert_eq!((r.status, &r.data()["display_name"]), (200, &json!("Bob Builder")), "cached: {}", r.body);
    let r = alpha.post(&refresh, Some(&admin), &json!({})).await.unwrap();
    assert_eq!((r.status, r.code()), (502, "SW_FED_UNAVAILABLE"), "a refresh needs the peer: {}", r.body);
    let r = alpha.get("/v1/participants/@carol:beta.test", Some(&alice.access_token)).await.unwrap();
    assert_eq!((r.status, r.code()), (502, "SW_FED_UNAVAILABLE"), "{}", r.body);
    let (status, _, body) =
        get_bytes(&alpha.base, &format!("/v1/media/download/{media_id}"), &alice.access_token).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    let other = "med-0000000000000000000000";
    let (status, _, body) =
        get_bytes(&alpha.base, &format!("/v1/media/download/{other}?server=beta.test"), &alice.access_token).await;
    assert_eq!((status, code_of(&body).as_str()), (502, "SW_FED_UNAVAILABLE"), "{}", String::from_utf8_lossy(&body));
    net.start_node("beta").await.unwrap();

    // --- Limits: alpha allows beta one request per second with a burst of 2.
    net.set_node_env("alpha", "HOMESERVER_FEDERATION__REQUESTS_PER_ORIGIN_PER_S", "1").unwrap();
    net.set_node_env("alpha", "HOMESERVER_FEDERATION__REQUESTS_PER_ORIGIN_BURST", "2").unwrap();
    net.stop_node("alpha").await.unwrap();
    net.start_node("alpha").await.unwrap();
    // Forgeries naming beta come first: they are refused before the limit, so they do not
    // spend beta's allowance (the first honest request below must pass).
    for _ in 0..5 {
        let forged = Signed { origin: "beta.test", destination: "alpha.test", key: &other_key, ts: now_ms() };
        let a = get_fed(&http, "alpha.test", path, Some(sign(&forged, "GET", path))).await;
        assert_eq!(a.status, 401, "{}", a.json());
    }
    let mut limited = None;
    for i in 0..20 {
        let s = Signed { origin: "beta.test", destination: "alpha.test", key: &beta_key, ts: now_ms() };
        let a = get_fed(&http, "alpha.test", path, Some(sign(&s, "GET", path))).await;
        assert!(i > 0 || a.status == 200, "forgeries spent beta's allowance: {} {}", a.status, a.json());
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, 200, "{}", a.json());
    }
    let a = limited.expect("a peer over its rate gets 429");
    assert_eq!(a.code(), "SW_RATE_LIMIT_EXCEEDED");
    let retry_after: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // The limit is beta's own: the client API is not affected.
    assert_eq!(alpha.get("/v1/participants/@alice:alpha.test", Some(&alice.access_token)).await.unwrap().status, 200);
    // After waiting as told, beta is served again.
    let a = poll_until("beta is served again", Duration::from_secs(20), || async {
        let s = Signed { origin: "beta.test", destination: "alpha.test", key: &beta_key, ts: now_ms() };
        let a = get_fed(&http, "alpha.test", path, Some(sign(&s, "GET", path))).await;
        (a.status == 200).then_some(a)
    })
    .await
    .unwrap();
    assert_eq!(a.json()["data"]["fqid"], "@alice:alpha.test");

    net.down().await.unwrap();
}
