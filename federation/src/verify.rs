//! The first checks on every event from a peer (`FEDERATION.md`, "Checks on every inbound
//! event", steps 1–3), shared by `send`, joins, invites, missing events and backfill:
//!
//! 1. well-formed: at most [`MAX_PDU_BYTES`] as canonical JSON, integers in range, the shape of
//!    a [`Pdu`], its sender's server its origin;
//! 2. signed by its origin with a key valid at its `origin_ts` — failing that it is dropped;
//! 3. its content hash — failing that only its redacted form is kept.
//!
//! The authorization rules (steps 4–6) need the room's graph and run where it is stored.

use serde_json::Value;

use crate::auth::RoomVersion;
use crate::event::Pdu;
use crate::keys::{KeyError, KeyRing};
use crate::wire::{MAX_PDU_BYTES, Verdict};

/// An event that passed steps 1–3.
#[derive(Debug, Clone)]
pub struct Verified {
    pub pdu: Pdu,
    /// The wire form to store: the event as received, or its redacted form when its content
    /// hash did not match.
    pub json: Value,
    /// Its content hash failed: only the redacted form is kept.
    pub redacted: bool,
}

/// Why an event failed steps 1–3, with the verdict to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The event id, when the event was readable enough to compute one.
    pub event_id: Option<String>,
    pub verdict: Verdict,
}

/// Step 1 and the event id: the event's id under `version`'s redaction rules and its parsed
/// form, or why it is malformed (no event id means it gets no verdict).
pub fn well_formed(value: &Value, version: RoomVersion, origin: Option<&str>) -> Result<Pdu, Refusal> {
    let bytes = crypto::to_canonical_bytes(value).map_err(|e| Refusal {
        event_id: None,
        verdict: Verdict::rejected("SW_BAD_REQUEST", format!("not canonical JSON: {e}")),
    })?;
    let event_id = crypto::event_id_with(version.redaction_rules(), value).map_err(|e| Refusal {
        event_id: None,
        verdict: Verdict::rejected("SW_BAD_REQUEST", format!("no event id: {e}")),
    })?;
    let refuse =
        |code: &str, m: String| Refusal { event_id: Some(event_id.clone()), verdict: Verdict::rejected(code, m) };
    if bytes.len() > MAX_PDU_BYTES {
        return Err(refuse(
            "SW_CONTENT_TOO_LARGE",
            format!("the event is {} bytes, over {MAX_PDU_BYTES}", bytes.len()),
        ));
    }
    let pdu = Pdu::parse(&event_id, value).map_err(|e| refuse("SW_BAD_REQUEST", e.to_string()))?;
    if pdu.sender_server() != pdu.origin {
        return Err(refuse(
            "SW_FED_SIGNATURE_MISMATCH",
            format!("sender {} is not of origin {}", pdu.sender, pdu.origin),
        ));
    }
    if let Some(origin) = origin {
        if pdu.origin != origin {
            return Err(refuse(
                "SW_FED_SIGNATURE_MISMATCH",
                format!("event of origin {} in a transaction of {origin}", pdu.origin),
            ));
        }
    }
    Ok(pdu)
}

/// Steps 1–3. `origin` is the transaction's origin when the event came in one (every pdu's
/// origin must be it); `None` for events fetched from any server (auth chains, missing events,
/// backfill), which are still checked against their own origin's signature.
///
/// A key that cannot be fetched now gives a `retry` verdict (the sender will try again), a
/// signature that does not verify a rejection.
pub async fn verify_pdu(
    keys: &KeyRing,
    value: &Value,
    version: RoomVersion,
    origin: Option<&str>,
) -> Result<Verified, Refusal> {
    let pdu = well_formed(value, version, origin)?;
    let rules = version.redaction_rules();
    let id = Some(pdu.event_id.clone());
    let refuse = |v: Verdict| Refusal { event_id: id.clone(), verdict: v };
    let sigs = value
        .get("signatures")
        .and_then(|s| s.get(&pdu.origin))
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refuse(Verdict::rejected("SW_FED_SIGNATURE_MISMATCH", "not signed by its origin")))?;
    let at_ms = u64::try_from(pdu.origin_ts).unwrap_or(0).saturating_mul(1000);
    let mut last = Verdict::rejected("SW_FED_SIGNATURE_MISMATCH", "no signature of its origin verifies");
    let mut verified = false;
    for key_id in sigs.keys().take(4) {
        match keys.event_key(&pdu.origin, key_id, at_ms).await {
            Ok(key) => match crypto::verify_event_with(rules, value, &pdu.origin, key_id, &key) {
                Ok(()) => {
                    verified = true;
                    break;
                }
                Err(e) => last = Verdict::rejected("SW_FED_SIGNATURE_MISMATCH", format!("signature {key_id}: {e}")),
            },
            Err(KeyError::Unavailable(s, e)) => {
                last = Verdict::retry("SW_FED_UNAVAILABLE", format!("keys of {s} cannot be fetched now: {e}"))
            }
            Err(e) => last = Verdict::rejected("SW_FED_SIGNATURE_MISMATCH", e.to_string()),
        }
    }
    if !verified {
        return Err(refuse(last));
    }
    if crypto::check_content_hash(value) {
        return Ok(Verified { pdu, json: value.clone(), redacted: false });
    }
    let redacted = crypto::redact_with(rules, value)
        .map_err(|e| refuse(Verdict::rejected("SW_BAD_REQUEST", format!("cannot redact: {e}"))))?;
    let pdu =
        Pdu::parse(&pdu.event_id, &redacted).map_err(|e| refuse(Verdict::rejected("SW_BAD_REQUEST", e.to_string())))?;
    Ok(Verified { pdu, json: redacted, redacted: true })
}
