//! Canonical JSON encoding (the Matrix specification's "Canonical JSON").
//!
//! Rules, all enforced here:
//! * object keys sorted by Unicode code point;
//! * no insignificant whitespace;
//! * strings as UTF-8 with the shortest escapes: only `"` and `\` and the control characters
//!   U+0000–U+001F are escaped; `\b \f \n \r \t` use their short forms, the other control
//!   characters `\u00XX` with lowercase hex. `/`, DEL and everything non-ASCII are written raw;
//! * numbers are integers within ±(2^53 − 1); floats are rejected (even integral ones such as
//!   `1.0`), and so is `-0` (which a `serde_json::Value` cannot hold as an integer anyway).
//!
//! **Key order.** The keys are sorted here explicitly, by comparing the keys' UTF-8 bytes. For
//! UTF-8 the byte-wise lexicographic order equals the code-point order (a property of the
//! encoding: the lead byte grows with the code point's length class, and within a class the
//! bytes are the code point's bits in big-endian order), and `String`'s `Ord` is that byte order.
//! `serde_json::Map` is a `BTreeMap<String, Value>` while `serde_json`'s `preserve_order` feature
//! is off, so its iteration order is already right. The encoder still checks the order of every
//! object and sorts when it is wrong, which keeps it correct even if another crate of the
//! workspace switches `preserve_order` on through feature unification (which would make `Map`
//! keep insertion order); the check is one pass and allocates nothing.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// The largest integer canonical JSON allows: 2^53 − 1.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Deepest nesting of arrays and objects accepted, by the encoder and by the parser alike.
pub const MAX_DEPTH: usize = 128;

/// The canonical JSON text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// The canonical JSON bytes of the object `value` without its members named in `skip`: what
/// hashes and signatures cover, without copying the object to remove them.
pub(crate) fn to_canonical_bytes_without(value: &Value, skip: &[&str]) -> Result<Vec<u8>> {
    let map = value.as_object().ok_or(Error::NotAnObject)?;
    let mut out = String::new();
    write_object(&mut out, map, 0, skip)?;
    Ok(out.into_bytes())
}

/// The canonical JSON bytes of `value` (UTF-8).
pub fn to_canonical_bytes(value: &Value) -> Result<Vec<u8>> {
    to_canonical_string(value).map(String::into_bytes)
}

/// Checks that `value` can be encoded canonically (integers in range, no floats, depth).
pub fn check_value(value: &Value) -> Result<()> {
    to_canonical_string(value).map(|_| ())
}

/// The integer in `n` if canonical JSON allows it.
pub(crate) fn canonical_integer(n: &Number) -> Result<i64> {
    if let Some(i) = n.as_i64() {
        if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) {
            return Ok(i);
        }
        return Err(Error::IntegerOutOfRange);
    }
    if n.is_u64() {
        // Larger than i64::MAX, so far out of range.
        return Err(Error::IntegerOutOfRange);
    }
    Err(Error::Float)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let i = canonical_integer(n)?;
            // Writing to a String cannot fail.
            let _ = std::fmt::Write::write_fmt(out, format_args!("{i}"));
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            write_object(out, map, depth, &[])?;
        }
    }
    Ok(())
}

fn write_object(out: &mut String, map: &Map<String, Value>, depth: usize, skip: &[&str]) -> Result<()> {
    // Byte order of UTF-8 == code point order; see the module docs.
    let in_order = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a.as_bytes() < b.as_bytes());
    out.push('{');
    let mut first = true;
    let mut write_entry = |key: &String, value: &Value| -> Result<()> {
        if skip.contains(&key.as_str()) {
            return Ok(());
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(out, key);
        out.push(':');
        write_value(out, value, depth + 1)
    };
    if in_order {
        for (key, value) in map {
            write_entry(key, value)?;
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (key, value) in entries {
            write_entry(key, value)?;
        }
    }
    out.push('}');
    Ok(())
}

/// Writes `s` as a JSON string with the shortest escapes.
pub(crate) fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        // Every byte that needs escaping is ASCII, so slicing at `i` is on a char boundary.
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(v: Value) -> String {
        to_canonical_string(&v).unwrap()
    }

    #[test]
    fn spec_examples() {
        assert_eq!(c(json!({})), "{}");
        assert_eq!(c(json!({"one": 1, "two": "Two"})), r#"{"one":1,"two":"Two"}"#);
        assert_eq!(c(json!({"b": "2", "a": "1"})), r#"{"a":"1","b":"2"}"#);
        assert_eq!(c(json!({"a": "日本語"})), r#"{"a":"日本語"}"#);
        assert_eq!(c(json!({"本": 2, "日": 1})), r#"{"日":1,"本":2}"#);
        assert_eq!(c(json!({"a": null})), r#"{"a":null}"#);
        let nested = json!({"auth": {"success": true, "mxid": "@john.doe:example.com",
            "profile": {"display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}});
        assert_eq!(
            c(nested),
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
        );
    }

    #[test]
    fn escapes_are_shortest() {
        let s: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            c(json!(s)),
            "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\""
        );
        assert_eq!(c(json!("a\"b\\c/d\u{7f}é😀\u{2028}")), "\"a\\\"b\\\\c/d\u{7f}é😀\u{2028}\"");
    }

    #[test]
    fn code_point_order_across_planes() {
        // U+FFFD (EF BF BD) sorts before U+1F600 (F0 9F 98 80); so does code point order.
        // UTF-16 order would put the astral character (D83D …) first: make sure we do not.
        let v = json!({"😀": 1, "\u{fffd}": 2, "z": 3, "Z": 4, "": 5, "é": 6});
        assert_eq!(c(v), "{\"\":5,\"Z\":4,\"z\":3,\"é\":6,\"\u{fffd}\":2,\"😀\":1}");
    }

    #[test]
    fn integer_range() {
        assert_eq!(c(json!(MAX_SAFE_INTEGER)), "9007199254740991");
        assert_eq!(c(json!(-MAX_SAFE_INTEGER)), "-9007199254740991");
        assert_eq!(to_canonical_string(&json!(MAX_SAFE_INTEGER + 1)), Err(Error::IntegerOutOfRange));
        assert_eq!(to_canonical_string(&json!(-MAX_SAFE_INTEGER - 1)), Err(Error::IntegerOutOfRange));
        assert_eq!(to_canonical_string(&json!(u64::MAX)), Err(Error::IntegerOutOfRange));
        assert_eq!(to_canonical_string(&json!(i64::MIN)), Err(Error::IntegerOutOfRange));
        assert_eq!(to_canonical_string(&json!({"a": [1.0]})), Err(Error::Float));
        assert_eq!(to_canonical_string(&json!(-0.0)), Err(Error::Float));
        assert_eq!(c(json!(0)), "0");
    }

    #[test]
    fn depth_limit() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH {
            v = json!([v]);
        }
        assert!(to_canonical_string(&v).is_ok());
        let v = json!({ "a": v });
        assert_eq!(to_canonical_string(&v), Err(Error::TooDeep));
    }
}
