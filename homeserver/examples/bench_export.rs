//! Export memory benchmark: fills a room of a real `homeserver` process with many events, then
//! streams `GET /v1/rooms/{room_id}/export` and samples the server's resident memory (VmRSS in
//! `/proc/<pid>/status`) before, during and after. A benchmark, not a test.
//!
//! ```text
//! cargo build -p homeserver && cargo run -p homeserver --example bench_export -- [EVENTS] [CONCURRENCY]
//! ```
//!
//! EVENTS defaults to 100000, CONCURRENCY to 32. The server binary is taken from
//! `HOMESERVER_BIN`, else from next to this example (`target/<profile>/homeserver`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HOMESERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(|d| d.parent()).expect("target dir").join("homeserver")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    // reqwest is built with rustls and no default provider in this workspace.
    federation::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let concurrency: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = tokio::process::Command::new(server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .env("HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "100000000")
        .env("HOMESERVER_TENANT_DEFAULTS__SEND_BURST", "100000000")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start homeserver (build it first: cargo build -p homeserver)");
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines.next_line().await.expect("stdout").expect("server exited");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::new();
    let reg: Value = http
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"username": "bench", "password": "bench-password"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let token = reg["data"]["access_token"].as_str().expect("token").to_string();
    let room: Value = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(&token)
        .json(&json!({"name": "Bench room"}))
        .send()
        .await
        .expect("create room")
        .json()
        .await
        .expect("json");
    let room = room["data"]["id"].as_str().expect("room id").to_string();
    println!("server pid {pid}, RSS at start {:.1} MiB", mib(rss_kib(pid)));

    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (http, base, token, room, sent) = (http.clone(), base.clone(), token.clone(), room.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < events {
                let body = json!({"content": {"msgtype": "swp.text", "body": format!("benchmark message number {i}")}});
                let r = http.post(format!("{base}/v1/rooms/{room}/send")).bearer_auth(&token).json(&body).send().await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += concurrency;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    let progress = {
        let sent = sent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!("  sent {}", sent.load(Ordering::Relaxed));
            }
        })
    };
    for t in tasks {
        t.await.expect("sender");
    }
    progress.abort();
    let fill = started.elapsed();
    println!("filled {events} messages in {:.1} s ({:.0}/s)", fill.as_secs_f64(), events as f64 / fill.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    println!("RSS before export: {:.1} MiB", mib(before));

    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut resp = http.get(format!("{base}/v1/rooms/{room}/export")).bearer_auth(&token).send().await.expect("export");
    assert!(resp.status().is_success(), "export answered {}", resp.status());
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await.expect("export body") {
        bytes += chunk.len() as u64;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "exported {:.1} MiB in {:.1} s ({:.1} MiB/s)",
        bytes as f64 / 1048576.0,
        took.as_secs_f64(),
        bytes as f64 / 1048576.0 / took.as_secs_f64()
    );
    println!(
        "RSS during export: peak {:.1} MiB (+{:.1} MiB over before); after: {:.1} MiB",
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after)
    );
    let _ = child.kill().await;
}
