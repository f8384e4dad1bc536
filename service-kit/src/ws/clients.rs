//! Who is at the other end of a connection, and what it may have open and spend.
//!
//! A client is its address, IPv6 by /64 ([`client_key`]), the same key the HTTP routes' budgets
//! use: every socket and every request of one client draws on one budget, and the number of
//! sockets a client may hold open at once is capped ([`ConnectionLimit`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::HttpRequest;
use shared_model::ApiError;

use crate::rate::{ClientBudget, ReadTicket, client_key, peer_ip};

/// The client of one connection: its address and the service's budgets, for whatever a frame
/// costs. A session logic that charges its own frames (say, rows read) gets one with
/// [`Client::of`] when its route builds it.
#[derive(Debug, Clone)]
pub struct Client {
    ip: Option<IpAddr>,
    budget: ClientBudget,
}

impl Client {
    /// The client of `req` (its address as [`peer_ip`] resolves it), spending `budget`.
    pub fn of(req: &HttpRequest, budget: &ClientBudget) -> Self {
        Self {
            ip: peer_ip(req),
            budget: budget.clone(),
        }
    }

    /// The client's address; `None` only for a request without one (an in-process test request),
    /// which is not limited.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The key its budgets are kept under (IPv6 by /64).
    pub fn key(&self) -> Option<IpAddr> {
        self.ip.map(client_key)
    }

    /// Takes `cost` tokens of the client's `writes` budget on this instance (malformed frames),
    /// or refuses with a `rate_limited` error saying when to try again.
    pub fn spend_writes(&self, cost: u32) -> Result<(), ApiError> {
        self.budget
            .writes
            .spend_for(self.ip, cost, None)
            .map_err(|refused| refused.error)
    }

    /// Takes `cost` tokens of the client's `writes` budget for the cluster (comments; see
    /// [`crate::rate::ClientRateLimiter::take_for`]), or refuses like [`Self::spend_writes`].
    pub async fn take_writes(&self, cost: u32) -> Result<(), ApiError> {
        self.budget
            .writes
            .take_for(self.ip, cost, None)
            .await
            .map_err(|refused| refused.error)
    }

    /// Admits one read of the client for `what` (say, "a range") from its `reads` budget, or
    /// refuses with a `rate_limited` error saying when to try again; the ticket is then paid
    /// the rows the read returned (see [`ClientRateLimiter::admit`]).
    ///
    /// [`ClientRateLimiter::admit`]: crate::rate::ClientRateLimiter::admit
    pub fn admit_read(&self, what: &str) -> Result<ReadTicket, ApiError> {
        self.budget
            .reads
            .admit(self.ip, what)
            .map_err(|refused| refused.error)
    }
}

/// The open WebSocket connections of each client, capped. Cheap to clone; clones share the
/// counts. A client with nothing open takes no memory.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionLimit {
    /// At most `max` open connections per client.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts one more connection of `ip`'s client, or `None` when it already has the cap open.
    /// The count drops when the slot is dropped.
    pub fn open(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limit: self.clone(),
            key,
        })
    }

    /// How many connections `ip`'s client has open.
    pub fn open_count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

/// One open connection of a client, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limit: ConnectionLimit,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_per_client_and_frees_on_drop() {
        let limit = ConnectionLimit::new(2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limit.open(a).expect("one");
        let _second = limit.open(same_64).expect("two");
        assert!(limit.open(a).is_none(), "a /64 is one client");
        assert!(limit.open(b).is_some(), "another client has its own count");
        drop(first);
        assert_eq!(limit.open_count(a), 1);
        assert!(limit.open(same_64).is_some());
    }

    #[test]
    fn a_client_with_nothing_open_is_forgotten() {
        let limit = ConnectionLimit::new(1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        drop(limit.open(a));
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
