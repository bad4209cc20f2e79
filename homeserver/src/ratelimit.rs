//! Per-tenant send rate limits: a token bucket per tenant, refilled at `send_rate_per_s` up to
//! `send_burst`. In memory: limits protect this process, and a restart forgives everyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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
}
