//! The per-destination sender's decisions, as pure functions: how long to back off, what a
//! transaction's id is, and which events go into the next batch. The homeserver's
//! `fed::sender` is the I/O shell around them (`docs/federation.md`, "Delivery: the
//! per-destination sender").

use crate::wire::{MAX_EDUS_PER_TXN, MAX_PDUS_PER_TXN};

/// At most this many re-sent (`retry: true`) events in one batch, so that they never starve
/// the fresh ones behind them.
pub const MAX_RETRIES_PER_TXN: usize = MAX_PDUS_PER_TXN / 2;

/// The delay before the next attempt after `failures` failures in a row (`failures >= 1`):
/// `base_ms · 2^(failures-1)`, capped at `cap_ms`, of which the upper half is jitter
/// (`jitter` in `[0, 1)`, drawn by the caller) so peers that failed together do not retry in
/// step. Never 0 and never above the cap (a cap below the base wins).
pub fn backoff_ms(failures: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> u64 {
    let cap = cap_ms.max(1);
    let exp = failures.saturating_sub(1).min(63);
    let full = base_ms.max(1).saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX)).min(cap);
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    let half = full / 2;
    (half + ((full - half) as f64 * jitter) as u64).clamp(1, cap)
}

/// A transaction's id, derived from its content: the first and last stream positions, and a
/// hash of its event ids in order and of `stamp`. A batch sent again after a crash therefore
/// carries the same id (the receiver answers it from its record), and a different batch never
/// does, whatever counter state was lost. `stamp` is empty for a batch of fresh events; it
/// tells apart batches whose event list alone could repeat (re-sent `retry: true` events,
/// ephemeral items), and is kept while the same batch is retried.
pub fn txn_id(first_pos: i64, last_pos: i64, event_ids: &[&str], stamp: &str) -> String {
    let mut material = Vec::new();
    // Length-prefixed, so no two different lists give the same bytes.
    for id in event_ids {
        material.extend_from_slice(&(id.len() as u64).to_be_bytes());
        material.extend_from_slice(id.as_bytes());
    }
    material.extend_from_slice(&u64::MAX.to_be_bytes());
    material.extend_from_slice(stamp.as_bytes());
    let digest = crypto::hash::sha256(&material);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{first_pos}.{last_pos}.{hex}")
}

/// An event the destination may need: its stream position, id and origin server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pos: i64,
    pub event_id: String,
    pub origin: String,
    /// Never sent, only passed by the cursor (a room that does not federate, an unreadable
    /// pdu).
    pub skip: bool,
}

impl Candidate {
    fn goes_to(&self, destination: &str) -> bool {
        !self.skip && self.origin != destination
    }
}

/// The next transaction to a destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Positions of the pdus to send, re-sent ones first, then fresh ones in stream order.
    pub pdus: Vec<i64>,
    /// The positions among `pdus` that come from the retry list.
    pub retried: Vec<i64>,
    /// The destination's cursor once the transaction is answered (or at once, when there is
    /// nothing to send but the cursor moved past events that do not concern it).
    pub cursor: i64,
    /// How many queued ephemeral items to take.
    pub edus: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.pdus.is_empty() && self.edus == 0
    }
}

/// Plans the next batch to `destination`, whose cursor is `cursor`.
///
/// - `retries`: events the peer answered `retry: true`, due for another try (oldest first);
/// - `fresh`: the events after the cursor that concern the destination, in stream order, read
///   up to `top` (the committed position when they were read); `fresh_complete` says the read
///   was not cut by its limit, so every event up to `top` was seen;
/// - `edus_queued`: ephemeral items waiting.
///
/// An event is never sent back to its origin (a relayed join of that very server), nor one
/// marked `skip`: the cursor passes it. Without a cut read the cursor moves to `top`; with one,
/// to the last fresh event looked at.
pub fn plan_batch(
    destination: &str,
    cursor: i64,
    top: i64,
    retries: &[Candidate],
    fresh: &[Candidate],
    fresh_complete: bool,
    edus_queued: usize,
) -> Plan {
    let mut plan = Plan { cursor, edus: edus_queued.min(MAX_EDUS_PER_TXN), ..Plan::default() };
    for c in retries.iter().filter(|c| c.goes_to(destination)) {
        if plan.retried.len() == MAX_RETRIES_PER_TXN {
            break;
        }
        if !plan.pdus.contains(&c.pos) {
            plan.pdus.push(c.pos);
            plan.retried.push(c.pos);
        }
    }
    let mut took_all = true;
    for c in fresh {
        if c.pos <= cursor {
            continue;
        }
        if plan.pdus.len() == MAX_PDUS_PER_TXN {
            took_all = false;
            break;
        }
        if c.goes_to(destination) && !plan.pdus.contains(&c.pos) {
            plan.pdus.push(c.pos);
        }
        plan.cursor = plan.cursor.max(c.pos);
    }
    if took_all && fresh_complete {
        plan.cursor = plan.cursor.max(top);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pos: i64, origin: &str) -> Candidate {
        Candidate { pos, event_id: format!("evt-{pos}"), origin: origin.into(), skip: false }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        // No jitter: the lower half of the window.
        assert_eq!(backoff_ms(1, 500, 300_000, 0.0), 250);
        assert_eq!(backoff_ms(2, 500, 300_000, 0.0), 500);
        assert_eq!(backoff_ms(3, 500, 300_000, 0.0), 1000);
        // Full jitter reaches the doubled delay itself.
        assert_eq!(backoff_ms(3, 500, 300_000, 1.0), 2000);
        let d = backoff_ms(4, 500, 300_000, 0.5);
        assert!((2000..=4000).contains(&d), "{d}");
        // Capped, however many failures, and never overflowing.
        for f in [20, 64, 1000, u32::MAX] {
            let d = backoff_ms(f, 500, 300_000, 0.999);
            assert!((150_000..=300_000).contains(&d), "{f}: {d}");
        }
        // Degenerate inputs give a positive delay within the cap.
        assert_eq!(backoff_ms(0, 0, 0, f64::NAN), 1);
        assert!(backoff_ms(1, 10_000, 1000, 0.7) <= 1000);
        assert!(backoff_ms(5, 500, 300_000, -3.0) >= 1);
    }

    #[test]
    fn txn_ids_follow_the_content() {
        let a = txn_id(1, 3, &["evt-1", "evt-3"], "");
        assert_eq!(a, txn_id(1, 3, &["evt-1", "evt-3"], ""), "the same batch, the same id");
        assert!(a.starts_with("1.3."));
        assert_ne!(a, txn_id(1, 3, &["evt-1", "evt-2"], ""));
        assert_ne!(a, txn_id(1, 3, &["evt-3", "evt-1"], ""));
        assert_ne!(a, txn_id(1, 3, &["evt-1", "evt-3"], "retry-17"));
        // No ambiguity from joining: ["a", "b"] is not ["a\nb"].
        assert_ne!(txn_id(0, 0, &["a", "b"], ""), txn_id(0, 0, &["a\nb"], ""));
        assert!(a.len() <= crate::wire::MAX_TXN_ID_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
        assert!(txn_id(-5, i64::MAX, &[], "x").len() <= crate::wire::MAX_TXN_ID_LEN);
    }

    #[test]
    fn batches_are_bounded_and_move_the_cursor() {
        let fresh: Vec<_> = (1..=120).map(|p| c(p, "us.test")).collect();
        let p = plan_batch("peer.test", 0, 130, &[], &fresh, true, 0);
        assert_eq!(p.pdus, (1..=50).collect::<Vec<_>>());
        assert_eq!(p.cursor, 50, "a full batch stops at its last event");
        let p = plan_batch("peer.test", 100, 130, &[], &fresh, true, 250);
        assert_eq!(p.pdus, (101..=120).collect::<Vec<_>>());
        assert_eq!(p.cursor, 130, "everything up to top was seen");
        assert_eq!(p.edus, MAX_EDUS_PER_TXN);
        // A read cut by its limit moves the cursor only as far as it saw.
        let p = plan_batch("peer.test", 100, 130, &[], &fresh, false, 0);
        assert_eq!(p.cursor, 120);
        // Nothing at all: the cursor still reaches top.
        let p = plan_batch("peer.test", 7, 9, &[], &[], true, 0);
        assert!(p.is_empty());
        assert_eq!(p.cursor, 9);
    }

    #[test]
    fn retries_go_first_bounded_and_nothing_goes_back_to_its_origin() {
        let retries: Vec<_> = (1..=40).map(|p| c(p, "us.test")).collect();
        let fresh = vec![c(41, "us.test"), c(42, "peer.test"), c(43, "other.test")];
        let p = plan_batch("peer.test", 40, 43, &retries, &fresh, true, 0);
        assert_eq!(p.retried, (1..=MAX_RETRIES_PER_TXN as i64).collect::<Vec<_>>());
        assert_eq!(&p.pdus[MAX_RETRIES_PER_TXN..], &[41, 43], "the peer's own join is not sent back");
        assert_eq!(p.cursor, 43, "but the cursor passes it");
        // A relayed event of the destination alone: nothing to send, the cursor moves.
        let p = plan_batch("peer.test", 41, 42, &[c(9, "peer.test")], &[c(42, "peer.test")], true, 0);
        assert!(p.is_empty());
        assert_eq!(p.cursor, 42);
        // A skipped event is passed, never sent.
        let skipped = Candidate { skip: true, ..c(3, "us.test") };
        let p = plan_batch("peer.test", 0, 3, &[], &[c(2, "us.test"), skipped], true, 0);
        assert_eq!((p.pdus, p.cursor), (vec![2], 3));
        // A fresh event that is also due for retry is sent once.
        let p = plan_batch("peer.test", 0, 5, &[c(5, "us.test")], &[c(5, "us.test")], true, 0);
        assert_eq!(p.pdus, vec![5]);
    }
}
