//! Registration, tokens, refresh rotation, logout, expiry, whoami, and the admin CLI.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{RawBody, Server, eventually};

#[tokio::test]
async fn register_answers_the_documented_shape() {
    let s = Server::start().await;
    let r = s
        .post("/v1/auth/register", None, json!({"username": "alice", "password": "hunter22", "display_name": "Alice"}))
        .await;
    r.expect(201, "");
    let d = r.data();
    assert_eq!(d["fqid"], "@alice:localhost");
    assert_eq!(d["tenant_id"], "default");
    assert_eq!(d["token_type"], "Bearer");
    assert_eq!(d["expires_in"], 3600);
    for k in ["participant_id", "workspace_id", "access_token", "refresh_token"] {
        assert!(d[k].as_str().is_some_and(|v| !v.is_empty()), "{k} missing: {d}");
    }
    let me = s.get("/v1/auth/whoami", d["access_token"].as_str()).await;
    let me = me.ok();
    assert_eq!(me["participant_id"], d["participant_id"]);
    assert_eq!(me["fqid"], "@alice:localhost");
    assert_eq!(me["tenant_id"], "default");
    assert_eq!(me["is_admin"], false);
    let ws = s.get("/v1/workspaces", d["access_token"].as_str()).await;
    assert_eq!(ws.ok()[0]["id"], d["workspace_id"]);
    assert_eq!(ws.ok()[0]["personal"], true);
}

#[tokio::test]
async fn register_rejects_bad_input_with_codes() {
    let s = Server::start().await;
    s.register("taken").await;
    let cases = [
        (json!({"username": "taken", "password": "password1"}), 409, "SW_CONFLICT"),
        (json!({"username": "Bad Name", "password": "password1"}), 400, "SW_BAD_REQUEST"),
        (json!({"username": "", "password": "password1"}), 400, "SW_BAD_REQUEST"),
        (json!({"username": "x".repeat(65), "password": "password1"}), 400, "SW_BAD_REQUEST"),
        (json!({"username": "shortpw", "password": "short"}), 400, "SW_BAD_REQUEST"),
        (json!({"username": "nopw"}), 400, "SW_BAD_REQUEST"),
        (json!({"username": 5, "password": "password1"}), 400, "SW_BAD_REQUEST"),
        (json!({"username": "ghost", "password": "password1", "tenant_id": "nope"}), 404, "SW_TENANT_NOT_FOUND"),
        (json!({"username": "ghost", "password": "password1", "tenant_id": "../x"}), 404, "SW_TENANT_NOT_FOUND"),
    ];
    for (body, status, code) in cases {
        s.post("/v1/auth/register", None, body.clone()).await.expect(status, code);
    }
}

#[tokio::test]
async fn password_grant_accepts_form_and_json() {
    let s = Server::start().await;
    s.register("bob").await;
    let form = s
        .raw(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(RawBody::Bytes(
                b"grant_type=password&username=bob&password=password-of-bob".to_vec(),
                "application/x-www-form-urlencoded",
            )),
        )
        .await;
    let d = form.ok();
    assert_eq!(d["token_type"], "Bearer");
    s.get("/v1/auth/whoami", d["access_token"].as_str()).await.expect(200, "");

    let j = s
        .post(
            "/v1/auth/token",
            None,
            json!({"grant_type": "password", "username": "bob", "password": "password-of-bob"}),
        )
        .await;
    s.get("/v1/auth/whoami", j.ok()["access_token"].as_str()).await.expect(200, "");

    s.post("/v1/auth/token", None, json!({"grant_type": "password", "username": "bob", "password": "wrong-password"}))
        .await
        .expect(401, "SW_AUTH_INVALID_TOKEN");
    s.post("/v1/auth/token", None, json!({"grant_type": "password", "username": "nobody", "password": "whatever1"}))
        .await
        .expect(401, "SW_AUTH_INVALID_TOKEN");
    s.post("/v1/auth/token", None, json!({"grant_type": "magic"})).await.expect(400, "SW_BAD_REQUEST");
    s.post("/v1/auth/token", None, json!({"grant_type": "password"})).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_session() {
    let s = Server::start().await;
    let u = s.register("carol").await;
    let r1 = s.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await;
    let d1 = r1.ok().clone();
    assert_ne!(d1["refresh_token"], u.refresh_token.as_str());
    // The new access token works; the one it replaced does not.
    s.get("/v1/auth/whoami", d1["access_token"].as_str()).await.expect(200, "");
    s.get("/v1/auth/whoami", Some(&u.token)).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    // Presenting the spent refresh token again is treated as theft: the session dies.
    s.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token}))
        .await
        .expect(401, "SW_AUTH_INVALID_TOKEN");
    s.get("/v1/auth/whoami", d1["access_token"].as_str()).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    s.post("/v1/auth/refresh", None, json!({"refresh_token": d1["refresh_token"]}))
        .await
        .expect(401, "SW_AUTH_INVALID_TOKEN");
    // The refresh_token grant of the token endpoint rotates too.
    let fresh = s
        .post(
            "/v1/auth/token",
            None,
            json!({"grant_type": "password", "username": "carol", "password": "password-of-carol"}),
        )
        .await;
    let rt = fresh.ok()["refresh_token"].clone();
    let r2 = s.post("/v1/auth/token", None, json!({"grant_type": "refresh_token", "refresh_token": rt})).await;
    s.get("/v1/auth/whoami", r2.ok()["access_token"].as_str()).await.expect(200, "");
    s.post("/v1/auth/refresh", None, json!({"refresh_token": "swr_not-a-token"}))
        .await
        .expect(401, "SW_AUTH_INVALID_TOKEN");
}

#[tokio::test]
async fn logout_revokes_the_session_only() {
    let s = Server::start().await;
    let u = s.register("dave").await;
    let other = s
        .post(
            "/v1/auth/token",
            None,
            json!({"grant_type": "password", "username": "dave", "password": "password-of-dave"}),
        )
        .await;
    let other_token = other.ok()["access_token"].as_str().unwrap().to_string();
    s.post("/v1/auth/logout", Some(&u.token), json!({})).await.expect(200, "");
    s.get("/v1/auth/whoami", Some(&u.token)).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    s.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token}))
        .await
        .expect(401, "SW_AUTH_INVALID_TOKEN");
    s.get("/v1/auth/whoami", Some(&other_token)).await.expect(200, "");
}

#[tokio::test]
async fn tokens_are_checked_on_every_endpoint() {
    let s = Server::start().await;
    s.get("/v1/auth/whoami", None).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    s.get("/v1/auth/whoami", Some("garbage")).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    s.get("/v1/auth/whoami", Some(&"x".repeat(5000))).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    let basic = reqwest::Client::new()
        .get(format!("{}/v1/auth/whoami", s.base))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_renews_them() {
    let s = Server::start_with_env(&[("HOMESERVER_ACCESS_TOKEN_TTL_SECS", "1")]).await;
    let u = s.register("erin").await;
    eventually(Duration::from_secs(10), || async {
        let r = s.get("/v1/auth/whoami", Some(&u.token)).await;
        (r.status == 401).then_some(r)
    })
    .await
    .expect(401, "SW_AUTH_EXPIRED_TOKEN");
    let r = s.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await;
    assert_eq!(r.ok()["expires_in"], 1);
}

#[tokio::test]
async fn registration_can_be_closed_or_token_gated() {
    let closed = Server::start_with_env(&[("HOMESERVER_REGISTRATION", "closed")]).await;
    closed
        .post("/v1/auth/register", None, json!({"username": "x", "password": "password1"}))
        .await
        .expect(403, "SW_AUTH_INSUFFICIENT_PERMISSION");

    let gated =
        Server::start_with_env(&[("HOMESERVER_REGISTRATION", "token"), ("HOMESERVER_REGISTRATION_TOKEN", "s3cret")])
            .await;
    gated
        .post(
            "/v1/auth/register",
            None,
            json!({"username": "x", "password": "password1", "registration_token": "nope"}),
        )
        .await
        .expect(403, "SW_AUTH_INSUFFICIENT_PERMISSION");
    gated
        .post(
            "/v1/auth/register",
            None,
            json!({"username": "x", "password": "password1", "registration_token": "s3cret"}),
        )
        .await
        .expect(201, "");
}

#[tokio::test]
async fn admin_cli_creates_admins_and_tenants() {
    let s = Server::start().await;
    let (ok, out) = s.cli(&["admin", "create-user", "root", "--password", "rootpass1", "--admin"]);
    assert!(ok, "{out}");
    assert!(out.contains("@root:localhost"), "{out}");
    let t = s
        .post("/v1/auth/token", None, json!({"grant_type": "password", "username": "root", "password": "rootpass1"}))
        .await;
    let me = s.get("/v1/auth/whoami", t.ok()["access_token"].as_str()).await;
    assert_eq!(me.ok()["is_admin"], true);

    let (ok, out) = s.cli(&["admin", "create-user", "gen"]);
    assert!(ok && out.contains("password: "), "{out}");
    let (ok, out) = s.cli(&["admin", "create-user", "root", "--password", "rootpass1"]);
    assert!(!ok && out.contains("taken"), "{out}");

    // A new tenant's registration token is printed once; `register_in` sends it.
    s.create_tenant("acme", &["--max-participants", "3"]);
    let u = s.register_in("wile", Some("acme")).await;
    let me = s.get("/v1/auth/whoami", Some(&u.token)).await;
    assert_eq!(me.ok()["tenant_id"], "acme");
    let (ok, _) = s.cli(&["admin", "create-tenant", "Bad Slug"]);
    assert!(!ok);
}

#[tokio::test]
async fn accounts_and_sessions_survive_a_crash() {
    let mut s = Server::start().await;
    let u = s.register("frank").await;
    s.kill().await;
    s.restart().await;
    s.get("/v1/auth/whoami", Some(&u.token)).await.expect(200, "");
    let stopped = s.stop().await;
    assert!(stopped.success(), "SIGTERM ends the server cleanly: {stopped:?}");
    s.restart().await;
    s.post(
        "/v1/auth/token",
        None,
        json!({"grant_type": "password", "username": "frank", "password": "password-of-frank"}),
    )
    .await
    .expect(200, "");
}

/// A server whose log goes to a file (not a terminal) writes plain text: no colour escape codes.
#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = lines.by_ref().map_while(Result::ok).find(|l| l.contains("homeserver started"));
    let _ = child.kill();
    let _ = child.wait();
    let line = started.expect("the server logs its start at the default level");
    // The line carries fields (server_name=…), which a colouring formatter wraps in escapes.
    assert!(line.contains("server_name=localhost"), "{line}");
    assert!(!line.contains('\u{1b}'), "colour codes in a log file: {line:?}");
}
