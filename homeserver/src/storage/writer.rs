//! Direct SQLite connections, outside the sqlx pool: the send path's batch writer (owned by one
//! thread), the WAL checkpointer, and a few readers for reads of many rows.
//!
//! Why: sqlx runs every statement of a connection on that connection's worker thread, so each
//! statement costs two thread wake-ups; on a loaded 2-core machine a wake-up can wait for a
//! core, and a batch of sends is a dozen statements. The group commit's writer thread instead
//! owns this connection and calls SQLite directly: a whole batch (reads, appends, commit) runs
//! without leaving the thread. Owning the connection also keeps its page cache warm, since no
//! other connection of this process writes between two batches.
//!
//! It shares the database with the [`Store`] pool and serialises with every other writer of
//! this process through the same in-process write lock, taken before `BEGIN IMMEDIATE`.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::dag::{FQID_OF_SQL, auth_state_sql};
use super::graph::{
    DELETE_EXTREMITIES_SQL, EventStatus, GraphHead, GraphRows, HEAD_SQL, INSERT_EVENT_ROWID_SQL, INSERT_EXTREMITY_SQL,
    auth_edges_sql, edges_sql,
};
use super::rooms::TENANT_SQL;
use super::*;

/// Rows of one multi-row edge INSERT in the send batch.
const EDGE_CHUNK: usize = 16;

/// The writer connection's page cache: pages the batch touches (index leaves, the room's state)
/// stay in memory from one batch to the next.
const WRITER_CACHE_KIB: i64 = 4 * 1024;

pub struct BatchWriter {
    conn: Connection,
    /// Dropping it stops the checkpointer.
    _checkpointer: std::sync::mpsc::Sender<()>,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    committed: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    signer: Option<Arc<EventSigner>>,
}

/// An open `BEGIN IMMEDIATE` transaction on the batch writer, holding the write turn. Dropping
/// it without [`BatchTx::commit`] rolls back.
pub struct BatchTx<'w> {
    conn: &'w Connection,
    committed: &'w tokio::sync::watch::Sender<i64>,
    signer: Option<&'w EventSigner>,
    last_position: i64,
    open: bool,
    // Released after `drop` has rolled back, since fields drop after the body.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Store {
    /// Opens the batch writer's own connection and starts the WAL checkpointer beside it. Meant
    /// for startup: opening does blocking file I/O, though it never waits on the write lock.
    pub fn batch_writer(&self) -> Result<BatchWriter, rusqlite::Error> {
        let conn = self.direct_connection()?;
        // Its commits never checkpoint: the checkpointer thread does, beside it.
        conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = 0;"))?;
        // Room for the multi-row edge INSERTs too, one statement per batch size seen.
        conn.set_prepared_statement_cache_capacity(64);
        let checkpointer =
            start_checkpointer(self.direct_connection()?, self.write_lock.clone(), self.wal_restart_frames)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(BatchWriter {
            conn,
            _checkpointer: checkpointer,
            write_lock: self.write_lock.clone(),
            committed: self.committed.clone(),
            signer: self.signer.clone(),
        })
    }
}

impl Store {
    /// A connection outside the pool, set up like the pool's.
    fn direct_connection(&self) -> Result<Connection, rusqlite::Error> {
        open_direct(&self.file, self.durability)
    }

    /// Runs `f` on a direct read-only connection, on the blocking pool. For reads of many rows:
    /// sqlx hands each row of a result from its worker thread to the caller on its own.
    pub(super) async fn read_direct<T, F>(&self, f: F) -> Result<T, rusqlite::Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        // Not a conversion failure: the only variant that carries any error (a closed semaphore,
        // a panicked read), which callers show as an internal error.
        let _permit =
            self.readers.permits.acquire().await.map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let (file, durability) = (self.file.clone(), self.durability);
        let readers = self.readers.clone();
        let run = move || {
            let idle = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => {
                    let conn = open_direct(&file, durability)?;
                    conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -1024;")?;
                    conn
                }
            };
            let out = f(&conn);
            readers.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            out
        };
        tokio::task::spawn_blocking(run).await.map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
    }
}

/// The direct read connections: kept for reuse, at most [`DIRECT_READERS`] in use at once.
pub(super) struct DirectReaders {
    idle: std::sync::Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

/// How many direct reads run at once (each holds a blocking-pool thread and a connection).
const DIRECT_READERS: usize = 4;

impl Default for DirectReaders {
    fn default() -> Self {
        DirectReaders { idle: Default::default(), permits: tokio::sync::Semaphore::new(DIRECT_READERS) }
    }
}

fn open_direct(file: &std::path::Path, durability: Durability) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(file)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))?;
    Ok(conn)
}

/// How often the checkpointer looks at the WAL while it keeps growing, and while it is quiet.
/// Not more often: every checkpoint syncs twice, and copies once more each page the batches
/// rewrote since the last one (the ends of the indexes, the random leaves of the event id
/// index), so a longer interval copies a page rewritten many times once. Under wrk, 100 ms used
/// ~6 % less CPU per send than 20 ms, and 250 ms ~3 % less than 100 ms.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(250);
const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);
/// How long the WAL must be (4 MiB) before the checkpointer empties it when writers are quiet.
const QUIET_TRUNCATE_FRAMES: i64 = 1024;
/// How long starting the WAL over may wait for readers that still use it; it is retried later.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(50);

/// Copies committed pages from the WAL into the database file on a thread of its own.
///
/// Why: SQLite checkpoints inside the commit that crosses `wal_autocheckpoint`, so one batch
/// of sends in every few dozen paid for copying megabytes and two fsyncs while every sender
/// waited. A `PASSIVE` checkpoint runs beside the writers without blocking them. But SQLite
/// starts the WAL over only when a write begins with every frame copied, which never happens
/// while writes keep coming, and the WAL would grow without end. So once it is `restart_frames`
/// long, the checkpointer takes the in-process write turn and runs a `RESTART` checkpoint: it
/// copies the few frames written since the passive pass, then syncs the log and the database.
///
/// Writers wait for those two syncs, 20–55 ms each time on this project's test machines, so
/// the log is started over rarely: at 8 MiB it happened five times a second under full load and
/// stalled sends 16 % of the time. 64 MiB still made it about once a second at 7,500 sends/s
/// (~13 KiB of log per send), each time stopping every sender for 50–100 ms (the restart's
/// syncs, then the first commit's sync of the new log header): one 10 ms window in 18 saw no
/// progress. The default 256 MiB makes it four times rarer; PostgreSQL's `max_wal_size`
/// defaults to 1 GiB for the same reason. Before a restart, the database file is synced and
/// what was written meanwhile copied, outside the write turn, so that the restart's own copy
/// and syncs are short.
///
/// When the writers are quiet (nothing written between two looks, every frame copied) and the
/// log holds at least [`QUIET_TRUNCATE_FRAMES`], it empties the log with a `TRUNCATE`
/// checkpoint: the file's disk space is given back, and the next burst of writes starts the log
/// from its beginning instead of paying for a restart under load.
///
/// Stops when the returned sender is dropped.
fn start_checkpointer(
    conn: Connection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    restart_frames: i64,
) -> std::io::Result<std::sync::mpsc::Sender<()>> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("wal-checkpoint".into()).spawn(move || {
        let checkpoint = |mode: &str| -> Result<(i64, i64), rusqlite::Error> {
            // Answers (busy, frames in the WAL, frames copied so far).
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(1)?, r.get(2)?)))
        };
        let quiet_floor = QUIET_TRUNCATE_FRAMES.min(restart_frames);
        let (mut wait, mut last) = (CHECKPOINT_IDLE, (0, 0));
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
            let mut outcome = checkpoint("PASSIVE");
            if matches!(outcome, Ok((log, _)) if log >= restart_frames) {
                // The restart syncs the database file while every writer waits, and passive
                // passes leave it unsynced (they sync it only once they copied every frame,
                // which never happens under load): seconds of copied pages, a 65–100 ms sync on
                // this project's test machines. Sync them first, outside the write turn, and
                // copy and sync once more what came meanwhile: the restart is left with little.
                for _ in 0..2 {
                    if let Err(e) = sync_database_file(&conn) {
                        tracing::warn!(error = %e, "syncing the database file failed");
                    }
                    outcome = checkpoint("PASSIVE");
                }
            }
            let finish = match outcome {
                Ok((log, _)) if log >= restart_frames => Some("RESTART"),
                // Nothing written since the last look, and every frame copied: the writers are
                // quiet, so nobody waits while the log is emptied and its disk space given back.
                // Not for a short log: the first commit into an emptied log syncs its header, a
                // few milliseconds that a server with a message every few seconds would
                // otherwise pay on most of its sends.
                Ok((log, copied)) if log >= quiet_floor && copied == log && (log, copied) == last => Some("TRUNCATE"),
                _ => None,
            };
            if let Some(mode) = finish {
                let _turn = write_lock.blocking_lock();
                let _ = conn.busy_timeout(WAL_RESTART_WAIT);
                outcome = checkpoint(mode);
                let _ = conn.busy_timeout(BUSY_TIMEOUT);
            }
            wait = match outcome {
                // Frames were added since the last look: the writers are busy.
                Ok(frames) if frames != last => {
                    last = frames;
                    CHECKPOINT_BUSY
                }
                Ok(_) => CHECKPOINT_IDLE,
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                    CHECKPOINT_IDLE
                }
            };
        }
    })?;
    Ok(stop)
}

/// Syncs the database file through the connection's own file handle.
///
/// Not through a `File` of our own: closing any descriptor of a file drops every POSIX lock
/// the process holds on it, SQLite's included (sqlite.org/howtocorrupt.html, 2.2), and another
/// process (the admin CLI) could then delete the log from under the server.
fn sync_database_file(conn: &Connection) -> Result<(), rusqlite::Error> {
    use rusqlite::ffi;
    let failed = |rc: i32| rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None);
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is open and used by this thread alone; FILE_POINTER stores the main
    // database's `sqlite3_file`, which the connection owns and keeps open while it is open.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(failed(if rc == ffi::SQLITE_OK { ffi::SQLITE_MISUSE } else { rc }));
    }
    // SAFETY: `file` is that open file; its methods stay set while it is open, and nothing else
    // uses the connection meanwhile. A sync changes no lock and no state of the connection.
    let rc = unsafe {
        match (*file).pMethods.as_ref().and_then(|m| m.xSync) {
            Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
            None => ffi::SQLITE_OK,
        }
    };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(failed(rc)) }
}

impl BatchWriter {
    /// Waits (blocking the thread) for this process's write turn, then begins an immediate
    /// transaction. Must not be called on an async runtime thread.
    pub fn begin(&mut self) -> Result<BatchTx<'_>, rusqlite::Error> {
        let turn = self.write_lock.clone().blocking_lock_owned();
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(BatchTx {
            conn: &self.conn,
            committed: &self.committed,
            signer: self.signer.as_deref(),
            last_position: 0,
            open: true,
            _turn: turn,
        })
    }
}

impl Drop for BatchTx<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl<'w> BatchTx<'w> {
    pub fn signer(&self) -> Option<&'w EventSigner> {
        self.signer
    }

    /// Whether the transaction is still open. SQLite ends it by itself after some errors
    /// (disk full, I/O): then nothing of it may be committed.
    pub fn is_alive(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Commits, then tells subscribers about the events it appended. Nothing is announced
    /// before it is durable.
    pub fn commit(mut self) -> Result<(), rusqlite::Error> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        if self.last_position > 0 {
            let last = self.last_position;
            self.committed.send_if_modified(|top| {
                let moved = last > *top;
                *top = (*top).max(last);
                moved
            });
        }
        Ok(())
    }

    /// The room and the membership and power of those of `participant_ids` that have a
    /// membership row in it, in one read.
    #[allow(clippy::type_complexity)]
    pub fn room_with_members(
        &self,
        room_id: &str,
        participant_ids: &[&str],
    ) -> Result<Option<(Room, Vec<(String, Membership, i64)>)>, rusqlite::Error> {
        let placeholders: Vec<String> = (0..participant_ids.len()).map(|i| format!("?{}", i + 2)).collect();
        let sql = format!(
            "SELECT r.id, r.tenant_id, r.room_alias, r.room_type, r.name, r.topic, r.workspace_id, r.creator_id,
                    r.created_at, r.state, r.federated, r.dm_key,
                    m.participant_id, m.membership, m.power_level
             FROM rooms r LEFT JOIN memberships m ON m.room_id = r.id AND m.participant_id IN ({})
             WHERE r.id = ?1",
            if placeholders.is_empty() { "NULL".to_string() } else { placeholders.join(", ") }
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let args = std::iter::once(room_id).chain(participant_ids.iter().copied());
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut found: Option<(Room, Vec<(String, Membership, i64)>)> = None;
        while let Some(row) = rows.next()? {
            let members = match &mut found {
                Some((_, members)) => members,
                None => {
                    let room = Room {
                        id: row.get(0)?,
                        tenant_id: row.get(1)?,
                        room_alias: row.get(2)?,
                        room_type: row.get(3)?,
                        name: row.get(4)?,
                        topic: row.get(5)?,
                        workspace_id: row.get(6)?,
                        creator_id: row.get(7)?,
                        created_at: row.get(8)?,
                        state: row.get(9)?,
                        federated: row.get(10)?,
                        dm_key: row.get(11)?,
                    };
                    &mut found.insert((room, Vec::new())).1
                }
            };
            let member: (Option<String>, Option<Membership>, Option<i64>) = (row.get(12)?, row.get(13)?, row.get(14)?);
            if let (Some(p), Some(m), Some(power)) = member {
                members.push((p, m, power));
            }
        }
        Ok(found)
    }

    /// The room's auth state for `members` (see [`WriteTx::auth_state_many`]) and its graph
    /// head (forward extremities, their positions, the current state group).
    #[allow(clippy::type_complexity)]
    pub fn auth_state_and_head(
        &self,
        room_id: &str,
        members: &[&str],
    ) -> Result<(Vec<(String, String, String)>, GraphHead), rusqlite::Error> {
        let state = self.auth_state_many(room_id, members)?;
        let mut stmt = self.conn.prepare_cached(HEAD_SQL)?;
        let rows = stmt
            .query_map([room_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<Result<_, _>>()?;
        Ok((state, GraphHead::from_rows(rows)))
    }

    /// `(type, state_key, event_id)` of the room's auth state for `members`.
    pub fn auth_state_many(
        &self,
        room_id: &str,
        members: &[&str],
    ) -> Result<Vec<(String, String, String)>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(&auth_state_sql(members.len()))?;
        let args = std::iter::once(room_id).chain(members.iter().copied());
        stmt.query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
    }

    /// The stored wire forms of `event_ids` (those stored before migration 4 have none).
    pub fn pdus_by_ids(&self, event_ids: &[&str]) -> Result<Vec<(String, Option<String>)>, rusqlite::Error> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..event_ids.len()).map(|i| format!("?{}", i + 1)).collect();
        let sql = format!("SELECT event_id, pdu FROM events WHERE event_id IN ({})", placeholders.join(", "));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        stmt.query_map(params_from_iter(event_ids.iter().copied()), |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
    }

    /// `(event_id, room_id)` of the event a participant already sent with this idempotency key.
    pub fn event_by_uuid(
        &self,
        sender_id: &str,
        event_uuid: &str,
    ) -> Result<Option<(String, String)>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.event_id, e.room_id FROM participants p JOIN events e ON e.event_uuid = ?2 AND e.sender = p.fqid
             WHERE p.id = ?1",
        )?;
        stmt.query_row([sender_id, event_uuid], |r| Ok((r.get(0)?, r.get(1)?))).optional()
    }

    pub fn tenant(&self, id: &str) -> Result<Option<Tenant>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(TENANT_SQL)?;
        stmt.query_row([id], |r| {
            Ok(Tenant {
                id: r.get(0)?,
                name: r.get(1)?,
                max_participants: r.get(2)?,
                send_rate_per_s: r.get(3)?,
                send_burst: r.get(4)?,
                created_at: r.get(5)?,
            })
        })
        .optional()
    }

    pub fn fqid_of(&self, participant_id: &str) -> Result<Option<String>, rusqlite::Error> {
        self.conn.prepare_cached(FQID_OF_SQL)?.query_row([participant_id], |r| r.get(0)).optional()
    }

    /// Appends a message on top of its room's head (a message starts no state group: it shares
    /// the head's) and answers its stream position; its edges go to `rows`, written by
    /// [`Self::write_graph_rows`] once per batch. A failed append changes nothing (a statement
    /// is atomic), unless SQLite ended the whole transaction: see [`Self::is_alive`].
    pub fn append_message(
        &mut self,
        e: &NewEvent<'_>,
        head: &GraphHead,
        auth_events: &[String],
        rows: &mut GraphRows,
    ) -> Result<i64, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(INSERT_EVENT_ROWID_SQL)?;
        stmt.execute(rusqlite::params![
            None::<i64>,
            e.event_id,
            e.room_id,
            e.event_type,
            e.state_key,
            e.sender,
            e.content,
            e.origin_ts,
            e.event_uuid,
            e.relates_to,
            e.unsigned.map(|u| u.to_string()),
            e.pdu,
            e.depth,
            EventStatus::Accepted.code(),
            head.state.map(|g| g.id),
        ])?;
        let pos = self.conn.last_insert_rowid();
        self.last_position = self.last_position.max(pos);
        rows.add_local(pos, head, auth_events);
        Ok(pos)
    }

    /// Writes a batch's edges, a few multi-row INSERTs per table.
    ///
    /// Statements come in two sizes only ([`EDGE_CHUNK`] rows and one row), so the few prepared
    /// statements stay cached: a statement per batch size would be parsed again in most
    /// batches. The auth events of a batch are few (a room's create and power-levels events,
    /// its senders' memberships), so each one's position is looked up once per batch, not once
    /// per send.
    pub fn write_graph_rows(&self, rows: &GraphRows) -> Result<(), rusqlite::Error> {
        self.insert_pairs(&rows.edges, edges_sql)?;
        let mut ids: Vec<&str> = rows.auth_edges.iter().map(|(_, id)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut positions: HashMap<&str, i64> = HashMap::with_capacity(ids.len());
        let mut stmt = self.conn.prepare_cached("SELECT stream_position FROM events WHERE event_id = ?1")?;
        for id in ids {
            // An auth event not stored has no edge (as a join on it would give none).
            if let Some(pos) = stmt.query_row([id], |r| r.get::<_, i64>(0)).optional()? {
                positions.insert(id, pos);
            }
        }
        let pairs: Vec<(i64, i64)> =
            rows.auth_edges.iter().filter_map(|(pos, id)| positions.get(id.as_str()).map(|a| (*pos, *a))).collect();
        self.insert_pairs(&pairs, auth_edges_sql)
    }

    fn insert_pairs(&self, pairs: &[(i64, i64)], sql: fn(usize) -> String) -> Result<(), rusqlite::Error> {
        let mut chunks = pairs.chunks_exact(EDGE_CHUNK);
        for chunk in &mut chunks {
            let mut stmt = self.conn.prepare_cached(&sql(EDGE_CHUNK))?;
            stmt.execute(params_from_iter(chunk.iter().flat_map(|(a, b)| [*a, *b])))?;
        }
        let mut one = self.conn.prepare_cached(&sql(1))?;
        for (a, b) in chunks.remainder() {
            one.execute([*a, *b])?;
        }
        Ok(())
    }

    /// Makes `event_id` the room's only forward extremity: right after local events, whose
    /// `prev_events` were all the previous extremities.
    pub fn replace_extremities(&self, room_id: &str, event_id: &str, depth: i64) -> Result<(), rusqlite::Error> {
        self.conn.prepare_cached(DELETE_EXTREMITIES_SQL)?.execute([room_id])?;
        self.conn.prepare_cached(INSERT_EXTREMITY_SQL)?.execute(rusqlite::params![room_id, event_id, depth])?;
        Ok(())
    }
}

/// Text columns with a fixed vocabulary, read as their enums (sqlx does this by derive).
macro_rules! text_enum_from_sql {
    ($t:ty { $($text:literal => $variant:expr),+ $(,)? }) => {
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                match value.as_str()? {
                    $($text => Ok($variant),)+
                    other => Err(FromSqlError::Other(format!("unknown {}: {other:?}", stringify!($t)).into())),
                }
            }
        }
    };
}

text_enum_from_sql!(RoomType { "group" => RoomType::Group, "public" => RoomType::Public,
    "incognito" => RoomType::Incognito, "dm" => RoomType::Dm });
text_enum_from_sql!(RoomState { "open" => RoomState::Open, "archived" => RoomState::Archived,
    "closed" => RoomState::Closed });
text_enum_from_sql!(Membership { "join" => Membership::Join, "invite" => Membership::Invite,
    "leave" => Membership::Leave, "ban" => Membership::Ban });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_file_syncs_through_the_connections_own_handle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_direct(&dir.path().join("sync.db"), Durability::Normal).expect("open");
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").expect("write");
        sync_database_file(&conn).expect("sync");
        // The connection is as it was: it still reads and writes.
        conn.execute_batch("INSERT INTO t VALUES (2);").expect("write after the sync");
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).expect("read");
        assert_eq!(n, 2);
    }
}
