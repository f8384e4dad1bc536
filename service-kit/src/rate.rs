//! Per-client rate limits: a token bucket per client address (GCRA, from `governor`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::HttpError;

/// How many checks between sweeps of clients whose buckets are full again (which hold no
/// information and would otherwise grow the map forever).
const CHECKS_PER_SWEEP: u64 = 4_096;

/// A rate limit per client address. Cheap to clone; clones share the buckets.
#[derive(Clone)]
pub struct ClientRateLimiter {
    /// `governor`'s keyed limiter is lock-free per key (a sharded map of atomics), so workers do
    /// not contend on a single lock.
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    checks: Arc<AtomicU64>,
}

impl ClientRateLimiter {
    /// `per_sec` comments per second sustained, `burst` at once.
    pub fn new(per_sec: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The limit the settings give every client (`--rate-per-sec`, `--rate-burst`).
    pub fn from_args(args: &crate::config::ServerArgs) -> Self {
        Self::new(args.rate_per_sec, args.rate_burst)
    }

    /// Takes one token for `client`, or says how long until one is free.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CHECKS_PER_SWEEP == CHECKS_PER_SWEEP - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Takes one token for the client of `req` (its TCP peer address), or refuses with
    /// `429 rate_limited` and a `Retry-After`. A request without a peer address (a test
    /// request) is not limited.
    pub fn check_request(&self, req: &HttpRequest) -> Result<(), HttpError> {
        match req.peer_addr() {
            Some(peer) => self
                .check(peer.ip())
                .map_err(|wait| HttpError::rate_limited(retry_after_secs(wait))),
            None => Ok(()),
        }
    }
}

/// Whole seconds for a `Retry-After` header: at least 1, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    u64::try_from(secs).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_client() {
        let limiter =
            ClientRateLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limiter.check(b).is_ok(),
            "another client has its own bucket"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
