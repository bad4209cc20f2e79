//! The server's signing keys: made on first start, kept in the data dir readable by the owner
//! only, rotated with an overlap so history signed by an old key still verifies.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crypto::ServerKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a rotated-out key stays listed for verification.
pub const OLD_KEY_OVERLAP_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long peers may cache the well-known document's keys.
pub const KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{0} is readable by others (mode {1:o}); run `chmod 600 {0}` — the server refuses to start with an exposed key"
    )]
    Exposed(String, u32),
    #[error("{0}: not a valid key file: {1}")]
    Invalid(String, String),
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyFile {
    current: CurrentKey,
    #[serde(default)]
    old: Vec<OldKey>,
}

#[derive(Clone, Serialize, Deserialize)]
struct CurrentKey {
    key_id: String,
    seed: String,
    created_ts: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OldKey {
    pub key_id: String,
    pub public_key: String,
    pub expired_ts: i64,
}

/// The server's current signing key and the public halves of its retired keys.
pub struct Keys {
    pub current: ServerKey,
    pub old: Vec<OldKey>,
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing_keys.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_path_buf(), source }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new key whose version sorts after `after` (a previous key id), even within one millisecond.
fn new_key(after: Option<&str>) -> Result<ServerKey, KeyError> {
    let previous_ms = after.and_then(|id| id.strip_prefix("ed25519:k")).and_then(|v| v.parse::<i64>().ok());
    let ms = now_ms().max(previous_ms.map_or(0, |p| p + 1));
    let version = format!("k{ms}");
    ServerKey::generate(&version).map_err(|e| KeyError::Invalid("new key".into(), e.to_string()))
}

fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let dir = path.parent().expect("key path has a parent");
    fs::create_dir_all(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    let text = serde_json::to_vec_pretty(file).expect("key file serialises");
    f.write_all(&text).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

fn check_private(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed(path.display().to_string(), mode));
        }
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<KeyFile, KeyError> {
    check_private(path)?;
    let text = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|e| KeyError::Invalid(path.display().to_string(), e.to_string()))
}

impl Keys {
    /// Loads the keys, creating them on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Keys, KeyError> {
        let path = key_path(data_dir);
        if !path.exists() {
            let key = new_key(None)?;
            let file = KeyFile {
                current: CurrentKey { key_id: key.key_id().to_string(), seed: key.seed_base64(), created_ts: now_ms() },
                old: Vec::new(),
            };
            write_key_file(&path, &file)?;
            tracing::info!(key_id = %key.key_id(), path = %path.display(), "generated the server signing key");
        }
        Self::from_file(&path, read_key_file(&path)?)
    }

    fn from_file(path: &Path, file: KeyFile) -> Result<Keys, KeyError> {
        let current = ServerKey::from_seed_base64(&file.current.key_id, &file.current.seed)
            .map_err(|e| KeyError::Invalid(path.display().to_string(), e.to_string()))?;
        Ok(Keys { current, old: file.old })
    }

    /// Makes a new current key. The previous one stays verifiable for events sent before the
    /// overlap period ends or, with `revoke` (a compromised key), only for events sent before
    /// now. Retired keys are never dropped: history they signed must verify for ever, also on
    /// a server that joins years later.
    pub fn rotate(data_dir: &Path, revoke: bool) -> Result<Keys, KeyError> {
        let path = key_path(data_dir);
        let mut file = read_key_file(&path)?;
        let previous = Self::from_file(&path, file.clone())?.current;
        let key = new_key(Some(previous.key_id()))?;
        let now = now_ms();
        file.old.push(OldKey {
            key_id: previous.key_id().to_string(),
            public_key: previous.public_key_base64(),
            expired_ts: if revoke { now } else { now + OLD_KEY_OVERLAP_MS },
        });
        file.current = CurrentKey { key_id: key.key_id().to_string(), seed: key.seed_base64(), created_ts: now };
        write_key_file(&path, &file)?;
        Self::from_file(&path, file)
    }

    /// `GET /.well-known/scaiwave/server`: who we are and our keys, signed by the current key.
    /// `endpoints.federation` is the prefix of the server-to-server API (contract 8.1).
    pub fn well_known(&self, server_name: &str) -> Value {
        let now = now_ms();
        // Old keys are listed for ever, expired ones too (contract section 8): an event verifies
        // against the key that was valid at its `origin_ts`, however long ago that was.
        let old: serde_json::Map<String, Value> = self
            .old
            .iter()
            .map(|k| (k.key_id.clone(), json!({"key": k.public_key, "expired_ts": k.expired_ts})))
            .collect();
        let mut doc = json!({
            "server_name": server_name,
            "public_key": self.current.public_key_base64(),
            "protocol_versions": ["v1"],
            "endpoints": {"federation": federation::wire::PREFIX},
            "verify_keys": {self.current.key_id(): {"key": self.current.public_key_base64()}},
            "old_verify_keys": old,
            "valid_until_ts": now + KEY_VALIDITY_MS,
        });
        // Signing only fails on non-canonical input, which this document never is.
        if let Err(e) = crypto::sign_json(&mut doc, server_name, &self.current) {
            tracing::error!(error = %e, "cannot sign the well-known document");
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_and_rotated_with_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Keys::load_or_create(dir.path()).unwrap();
        let again = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.current.key_id(), again.current.key_id());
        let k2 = Keys::rotate(dir.path(), false).unwrap();
        assert_ne!(k1.current.key_id(), k2.current.key_id());
        assert_eq!(k2.old[0].key_id, k1.current.key_id());
        assert_eq!(k2.old[0].public_key, k1.current.public_key_base64());
        let doc = k2.well_known("alpha.test");
        assert_eq!(doc["endpoints"], json!({"federation": "/_scaiwave/federation/v1"}));
        assert!(doc["old_verify_keys"][k1.current.key_id()]["expired_ts"].as_i64().unwrap() > now_ms());
        let pk = crypto::PublicKey::from_base64(doc["public_key"].as_str().unwrap()).unwrap();
        crypto::verify_json(&doc, "alpha.test", k2.current.key_id(), &pk).unwrap();

        // Long expired, still listed: old events verify against it for ever.
        let mut k2 = k2;
        k2.old[0].expired_ts = 1;
        let doc = k2.well_known("alpha.test");
        assert_eq!(doc["old_verify_keys"][k1.current.key_id()]["expired_ts"], 1);
    }

    #[test]
    fn a_revoked_key_expires_now_and_every_retired_key_stays_listed() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Keys::load_or_create(dir.path()).unwrap();
        let k2 = Keys::rotate(dir.path(), false).unwrap();
        let before = now_ms();
        let k3 = Keys::rotate(dir.path(), true).unwrap();
        let after = now_ms();
        let doc = k3.well_known("alpha.test");
        let old = doc["old_verify_keys"].as_object().unwrap();
        assert_eq!(old.len(), 2, "both retired keys are listed: {doc}");
        let revoked = old[k2.current.key_id()]["expired_ts"].as_i64().unwrap();
        assert!((before..=after).contains(&revoked), "the revoked key expired at rotation");
        assert!(old[k1.current.key_id()]["expired_ts"].as_i64().unwrap() > after, "the earlier overlap is kept");
        // The public key ring agrees: the revoked key verifies an event sent before the
        // revocation and nothing sent after it.
        let keys = federation::keys::verify_document(&doc, "alpha.test").unwrap();
        assert!(keys.key_at(k2.current.key_id(), (before - 1000) as u64).is_some());
        assert!(keys.key_at(k2.current.key_id(), after as u64 + 1).is_none());
        assert!(keys.key_at(k3.current.key_id(), after as u64 + 1).is_some());

        // Long expired keys survive later rotations.
        let k4 = Keys::rotate(dir.path(), false).unwrap();
        assert_eq!(k4.well_known("alpha.test")["old_verify_keys"].as_object().unwrap().len(), 3);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Keys::load_or_create(dir.path()).unwrap();
        let path = key_path(dir.path());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Keys::load_or_create(dir.path()), Err(KeyError::Exposed(..))));
    }
}
