//! Storage: every SQL statement of the server lives in this module and its children.
//!
//! Reads go through [`Store`] on the connection pool. Writes that must check and change state
//! atomically open a [`WriteTx`] (`BEGIN IMMEDIATE`, so SQLite takes the write lock up front and
//! concurrent writers queue instead of failing on lock upgrade); domain code reads, decides with
//! pure rules, writes, then commits.

mod dag;
mod export;
mod fed;
mod fed_backfill;
mod fed_inbound;
mod fed_join;
mod fed_partial;
mod fed_peers;
mod fed_policy;
mod fed_sender;
mod graph;
mod identity;
mod media;
mod messages;
mod models;
mod project;
mod rooms;
mod writer;

pub use export::{ExportEventRow, ExportMember, ExportReader};
pub use fed_inbound::{FedEvent, FedMember};
pub use fed_partial::PartialRoom;
pub use fed_sender::{DestinationRow, OutboundEvent, PeerStatus};
pub use graph::{
    EventStatus, GraphHead, GraphRows, GroupRef, Incoming, LocalAppend, PersistError, Persisted, SNAPSHOT_EVERY,
};
pub use media::MediaRow;
pub use messages::{MessageRow, PageQuery, PageRow, ReactionCount};
pub use models::*;
pub use project::{PduCache, StateRow};
pub use rooms::{DirectoryQuery, NewEvent};
pub use writer::{BatchTx, BatchWriter};

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlSafeStr, Sqlite, SqlitePool, Transaction};

use crate::config::Durability;

/// Migrations are compiled into the binary so it runs from any directory. sqlx refuses a
/// database whose applied migrations' text has changed (it keeps their checksums), so a file
/// here is never edited once released, comments included. That is why 0001 and 0002 still say
/// "the PostgreSQL migrations mirror this file": there are no PostgreSQL migrations yet; the
/// SQL is only written to be portable.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../../../migrations/sqlite/0001_foundation.sql")),
    (2, "media", include_str!("../../../migrations/sqlite/0002_media.sql")),
    (3, "messages", include_str!("../../../migrations/sqlite/0003_messages.sql")),
    (4, "signed_events", include_str!("../../../migrations/sqlite/0004_signed_events.sql")),
    (5, "write_path", include_str!("../../../migrations/sqlite/0005_write_path.sql")),
    (6, "lean_send_writes", include_str!("../../../migrations/sqlite/0006_lean_send_writes.sql")),
    (7, "tenant_registration_tokens", include_str!("../../../migrations/sqlite/0007_tenant_registration_tokens.sql")),
    (8, "event_graph", include_str!("../../../migrations/sqlite/0008_event_graph.sql")),
    (9, "federation", include_str!("../../../migrations/sqlite/0009_federation.sql")),
    (10, "fed_policy", include_str!("../../../migrations/sqlite/0010_fed_policy.sql")),
    (11, "fed_backfill", include_str!("../../../migrations/sqlite/0011_fed_backfill.sql")),
    (12, "partial_state", include_str!("../../../migrations/sqlite/0012_partial_state.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: only sqlite:// is supported so far")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The highest stream position committed so far; subscribers wake on every commit that
    /// appended events. This is the in-process event bus's source of truth.
    committed: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    /// Signs the events this server creates; absent for maintenance commands that make none.
    signer: Option<std::sync::Arc<EventSigner>>,
    /// Writers queue here, in memory, before `BEGIN IMMEDIATE`: SQLite admits one writer at a
    /// time anyway, and its busy handler would make waiters sleep in growing steps instead.
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The database file, for connections outside the pool (the batch writer, direct reads).
    file: std::path::PathBuf,
    durability: Durability,
    /// The write-ahead log's length, in frames, past which the checkpointer starts it over.
    wal_restart_frames: i64,
    readers: std::sync::Arc<writer::DirectReaders>,
    /// Parsed auth events, shared by every writer of this process.
    pdus: std::sync::Arc<PduCache>,
    /// Whether this server has ever federated a room or met a peer: until then the federation
    /// sender has nothing to look at in new commits (see [`Store::federation_in_use`]).
    fed_in_use: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// WAL frames (a 4 KiB page and its 24-byte header) in `mib` MiB.
fn wal_frames(mib: u64) -> i64 {
    i64::try_from(mib.saturating_mul(1024 * 1024) / (4096 + 24)).unwrap_or(i64::MAX).max(1)
}

/// How long a writer waits for another process's write lock (the admin CLI, an import).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's identity for signing the events it creates.
pub struct EventSigner {
    pub server_name: String,
    pub key: crypto::ServerKey,
}

pub struct WriteTx {
    // Field order matters: the transaction ends before the write lock is released.
    tx: Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    committed: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    signer: Option<std::sync::Arc<EventSigner>>,
    last_position: i64,
    pdus: std::sync::Arc<PduCache>,
    fed_in_use: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Entries of a room's current state that a resolution changed in this transaction,
    /// `(room_id, event_id now current)`: their projections follow ([`WriteTx::take_state_changes`]).
    state_changes: Vec<(String, String)>,
    /// State groups read in this transaction (groups never change but by
    /// `insert_group_entries`, which forgets them).
    group_cache: std::collections::HashMap<i64, graph::PositionState>,
    /// Events the rules read (auth events), parsed once per transaction: a batch of history
    /// names the same few again and again. Emptied when a stored wire form changes.
    event_cache: std::collections::HashMap<String, federation::event::Pdu>,
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(url: &str, durability: Durability) -> Result<Store, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // 1 MiB of page cache per connection instead of 2: the pool has several.
            .pragma("cache_size", "-1024");
        let file = opts.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        // An existing database that upgrades says so: some migrations rewrite whole tables
        // (0006 copies every event), which takes a while on a large database.
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap_or(None);
        let latest = SQLITE_MIGRATIONS.last().map_or(0, |m| m.0);
        let upgrading = applied.filter(|&v| v < latest);
        let started = std::time::Instant::now();
        if let Some(from) = upgrading {
            tracing::info!(from, to = latest, "upgrading the database schema; rewriting large tables can take minutes");
        }
        migrator(i64::MAX).run(&pool).await?;
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM graph_upgrade_pending").fetch_one(&pool).await?;
        if pending > 0 {
            graph::upgrade(&pool).await?;
        }
        if upgrading.is_some() {
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "database schema upgraded");
        }
        let top: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(stream_position), 0) FROM events").fetch_one(&pool).await?;
        let (committed, _) = tokio::sync::watch::channel(top);
        let fed_in_use: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM rooms WHERE federated) OR EXISTS (SELECT 1 FROM fed_destinations)",
        )
        .fetch_one(&pool)
        .await?;
        Ok(Store {
            pool,
            committed: std::sync::Arc::new(committed),
            signer: None,
            write_lock: Default::default(),
            file,
            durability,
            wal_restart_frames: wal_frames(crate::config::Config::default().wal_restart_mib),
            readers: Default::default(),
            pdus: Default::default(),
            fed_in_use: std::sync::Arc::new(fed_in_use.into()),
        })
    }

    /// False while no room of this server has ever been federated and no peer is known: then
    /// no committed event can be addressed to a peer. Turns true (for the life of the process)
    /// as soon as a room's federation is switched on or a federated room is made here.
    pub fn federation_in_use(&self) -> bool {
        self.fed_in_use.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn write(&self) -> Result<WriteTx, sqlx::Error> {
        let (_turn, tx) = self.begin_write().await?;
        Ok(WriteTx {
            tx,
            _turn,
            committed: self.committed.clone(),
            signer: self.signer.clone(),
            last_position: 0,
            pdus: self.pdus.clone(),
            fed_in_use: self.fed_in_use.clone(),
            state_changes: Vec::new(),
            group_cache: Default::default(),
            event_cache: Default::default(),
        })
    }

    /// Waits for this process's write turn, then begins an immediate transaction.
    async fn begin_write(
        &self,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Transaction<'static, Sqlite>), sqlx::Error> {
        let turn = self.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((turn, tx))
    }

    /// This store, signing the events it appends with `signer`.
    pub fn with_signer(mut self, signer: EventSigner) -> Store {
        self.signer = Some(std::sync::Arc::new(signer));
        self
    }

    /// How long the write-ahead log may grow before the checkpointer starts it over (see
    /// [`Config::wal_restart_mib`](crate::config::Config::wal_restart_mib)). Takes effect for
    /// batch writers opened afterwards.
    pub fn with_wal_restart_mib(mut self, mib: u64) -> Store {
        self.wal_restart_frames = wal_frames(mib);
        self
    }

    /// Watches the highest committed stream position.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// The highest committed stream position now.
    pub fn committed_position(&self) -> i64 {
        *self.committed.borrow()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The migrations up to version `upto`.
fn migrator(upto: i64) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            SQLITE_MIGRATIONS
                .iter()
                .filter(|(v, _, _)| *v <= upto)
                .map(|(v, d, sql)| {
                    Migration::new(*v, Cow::Borrowed(*d), MigrationType::Simple, sql.into_sql_str(), false)
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

impl WriteTx {
    pub fn signer(&self) -> Option<&EventSigner> {
        self.signer.as_deref()
    }

    /// Commits, then tells subscribers about any events it appended. Nothing is announced
    /// before it is durable.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        if self.last_position > 0 {
            self.committed.send_if_modified(|top| {
                let moved = self.last_position > *top;
                *top = (*top).max(self.last_position);
                moved
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod graph_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before migration 6 keeps its events, their positions and the
    /// extremities, and later appends continue after the highest position.
    #[tokio::test]
    async fn the_lean_write_migration_keeps_events_and_positions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::config::sqlite_url(dir.path());
        {
            let opts = SqliteConnectOptions::from_str(&url).expect("url").create_if_missing(true).foreign_keys(true);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.expect("pool");
            migrator(5).run(&pool).await.expect("migrations 1-5");
            sqlx::raw_sql(
                "INSERT INTO tenants VALUES ('t', 'T', 10, 10, 10, 0);
                 INSERT INTO participants (id, tenant_id, local_id, server_name, fqid, display_name, created_at)
                     VALUES ('p', 't', 'al', 'a.test', '@al:a.test', 'Al', 0);
                 INSERT INTO workspaces (id, tenant_id, owner_id, name, created_at) VALUES ('w', 't', 'p', 'W', 0);
                 INSERT INTO rooms (id, tenant_id, room_type, workspace_id, creator_id, created_at)
                     VALUES ('r', 't', 'group', 'w', 'p', 0);
                 INSERT INTO events (stream_position, event_id, room_id, event_type, sender_id, content, origin_ts,
                                     event_uuid, pdu, depth, relates_to, edited_at)
                     VALUES (7, 'evt-a', 'r', 'swp.room.message', 'p', '{\"body\":\"a\"}', 1, 'u1', '{}', 1, NULL, NULL),
                            (9, 'evt-b', 'r', 'swp.room.message', 'p', '{\"body\":\"b\"}', 2, 'u2', '{}', 2, 'evt-a', 5);
                 INSERT INTO room_extremities VALUES ('r', 'evt-b', 2);",
            )
            .execute(&pool)
            .await
            .expect("rows of the old schema");
            pool.close().await;
        }
        let store = Store::open(&url, Durability::Normal).await.expect("upgrade");
        assert_eq!(store.committed_position(), 9);
        let rows: Vec<(i64, String, String, Option<String>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT stream_position, event_id, content, relates_to, edited_at, depth FROM events ORDER BY stream_position",
        )
        .fetch_all(&store.pool)
        .await
        .expect("events");
        assert_eq!(
            rows,
            vec![
                (7, "evt-a".into(), r#"{"body":"a"}"#.into(), None, None, 1),
                (9, "evt-b".into(), r#"{"body":"b"}"#.into(), Some("evt-a".into()), Some(5), 2)
            ]
        );
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO events (event_id, room_id, event_type, sender, content, origin_ts)
             VALUES ('evt-c', 'r', 'swp.room.message', '@al:a.test', '{}', 3) RETURNING stream_position",
        )
        .fetch_one(&store.pool)
        .await
        .expect("append");
        assert_eq!(next, 10);
        let extremities: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT room_id, event_id, depth FROM room_extremities")
                .fetch_all(&store.pool)
                .await
                .expect("x");
        assert_eq!(extremities, vec![("r".into(), "evt-b".into(), 2)]);
        let schema: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT name, sql FROM sqlite_schema WHERE tbl_name IN ('events', 'room_extremities')")
                .fetch_all(&store.pool)
                .await
                .expect("schema");
        let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
        for index in ["events_room_pos", "events_room_type_pos", "events_uuid_sender", "events_relates_to"] {
            assert!(names.contains(&index), "{index} missing from {names:?}");
        }
        let sql_of =
            |name: &str| schema.iter().find(|(n, _)| n == name).and_then(|(_, s)| s.clone()).unwrap_or_default();
        assert!(!sql_of("events").contains("AUTOINCREMENT"));
        assert!(sql_of("room_extremities").contains("WITHOUT ROWID"));
        // The old AUTOINCREMENT's sequence row is gone. The old schema made `sqlite_sequence`,
        // so the table is there: a failing query fails the test, never reads as 0 rows.
        let sequences: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'events'")
            .fetch_one(&store.pool)
            .await
            .expect("sqlite_sequence of the upgraded database");
        assert_eq!(sequences, 0, "events keeps no AUTOINCREMENT sequence");
        // The unique keys still hold.
        let duplicate = sqlx::query(
            "INSERT INTO events (event_id, room_id, event_type, sender, content, origin_ts, event_uuid)
             VALUES ('evt-d', 'r', 'swp.room.message', '@al:a.test', '{}', 3, 'u1')",
        )
        .execute(&store.pool)
        .await;
        assert!(duplicate.is_err(), "event_uuid per sender stays unique");
        store.close().await;
    }
}
