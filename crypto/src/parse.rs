//! A strict JSON parser for untrusted bytes.
//!
//! `serde_json` accepts duplicate object keys (the last one wins), which lets two servers read
//! different content out of the same signed bytes. This parser is written for input from the
//! network and accepts only JSON that has one meaning under canonical JSON:
//! * RFC 8259 syntax, the whole input valid UTF-8, nothing after the value but whitespace;
//! * no duplicate keys (compared after unescaping);
//! * numbers are integers within ±(2^53 − 1): no fraction, no exponent, no `-0`;
//! * no unpaired UTF-16 surrogate in a `\u` escape;
//! * at most [`MAX_DEPTH`] nested arrays and objects.
//!
//! [`parse_strict`] allows insignificant whitespace and any valid escapes;
//! [`parse_canonical`] additionally demands that the bytes are exactly the canonical encoding.
//! Neither panics, whatever the input.

use serde_json::{Map, Number, Value};

use crate::canonical::{MAX_DEPTH, MAX_SAFE_INTEGER, to_canonical_bytes};
use crate::error::{Error, Result};

/// Parses untrusted bytes into a value under the strict rules of this module.
pub fn parse_strict(bytes: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)?;
    let mut p = Parser { s: text.as_bytes(), text, pos: 0 };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(value)
}

/// Parses bytes that must already be exactly canonical JSON, and returns the value.
pub fn parse_canonical(bytes: &[u8]) -> Result<Value> {
    let value = parse_strict(bytes)?;
    if to_canonical_bytes(&value)? != bytes {
        return Err(Error::NotCanonical);
    }
    Ok(value)
}

/// `Ok(())` if `bytes` are exactly the canonical encoding of some value.
pub fn verify_canonical(bytes: &[u8]) -> Result<()> {
    parse_canonical(bytes).map(|_| ())
}

struct Parser<'a> {
    /// `text` as bytes; every index handled is a char boundary when we slice `text`.
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> Error {
        Error::Syntax { offset: self.pos, reason }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, lit: &'static [u8], value: Value) -> Result<Value> {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'n') => self.expect_literal(b"null", Value::Null),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        self.pos += 1; // '{'
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            if map.contains_key(&key) {
                return Err(Error::DuplicateKey(key));
            }
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return Err(self.err("expected a digit")),
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(Error::Float);
        }
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.err("leading zero in a number"));
        }
        let digits = &self.text[digits_start..self.pos];
        // 2^53 − 1 has 16 digits; anything longer is out of range (and would overflow i64).
        if digits.len() > 16 {
            return Err(Error::IntegerOutOfRange);
        }
        let magnitude: i64 = digits.parse().map_err(|_| Error::Syntax { offset: start, reason: "invalid number" })?;
        if magnitude > MAX_SAFE_INTEGER {
            return Err(Error::IntegerOutOfRange);
        }
        if negative && magnitude == 0 {
            return Err(Error::NegativeZero);
        }
        Ok(Value::Number(Number::from(if negative { -magnitude } else { magnitude })))
    }

    fn hex4(&mut self) -> Result<u32> {
        let Some(chunk) = self.s.get(self.pos..self.pos + 4) else {
            return Err(self.err("truncated \\u escape"));
        };
        let mut v = 0u32;
        for &b in chunk {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.err("invalid hex digit in \\u escape")),
            };
            v = (v << 4) | u32::from(d);
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match b {
                b'"' => {
                    out.push_str(&self.text[run_start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                0x00..=0x1f => return Err(self.err("unescaped control character in string")),
                b'\\' => {
                    out.push_str(&self.text[run_start..self.pos]);
                    self.pos += 1;
                    self.escape(&mut out)?;
                    run_start = self.pos;
                }
                // Other bytes, including UTF-8 continuation bytes, are copied as a run; the
                // input was validated as UTF-8 and runs end at ASCII bytes (char boundaries).
                _ => self.pos += 1,
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<()> {
        let Some(b) = self.peek() else {
            return Err(self.err("unterminated escape"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = match hi {
                    0xd800..=0xdbff => {
                        if !self.s[self.pos..].starts_with(b"\\u") {
                            return Err(self.err("unpaired surrogate in \\u escape"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&lo) {
                            return Err(self.err("unpaired surrogate in \\u escape"));
                        }
                        0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                    }
                    0xdc00..=0xdfff => return Err(self.err("unpaired surrogate in \\u escape")),
                    _ => hi,
                };
                char::from_u32(code).ok_or_else(|| self.err("invalid \\u escape"))?
            }
            _ => return Err(self.err("invalid escape")),
        };
        out.push(c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Result<Value> {
        parse_strict(s.as_bytes())
    }

    #[test]
    fn accepts_json() {
        assert_eq!(
            p(" { \"a\" : [1, -2, true, false, null, \"x\"] } \n").unwrap(),
            json!({"a": [1, -2, true, false, null, "x"]})
        );
        assert_eq!(
            p("\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"").unwrap(),
            json!("é😀/\u{8}\u{c}\n\r\t\"\\")
        );
        assert_eq!(p("9007199254740991").unwrap(), json!(9007199254740991_i64));
        assert_eq!(p("-9007199254740991").unwrap(), json!(-9007199254740991_i64));
        assert_eq!(p("0").unwrap(), json!(0));
        assert_eq!(p("{\"a\":{},\"b\":[]}").unwrap(), json!({"a": {}, "b": []}));
    }

    #[test]
    fn rejects_what_canonical_json_forbids() {
        assert_eq!(p(r#"{"a":1,"a":2}"#), Err(Error::DuplicateKey("a".into())));
        assert_eq!(p(r#"{"a":1,"\u0061":2}"#), Err(Error::DuplicateKey("a".into())));
        assert_eq!(p("1.0"), Err(Error::Float));
        assert_eq!(p("1e3"), Err(Error::Float));
        assert_eq!(p("1E3"), Err(Error::Float));
        assert_eq!(p("-0"), Err(Error::NegativeZero));
        assert_eq!(p("9007199254740992"), Err(Error::IntegerOutOfRange));
        assert_eq!(p("-9007199254740992"), Err(Error::IntegerOutOfRange));
        assert_eq!(p("123456789012345678901234567890"), Err(Error::IntegerOutOfRange));
        assert_eq!(parse_strict(b"\"\xff\""), Err(Error::InvalidUtf8));
        assert_eq!(parse_strict(b"\"\xed\xa0\x80\""), Err(Error::InvalidUtf8));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "[1 2]",
            "01",
            "-",
            "+1",
            "nul",
            "truex",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\nb\"",
            "{1:2}",
            "{\"a\" 1}",
            "1 2",
            "\u{feff}{}",
            "[",
            "{\"a\":",
            "NaN",
            "Infinity",
            "'a'",
        ] {
            assert!(matches!(p(bad), Err(Error::Syntax { .. })), "{bad:?} gave {:?}", p(bad));
        }
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(p(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(p(&deep), Err(Error::TooDeep));
        // No stack overflow on absurd nesting.
        assert_eq!(p(&"[{\"a\":".repeat(100_000)), Err(Error::TooDeep));
    }

    #[test]
    fn canonical_check() {
        assert!(verify_canonical(br#"{"a":1,"b":[true,null,"\u001f\n"]}"#).is_ok());
        for not in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"a": 1}"#,
            br#" {}"#,
            br#""\u00e9""#,
            br#""\/""#,
            br#""\u000a""#,
            br#""\u001F""#,
        ] {
            assert_eq!(verify_canonical(not), Err(Error::NotCanonical), "{:?}", String::from_utf8_lossy(not));
        }
        assert_eq!(verify_canonical(b"1.5"), Err(Error::Float));
    }
}
