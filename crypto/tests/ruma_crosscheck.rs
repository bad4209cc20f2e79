//! Cross-check against `ruma-common` and `ruma-signatures` 0.22, an independent Rust
//! implementation of the Matrix specification's canonical JSON and JSON signing. Dev-dependencies
//! only: nothing here reaches a normal build of `crypto`.
//!
//! For proptest-generated values and objects (nested objects and arrays, control characters,
//! escapes, astral characters, integers up to ±(2^53 − 1), odd keys, `unsigned` and pre-existing
//! signatures at the root, `signatures`/`unsigned` keys deeper down):
//! * our canonical string equals ruma's `CanonicalJsonValue` serialisation, and our signing bytes
//!   equal ruma's `to_canonical_json_string_for_signing`;
//! * with the same ed25519 seed (given to ruma as a PKCS#8 v1 DER document) both produce the same
//!   signature and the same signed object;
//! * our signed object verifies with ruma's `verify_json`, ruma's with ours, and a changed object
//!   fails with ruma's;
//! * out-of-range integers and floats are rejected by both.
//!
//! The event format and its redaction are ours, so events and reference hashes are not compared.

use crypto::{
    Error, MAX_SAFE_INTEGER, PublicKey, ServerKey, sign_json, signature_of, signing_bytes, to_canonical_string,
    verify_json,
};
use proptest::prelude::*;
use ruma_common::serde::Base64;
use ruma_common::{CanonicalJsonObject, CanonicalJsonValue};
use ruma_signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet, to_canonical_json_string_for_signing};
use serde_json::{Map, Value, json};

const SERVER: &str = "alpha.test";
const OTHER_SERVER: &str = "beta.test";
const SEED: [u8; 32] = *b"ruma cross-check seed, 32 bytes!";
const OTHER_SEED: [u8; 32] = [0xa5; 32];

/// PKCS#8 v1 `PrivateKeyInfo` for an ed25519 key (RFC 8410), up to the 32 seed bytes:
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
const PKCS8_V1_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn ruma_key_pair(seed: &[u8; 32], version: &str) -> Ed25519KeyPair {
    let mut der = PKCS8_V1_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
}

struct Keys {
    ours: ServerKey,
    ruma: Ed25519KeyPair,
    other: ServerKey,
    /// Both servers' public keys, from our base64 through ruma's parser.
    ruma_public_keys: PublicKeyMap,
}

fn keys() -> Keys {
    let ours = ServerKey::from_seed("1", &SEED).unwrap();
    let ruma = ruma_key_pair(&SEED, "1");
    let other = ServerKey::from_seed("a_2", &OTHER_SEED).unwrap();
    let mut ruma_public_keys = PublicKeyMap::new();
    for (server, key) in [(SERVER, &ours), (OTHER_SERVER, &other)] {
        let set: PublicKeySet = [(key.key_id().to_owned(), Base64::parse(key.public_key_base64()).unwrap())].into();
        ruma_public_keys.insert(server.to_owned(), set);
    }
    Keys { ours, ruma, other, ruma_public_keys }
}

fn to_ruma(v: &Value) -> CanonicalJsonValue {
    CanonicalJsonValue::try_from(v.clone()).unwrap()
}

fn to_ruma_object(v: &Value) -> CanonicalJsonObject {
    match to_ruma(v) {
        CanonicalJsonValue::Object(o) => o,
        other => panic!("not an object: {other:?}"),
    }
}

/// `signatures.<server>.ed25519:1` of a ruma-signed object.
fn ruma_signature(signed: &CanonicalJsonObject, server: &str) -> String {
    let by_server = signed["signatures"].as_object().unwrap()[server].as_object().unwrap();
    by_server["ed25519:1"].as_str().unwrap().to_owned()
}

fn from_ruma_object(o: CanonicalJsonObject) -> Value {
    CanonicalJsonValue::Object(o).into()
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        -MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER,
        -1000i64..1000,
        prop::sample::select(vec![0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER - 1, 1 << 31, 1 << 32]),
    ]
}

/// Strings from all of Unicode, weighted towards control characters, characters JSON escapes,
/// characters it must not escape, and astral characters (which UTF-16 would sort differently).
fn string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        3 => any::<char>(),
        2 => prop::char::range('\0', '\u{1f}'),
        2 => prop::sample::select(vec![
            '"', '\\', '/', 'a', 'z', 'A', ' ', '\u{7f}', '\u{80}', '\u{ff}', 'é', '\u{2028}', '\u{2029}',
            '\u{feff}', '\u{fffd}', '\u{ffff}', '\u{10000}', '😀', '\u{10ffff}',
        ]),
        2 => prop::char::range('\u{10000}', '\u{10ffff}'),
    ];
    prop::collection::vec(ch, 0..8).prop_map(|v| v.into_iter().collect())
}

/// Object keys: generated strings plus keys that are special somewhere (empty, look like escapes,
/// are dropped at the root for signing, differ only in case or by an astral character).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => string(),
        1 => prop::sample::select(vec![
            "", " ", "a", "A", "signatures", "unsigned", "\\u0000", "\u{0}", "\u{1f}", "\"", "\\", "é", "e\u{301}",
            "\u{fffd}", "😀", "\u{10000}", "日", "本", "ed25519:1", "a.b", "$",
        ])
        .prop_map(str::to_owned),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(Value::from),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A top-level object without `signatures` (but perhaps with `unsigned`, which signatures do
/// not cover; nested `signatures` and `unsigned` keys are covered like any other).
fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value(), 0..6).prop_map(|m| {
        let mut m: Map<String, Value> = m.into_iter().collect();
        m.remove("signatures");
        Value::Object(m)
    })
}

#[test]
fn same_key_from_the_same_seed() {
    let k = keys();
    assert_eq!(k.ruma.public_key(), k.ours.public_key().to_bytes());
    assert_eq!(PublicKey::from_bytes(&k.ruma.public_key()).unwrap(), k.ours.public_key());
    assert_eq!(k.ruma.version(), k.ours.version());
}

#[test]
fn fixed_examples_agree() {
    let k = keys();
    for v in [
        json!({}),
        json!({"one": 1, "two": "Two"}),
        json!({"日": 1, "本": 2, "😀": 3, "\u{fffd}": 4, "": 5}),
        json!({"a": "\u{0}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\"\\/\u{7f}\u{2028}"}),
        json!({"n": [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, -1], "unsigned": {"age": 1}}),
        json!({"x": {"signatures": {"y": 1}, "unsigned": [null, true, false]}}),
    ] {
        let ours = to_canonical_string(&v).unwrap();
        assert_eq!(ours, to_ruma(&v).to_string());
        let mut signed = to_ruma_object(&v);
        ruma_signatures::sign_json(SERVER, &k.ruma, &mut signed).unwrap();
        assert_eq!(ruma_signature(&signed, SERVER), signature_of(&v, &k.ours).unwrap(), "{ours}");
    }
}

#[test]
fn both_reject_what_canonical_json_forbids() {
    for v in [
        json!(MAX_SAFE_INTEGER + 1),
        json!(-MAX_SAFE_INTEGER - 1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(1.0),
        json!(-0.0),
        json!({"a": [1, {"b": 0.5}]}),
    ] {
        assert!(to_canonical_string(&v).is_err(), "ours accepted {v}");
        assert!(CanonicalJsonValue::try_from(v.clone()).is_err(), "ruma accepted {v}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any value, not only objects, encodes identically.
    #[test]
    fn canonical_values_agree(v in value()) {
        prop_assert_eq!(to_canonical_string(&v).unwrap(), to_ruma(&v).to_string());
    }

    /// Integers just outside the range are refused by both; inside, both write the same digits.
    #[test]
    fn integer_range_agrees(n in prop_oneof![any::<i64>(), (MAX_SAFE_INTEGER - 3)..(MAX_SAFE_INTEGER + 3),
                                              (-MAX_SAFE_INTEGER - 3)..(-MAX_SAFE_INTEGER + 3)]) {
        let v = json!({ "n": n });
        match (to_canonical_string(&v), CanonicalJsonValue::try_from(v.clone())) {
            (Ok(ours), Ok(theirs)) => prop_assert_eq!(ours, theirs.to_string()),
            (Err(Error::IntegerOutOfRange), Err(_)) => prop_assert!(n.unsigned_abs() > MAX_SAFE_INTEGER as u64),
            (ours, theirs) => prop_assert!(false, "n = {n}: ours {ours:?}, ruma {theirs:?}"),
        }
    }

    /// Canonical form, signing bytes, signature and signed object all agree, and each side
    /// verifies the other's signature. Half the cases already carry another server's signature.
    #[test]
    fn signing_agrees(v in object(), pre_signed in any::<bool>()) {
        let k = keys();
        let mut v = v;
        if pre_signed {
            sign_json(&mut v, OTHER_SERVER, &k.other).unwrap();
        }
        let ruma_object = to_ruma_object(&v);

        let canonical = to_canonical_string(&v).unwrap();
        prop_assert_eq!(&canonical, &CanonicalJsonValue::Object(ruma_object.clone()).to_string());
        let ours_for_signing = String::from_utf8(signing_bytes(&v).unwrap()).unwrap();
        prop_assert_eq!(&ours_for_signing, &to_canonical_json_string_for_signing(&ruma_object).unwrap());

        // Same seed, same bytes: the same (deterministic) signature and the same signed object.
        let mut ours_signed = v.clone();
        sign_json(&mut ours_signed, SERVER, &k.ours).unwrap();
        let mut ruma_signed = ruma_object;
        ruma_signatures::sign_json(SERVER, &k.ruma, &mut ruma_signed).unwrap();
        prop_assert_eq!(signature_of(&v, &k.ours).unwrap(), ruma_signature(&ruma_signed, SERVER));
        let ruma_signed = from_ruma_object(ruma_signed);
        prop_assert_eq!(to_canonical_string(&ours_signed).unwrap(), to_canonical_string(&ruma_signed).unwrap());

        // Ruma verifies ours (every server's signature in the object), and we verify ruma's.
        ruma_signatures::verify_json(&k.ruma_public_keys, &to_ruma_object(&ours_signed))
            .map_err(|e| TestCaseError::fail(format!("ruma rejected our signature: {e} on {canonical}")))?;
        verify_json(&ruma_signed, SERVER, k.ours.key_id(), &k.ours.public_key()).unwrap();
        if pre_signed {
            verify_json(&ruma_signed, OTHER_SERVER, k.other.key_id(), &k.other.public_key()).unwrap();
        }

        // A change to a covered member makes ruma reject our signature; `unsigned` is not covered.
        let mut tampered = ours_signed.clone();
        tampered.as_object_mut().unwrap().insert("tampered".into(), Value::Bool(true));
        prop_assert!(ruma_signatures::verify_json(&k.ruma_public_keys, &to_ruma_object(&tampered)).is_err());
        let mut unsigned_changed = ours_signed;
        unsigned_changed.as_object_mut().unwrap().insert("unsigned".into(), json!({"changed": [1]}));
        prop_assert!(ruma_signatures::verify_json(&k.ruma_public_keys, &to_ruma_object(&unsigned_changed)).is_ok());
    }
}
