//! `homeserver room export ROOM_ID > bundle.zip` and `homeserver room import WORKSPACE_ID <
//! bundle.zip`: the same bundles as the API, made and read by the same functions, working
//! directly on the data dir (safe while the server runs: SQLite serialises the writers).
//!
//! Who the command acts as: `--as USER` (a local username, fqid or participant id). Without
//! it, an export acts as the room's creator if still joined, else its longest-joined member;
//! an import acts as the owner of WORKSPACE_ID. Progress goes to stderr only on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Subcommand;
use tokio::runtime::Handle;

use super::export::{self, ExportSource};
use super::format::ServerInfo;
use super::import::{self, ImportTarget};
use super::{Progress, server_info};
use crate::config::{Config, ConfigFlags};
use crate::error::ApiError;
use crate::signing::Keys;
use crate::storage::{EventSigner, Membership, Participant, Store};
use crate::{ids, media, server};

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum RoomCommand {
    /// Write a room's bundle (docs/export-format.md) to stdout: `room export ROOM_ID > bundle.zip`.
    Export {
        room_id: String,
        /// Act as this local user (username, fqid or participant id), who must be joined
        /// [default: the room's creator if joined, else its longest-joined member].
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        #[command(flatten)]
        flags: ConfigFlags,
    },
    /// Import a bundle read from stdin as a new room: `room import WORKSPACE_ID < bundle.zip`.
    /// Prints `{"id": …, "imported_events": …}`.
    Import {
        workspace_id: String,
        /// Import as this local user, who must own the workspace [default: its owner].
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        #[command(flatten)]
        flags: ConfigFlags,
    },
}

fn api_error(e: ApiError) -> String {
    match e {
        ApiError::Internal(inner) => format!("internal error: {inner}"),
        other => format!("{other} ({})", other.status_and_code().1),
    }
}

/// Progress on stderr, only when it is a terminal, at most five times a second.
struct Reporter {
    verb: &'static str,
    on: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Reporter {
    fn new(verb: &'static str) -> Reporter {
        Reporter { verb, on: std::io::stderr().is_terminal(), last: None, shown: false }
    }
    fn show(&mut self, p: Progress, force: bool) {
        if !self.on || (!force && self.last.is_some_and(|t| t.elapsed() < Duration::from_millis(200))) {
            return;
        }
        self.last = Some(Instant::now());
        self.shown = true;
        let mib = p.bytes as f64 / (1024.0 * 1024.0);
        eprint!("\r{} {} events, {mib:.1} MiB", self.verb, p.events);
        let _ = std::io::stderr().flush();
    }
    fn finish(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// A local participant named by username, fqid or participant id.
async fn resolve_user(store: &Store, config: &Config, name: &str) -> CliResult<Participant> {
    let fqid = if name.starts_with('@') { name.to_string() } else { format!("@{name}:{}", config.server_name) };
    let found = match store.participant_by_fqid(&fqid).await? {
        Some(p) => Some(p),
        None if ids::is_participant_id(name) => store.participant(name).await?,
        None => None,
    };
    match found {
        Some(p) if p.server_name == config.server_name => Ok(p),
        _ => Err(format!("no local user {name:?}").into()),
    }
}

async fn default_exporter(store: &Store, room_id: &str) -> CliResult<Participant> {
    let room = store.room_view(room_id, "").await?.ok_or("room not found")?.room;
    let joined = store.members(room_id, &[Membership::Join]).await?;
    let creator = joined.iter().find(|m| m.participant.id == room.creator_id);
    let first = joined.iter().min_by_key(|m| (m.member.joined_at, m.participant.fqid.clone()));
    creator.or(first).map(|m| m.participant.clone()).ok_or_else(|| "the room has no joined member to export as".into())
}

pub async fn run(command: RoomCommand) -> CliResult<()> {
    match command {
        RoomCommand::Export { room_id, as_user, flags } => {
            let config = Config::load(&flags, std::env::vars())?;
            if !ids::is_room_id(&room_id) {
                return Err("ROOM_ID is not a room id".into());
            }
            if std::io::stdout().is_terminal() {
                return Err("refusing to write a ZIP to a terminal: redirect stdout (> bundle.zip)".into());
            }
            let keys = Keys::load_or_create(&config.data_dir)?;
            let store = server::open_store(&config).await?;
            let result = export_to_stdout(&store, &config, &keys, &room_id, as_user.as_deref()).await;
            store.close().await;
            result
        }
        RoomCommand::Import { workspace_id, as_user, flags } => {
            let config = Config::load(&flags, std::env::vars())?;
            if std::io::stdin().is_terminal() {
                return Err("pipe a bundle into stdin (< bundle.zip)".into());
            }
            let keys = Keys::load_or_create(&config.data_dir)?;
            let signer = EventSigner { server_name: config.server_name.clone(), key: keys.current.clone() };
            let store = server::open_store(&config).await?.with_signer(signer);
            // A running server's in-flight uploads share media/tmp with us.
            media::skip_leftover_sweep();
            let own = server_info(&config.server_name, &keys);
            let result = import_from_stdin(&store, &config, own, &workspace_id, as_user.as_deref()).await;
            store.close().await;
            result
        }
    }
}

async fn export_to_stdout(
    store: &Store,
    config: &Config,
    keys: &Keys,
    room_id: &str,
    as_user: Option<&str>,
) -> CliResult<()> {
    let exporter = match as_user {
        Some(u) => {
            let p = resolve_user(store, config, u).await?;
            export::authorize(store, &p, room_id).await.map_err(api_error)?;
            p
        }
        None => default_exporter(store, room_id).await?,
    };
    let src = ExportSource {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        server: server_info(&config.server_name, keys),
    };
    let rt = Handle::current();
    let room_id = room_id.to_string();
    let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut reporter = Reporter::new("exported");
        let out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
        let result = export::write_bundle(&rt, &src, &room_id, &exporter, out, &mut |p| reporter.show(p, false));
        reporter.finish();
        let mut out = result.map_err(api_error)?;
        out.flush().map_err(|e| format!("cannot write stdout: {e}"))
    })
    .await?;
    Ok(done?)
}

async fn import_from_stdin(
    store: &Store,
    config: &Config,
    own_server: ServerInfo,
    workspace_id: &str,
    as_user: Option<&str>,
) -> CliResult<()> {
    let workspace = match ids::is_workspace_id(workspace_id) {
        true => store.workspace(workspace_id).await?,
        false => None,
    };
    let workspace = workspace.ok_or("WORKSPACE_ID names no workspace")?;
    let importer = match as_user {
        Some(u) => resolve_user(store, config, u).await?,
        None => store.participant(&workspace.owner_id).await?.ok_or("the workspace's owner is gone")?,
    };
    let target = ImportTarget {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        server_name: config.server_name.clone(),
        max_import_bytes: config.max_import_bytes,
        own_server,
    };
    let rt = Handle::current();
    let workspace_id = workspace_id.to_string();
    let imported = tokio::task::spawn_blocking(move || -> Result<import::Imported, String> {
        let spool = import::spool_reader(&target.data_dir, std::io::stdin().lock(), target.max_import_bytes)
            .map_err(api_error)?;
        let mut reporter = Reporter::new("imported");
        let result = import::import_bundle(&rt, &target, &importer, Some(&workspace_id), &spool.path, &mut |p| {
            reporter.show(p, false)
        });
        reporter.finish();
        result.map_err(api_error)
    })
    .await??;
    println!("{}", serde_json::json!({"id": imported.room_id, "imported_events": imported.imported_events}));
    Ok(())
}
