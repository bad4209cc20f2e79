//! A load loop for the Messages API (a benchmark, not a test): starts the release server on a
//! temporary data dir, with a tenant whose send rate cannot interfere, and measures sequential
//! sends, 16-way concurrent sends, pages of 100 backwards through the whole room, and the
//! server's RSS.
//!
//!     cargo build --release -p homeserver --bin homeserver --example bench_messages
//!     ./target/release/examples/bench_messages [--seq N] [--clients C] [--per-client M]
//!                                              [--passes P] [--json FILE]
//!
//! Budgets (the issue's): sequential send p50 < 1 ms; concurrent sends > 7,500/s; a page of 100
//! < 2.5 ms; server RSS < 40 MiB after 10,000 messages. `--json` writes the testnet-bench
//! format: `[{scenario, ops, seconds, ops_per_s, p50_ms, p99_ms, rss_mb}]`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TENANT: &str = "bench";

/// One measured scenario: per-operation latencies plus the wall time of the whole run.
struct Row {
    scenario: &'static str,
    samples: Vec<Duration>,
    wall: Duration,
    rss_mb: f64,
    /// (what is checked, whether it holds) against the budget.
    budget: Option<(&'static str, bool)>,
}

impl Row {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i].as_secs_f64() * 1000.0
    }
    fn ops_per_s(&self) -> f64 {
        self.samples.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `admin create-tenant`, then `serve` on port 0; answers the child, its base URL and
/// the tenant's registration token.
async fn spawn_server(bin: &Path, dir: &Path) -> (Child, String, String) {
    let rate = "1000000";
    let out = Command::new(bin)
        .args(["admin", "create-tenant", TENANT, "--send-rate-per-s", rate, "--send-burst", rate, "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with --release first)", bin.display()));
    assert!(out.status.success(), "create-tenant failed");
    let registration_token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("registration_token: ").map(str::to_string))
        .unwrap_or_default();
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next_line().await.unwrap().expect("server exited");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().to_string();
        }
    };
    (child, base, registration_token)
}

/// VmRSS of a process, in MiB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn call(req: reqwest::RequestBuilder, want: u16) -> Value {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, want, "unexpected answer: {body}");
    body
}

/// Registers a user of the bench tenant; answers (participant_id, access token).
async fn register(http: &reqwest::Client, base: &str, name: &str, registration_token: &str) -> (String, String) {
    let body = json!({"username": name, "password": "bench-password", "tenant_id": TENANT,
        "registration_token": registration_token});
    let r = call(http.post(format!("{base}/v1/auth/register")).json(&body), 201).await;
    (r["data"]["participant_id"].as_str().unwrap().into(), r["data"]["access_token"].as_str().unwrap().into())
}

/// Sends `n` messages as `token`, timing each until its whole answer has arrived.
async fn send_many(http: reqwest::Client, url: String, token: String, tag: usize, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"content": {"msgtype": "swp.text", "body": format!("client {tag} message {i}")}});
        let t = Instant::now();
        let r = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
        let status = r.status();
        r.bytes().await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(status, 201, "send failed");
    }
    samples
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // One TLS provider for the whole process (ring), before any HTTP client exists.
    federation::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let (seq, clients, per_client, passes) = (
        arg(&args, "--seq", 3000usize),
        arg(&args, "--clients", 16usize),
        arg(&args, "--per-client", 1000usize),
        arg(&args, "--passes", 3usize),
    );
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();

    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("homeserver");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base, tenant_token) = spawn_server(&bin, dir.path()).await;
    let pid = child.id().unwrap();
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients + 4).build().unwrap();

    // An owner, a group room, and `clients` members invited and joined.
    let (_, owner) = register(&http, &base, "owner", &tenant_token).await;
    let room = call(
        http.post(format!("{base}/v1/rooms")).bearer_auth(&owner).json(&json!({"room_type": "group", "name": "bench"})),
        201,
    )
    .await;
    let room = room["data"]["id"].as_str().unwrap().to_string();
    let mut tokens = Vec::with_capacity(clients);
    for c in 0..clients {
        let (pid, token) = register(&http, &base, &format!("user{c}"), &tenant_token).await;
        call(
            http.post(format!("{base}/v1/rooms/{room}/invite"))
                .bearer_auth(&owner)
                .json(&json!({"participant_id": pid})),
            200,
        )
        .await;
        call(http.post(format!("{base}/v1/rooms/{room}/join")).bearer_auth(&token), 200).await;
        tokens.push(token);
    }
    let send_url = format!("{base}/v1/rooms/{room}/send");
    let baseline_rss = rss_mb(pid);
    let mut rows = Vec::new();

    // (1) Sequential sends by one client.
    let t = Instant::now();
    let samples = send_many(http.clone(), send_url.clone(), owner.clone(), usize::MAX, seq).await;
    rows.push(Row { scenario: "send sequential", samples, wall: t.elapsed(), rss_mb: rss_mb(pid), budget: None });

    // (2) `clients` concurrent senders, each a member with its own connection from the pool.
    let t = Instant::now();
    let tasks: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(c, tok)| tokio::spawn(send_many(http.clone(), send_url.clone(), tok.clone(), c, per_client)))
        .collect();
    let mut samples = Vec::with_capacity(clients * per_client);
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    rows.push(Row { scenario: "send concurrent", samples, wall: t.elapsed(), rss_mb: rss_mb(pid), budget: None });
    let total = seq + clients * per_client;

    // (3) Pages of 100, newest first, through the whole room; `passes` times over.
    let mut samples = Vec::new();
    let t = Instant::now();
    for _ in 0..passes {
        let (mut from, mut seen) = (String::new(), 0usize);
        loop {
            let url = format!("{base}/v1/rooms/{room}/messages?limit=100&from={from}");
            let t = Instant::now();
            let r = http.get(&url).bearer_auth(&owner).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let bytes = r.bytes().await.unwrap();
            samples.push(t.elapsed());
            let page: Value = serde_json::from_slice(&bytes).unwrap();
            seen += page["data"].as_array().unwrap().len();
            if page["meta"]["has_more"] != json!(true) {
                break;
            }
            from = page["meta"]["next_cursor"].as_str().unwrap().to_string();
        }
        assert_eq!(seen, total, "paging saw {seen} of {total} messages");
    }
    rows.push(Row { scenario: "page of 100 (back)", samples, wall: t.elapsed(), rss_mb: rss_mb(pid), budget: None });

    for r in &mut rows {
        r.samples.sort();
        r.budget = Some(match r.scenario {
            "send sequential" => ("p50 < 1 ms", r.pct(0.5) < 1.0),
            "send concurrent" => ("> 7500/s", r.ops_per_s() > 7500.0),
            _ => ("p50 < 2.5 ms", r.pct(0.5) < 2.5),
        });
    }
    let final_rss = rss_mb(pid);

    println!("room of {total} messages; {clients} concurrent clients; baseline RSS {baseline_rss:.1} MiB");
    println!(
        "{:<20} {:>7} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}  budget",
        "scenario", "ops", "seconds", "ops/s", "p50 ms", "p99 ms", "max ms", "RSS MiB"
    );
    for r in &rows {
        let (what, ok) = r.budget.unwrap();
        println!(
            "{:<20} {:>7} {:>8.2} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.1}  {what}: {}",
            r.scenario,
            r.samples.len(),
            r.wall.as_secs_f64(),
            r.ops_per_s(),
            r.pct(0.5),
            r.pct(0.99),
            r.pct(1.0),
            r.rss_mb,
            if ok { "ok" } else { "OVER" }
        );
    }
    let rss_ok = if final_rss < 40.0 { "ok" } else { "OVER" };
    println!("server RSS after {total} messages: {final_rss:.1} MiB  (< 40 MiB: {rss_ok})");

    if let Some(file) = json_out {
        let mut out: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({"scenario": r.scenario, "ops": r.samples.len(), "seconds": r.wall.as_secs_f64(),
                       "ops_per_s": r.ops_per_s(), "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99), "rss_mb": r.rss_mb})
            })
            .collect();
        out.push(json!({"scenario": "server rss", "ops": total, "seconds": 0.0, "ops_per_s": 0.0,
                        "p50_ms": 0.0, "p99_ms": 0.0, "rss_mb": final_rss}));
        std::fs::write(&file, serde_json::to_string_pretty(&out).unwrap()).unwrap();
        println!("wrote {file}");
    }
    let _ = child.kill().await;
}
