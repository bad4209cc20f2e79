//! Writing a room bundle. Entries, in this order: `events.jsonl` (one event per line, read from
//! the database a page at a time), `media/<sha256>/<name>` for every file the room's
//! `swp.media` messages name, and last `manifest.json`, which summarises what came before.
//! Nothing is held in memory beyond one page of events and the sets of senders and media ids.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

use super::format::{
    EVENTS, EventLine, EventsInfo, FORMAT, ImportedSender, MANIFEST, Manifest, MediaInfo, MediaUpload, MemberInfo,
    RoomInfo, ServerInfo, VERSION, media_entry_path,
};
use super::{Progress, TempFile, hex};
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::messages::EDIT;
use crate::rooms::{event_types, rules};
use crate::storage::{ExportEventRow, ExportReader, MediaRow, Participant, Room, RoomType, Store};

/// Events read from the database per query.
const PAGE: i64 = 500;
/// Bytes handed to the HTTP body at a time.
const CHUNK: usize = 64 * 1024;

/// What an export reads from.
#[derive(Clone)]
pub struct ExportSource {
    pub store: Store,
    pub data_dir: PathBuf,
    pub server: ServerInfo,
}

/// Incognito rooms never leave their server; federated rooms have history other servers hold
/// too, which a bundle cannot carry faithfully yet.
pub fn refuse_unexportable(room: &Room) -> ApiResult<()> {
    if room.room_type == RoomType::Incognito {
        return Err(ApiError::RoomExportRefused("incognito rooms are never exported".into()));
    }
    if room.federated {
        return Err(ApiError::RoomExportRefused("federated rooms cannot be exported".into()));
    }
    Ok(())
}

/// Any joined member may export: the API's check order (visible, member, type).
pub async fn authorize(store: &Store, caller: &Participant, room_id: &str) -> ApiResult<Room> {
    let view = store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?;
    let seat = rules::Seat { membership: view.my_membership, power: view.my_power_level.unwrap_or(0) };
    rules::require_joined(&view.room, seat, caller)?;
    refuse_unexportable(&view.room)?;
    Ok(view.room)
}

fn io_err(e: io::Error) -> ApiError {
    ApiError::internal(format!("export: {e}"))
}

fn zip_err(e: zip::result::ZipError) -> ApiError {
    ApiError::internal(format!("export: zip: {e}"))
}

/// Counts the bytes written through it; the count is shared so progress can read it while the
/// ZIP writer owns the stream.
struct Counting<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the bundle of `room_id` as `exporter` sees it to `out`, and answers `out`. Runs on a
/// blocking thread: database reads go through `rt`. All reads share one snapshot.
pub fn write_bundle<W: Write>(
    rt: &Handle,
    src: &ExportSource,
    room_id: &str,
    exporter: &Participant,
    out: W,
    progress: &mut dyn FnMut(Progress),
) -> ApiResult<W> {
    let mut reader = rt.block_on(src.store.export_reader())?;
    let result = write_snapshot(rt, src, &mut reader, room_id, exporter, out, progress);
    let _ = rt.block_on(reader.finish());
    result
}

fn json_column(text: &str) -> ApiResult<Value> {
    serde_json::from_str(text).map_err(|e| ApiError::internal(format!("export: stored JSON: {e}")))
}

fn event_line(row: &ExportEventRow) -> ApiResult<EventLine> {
    Ok(EventLine {
        event_id: row.event_id.clone(),
        stream_position: row.stream_position,
        event_type: row.event_type.clone(),
        state_key: row.state_key.clone(),
        sender: row.sender_fqid.clone(),
        origin_ts: row.origin_ts,
        content: json_column(&row.content)?,
        original_content: row.original_content.as_deref().map(json_column).transpose()?,
        edited_at: row.edited_at,
        redacted_at: row.redacted_at,
        relates_to: row.relates_to.clone(),
        event_uuid: row.event_uuid.clone(),
        pdu: row.pdu.as_deref().map(json_column).transpose()?.unwrap_or(Value::Null),
    })
}

/// The media id of a `swp.media` message content, if any.
pub(crate) use crate::messages::media_id_of;

/// Every media id the line's message or edit names, in its current and original content.
fn media_ids_of(line: &EventLine, into: &mut BTreeSet<String>) {
    let mut add = |c: &Value| {
        if let Some(id) = media_id_of(c) {
            into.insert(id.to_string());
        }
    };
    if line.event_type == event_types::MESSAGE {
        add(&line.content);
        if let Some(o) = &line.original_content {
            add(o);
        }
    } else if line.event_type == EDIT
        && let Some(c) = line.content.get("new_content")
    {
        add(c);
    }
}

#[allow(clippy::too_many_arguments)]
fn write_snapshot<W: Write>(
    rt: &Handle,
    src: &ExportSource,
    reader: &mut ExportReader,
    room_id: &str,
    exporter: &Participant,
    out: W,
    progress: &mut dyn FnMut(Progress),
) -> ApiResult<W> {
    let room = rt.block_on(reader.room(room_id))?.ok_or(ApiError::RoomNotFound)?;
    refuse_unexportable(&room)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let mut zip = zip::ZipWriter::new_stream(Counting { inner: out, bytes: bytes.clone() });
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).unix_permissions(0o644);

    // events.jsonl: every event in stream order.
    zip.start_file(EVENTS, deflated.large_file(true)).map_err(zip_err)?;
    let mut hasher = Sha256::new();
    let (mut count, mut after) = (0u64, 0i64);
    let mut sender_ids = BTreeSet::new();
    let mut media_ids = BTreeSet::new();
    loop {
        let page = rt.block_on(reader.event_page(room_id, after, PAGE))?;
        let Some(last) = page.last() else { break };
        after = last.stream_position;
        for row in &page {
            let line = event_line(row)?;
            media_ids_of(&line, &mut media_ids);
            sender_ids.insert(row.sender_id.clone());
            let mut text = serde_json::to_vec(&line).map_err(ApiError::internal)?;
            text.push(b'\n');
            hasher.update(&text);
            zip.write_all(&text).map_err(io_err)?;
            count += 1;
        }
        progress(Progress { events: count, bytes: bytes.load(Ordering::Relaxed) });
    }
    let events_sha256 = hex(&hasher.finalize());

    let members = rt.block_on(reader.members(room_id))?;
    let creator = members
        .iter()
        .find(|m| m.participant_id == room.creator_id)
        .map(|m| m.fqid.clone())
        .or_else(|| rt.block_on(reader.participant(&room.creator_id)).ok().flatten().map(|p| p.fqid))
        .unwrap_or_default();
    let mut imported_senders = BTreeMap::new();
    for id in &sender_ids {
        if let Some(p) = rt.block_on(reader.participant(id))? {
            let block = ImportedSender {
                fqid: p.fqid.clone(),
                display_name: p.display_name.clone(),
                server_name: p.server_name.clone(),
            };
            imported_senders.insert(p.fqid, block);
        }
    }

    // media/<sha256>/<name>: each distinct content once, however many uploads name it.
    let mut by_sha: BTreeMap<String, Vec<MediaRow>> = BTreeMap::new();
    for id in &media_ids {
        if let Some(row) = rt.block_on(reader.media(id))? {
            by_sha.entry(row.sha256.clone()).or_default().push(row);
        }
    }
    let mut media = BTreeMap::new();
    for (sha, rows) in by_sha {
        let first = &rows[0];
        let size = u64::try_from(first.size).map_err(|_| ApiError::internal("negative media size"))?;
        let path = media_entry_path(&sha, first.filename.as_deref());
        let stored = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(0o644)
            .large_file(size > u64::from(u32::MAX));
        zip.start_file(path.as_str(), stored).map_err(zip_err)?;
        let mut file = std::fs::File::open(crate::media::content_path(&src.data_dir, &sha)).map_err(io_err)?;
        let copied = io::copy(&mut file, &mut zip).map_err(io_err)?;
        if copied != size {
            return Err(ApiError::internal(format!("export: media {sha} has {copied} bytes, expected {size}")));
        }
        let uploads: Vec<MediaUpload> = rows
            .iter()
            .map(|r| MediaUpload {
                media_id: r.media_id.clone(),
                mime_type: r.mime_type.clone(),
                filename: r.filename.clone(),
            })
            .collect();
        let info = MediaInfo {
            path,
            size,
            mime_type: first.mime_type.clone(),
            filename: first.filename.clone(),
            media_ids: rows.iter().map(|r| r.media_id.clone()).collect(),
            uploads,
        };
        media.insert(sha, info);
        progress(Progress { events: count, bytes: bytes.load(Ordering::Relaxed) });
    }

    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: now_secs(),
        exported_by: exporter.fqid.clone(),
        server: src.server.clone(),
        room: RoomInfo {
            id: room.id.clone(),
            room_type: room.room_type,
            name: room.name.clone(),
            topic: room.topic.clone(),
            room_alias: room.room_alias.clone(),
            state: room.state,
            created_at: room.created_at,
            creator,
            tenant_id: room.tenant_id.clone(),
        },
        members: members
            .into_iter()
            .map(|m| MemberInfo {
                fqid: m.fqid,
                display_name: m.display_name,
                membership: m.membership,
                power_level: m.power_level,
                joined_at: m.joined_at,
            })
            .collect(),
        imported_senders,
        events_file: EventsInfo { entry: EVENTS.into(), count, sha256: events_sha256 },
        media,
    };
    zip.start_file(MANIFEST, deflated.large_file(true)).map_err(zip_err)?;
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?;
    // The manifest is an object: reopen it to append `events`, streamed from a second pass over
    // the same snapshot so memory stays flat whatever the room's size.
    if text.pop() != Some(b'}') {
        return Err(ApiError::internal("manifest did not serialise as an object"));
    }
    while text.last().is_some_and(u8::is_ascii_whitespace) {
        text.pop();
    }
    zip.write_all(&text).map_err(io_err)?;
    zip.write_all(b",\n  \"events\": [").map_err(io_err)?;
    let (mut first, mut after) = (true, 0i64);
    loop {
        let page = rt.block_on(reader.event_page(room_id, after, PAGE))?;
        let Some(last) = page.last() else { break };
        after = last.stream_position;
        for row in &page {
            zip.write_all(if first { b"\n    " } else { b",\n    " }).map_err(io_err)?;
            first = false;
            let line = serde_json::to_vec(&event_line(row)?).map_err(ApiError::internal)?;
            zip.write_all(&line).map_err(io_err)?;
        }
        progress(Progress { events: count, bytes: bytes.load(Ordering::Relaxed) });
    }
    zip.write_all(b"\n  ]\n}\n").map_err(io_err)?;
    let out = zip.finish().map_err(zip_err)?.into_inner();
    progress(Progress { events: count, bytes: bytes.load(Ordering::Relaxed) });
    Ok(out.inner)
}

/// Exports that may read the database at once, server-wide. Each holds one pooled read
/// connection while it writes its temp file (at disk speed, never at the client's).
pub const MAX_CONCURRENT_EXPORTS: usize = 2;
/// How long an export waits for a turn before it is answered 503 `SW_UNAVAILABLE`.
pub const EXPORT_QUEUE_WAIT: Duration = Duration::from_secs(20);
static EXPORT_TURNS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_EXPORTS);

/// How far the writer has got: bytes in the file, and whether (and how) it finished.
#[derive(Clone, Default)]
struct Written {
    bytes: u64,
    done: Option<Result<(), String>>,
}

/// Counts the bytes that reach the file and tells the reader.
struct Announcing {
    file: std::fs::File,
    written: tokio::sync::watch::Sender<Written>,
}

impl Write for Announcing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written.send_modify(|w| w.bytes += n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A bundle being written to a temp file while it is sent: the file goes when this is dropped.
pub struct Growing {
    temp: TempFile,
    reader: std::fs::File,
    written: tokio::sync::watch::Receiver<Written>,
}

/// Starts writing the bundle to `<data_dir>/tmp/export-*.zip` on a blocking thread, once one of
/// the [`MAX_CONCURRENT_EXPORTS`] turns is free (waiting at most [`EXPORT_QUEUE_WAIT`]), and
/// answers at once so the response can stream the file as it grows. The writer runs at disk
/// speed whatever the client does, so the database snapshot is never held for a slow or stalled
/// client; if the client leaves, the file is unlinked and the writer finishes into the void.
/// The ZIP is written append-only (`new_stream`), so bytes in the file are final when written.
pub async fn start(src: ExportSource, room_id: String, exporter: Participant) -> ApiResult<Growing> {
    let permit = tokio::time::timeout(EXPORT_QUEUE_WAIT, EXPORT_TURNS.acquire())
        .await
        .map_err(|_| ApiError::Unavailable("too many room exports are running; retry later".into()))?
        .map_err(ApiError::internal)?;
    let (temp, file) = TempFile::create(&src.data_dir, "export")?;
    let reader = std::fs::File::open(&temp.path).map_err(io_err)?;
    let (tx, rx) = tokio::sync::watch::channel(Written::default());
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let out = io::BufWriter::with_capacity(256 * 1024, Announcing { file, written: tx.clone() });
        let result = write_bundle(&rt, &src, &room_id, &exporter, out, &mut |_| {})
            .and_then(|out| out.into_inner().map(|_| ()).map_err(|e| io_err(e.into_error())));
        if let Err(e) = &result {
            tracing::warn!(room = %room_id, error = %e, "export failed while streaming");
        }
        tx.send_modify(|w| w.done = Some(result.map_err(|e| e.to_string())));
    });
    Ok(Growing { temp, reader, written: rx })
}

/// The bundle as body chunks, following the file as the writer fills it. A writer error ends
/// the body early (the client sees a truncated download). The temp file is removed when the
/// stream ends or is dropped.
pub fn stream(g: Growing) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let state = Some((tokio::fs::File::from_std(g.reader), g.written, 0u64, g.temp));
    futures_util::stream::unfold(state, |state| async move {
        let (mut file, mut written, mut sent, temp) = state?;
        loop {
            let now = written.borrow_and_update().clone();
            if sent < now.bytes {
                let want = (now.bytes - sent).min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                return match file.read_exact(&mut buf).await {
                    Ok(_) => {
                        sent += want as u64;
                        Some((Ok(Bytes::from(buf)), Some((file, written, sent, temp))))
                    }
                    Err(e) => Some((Err(e), None)),
                };
            }
            match now.done {
                Some(Ok(())) => return None,
                Some(Err(e)) => return Some((Err(io::Error::other(e)), None)),
                None => {
                    if written.changed().await.is_err() {
                        // The writer vanished without a word (it panicked): end the body.
                        return Some((Err(io::Error::other("export writer stopped")), None));
                    }
                }
            }
        }
    })
}
