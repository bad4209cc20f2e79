//! Signing JSON objects (the Matrix specification's "Signing JSON").
//!
//! To sign: take the object without `signatures` and `unsigned`, encode it canonically, sign
//! the bytes with ed25519, and put the unpadded base64 signature at
//! `signatures.<server_name>.<key_id>`, keeping every other signature already there; `unsigned`
//! stays as it was. To verify: the same bytes, against one server's signature with one key id.

use serde_json::{Map, Value};

use crate::b64;
use crate::canonical::to_canonical_bytes_without;
use crate::error::{Error, Result};
use crate::keys::{PublicKey, ServerKey, validate_key_id};

/// The bytes a signature of `object` covers: canonical JSON of `object` without `signatures`
/// and `unsigned`.
pub fn signing_bytes(object: &Value) -> Result<Vec<u8>> {
    to_canonical_bytes_without(object, &["signatures", "unsigned"])
}

/// The unpadded base64 signature of `object` by `key`, without changing the object.
pub fn signature_of(object: &Value, key: &ServerKey) -> Result<String> {
    Ok(b64::encode(key.sign_bytes(&signing_bytes(object)?)))
}

/// Signs `object` in place as `server_name` with `key`, adding to any signatures it carries.
///
/// Fails (leaving `object` unchanged) if it is not an object, cannot be encoded canonically, or
/// has a `signatures` member that is not an object of objects where this signature goes.
pub fn sign_json(object: &mut Value, server_name: &str, key: &ServerKey) -> Result<()> {
    let signature = signature_of(object, key)?;
    add_signature(object, server_name, key.key_id(), signature)
}

/// Records `signature` as `signatures.<server_name>.<key_id>` of `object`, keeping the others.
pub(crate) fn add_signature(object: &mut Value, server_name: &str, key_id: &str, signature: String) -> Result<()> {
    let map = object.as_object_mut().ok_or(Error::NotAnObject)?;
    let signatures = map
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(Error::MalformedSignature)?;
    let by_server = signatures
        .entry(server_name)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(Error::MalformedSignature)?;
    by_server.insert(key_id.to_owned(), Value::String(signature));
    Ok(())
}

/// Checks that `object` carries a valid signature by `server_name` with `key_id`, made by the
/// private half of `public_key`.
///
/// Errors: [`Error::SignatureMissing`] when there is no such entry,
/// [`Error::MalformedSignature`] when it is not base64 of 64 bytes, [`Error::BadSignature`]
/// when it does not verify, [`Error::InvalidKeyId`] when `key_id` is not an ed25519 key id.
pub fn verify_json(object: &Value, server_name: &str, key_id: &str, public_key: &PublicKey) -> Result<()> {
    validate_key_id(key_id)?;
    let map = object.as_object().ok_or(Error::NotAnObject)?;
    let entry =
        map.get("signatures").and_then(|s| s.get(server_name)).and_then(|s| s.get(key_id)).ok_or_else(|| {
            Error::SignatureMissing { server_name: server_name.to_owned(), key_id: key_id.to_owned() }
        })?;
    let signature = entry
        .as_str()
        .ok_or(Error::MalformedSignature)
        .and_then(|s| b64::decode(s).map_err(|_| Error::MalformedSignature))?;
    public_key.verify_bytes(&signing_bytes(object)?, &signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(seed: u8, version: &str) -> ServerKey {
        ServerKey::from_seed(version, &[seed; 32]).unwrap()
    }

    #[test]
    fn sign_then_verify_with_unsigned_kept() {
        let k = key(1, "1");
        let mut v = json!({"a": 1, "unsigned": {"age": 5}});
        sign_json(&mut v, "alpha.test", &k).unwrap();
        assert_eq!(v["unsigned"], json!({"age": 5}));
        verify_json(&v, "alpha.test", "ed25519:1", &k.public_key()).unwrap();
        // unsigned is not covered.
        v["unsigned"] = json!("changed");
        verify_json(&v, "alpha.test", "ed25519:1", &k.public_key()).unwrap();
        // everything else is.
        v["a"] = json!(2);
        assert_eq!(verify_json(&v, "alpha.test", "ed25519:1", &k.public_key()), Err(Error::BadSignature));
    }

    #[test]
    fn multiple_signatures_coexist() {
        let (k1, k2, k3) = (key(1, "1"), key(2, "2"), key(3, "1"));
        let mut v = json!({"a": [1, 2]});
        sign_json(&mut v, "alpha.test", &k1).unwrap();
        sign_json(&mut v, "alpha.test", &k2).unwrap();
        sign_json(&mut v, "beta.test", &k3).unwrap();
        verify_json(&v, "alpha.test", "ed25519:1", &k1.public_key()).unwrap();
        verify_json(&v, "alpha.test", "ed25519:2", &k2.public_key()).unwrap();
        verify_json(&v, "beta.test", "ed25519:1", &k3.public_key()).unwrap();
        assert_eq!(verify_json(&v, "beta.test", "ed25519:1", &k1.public_key()), Err(Error::BadSignature));
        assert!(matches!(
            verify_json(&v, "gamma.test", "ed25519:1", &k1.public_key()),
            Err(Error::SignatureMissing { .. })
        ));
    }

    #[test]
    fn malformed_inputs() {
        let k = key(1, "1");
        let pk = k.public_key();
        assert_eq!(sign_json(&mut json!([]), "a", &k), Err(Error::NotAnObject));
        let mut bad = json!({"signatures": 3});
        assert_eq!(sign_json(&mut bad, "a", &k), Err(Error::MalformedSignature));
        assert_eq!(bad, json!({"signatures": 3}));
        assert_eq!(sign_json(&mut json!({"x": 1.5}), "a", &k), Err(Error::Float));
        for v in [
            json!({"signatures": {"a": {"ed25519:1": 5}}}),
            json!({"signatures": {"a": {"ed25519:1": "!!!"}}}),
            json!({"signatures": {"a": {"ed25519:1": "AAAA"}}}),
        ] {
            assert_eq!(verify_json(&v, "a", "ed25519:1", &pk), Err(Error::MalformedSignature));
        }
        assert!(matches!(
            verify_json(&json!({"signatures": []}), "a", "ed25519:1", &pk),
            Err(Error::SignatureMissing { .. })
        ));
        assert!(matches!(verify_json(&json!({}), "a", "rsa:1", &pk), Err(Error::InvalidKeyId(_))));
    }
}
