//! The room bundle format, version 1 (`docs/export-format.md`): the entry names, the shapes of
//! `manifest.json` and of each line of `events.jsonl`, and the checks on entry names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::{Membership, RoomState, RoomType};

pub const FORMAT: &str = "scaiwave.room-export";
pub const VERSION: i64 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const EVENTS: &str = "events.jsonl";
pub const MEDIA_DIR: &str = "media/";

/// The bundle's table of contents. `manifest.json` also carries every event, in order, under
/// `events` (contract section 7); the exporter writes that array after these fields. This
/// struct leaves it out (serde skips the unknown field without keeping it): an import reads the
/// events from [`EVENTS`], one per line, checked against `events_file`, and streams the array
/// separately only to check that it lists the very same events (`validate`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: i64,
    /// Unix seconds.
    pub exported_at: i64,
    /// fqid of the member who exported.
    pub exported_by: String,
    pub server: ServerInfo,
    pub room: RoomInfo,
    pub members: Vec<MemberInfo>,
    /// One `_imported_sender` block per sender of an exported event, by fqid.
    pub imported_senders: BTreeMap<String, ImportedSender>,
    pub events_file: EventsInfo,
    /// By lowercase hex SHA-256 of the content.
    pub media: BTreeMap<String, MediaInfo>,
}

/// The exporting server and the keys its events verify with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    pub server_name: String,
    pub verify_keys: BTreeMap<String, VerifyKey>,
    #[serde(default)]
    pub old_verify_keys: BTreeMap<String, OldVerifyKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyKey {
    /// Unpadded standard base64 of the ed25519 public key.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OldVerifyKey {
    pub key: String,
    /// Unix milliseconds after which the key signs nothing new.
    pub expired_ts: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomInfo {
    pub id: String,
    pub room_type: RoomType,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub room_alias: Option<String>,
    pub state: RoomState,
    /// Unix seconds.
    pub created_at: i64,
    /// fqid.
    pub creator: String,
    pub tenant_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    pub fqid: String,
    pub display_name: String,
    pub membership: Membership,
    pub power_level: i64,
    pub joined_at: Option<i64>,
}

/// Who originally sent an event; imported events carry it as `content._imported_sender`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedSender {
    pub fqid: String,
    pub display_name: String,
    pub server_name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventsInfo {
    /// Always [`EVENTS`].
    pub entry: String,
    pub count: u64,
    /// Lowercase hex SHA-256 of the entry's bytes.
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The entry holding the bytes: `media/<sha256>/<name>`.
    pub path: String,
    pub size: u64,
    /// Of the first upload below.
    pub mime_type: String,
    pub filename: Option<String>,
    /// Every media id of the room's messages that names these bytes.
    pub media_ids: Vec<String>,
    /// The same ids with each upload's own metadata.
    pub uploads: Vec<MediaUpload>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaUpload {
    pub media_id: String,
    pub mime_type: String,
    pub filename: Option<String>,
}

/// One line of [`EVENTS`]: the event as the room shows it now, and its signed wire form.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventLine {
    pub event_id: String,
    /// Position on the exporting server; orders the lines.
    pub stream_position: i64,
    pub event_type: String,
    #[serde(default)]
    pub state_key: Option<String>,
    /// fqid.
    pub sender: String,
    pub origin_ts: i64,
    /// Current (folded) content: after edits; `{}` once redacted.
    pub content: Value,
    #[serde(default)]
    pub original_content: Option<Value>,
    #[serde(default)]
    pub edited_at: Option<i64>,
    #[serde(default)]
    pub redacted_at: Option<i64>,
    /// The event an edit, reaction or redaction is about.
    #[serde(default)]
    pub relates_to: Option<String>,
    #[serde(default)]
    pub event_uuid: Option<String>,
    /// The signed wire form (the redacted form once redacted).
    pub pdu: Value,
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The file name part of a media entry: the upload's clean name, else `file`; never a path.
pub fn media_entry_name(filename: Option<&str>) -> String {
    let name: String = crate::media::clean_filename(filename)
        .unwrap_or_else(|| "file".into())
        .chars()
        .map(|c| if c == '/' || c == '\\' || c == ':' { '_' } else { c })
        .collect();
    if is_safe_component(&name) { name } else { "file".into() }
}

pub fn media_entry_path(sha256: &str, filename: Option<&str>) -> String {
    format!("{MEDIA_DIR}{sha256}/{}", media_entry_name(filename))
}

/// One path component that cannot leave its directory or mean anything special.
pub fn is_safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 1024
        && !s.chars().any(|c| c == '/' || c == '\\' || c == ':' || c.is_control())
}

/// Where an entry name leads: the only names a bundle may hold are [`MANIFEST`], [`EVENTS`] and
/// `media/<sha256 hex>/<one safe component>`.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryKind {
    Manifest,
    Events,
    Media { sha256: String },
}

pub fn classify_entry(name: &str) -> Option<EntryKind> {
    match name {
        MANIFEST => return Some(EntryKind::Manifest),
        EVENTS => return Some(EntryKind::Events),
        _ => {}
    }
    let rest = name.strip_prefix(MEDIA_DIR)?;
    let (sha, file) = rest.split_once('/')?;
    (is_sha256_hex(sha) && is_safe_component(file)).then(|| EntryKind::Media { sha256: sha.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let sha = "a".repeat(64);
        assert_eq!(classify_entry("manifest.json"), Some(EntryKind::Manifest));
        assert_eq!(classify_entry("events.jsonl"), Some(EntryKind::Events));
        assert_eq!(classify_entry(&format!("media/{sha}/cat.png")), Some(EntryKind::Media { sha256: sha.clone() }));
        for bad in [
            "../evil".to_string(),
            "/etc/passwd".to_string(),
            "./manifest.json".to_string(),
            format!("media/{sha}/../x"),
            format!("media/{sha}/a/b"),
            format!("media/{sha}/.."),
            format!("media/{sha}/"),
            format!("media/{}/x", "A".repeat(64)),
            "media/abc/x".to_string(),
            "C:\\evil".to_string(),
            format!("media/{sha}/a\\b"),
        ] {
            assert_eq!(classify_entry(&bad), None, "{bad}");
        }
    }

    #[test]
    fn media_names_are_one_component() {
        assert_eq!(media_entry_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(media_entry_name(Some("..")), "file");
        assert_eq!(media_entry_name(None), "file");
        assert_eq!(media_entry_name(Some("a:b.txt")), "a_b.txt");
    }
}
