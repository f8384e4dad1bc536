//! Per-client budgets: a token bucket per client (GCRA, from `governor`), shared by every route
//! and every connection of that client on this instance.
//!
//! A client is its address, except that an IPv6 address counts by its /64 (one home or one
//! cloud machine gets a whole /64, so keying by the full address would give it 2^64 budgets),
//! and an IPv4 address mapped into IPv6 counts as the IPv4 address.
//!
//! A service keeps two budgets per client (see [`ClientBudget`]): `writes`, spent by every
//! comment on every transport and by every check-in guess, one token each; and `reads`, spent
//! by the rows a read may return (a range, a history, a recovery, a DPlayer list).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use shared_model::{ApiError, ErrorCode};

use crate::error::HttpError;

/// How many checks between sweeps of clients whose buckets are full again (which hold no
/// information and would otherwise grow the map forever).
const CHECKS_PER_SWEEP: u64 = 4_096;

/// The key a client's budgets are kept under: IPv4 addresses as they are, IPv4-mapped IPv6
/// addresses as their IPv4 address, other IPv6 addresses cut to their /64 network.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// A rate limit per client (see [`client_key`]). Cheap to clone; clones share the buckets.
#[derive(Clone)]
pub struct ClientRateLimiter {
    /// `governor`'s keyed limiter is lock-free per key (a sharded map of atomics), so workers do
    /// not contend on a single lock.
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    checks: Arc<AtomicU64>,
    per_sec: NonZeroU32,
    /// What the tokens pay for, in refusals ("comments and check-in guesses").
    what: &'static str,
}

impl std::fmt::Debug for ClientRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRateLimiter")
            .field("what", &self.what)
            .field("per_sec", &self.per_sec)
            .finish_non_exhaustive()
    }
}

impl ClientRateLimiter {
    /// `per_sec` tokens per second sustained, `burst` at once; `what` names what they pay for
    /// in refusals ("rows read").
    pub fn new(what: &'static str, per_sec: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            checks: Arc::new(AtomicU64::new(0)),
            per_sec,
            what,
        }
    }

    /// Takes one token for `client`, or says how long until one is free.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.spend(client, 1)
    }

    /// Takes `cost` tokens for `client` (a cost of 0 counts as 1), or takes none and says how
    /// long until that many are free. A cost above the burst can never be paid at once: it is
    /// refused with the time the sustained rate needs to earn it, so the client slows down.
    pub fn spend(&self, client: IpAddr, cost: u32) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CHECKS_PER_SWEEP == CHECKS_PER_SWEEP - 1 {
            self.limiter.retain_recent();
        }
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&client_key(client), cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_insufficient) => Err(Duration::from_secs_f64(
                f64::from(cost.get()) / f64::from(self.per_sec.get()),
            )),
        }
    }

    /// Takes one token for the client of `req` (its TCP peer address), or refuses with
    /// `429 rate_limited` and a `Retry-After`. A request without a peer address (a test
    /// request) is not limited.
    pub fn check_request(&self, req: &HttpRequest) -> Result<(), HttpError> {
        self.spend_request(req, 1)
    }

    /// Takes `cost` tokens for the client of `req`, or refuses like [`Self::check_request`].
    pub fn spend_request(&self, req: &HttpRequest, cost: u32) -> Result<(), HttpError> {
        self.spend_for(peer_ip(req), cost, None)
    }

    /// Takes `cost` tokens for `client`, or refuses with `429 rate_limited`, a `Retry-After`,
    /// and a message that says what was refused (`what`, say "a range of up to 5000 rows") and
    /// when to try again. An unknown client (`None`: a test request) is not limited.
    pub fn spend_for(
        &self,
        client: Option<IpAddr>,
        cost: u32,
        what: Option<&str>,
    ) -> Result<(), HttpError> {
        let Some(client) = client else { return Ok(()) };
        self.spend(client, cost).map_err(|wait| {
            let secs = retry_after_secs(wait);
            let message = match what {
                Some(what) => format!(
                    "{what}: more {} than your address may have now; try again in {secs} s",
                    self.what
                ),
                None => format!(
                    "too many {} from your address; try again in {secs} s",
                    self.what
                ),
            };
            HttpError {
                error: ApiError::new(ErrorCode::RateLimited, message),
                retry_after_secs: Some(secs),
            }
        })
    }

    /// Takes `cost` tokens for `client`, waiting as long as that takes: for work that should
    /// slow down to the client's rate rather than fail midway (the pages of a long export).
    /// `cost` must not exceed the burst, or this never returns.
    pub async fn spend_or_wait(&self, client: Option<IpAddr>, cost: u32) {
        let Some(client) = client else { return };
        while let Err(wait) = self.spend(client, cost) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The client of `req`: its TCP peer address. `None` for a request without one (built in a
/// test), which no budget limits.
pub fn peer_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|peer| peer.ip())
}

/// What each client may spend on this instance, shared by every route and connection.
#[derive(Clone, Debug)]
pub struct ClientBudget {
    /// Comments on every transport, and check-in guesses: one token each
    /// (`--rate-per-sec`, `--rate-burst`).
    pub writes: ClientRateLimiter,
    /// Rows read: a read costs the rows it may return (`--read-rows-per-sec`,
    /// `--read-rows-burst`).
    pub reads: ClientRateLimiter,
}

impl ClientBudget {
    /// The budgets the settings give every client.
    pub fn from_args(args: &crate::config::ServerArgs) -> Self {
        Self {
            writes: ClientRateLimiter::new(
                "comments and check-in guesses",
                args.rate_per_sec,
                args.rate_burst,
            ),
            reads: ClientRateLimiter::new(
                "rows read",
                args.read_rows_per_sec,
                args.read_rows_burst,
            ),
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

    fn limiter(per_sec: u32, burst: u32) -> ClientRateLimiter {
        ClientRateLimiter::new(
            "tests",
            NonZeroU32::new(per_sec).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    #[test]
    fn burst_then_refusal_per_client() {
        let limiter = limiter(1, 3);
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
    fn ipv6_clients_share_their_slash_64() {
        let limiter = limiter(1, 2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(same_64).is_ok());
        assert!(limiter.check(a).is_err(), "the /64 spent its burst");
        assert!(limiter.check(same_64).is_err());
        assert!(
            limiter.check(other_64).is_ok(),
            "another /64 is another client"
        );
        assert_eq!(
            client_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn costs_spend_several_tokens_and_over_burst_is_refused() {
        let limiter = limiter(10, 20);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limiter.spend(a, 15).is_ok());
        assert!(limiter.spend(a, 10).is_err(), "only 5 are left");
        assert!(limiter.spend(a, 5).is_ok());
        let wait = limiter.spend("10.0.0.2".parse().unwrap(), 50).unwrap_err();
        assert_eq!(wait, Duration::from_secs(5), "50 tokens take 5 s at 10/s");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
