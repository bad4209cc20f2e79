//! Unpadded base64: the standard alphabet for keys, signatures and hashes, the URL-safe one
//! for event ids. Decoding accepts input with or without `=` padding, as the Matrix
//! specification recommends, but nothing else (no whitespace, no mixed alphabets, no partial
//! padding such as `Zg=`).
//!
//! [`decode`] also rejects non-zero bits in the unused low bits of the last character, so each
//! byte string has exactly one unpadded encoding: a signature or hash string cannot be altered
//! without changing its bytes. Every encoder writes zeros there. [`decode_lenient`] ignores
//! those bits, as Python's decoder and Synapse do; it is for key material only, because the
//! specification's own test-vector seed (`YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`) has
//! them set.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Error, Result};

const fn config(padded: bool, lenient: bool) -> GeneralPurposeConfig {
    GeneralPurposeConfig::new()
        .with_encode_padding(padded)
        .with_decode_padding_mode(if padded {
            DecodePaddingMode::RequireCanonical
        } else {
            DecodePaddingMode::RequireNone
        })
        .with_decode_allow_trailing_bits(lenient)
}
const UNPADDED: GeneralPurposeConfig = config(false, false);
const PADDED: GeneralPurposeConfig = config(true, false);

const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, UNPADDED);
const STANDARD_PADDED: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDED);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, UNPADDED);
const URL_SAFE_PADDED: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDED);
const LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, config(false, true));
const LENIENT_PADDED: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, config(true, true));

/// Decodes with `padded` if the text has any `=`, else with `unpadded`: so exactly the
/// unpadded form and the correctly padded form are accepted (not `Zg=`).
fn decode_with(text: &str, unpadded: &GeneralPurpose, padded: &GeneralPurpose) -> Result<Vec<u8>> {
    let engine = if text.contains('=') { padded } else { unpadded };
    engine.decode(text).map_err(|_| Error::Base64)
}

/// Unpadded standard base64 (`+`, `/`).
#[must_use]
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64, unpadded or correctly padded, with zero trailing bits.
pub fn decode(text: &str) -> Result<Vec<u8>> {
    decode_with(text, &STANDARD, &STANDARD_PADDED)
}

/// Like [`decode`] but ignores the trailing bits. For keys and seeds only.
pub fn decode_lenient(text: &str) -> Result<Vec<u8>> {
    decode_with(text, &LENIENT, &LENIENT_PADDED)
}

/// Unpadded URL-safe base64 (`-`, `_`).
#[must_use]
pub fn encode_url_safe(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE.encode(bytes)
}

/// Decodes URL-safe base64, unpadded or correctly padded, with zero trailing bits.
pub fn decode_url_safe(text: &str) -> Result<Vec<u8>> {
    decode_with(text, &URL_SAFE, &URL_SAFE_PADDED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn padding_accepted_on_decode() {
        assert_eq!(decode("Zg==").unwrap(), b"f");
        assert_eq!(decode("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_url_safe("Zg==").unwrap(), b"f");
    }

    #[test]
    fn alphabets_differ() {
        let bytes = [0xfb, 0xff, 0xbf];
        assert_eq!(encode(bytes), "+/+/");
        assert_eq!(encode_url_safe(bytes), "-_-_");
        assert_eq!(decode("-_-_"), Err(Error::Base64));
        assert_eq!(decode_url_safe("+/+/"), Err(Error::Base64));
        assert_eq!(decode_url_safe("-_-_").unwrap(), bytes);
    }

    #[test]
    fn trailing_bits() {
        assert_eq!(decode("Zh"), Err(Error::Base64));
        assert_eq!(decode("Zh=="), Err(Error::Base64));
        assert_eq!(decode_url_safe("Zh"), Err(Error::Base64));
        assert_eq!(decode_lenient("Zh").unwrap(), b"f");
        assert_eq!(decode_lenient("Zh==").unwrap(), b"f");
        assert_eq!(decode_lenient("Zg=").unwrap_err(), Error::Base64);
        assert_eq!(encode(decode_lenient("Zh").unwrap()), "Zg");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["Z", "Zg=", "Z g", "Zg\n", "====", "Zg===", "é", "Z=g=", "=Zg"] {
            assert_eq!(decode(bad), Err(Error::Base64), "{bad:?}");
        }
    }
}
