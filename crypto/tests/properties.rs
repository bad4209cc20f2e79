//! Property tests: canonical round trips, tamper evidence, redaction, and a bounded fuzz of the
//! strict parser.

use crypto::{
    EventDraft, MAX_SAFE_INTEGER, ServerKey, build_and_sign_event, check_content_hash, event_id, parse_canonical,
    parse_strict, redact, sign_json, to_canonical_bytes, to_canonical_string, verify_event, verify_json,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER, -1000i64..1000, Just(MAX_SAFE_INTEGER), Just(-MAX_SAFE_INTEGER),]
}

/// Strings from all of Unicode, weighted towards the interesting parts.
fn string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        any::<char>(),
        prop::char::range('\0', '\u{1f}'),
        prop::sample::select(vec!['"', '\\', '/', 'a', 'A', '\u{7f}', '\u{2028}', '\u{fffd}', '😀']),
        prop::char::range('\u{10000}', '\u{10ffff}'),
    ];
    prop::collection::vec(ch, 0..8).prop_map(|v| v.into_iter().collect())
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
            prop::collection::btree_map(string(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A top-level object with no `unsigned` (which signatures do not cover by design) and no
/// `signatures`.
fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(string(), value(), 0..6).prop_map(|m| {
        let mut m: Map<String, Value> = m.into_iter().collect();
        m.remove("unsigned");
        m.remove("signatures");
        Value::Object(m)
    })
}

fn event() -> impl Strategy<Value = Value> {
    let event_type = prop::sample::select(vec![
        "swp.room.create",
        "swp.room.member",
        "swp.room.join_rules",
        "swp.room.power_levels",
        "swp.room.history_visibility",
        "swp.room.redaction",
        "swp.room.federation",
        "swp.room.server_acl",
        "swp.room.message",
        "swp.room.topic",
        "x",
    ]);
    let content_key = prop::sample::select(vec![
        "membership",
        "join_rule",
        "allow",
        "deny",
        "enabled",
        "ban",
        "events",
        "users",
        "redacts",
        "history_visibility",
        "body",
        "displayname",
        "reason",
        "creator",
    ]);
    let content = prop::collection::btree_map(content_key, value(), 0..6);
    let extra = prop::collection::btree_map(
        prop::sample::select(vec!["unsigned", "junk", "event_id", "hashes", "origin_server_ts"]),
        value(),
        0..3,
    );
    (event_type, content, extra, int(), any::<bool>()).prop_map(|(event_type, content, extra, depth, state)| {
        let mut m = Map::new();
        for (k, v) in extra {
            m.insert(k.to_owned(), v);
        }
        let content: Map<String, Value> = content.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        m.insert("event_uuid".into(), "u-1".into());
        m.insert("room_id".into(), "room-1".into());
        m.insert("sender".into(), "@a:alpha.test".into());
        m.insert("origin".into(), "alpha.test".into());
        m.insert("origin_ts".into(), 1_778_939_467.into());
        m.insert("event_type".into(), event_type.into());
        m.insert("content".into(), Value::Object(content));
        m.insert("prev_events".into(), Value::Array(vec!["evt-a".into()]));
        m.insert("auth_events".into(), Value::Array(vec![]));
        m.insert("depth".into(), depth.into());
        if state {
            m.insert("state_key".into(), "".into());
        }
        Value::Object(m)
    })
}

/// The members of a new event, as a server builds one: strings from all of Unicode, integers
/// over the whole range, any content, an optional state key.
#[allow(clippy::type_complexity)]
fn draft_members() -> impl Strategy<Value = (Value, Vec<String>, Vec<String>, Option<String>)> {
    let ids = || prop::collection::vec(string(), 0..4);
    (event(), (string(), string(), string(), string()), (int(), int()), ids(), ids(), prop::option::of(string()))
        .prop_map(|(base, (uuid, room, sender, origin), (ts, depth), prev, auth, state_key)| {
            let mut m = Map::new();
            m.insert("event_type".into(), base["event_type"].clone());
            m.insert("content".into(), base["content"].clone());
            m.insert("event_uuid".into(), uuid.into());
            m.insert("room_id".into(), room.into());
            m.insert("sender".into(), sender.into());
            m.insert("origin".into(), origin.into());
            m.insert("origin_ts".into(), ts.into());
            m.insert("depth".into(), depth.into());
            m.insert("prev_events".into(), prev.iter().map(|s| Value::from(s.as_str())).collect());
            m.insert("auth_events".into(), auth.iter().map(|s| Value::from(s.as_str())).collect());
            if let Some(k) = &state_key {
                m.insert("state_key".into(), k.as_str().into());
            }
            (Value::Object(m), prev, auth, state_key)
        })
}

fn key() -> ServerKey {
    ServerKey::from_seed("1", &[5; 32]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn canonical_round_trip(v in value()) {
        let canonical = to_canonical_bytes(&v).unwrap();
        let parsed = parse_canonical(&canonical).unwrap();
        prop_assert_eq!(&parsed, &v);
        prop_assert_eq!(to_canonical_bytes(&parsed).unwrap(), canonical.clone());
        // Any valid rendering parses to the same value and canonicalises the same.
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        prop_assert_eq!(parse_strict(&pretty).unwrap(), v.clone());
        let ascii = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(to_canonical_bytes(&parse_strict(ascii.as_bytes()).unwrap()).unwrap(), canonical);
    }

    /// A one-bit change of a signed object's canonical bytes fails canonical parsing or
    /// verification. Under the lenient parser it may still verify only if it did not change the
    /// value: `\u001a` → `\u001A` spells the same string, and signatures cover values (their
    /// canonical form), not spellings.
    #[test]
    fn one_bit_flip_breaks_signature(obj in object(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut signed = obj;
        sign_json(&mut signed, "alpha.test", &key()).unwrap();
        let mut bytes = to_canonical_bytes(&signed).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(!tamper_verifies(&bytes, &signed), "bit {} of byte {} went unnoticed: {}",
            bit, i, String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn redaction_is_idempotent_and_keeps_the_id(e in event()) {
        let r = redact(&e).unwrap();
        prop_assert_eq!(redact(&r).unwrap(), r.clone());
        prop_assert_eq!(event_id(&r).unwrap(), event_id(&e).unwrap());
        prop_assert!(r.get("unsigned").is_none());
    }

    /// An event drafted from pre-encoded members is, byte for byte, the canonical JSON of the
    /// same event built as a `Value`: same hash, same id, same signature.
    #[test]
    fn drafted_events_equal_built_events((e, prev, auth, state_key) in draft_members()) {
        let key = key();
        let content_json = to_canonical_string(&e["content"]).unwrap();
        let s = |k: &str| e[k].as_str().unwrap();
        let mut draft = EventDraft::new(s("event_type"), &e["content"], &content_json).unwrap();
        draft.string("event_uuid", s("event_uuid")).string("room_id", s("room_id")).string("sender", s("sender"))
            .string("origin", s("origin")).strings("prev_events", &prev).strings("auth_events", &auth);
        draft.integer("origin_ts", e["origin_ts"].as_i64().unwrap()).unwrap();
        draft.integer("depth", e["depth"].as_i64().unwrap()).unwrap();
        if let Some(k) = &state_key {
            draft.string("state_key", k);
        }
        let (drafted_id, drafted) = draft.prepare().unwrap().sign("alpha.test", &key);
        let (id, built) = build_and_sign_event(e, "alpha.test", &key).unwrap();
        prop_assert_eq!(drafted_id, id);
        prop_assert_eq!(drafted, to_canonical_string(&built).unwrap());
    }

    #[test]
    fn built_events_verify_full_and_redacted(e in event()) {
        let key = key();
        let (id, signed) = build_and_sign_event(e, "alpha.test", &key).unwrap();
        prop_assert!(check_content_hash(&signed));
        verify_event(&signed, "alpha.test", "ed25519:1", &key.public_key()).unwrap();
        let r = redact(&signed).unwrap();
        verify_event(&r, "alpha.test", "ed25519:1", &key.public_key()).unwrap();
        prop_assert_eq!(event_id(&signed).unwrap(), id.clone());
        prop_assert_eq!(event_id(&r).unwrap(), id);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_strict(&bytes);
        let _ = parse_canonical(&bytes);
    }

    #[test]
    fn parser_agrees_with_serde_json_on_mutated_json(
        v in value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        for (pos, byte, op) in edits {
            let i = pos.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => {}
            }
        }
        // Whatever the strict parser accepts is JSON that serde_json reads the same way, and
        // re-encodes canonically to bytes the strict parser accepts as canonical.
        if let Ok(ours) = parse_strict(&bytes) {
            let theirs: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&ours, &theirs);
            let canonical = to_canonical_string(&ours).unwrap();
            prop_assert_eq!(parse_canonical(canonical.as_bytes()).unwrap(), ours);
        }
    }
}

/// `true` if tampered canonical bytes pass as a validly signed object: either as canonical
/// JSON at all, or (leniently parsed) as a *different* value than the one signed.
fn tamper_verifies(bytes: &[u8], original: &Value) -> bool {
    let verifies = |v: &Value| verify_json(v, "alpha.test", "ed25519:1", &key().public_key()).is_ok();
    if let Ok(v) = parse_canonical(bytes) {
        return verifies(&v);
    }
    parse_strict(bytes).is_ok_and(|v| &v != original && verifies(&v))
}

/// Every single-bit change of a small signed object, exhaustively: including the low bits of
/// the signature's last base64 character, which a lenient decoder would ignore, and the hex
/// digits of a `\u00XX` escape, whose case a lenient parser ignores.
#[test]
fn every_bit_flip_of_a_signed_object_is_caught() {
    let mut signed = serde_json::json!({"a": [1, "é\u{1a}"], "b": null});
    sign_json(&mut signed, "alpha.test", &key()).unwrap();
    let bytes = to_canonical_bytes(&signed).unwrap();
    let mut parsed_ok = 0;
    let mut same_value = 0;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(
                !tamper_verifies(&b, &signed),
                "bit {bit} of byte {i} went unnoticed: {}",
                String::from_utf8_lossy(&b)
            );
            if let Ok(v) = parse_strict(&b) {
                parsed_ok += 1;
                if v == signed {
                    same_value += 1;
                    assert!(parse_canonical(&b).is_err());
                }
            }
        }
    }
    assert!(parsed_ok > 100, "only {parsed_ok} flips parsed");
    assert_eq!(same_value, 1, "only \\u001a -> \\u001A should keep the value");
}
