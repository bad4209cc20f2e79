//! `testnet`: several real homeservers on one machine, with TLS, DNS and faults.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;
use testnet::{Error, Options, Result, Testnet, control};

#[derive(Parser)]
#[command(
    name = "testnet",
    version,
    about = "Run several real homeservers on this machine, with TLS, DNS and fault injection.",
    long_about = "Run several real homeservers on this machine, with TLS, DNS and fault injection.\n\n\
        `testnet up --nodes 3 --state-dir /tmp/tn` starts alpha.test, beta.test and gamma.test on \
        127.0.0.10, .11 and .12 (client API on :8008, federation over TLS on :8448), writes \
        /tmp/tn/testnet.json, and stays in the foreground until Ctrl-C or `testnet down`.\n\n\
        From another shell: `testnet node stop|start|kill beta --state-dir /tmp/tn`, \
        `testnet partition alpha beta --state-dir /tmp/tn`, `testnet heal --state-dir /tmp/tn`, \
        `testnet down --state-dir /tmp/tn`."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the nodes and stay in the foreground until interrupted or `testnet down`.
    Up {
        /// How many nodes (alpha, beta, gamma, …).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// Second octet of the testnet's loopback addresses (127.<subnet>.0.10, …), to run
        /// several testnets side by side.
        #[arg(long, default_value_t = 0)]
        subnet: u8,
        /// The homeserver binary [default: $TESTNET_HOMESERVER_BIN, else next to this one].
        #[arg(long, value_name = "PATH")]
        homeserver_bin: Option<PathBuf>,
        /// RUST_LOG for the nodes.
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Stop (SIGTERM), start, or kill (SIGKILL) one node: `beta` or `beta.test`.
    Node {
        #[arg(value_parser = ["stop", "start", "kill"])]
        action: String,
        name: String,
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Cut every connection between two nodes, both ways.
    Partition {
        a: String,
        b: String,
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Restore every partitioned pair.
    Heal {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Print the testnet's state (testnet.json as the running testnet sees it).
    Status {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Stop every node and the `up` process.
    Down {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up { nodes, state_dir, subnet, homeserver_bin, log } => {
            up(Options { nodes, state_dir, subnet, homeserver_bin, log, env: Vec::new() }).await
        }
        Cmd::Node { action, name, state_dir } => {
            control::send(&state_dir, json!({"cmd": action, "node": name})).await?;
            println!("{action}: {name}: done");
            Ok(())
        }
        Cmd::Partition { a, b, state_dir } => {
            control::send(&state_dir, json!({"cmd": "partition", "a": a, "b": b})).await?;
            println!("partitioned {a} and {b}");
            Ok(())
        }
        Cmd::Heal { state_dir } => {
            control::send(&state_dir, json!({"cmd": "heal"})).await?;
            println!("healed");
            Ok(())
        }
        Cmd::Status { state_dir } => {
            let answer = control::send(&state_dir, json!({"cmd": "status"})).await?;
            println!("{}", serde_json::to_string_pretty(&answer["state"]).unwrap_or_default());
            Ok(())
        }
        Cmd::Down { state_dir } => down(&state_dir).await,
    }
}

async fn up(options: Options) -> Result<()> {
    if let Ok(state) = control::read_state(&options.state_dir)
        && let Some(pid) = state["pid"].as_u64().map(|p| p as u32)
        && pid != std::process::id()
        && testnet::process_alive(pid)
        && state["control"].is_string()
    {
        return Err(Error::new(format!(
            "a testnet (pid {pid}) already runs on {}; `testnet down --state-dir {}` first",
            options.state_dir.display(),
            options.state_dir.display()
        )));
    }
    let started = Instant::now();
    let net = Testnet::start_with(options).await?;
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::new(format!("control socket: {e}")))?;
    let mut net = net;
    net.control = Some(listener.local_addr().map_err(|e| Error::new(e.to_string()))?);
    net.write_state()?;
    let dir = net.dir.clone();
    println!("testnet up: {} nodes in {:.1} s", net.nodes.len(), started.elapsed().as_secs_f64());
    for n in &net.nodes {
        println!(
            "  {:<14} client {}  federation {} ({})  admin {} / {}",
            n.server_name,
            n.client_url,
            n.federation_url,
            n.federation_addr(),
            n.admin.username,
            n.admin.password
        );
    }
    println!("  DNS {}  CA {}", net.dns_addr(), net.ca_cert_path().display());
    println!("  state {}  logs {}/<name>/log", dir.join("testnet.json").display(), dir.display());
    println!("Ctrl-C or `testnet down --state-dir {}` stops it.", dir.display());

    let net = Arc::new(tokio::sync::Mutex::new(net));
    let down = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(control::serve(listener, net.clone(), down.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new(format!("signal handler: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("interrupted: stopping the nodes"),
        _ = term.recv() => println!("terminated: stopping the nodes"),
        _ = down.notified() => println!("down: stopping the nodes"),
    }
    let mut net = net.lock().await;
    net.control = None;
    let result = net.stop_all().await;
    println!("testnet down");
    result
}

/// Asks the `up` process to stop and waits for it to exit. If it is gone already, stops any
/// node process testnet.json still records.
async fn down(state_dir: &Path) -> Result<()> {
    let state = control::read_state(state_dir)?;
    let up_pid = state["pid"].as_u64().map(|p| p as u32);
    match control::send(state_dir, json!({"cmd": "down"})).await {
        Ok(_) => {
            if let Some(pid) = up_pid {
                testnet::poll_until("the testnet to exit", Duration::from_secs(60), || async move {
                    (!testnet::process_alive(pid)).then_some(())
                })
                .await?;
            }
            println!("down");
            Ok(())
        }
        Err(e) => {
            let mut stopped = 0;
            for node in state["nodes"].as_array().into_iter().flatten() {
                let Some(pid) = node["pid"].as_u64().map(|p| p as u32) else { continue };
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                // Only a homeserver serving this node: a pid may have been reused.
                if testnet::process_alive(pid)
                    && cmdline.contains("homeserver")
                    && cmdline.contains(node["server_name"].as_str().unwrap_or("\0"))
                {
                    // SAFETY: kill(2) on a pid checked just above.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    stopped += 1;
                }
            }
            println!("the testnet's control socket is gone ({e}); sent SIGTERM to {stopped} leftover node(s)");
            Ok(())
        }
    }
}
