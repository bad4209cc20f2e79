//! Signed server-to-server requests: `Authorization: X-ScaiWave origin=…,destination=…,
//! key=…,ts=…,sig=…`.
//!
//! The signature is over the canonical JSON of
//! `{"method", "uri", "origin", "destination", "ts", "content"?}` where `method` is the HTTP
//! method as sent (upper case), `uri` the request target as sent (path and query, e.g.
//! `/_scaiwave/federation/v1/send/42`), `ts` the sender's clock in **Unix milliseconds**, and
//! `content` the JSON body, present only when the request has one.
//!
//! `ts` is in milliseconds (unlike the events' `origin_ts`, in seconds) so that two requests
//! in the same second still sign different bytes and the skew check has sub-second precision.
//! A request is accepted only within [`MAX_CLOCK_SKEW_MS`] of the verifier's clock, in either
//! direction. The current time is a parameter: nothing here reads a clock.
//!
//! The header we write quotes every value but `ts`. The parser accepts each value quoted
//! (RFC 9110 quoted-string, with `\` escapes) or bare, parameter names in any case, spaces
//! around `,` and `=`, and ignores unknown parameters; it rejects duplicates, missing
//! parameters, non-ASCII and headers over [`MAX_HEADER_LEN`] bytes. It never panics.

use serde_json::{Map, Value};

use crate::b64;
use crate::canonical::{MAX_SAFE_INTEGER, to_canonical_bytes};
use crate::error::{Error, Result};
use crate::keys::{PublicKey, ServerKey, validate_key_id};

/// The authorization scheme.
pub const SCHEME: &str = "X-ScaiWave";

/// Largest accepted difference between a request's `ts` and the verifier's clock: 60 s.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// Longest header value [`parse_authorization`] looks at.
pub const MAX_HEADER_LEN: usize = 4096;

/// A request about to be signed.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// Request target as sent: path and query.
    pub uri: &'a str,
    /// Our server name.
    pub origin: &'a str,
    /// The peer's server name.
    pub destination: &'a str,
    /// Now, Unix milliseconds.
    pub ts: u64,
    /// The JSON body, if the request has one.
    pub content: Option<&'a Value>,
}

impl RequestToSign<'_> {
    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Result<Vec<u8>> {
        request_signing_bytes(self.method, self.uri, self.origin, self.destination, self.ts, self.content)
    }

    /// The complete `Authorization` header value, `X-ScaiWave origin="…",…`.
    pub fn authorization_header(&self, key: &ServerKey) -> Result<String> {
        let sig = b64::encode(key.sign_bytes(&self.signing_bytes()?));
        let mut out = format!("{SCHEME} ");
        push_param(&mut out, "origin", self.origin);
        out.push(',');
        push_param(&mut out, "destination", self.destination);
        out.push(',');
        push_param(&mut out, "key", key.key_id());
        out.push_str(",ts=");
        out.push_str(&self.ts.to_string());
        out.push(',');
        push_param(&mut out, "sig", &sig);
        Ok(out)
    }
}

fn push_param(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn request_signing_bytes(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    ts: u64,
    content: Option<&Value>,
) -> Result<Vec<u8>> {
    let ts = i64::try_from(ts).ok().filter(|&t| t <= MAX_SAFE_INTEGER).ok_or(Error::IntegerOutOfRange)?;
    let mut map = Map::new();
    map.insert("method".into(), Value::String(method.into()));
    map.insert("uri".into(), Value::String(uri.into()));
    map.insert("origin".into(), Value::String(origin.into()));
    map.insert("destination".into(), Value::String(destination.into()));
    map.insert("ts".into(), Value::from(ts));
    if let Some(content) = content {
        map.insert("content".into(), content.clone());
    }
    to_canonical_bytes(&Value::Object(map))
}

/// A parsed `X-ScaiWave` authorization header. Parsing checks the shape only; call
/// [`XScaiWaveAuth::verify`] with the origin's public key for `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XScaiWaveAuth {
    /// The sending server.
    pub origin: String,
    /// The server the request is for.
    pub destination: String,
    /// The origin's key id, `ed25519:<version>`.
    pub key_id: String,
    /// The sender's clock, Unix milliseconds.
    pub ts: u64,
    /// The ed25519 signature.
    pub signature: [u8; 64],
}

impl XScaiWaveAuth {
    /// Checks the request: addressed to `our_server_name`, `ts` within
    /// [`MAX_CLOCK_SKEW_MS`] of `now_ms`, and the signature over `method`, `uri`, the header's
    /// fields and `content` valid under `public_key` (the origin's key for `key_id`).
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        content: Option<&Value>,
        our_server_name: &str,
        now_ms: u64,
        public_key: &PublicKey,
    ) -> Result<()> {
        if self.destination != our_server_name {
            return Err(Error::WrongDestination);
        }
        if self.ts.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(Error::ClockSkew { ts: self.ts, now: now_ms });
        }
        let bytes = request_signing_bytes(method, uri, &self.origin, &self.destination, self.ts, content)?;
        public_key.verify_bytes(&bytes, &self.signature)
    }
}

/// An RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Visible ASCII, space or tab (the header is known to be ASCII).
fn is_qdtext(c: u8) -> bool {
    (0x20..0x7f).contains(&c) || c == b'\t'
}

fn valid_server_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// Parses an `Authorization` header value of the `X-ScaiWave` scheme.
pub fn parse_authorization(header: &str) -> Result<XScaiWaveAuth> {
    const NAMES: [&str; 5] = ["origin", "destination", "key", "ts", "sig"];
    let bad = Error::AuthHeader;
    if header.len() > MAX_HEADER_LEN {
        return Err(bad("header too long"));
    }
    if !header.is_ascii() {
        return Err(bad("non-ASCII characters"));
    }
    let text = header.trim_matches([' ', '\t']).as_bytes();
    let scheme_end = text.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(text.len());
    if !text[..scheme_end].eq_ignore_ascii_case(SCHEME.as_bytes()) {
        return Err(bad("not the X-ScaiWave scheme"));
    }
    let mut fields: [Option<String>; 5] = Default::default();
    let mut cursor = Cursor { s: text, i: scheme_end };
    while let Some((name, value)) = cursor.next_param()? {
        if let Some(slot) = NAMES.iter().position(|&n| n == name) {
            if fields[slot].is_some() {
                return Err(bad("duplicate parameter"));
            }
            fields[slot] = Some(value);
        }
    }
    let [origin, destination, key_id, ts, sig] = fields;
    let origin = origin.ok_or(bad("missing origin"))?;
    let destination = destination.ok_or(bad("missing destination"))?;
    let key_id = key_id.ok_or(bad("missing key"))?;
    let ts = ts.ok_or(bad("missing ts"))?;
    let sig = sig.ok_or(bad("missing sig"))?;
    if !valid_server_name(&origin) || !valid_server_name(&destination) {
        return Err(bad("invalid server name"));
    }
    validate_key_id(&key_id)?;
    let ts = parse_ts(&ts).ok_or(bad("ts is not a millisecond timestamp"))?;
    let signature: [u8; 64] =
        b64::decode(&sig).map_err(|_| bad("sig is not base64"))?.try_into().map_err(|_| bad("sig is not 64 bytes"))?;
    Ok(XScaiWaveAuth { origin, destination, key_id, ts, signature })
}

/// Decimal digits only, at most 2^53 − 1.
fn parse_ts(ts: &str) -> Option<u64> {
    if ts.is_empty() || ts.len() > 16 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok().filter(|&t: &u64| t <= MAX_SAFE_INTEGER.unsigned_abs())
}

/// Walks the auth-param list of an ASCII header, after the scheme.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// The next `(lower-case name, value)`, or `None` at the end.
    fn next_param(&mut self) -> Result<Option<(String, String)>> {
        let bad = Error::AuthHeader;
        // Empty list elements (",,") are allowed, as in RFC 9110's list syntax.
        self.skip_ows();
        while self.peek() == Some(b',') {
            self.i += 1;
            self.skip_ows();
        }
        if self.peek().is_none() {
            return Ok(None);
        }
        let start = self.i;
        while self.peek().is_some_and(is_token_char) {
            self.i += 1;
        }
        if self.i == start {
            return Err(bad("expected a parameter name"));
        }
        let name = header_str(&self.s[start..self.i]).to_ascii_lowercase();
        self.skip_ows();
        if self.peek() != Some(b'=') {
            return Err(bad("expected '=' after a parameter name"));
        }
        self.i += 1;
        self.skip_ows();
        let value = if self.peek() == Some(b'"') { self.quoted()? } else { self.bare()? };
        self.skip_ows();
        if self.peek().is_some_and(|b| b != b',') {
            return Err(bad("expected ',' between parameters"));
        }
        Ok(Some((name, value)))
    }

    /// An RFC 9110 quoted-string, opening quote under the cursor.
    fn quoted(&mut self) -> Result<String> {
        let bad = Error::AuthHeader;
        self.i += 1;
        let mut v = Vec::new();
        loop {
            match self.peek() {
                None => return Err(bad("unterminated quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(header_str(&v).to_owned());
                }
                Some(b'\\') => match self.s.get(self.i + 1) {
                    Some(&c) if is_qdtext(c) => {
                        v.push(c);
                        self.i += 2;
                    }
                    _ => return Err(bad("bad escape in quoted string")),
                },
                Some(c) if is_qdtext(c) => {
                    v.push(c);
                    self.i += 1;
                }
                Some(_) => return Err(bad("control character in quoted string")),
            }
        }
    }

    /// An unquoted value: visible characters up to `,` or whitespace.
    fn bare(&mut self) -> Result<String> {
        let start = self.i;
        while self.peek().is_some_and(|b| b > 0x20 && b != 0x7f && b != b',' && b != b'"') {
            self.i += 1;
        }
        if self.i == start {
            return Err(Error::AuthHeader("empty parameter value"));
        }
        Ok(header_str(&self.s[start..self.i]).to_owned())
    }
}

/// The header was checked to be ASCII, so every byte slice of it is valid UTF-8.
fn header_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}
