//! Events: build and sign, verify, event ids.
//!
//! An event is built in the order of the Matrix specification:
//! 1. content hash of the event without `signatures`, `hashes` and `unsigned`
//!    ([`crate::content_hash`]), stored as `hashes: {"sha256": <unpadded base64>}`;
//! 2. redact a copy ([`crate::redact`]);
//! 3. sign the redacted copy ([`crate::sign_json`]);
//! 4. copy its `signatures` onto the full event.
//!
//! So the signature covers only what survives redaction, and a redacted event still verifies;
//! the hash covers the full content. On receipt: a bad signature means drop the event; a bad
//! content hash means keep only the redacted form (see `FEDERATION.md`).
//!
//! The event id is `evt-` + unpadded URL-safe base64 of the *reference hash*: SHA-256 of the
//! canonical JSON of the redacted event without `signatures` and `unsigned`. It is the same for
//! an event and its redacted form, and does not change when more signatures are added.

use serde_json::{Map, Value};

use crate::b64;
use crate::error::{Error, Result};
use crate::hash::{content_hash, sha256};
use crate::keys::{PublicKey, ServerKey};
use crate::redaction::{RedactionRules, redact, redact_with};
use crate::signing::{add_signature, signing_bytes, verify_json};

/// The prefix of every event id.
pub const EVENT_ID_PREFIX: &str = "evt-";

/// Hashes, signs and identifies a new event.
///
/// `event` is the complete event without `hashes` and `signatures` (any `hashes` given is
/// replaced; any `signatures` given are kept and added to; `unsigned` is kept and covered by
/// nothing). Returns `(event_id, signed_event)`.
pub fn build_and_sign_event(event: Value, server_name: &str, key: &ServerKey) -> Result<(String, Value)> {
    prepare_event(event)?.sign(server_name, key)
}

/// A new event hashed and identified, not yet signed: the first half of
/// [`build_and_sign_event`]. Its id does not depend on the signature, so a server can chain
/// events (the next one's `prev_events`) before signing them, and sign them in parallel.
#[derive(Debug)]
pub struct UnsignedEvent {
    event: Value,
    /// Canonical JSON of the redacted event without `signatures` and `unsigned`: what the
    /// signature covers, and what the reference hash is the hash of.
    signed_bytes: Vec<u8>,
    event_id: String,
}

/// Computes the content hash and the event id of `event` (see [`build_and_sign_event`]).
pub fn prepare_event(event: Value) -> Result<UnsignedEvent> {
    prepare_event_with(RedactionRules::V1, event)
}

/// [`prepare_event`] under the redaction table `rules` names (for the tables of other room
/// versions; [`RedactionRules::PreV1`] only to reproduce events made before version 1).
pub fn prepare_event_with(rules: RedactionRules, event: Value) -> Result<UnsignedEvent> {
    let mut event = event;
    let hash = content_hash(&event)?;
    let mut hashes = Map::new();
    hashes.insert("sha256".to_owned(), Value::String(hash));
    event.as_object_mut().ok_or(Error::NotAnObject)?.insert("hashes".to_owned(), Value::Object(hashes));
    let signed_bytes = signing_bytes(&redact_with(rules, &event)?)?;
    let event_id = format!("{EVENT_ID_PREFIX}{}", b64::encode_url_safe(sha256(&signed_bytes)));
    Ok(UnsignedEvent { event, signed_bytes, event_id })
}

impl UnsignedEvent {
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// Signs the event as `server_name` with `key`: `(event_id, signed_event)`.
    pub fn sign(self, server_name: &str, key: &ServerKey) -> Result<(String, Value)> {
        let UnsignedEvent { mut event, signed_bytes, event_id } = self;
        let signature = b64::encode(key.sign_bytes(&signed_bytes));
        add_signature(&mut event, server_name, key.key_id(), signature)?;
        Ok((event_id, event))
    }
}

/// Adds `server_name`'s signature to an event signed already (a countersignature: the
/// invitee's server on an invite, the resident server on a join). Like the origin's, it covers
/// the redacted form, so the event id and the other signatures stay as they are.
pub fn countersign_event(rules: RedactionRules, event: &mut Value, server_name: &str, key: &ServerKey) -> Result<()> {
    let bytes = signing_bytes(&redact_with(rules, event)?)?;
    let signature = b64::encode(key.sign_bytes(&bytes));
    add_signature(event, server_name, key.key_id(), signature)
}

/// Checks `server_name`'s signature with `key_id` on the redacted form of `event`. Works the
/// same on a full and on a redacted event. Does not check the content hash.
pub fn verify_event(event: &Value, server_name: &str, key_id: &str, public_key: &PublicKey) -> Result<()> {
    verify_json(&redact(event)?, server_name, key_id, public_key)
}

/// [`verify_event`] under the redaction table `rules` names.
pub fn verify_event_with(
    rules: RedactionRules,
    event: &Value,
    server_name: &str,
    key_id: &str,
    public_key: &PublicKey,
) -> Result<()> {
    verify_json(&redact_with(rules, event)?, server_name, key_id, public_key)
}

/// The event id of `event` (full or redacted): `evt-` + unpadded URL-safe base64 of its
/// reference hash.
pub fn event_id(event: &Value) -> Result<String> {
    reference_event_id(&redact(event)?)
}

/// [`event_id`] under the redaction table `rules` names.
pub fn event_id_with(rules: RedactionRules, event: &Value) -> Result<String> {
    reference_event_id(&redact_with(rules, event)?)
}

/// The reference hash of `event`: SHA-256 of the canonical JSON of its redacted form without
/// `signatures` and `unsigned`.
pub fn reference_hash(event: &Value) -> Result<[u8; 32]> {
    reference_hash_of_redacted(&redact(event)?)
}

fn reference_hash_of_redacted(redacted: &Value) -> Result<[u8; 32]> {
    Ok(sha256(signing_bytes(redacted)?))
}

fn reference_event_id(redacted: &Value) -> Result<String> {
    let hash = reference_hash_of_redacted(redacted)?;
    Ok(format!("{EVENT_ID_PREFIX}{}", b64::encode_url_safe(hash)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::check_content_hash;
    use crate::signing::sign_json;
    use serde_json::json;

    fn message() -> Value {
        json!({
            "event_uuid": "0b5c2b8e-7c9e-4a57-9d7e-1f6f6c1c8a01", "room_id": "room-01JD3K",
            "sender": "@alice:alpha.test", "origin": "alpha.test", "origin_ts": 1778939467,
            "event_type": "swp.room.message", "content": {"body": "hello"},
            "prev_events": ["evt-a"], "auth_events": ["evt-b"], "depth": 7,
            "unsigned": {"age": 12},
        })
    }

    #[test]
    fn the_id_is_known_before_signing_and_signing_keeps_it() {
        let key = ServerKey::from_seed("1", &[7; 32]).unwrap();
        let prepared = prepare_event(message()).unwrap();
        let id = prepared.event_id().to_owned();
        let (signed_id, signed) = prepared.sign("alpha.test", &key).unwrap();
        assert_eq!(signed_id, id);
        assert_eq!(event_id(&signed).unwrap(), id);
        verify_event(&signed, "alpha.test", key.key_id(), &key.public_key()).unwrap();
        assert_eq!(build_and_sign_event(message(), "alpha.test", &key).unwrap(), (id, signed));
    }

    #[test]
    fn build_verify_and_redact() {
        let key = ServerKey::from_seed("1", &[9; 32]).unwrap();
        let pk = key.public_key();
        let (id, signed) = build_and_sign_event(message(), "alpha.test", &key).unwrap();
        assert!(id.starts_with("evt-") && id.len() == 4 + 43, "{id}");
        assert!(!id.contains(['+', '/', '=']));
        assert_eq!(signed["unsigned"], json!({"age": 12}));
        assert!(check_content_hash(&signed));
        verify_event(&signed, "alpha.test", "ed25519:1", &pk).unwrap();
        assert_eq!(event_id(&signed).unwrap(), id);

        let redacted = redact(&signed).unwrap();
        verify_event(&redacted, "alpha.test", "ed25519:1", &pk).unwrap();
        assert_eq!(event_id(&redacted).unwrap(), id);
        assert!(!check_content_hash(&redacted), "the hash covers the redacted-away body");

        // A changed body keeps the signature valid (it covers the redacted form) but breaks
        // the content hash: the receiver keeps only the redacted form.
        let mut tampered = signed.clone();
        tampered["content"]["body"] = json!("evil");
        verify_event(&tampered, "alpha.test", "ed25519:1", &pk).unwrap();
        assert!(!check_content_hash(&tampered));
        assert_eq!(event_id(&tampered).unwrap(), id);

        // A changed essential field breaks the signature and changes the id.
        let mut forged = signed.clone();
        forged["depth"] = json!(8);
        assert_eq!(verify_event(&forged, "alpha.test", "ed25519:1", &pk), Err(Error::BadSignature));
        assert_ne!(event_id(&forged).unwrap(), id);
    }

    #[test]
    fn second_signature_does_not_change_id() {
        let (k1, k2) = (ServerKey::from_seed("1", &[1; 32]).unwrap(), ServerKey::from_seed("a", &[2; 32]).unwrap());
        let (id, mut signed) = build_and_sign_event(message(), "alpha.test", &k1).unwrap();
        let mut redacted = redact(&signed).unwrap();
        sign_json(&mut redacted, "beta.test", &k2).unwrap();
        signed["signatures"] = redacted["signatures"].clone();
        assert_eq!(event_id(&signed).unwrap(), id);
        verify_event(&signed, "alpha.test", "ed25519:1", &k1.public_key()).unwrap();
        verify_event(&signed, "beta.test", "ed25519:a", &k2.public_key()).unwrap();
    }

    #[test]
    fn malformed() {
        let key = ServerKey::from_seed("1", &[1; 32]).unwrap();
        assert_eq!(build_and_sign_event(json!(1), "a", &key).unwrap_err(), Error::NotAnObject);
        let mut bad = message();
        bad["content"] = json!("x");
        assert!(matches!(build_and_sign_event(bad, "a", &key), Err(Error::MalformedEvent(_))));
        let mut bad = message();
        bad["depth"] = json!(1.5);
        assert_eq!(build_and_sign_event(bad, "a", &key).unwrap_err(), Error::Float);
        assert_eq!(event_id(&json!(null)), Err(Error::NotAnObject));
    }
}
