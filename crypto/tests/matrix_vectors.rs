//! The Matrix specification's appendix "Cryptographic test vectors", reproduced byte for byte.
//!
//! The JSON-signing and content-hash functions are generic, so they are run here on the
//! specification's own (Matrix-format) objects and events. Only the redaction step differs
//! from ours: Matrix events use `type`, `origin_server_ts`, … so this file carries the few
//! lines of the Matrix redaction algorithm (original room versions, which the vectors were
//! made with) that these two events need.

use crypto::{
    ServerKey, b64, check_content_hash, content_hash, parse_strict, sign_json, to_canonical_string, verify_json,
};
use serde_json::{Value, json};

const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const SERVER: &str = "domain";
const KEY_ID: &str = "ed25519:1";

fn key() -> ServerKey {
    ServerKey::from_seed_base64(KEY_ID, SEED).unwrap()
}

/// Matrix redaction as of the room versions the spec's vectors use.
fn matrix_redact(event: &Value) -> Value {
    const KEEP: &[&str] = &[
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    ];
    let mut out: serde_json::Map<String, Value> = event
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| KEEP.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Neither `X` nor `m.room.message` keeps any content key.
    out.insert("content".into(), json!({}));
    Value::Object(out)
}

/// The Matrix event-signing algorithm, built from this crate's generic functions.
fn matrix_sign_event(mut event: Value) -> Value {
    let hash = content_hash(&event).unwrap();
    event["hashes"] = json!({ "sha256": hash });
    let mut redacted = matrix_redact(&event);
    sign_json(&mut redacted, SERVER, &key()).unwrap();
    event["signatures"] = redacted["signatures"].clone();
    event
}

#[test]
fn signing_key_seed_decodes_to_32_bytes() {
    assert_eq!(b64::decode_lenient(SEED).unwrap().len(), 32);
    // The spec's seed has non-zero trailing bits: only the lenient decoder takes it.
    assert!(b64::decode(SEED).is_err());
    assert_eq!(key().key_id(), KEY_ID);
}

#[test]
fn sign_empty_object() {
    let mut v = json!({});
    sign_json(&mut v, SERVER, &key()).unwrap();
    let expected = json!({"signatures": {"domain": {"ed25519:1":
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}});
    assert_eq!(to_canonical_string(&v).unwrap(), to_canonical_string(&expected).unwrap());
    verify_json(&v, SERVER, KEY_ID, &key().public_key()).unwrap();
}

#[test]
fn sign_object_with_data() {
    let mut v = json!({"one": 1, "two": "Two"});
    sign_json(&mut v, SERVER, &key()).unwrap();
    let expected = json!({"one": 1, "signatures": {"domain": {"ed25519:1":
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},
        "two": "Two"});
    assert_eq!(to_canonical_string(&v).unwrap(), to_canonical_string(&expected).unwrap());
}

#[test]
fn sign_minimal_event() {
    let event = parse_strict(
        br#"{
            "room_id": "!x:domain",
            "sender": "@a:domain",
            "origin": "domain",
            "origin_server_ts": 1000000,
            "signatures": {},
            "hashes": {},
            "type": "X",
            "content": {},
            "prev_events": [],
            "auth_events": [],
            "depth": 3,
            "unsigned": {"age_ts": 1000000}
        }"#,
    )
    .unwrap();
    let signed = matrix_sign_event(event);
    let expected = json!({
        "auth_events": [], "content": {}, "depth": 3,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "origin": "domain", "origin_server_ts": 1000000, "prev_events": [],
        "room_id": "!x:domain", "sender": "@a:domain",
        "signatures": {"domain": {"ed25519:1":
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},
        "type": "X", "unsigned": {"age_ts": 1000000}
    });
    assert_eq!(to_canonical_string(&signed).unwrap(), to_canonical_string(&expected).unwrap());
    assert!(check_content_hash(&signed));
    verify_json(&matrix_redact(&signed), SERVER, KEY_ID, &key().public_key()).unwrap();
}

#[test]
fn sign_redactable_event() {
    let event = parse_strict(
        br#"{
            "content": {"body": "Here is the message content"},
            "event_id": "$0:domain",
            "origin": "domain",
            "origin_server_ts": 1000000,
            "type": "m.room.message",
            "room_id": "!r:domain",
            "sender": "@u:domain",
            "signatures": {},
            "unsigned": {"age_ts": 1000000}
        }"#,
    )
    .unwrap();
    let signed = matrix_sign_event(event);
    let expected = json!({
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
        "room_id": "!r:domain", "sender": "@u:domain",
        "signatures": {"domain": {"ed25519:1":
            "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"}},
        "unsigned": {"age_ts": 1000000}
    });
    assert_eq!(to_canonical_string(&signed).unwrap(), to_canonical_string(&expected).unwrap());
    // The redacted form (body gone) still verifies; its content hash no longer matches.
    let redacted = matrix_redact(&signed);
    verify_json(&redacted, SERVER, KEY_ID, &key().public_key()).unwrap();
    assert!(!check_content_hash(&redacted));
}

#[test]
fn canonical_json_examples() {
    // The spec's examples that are valid input for us. Its `{"a": -0, "b": 1e10}` example is
    // deliberately rejected on input (see `parse::tests`): FEDERATION.md says reject.
    for (input, canonical) in [
        (r#"{}"#, r#"{}"#),
        (r#"{ "one": 1, "two": "Two" }"#, r#"{"one":1,"two":"Two"}"#),
        (r#"{ "b": "2", "a": "1" }"#, r#"{"a":"1","b":"2"}"#),
        (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
        (r#"{ "a": "日本語" }"#, r#"{"a":"日本語"}"#),
        (r#"{ "本": 2, "日": 1 }"#, r#"{"日":1,"本":2}"#),
        (r#"{ "a": "\u65E5" }"#, r#"{"a":"日"}"#),
        (r#"{ "a": null }"#, r#"{"a":null}"#),
    ] {
        let v = parse_strict(input.as_bytes()).unwrap();
        assert_eq!(to_canonical_string(&v).unwrap(), canonical);
    }
    assert_eq!(parse_strict(br#"{"a": -0, "b": 1e10}"#), Err(crypto::Error::NegativeZero));
}
