//! Per-client budgets: a token bucket per client (GCRA, from `governor`), shared by every route
//! and every connection of that client on this instance.
//!
//! A client is its address, except that an IPv6 address counts by its /64 (one home or one
//! cloud machine gets a whole /64, so keying by the full address would give it 2^64 budgets),
//! and an IPv4 address mapped into IPv6 counts as the IPv4 address.
//!
//! A service keeps two budgets per client (see [`ClientBudget`]): `writes`, spent by every
//! comment on every transport and by every check-in guess, one token each; and `reads`, spent
//! by the rows a read **returns** (a range, a history, a recovery, a DPlayer list, an export
//! page), see [`ClientRateLimiter::admit`].
//!
//! A read cannot know its rows before it ran, so it is priced in two steps, here and nowhere
//! else: [`ClientRateLimiter::admit`] takes one token before the read (a client without one is
//! refused and the database does no work for it), and [`ReadTicket::pay`] charges the rows the
//! read returned (the admission token counts as one of them). What the bucket cannot cover is
//! owed: the bucket is emptied, and the client's next read is refused until the refill has paid
//! the rest. So a client reads at most its burst plus one answer, then its sustained rate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use shared_model::{ApiError, ErrorCode};

use crate::error::HttpError;
use crate::proxies::TrustedProxies;
use crate::shared_limits::SharedLimits;

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

/// Most attempts [`ClientRateLimiter::drain`] makes to take what is left of a bucket.
const DRAIN_ATTEMPTS: u32 = 64;

/// Tokens a client owes: charged after a read, more than its bucket held (see the module docs).
#[derive(Debug, Clone, Copy)]
struct Debt {
    /// Tokens still owed.
    tokens: u64,
    /// When it was last changed, to forget debts the refill has long paid.
    at: Instant,
}

/// A rate limit per client (see [`client_key`]). Cheap to clone; clones share the buckets. One
/// pointer wide: every WebSocket session holds a clone (through its [`ClientBudget`]), so what
/// it shares lives behind one `Arc` rather than being copied into each session.
#[derive(Clone)]
pub struct ClientRateLimiter {
    inner: Arc<Limiter>,
}

/// What a [`ClientRateLimiter`] and its clones share.
struct Limiter {
    /// `governor`'s keyed limiter is lock-free per key (a sharded map of atomics), so workers do
    /// not contend on a single lock.
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// What clients owe past their empty bucket (governor's buckets cannot go below empty).
    /// Only clients whose last read cost more than they had are in it, briefly.
    debts: Mutex<HashMap<IpAddr, Debt>>,
    checks: AtomicU64,
    per_sec: NonZeroU32,
    burst: NonZeroU32,
    /// What the tokens pay for, in refusals ("comments and check-in guesses").
    what: &'static str,
    /// With a bus: where the cluster keeps this budget ([`ClientRateLimiter::take_for`]), and
    /// its name there.
    shared: Option<(SharedLimits, &'static str)>,
}

impl std::fmt::Debug for ClientRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRateLimiter")
            .field("what", &self.inner.what)
            .field("per_sec", &self.inner.per_sec)
            .finish_non_exhaustive()
    }
}

impl ClientRateLimiter {
    /// `per_sec` tokens per second sustained, `burst` at once; `what` names what they pay for
    /// in refusals ("rows read").
    pub fn new(what: &'static str, per_sec: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Self {
            inner: Arc::new(Limiter {
                limiter: RateLimiter::keyed(quota),
                debts: Mutex::default(),
                checks: AtomicU64::new(0),
                per_sec,
                burst,
                what,
                shared: None,
            }),
        }
    }

    /// This budget, kept for the whole cluster in `shared` under `name` by [`Self::take_for`].
    /// Call it before cloning: clones made earlier keep the budget they had.
    pub fn shared(self, shared: Option<SharedLimits>, name: &'static str) -> Self {
        let shared = shared.map(|limits| (limits, name));
        match Arc::try_unwrap(self.inner) {
            Ok(mut limiter) => {
                limiter.shared = shared;
                Self {
                    inner: Arc::new(limiter),
                }
            }
            // Cloned already: those clones keep the buckets they share with this one.
            Err(inner) => Self { inner },
        }
    }

    /// Like [`Self::spend_for`], but for the whole cluster when the budget is shared (one
    /// Redis round trip; the local bucket decides while Redis does not answer).
    pub async fn take_for(
        &self,
        client: Option<IpAddr>,
        cost: u32,
        what: Option<&str>,
    ) -> Result<(), HttpError> {
        let Some(client) = client else { return Ok(()) };
        if let Some((limits, name)) = &self.inner.shared {
            let verdict = limits
                .spend(
                    name,
                    client_key(client),
                    self.inner.per_sec.get(),
                    self.inner.burst.get(),
                    cost,
                )
                .await;
            if let Some(verdict) = verdict {
                return verdict.map_err(|wait| self.refusal(wait, what));
            }
        }
        self.spend_for(Some(client), cost, what)
    }

    /// [`Self::take_for`] for the client of `req`.
    pub async fn take_request(&self, req: &HttpRequest, cost: u32) -> Result<(), HttpError> {
        self.take_for(peer_ip(req), cost, None).await
    }

    /// Takes one token for `client`, or says how long until one is free.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.spend(client, 1)
    }

    /// Takes `cost` tokens for `client` (a cost of 0 counts as 1), or takes none and says how
    /// long until that many are free. A cost above the burst can never be paid at once: it is
    /// refused with the time the sustained rate needs to earn it, so the client slows down.
    pub fn spend(&self, client: IpAddr, cost: u32) -> Result<(), Duration> {
        self.sweep_now_and_then();
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.inner.limiter.check_key_n(&client_key(client), cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_insufficient) => Err(Duration::from_secs_f64(
                f64::from(cost.get()) / f64::from(self.inner.per_sec.get()),
            )),
        }
    }

    /// Takes one token for the client of `req` (see [`peer_ip`]), or refuses with
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
        self.spend(client, cost)
            .map_err(|wait| self.refusal(wait, what))
    }

    /// The `429 rate_limited` for a wait of `wait`, naming `what` was refused.
    fn refusal(&self, wait: Duration, what: Option<&str>) -> HttpError {
        let secs = retry_after_secs(wait);
        let message = match what {
            Some(what) => format!(
                "{what}: more {} than your address may have now; try again in {secs} s",
                self.inner.what
            ),
            None => format!(
                "too many {} from your address; try again in {secs} s",
                self.inner.what
            ),
        };
        HttpError {
            error: ApiError::new(ErrorCode::RateLimited, message),
            retry_after_secs: Some(secs),
        }
    }

    /// Admits one read of `client` (say, "a range"): pays what the client still owes from its
    /// earlier reads, then takes one token, or refuses with `429 rate_limited`, a `Retry-After`
    /// and a message naming `what` when either is short. The read then runs and is charged its
    /// rows with [`ReadTicket::pay`]. An unknown client (`None`: a test request) is not limited.
    pub fn admit(&self, client: Option<IpAddr>, what: &str) -> Result<ReadTicket, HttpError> {
        let ticket = ReadTicket {
            limiter: self.clone(),
            client,
        };
        let Some(ip) = client else { return Ok(ticket) };
        self.try_admit(client_key(ip)).map_err(|wait| {
            let secs = retry_after_secs(wait);
            HttpError {
                error: ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "{what}: too many {} from your address; try again in {secs} s",
                        self.inner.what
                    ),
                ),
                retry_after_secs: Some(secs),
            }
        })?;
        Ok(ticket)
    }

    /// Admits one read of `client` like [`Self::admit`], waiting as long as that takes: for
    /// work that should slow down to the client's rate rather than fail midway (the pages of a
    /// long export).
    pub async fn admit_or_wait(&self, client: Option<IpAddr>) -> ReadTicket {
        if let Some(ip) = client {
            while let Err(wait) = self.try_admit(client_key(ip)) {
                tokio::time::sleep(wait).await;
            }
        }
        ReadTicket {
            limiter: self.clone(),
            client,
        }
    }

    /// Pays `key`'s debt from its bucket as far as it goes, then takes one token; or says how
    /// long until both can be paid.
    fn try_admit(&self, key: IpAddr) -> Result<(), Duration> {
        self.sweep_now_and_then();
        let owed = self.debts().get(&key).map(|debt| debt.tokens);
        if let Some(owed) = owed {
            let paid = self.drain(key, owed);
            let mut debts = self.debts();
            if let Some(debt) = debts.get_mut(&key) {
                debt.tokens = debt.tokens.saturating_sub(paid);
                debt.at = Instant::now();
                if debt.tokens > 0 {
                    return Err(self.time_to_earn(debt.tokens.saturating_add(1)));
                }
                debts.remove(&key);
            }
        }
        match self.inner.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Charges `key` `tokens`: what its bucket holds is taken, the rest is owed.
    fn charge(&self, key: IpAddr, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let paid = self.drain(key, tokens);
        if paid < tokens {
            let mut debts = self.debts();
            let debt = debts.entry(key).or_insert(Debt {
                tokens: 0,
                at: Instant::now(),
            });
            debt.tokens = debt.tokens.saturating_add(tokens - paid);
            debt.at = Instant::now();
        }
    }

    /// Takes up to `most` tokens of `key`'s bucket, as many as it holds (governor takes all of
    /// a cost or nothing, so this tries decreasing amounts), and says how many it took.
    fn drain(&self, key: IpAddr, most: u64) -> u64 {
        let mut paid = 0;
        let mut try_n = u32::try_from(most).unwrap_or(u32::MAX);
        for _ in 0..DRAIN_ATTEMPTS {
            let left = u32::try_from(most - paid).unwrap_or(u32::MAX);
            let Some(n) = NonZeroU32::new(try_n.min(left)) else {
                break;
            };
            match self.inner.limiter.check_key_n(&key, n) {
                Ok(Ok(())) => paid += u64::from(n.get()),
                _ => try_n = n.get() / 2,
            }
        }
        paid
    }

    /// How long the sustained rate takes to earn `tokens`.
    fn time_to_earn(&self, tokens: u64) -> Duration {
        // Exact enough: a few nanoseconds on billions of tokens.
        Duration::from_secs_f64(tokens as f64 / f64::from(self.inner.per_sec.get()))
    }

    fn debts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Debt>> {
        // Every hold changes one entry whole, so a panic elsewhere cannot leave it half-done.
        self.inner
            .debts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every [`CHECKS_PER_SWEEP`] checks, forgets the clients whose buckets are full again and
    /// the debts the refill has paid since (which hold no information and would otherwise
    /// grow the maps forever).
    fn sweep_now_and_then(&self) {
        if self.inner.checks.fetch_add(1, Ordering::Relaxed) % CHECKS_PER_SWEEP
            != CHECKS_PER_SWEEP - 1
        {
            return;
        }
        self.inner.limiter.retain_recent();
        self.debts()
            .retain(|_, debt| debt.at.elapsed() < self.time_to_earn(debt.tokens));
    }
}

/// One admitted read (see [`ClientRateLimiter::admit`]): its admission token is taken; pay the
/// rows the read returned with [`Self::pay`]. Dropping it unpaid (a read that failed) leaves
/// the read at that one token.
#[derive(Debug)]
#[must_use = "a read is charged its rows with pay"]
pub struct ReadTicket {
    limiter: ClientRateLimiter,
    client: Option<IpAddr>,
}

impl ReadTicket {
    /// Charges the client the `rows` its read returned, the admission token counting as one:
    /// what its bucket holds is taken, and the rest is owed, so its next read waits for it.
    pub fn pay(self, rows: usize) {
        let Some(ip) = self.client else { return };
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        self.limiter.charge(client_key(ip), rows.saturating_sub(1));
    }
}

/// The client of `req`, the one address every budget, connection cap, check-in count and the
/// access log use: its TCP peer address, or, when that peer is a trusted proxy (the service's
/// `web::Data<TrustedProxies>`, `--trusted-proxies`), the client the proxy forwarded for (see
/// [`crate::proxies`]). `None` for a request without a peer (built in a test), which no budget
/// limits.
pub fn peer_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    Some(
        match req.app_data::<actix_web::web::Data<TrustedProxies>>() {
            Some(trusted) => trusted.client(peer, req.headers()),
            None => peer,
        },
    )
}

/// What each client may spend, shared by every route and connection: `writes` across the
/// cluster when there is a bus ([`ClientRateLimiter::take_for`]), `reads` on this instance.
#[derive(Clone, Debug)]
pub struct ClientBudget {
    /// Comments on every transport, and check-in guesses: one token each
    /// (`--rate-per-sec`, `--rate-burst`).
    pub writes: ClientRateLimiter,
    /// Rows read: a read is admitted with one token and costs the rows it returns
    /// ([`ClientRateLimiter::admit`]; `--read-rows-per-sec`, `--read-rows-burst`).
    pub reads: ClientRateLimiter,
}

impl ClientBudget {
    /// The budgets the settings give every client. With a bus, `writes` is the cluster's.
    pub fn from_args(args: &crate::config::ServerArgs) -> Self {
        Self {
            writes: ClientRateLimiter::new(
                "comments and check-in guesses",
                args.rate_per_sec,
                args.rate_burst,
            )
            .shared(args.shared_limits(), "writes"),
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
    fn a_read_needs_one_token_and_pays_its_rows_after() {
        let limiter = limiter(10, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        // Empty answers cost their admission token only: far more reads than the old price
        // (the rows they might have returned) would allow.
        for _ in 0..50 {
            limiter.admit(Some(a), "a read").unwrap().pay(0);
        }
        limiter.admit(Some(a), "a read").unwrap().pay(1);
        // 49 left: a read of 40 rows fits, and leaves 9.
        limiter.admit(Some(a), "a read").unwrap().pay(40);
        assert!(limiter.spend(a, 10).is_err(), "9 are left");
        assert!(limiter.spend(a, 9).is_ok());
        let refused = limiter.admit(Some(a), "a range").unwrap_err();
        assert_eq!(refused.error.code, ErrorCode::RateLimited);
        assert!(
            refused.error.message.starts_with("a range: "),
            "{refused:?}"
        );
        assert_eq!(refused.retry_after_secs, Some(1));
        assert!(limiter.admit(None, "a test request").is_ok());
    }

    #[test]
    fn a_read_past_the_bucket_empties_it_and_the_rest_is_owed() {
        let limiter = limiter(1, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        limiter.admit(Some(a), "a read").unwrap().pay(30);
        // 70 left; this read returns 1,070 rows: the bucket is emptied and 1,000 are owed.
        limiter.admit(Some(a), "a read").unwrap().pay(1_070);
        let refused = limiter.admit(Some(a), "a read").unwrap_err();
        let secs = refused.retry_after_secs.unwrap();
        assert!((999..=1_002).contains(&secs), "{secs}");
        // Another client has its own bucket and owes nothing.
        assert!(
            limiter
                .admit(Some("10.0.0.2".parse().unwrap()), "a read")
                .is_ok()
        );
    }

    #[test]
    fn a_debt_is_paid_by_the_refill_then_reads_go_on() {
        let limiter = limiter(1_000, 1_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        limiter.admit(Some(a), "a read").unwrap().pay(1_100);
        assert!(
            limiter.try_admit(a).is_err(),
            "100 owed after an empty bucket"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            limiter.try_admit(a).is_ok(),
            "250 earned pay the 100 and one more"
        );
        assert!(limiter.debts().is_empty());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
