//! Cryptography for federation: canonical JSON, content hashes, ed25519 signatures, event ids,
//! redaction and signed requests. Every other server trusts what this crate says, so it is
//! small, strict and pure: no I/O, no clock, no async, and no panic on any input.
//!
//! The algorithms are those of the Matrix specification (appendix "Signing JSON" and the
//! server-server API's event signing), so an independent implementation of those verifies our
//! signatures; the crate reproduces the specification's test vectors byte for byte. Only the
//! event format and its redaction table are ours (see `docs/federation.md`).
//!
//! | module | job |
//! |---|---|
//! | [`canonical`] | canonical JSON encoder over `serde_json::Value` |
//! | [`parse`] | strict parser for untrusted bytes (duplicate keys, floats, range, depth) |
//! | [`b64`] | unpadded base64, standard and URL-safe |
//! | [`hash`] | SHA-256 and the content hash |
//! | [`keys`] | ed25519 server keys, public keys, key ids |
//! | [`signing`] | sign and verify JSON objects |
//! | [`redaction`] | our redaction algorithm |
//! | [`event`] | build and sign events, verify them, event ids |
//! | [`draft`] | build and sign an event from members already in canonical JSON (the fast path) |
//! | [`request`] | the `X-ScaiWave` request signature header |
//!
//! # Example
//! ```
//! use crypto::{ServerKey, build_and_sign_event, check_content_hash, parse_strict, verify_event};
//!
//! let key = ServerKey::generate("1").unwrap();
//! let event = parse_strict(br#"{"event_uuid":"u1","room_id":"room-1","sender":"@a:alpha.test",
//!     "origin":"alpha.test","origin_ts":1778939467,"event_type":"swp.room.message",
//!     "content":{"body":"hi"},"prev_events":[],"auth_events":[],"depth":1}"#).unwrap();
//! let (event_id, signed) = build_and_sign_event(event, "alpha.test", &key).unwrap();
//! assert!(event_id.starts_with("evt-"));
//! verify_event(&signed, "alpha.test", key.key_id(), &key.public_key()).unwrap();
//! assert!(check_content_hash(&signed));
//! ```

pub mod b64;
pub mod canonical;
pub mod draft;
mod error;
pub mod event;
pub mod hash;
pub mod keys;
pub mod parse;
pub mod redaction;
pub mod request;
pub mod signing;

pub use canonical::{MAX_DEPTH, MAX_SAFE_INTEGER, check_value, to_canonical_bytes, to_canonical_string};
pub use draft::{EventDraft, PreparedDraft};
pub use error::{Error, Result};
pub use event::{
    EVENT_ID_PREFIX, UnsignedEvent, build_and_sign_event, countersign_event, event_id, event_id_with, prepare_event,
    prepare_event_with, reference_hash, verify_event, verify_event_with,
};
pub use hash::{check_content_hash, content_hash, sha256};
pub use keys::{PublicKey, ServerKey, validate_key_id};
pub use parse::{parse_canonical, parse_strict, verify_canonical};
pub use redaction::{
    KEPT_TOP_LEVEL_KEYS, KeptContent, RedactionRules, kept_content_keys, kept_content_keys_with, redact, redact_with,
};
pub use request::{MAX_CLOCK_SKEW_MS, RequestToSign, XScaiWaveAuth, parse_authorization};
pub use signing::{sign_json, signature_of, signing_bytes, verify_json};
