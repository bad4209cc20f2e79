//! Benchmarks of the event pipeline on a typical message event (~600 bytes in its signed wire
//! form), against raw ed25519-dalek signing and verification of the same canonical bytes.
//!
//! Run: `cargo bench -p crypto --bench event -- --warm-up-time 1 --measurement-time 3`.
//! The budget: `verify_event` within 1.5× the raw ed25519 verify.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crypto::{
    ServerKey, build_and_sign_event, check_content_hash, content_hash, event_id, parse_strict, signing_bytes,
    to_canonical_bytes, verify_event,
};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{Value, json};

const ORIGIN: &str = "alpha.test";

/// A typical `swp.room.message`: a sentence of chat with a mention, a few non-ASCII characters,
/// one prev event and the usual four auth events.
fn unsigned_event() -> Value {
    json!({
        "event_uuid": "01JD3K7Q9X2M4N6P8R0T2V4W6Y",
        "room_id": "room-01JD3K5ZC4H8",
        "sender": "@alice:alpha.test",
        "origin": ORIGIN,
        "origin_ts": 1_778_939_467,
        "event_type": "swp.room.message",
        "content": {
            "msgtype": "text",
            "body": "@bob:beta.test café notes are up — check §3? 👍",
        },
        "prev_events": ["evt-3q2Rk9vL0xW8aYc1mN5bT7dF4gH6jK2lP0oI9uE3rS8"],
        "auth_events": [
            "evt-Kx1bN7cV3mZ9aQ2wE5rT8yU4iO6pL0kJ3hG7fD1sA2x",
            "evt-Pq8wE2rT5yU9iO1pA4sD7fG3hJ6kL0zX2cV5bN8mQ1w",
            "evt-Zm3nB6vC9xZ2aS5dF8gH1jK4lQ7wE0rT3yU6iO9pA2s",
            "evt-Hj7kL0zX3cV6bN9mQ2wE5rT8yU1iO4pA7sD0fG3hJ6k",
        ],
        "depth": 42,
    })
}

fn benches(c: &mut Criterion) {
    let key = ServerKey::from_seed("1", &[7; 32]).expect("key");
    let public = key.public_key();
    let (id, signed) = build_and_sign_event(unsigned_event(), ORIGIN, &key).expect("build");
    let wire = to_canonical_bytes(&signed).expect("canonical");
    // What the signature covers: the redacted event without `signatures` and `unsigned`.
    let redacted_signed_bytes = signing_bytes(&crypto::redact(&signed).expect("redact")).expect("bytes");
    verify_event(&signed, ORIGIN, key.key_id(), &public).expect("verifies");
    assert!(check_content_hash(&signed));
    assert_eq!(event_id(&signed).expect("id"), id);
    eprintln!(
        "event: {} bytes canonical (signed wire form), {} bytes signed by ed25519 (redacted form)",
        wire.len(),
        redacted_signed_bytes.len()
    );

    let dalek_signing = SigningKey::from_bytes(&[7; 32]);
    let dalek_verifying: VerifyingKey = dalek_signing.verifying_key();
    let raw_signature: Signature = dalek_signing.sign(&wire);
    let redacted_signature: Signature = dalek_signing.sign(&redacted_signed_bytes);

    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("to_canonical_bytes", |b| b.iter(|| to_canonical_bytes(black_box(&signed)).unwrap()));
    g.bench_function("content_hash", |b| b.iter(|| content_hash(black_box(&signed)).unwrap()));
    g.bench_function("check_content_hash", |b| b.iter(|| check_content_hash(black_box(&signed))));
    g.bench_function("event_id", |b| b.iter(|| event_id(black_box(&signed)).unwrap()));
    g.bench_function("parse_strict", |b| b.iter(|| parse_strict(black_box(&wire)).unwrap()));
    g.bench_function("build_and_sign_event", |b| {
        b.iter_batched(
            unsigned_event,
            |event| build_and_sign_event(event, ORIGIN, black_box(&key)).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    // What a server does per new event: the Value path (build the tree, then encode it for
    // storage) against the draft path with the content encoded beforehand.
    let event = unsigned_event();
    let content_json = crypto::to_canonical_string(&event["content"]).expect("content");
    g.bench_function("build_sign_encode_value", |b| {
        b.iter_batched(
            unsigned_event,
            |event| {
                let (id, signed) = build_and_sign_event(event, ORIGIN, black_box(&key)).unwrap();
                (id, crypto::to_canonical_string(&signed).unwrap())
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("build_sign_encode_draft", |b| {
        b.iter(|| {
            let s = |k: &str| event[k].as_str().unwrap();
            let ids = |k: &str| event[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>();
            let mut d = crypto::EventDraft::new(s("event_type"), &event["content"], &content_json).unwrap();
            d.string("event_uuid", s("event_uuid")).string("room_id", s("room_id")).string("sender", s("sender"));
            d.string("origin", ORIGIN).strings("prev_events", &ids("prev_events"));
            d.strings("auth_events", &ids("auth_events"));
            d.integer("origin_ts", 1_778_939_467).unwrap().integer("depth", 42).unwrap();
            d.prepare().unwrap().sign(ORIGIN, black_box(&key))
        })
    });
    g.bench_function("verify_event", |b| {
        b.iter(|| verify_event(black_box(&signed), ORIGIN, key.key_id(), black_box(&public)).unwrap())
    });
    g.bench_function("parse_strict+verify_event", |b| {
        b.iter(|| {
            let event = parse_strict(black_box(&wire)).unwrap();
            verify_event(&event, ORIGIN, key.key_id(), &public).unwrap()
        })
    });
    g.bench_function("raw_ed25519_sign", |b| b.iter(|| dalek_signing.sign(black_box(&wire))));
    g.bench_function("raw_ed25519_verify_strict", |b| {
        b.iter(|| dalek_verifying.verify_strict(black_box(&wire), black_box(&raw_signature)).unwrap())
    });
    // What `verify_event` hands to ed25519 is the (shorter) redacted form: its overhead is
    // `verify_event` minus this.
    g.bench_function("raw_ed25519_verify_strict_redacted_bytes", |b| {
        b.iter(|| {
            dalek_verifying.verify_strict(black_box(&redacted_signed_bytes), black_box(&redacted_signature)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(event, benches);
criterion_main!(event);
