//! Untrusted bytes through the whole receive path: strict parse, event id, redaction, content
//! hash and signature check. Nothing may panic; a value that parses re-encodes canonically and
//! round trips. Seed the corpus with signed events, e.g. `crypto/tests/vectors/`.
#![no_main]

use std::sync::OnceLock;

use crypto::{
    PublicKey, ServerKey, check_content_hash, event_id, parse_canonical, parse_strict, redact, to_canonical_bytes,
    verify_event,
};
use libfuzzer_sys::fuzz_target;

fn public_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| ServerKey::from_seed("1", &[11; 32]).expect("key").public_key())
}

fuzz_target!(|bytes: &[u8]| {
    let canonical = parse_canonical(bytes);
    let Ok(event) = parse_strict(bytes) else {
        assert!(canonical.is_err());
        return;
    };
    let reencoded = to_canonical_bytes(&event).expect("what parses encodes");
    assert_eq!(parse_canonical(&reencoded).as_ref(), Ok(&event));
    let id = event_id(&event);
    let verified = verify_event(&event, "alpha.test", "ed25519:1", public_key());
    let _ = check_content_hash(&event);
    match redact(&event) {
        Ok(redacted) => {
            assert_eq!(redact(&redacted).as_ref(), Ok(&redacted));
            assert_eq!(event_id(&redacted), id);
            assert_eq!(verify_event(&redacted, "alpha.test", "ed25519:1", public_key()).is_ok(), verified.is_ok());
        }
        Err(_) => assert!(id.is_err() && verified.is_err()),
    }
});
