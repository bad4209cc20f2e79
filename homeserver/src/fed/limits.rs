//! Limits on peers (contract 8.1): how many requests one origin may have in flight here, and
//! how many it may start per second (a token bucket with a burst). Over either, the peer gets
//! 429 `SW_RATE_LIMIT_EXCEEDED` with `Retry-After`.
//!
//! Counted per *verified* origin: [`PeerLimits::admit`] is called by the
//! [`SignedRequest`](super::request::SignedRequest) extractor once the signature checks out, and
//! the [`Permit`] it returns rides in the extracted request, so the in-flight slot is held
//! until the handler is done. Keying on the claimed origin before verification would let
//! anyone spend a real peer's budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{FederationSettings, Rate};
use crate::error::ApiError;
use crate::ratelimit::Throttle;

/// How long a peer over its in-flight limit is told to wait: a slot frees as soon as one of its
/// requests ends.
const INFLIGHT_RETRY_AFTER_SECS: u64 = 1;

/// The per-origin limits. One per server.
pub struct PeerLimits {
    max_inflight: usize,
    inflight: Arc<Mutex<HashMap<String, usize>>>,
    rate: Throttle,
}

/// One request in flight for an origin; dropping it frees the slot.
pub struct Permit {
    origin: String,
    inflight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.origin) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.origin);
            }
        }
    }
}

impl PeerLimits {
    pub fn new(settings: &FederationSettings) -> PeerLimits {
        let per_minute = settings.requests_per_origin_per_s.max(1).saturating_mul(60);
        PeerLimits {
            max_inflight: settings.max_inflight_per_origin.max(1) as usize,
            inflight: Default::default(),
            rate: Throttle::new(Rate::new(per_minute, settings.requests_per_origin_burst.max(1))),
        }
    }

    /// Admits one request of `origin` now, or says how long it must wait. The in-flight check
    /// comes first, so a request refused for concurrency does not also spend a token.
    pub fn admit(&self, origin: &str, now: Instant) -> Result<Permit, ApiError> {
        {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(origin.to_string()).or_insert(0);
            if *n >= self.max_inflight {
                return Err(ApiError::RateLimited(
                    format!("{origin} has {} requests in flight here, the most allowed", self.max_inflight),
                    INFLIGHT_RETRY_AFTER_SECS,
                ));
            }
            *n += 1;
        }
        let permit = Permit { origin: origin.to_string(), inflight: self.inflight.clone() };
        self.rate
            .try_take(origin, now)
            .map_err(|secs| ApiError::RateLimited(format!("{origin} is over its request rate here"), secs))?;
        Ok(permit)
    }

    /// Requests of `origin` in flight now.
    pub fn inflight(&self, origin: &str) -> usize {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).get(origin).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(inflight: u32, per_s: u32, burst: u32) -> PeerLimits {
        PeerLimits::new(&FederationSettings {
            max_inflight_per_origin: inflight,
            requests_per_origin_per_s: per_s,
            requests_per_origin_burst: burst,
            ..FederationSettings::default()
        })
    }

    fn retry_after(e: ApiError) -> u64 {
        match e {
            ApiError::RateLimited(_, secs) => secs,
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[test]
    fn inflight_is_bounded_per_origin_and_freed_on_drop() {
        let l = limits(2, 1000, 1000);
        let now = Instant::now();
        let a = l.admit("beta.test", now).unwrap();
        let _b = l.admit("beta.test", now).unwrap();
        assert_eq!(retry_after(l.admit("beta.test", now).err().unwrap()), 1);
        // Another origin has its own slots.
        let _g = l.admit("gamma.test", now).unwrap();
        drop(a);
        assert_eq!(l.inflight("beta.test"), 1);
        let _c = l.admit("beta.test", now).unwrap();
    }

    #[test]
    fn rate_has_a_burst_then_refills() {
        let l = limits(100, 2, 3);
        let now = Instant::now();
        for _ in 0..3 {
            drop(l.admit("beta.test", now).unwrap());
        }
        assert!(retry_after(l.admit("beta.test", now).err().unwrap()) >= 1);
        // A refused request holds no slot.
        assert_eq!(l.inflight("beta.test"), 0);
        assert!(l.admit("gamma.test", now).is_ok());
        assert!(l.admit("beta.test", now + Duration::from_secs(1)).is_ok());
    }
}
