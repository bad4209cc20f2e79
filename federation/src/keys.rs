//! Peers' signing keys: fetched from their signed well-known document (or, when a peer is
//! offline, from a trusted notary's `keys/query`), cached with `valid_until_ts`, with old keys
//! kept so history signed by a rotated key still verifies.
//!
//! Two questions are asked of it:
//! - a **request** is verified with a key the peer lists as current in a document valid now
//!   ([`KeyRing::request_key`]);
//! - an **event** is verified with a key that was valid at the event's `origin_ts` (contract
//!   section 8): a current key if the document's `valid_until_ts` is not before it, or an old
//!   key whose `expired_ts` is after it ([`KeyRing::event_key`]).
//!
//! An unknown key id makes it fetch again, at most once per [`KeyRing::min_refetch`] per peer,
//! so a peer sending garbage key ids cannot make us hammer the network.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::FedClient;
use crate::wire::path;

/// What a peer's document says about its keys.
#[derive(Debug, Clone)]
pub struct ServerKeys {
    pub server_name: String,
    pub verify_keys: BTreeMap<String, crypto::PublicKey>,
    /// `key_id → (key, expired_ts)`.
    pub old_verify_keys: BTreeMap<String, (crypto::PublicKey, u64)>,
    /// Unix ms.
    pub valid_until_ts: u64,
    /// The document as its origin signed it.
    pub document: Value,
}

impl ServerKeys {
    /// The key `key_id` if it was valid at `at_ms`.
    pub fn key_at(&self, key_id: &str, at_ms: u64) -> Option<crypto::PublicKey> {
        if let Some(k) = self.verify_keys.get(key_id) {
            if at_ms <= self.valid_until_ts {
                return Some(k.clone());
            }
        }
        match self.old_verify_keys.get(key_id) {
            Some((k, expired)) if at_ms < *expired => Some(k.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("{server} has no key {key_id} valid at {at_ms}")]
    UnknownKey { server: String, key_id: String, at_ms: u64 },
    #[error("cannot fetch the keys of {0}: {1}")]
    Unavailable(String, String),
    #[error("bad key document for {0}: {1}")]
    BadDocument(String, String),
}

/// Checks a key document's shape and its origin's self-signature, whatever its
/// `valid_until_ts` (the caller decides what an old document is good for). Pure.
pub fn verify_document(doc: &Value, server_name: &str) -> Result<ServerKeys, KeyError> {
    let bad = |m: String| KeyError::BadDocument(server_name.into(), m);
    let valid_until_ts =
        doc.get("valid_until_ts").and_then(Value::as_u64).ok_or_else(|| bad("no valid_until_ts".into()))?;
    // check_well_known does the name, keys and signature checks; time is not judged here.
    crate::check_well_known(doc, server_name, 0).map_err(|e| bad(e.to_string()))?;
    let read = |v: &Value| v.get("key").and_then(Value::as_str).and_then(|k| crypto::PublicKey::from_base64(k).ok());
    let mut verify_keys = BTreeMap::new();
    for (id, v) in doc.get("verify_keys").and_then(Value::as_object).into_iter().flatten() {
        verify_keys.insert(id.clone(), read(v).ok_or_else(|| bad(format!("verify_keys.{id} is not a key")))?);
    }
    let mut old_verify_keys = BTreeMap::new();
    for (id, v) in doc.get("old_verify_keys").and_then(Value::as_object).into_iter().flatten() {
        let key = read(v).ok_or_else(|| bad(format!("old_verify_keys.{id} is not a key")))?;
        let expired = v
            .get("expired_ts")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("old_verify_keys.{id} has no expired_ts")))?;
        old_verify_keys.insert(id.clone(), (key, expired));
    }
    Ok(ServerKeys {
        server_name: server_name.into(),
        verify_keys,
        old_verify_keys,
        valid_until_ts,
        document: doc.clone(),
    })
}

/// Told about every document the ring accepts, so the host can keep it across restarts.
pub trait KeyPersist: Send + Sync {
    fn save(&self, keys: &ServerKeys);
}

/// The cache of peers' keys. Cheap to clone.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    client: FedClient,
    /// Our own keys' document, so we never fetch ourselves.
    own: Mutex<Option<Arc<ServerKeys>>>,
    cache: Mutex<HashMap<String, Arc<ServerKeys>>>,
    last_fetch: Mutex<HashMap<String, Instant>>,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    notaries: Vec<String>,
    min_refetch: Duration,
    persist: Option<Arc<dyn KeyPersist>>,
}

impl KeyRing {
    /// `notaries` are the servers whose `keys/query` answers this server trusts.
    pub fn new(client: FedClient, notaries: Vec<String>, persist: Option<Arc<dyn KeyPersist>>) -> KeyRing {
        KeyRing {
            inner: Arc::new(Inner {
                client,
                own: Mutex::new(None),
                cache: Default::default(),
                last_fetch: Default::default(),
                fetching: Default::default(),
                notaries,
                min_refetch: Duration::from_secs(10),
                persist,
            }),
        }
    }

    /// The shortest time between two fetches of one peer's keys.
    pub fn min_refetch(&self) -> Duration {
        self.inner.min_refetch
    }

    /// Sets our own document (our keys never go through the network).
    pub fn set_own(&self, doc: &Value) -> Result<(), KeyError> {
        let keys = verify_document(doc, self.inner.client.origin())?;
        *self.inner.own.lock().expect("key ring lock") = Some(Arc::new(keys));
        Ok(())
    }

    /// Adds a document (from storage at start, or a notary's answer): its self-signature is
    /// checked; it replaces a cached one only if it is newer.
    pub fn insert_document(&self, doc: &Value, server_name: &str) -> Result<Arc<ServerKeys>, KeyError> {
        let keys = Arc::new(verify_document(doc, server_name)?);
        let mut cache = self.inner.cache.lock().expect("key ring lock");
        match cache.get(server_name) {
            Some(old) if old.valid_until_ts > keys.valid_until_ts => Ok(old.clone()),
            _ => {
                cache.insert(server_name.to_string(), keys.clone());
                Ok(keys)
            }
        }
    }

    /// The cached keys of `server_name`, if any.
    pub fn cached(&self, server_name: &str) -> Option<Arc<ServerKeys>> {
        if server_name == self.inner.client.origin() {
            return self.inner.own.lock().ok().and_then(|o| o.clone());
        }
        self.inner.cache.lock().ok().and_then(|c| c.get(server_name).cloned())
    }

    /// Every cached document of the given servers (a notary's answer), as their origins signed
    /// them.
    pub fn documents(&self, servers: &[String]) -> Vec<Value> {
        servers.iter().filter_map(|s| self.cached(s)).map(|k| k.document.clone()).collect()
    }

    /// The key for a request from `server`: listed as current in a document valid now.
    pub async fn request_key(&self, server: &str, key_id: &str) -> Result<crypto::PublicKey, KeyError> {
        let now = crate::now_ms();
        let usable = |k: &ServerKeys| k.verify_keys.get(key_id).filter(|_| k.valid_until_ts >= now).cloned();
        if let Some(k) = self.cached(server).as_deref().and_then(usable) {
            return Ok(k);
        }
        let keys = self.fetch(server).await?;
        usable(&keys).ok_or_else(|| KeyError::UnknownKey { server: server.into(), key_id: key_id.into(), at_ms: now })
    }

    /// The key that signed an event of `server` sent at `origin_ts_ms`.
    pub async fn event_key(
        &self,
        server: &str,
        key_id: &str,
        origin_ts_ms: u64,
    ) -> Result<crypto::PublicKey, KeyError> {
        if let Some(k) = self.cached(server).and_then(|k| k.key_at(key_id, origin_ts_ms)) {
            return Ok(k);
        }
        let keys = self.fetch(server).await?;
        keys.key_at(key_id, origin_ts_ms).ok_or_else(|| KeyError::UnknownKey {
            server: server.into(),
            key_id: key_id.into(),
            at_ms: origin_ts_ms,
        })
    }

    /// Fetches `server`'s keys now (directly, then from the notaries), unless they were fetched
    /// less than [`KeyRing::min_refetch`] ago; concurrent callers share one fetch.
    pub async fn fetch(&self, server: &str) -> Result<Arc<ServerKeys>, KeyError> {
        if server == self.inner.client.origin() {
            return self.cached(server).ok_or_else(|| KeyError::Unavailable(server.into(), "own keys not set".into()));
        }
        let gate = {
            let mut f = self.inner.fetching.lock().expect("key ring lock");
            f.entry(server.to_string()).or_default().clone()
        };
        let _turn = gate.lock().await;
        let recent = self
            .inner
            .last_fetch
            .lock()
            .expect("key ring lock")
            .get(server)
            .is_some_and(|at| at.elapsed() < self.inner.min_refetch);
        if recent {
            return self
                .cached(server)
                .ok_or_else(|| KeyError::Unavailable(server.into(), "fetched moments ago without success".into()));
        }
        self.inner.last_fetch.lock().expect("key ring lock").insert(server.to_string(), Instant::now());
        let direct = match self.inner.client.discovery().discover(server).await {
            Ok(info) => self.accept(&info.document, server),
            Err(e) => Err(KeyError::Unavailable(server.into(), e.to_string())),
        };
        let error = match direct {
            Ok(k) => return Ok(k),
            Err(e) => e,
        };
        for notary in &self.inner.notaries {
            if notary == server {
                continue;
            }
            let body = json!({"server_keys": {server: {}}});
            let Ok(data) = self.inner.client.request(notary, "POST", &path::keys_query(), Some(&body)).await else {
                continue;
            };
            for doc in data.get("server_keys").and_then(Value::as_array).into_iter().flatten() {
                if doc.get("server_name").and_then(Value::as_str) == Some(server) {
                    if let Ok(k) = self.accept(doc, server) {
                        return Ok(k);
                    }
                }
            }
        }
        tracing::debug!(server, %error, "key fetch failed");
        self.cached(server).ok_or(error)
    }

    fn accept(&self, doc: &Value, server: &str) -> Result<Arc<ServerKeys>, KeyError> {
        let keys = self.insert_document(doc, server)?;
        if let Some(p) = &self.inner.persist {
            p.save(&keys);
        }
        Ok(keys)
    }
}

/// Adds this server's signature to a peer's document (a notary answer: the origin's signature
/// and ours). The document must already carry its origin's signature.
pub fn countersign_document(doc: &Value, our_name: &str, key: &crypto::ServerKey) -> Value {
    let mut doc = doc.clone();
    let Ok(sig) = crypto::signature_of(&doc, key) else { return doc };
    if let Some(sigs) = doc.get_mut("signatures").and_then(Value::as_object_mut) {
        let entry = sigs.entry(our_name.to_string()).or_insert_with(|| json!({}));
        if let Some(map) = entry.as_object_mut() {
            map.insert(key.key_id().to_string(), Value::String(sig));
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(server: &str, key: &crypto::ServerKey, valid_until: u64, old: Value) -> Value {
        let mut d = json!({
            "server_name": server,
            "verify_keys": {key.key_id(): {"key": key.public_key_base64()}},
            "old_verify_keys": old,
            "valid_until_ts": valid_until,
        });
        crypto::sign_json(&mut d, server, key).unwrap();
        d
    }

    #[test]
    fn keys_are_valid_at_the_time_of_the_event() {
        let current = crypto::ServerKey::from_seed("2", &[2; 32]).unwrap();
        let old = crypto::ServerKey::from_seed("1", &[1; 32]).unwrap();
        let d = doc(
            "beta.test",
            &current,
            5_000,
            json!({old.key_id(): {"key": old.public_key_base64(), "expired_ts": 3_000}}),
        );
        let keys = verify_document(&d, "beta.test").unwrap();
        assert!(keys.key_at(current.key_id(), 5_000).is_some());
        assert!(keys.key_at(current.key_id(), 5_001).is_none());
        assert!(keys.key_at(old.key_id(), 2_999).is_some());
        assert!(keys.key_at(old.key_id(), 3_000).is_none());
        assert!(keys.key_at("ed25519:nope", 1).is_none());
    }

    #[test]
    fn a_document_signed_by_another_server_or_tampered_is_refused() {
        let key = crypto::ServerKey::from_seed("1", &[1; 32]).unwrap();
        let d = doc("beta.test", &key, 5_000, json!({}));
        assert!(verify_document(&d, "gamma.test").is_err());
        let mut t = d.clone();
        t["valid_until_ts"] = json!(9_000);
        assert!(verify_document(&t, "beta.test").is_err());
    }

    #[test]
    fn a_countersigned_document_still_verifies_for_its_origin() {
        let key = crypto::ServerKey::from_seed("1", &[1; 32]).unwrap();
        let notary = crypto::ServerKey::from_seed("n", &[9; 32]).unwrap();
        let d = countersign_document(&doc("beta.test", &key, 5_000, json!({})), "alpha.test", &notary);
        assert!(verify_document(&d, "beta.test").is_ok());
        crypto::verify_json(&d, "alpha.test", notary.key_id(), &notary.public_key()).unwrap();
    }
}
