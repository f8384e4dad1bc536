//! Limits kept in Redis, so that N instances on one bus enforce them as one: a client's write
//! budget (which protects the shared database) and a check-in's limits on wrong codes (which
//! protect the check-in) hold for the cluster, not per instance.
//!
//! Each is one Lua script, run atomically by Redis on its own clock (so instances' clocks do
//! not matter): [`GCRA`], the same generic cell rate algorithm `governor` runs locally, and
//! [`WRONG_CODE`], a check-in's wrong-code bookkeeping. A guess *reserves* a wrong code before
//! its code is compared and gives it back when the code was right ([`RIGHT_CODE`]), so two
//! guesses racing on two instances cannot both slip past a limit.
//!
//! While Redis cannot answer (within [`REDIS_TIMEOUT`]), callers fall back on their local limits
//! and this module does not ask again for [`RETRY_AFTER`]: an instance cut off from the bus is
//! limited as when it runs alone.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::bus::BusUrl;

/// How long one call may take before the local limits decide.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// How long after a failure Redis is not asked again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// GCRA over a key holding the "theoretical arrival time" in microseconds of Redis's clock.
/// `ARGV`: microseconds per token, burst (tokens), cost (tokens). Returns 0 when the tokens were
/// taken, else how many microseconds until they could be.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allowed_at = new_tat - burst * interval
if allowed_at > now then return allowed_at - now end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
";

/// A check-in's wrong-code bookkeeping. `KEYS`: the client's count of wrong codes, the
/// check-in's bucket (GCRA as above). `ARGV`: the per-client limit, microseconds per token of
/// the check-in-wide budget, its burst, how long to keep the keys (ms). The check-in-wide
/// budget keeps half of its burst for clients that have not guessed wrong yet.
///
/// Returns `{0, tries_left}` when the guess may be compared (a wrong code is reserved: give it
/// back with [`RIGHT_CODE`] if the code was right), `{1, limit}` when the client has given all
/// its wrong codes, `{2, wait_us}` when the check-in's budget is spent.
const WRONG_CODE: &str = r"
local limit = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local keep_ms = tonumber(ARGV[4])
local wrong = tonumber(redis.call('GET', KEYS[1]) or '0')
if wrong >= limit then return {1, limit} end
local floor = 0
if wrong > 0 then floor = math.floor(burst / 2) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[2]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - (burst - floor) * interval
if allowed_at > now then return {2, allowed_at - now} end
redis.call('SET', KEYS[2], string.format('%.0f', new_tat), 'PX', keep_ms)
redis.call('SET', KEYS[1], wrong + 1, 'PX', keep_ms)
return {0, limit - wrong - 1}
";

/// Gives back a wrong code [`WRONG_CODE`] reserved for a guess whose code was right. `KEYS` as
/// there; `ARGV`: microseconds per token of the check-in-wide budget.
const RIGHT_CODE: &str = r"
local wrong = tonumber(redis.call('GET', KEYS[1]) or '0')
if wrong > 0 then redis.call('DECR', KEYS[1]) end
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat > 0 then
  redis.call('SET', KEYS[2], string.format('%.0f', tat - tonumber(ARGV[1])), 'KEEPTTL')
end
return 0
";

/// Why a guess may not be compared, as [`SharedLimits::reserve_wrong_code`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongCodeVerdict {
    /// Compare it; a wrong code is reserved, `tries_left` more after this one.
    Compare {
        /// Wrong codes the client may give after this one.
        tries_left: u32,
    },
    /// The client gave all its wrong codes.
    TooManyFromClient {
        /// The limit.
        limit: u32,
    },
    /// The check-in's budget of wrong codes is spent for now.
    Throttled {
        /// How long until a guess may be compared.
        retry_after: Duration,
    },
}

/// The limits of every instance on one bus. Cheap to clone.
#[derive(Clone)]
pub struct SharedLimits {
    client: redis::Client,
    /// Keys start with it: the bus channel, so deployments sharing a Redis stay apart.
    prefix: Arc<str>,
    gcra: Arc<redis::Script>,
    wrong_code: Arc<redis::Script>,
    right_code: Arc<redis::Script>,
    /// The connection, once made; `Err(until)` while Redis is not asked again. A std mutex:
    /// held to clone a handle or note a failure, never across an await.
    conn: Arc<Mutex<Result<Option<redis::aio::MultiplexedConnection>, Instant>>>,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Limits kept in the Redis at `url`, under keys starting with `prefix`.
    pub fn new(url: &BusUrl, prefix: &str) -> Self {
        Self {
            client: redis::Client::open(url.as_str()).expect("checked when parsed"),
            prefix: prefix.into(),
            gcra: Arc::new(redis::Script::new(GCRA)),
            wrong_code: Arc::new(redis::Script::new(WRONG_CODE)),
            right_code: Arc::new(redis::Script::new(RIGHT_CODE)),
            conn: Arc::new(Mutex::new(Ok(None))),
        }
    }

    /// The key of `what` for `client`.
    fn key(&self, what: &str, client: IpAddr) -> String {
        format!("{}:limit:{what}:{client}", self.prefix)
    }

    /// A connection, unless Redis failed a moment ago.
    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        {
            let state = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            match &*state {
                Ok(Some(conn)) => return Some(conn.clone()),
                Err(until) if Instant::now() < *until => return None,
                _ => {}
            }
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Ok(Some(conn.clone()));
                Some(conn)
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// Notes that Redis failed: the local limits decide for a while.
    fn failed(&self, e: &dyn std::fmt::Display) {
        log::warn!("shared limits: Redis failed ({e}); local limits decide for {RETRY_AFTER:?}");
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) =
            Err(Instant::now() + RETRY_AFTER);
    }

    /// Takes `cost` tokens of `client`'s budget `what` (`per_sec` sustained, `burst` at once)
    /// for the whole cluster: `Some(Ok(()))` taken, `Some(Err(wait))` refused, `None` when
    /// Redis did not answer (decide locally).
    pub async fn spend(
        &self,
        what: &str,
        client: IpAddr,
        per_sec: u32,
        burst: u32,
        cost: u32,
    ) -> Option<Result<(), Duration>> {
        let mut conn = self.connection().await?;
        let interval_us = 1_000_000 / u64::from(per_sec.max(1));
        let mut call = self.gcra.key(self.key(what, client));
        call.arg(interval_us.max(1)).arg(burst).arg(cost.max(1));
        match call.invoke_async::<i64>(&mut conn).await {
            Ok(0) => Some(Ok(())),
            Ok(wait_us) => Some(Err(Duration::from_micros(wait_us.unsigned_abs()))),
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// The keys of `client`'s wrong codes for check-in `checkin`, and of the check-in's budget.
    fn wrong_keys(&self, checkin: i64, client: IpAddr) -> [String; 2] {
        [
            format!("{}:checkin:{checkin}:wrong:{client}", self.prefix),
            format!("{}:checkin:{checkin}:budget", self.prefix),
        ]
    }

    /// Before comparing `client`'s guess at check-in `checkin`: may it be compared, within
    /// `per_client` wrong codes per client and a check-in-wide budget of `burst` wrong codes
    /// refilled one per `refill`? A wrong code is reserved when it may (give it back with
    /// [`Self::right_code`]). `None` when Redis did not answer (decide locally).
    pub async fn reserve_wrong_code(
        &self,
        checkin: i64,
        client: IpAddr,
        per_client: u32,
        burst: u32,
        refill: Duration,
        keep: Duration,
    ) -> Option<WrongCodeVerdict> {
        let mut conn = self.connection().await?;
        let [wrong, budget] = self.wrong_keys(checkin, client);
        let mut call = self.wrong_code.key(wrong);
        call.key(budget)
            .arg(per_client)
            .arg(micros(refill))
            .arg(burst)
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
        match call.invoke_async::<(i64, i64)>(&mut conn).await {
            Ok((0, left)) => Some(WrongCodeVerdict::Compare {
                tries_left: u32::try_from(left).unwrap_or(0),
            }),
            Ok((1, limit)) => Some(WrongCodeVerdict::TooManyFromClient {
                limit: u32::try_from(limit).unwrap_or(per_client),
            }),
            Ok((_, wait_us)) => Some(WrongCodeVerdict::Throttled {
                retry_after: Duration::from_micros(wait_us.unsigned_abs()),
            }),
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// The guess [`Self::reserve_wrong_code`] let through had the right code: give the wrong
    /// code back.
    pub async fn right_code(&self, checkin: i64, client: IpAddr, refill: Duration) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let [wrong, budget] = self.wrong_keys(checkin, client);
        let mut call = self.right_code.key(wrong);
        call.key(budget).arg(micros(refill));
        if let Err(e) = call.invoke_async::<i64>(&mut conn).await {
            self.failed(&e);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
