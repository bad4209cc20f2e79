//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong in this crate. No function of the crate panics on any input;
/// each failure comes back as one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not JSON (RFC 8259) at byte `offset`.
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax {
        /// Byte offset of the problem in the input.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// The input is not valid UTF-8.
    #[error("input is not valid UTF-8")]
    InvalidUtf8,
    /// An object has the same key twice.
    #[error("duplicate key {0:?} in a JSON object")]
    DuplicateKey(String),
    /// A number has a fraction or an exponent, or is a non-integer `serde_json` number.
    #[error("floating point numbers are not allowed in canonical JSON")]
    Float,
    /// An integer is outside ±(2^53 − 1).
    #[error("integer outside the range ±(2^53 - 1)")]
    IntegerOutOfRange,
    /// `-0` appeared.
    #[error("-0 is not allowed in canonical JSON")]
    NegativeZero,
    /// Arrays and objects nest deeper than [`crate::MAX_DEPTH`].
    #[error("JSON nests deeper than {} levels", crate::MAX_DEPTH)]
    TooDeep,
    /// Valid JSON, but not byte for byte its canonical form.
    #[error("JSON is not in canonical form")]
    NotCanonical,
    /// A JSON object was expected.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A string is not valid (padded or unpadded) base64.
    #[error("invalid base64")]
    Base64,
    /// A key id is not `ed25519:<version>` with version `[A-Za-z0-9_]{1,64}`.
    #[error("invalid key id {0:?}")]
    InvalidKeyId(String),
    /// A seed or public key has the wrong length or is not a valid curve point.
    #[error("invalid ed25519 key material")]
    InvalidKey,
    /// The object carries no signature by this server with this key id.
    #[error("no signature for {server_name} with key {key_id}")]
    SignatureMissing {
        /// The server whose signature was looked for.
        server_name: String,
        /// The key id looked for.
        key_id: String,
    },
    /// A signature is present but is not a base64 string of 64 bytes.
    #[error("malformed signature")]
    MalformedSignature,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The event does not have the shape the operation needs.
    #[error("malformed event: {0}")]
    MalformedEvent(&'static str),
    /// An `Authorization: X-ScaiWave …` header could not be parsed.
    #[error("malformed X-ScaiWave authorization header: {0}")]
    AuthHeader(&'static str),
    /// A request was signed for another destination than ours.
    #[error("request is addressed to another server")]
    WrongDestination,
    /// A request's `ts` is more than [`crate::request::MAX_CLOCK_SKEW_MS`] away from now.
    #[error("request timestamp {ts} is too far from now ({now})")]
    ClockSkew {
        /// The request's timestamp, Unix milliseconds.
        ts: u64,
        /// The verifier's current time, Unix milliseconds.
        now: u64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
