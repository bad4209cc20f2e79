//! SHA-256, and the content hash of a JSON object.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::b64;
use crate::canonical::to_canonical_bytes_without;
use crate::error::Result;

/// SHA-256 of `bytes`.
#[must_use]
pub fn sha256(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(bytes.as_ref()).into()
}

/// The content hash of any JSON object, as unpadded standard base64: SHA-256 of the canonical
/// JSON of the object without its `signatures`, `hashes` and `unsigned` keys. This is the
/// Matrix algorithm and does not depend on our event format, so it reproduces the Matrix
/// specification's test vectors on Matrix events.
pub fn content_hash(object: &Value) -> Result<String> {
    content_hash_bytes(object).map(b64::encode)
}

fn content_hash_bytes(object: &Value) -> Result<[u8; 32]> {
    Ok(sha256(to_canonical_bytes_without(object, &["signatures", "hashes", "unsigned"])?))
}

/// `true` if `object.hashes.sha256` is present, is base64 of 32 bytes, and equals the content
/// hash of `object`. Any malformation gives `false`.
#[must_use]
pub fn check_content_hash(object: &Value) -> bool {
    let Some(claimed) = object.get("hashes").and_then(|h| h.get("sha256")).and_then(Value::as_str) else {
        return false;
    };
    let Ok(claimed) = b64::decode(claimed) else {
        return false;
    };
    // Both sides are public; no need for a constant-time comparison.
    content_hash_bytes(object).is_ok_and(|actual| actual[..] == claimed[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use serde_json::json;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 "abc".
        assert_eq!(b64::encode(sha256(b"abc")), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0");
    }

    #[test]
    fn content_hash_ignores_signatures_hashes_unsigned() {
        let a = json!({"a": 1});
        let b = json!({"a": 1, "signatures": {"x": {}}, "hashes": {"sha256": "y"}, "unsigned": 5});
        assert_eq!(content_hash(&a).unwrap(), content_hash(&b).unwrap());
        assert_ne!(content_hash(&a).unwrap(), content_hash(&json!({"a": 2})).unwrap());
        assert_eq!(content_hash(&json!([])), Err(Error::NotAnObject));
    }

    #[test]
    fn check_content_hash_works() {
        let mut v = json!({"a": 1});
        let h = content_hash(&v).unwrap();
        v["hashes"] = json!({"sha256": h});
        assert!(check_content_hash(&v));
        // Padded form is accepted too.
        let padded = format!("{}=", v["hashes"]["sha256"].as_str().unwrap());
        v["hashes"]["sha256"] = json!(padded);
        assert!(check_content_hash(&v));
        v["a"] = json!(2);
        assert!(!check_content_hash(&v));
        assert!(!check_content_hash(&json!({"a": 1})));
        assert!(!check_content_hash(&json!({"a": 1, "hashes": {"sha256": 7}})));
        assert!(!check_content_hash(&json!({"a": 1, "hashes": {"sha256": "!!"}})));
        assert!(!check_content_hash(&json!({"a": 1.5, "hashes": {"sha256": ""}})));
        assert!(!check_content_hash(&json!("x")));
    }
}
