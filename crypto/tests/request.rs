//! The `X-ScaiWave` request signature header: building, parsing, verifying, hostile input.

use crypto::request::{MAX_HEADER_LEN, RequestToSign, SCHEME};
use crypto::{Error, MAX_CLOCK_SKEW_MS, ServerKey, XScaiWaveAuth, parse_authorization};
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: u64 = 1_778_939_467_000;

fn key() -> ServerKey {
    ServerKey::from_seed("1", &[42; 32]).unwrap()
}

fn request(content: Option<&Value>) -> RequestToSign<'_> {
    RequestToSign {
        method: "PUT",
        uri: "/_scaiwave/federation/v1/send/txn1?x=%20y",
        origin: "alpha.test",
        destination: "beta.test:8448",
        ts: NOW,
        content,
    }
}

fn header(content: Option<&Value>) -> String {
    request(content).authorization_header(&key()).unwrap()
}

fn verify(auth: &XScaiWaveAuth, content: Option<&Value>, now: u64) -> Result<(), Error> {
    let r = request(None);
    auth.verify(r.method, r.uri, content, r.destination, now, &key().public_key())
}

#[test]
fn header_shape() {
    let h = header(None);
    let prefix =
        format!("{SCHEME} origin=\"alpha.test\",destination=\"beta.test:8448\",key=\"ed25519:1\",ts={NOW},sig=\"");
    assert!(h.starts_with(&prefix), "{h}");
    assert!(h.ends_with('"') && h.len() == prefix.len() + 86 + 1, "{h}");
}

#[test]
fn signing_bytes_are_canonical_json_of_the_request() {
    let body = json!({"pdus": [], "b": 1});
    let bytes = request(Some(&body)).signing_bytes().unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        format!(
            r#"{{"content":{{"b":1,"pdus":[]}},"destination":"beta.test:8448","method":"PUT","origin":"alpha.test","ts":{NOW},"uri":"/_scaiwave/federation/v1/send/txn1?x=%20y"}}"#
        )
    );
    let bytes = request(None).signing_bytes().unwrap();
    assert!(!String::from_utf8(bytes).unwrap().contains("content"));
}

#[test]
fn round_trip_with_and_without_content() {
    let body = json!({"pdus": [{"a": 1}]});
    let auth = parse_authorization(&header(Some(&body))).unwrap();
    assert_eq!(auth.origin, "alpha.test");
    assert_eq!(auth.destination, "beta.test:8448");
    assert_eq!(auth.key_id, "ed25519:1");
    assert_eq!(auth.ts, NOW);
    verify(&auth, Some(&body), NOW).unwrap();
    assert_eq!(verify(&auth, None, NOW), Err(Error::BadSignature));
    assert_eq!(verify(&auth, Some(&json!({"pdus": []})), NOW), Err(Error::BadSignature));

    let auth = parse_authorization(&header(None)).unwrap();
    verify(&auth, None, NOW).unwrap();
    assert_eq!(verify(&auth, Some(&json!({})), NOW), Err(Error::BadSignature));
    let pk = key().public_key();
    for (method, uri) in [("GET", request(None).uri), ("PUT", "/_scaiwave/federation/v1/send/txn2")] {
        assert_eq!(auth.verify(method, uri, None, "beta.test:8448", NOW, &pk), Err(Error::BadSignature));
    }
    let other = ServerKey::from_seed("1", &[43; 32]).unwrap().public_key();
    let r = request(None);
    assert_eq!(auth.verify(r.method, r.uri, None, r.destination, NOW, &other), Err(Error::BadSignature));
}

#[test]
fn destination_and_clock_skew() {
    let auth = parse_authorization(&header(None)).unwrap();
    let r = request(None);
    let pk = key().public_key();
    assert_eq!(auth.verify(r.method, r.uri, None, "gamma.test", NOW, &pk), Err(Error::WrongDestination));
    verify(&auth, None, NOW + MAX_CLOCK_SKEW_MS).unwrap();
    verify(&auth, None, NOW - MAX_CLOCK_SKEW_MS).unwrap();
    for now in [NOW + MAX_CLOCK_SKEW_MS + 1, NOW - MAX_CLOCK_SKEW_MS - 1, 0, u64::MAX] {
        assert_eq!(verify(&auth, None, now), Err(Error::ClockSkew { ts: NOW, now }));
    }
}

#[test]
fn lenient_but_exact_parsing() {
    let h = header(None);
    let sig = h.rsplit("sig=\"").next().unwrap().trim_end_matches('"').to_owned();
    let variants = [
        format!("X-ScaiWave origin=alpha.test,destination=beta.test:8448,key=ed25519:1,ts={NOW},sig={sig}"),
        format!(
            "x-scaiwave  ORIGIN = \"alpha.test\" , Destination=\"beta.test:8448\",key=\"ed25519:1\", ts=\"{NOW}\",sig=\"{sig}==\" "
        ),
        format!(
            "X-SCAIWAVE\tsig=\"{sig}\",ts={NOW},key=\"ed\\25519:1\",destination=\"beta.test:8448\",origin=\"alpha.test\",extra=\"x,y\",,"
        ),
    ];
    for v in &variants {
        let auth = parse_authorization(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        verify(&auth, None, NOW).unwrap();
    }
}

#[test]
fn rejects_malformed_headers() {
    let good = header(None);
    let sig = good.rsplit("sig=\"").next().unwrap().trim_end_matches('"').to_owned();
    let o = "origin=\"alpha.test\"";
    let d = "destination=\"beta.test\"";
    let k = "key=\"ed25519:1\"";
    let t = format!("ts={NOW}");
    let s = format!("sig=\"{sig}\"");
    let cases = [
        String::new(),
        "X-ScaiWave".into(),
        format!("X-Matrix {o},{d},{k},{t},{s}"),
        format!("Bearer {o},{d},{k},{t},{s}"),
        format!("X-ScaiWaveX {o},{d},{k},{t},{s}"),
        format!("X-ScaiWave {d},{k},{t},{s}"),
        format!("X-ScaiWave {o},{k},{t},{s}"),
        format!("X-ScaiWave {o},{d},{t},{s}"),
        format!("X-ScaiWave {o},{d},{k},{s}"),
        format!("X-ScaiWave {o},{d},{k},{t}"),
        format!("X-ScaiWave {o},{o},{d},{k},{t},{s}"),
        format!("X-ScaiWave {o},{d},{k},{t},{s},ORIGIN=x"),
        format!("X-ScaiWave {o},{d},key=\"ed25519:\",{t},{s}"),
        format!("X-ScaiWave {o},{d},key=rsa:1,{t},{s}"),
        format!("X-ScaiWave {o},{d},{k},ts=-1,{s}"),
        format!("X-ScaiWave {o},{d},{k},ts=1.5,{s}"),
        format!("X-ScaiWave {o},{d},{k},ts=1e3,{s}"),
        format!("X-ScaiWave {o},{d},{k},ts=\"\",{s}"),
        format!("X-ScaiWave {o},{d},{k},ts=99999999999999999999,{s}"),
        format!("X-ScaiWave {o},{d},{k},ts=9007199254740992,{s}"),
        format!("X-ScaiWave {o},{d},{k},{t},sig=\"AAAA\""),
        format!("X-ScaiWave {o},{d},{k},{t},sig=\"{sig}!\""),
        format!("X-ScaiWave {o},{d},{k},{t},sig=\"{sig}"),
        format!("X-ScaiWave {o},{d},{k},{t},sig="),
        format!("X-ScaiWave {o},{d},{k},{t},{s} junk"),
        format!("X-ScaiWave origin=\"al pha\",{d},{k},{t},{s}"),
        format!("X-ScaiWave origin=\"\",{d},{k},{t},{s}"),
        format!("X-ScaiWave origin=\"a\u{e9}\",{d},{k},{t},{s}"),
        format!("X-ScaiWave origin=\"a\u{1}\",{d},{k},{t},{s}"),
        format!("X-ScaiWave {o},{d},{k},{t},{s},x=\"\\"),
        format!("X-ScaiWave {o},{d},{k},{t},{s},=x"),
        format!("X-ScaiWave {o},{d},{k},{t},{s},x"),
        format!("X-ScaiWave {o},{d},{k},{t},{s},x=\"{}\"", "a".repeat(MAX_HEADER_LEN)),
    ];
    for case in &cases {
        let result = parse_authorization(case);
        assert!(matches!(result, Err(Error::AuthHeader(_) | Error::InvalidKeyId(_))), "{case:?} gave {result:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_strings(s in any::<String>()) {
        let _ = parse_authorization(&s);
        let _ = parse_authorization(&format!("X-ScaiWave {s}"));
    }

    #[test]
    fn parser_never_panics_on_mutated_headers(
        pos in any::<prop::sample::Index>(),
        bytes in prop::collection::vec(any::<u8>(), 0..4),
        cut in any::<bool>(),
    ) {
        let h = header(None);
        let i = pos.index(h.len() + 1);
        let mut b = h.into_bytes();
        if cut { b.truncate(i); } else { b.splice(i..i, bytes); }
        let _ = parse_authorization(&String::from_utf8_lossy(&b));
    }
}
