//! Fuzz-style property tests of event handling on untrusted input.
//!
//! 1. A valid signed event's canonical bytes are mutated (bit flips, byte insertions and
//!    deletions, truncation, duplicate keys spliced in, huge and non-integer numbers, deep
//!    nesting) and fed through `parse_strict` and, when that accepts them, through `event_id`,
//!    `redact`, `check_content_hash` and `verify_event`. Nothing may panic, and the verdicts must
//!    be exact: the signature verifies if and only if the signed part (the redacted event without
//!    `signatures` and `unsigned`, plus our signature's bytes) is unchanged, and the content hash
//!    checks if and only if the hashed part (the event without `signatures`, `hashes` and
//!    `unsigned`, plus the claimed hash's bytes) is unchanged. So any mutation that changes the
//!    parsed value fails verification, except changes confined to what nothing covers by design:
//!    `unsigned`, other servers' signatures, and another spelling of the same signature bytes.
//! 2. Random values shaped like events (fields missing, of the wrong type, out of range, floats,
//!    too deep, not an object at all) through `event_id`, `redact`, `verify_event`,
//!    `check_content_hash` and `build_and_sign_event`: errors, never panics; and whatever
//!    `build_and_sign_event` accepts verifies.
//!
//! Bounded to a few seconds in a debug build. More cases: `PROPTEST_CASES=100000`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crypto::{
    PublicKey, ServerKey, b64, build_and_sign_event, check_content_hash, check_value, content_hash, event_id,
    parse_canonical, parse_strict, redact, reference_hash, to_canonical_bytes, verify_event,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const ORIGIN: &str = "alpha.test";
const KEY_ID: &str = "ed25519:1";

struct Fixture {
    key: ServerKey,
    public: PublicKey,
    /// Signed events (a message and a membership event, each with `unsigned`) and their
    /// canonical bytes and ids.
    events: Vec<(Value, Vec<u8>, String)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = ServerKey::from_seed("1", &[11; 32]).unwrap();
        let events = [message(), member()]
            .into_iter()
            .map(|e| {
                let (id, signed) = build_and_sign_event(e, ORIGIN, &key).unwrap();
                let bytes = to_canonical_bytes(&signed).unwrap();
                (signed, bytes, id)
            })
            .collect();
        Fixture { public: key.public_key(), key, events }
    })
}

fn message() -> Value {
    json!({
        "event_uuid": "01JD3K7Q9X2M4N6P8R0T2V4W6Y", "room_id": "room-01JD3K", "sender": "@alice:alpha.test",
        "origin": ORIGIN, "origin_ts": 1_778_939_467, "event_type": "swp.room.message",
        "content": {"msgtype": "text", "body": "@bob:beta.test café \"ok\"\n\\ 👍 \u{1a}"},
        "prev_events": ["evt-3q2Rk9vL0xW8aYc1mN5bT7dF4gH6jK2lP0oI9uE3rS8"],
        "auth_events": ["evt-a", "evt-b", "evt-c", "evt-d"], "depth": 42, "unsigned": {"age": 7},
    })
}

fn member() -> Value {
    json!({
        "event_uuid": "01JD3K7Q9X2M4N6P8R0T2V4W6Z", "room_id": "room-01JD3K", "sender": "@bob:beta.test",
        "origin": ORIGIN, "origin_ts": 1_778_939_468, "event_type": "swp.room.member", "state_key": "@bob:beta.test",
        "content": {"membership": "join", "displayname": "Bob ☃"},
        "prev_events": ["evt-x", "evt-y"], "auth_events": ["evt-a", "evt-b", "evt-c", "evt-d"], "depth": 43,
        "unsigned": {"sent_by": "@bot:alpha.test"},
    })
}

// ---------------------------------------------------------------------------------------------
// Byte mutations

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Insert(Index, u8),
    Delete(Index, usize),
    Truncate(Index),
    /// `"key":value,` spliced in right after a `{`.
    DuplicateKey(Index, &'static str, &'static str),
    /// A number token replaced (huge, out of range, float, `-0`, leading zeros, …).
    Number(Index, &'static str),
    /// The value after a `:` wrapped in this many arrays (`false`) or objects (`true`).
    Nest(Index, usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(b"{}[]\":,\\-0123456789 etnu".to_vec())];
    let key = prop::sample::select(vec![
        "event_uuid",
        "room_id",
        "sender",
        "origin",
        "origin_ts",
        "event_type",
        "content",
        "state_key",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
        "unsigned",
        "membership",
        "displayname",
        "body",
        "msgtype",
        "sha256",
        "alpha.test",
        "ed25519:1",
        "age",
        "d\\u0065pth",
        "\\u0063ontent",
        "x",
    ]);
    let value = prop::sample::select(vec![
        "1",
        "-1",
        "0",
        "\"x\"",
        "\"alpha.test\"",
        "null",
        "true",
        "{}",
        "[]",
        "{\"sha256\":\"AAAA\"}",
        "\"swp.room.create\"",
        "9007199254740992",
        "[\"evt-a\"]",
        "{\"ed25519:1\":\"AAAA\"}",
    ]);
    let number = prop::sample::select(vec![
        "9007199254740991",
        "-9007199254740991",
        "9007199254740992",
        "-9007199254740992",
        "18446744073709551616",
        "-9223372036854775809",
        "99999999999999999999999999999999999999999",
        "-0",
        "0",
        "00",
        "01",
        "1.0",
        "1e3",
        "1E400",
        "-",
        "41",
        "43",
        "1778939466",
    ]);
    let depth = prop_oneof![1usize..4, 120usize..140, Just(50_000usize)];
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), key, value).prop_map(|(i, k, v)| Mutation::DuplicateKey(i, k, v)),
        2 => (any::<Index>(), number).prop_map(|(i, n)| Mutation::Number(i, n)),
        1 => (any::<Index>(), depth, any::<bool>()).prop_map(|(i, d, o)| Mutation::Nest(i, d, o)),
    ]
}

/// Where things are in (roughly) JSON bytes, outside strings.
#[derive(Default)]
struct Scan {
    after_open_brace: Vec<usize>,
    after_colon: Vec<usize>,
    numbers: Vec<(usize, usize)>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut s = Scan::default();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' => s.after_open_brace.push(i + 1),
                b':' => s.after_colon.push(i + 1),
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i + 1 < bytes.len() && matches!(bytes[i + 1], b'-' | b'0'..=b'9') {
                        i += 1;
                    }
                    s.numbers.push((start, i + 1));
                }
                _ => {}
            }
        }
        i += 1;
    }
    s
}

/// The end of the value starting at `start` (exclusive), string-aware.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut i) = (0usize, false, start);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => {
                    in_string = false;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => depth += 1,
                b']' | b'}' if depth == 0 => return Some(i),
                b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                b',' if depth == 0 => return Some(i),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn pick<T: Copy>(items: &[T], i: &Index) -> Option<T> {
    (!items.is_empty()).then(|| items[i.index(items.len())])
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
        Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
        Mutation::Delete(i, n) if len > 0 => {
            let start = i.index(len);
            bytes.drain(start..(start + n).min(len));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Mutation::DuplicateKey(i, key, value) => {
            if let Some(at) = pick(&scan(bytes).after_open_brace, i) {
                let splice = format!("\"{key}\":{value},");
                bytes.splice(at..at, splice.into_bytes());
            }
        }
        Mutation::Number(i, number) => {
            if let Some((start, end)) = pick(&scan(bytes).numbers, i) {
                bytes.splice(start..end, number.bytes());
            }
        }
        Mutation::Nest(i, depth, object) => {
            let Some(start) = pick(&scan(bytes).after_colon, i) else { return };
            let Some(end) = value_end(bytes, start) else { return };
            let (open, close) = if *object { ("{\"a\":", "}") } else { ("[", "]") };
            bytes.splice(end..end, close.repeat(*depth).into_bytes());
            bytes.splice(start..start, open.repeat(*depth).into_bytes());
        }
        _ => {}
    }
}

/// `object` without these top-level keys (`None` if it is not an object).
fn without(object: &Value, keys: &[&str]) -> Option<Value> {
    let mut map = object.as_object()?.clone();
    for key in keys {
        map.remove(*key);
    }
    Some(Value::Object(map))
}

/// What our signature covers, and the signature's bytes.
fn signed_part(event: &Value) -> Option<(Value, Option<Vec<u8>>)> {
    let redacted = redact(event).ok()?;
    let signature = redacted
        .pointer(&format!("/signatures/{ORIGIN}/{KEY_ID}"))
        .and_then(Value::as_str)
        .and_then(|s| b64::decode(s).ok());
    Some((without(&redacted, &["signatures", "unsigned"])?, signature))
}

/// What the content hash covers, and the claimed hash's bytes.
fn hashed_part(event: &Value) -> Option<(Value, Option<Vec<u8>>)> {
    let claimed = event.pointer("/hashes/sha256").and_then(Value::as_str).and_then(|s| b64::decode(s).ok());
    Some((without(event, &["signatures", "hashes", "unsigned"])?, claimed))
}

#[derive(Default)]
struct Stats {
    cases: AtomicUsize,
    parsed: AtomicUsize,
    changed: AtomicUsize,
    bad_signature: AtomicUsize,
    bad_hash_only: AtomicUsize,
    changed_but_uncovered: AtomicUsize,
}

fn check_mutated(bytes: &[u8], original: &Value, original_id: &str, stats: &Stats) -> Result<(), TestCaseError> {
    let fx = fixture();
    stats.cases.fetch_add(1, Relaxed);
    let canonical = parse_canonical(bytes);
    let Ok(event) = parse_strict(bytes) else {
        prop_assert!(canonical.is_err());
        return Ok(());
    };
    stats.parsed.fetch_add(1, Relaxed);
    // Whatever the strict parser accepts encodes canonically and round trips.
    let reencoded = to_canonical_bytes(&event).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
    prop_assert_eq!(parse_canonical(&reencoded), Ok(event.clone()));
    if let Ok(c) = &canonical {
        prop_assert_eq!(c, &event);
    }

    let verified = verify_event(&event, ORIGIN, KEY_ID, &fx.public);
    let hash_ok = check_content_hash(&event);
    let id = event_id(&event);
    let _ = reference_hash(&event);
    let _ = content_hash(&event);
    match redact(&event) {
        Err(_) => {
            prop_assert!(verified.is_err());
            prop_assert!(id.is_err());
        }
        Ok(redacted) => {
            prop_assert_eq!(redact(&redacted), Ok(redacted.clone()));
            prop_assert_eq!(&event_id(&redacted), &id);
            prop_assert_eq!(
                verify_event(&redacted, ORIGIN, KEY_ID, &fx.public).is_ok(),
                verified.is_ok(),
                "a redacted event verifies exactly when the full one does"
            );
        }
    }

    let same_signed_part = signed_part(&event) == signed_part(original);
    let same_hashed_part = hashed_part(&event) == hashed_part(original);
    prop_assert_eq!(verified.is_ok(), same_signed_part, "signature verdict {:?}", verified);
    prop_assert_eq!(hash_ok, same_hashed_part, "content hash verdict");
    // The event id is the reference hash of the signed part (signature aside).
    let same_reference = signed_part(&event).map(|p| p.0) == signed_part(original).map(|p| p.0);
    prop_assert_eq!(id.as_deref() == Ok(original_id), same_reference, "event id");

    if &event != original {
        stats.changed.fetch_add(1, Relaxed);
        if verified.is_err() {
            stats.bad_signature.fetch_add(1, Relaxed);
        } else if !hash_ok {
            stats.bad_hash_only.fetch_add(1, Relaxed);
        } else {
            // Passes both checks although the value changed: only acceptable where nothing
            // covers the change by design.
            stats.changed_but_uncovered.fetch_add(1, Relaxed);
            let a = without(&event, &["unsigned", "signatures"]);
            let b = without(original, &["unsigned", "signatures"]);
            prop_assert_eq!(a, b, "a covered change was accepted");
        }
    }
    Ok(())
}

#[test]
fn mutated_signed_events_never_panic_and_never_verify_when_changed() {
    let fx = fixture();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let stats = Stats::default();
    let strategy = (0..fx.events.len(), prop::collection::vec(mutation(), 1..4));
    runner
        .run(&strategy, |(which, mutations)| {
            let (original, bytes, id) = &fx.events[which];
            let mut bytes = bytes.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            check_mutated(&bytes, original, id, &stats)
        })
        .unwrap();
    let (n, parsed, changed) = (stats.cases.load(Relaxed), stats.parsed.load(Relaxed), stats.changed.load(Relaxed));
    eprintln!(
        "{n} mutated events: {parsed} parsed, {changed} parsed to a changed value ({} bad signature, {} bad content \
         hash only, {} changed only unsigned/signatures and verified)",
        stats.bad_signature.load(Relaxed),
        stats.bad_hash_only.load(Relaxed),
        stats.changed_but_uncovered.load(Relaxed),
    );
    // Not vacuous: a good share of mutants get past the parser and exercise the checks.
    assert!(parsed * 10 >= n, "only {parsed} of {n} mutants parsed");
    assert!(stats.bad_signature.load(Relaxed) * 20 >= n && stats.bad_hash_only.load(Relaxed) > 0);
}

/// Every single-byte deletion and every duplicate top-level key of each fixture event,
/// exhaustively.
#[test]
fn every_deletion_and_duplicate_top_level_key_is_caught() {
    let fx = fixture();
    let stats = Stats::default();
    for (original, bytes, id) in &fx.events {
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b.remove(i);
            check_mutated(&b, original, id, &stats).unwrap();
        }
        for key in original.as_object().unwrap().keys() {
            let mut b = bytes.clone();
            b.splice(1..1, format!("\"{key}\":1,").into_bytes());
            assert!(matches!(parse_strict(&b), Err(crypto::Error::DuplicateKey(_))), "{key}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Event-shaped values

/// Any JSON value, including what the strict parser never produces: floats, integers out of
/// range, and nesting past the limit.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::collection::vec(
            prop::sample::select(vec!['a', 'z', '@', ':', '.', ' ', '\0', '\u{1f}', 'é', '😀', '"', '\\']),
            0..12
        )
        .prop_map(|chars| Value::String(chars.into_iter().collect())),
        prop::sample::select(vec![
            "",
            "swp.room.create",
            "swp.room.member",
            "swp.room.power_levels",
            "alpha.test",
            "ed25519:1",
            "evt-x",
            "join"
        ])
        .prop_map(Value::from),
        (120usize..140).prop_map(|depth| (0..depth).fold(json!(1), |v, _| json!([v]))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let key =
            prop::sample::select(vec!["alpha.test", "ed25519:1", "sha256", "membership", "body", "users", "a", ""]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Replace(Value),
}

fn event_shaped() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "event_uuid",
        "room_id",
        "sender",
        "origin",
        "origin_ts",
        "event_type",
        "content",
        "state_key",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
        "unsigned",
        "junk",
    ]);
    let edit = prop_oneof![Just(Edit::Remove), any_json().prop_map(Edit::Replace)];
    let content_edit = prop::collection::vec(
        (prop::sample::select(vec!["membership", "displayname", "body", "msgtype", "users"]), any_json()),
        0..3,
    );
    let shaped = (0..2usize, any::<bool>(), prop::collection::vec((field, edit), 0..6), content_edit).prop_map(
        |(which, signed, edits, content_edits)| {
            let fx = fixture();
            let mut event = if signed { fx.events[which].0.clone() } else { [message(), member()][which].clone() };
            let map = event.as_object_mut().unwrap();
            if let Some(Value::Object(content)) = map.get_mut("content") {
                for (k, v) in content_edits {
                    content.insert(k.to_owned(), v);
                }
            }
            for (field, edit) in edits {
                match edit {
                    Edit::Remove => map.remove(field),
                    Edit::Replace(v) => map.insert(field.to_owned(), v),
                };
            }
            event
        },
    );
    prop_oneof![9 => shaped, 1 => any_json()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn event_shaped_values_give_errors_not_panics(
        event in event_shaped(),
        server in prop::sample::select(vec![ORIGIN, "beta.test", ""]),
        key_id in prop::sample::select(vec![KEY_ID, "ed25519:2", "ed25519:", "rsa:1", ""]),
    ) {
        let fx = fixture();
        let redacted = redact(&event);
        let id = event_id(&event);
        match &redacted {
            Err(_) => prop_assert!(id.is_err()),
            Ok(r) => {
                let covered = without(r, &["signatures", "unsigned"]).unwrap();
                prop_assert_eq!(id.is_ok(), to_canonical_bytes(&covered).is_ok());
            }
        }
        let _ = reference_hash(&event);
        let _ = content_hash(&event);
        let _ = check_content_hash(&event);
        let verified = verify_event(&event, server, key_id, &fx.public);
        if redacted.is_err() {
            prop_assert!(verified.is_err());
        }
        // `build_and_sign_event` checks what it hashes and signs, not `unsigned` or other
        // servers' signatures: those may still hold floats or out-of-range integers, and then
        // the wire form fails later, in `to_canonical_bytes`.
        let uncovered = event.as_object().map(|m| {
            m.iter().filter(|(k, _)| ["signatures", "unsigned"].contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone()))
        });
        let uncovered_encodable = uncovered.is_none_or(|u| check_value(&Value::Object(u.collect())).is_ok());
        // Whatever can be built verifies, full and redacted, and keeps its id.
        if let Ok((id, signed)) = build_and_sign_event(event, server, &fx.key) {
            prop_assert!(check_content_hash(&signed));
            verify_event(&signed, server, KEY_ID, &fx.public).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let redacted = redact(&signed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            verify_event(&redacted, server, KEY_ID, &fx.public).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(event_id(&signed), Ok(id.clone()));
            prop_assert_eq!(event_id(&redacted), Ok(id.clone()));
            // And its wire form goes through the strict parser unchanged.
            match to_canonical_bytes(&signed) {
                Ok(bytes) => prop_assert_eq!(parse_canonical(&bytes), Ok(signed.clone())),
                Err(_) => prop_assert!(!uncovered_encodable),
            }
        }
    }
}

#[test]
fn wrong_type_for_every_field_is_an_error_or_harmless() {
    let fx = fixture();
    let wrong = [json!(null), json!(true), json!(1), json!(1.5), json!(u64::MAX), json!("s"), json!([]), json!({})];
    for (signed, _, id) in &fx.events {
        for field in signed.as_object().unwrap().keys() {
            for w in &wrong {
                let mut event = signed.clone();
                event[field] = w.clone();
                let verified = verify_event(&event, ORIGIN, KEY_ID, &fx.public).is_ok();
                let hash_ok = check_content_hash(&event);
                // Only `unsigned` is covered by nothing; `signatures` of the wrong type loses
                // our signature.
                assert_eq!(verified && hash_ok, field == "unsigned", "{field} = {w}");
                if event_id(&event).as_deref() == Ok(id) {
                    assert!(
                        ["unsigned", "signatures"].contains(&field.as_str())
                            || (field == "content" && signed["event_type"] == "swp.room.message" && w == &json!({})),
                        "{field} = {w} kept the id"
                    );
                }
                let _ = build_and_sign_event(event, ORIGIN, &fx.key);
            }
        }
    }
}
