//! Everything an import checks before it writes anything: the ZIP's entries (names, kinds,
//! sizes, compression ratios), the manifest, every media file's hash, every event's
//! signature, content hash and relations, and that the manifest's `events` list the same events
//! as `events.jsonl`. A bundle that fails any check is refused whole with
//! `SW_ROOM_IMPORT_REFUSED`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use zip::{CompressionMethod, ZipArchive};

use super::format::{EVENTS, EntryKind, EventLine, FORMAT, MANIFEST, Manifest, VERSION, classify_entry, is_sha256_hex};
use super::{Exact, Progress, hex};
use crate::error::{ApiError, ApiResult};
use crate::messages::{EDIT, REACTION, REDACTION, validate_emoji, validate_stored_content as validate_content};
use crate::rooms::event_types::MESSAGE;
use crate::storage::RoomType;

/// Largest compression ratio accepted for an entry over [`RATIO_FLOOR`] bytes.
pub const MAX_RATIO: u64 = 200;
/// Entries this small are not ratio-checked (a tiny JSON file may compress very well).
pub const RATIO_FLOOR: u64 = 1024 * 1024;
/// Largest `manifest.json`.
/// `manifest.json` holds every event, so it is as large as the room; it is read as a stream, its
/// events array one element at a time, never held whole. The bundle's total size cap bounds it too.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Most entries a bundle may hold (checked on the end record, before the directory is read).
pub const MAX_ENTRIES: u64 = 100_000;
/// Longest line of `events.jsonl` (content is at most 64 KiB; the line holds it twice).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

pub type Archive = ZipArchive<BufReader<File>>;

pub fn refused(msg: impl Into<String>) -> ApiError {
    ApiError::RoomImportRefused(msg.into())
}

/// A key the bundle's events may be signed with; old keys only for events before they expired.
pub struct KnownKey {
    pub key: crypto::PublicKey,
    pub expired_ts: Option<i64>,
}

/// What the checks learned, for the replay.
pub struct Checked {
    pub manifest: Manifest,
    pub events_size: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Reaction,
    Other,
}

/// Opens the archive; anything unreadable (truncated, corrupt directory) is refused, and so is
/// an archive whose end record declares more than [`MAX_ENTRIES`] entries, before the central
/// directory is read.
pub fn open(mut file: File) -> ApiResult<Archive> {
    let count = declared_entries(&mut file).map_err(|e| refused(format!("not a readable ZIP archive: {e}")))?;
    if count > MAX_ENTRIES {
        return Err(refused(format!("the bundle has more than {MAX_ENTRIES} entries")));
    }
    file.rewind().map_err(|e| ApiError::internal(format!("import: rewind spool: {e}")))?;
    ZipArchive::new(BufReader::new(file)).map_err(|e| refused(format!("not a readable ZIP archive: {e}")))
}

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The entry count that the end-of-central-directory record declares (the ZIP64 one when the
/// archive has it), read from the file's tail only.
pub fn declared_entries(file: &mut File) -> std::io::Result<u64> {
    let bad = |msg: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string());
    let len = file.seek(SeekFrom::End(0))?;
    // The record is 22 bytes plus a comment of at most 65535; the ZIP64 locator sits before it.
    let tail_len = len.min((EOCD_LEN + u16::MAX as usize + ZIP64_LOCATOR_LEN) as u64);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(len - tail_len))?;
    file.read_exact(&mut tail)?;
    let at = (0..=tail.len().saturating_sub(EOCD_LEN))
        .rev()
        .find(|&i| tail.len() >= i + EOCD_LEN && le_u32(&tail, i) == EOCD_SIG)
        .ok_or_else(|| bad("no end-of-central-directory record"))?;
    let count = u64::from(le_u16(&tail, at + 10));
    if at >= ZIP64_LOCATOR_LEN && le_u32(&tail, at - ZIP64_LOCATOR_LEN) == ZIP64_LOCATOR_SIG {
        let record_at = le_u64(&tail, at - ZIP64_LOCATOR_LEN + 8);
        let mut record = [0u8; 40];
        if record_at.checked_add(40).is_none_or(|end| end > len) {
            return Err(bad("the ZIP64 end record is out of bounds"));
        }
        file.seek(SeekFrom::Start(record_at))?;
        file.read_exact(&mut record)?;
        if le_u32(&record, 0) != ZIP64_EOCD_SIG {
            return Err(bad("no ZIP64 end-of-central-directory record"));
        }
        return Ok(le_u64(&record, 32).max(count));
    }
    Ok(count)
}

/// Opens one entry for reading exactly its declared size.
pub fn entry<'a>(archive: &'a mut Archive, name: &str) -> ApiResult<Exact<zip::read::ZipFile<'a, BufReader<File>>>> {
    let f = archive.by_name(name).map_err(|e| refused(format!("cannot read {name}: {e}")))?;
    let size = f.size();
    Ok(Exact::new(f, size))
}

fn read_error(name: &str, e: std::io::Error) -> ApiError {
    refused(format!("{name} is corrupt: {e}"))
}

pub fn check(archive: &mut Archive, max_bytes: u64, progress: &mut dyn FnMut(Progress)) -> ApiResult<Checked> {
    let sizes = check_entries(archive, max_bytes)?;
    let manifest = read_manifest(archive)?;
    let keys = known_keys(&manifest)?;
    check_media(archive, &manifest, &sizes)?;
    let events_size = *sizes.get(EVENTS).ok_or_else(|| refused("the bundle has no events.jsonl"))?;
    let lines = check_events(archive, &manifest, &keys, progress)?;
    let listed = listed_events(archive)?;
    lines.require_same(&listed)?;
    Ok(Checked { manifest, events_size })
}

/// Every entry: a name of the format, a plain file, stored or deflated, within the size cap
/// and the ratio cap. Answers each entry's declared size.
fn check_entries(archive: &mut Archive, max_bytes: u64) -> ApiResult<HashMap<String, u64>> {
    let mut sizes = HashMap::new();
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(|e| refused(format!("corrupt entry {i}: {e}")))?;
        let name = std::str::from_utf8(f.name_raw()).map_err(|_| refused("an entry name is not UTF-8"))?.to_string();
        if classify_entry(&name).is_none() || f.enclosed_name().is_none() {
            return Err(refused(format!("entry {name:?} is outside the bundle format")));
        }
        if !f.is_file() {
            return Err(refused(format!("entry {name:?} is not a plain file")));
        }
        if f.encrypted() {
            return Err(refused(format!("entry {name:?} is encrypted")));
        }
        if !matches!(f.compression(), CompressionMethod::Stored | CompressionMethod::Deflated) {
            return Err(refused(format!("entry {name:?} uses an unsupported compression method")));
        }
        total = total.saturating_add(f.size());
        if total > max_bytes {
            return Err(refused(format!(
                "the bundle holds more than max_import_bytes ({max_bytes} bytes) uncompressed"
            )));
        }
        if f.size() > RATIO_FLOOR && f.size() / f.compressed_size().max(1) > MAX_RATIO {
            return Err(refused(format!("entry {name:?} compresses more than {MAX_RATIO}:1")));
        }
        if sizes.insert(name.clone(), f.size()).is_some() {
            return Err(refused(format!("entry {name:?} appears twice")));
        }
    }
    Ok(sizes)
}

fn read_manifest(archive: &mut Archive) -> ApiResult<Manifest> {
    /// Just the format marker, to tell an unknown version from a malformed manifest.
    #[derive(serde::Deserialize)]
    struct Head {
        format: Option<String>,
        version: Option<Value>,
    }
    fn open(archive: &mut Archive) -> ApiResult<impl Read + '_> {
        let r = entry(archive, MANIFEST).map_err(|_| refused("the bundle has no manifest.json"))?;
        Ok(std::io::BufReader::new(r.take(MAX_MANIFEST_BYTES)))
    }
    // Both reads stream: the events array in the manifest is skipped, never held in memory.
    let head: Head = serde_json::from_reader(open(archive)?)
        .map_err(|e| refused(format!("manifest.json is not valid JSON: {e}")))?;
    if head.format.as_deref() != Some(FORMAT) || head.version != Some(VERSION.into()) {
        return Err(refused(format!(
            "unknown bundle format or version (this server reads {FORMAT} version {VERSION})"
        )));
    }
    let m: Manifest =
        serde_json::from_reader(open(archive)?).map_err(|e| refused(format!("manifest.json is malformed: {e}")))?;
    if m.events_file.entry != EVENTS {
        return Err(refused("manifest.json names another events entry"));
    }
    if !crate::ids::is_server_name(&m.server.server_name) {
        return Err(refused("manifest.json names no valid exporting server"));
    }
    if m.room.room_type == RoomType::Incognito {
        return Err(refused("incognito rooms are never imported"));
    }
    // Unsigned: only each display name is used, and it must be one this server would accept.
    for (fqid, block) in &m.imported_senders {
        if block.fqid != *fqid || crate::ids::parse_fqid(fqid).is_none() {
            return Err(refused(format!("imported_senders entry {fqid:?} names another or no valid fqid")));
        }
        crate::identity::validate_display_name(&block.display_name)
            .map_err(|_| refused(format!("imported_senders entry {fqid:?} has a bad display_name")))?;
    }
    Ok(m)
}

fn known_keys(m: &Manifest) -> ApiResult<HashMap<String, KnownKey>> {
    let mut keys = HashMap::new();
    let current = m.server.verify_keys.iter().map(|(id, k)| (id, &k.key, None));
    let old = m.server.old_verify_keys.iter().map(|(id, k)| (id, &k.key, Some(k.expired_ts)));
    for (id, key, expired_ts) in current.chain(old) {
        crypto::validate_key_id(id).map_err(|_| refused(format!("bad key id {id:?}")))?;
        let key = crypto::PublicKey::from_base64(key).map_err(|_| refused(format!("bad verify key {id:?}")))?;
        keys.insert(id.clone(), KnownKey { key, expired_ts });
    }
    if keys.is_empty() {
        return Err(refused("manifest.json lists no verify keys"));
    }
    Ok(keys)
}

/// The media index and the media entries agree one to one, and every file hashes to its name.
fn check_media(archive: &mut Archive, m: &Manifest, sizes: &HashMap<String, u64>) -> ApiResult<()> {
    let mut ids = HashSet::new();
    for (sha, info) in &m.media {
        if !is_sha256_hex(sha) || classify_entry(&info.path) != Some(EntryKind::Media { sha256: sha.clone() }) {
            return Err(refused(format!("media {sha:?} has a bad path")));
        }
        if sizes.get(&info.path) != Some(&info.size) {
            return Err(refused(format!("media {sha} is missing or has the wrong size")));
        }
        if info.media_ids.is_empty() {
            return Err(refused(format!("media {sha} names no media id")));
        }
        for id in &info.media_ids {
            if !crate::ids::is_media_id(id) || !ids.insert(id.clone()) {
                return Err(refused(format!("media {sha} has a bad or repeated media id")));
            }
        }
        let mut r = entry(archive, &info.path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(|e| read_error(&info.path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hex(&hasher.finalize()) != *sha {
            return Err(refused(format!("media {} does not match its hash", info.path)));
        }
    }
    let media_entries = sizes.keys().filter(|n| matches!(classify_entry(n), Some(EntryKind::Media { .. }))).count();
    if media_entries != m.media.len() {
        return Err(refused("the bundle holds media its manifest does not list"));
    }
    Ok(())
}

/// Reads the next line (without its newline) into `buf`; false at the end. Lines are capped.
pub fn next_line(r: &mut impl BufRead, buf: &mut Vec<u8>, hasher: &mut Sha256) -> ApiResult<bool> {
    buf.clear();
    r.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buf).map_err(|e| read_error(EVENTS, e))?;
    if buf.is_empty() {
        return Ok(false);
    }
    hasher.update(&buf[..]);
    if buf.last() != Some(&b'\n') {
        return Err(refused(if buf.len() > MAX_LINE_BYTES {
            "a line of events.jsonl is too long"
        } else {
            "events.jsonl does not end with a newline"
        }));
    }
    buf.pop();
    Ok(true)
}

pub fn parse_line(bytes: &[u8], n: u64) -> ApiResult<EventLine> {
    line_of(parse_line_value(bytes, n)?, n)
}

fn parse_line_value(bytes: &[u8], n: u64) -> ApiResult<Value> {
    crypto::parse_strict(bytes).map_err(|e| refused(format!("event {n}: not valid JSON: {e}")))
}

fn line_of(value: Value, n: u64) -> ApiResult<EventLine> {
    serde_json::from_value(value).map_err(|e| refused(format!("event {n}: malformed: {e}")))
}

/// A list of events as a count and a running SHA-256 over each event's canonical JSON (length
/// first). Two lists digest the same exactly when they hold the same events, each with the
/// same members and values, in the same order; memory stays flat however long they are.
struct EventList {
    count: u64,
    hasher: Sha256,
}

impl EventList {
    fn new() -> Self {
        EventList { count: 0, hasher: Sha256::new() }
    }

    /// Adds one event, a value of strict JSON (so it always has a canonical form).
    fn push(&mut self, event: &Value) -> Result<(), String> {
        let bytes = crypto::to_canonical_bytes(event).map_err(|e| format!("not canonical JSON: {e}"))?;
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(&bytes);
        self.count += 1;
        Ok(())
    }

    /// `self` is `events.jsonl`; `listed` is the manifest's `events`.
    fn require_same(self, listed: &EventList) -> ApiResult<()> {
        if self.count != listed.count {
            return Err(refused(format!(
                "manifest.json lists {} events, but events.jsonl holds {}",
                listed.count, self.count
            )));
        }
        if self.hasher.finalize() != listed.hasher.clone().finalize() {
            return Err(refused(
                "the events listed in manifest.json disagree with events.jsonl (an event differs or is out of order)",
            ));
        }
        Ok(())
    }
}

/// Reads the manifest's `events` array as a stream, one element at a time, into an
/// [`EventList`]. Each element must be strict JSON, like a line of `events.jsonl`, and no
/// larger than a line may be. The array must be there, once.
fn listed_events(archive: &mut Archive) -> ApiResult<EventList> {
    /// The manifest object: every member but `events` is skipped.
    struct Top;
    impl<'de> Visitor<'de> for Top {
        type Value = Option<EventList>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("the manifest object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut listed = None;
            while let Some(key) = map.next_key::<String>()? {
                if key != "events" {
                    map.next_value::<IgnoredAny>()?;
                } else if listed.is_some() {
                    return Err(serde::de::Error::custom("events appears twice"));
                } else {
                    listed = Some(map.next_value_seed(List)?);
                }
            }
            Ok(listed)
        }
    }
    /// The `events` array, digested element by element.
    struct List;
    impl<'de> DeserializeSeed<'de> for List {
        type Value = EventList;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventList, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for List {
        type Value = EventList;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventList, A::Error> {
            let mut listed = EventList::new();
            while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                let n = listed.count;
                let bytes = raw.get().as_bytes();
                if bytes.len() > MAX_LINE_BYTES {
                    return Err(serde::de::Error::custom(format!("event {n} is too long")));
                }
                let value = crypto::parse_strict(bytes)
                    .map_err(|e| serde::de::Error::custom(format!("event {n} is not strict JSON: {e}")))?;
                listed.push(&value).map_err(|e| serde::de::Error::custom(format!("event {n}: {e}")))?;
            }
            Ok(listed)
        }
    }
    let r = entry(archive, MANIFEST).map_err(|_| refused("the bundle has no manifest.json"))?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(r.take(MAX_MANIFEST_BYTES)));
    let listed = de
        .deserialize_map(Top)
        .and_then(|listed| de.end().map(|()| listed))
        .map_err(|e| refused(format!("manifest.json's events are malformed: {e}")))?;
    listed.ok_or_else(|| refused("manifest.json lists no events"))
}

/// Checks every line of `events.jsonl` and answers them as an [`EventList`].
fn check_events(
    archive: &mut Archive,
    m: &Manifest,
    keys: &HashMap<String, KnownKey>,
    progress: &mut dyn FnMut(Progress),
) -> ApiResult<EventList> {
    let mut r = BufReader::with_capacity(256 * 1024, entry(archive, EVENTS)?);
    let mut hasher = Sha256::new();
    let (mut buf, mut n, mut bytes) = (Vec::new(), 0u64, 0u64);
    let mut seen: HashMap<String, Kind> = HashMap::new();
    let mut lines = EventList::new();
    while next_line(&mut r, &mut buf, &mut hasher)? {
        bytes += buf.len() as u64 + 1;
        let value = parse_line_value(&buf, n)?;
        lines.push(&value).map_err(|e| refused(format!("event {n}: {e}")))?;
        let line = line_of(value, n)?;
        check_event(&line, m, keys, &mut seen).map_err(|e| refused(format!("event {n} ({}): {e}", line.event_id)))?;
        n += 1;
        if n % 1000 == 0 {
            progress(Progress { events: n, bytes });
        }
    }
    progress(Progress { events: n, bytes });
    if n != m.events_file.count || hex(&hasher.finalize()) != m.events_file.sha256 {
        return Err(refused("events.jsonl does not match the count and hash in manifest.json"));
    }
    Ok(lines)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// One event: it is the room's, sent and signed by the exporting server with a listed key, its
/// id is its reference hash, its content hash holds (or it is in redacted form when the room
/// shows it redacted), the folded fields agree with it, and what it relates to came before it.
fn check_event(
    line: &EventLine,
    m: &Manifest,
    keys: &HashMap<String, KnownKey>,
    seen: &mut HashMap<String, Kind>,
) -> Result<(), String> {
    let pdu = &line.pdu;
    let server = m.server.server_name.as_str();
    if !pdu.is_object() {
        return Err("no signed form".into());
    }
    if str_at(pdu, "room_id") != Some(m.room.id.as_str()) {
        return Err("signed for another room".into());
    }
    if str_at(pdu, "origin") != Some(server) {
        return Err("not from the exporting server".into());
    }
    let sender = str_at(pdu, "sender").unwrap_or_default();
    if sender != line.sender || crate::ids::parse_fqid(sender).map(|(_, s)| s) != Some(server) {
        return Err("sender is not a participant of the exporting server".into());
    }
    if str_at(pdu, "event_type") != Some(line.event_type.as_str())
        || str_at(pdu, "state_key") != line.state_key.as_deref()
        || pdu.get("origin_ts").and_then(Value::as_i64) != Some(line.origin_ts)
    {
        return Err("the listed fields disagree with the signed event".into());
    }
    let rules = signed_under(pdu, &line.event_id)?;
    if seen.contains_key(&line.event_id) {
        return Err("listed twice".into());
    }
    verify_signature(rules, pdu, server, line.origin_ts, keys)?;
    let redacted = line.redacted_at.is_some();
    if redacted {
        if crypto::redact_with(rules, pdu).ok().as_ref() != Some(pdu) {
            return Err("redacted, but its signed form is not redacted".into());
        }
    } else if !crypto::check_content_hash(pdu) {
        return Err("the content hash does not match".into());
    }
    let content = pdu.get("content").cloned().unwrap_or(Value::Null);
    let target = relation_target(line);
    if matches!(line.event_type.as_str(), EDIT | REACTION | REDACTION)
        && line.state_key.is_none()
        && line.relates_to.is_some()
        && line.relates_to != target
    {
        return Err("relates_to disagrees with the signed target".into());
    }
    let target_of = |_: &str| target.clone();
    let needs = |target: Option<String>, kinds: &[Kind]| match target.and_then(|t| seen.get(&t).copied()) {
        Some(k) if kinds.contains(&k) => Ok(()),
        _ => Err("relates to an event that is not before it in the bundle".to_string()),
    };
    let kind = match line.event_type.as_str() {
        _ if line.state_key.is_some() => Kind::Other,
        MESSAGE => {
            if !redacted {
                let folded = line.original_content.as_ref().unwrap_or(&line.content);
                if *folded != content {
                    return Err("the listed content disagrees with the signed event".into());
                }
                validate_content(&content).map_err(|e| e.to_string())?;
            }
            Kind::Message
        }
        EDIT => {
            needs(target_of("event_id"), &[Kind::Message])?;
            if !redacted {
                validate_content(content.get("new_content").unwrap_or(&Value::Null)).map_err(|e| e.to_string())?;
            }
            Kind::Other
        }
        REACTION => {
            needs(target_of("event_id"), &[Kind::Message])?;
            if !redacted {
                validate_emoji(str_at(&content, "emoji").unwrap_or_default()).map_err(|e| e.to_string())?;
            }
            Kind::Reaction
        }
        REDACTION => {
            needs(target_of("redacts"), &[Kind::Message, Kind::Reaction])?;
            Kind::Other
        }
        _ => Kind::Other,
    };
    seen.insert(line.event_id.clone(), kind);
    Ok(())
}

/// The event an edit, reaction or redaction is about: from its signed content (`redacts` for a
/// redaction, which survives redaction; `event_id` for an edit or reaction), and only for an
/// edit or reaction in redacted form, whose signed content is gone, from the line's `relates_to`.
pub fn relation_target(line: &EventLine) -> Option<String> {
    let content = line.pdu.get("content");
    let signed = |key: &str| content.and_then(|c| c.get(key)).and_then(Value::as_str).map(str::to_string);
    match line.event_type.as_str() {
        REDACTION => signed("redacts"),
        EDIT | REACTION if line.redacted_at.is_some() => line.relates_to.clone(),
        EDIT | REACTION => signed("event_id"),
        _ => line.relates_to.clone(),
    }
}

/// The redaction table `pdu` was identified and signed under: room version 1's, whose id must
/// be `event_id`. A lifecycle event exported before version 1 kept its `state` through
/// redaction was made under the table before it ([`crypto::RedactionRules::PreV1`]); such a
/// bundle still imports (the import signs new events under version 1).
fn signed_under(pdu: &Value, event_id: &str) -> Result<crypto::RedactionRules, String> {
    use crypto::RedactionRules::{PreV1, V1};
    if crypto::event_id(pdu).ok().as_deref() == Some(event_id) {
        return Ok(V1);
    }
    if str_at(pdu, "event_type") == Some(crate::rooms::event_types::LIFECYCLE)
        && crypto::event_id_with(PreV1, pdu).ok().as_deref() == Some(event_id)
    {
        return Ok(PreV1);
    }
    Err("the event id is not the signed event's reference hash".into())
}

/// Every signature by a listed key must verify, and there must be at least one.
fn verify_signature(
    rules: crypto::RedactionRules,
    pdu: &Value,
    server: &str,
    origin_ts: i64,
    keys: &HashMap<String, KnownKey>,
) -> Result<(), String> {
    let sigs = pdu.get("signatures").and_then(|s| s.get(server)).and_then(Value::as_object);
    let mut verified = false;
    for key_id in sigs.map(|s| s.keys().collect::<Vec<_>>()).unwrap_or_default() {
        let Some(k) = keys.get(key_id) else { continue };
        if k.expired_ts.is_some_and(|exp| origin_ts.saturating_mul(1000) >= exp) {
            continue;
        }
        crypto::verify_event_with(rules, pdu, server, key_id, &k.key)
            .map_err(|_| "the signature does not verify".to_string())?;
        verified = true;
    }
    if verified { Ok(()) } else { Err("not signed by any key the manifest lists".into()) }
}

/// Per media id of the bundle: the content's hash and that upload's metadata.
pub fn media_by_id(m: &Manifest) -> BTreeMap<String, (String, String, Option<String>)> {
    let mut out = BTreeMap::new();
    for (sha, info) in &m.media {
        for id in &info.media_ids {
            let upload = info.uploads.iter().find(|u| &u.media_id == id);
            let mime = upload.map(|u| u.mime_type.clone()).unwrap_or_else(|| info.mime_type.clone());
            let filename = upload.map(|u| u.filename.clone()).unwrap_or_else(|| info.filename.clone());
            out.insert(id.clone(), (sha.clone(), mime, filename));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(events: &[&str]) -> EventList {
        let mut l = EventList::new();
        for e in events {
            l.push(&crypto::parse_strict(e.as_bytes()).unwrap()).unwrap();
        }
        l
    }

    #[test]
    fn a_lifecycle_event_made_before_version_1_still_verifies() {
        use crypto::RedactionRules::{PreV1, V1};
        let key = crypto::ServerKey::generate("k").unwrap();
        let event = |event_type: &str| {
            serde_json::json!({
                "event_uuid": "u", "room_id": "room-1", "sender": "@a:alpha.test", "origin": "alpha.test",
                "origin_ts": 1, "event_type": event_type, "content": {"state": "archived"}, "state_key": "",
                "prev_events": ["evt-p"], "auth_events": [], "depth": 2,
            })
        };
        let (old_id, old) =
            crypto::prepare_event_with(PreV1, event("swp.room.lifecycle")).unwrap().sign("alpha.test", &key).unwrap();
        assert_eq!(signed_under(&old, &old_id), Ok(PreV1));
        crypto::verify_event_with(PreV1, &old, "alpha.test", "ed25519:k", &key.public_key()).unwrap();
        let (new_id, new) = crypto::build_and_sign_event(event("swp.room.lifecycle"), "alpha.test", &key).unwrap();
        assert_ne!(new_id, old_id);
        assert_eq!(signed_under(&new, &new_id), Ok(V1));
        // Only lifecycle events had another table: any other event must match version 1.
        let (other_id, other) =
            crypto::prepare_event_with(PreV1, event("swp.room.topic")).unwrap().sign("alpha.test", &key).unwrap();
        assert_eq!(signed_under(&other, &other_id), Ok(V1), "same table for a topic");
        assert!(signed_under(&old, "evt-other").is_err());
    }

    #[test]
    fn event_lists_agree_only_on_the_same_events_in_order() {
        let (a, b) = (r#"{"event_id":"a","pdu":{"x":1,"y":[1,2]}}"#, r#"{"event_id":"b"}"#);
        assert!(list(&[a, b]).require_same(&list(&[a, b])).is_ok());
        // Member order and whitespace do not count.
        let a2 = r#"{ "pdu": {"y": [1, 2], "x": 1}, "event_id": "a" }"#;
        assert!(list(&[a, b]).require_same(&list(&[a2, b])).is_ok());
        for other in [
            vec![b, a],
            vec![a],
            vec![a, b, b],
            vec![a, r#"{"event_id":"b","extra":null}"#],
            vec![r#"{"event_id":"a","pdu":{"x":1,"y":[2,1]}}"#, b],
        ] {
            assert!(list(&[a, b]).require_same(&list(&other)).is_err(), "{other:?}");
        }
        // Boundaries between events count too, not only the bytes in a row.
        assert!(list(&["[1]", "[2]"]).require_same(&list(&["[1]", "[2]"])).is_ok());
        assert!(list(&["\"ab\"", "\"c\""]).require_same(&list(&["\"a\"", "\"bc\""])).is_err());
    }
}
