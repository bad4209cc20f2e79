//! The wire protocol's shapes and limits (contract 8.1): paths, transactions, verdicts, EDUs.
//! Both sides use these, so a limit is stated once.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Every federation endpoint lives under this prefix.
pub const PREFIX: &str = "/_scaiwave/federation/v1";
/// At most this many pdus in one transaction.
pub const MAX_PDUS_PER_TXN: usize = 50;
/// At most this many edus in one transaction.
pub const MAX_EDUS_PER_TXN: usize = 100;
/// A pdu is at most 96 KiB as canonical JSON.
pub const MAX_PDU_BYTES: usize = 96 * 1024;
/// A transaction is at most 8 MiB.
pub const MAX_TXN_BYTES: usize = 8 * 1024 * 1024;
/// `get_missing_events` answers at most this many events.
pub const MAX_MISSING_EVENTS: usize = 20;
/// `backfill` answers at most this many events.
pub const MAX_BACKFILL: usize = 1000;
/// `state` and `send_join` answer at most this many state events (and as many in the auth
/// chain); a larger room is joined in stages (`omit_members`).
pub const MAX_STATE_EVENTS: usize = 50_000;
/// The longest transaction id accepted.
pub const MAX_TXN_ID_LEN: usize = 128;

/// EDU types.
pub mod edu {
    pub const TYPING: &str = "typing";
    pub const PRESENCE: &str = "presence";
}

/// An ephemeral item: `{edu_type, content}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edu {
    pub edu_type: String,
    pub content: Value,
}

/// A transaction as sent: `{origin, origin_ts, pdus, edus}`.
#[derive(Debug, Clone, Serialize)]
pub struct Transaction<'a> {
    pub origin: &'a str,
    /// Unix milliseconds.
    pub origin_ts: u64,
    pub pdus: &'a [Value],
    pub edus: &'a [Edu],
}

/// The receiver's answer about one pdu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored (accepted, or soft-failed: stored, not shown).
    Accepted,
    /// Refused for good.
    Rejected { code: String, message: String },
    /// Not taken now; the sender keeps it queued.
    Retry { code: String, message: String },
}

impl Verdict {
    pub fn rejected(code: &str, message: impl Into<String>) -> Verdict {
        Verdict::Rejected { code: code.into(), message: message.into() }
    }

    pub fn retry(code: &str, message: impl Into<String>) -> Verdict {
        Verdict::Retry { code: code.into(), message: message.into() }
    }

    /// The verdict's wire form: `{}`, `{error: {code, message}}` or `{error: {…, retry: true}}`.
    pub fn to_json(&self) -> Value {
        match self {
            Verdict::Accepted => json!({}),
            Verdict::Rejected { code, message } => json!({"error": {"code": code, "message": message}}),
            Verdict::Retry { code, message } => json!({"error": {"code": code, "message": message, "retry": true}}),
        }
    }

    /// Reads a verdict from the wire; anything unreadable counts as a retry.
    pub fn from_json(value: &Value) -> Verdict {
        let Some(error) = value.get("error") else {
            return if value.is_object() { Verdict::Accepted } else { Verdict::retry("SW_BAD_REQUEST", "no verdict") };
        };
        let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if error.get("retry").and_then(Value::as_bool) == Some(true) {
            Verdict::Retry { code: text("code"), message: text("message") }
        } else {
            Verdict::Rejected { code: text("code"), message: text("message") }
        }
    }
}

/// Reads the `pdus` map of a `send` answer: `event_id → verdict`.
pub fn parse_send_answer(data: &Value) -> Map<String, Value> {
    data.get("pdus").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Percent-encodes one path segment (ids are URL-safe already; this guards the rest).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@:=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Paths of the endpoints, with the prefix, for outbound requests.
pub mod path {
    use super::{PREFIX, segment};

    pub fn send(txn_id: &str) -> String {
        format!("{PREFIX}/send/{}", segment(txn_id))
    }
    pub fn make_join(room_id: &str, fqid: &str) -> String {
        format!("{PREFIX}/make_join/{}/{}", segment(room_id), segment(fqid))
    }
    pub fn send_join(room_id: &str, event_id: &str, omit_members: bool) -> String {
        let q = if omit_members { "?omit_members=true" } else { "" };
        format!("{PREFIX}/send_join/{}/{}{q}", segment(room_id), segment(event_id))
    }
    pub fn make_leave(room_id: &str, fqid: &str) -> String {
        format!("{PREFIX}/make_leave/{}/{}", segment(room_id), segment(fqid))
    }
    pub fn send_leave(room_id: &str, event_id: &str) -> String {
        format!("{PREFIX}/send_leave/{}/{}", segment(room_id), segment(event_id))
    }
    pub fn invite(room_id: &str, event_id: &str) -> String {
        format!("{PREFIX}/invite/{}/{}", segment(room_id), segment(event_id))
    }
    pub fn event(event_id: &str) -> String {
        format!("{PREFIX}/event/{}", segment(event_id))
    }
    pub fn state(room_id: &str, event_id: &str) -> String {
        format!("{PREFIX}/state/{}?event_id={}", segment(room_id), segment(event_id))
    }
    pub fn state_ids(room_id: &str, event_id: &str) -> String {
        format!("{PREFIX}/state_ids/{}?event_id={}", segment(room_id), segment(event_id))
    }
    pub fn event_auth(room_id: &str, event_id: &str) -> String {
        format!("{PREFIX}/event_auth/{}/{}", segment(room_id), segment(event_id))
    }
    pub fn get_missing_events(room_id: &str) -> String {
        format!("{PREFIX}/get_missing_events/{}", segment(room_id))
    }
    pub fn backfill(room_id: &str, from: &[String], limit: usize) -> String {
        let mut p = format!("{PREFIX}/rooms/{}/backfill?", segment(room_id));
        for id in from {
            p.push_str("v=");
            p.push_str(&segment(id));
            p.push('&');
        }
        p.push_str(&format!("limit={limit}"));
        p
    }
    pub fn members(room_id: &str) -> String {
        format!("{PREFIX}/rooms/{}/members", segment(room_id))
    }
    pub fn profile(local_id: &str) -> String {
        format!("{PREFIX}/profile/{}", segment(local_id))
    }
    pub fn media(media_id: &str) -> String {
        format!("{PREFIX}/media/{}", segment(media_id))
    }
    pub fn keys_query() -> String {
        format!("{PREFIX}/keys/query")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip() {
        for v in [Verdict::Accepted, Verdict::rejected("SW_X", "no"), Verdict::retry("SW_FED_DISABLED", "off")] {
            assert_eq!(Verdict::from_json(&v.to_json()), v);
        }
        assert!(matches!(Verdict::from_json(&json!(3)), Verdict::Retry { .. }));
    }

    #[test]
    fn segments_escape_what_is_not_url_safe() {
        assert_eq!(segment("evt-AZaz09_-"), "evt-AZaz09_-");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(
            path::backfill("room-1", &["evt-a".into(), "evt-b".into()], 10).rsplit('?').next(),
            Some("v=evt-a&v=evt-b&limit=10")
        );
    }
}
