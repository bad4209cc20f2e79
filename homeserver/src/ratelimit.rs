//! Rate limits as token buckets. [`SendLimiter`]: a bucket per tenant, refilled at
//! `send_rate_per_s` up to `send_burst`. [`Throttle`]: a bucket per key (a participant, an
//! account name, a client address) for one configured [`Rate`]. In memory: limits protect this
//! process, and a restart forgives everyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Rate;

#[derive(Default)]
pub struct SendLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl SendLimiter {
    /// Takes one token for `tenant`. `Err(seconds)` tells how long until one is available.
    pub fn try_take(&self, tenant: &str, rate_per_s: i64, burst: i64, now: Instant) -> Result<(), u64> {
        let rate = rate_per_s.max(1) as f64;
        let burst = burst.max(1) as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(tenant.to_string()).or_insert_with(|| Bucket { tokens: burst, last: now, rate, burst });
        // Limits changed by an admin take effect on the next request.
        b.rate = rate;
        b.burst = burst;
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / b.rate).ceil().max(1.0) as u64)
        }
    }
}

/// One [`Rate`] applied per key. Buckets that have refilled are forgotten now and then, so
/// keys an attacker makes up cost memory only while they are being limited.
pub struct Throttle {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before full ones are swept out.
const SWEEP_AT: usize = 4096;

impl Throttle {
    pub fn new(rate: Rate) -> Throttle {
        Throttle { rate, buckets: Mutex::new(HashMap::new()) }
    }

    fn bucket_rate(&self) -> (f64, f64) {
        (f64::from(self.rate.per_minute.max(1)) / 60.0, f64::from(self.rate.burst.max(1)))
    }

    /// Takes one token for `key`. `Err(seconds)` tells how long until one is available.
    pub fn try_take(&self, key: &str, now: Instant) -> Result<(), u64> {
        self.take(key, now, true)
    }

    /// Whether `key` has a token now, without taking it: for limits that count only failures.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        self.take(key, now, false)
    }

    /// Gives back a token taken by [`Throttle::try_take`] for an attempt that, in the end, did
    /// not count (a login that succeeded, where only failures are limited).
    pub fn refund(&self, key: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(b.burst);
        }
    }

    fn take(&self, key: &str, now: Instant, consume: bool) -> Result<(), u64> {
        let (rate, burst) = self.bucket_rate();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) {
            if !consume {
                return Ok(());
            }
            if buckets.len() >= SWEEP_AT {
                buckets.retain(|_, b| {
                    let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
                    b.tokens + elapsed * b.rate < b.burst
                });
            }
        }
        let b = buckets.entry(key.to_string()).or_insert_with(|| Bucket { tokens: burst, last: now, rate, burst });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            if consume {
                b.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / b.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let l = SendLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.try_take("t", 1, 3, t0).is_ok());
        }
        assert_eq!(l.try_take("t", 1, 3, t0), Err(1));
        assert!(l.try_take("other", 1, 3, t0).is_ok(), "tenants are independent");
        assert!(l.try_take("t", 1, 3, t0 + Duration::from_millis(1100)).is_ok());
        assert!(l.try_take("t", 1, 3, t0 + Duration::from_millis(1100)).is_err());
    }

    #[test]
    fn throttle_limits_each_key_and_forgets_refilled_buckets() {
        let t = Throttle::new(Rate::new(60, 2));
        let t0 = Instant::now();
        assert!(t.check("a", t0).is_ok(), "an unknown key is not limited");
        assert!(t.try_take("a", t0).is_ok());
        assert!(t.try_take("a", t0).is_ok());
        assert_eq!(t.try_take("a", t0), Err(1));
        assert_eq!(t.check("a", t0), Err(1));
        assert!(t.try_take("b", t0).is_ok());
        assert!(t.try_take("a", t0 + Duration::from_millis(1000)).is_ok());
        for i in 0..SWEEP_AT + 10 {
            let _ = t.try_take(&format!("k{i}"), t0 + Duration::from_secs(100 + i as u64));
        }
        let len = t.buckets.lock().unwrap().len();
        assert!(len <= SWEEP_AT, "refilled buckets are swept ({len} kept)");
    }

    #[test]
    fn a_refunded_token_can_be_taken_again() {
        let t = Throttle::new(Rate::new(1, 2));
        let t0 = Instant::now();
        assert!(t.try_take("a", t0).is_ok());
        assert!(t.try_take("a", t0).is_ok());
        assert!(t.try_take("a", t0).is_err());
        t.refund("a");
        assert!(t.try_take("a", t0).is_ok(), "the refund gave one token back");
        assert!(t.try_take("a", t0).is_err());
        t.refund("a");
        t.refund("a");
        t.refund("a");
        assert!(t.try_take("a", t0).is_ok());
        assert!(t.try_take("a", t0).is_ok());
        assert!(t.try_take("a", t0).is_err(), "refunds never fill past the burst");
        t.refund("unknown");
        assert!(t.check("unknown", t0).is_ok());
    }
}
