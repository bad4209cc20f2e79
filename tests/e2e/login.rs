//! Login hardening: unknown names cost what wrong passwords cost, password work is pooled, and
//! failed logins are limited per account and password checks per client address.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Resp, Server};

async fn login(s: &Server, username: &str, password: &str) -> Resp {
    s.post("/v1/auth/token", None, json!({"grant_type": "password", "username": username, "password": password})).await
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[track_caller]
fn assert_throttled(r: &Resp) {
    r.expect(429, "SW_RATE_LIMIT_EXCEEDED");
    let after: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After of whole seconds: {:?}", r.headers));
    assert!(after >= 1, "Retry-After {after}");
}

/// Before: an unknown name answered in about 0.6 ms, a wrong password in about 33 ms (one
/// argon2 verification), so timing told which usernames exist.
#[tokio::test]
async fn unknown_usernames_take_as_long_as_wrong_passwords() {
    let s = Server::start_with_env(&[("HOMESERVER_LIMITS__LOGIN_FAILURES_PER_ACCOUNT__BURST", "1000")]).await;
    s.register("alice").await;
    // Warm both paths (the dummy hash is made on first use).
    login(&s, "nobody", "wrong-password").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    login(&s, "alice", "wrong-password").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    // Interleaved, so a busy moment of the machine slows both alike.
    for i in 0..15 {
        let t = Instant::now();
        login(&s, &format!("nobody-{i}"), "wrong-password").await.expect(401, "SW_AUTH_INVALID_TOKEN");
        unknown.push(t.elapsed());
        let t = Instant::now();
        login(&s, "alice", "wrong-password").await.expect(401, "SW_AUTH_INVALID_TOKEN");
        wrong.push(t.elapsed());
    }
    let (u, w) = (median(unknown), median(wrong));
    assert!(u * 3 >= w, "an unknown name answers much faster than a wrong password: median {u:?} against {w:?}");
}

/// The same, without a clock: with one password check at a time and a bounded queue, a burst
/// of logins for names that do not exist fills the pool, which it could not if unknown names
/// skipped the hash. The pool also keeps a login flood from taking all CPU and memory.
#[tokio::test]
async fn unknown_usernames_wait_for_the_password_pool_too() {
    let s = std::sync::Arc::new(Server::start_with_env(&[("HOMESERVER_LIMITS__PASSWORD_HASH_CONCURRENCY", "1")]).await);
    s.register("alice").await;
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = s.clone();
        attempts.spawn(async move { login(&s, &format!("ghost-{i}"), "wrong-password").await });
    }
    let answers = attempts.join_all().await;
    let mut busy = 0;
    for r in &answers {
        match r.status {
            401 => assert_eq!(r.code(), "SW_AUTH_INVALID_TOKEN"),
            503 => {
                assert_eq!(r.code(), "SW_UNAVAILABLE");
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(busy > 0, "200 simultaneous logins of unknown names never filled a pool of 1 check and 64 waiting");
    assert!(busy < answers.len(), "some were checked");
    // The pool drains: logins work again.
    login(&s, "alice", "password-of-alice").await.expect(200, "");
}

#[tokio::test]
async fn failed_logins_lock_that_account_only() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__LOGIN_FAILURES_PER_ACCOUNT__BURST", "3"),
        ("HOMESERVER_LIMITS__LOGIN_FAILURES_PER_ACCOUNT__PER_MINUTE", "1"),
    ])
    .await;
    for name in ["alice", "bob", "carol"] {
        s.register(name).await;
    }
    for _ in 0..3 {
        login(&s, "alice", "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    }
    assert_throttled(&login(&s, "alice", "guess-guess").await);
    // Locked means locked: even the right password waits (it is not even checked).
    assert_throttled(&login(&s, "alice", "password-of-alice").await);
    assert_throttled(&login(&s, "@alice:localhost", "password-of-alice").await);
    // Other accounts are untouched.
    login(&s, "bob", "password-of-bob").await.expect(200, "");
    login(&s, "bob", "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    login(&s, "bob", "password-of-bob").await.expect(200, "");
    // Names that do not exist lock the same way, so a 429 says nothing about existence.
    for _ in 0..3 {
        login(&s, "nobody", "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    }
    assert_throttled(&login(&s, "nobody", "guess-guess").await);
    // Only failures count: carol's successes between her failures cost nothing.
    login(&s, "carol", "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    login(&s, "carol", "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    for _ in 0..4 {
        login(&s, "carol", "password-of-carol").await.expect(200, "");
    }
    login(&s, "carol", "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    assert_throttled(&login(&s, "carol", "guess-guess").await);
    // A name no account can have (too long, wrong characters) is refused before it costs a
    // hash or a place in the per-account table, however often it is tried.
    let huge = "x".repeat(100_000);
    for name in [huge.as_str(), "Alice", "a b"] {
        for _ in 0..5 {
            login(&s, name, "guess-guess").await.expect(401, "SW_AUTH_INVALID_TOKEN");
        }
    }
}

#[tokio::test]
async fn password_checks_are_limited_per_client_address() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__LOGIN_PER_ADDRESS__BURST", "3"),
        ("HOMESERVER_LIMITS__LOGIN_PER_ADDRESS__PER_MINUTE", "1"),
    ])
    .await;
    // Requests refused before any password is looked at cost nothing.
    s.post("/v1/auth/register", None, json!({"username": "Bad Name", "password": "password-1"}))
        .await
        .expect(400, "SW_BAD_REQUEST");
    s.post("/v1/auth/token", None, json!({"grant_type": "password"})).await.expect(400, "SW_BAD_REQUEST");
    // Three checks: a registration, a login, a failed login.
    let alice = s.register("alice").await;
    login(&s, "alice", "password-of-alice").await.expect(200, "");
    login(&s, "bob", "password-of-bob").await.expect(401, "SW_AUTH_INVALID_TOKEN");
    assert_throttled(&login(&s, "alice", "password-of-alice").await);
    assert_throttled(&login(&s, "carol", "password-of-carol").await);
    assert_throttled(
        &s.post("/v1/auth/register", None, json!({"username": "dave", "password": "password-of-dave"})).await,
    );
    // Refreshing is not a password check.
    let r = s
        .post("/v1/auth/token", None, json!({"grant_type": "refresh_token", "refresh_token": alice.refresh_token}))
        .await;
    s.get("/v1/auth/whoami", r.ok()["access_token"].as_str()).await.expect(200, "");
}
