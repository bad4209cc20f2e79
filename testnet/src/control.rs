//! The control socket of `testnet up`: one JSON object per line each way, on loopback.
//!
//! Requests: `{"cmd": "stop" | "start" | "kill", "node": "beta"}`, `{"cmd": "partition",
//! "a": "alpha", "b": "beta"}`, `{"cmd": "heal"}`, `{"cmd": "status"}`, `{"cmd": "down"}`.
//! Answers: `{"ok": true, "state": {…}}` or `{"ok": false, "error": "…"}`. Commands run one at
//! a time. `down` answers first, then the `up` process stops every node and exits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};

use crate::{Error, Result, Testnet};

/// Serves control connections until the process ends; `down` notifies `down_requested`.
pub async fn serve(listener: TcpListener, net: Arc<Mutex<Testnet>>, down_requested: Arc<Notify>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let net = net.clone();
        let down = down_requested.clone();
        tokio::spawn(async move {
            let _ = handle(stream, net, down).await;
        });
    }
}

async fn handle(stream: TcpStream, net: Arc<Mutex<Testnet>>, down: Arc<Notify>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let cmd = req["cmd"].as_str().unwrap_or("");
        let arg = |k: &str| req[k].as_str().unwrap_or("").to_string();
        let result: Result<()> = {
            let mut net = net.lock().await;
            match cmd {
                "stop" => net.stop_node(&arg("node")).await,
                "start" => net.start_node(&arg("node")).await,
                "kill" => net.kill_node(&arg("node")).await,
                "partition" => net.partition(&arg("a"), &arg("b")),
                "heal" => net.heal(),
                "status" | "down" => Ok(()),
                other => Err(Error::new(format!("unknown command {other:?}"))),
            }
        };
        let answer = match result {
            Ok(()) => json!({"ok": true, "state": net.lock().await.state()}),
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        };
        write.write_all(format!("{answer}\n").as_bytes()).await?;
        if cmd == "down" {
            down.notify_one();
        }
    }
    Ok(())
}

/// Reads `DIR/testnet.json`.
pub fn read_state(state_dir: &Path) -> Result<Value> {
    let path = state_dir.join("testnet.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(format!("{}: {e} (is `testnet up --state-dir {}` running?)", path.display(), state_dir.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// Sends one command to the `up` process recorded in `DIR/testnet.json`.
pub async fn send(state_dir: &Path, request: Value) -> Result<Value> {
    let state = read_state(state_dir)?;
    let addr: SocketAddr = state["control"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Error::new("testnet.json records no control address"))?;
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| Error::new(format!("control socket {addr}: timed out")))?
        .map_err(|e| Error::new(format!("control socket {addr}: {e} (is `testnet up` still running?)")))?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await.map_err(|e| Error::new(e.to_string()))?;
    let mut lines = BufReader::new(read).lines();
    // Starting a node waits for it to be ready, stopping for a clean exit: allow for both.
    let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
        .await
        .map_err(|_| Error::new("no answer from the testnet within 90 s"))?
        .map_err(|e| Error::new(e.to_string()))?
        .ok_or_else(|| Error::new("the testnet closed the control connection"))?;
    let answer: Value = serde_json::from_str(&line).map_err(|e| Error::new(format!("bad answer {line:?}: {e}")))?;
    if answer["ok"] == true {
        Ok(answer)
    } else {
        Err(Error::new(answer["error"].as_str().unwrap_or("the command failed").to_string()))
    }
}
