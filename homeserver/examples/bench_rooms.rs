//! A load loop for the Rooms API (a benchmark, not a test): starts the release server on a
//! temporary data dir and measures sequential `POST /v1/rooms` and `GET /v1/rooms/{id}`.
//!
//!     cargo build --release -p homeserver && cargo run --release -p homeserver --example bench_rooms [N]

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "{name:<24} n={:<6} p50={:.3} ms  p99={:.3} ms  max={:.3} ms  {:.0} ops/s",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
        samples.len() as f64 / total.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    federation::install_crypto_provider();
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("homeserver");
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with --release first)", bin.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next_line().await.unwrap().expect("server exited");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().to_string();
        }
    };
    let http = reqwest::Client::new();
    let reg: Value = http
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"username": "bench", "password": "bench-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reg["data"]["access_token"].as_str().unwrap().to_string();

    let mut create = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let r: Value = http
            .post(format!("{base}/v1/rooms"))
            .bearer_auth(&token)
            .json(&json!({"room_type": "group", "name": format!("room {i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        create.push(t.elapsed());
        ids.push(r["data"]["id"].as_str().unwrap().to_string());
    }
    let mut get = Vec::with_capacity(n);
    for id in &ids {
        let t = Instant::now();
        let r = http.get(format!("{base}/v1/rooms/{id}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        get.push(t.elapsed());
    }
    report("POST /v1/rooms", create);
    report("GET /v1/rooms/{id}", get);
    let _ = child.kill().await;
}
