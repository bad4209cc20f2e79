//! Importing a room bundle: spool it to a temp file (ZIP needs to seek), check all of it
//! ([`super::validate`]), store its media in the content-addressed store, then create a new room
//! and replay the bundle's events into it in one transaction. The importer is the new room's
//! creator and the sender of every imported event; each carries its original author as
//! `content._imported_sender`. On any failure the transaction rolls back; content files already
//! stored stay (they may be shared with a concurrent upload of the same bytes; an unreferenced
//! one is harmless and left for a future garbage collection).
//!
//! One import replays at a time server-wide ([`IMPORT_TURN`]): the replay holds the store's
//! write lock from its first event to its commit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::export::media_id_of;
use super::format::{EVENTS, EventLine, ImportedSender, Manifest, ServerInfo};
use super::validate::{self, Archive, Kind, refused};
use super::{Progress, TempFile};
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::messages::{
    EDIT, IMPORTED_ORIGIN_TS, IMPORTED_PREFIX, IMPORTED_PREVIOUS, IMPORTED_SENDER, IMPORTED_SENT_BY, REACTION,
    REDACTION, SENT_BY, validate_stored_content,
};
use crate::rooms::{self, NewEventSpec, event_types::MESSAGE};
use crate::storage::{MediaRow, Participant, Room, RoomState, RoomType, Store, WriteTx};
use crate::{ids, media};

/// What an import writes to.
#[derive(Clone)]
pub struct ImportTarget {
    pub store: Store,
    pub data_dir: PathBuf,
    /// This server's name.
    pub server_name: String,
    pub max_import_bytes: u64,
    /// This server's name and keys: a bundle signed only with them was made here, and only then
    /// are its reactions credited to the local participants who made them.
    pub own_server: ServerInfo,
}

/// Imports that may store media and replay at once, server-wide; others wait their turn.
static IMPORT_TURN: Semaphore = Semaphore::const_new(1);

pub struct Imported {
    pub room_id: String,
    pub imported_events: u64,
}

/// A spooled upload in `<data_dir>/tmp`, removed when dropped.
pub type TempBundle = TempFile;

/// Imports the spooled bundle at `path` as a new room of `importer` in `workspace_id` (their
/// personal workspace when `None`). Runs on a blocking thread; database work goes through `rt`.
pub fn import_bundle(
    rt: &Handle,
    target: &ImportTarget,
    importer: &Participant,
    workspace_id: Option<&str>,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> ApiResult<Imported> {
    let workspace_id = rt.block_on(rooms::workspace_of_caller(&target.store, importer, workspace_id))?;
    let file = File::open(path).map_err(|e| ApiError::internal(format!("import: open spool: {e}")))?;
    let mut archive = validate::open(file)?;
    let checked = validate::check(&mut archive, target.max_import_bytes, progress)?;
    let _turn = rt.block_on(IMPORT_TURN.acquire()).map_err(ApiError::internal)?;
    // Content files stay on failure: see the module documentation.
    store_media(rt, target, &mut archive, &checked.manifest)?;
    replay(rt, target, importer, &workspace_id, &mut archive, &checked.manifest, progress)
}

/// Stores each media file through the media module (hashing it again on the way in).
fn store_media(rt: &Handle, target: &ImportTarget, archive: &mut Archive, m: &Manifest) -> ApiResult<()> {
    for (sha, info) in &m.media {
        let mut upload = rt.block_on(media::Upload::begin(&target.data_dir, target.max_import_bytes))?;
        let mut r = validate::entry(archive, &info.path)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(|e| refused(format!("{} is corrupt: {e}", info.path)))?;
            if n == 0 {
                break;
            }
            rt.block_on(upload.write(&buf[..n]))?;
        }
        let stored = rt.block_on(upload.finish())?;
        if stored.sha256 != *sha || stored.size != info.size {
            return Err(refused(format!("media {} does not match its hash", info.path)));
        }
    }
    Ok(())
}

fn replay(
    rt: &Handle,
    target: &ImportTarget,
    importer: &Participant,
    workspace_id: &str,
    archive: &mut Archive,
    m: &Manifest,
    progress: &mut dyn FnMut(Progress),
) -> ApiResult<Imported> {
    let mut tx = rt.block_on(target.store.write())?;
    let mut state = Replay {
        room_id: String::new(),
        importer,
        server_name: &target.server_name,
        manifest: m,
        credit_local_reactors: made_here(m, &target.own_server),
        events: HashMap::new(),
        media: HashMap::new(),
        reactors: HashMap::new(),
        count: 0,
    };
    rt.block_on(state.create_room(&mut tx, m, workspace_id))?;
    rt.block_on(state.insert_media(&mut tx, m))?;
    let mut r = BufReader::with_capacity(256 * 1024, validate::entry(archive, EVENTS)?);
    let mut hasher = <Sha256 as sha2::Digest>::new();
    let (mut buf, mut n, mut bytes) = (Vec::new(), 0u64, 0u64);
    while validate::next_line(&mut r, &mut buf, &mut hasher)? {
        bytes += buf.len() as u64 + 1;
        let line = validate::parse_line(&buf, n)?;
        rt.block_on(state.event(&mut tx, &line)).map_err(|e| replay_error(e, n, &line))?;
        n += 1;
        if n % 1000 == 0 {
            progress(Progress { events: n, bytes });
        }
    }
    progress(Progress { events: n, bytes });
    rt.block_on(tx.commit())?;
    Ok(Imported { room_id: state.room_id, imported_events: state.count })
}

/// A replay error that the bundle's content caused (a relation or content the checks let
/// through) is a refusal, never a 500; only the database's own errors stay internal.
fn replay_error(e: ApiError, n: u64, line: &EventLine) -> ApiError {
    match e {
        ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::RoomImportRefused(_) => e,
        other => refused(format!("event {n} ({}): cannot be replayed: {other}", line.event_id)),
    }
}

/// Whether the bundle was signed by this very server: its own name, and only keys it holds.
fn made_here(m: &Manifest, own: &ServerInfo) -> bool {
    let own_keys: HashSet<&str> = own
        .verify_keys
        .values()
        .map(|k| k.key.as_str())
        .chain(own.old_verify_keys.values().map(|k| k.key.as_str()))
        .collect();
    let mut theirs = m
        .server
        .verify_keys
        .values()
        .map(|k| k.key.as_str())
        .chain(m.server.old_verify_keys.values().map(|k| k.key.as_str()));
    m.server.server_name == own.server_name && theirs.all(|k| own_keys.contains(k))
}

/// An imported event: its new id, what it is, and (for messages) its author and time.
struct Mapped {
    id: String,
    kind: Kind,
    sender: String,
    origin_ts: i64,
}

struct Replay<'a> {
    room_id: String,
    importer: &'a Participant,
    server_name: &'a str,
    manifest: &'a Manifest,
    /// Whether reactions go to the local participants who made them (see [`made_here`]).
    credit_local_reactors: bool,
    /// Old event id → the imported event.
    events: HashMap<String, Mapped>,
    /// Old media id → new media id.
    media: HashMap<String, String>,
    /// fqid → the participant id that holds their reactions here.
    reactors: HashMap<String, String>,
    count: u64,
}

fn internal(msg: &str) -> ApiError {
    ApiError::internal(format!("import: {msg}"))
}

impl Replay<'_> {
    async fn create_room(&mut self, tx: &mut WriteTx, m: &Manifest, workspace_id: &str) -> ApiResult<()> {
        let name = m.room.name.as_deref().and_then(|n| rooms::clean_name(n).ok());
        let name = name.unwrap_or_else(|| "Imported room".into());
        let topic = rooms::clean_topic(m.room.topic.as_deref()).unwrap_or(None);
        let room = Room {
            id: ids::new_room_id(),
            tenant_id: self.importer.tenant_id.clone(),
            room_alias: Some(rooms::free_alias(tx, &name, self.server_name).await?),
            // A DM becomes a group room: its other side is not here to join it.
            room_type: if m.room.room_type == RoomType::Public { RoomType::Public } else { RoomType::Group },
            name: Some(name),
            topic,
            workspace_id: workspace_id.to_string(),
            creator_id: self.importer.id.clone(),
            created_at: now_secs(),
            state: RoomState::Open,
            federated: false,
            dm_key: None,
        };
        rooms::populate_new_room(tx, &room, self.importer, &[]).await?;
        self.room_id = room.id;
        Ok(())
    }

    /// Every upload of the bundle gets a new media id here, pointing at the stored content.
    async fn insert_media(&mut self, tx: &mut WriteTx, m: &Manifest) -> ApiResult<()> {
        for (old_id, (sha, mime, filename)) in validate::media_by_id(m) {
            let size = m.media.get(&sha).map(|i| i.size).unwrap_or(0);
            let row = MediaRow {
                media_id: ids::new_media_id(),
                sha256: sha,
                size: i64::try_from(size).map_err(|_| internal("media size overflows"))?,
                mime_type: media::clean_mime_type(Some(&mime)),
                filename: media::clean_filename(filename.as_deref()),
                uploader_id: self.importer.id.clone(),
                created_at: now_secs(),
            };
            tx.insert_media(&row).await?;
            self.media.insert(old_id, row.media_id);
        }
        Ok(())
    }

    /// The `_imported_sender` block of a signed sender fqid. Only the display name comes from
    /// the (unsigned, already checked) manifest; the fqid and server name come from the signature.
    fn sender_block(&self, fqid: &str) -> Value {
        let (local, server) = ids::parse_fqid(fqid).unwrap_or((fqid, ""));
        let display_name = self.manifest.imported_senders.get(fqid).map(|s| s.display_name.as_str()).unwrap_or(local);
        serde_json::to_value(ImportedSender {
            fqid: fqid.to_string(),
            display_name: display_name.to_string(),
            server_name: server.to_string(),
        })
        .unwrap_or(Value::Null)
    }

    /// Points media ids and replies at their imported counterparts (a reply to something not
    /// imported loses its reference).
    fn rewrite(&self, content: &mut Value) {
        if let Some(new) = media_id_of(content).and_then(|old| self.media.get(old)).cloned() {
            content["media_id"] = json!(new);
        }
        if let Some(obj) = content.as_object_mut()
            && let Some(old) = obj.get("reply_to_event_id").and_then(Value::as_str)
        {
            match self.events.get(old) {
                Some(e) => {
                    obj.insert("reply_to_event_id".into(), json!(e.id));
                }
                None => {
                    obj.remove("reply_to_event_id");
                }
            }
        }
    }

    /// Sets the original author (the signed sender) and time. An earlier import's blocks are
    /// what the exporting server claims, so they move under `_imported_previous` (one level:
    /// anything older is dropped) and never stand for the author.
    fn annotate(&self, content: &mut Value, sender: &str, origin_ts: i64) {
        if !content.is_object() {
            *content = Value::Object(Map::new());
        }
        let obj = content.as_object_mut().expect("made an object");
        let earlier_sender = obj.remove(IMPORTED_SENDER);
        let earlier_ts = obj.remove(IMPORTED_ORIGIN_TS);
        // Here the importer sent everything: who the original says really sent it on behalf of
        // its author is the original's record, kept beside the author, never this room's claim.
        let sent_by = obj.remove(SENT_BY);
        obj.retain(|k, _| !k.starts_with(IMPORTED_PREFIX));
        if let Some(by) = sent_by {
            obj.insert(IMPORTED_SENT_BY.into(), by);
        }
        if let Some(earlier) = earlier_sender {
            let mut previous = Map::new();
            previous.insert("sender".into(), earlier);
            if let Some(ts) = earlier_ts {
                previous.insert("origin_ts".into(), ts);
            }
            obj.insert(IMPORTED_PREVIOUS.into(), Value::Object(previous));
        }
        obj.insert(IMPORTED_SENDER.into(), self.sender_block(sender));
        obj.insert(IMPORTED_ORIGIN_TS.into(), json!(origin_ts));
    }

    async fn append(
        &mut self,
        tx: &mut WriteTx,
        event_type: &str,
        content: &Value,
        relates_to: Option<&str>,
    ) -> ApiResult<String> {
        // The final, annotated content passes the same checks as `POST /send` (64 KiB included).
        validate_stored_content(content)?;
        let spec = NewEventSpec {
            room_id: &self.room_id,
            sender_id: &self.importer.id,
            event_type,
            state_key: None,
            content,
            event_uuid: None,
            relates_to,
            unsigned: None,
        };
        let (id, _) = rooms::append_event(tx, spec).await?;
        self.count += 1;
        Ok(id)
    }

    /// The imported event a line relates to ([`validate::relation_target`]: from the signed
    /// content where it survives, i.e. always for redactions).
    fn target(&self, line: &EventLine) -> ApiResult<(String, Kind, String, i64)> {
        let old = validate::relation_target(line);
        let e = old.as_deref().and_then(|o| self.events.get(o));
        let e = e.ok_or_else(|| refused(format!("{} relates to an event not before it", line.event_id)))?;
        Ok((e.id.clone(), e.kind, e.sender.clone(), e.origin_ts))
    }

    /// The participant a reaction is recorded for. Import never creates participants: the
    /// original reactor only when the bundle was made by this very server (its own keys) and
    /// they are an existing local participant, else the importer (who then holds one reaction
    /// per emoji and message: counts of a foreign bundle's reactions fold to 1).
    async fn reactor(&mut self, tx: &mut WriteTx, fqid: &str) -> ApiResult<String> {
        if let Some(id) = self.reactors.get(fqid) {
            return Ok(id.clone());
        }
        let local = ids::parse_fqid(fqid).is_some_and(|(_, server)| server == self.server_name);
        let id = match self.credit_local_reactors && local {
            true => tx.participant_id_by_fqid(fqid).await?.unwrap_or_else(|| self.importer.id.clone()),
            false => self.importer.id.clone(),
        };
        self.reactors.insert(fqid.to_string(), id.clone());
        Ok(id)
    }

    /// Replays one checked event. State events are not replayed: the new room has its own.
    async fn event(&mut self, tx: &mut WriteTx, line: &EventLine) -> ApiResult<()> {
        if line.state_key.is_some() {
            return Ok(());
        }
        let redacted = line.redacted_at.is_some();
        let signed = line.pdu.get("content").cloned().unwrap_or_else(|| json!({}));
        let now = now_secs();
        let (id, kind) = match line.event_type.as_str() {
            MESSAGE => {
                let mut content = if redacted { json!({}) } else { signed };
                self.rewrite(&mut content);
                self.annotate(&mut content, &line.sender, line.origin_ts);
                (self.append(tx, MESSAGE, &content, None).await?, Kind::Message)
            }
            EDIT => {
                let (target, _, sender, ts) = self.target(line)?;
                let mut new_content = signed.get("new_content").cloned().unwrap_or_else(|| json!({}));
                if !redacted {
                    self.rewrite(&mut new_content);
                    self.annotate(&mut new_content, &sender, ts);
                    validate_stored_content(&new_content)?;
                }
                let content = if redacted {
                    json!({"event_id": target})
                } else {
                    json!({"event_id": target, "new_content": new_content})
                };
                let id = self.append(tx, EDIT, &content, Some(&target)).await?;
                tx.apply_edit(&target, &new_content.to_string(), now).await?;
                (id, Kind::Other)
            }
            REACTION => {
                let (target, ..) = self.target(line)?;
                let emoji = signed.get("emoji").and_then(Value::as_str).filter(|_| !redacted);
                let mut content = json!({"event_id": target});
                if let Some(e) = emoji {
                    content["emoji"] = json!(e);
                }
                self.annotate(&mut content, &line.sender, line.origin_ts);
                let id = self.append(tx, REACTION, &content, Some(&target)).await?;
                if let Some(e) = emoji {
                    let reactor = self.reactor(tx, &line.sender).await?;
                    tx.add_reaction(&target, &reactor, e, &id).await?;
                }
                (id, Kind::Reaction)
            }
            REDACTION => {
                let (target, target_kind, sender, ts) = self.target(line)?;
                let mut content = json!({"redacts": target});
                if let Some(reason) = signed.get("reason").filter(|r| r.is_string()) {
                    content["reason"] = reason.clone();
                }
                self.annotate(&mut content, &line.sender, line.origin_ts);
                let id = self.append(tx, REDACTION, &content, Some(&target)).await?;
                tx.apply_redaction(&target, now).await?;
                rooms::redact_stored_pdus(tx, &target).await?;
                match target_kind {
                    Kind::Reaction => tx.forget_reaction_event(&target).await?,
                    // The body is gone; who wrote it and when stays, as it does for the sender.
                    Kind::Message => {
                        let mut kept = json!({});
                        self.annotate(&mut kept, &sender, ts);
                        validate_stored_content(&kept)?;
                        tx.set_event_content(&target, &kept.to_string()).await?;
                    }
                    Kind::Other => {}
                }
                (id, Kind::Other)
            }
            other => {
                let mut content = if redacted { json!({}) } else { signed };
                self.annotate(&mut content, &line.sender, line.origin_ts);
                let relates_to = line.relates_to.as_deref().and_then(|r| self.events.get(r)).map(|e| e.id.clone());
                (self.append(tx, other, &content, relates_to.as_deref()).await?, Kind::Other)
            }
        };
        let mapped = Mapped { id, kind, sender: line.sender.clone(), origin_ts: line.origin_ts };
        self.events.insert(line.event_id.clone(), mapped);
        Ok(())
    }
}

/// Copies `from` into a new spool file, refusing more than `max` bytes.
pub fn spool_reader(data_dir: &Path, mut from: impl Read, max: u64) -> ApiResult<TempBundle> {
    let (spool, file) = TempFile::create(data_dir, "import")?;
    let mut w = std::io::BufWriter::new(file);
    let n = std::io::copy(&mut (&mut from).take(max + 1), &mut w)
        .map_err(|e| ApiError::internal(format!("import: spool: {e}")))?;
    if n > max {
        return Err(refused(format!("the bundle is larger than max_import_bytes ({max} bytes)")));
    }
    std::io::Write::flush(&mut w).map_err(|e| ApiError::internal(format!("import: spool: {e}")))?;
    Ok(spool)
}
