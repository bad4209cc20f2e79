//! `homeserver serve`: open storage, bind the listeners, serve until SIGINT/SIGTERM, then drain
//! in-flight requests and close the database cleanly.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::identity;
use crate::listener::Listener;
use crate::ratelimit::Throttle;
use crate::signing::Keys;
use crate::storage::EventSigner;
use crate::storage::Store;

/// Creates the data dir if it is missing, readable by its owner only: it holds password and
/// token hashes, keys and media. An existing dir keeps the mode its operator gave it.
pub fn ensure_data_dir(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot restrict data dir {}: {e}", dir.display()))?;
    }
    Ok(())
}

pub async fn open_store(config: &Config) -> Result<Store, Box<dyn std::error::Error>> {
    ensure_data_dir(&config.data_dir)?;
    let store = Store::open(&config.database_url(), config.durability).await?;
    identity::ensure_default_tenant(&store, &config.tenant_defaults).await?;
    Ok(store)
}

pub async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    ensure_data_dir(&config.data_dir)?;
    let keys = Keys::load_or_create(&config.data_dir)?;
    let signer = EventSigner { server_name: config.server_name.clone(), key: keys.current.clone() };
    let store = open_store(&config).await?.with_signer(signer).with_wal_restart_mib(config.wal_restart_mib);
    crate::bundle::sweep_stale_temp_files(&config.data_dir);
    let config = Arc::new(config);
    let limiter: Arc<crate::ratelimit::SendLimiter> = Default::default();
    let fed = Arc::new(crate::fed::Federation::start(&config, &store, &keys).await);
    let state = AppState::new(api::Shared {
        store: store.clone(),
        config: config.clone(),
        group_commit: Arc::new(crate::group_commit::GroupCommit::start(&store, limiter.clone())?),
        limiter,
        hub: Default::default(),
        keys: Arc::new(keys),
        discovery: api::discovery::build(&config),
        tokens: Default::default(),
        typing_throttle: Arc::new(Throttle::new(config.limits.typing_per_participant)),
        presence_throttle: Arc::new(Throttle::new(config.limits.presence_per_participant)),
        room_creation: Arc::new(Throttle::new(config.limits.room_creation_per_participant)),
        passwords: Arc::new(identity::Passwords::new(&config.limits)),
        fed,
    });

    state.fed.start_sender(&store, &config);
    crate::fed::partial::resume_all(&state).await;
    let fd_budget = crate::listener::raise_fd_limit();
    let limits = crate::listener::ConnLimits::new(&config.limits, fd_budget);
    let client =
        TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let client_addr = client.local_addr()?;
    let federation = match config.federation_listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (federation): {e}"))?)
        }
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let client_listener = Listener {
        name: "client",
        tcp: client,
        tls: None,
        router: api::router(state.clone()),
        limits: limits.clone(),
        body_limit: api::client_body_limit(&config),
    };
    tasks.spawn(client_listener.serve(stop_rx.clone()));
    if let Some(tcp) = federation {
        let addr = tcp.local_addr()?;
        let tls = match (&config.federation_tls_cert, &config.federation_tls_key) {
            (Some(cert), Some(key)) => Some(crate::listener::tls_acceptor(cert, key)?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = Listener {
            name: "federation",
            tcp,
            tls,
            router: api::federation_router(state.clone()),
            limits: limits.clone(),
            body_limit: api::federation_body_limit(&config),
        };
        tasks.spawn(listener.serve(stop_rx.clone()));
        println!("federation listener on {scheme}://{addr}");
    }
    tracing::info!(
        server_name = %config.server_name,
        listen = %client_addr,
        registration = ?config.registration_mode(),
        data_dir = %config.data_dir.display(),
        "homeserver started"
    );
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("homeserver {} listening on http://{client_addr}", config.server_name);

    shutdown_signal().await;
    tracing::info!(grace_secs = limits.shutdown_grace.as_secs(), "shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    state.hub.shut_down();
    state.fed.stop_sender();
    // Each listener gives its connections the grace period; this bound holds whatever they do.
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace + std::time::Duration::from_secs(1), drained).await.is_err() {
        tracing::warn!("listeners did not stop within the grace period");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
