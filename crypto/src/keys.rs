//! Ed25519 server keys and key ids.
//!
//! A key id is `ed25519:<version>` where the version is `[A-Za-z0-9_]{1,64}`. A signing key is
//! stored as its 32-byte seed in unpadded base64; a public key travels as unpadded base64 of
//! its 32 bytes.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::b64;
use crate::error::{Error, Result};

/// The algorithm prefix of every key id this crate makes or accepts.
pub const ED25519: &str = "ed25519";

/// `Ok(())` if `key_id` is `ed25519:<version>` with a version of 1 to 64 `[A-Za-z0-9_]`.
pub fn validate_key_id(key_id: &str) -> Result<()> {
    let version = key_id.strip_prefix("ed25519:").ok_or_else(|| Error::InvalidKeyId(key_id.to_owned()))?;
    let ok = (1..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(Error::InvalidKeyId(key_id.to_owned())) }
}

/// A server's ed25519 signing key together with its key id.
///
/// `Debug` prints the key id and public key only, never the seed. The seed is zeroed on drop.
#[derive(Clone)]
pub struct ServerKey {
    key_id: String,
    signing: SigningKey,
}

impl ServerKey {
    /// A new random key with key id `ed25519:<version>`, from the operating system's RNG.
    pub fn generate(version: &str) -> Result<Self> {
        let key_id = format!("{ED25519}:{version}");
        validate_key_id(&key_id)?;
        Ok(Self { key_id, signing: SigningKey::generate(&mut rand::rng()) })
    }

    /// The key with this 32-byte seed and key id `ed25519:<version>`.
    pub fn from_seed(version: &str, seed: &[u8; 32]) -> Result<Self> {
        let key_id = format!("{ED25519}:{version}");
        validate_key_id(&key_id)?;
        Ok(Self { key_id, signing: SigningKey::from_bytes(seed) })
    }

    /// The key whose seed is `seed_b64` (base64 of 32 bytes, padded or not), with key id
    /// `key_id` (`ed25519:<version>`); trailing bits are ignored. The inverse of [`ServerKey::seed_base64`] and
    /// [`ServerKey::key_id`].
    pub fn from_seed_base64(key_id: &str, seed_b64: &str) -> Result<Self> {
        validate_key_id(key_id)?;
        let seed: [u8; 32] = b64::decode_lenient(seed_b64)?.try_into().map_err(|_| Error::InvalidKey)?;
        Ok(Self { key_id: key_id.to_owned(), signing: SigningKey::from_bytes(&seed) })
    }

    /// The key id, `ed25519:<version>`.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The version part of the key id.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.key_id[ED25519.len() + 1..]
    }

    /// The seed as unpadded base64, for storage. Secret.
    #[must_use]
    pub fn seed_base64(&self) -> String {
        b64::encode(self.signing.to_bytes())
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The public key as unpadded base64, as published in `verify_keys`.
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        self.public_key().to_base64()
    }

    /// The raw 64-byte ed25519 signature of `message`.
    #[must_use]
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

/// An ed25519 public (verify) key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// From unpadded (or padded) base64 of the 32 key bytes (trailing bits ignored).
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes: [u8; 32] = b64::decode_lenient(text)?.try_into().map_err(|_| Error::InvalidKey)?;
        Self::from_bytes(&bytes)
    }

    /// From the 32 key bytes; fails if they are not a valid curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        VerifyingKey::from_bytes(bytes).map(Self).map_err(|_| Error::InvalidKey)
    }

    /// Unpadded base64 of the 32 key bytes.
    #[must_use]
    pub fn to_base64(&self) -> String {
        b64::encode(self.0.as_bytes())
    }

    /// The 32 key bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks a raw signature over `message`, with the strict verification rules (no
    /// malleable signatures, no weak keys).
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let signature: [u8; 64] = signature.try_into().map_err(|_| Error::MalformedSignature)?;
        self.0.verify_strict(message, &Signature::from_bytes(&signature)).map_err(|_| Error::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        for good in ["ed25519:1", "ed25519:a_B9", &format!("ed25519:{}", "x".repeat(64))] {
            assert!(validate_key_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ed25519:",
            "ed25519",
            "ED25519:1",
            "curve25519:1",
            "ed25519:a-b",
            "ed25519:a:b",
            "ed25519:é",
            &format!("ed25519:{}", "x".repeat(65)),
        ] {
            assert!(matches!(validate_key_id(bad), Err(Error::InvalidKeyId(_))), "{bad}");
        }
        assert!(ServerKey::generate("bad version").is_err());
    }

    #[test]
    fn seed_round_trip() {
        let key = ServerKey::generate("7").unwrap();
        assert_eq!(key.key_id(), "ed25519:7");
        assert_eq!(key.version(), "7");
        let again = ServerKey::from_seed_base64(key.key_id(), &key.seed_base64()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(PublicKey::from_base64(&key.public_key_base64()).unwrap(), key.public_key());
        assert!(!format!("{key:?}").contains(&key.seed_base64()));
        let other = ServerKey::generate("7").unwrap();
        assert_ne!(other.public_key(), key.public_key());
    }

    #[test]
    fn bad_key_material() {
        assert_eq!(ServerKey::from_seed_base64("ed25519:1", "AAAA").unwrap_err(), Error::InvalidKey);
        assert_eq!(ServerKey::from_seed_base64("ed25519:1", "!").unwrap_err(), Error::Base64);
        assert_eq!(PublicKey::from_base64("AAAA"), Err(Error::InvalidKey));
        let key = ServerKey::from_seed("1", &[7; 32]).unwrap();
        let sig = key.sign_bytes(b"m");
        assert!(key.public_key().verify_bytes(b"m", &sig).is_ok());
        assert_eq!(key.public_key().verify_bytes(b"n", &sig), Err(Error::BadSignature));
        assert_eq!(key.public_key().verify_bytes(b"m", &sig[..63]), Err(Error::MalformedSignature));
    }
}
