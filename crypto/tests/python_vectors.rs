//! Cross-check against Python's `canonicaljson` and `signedjson` (independent implementations).
//! The vectors come from `scripts/gen_crypto_vectors.py`; see `scripts/gen_crypto_vectors.sh`.
//!
//! ed25519 signatures are deterministic, so "our signature equals Python's" means Python's
//! verifier accepts ours; and each of Python's signed objects is verified here with ours.

use crypto::{
    PublicKey, ServerKey, parse_strict, sign_json, signature_of, to_canonical_string, verify_canonical, verify_json,
};
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/python_vectors.json");

struct Setup {
    key: ServerKey,
    python_public_key: PublicKey,
    server: String,
    key_id: String,
    vectors: Vec<Value>,
}

fn setup() -> Setup {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let key_id = doc["key_id"].as_str().unwrap().to_owned();
    let key = ServerKey::from_seed_base64(&key_id, doc["seed"].as_str().unwrap()).unwrap();
    let python_public_key = PublicKey::from_base64(doc["public_key"].as_str().unwrap()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap().clone();
    assert!(vectors.len() >= 200, "only {} vectors", vectors.len());
    Setup { key, python_public_key, server: doc["server_name"].as_str().unwrap().to_owned(), key_id, vectors }
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap()
}

#[test]
fn same_public_key_from_the_same_seed() {
    let s = setup();
    assert_eq!(s.key.public_key(), s.python_public_key);
}

#[test]
fn canonical_forms_identical() {
    for (i, v) in setup().vectors.iter().enumerate() {
        let parsed = parse_strict(field(v, "input").as_bytes()).unwrap_or_else(|e| panic!("vector {i}: {e}"));
        let ours = to_canonical_string(&parsed).unwrap();
        assert_eq!(ours, field(v, "canonical"), "vector {i}");
        verify_canonical(field(v, "canonical").as_bytes()).unwrap();
        if field(v, "input") != field(v, "canonical") {
            assert!(verify_canonical(field(v, "input").as_bytes()).is_err(), "vector {i}");
        }
    }
}

#[test]
fn signatures_identical() {
    let s = setup();
    for (i, v) in s.vectors.iter().enumerate() {
        let parsed = parse_strict(field(v, "input").as_bytes()).unwrap();
        assert_eq!(signature_of(&parsed, &s.key).unwrap(), field(v, "signature"), "vector {i}");
    }
}

#[test]
fn python_signatures_verify_with_ours() {
    let s = setup();
    for (i, v) in s.vectors.iter().enumerate() {
        let signed = parse_strict(field(v, "signed").as_bytes()).unwrap();
        verify_json(&signed, &s.server, &s.key_id, &s.python_public_key).unwrap_or_else(|e| panic!("vector {i}: {e}"));
        // Tampering with the signed content is caught.
        let mut tampered = signed.clone();
        tampered.as_object_mut().unwrap().insert("tampered".into(), Value::Bool(true));
        assert!(verify_json(&tampered, &s.server, &s.key_id, &s.python_public_key).is_err());
    }
}

#[test]
fn our_signed_objects_match_pythons() {
    let s = setup();
    for (i, v) in s.vectors.iter().enumerate() {
        let mut ours = parse_strict(field(v, "input").as_bytes()).unwrap();
        sign_json(&mut ours, &s.server, &s.key).unwrap();
        verify_json(&ours, &s.server, &s.key_id, &s.python_public_key).unwrap();
        let pythons = parse_strict(field(v, "signed").as_bytes()).unwrap();
        assert_eq!(to_canonical_string(&ours).unwrap(), to_canonical_string(&pythons).unwrap(), "vector {i}");
    }
}
