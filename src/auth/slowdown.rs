//! Slows repeated failed logins from one peer address: the refusal of a login is held back for
//! a delay that grows with the failures the address made recently, so a client guessing
//! passwords one after the other gets a few answers per second at most instead of hundreds.
//!
//! [`LoginSlowdown`] is keyed by the peer's address only (never the port, which a client picks
//! afresh for every connection), and is shared by everything that checks credentials: the MQTT
//! CONNECT today, an HTTP admin API later. It only computes delays; the caller waits them out
//! in its own task (an async sleep), so nobody else is slowed and no thread is held.
//!
//! The rules:
//! - The first [`SlowdownPolicy::free_failures`] failures of an address are answered at once;
//!   the next waits [`SlowdownPolicy::initial_delay`], and every further failure doubles the
//!   delay up to [`SlowdownPolicy::max_delay`].
//! - Only refusals are delayed. A correct password is accepted at once whatever the address's
//!   record, so an attacker cannot lock a real user out by failing on purpose; an address with
//!   no recent failures is never delayed at all.
//! - A success does not clear the record: otherwise an attacker holding one valid account could
//!   reset its slowdown between guesses. The record is forgotten once the address has not
//!   failed for [`SlowdownPolicy::forget_after`].
//! - Memory is bounded: at most [`SlowdownPolicy::max_peers`] addresses are tracked; when the
//!   table is full, forgotten entries are dropped and then the address that failed longest ago.
//! - A client on a unix-socket listener has no address: it is tracked by its user id
//!   ([`SlowdownKey::Uid`], from SO_PEERCRED), so a local user guessing passwords is slowed like
//!   a remote host, without slowing the other local users.
//! - An IPv6 address is tracked by its /64 prefix (one host usually owns a whole /64, so
//!   tracking single addresses would be free to evade); an IPv4-mapped IPv6 address counts as
//!   the IPv4 address.
//!
//! The table's lock is a leaf of the lock hierarchy ([`Rank::LoginSlowdown`]): it is held for a
//! map lookup, never across an `.await`, and nothing else is taken while holding it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::config::AuthSection;
use crate::metrics::Counter;
use crate::sync::{Mutex, Rank};

/// How failed logins are slowed: see the [module doc](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowdownPolicy {
    /// Failures of one address answered without delay.
    pub free_failures: u32,
    /// Delay of the first slowed failure; each further one doubles it.
    pub initial_delay: Duration,
    /// Longest delay. Zero turns the slowdown off (nothing is tracked).
    pub max_delay: Duration,
    /// An address that has not failed for this long is forgotten.
    pub forget_after: Duration,
    /// Most addresses tracked at once.
    pub max_peers: usize,
}

impl Default for SlowdownPolicy {
    /// The defaults of `[auth]`: 3 free failures, then 100 ms doubling to 3 s, forgotten after
    /// 10 minutes, at most 10,000 addresses.
    fn default() -> Self {
        SlowdownPolicy::from_config(&AuthSection::default())
    }
}

impl SlowdownPolicy {
    /// The policy the `[auth] login_*` keys describe.
    pub fn from_config(a: &AuthSection) -> SlowdownPolicy {
        SlowdownPolicy {
            free_failures: a.login_failures_before_delay,
            initial_delay: a.login_delay,
            max_delay: a.login_delay_max,
            forget_after: a.login_failure_memory,
            max_peers: a.login_tracked_peers,
        }
    }

    /// Whether failures are tracked at all.
    pub fn is_enabled(&self) -> bool {
        !self.max_delay.is_zero() && self.max_peers > 0
    }

    /// The delay of a refusal that is an address's `failures`-th recent failure.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if !self.is_enabled() || failures <= self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures - 1).min(31);
        self.initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// One tracked address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since the address was last forgotten.
    failures: u32,
    /// When it last failed.
    last: Instant,
}

/// The tracked addresses.
#[derive(Debug)]
struct Table {
    peers: HashMap<SlowdownKey, Entry>,
    /// When forgotten entries were last dropped.
    swept: Instant,
}

/// Failed logins per peer address and the delay they call for: see the [module doc](self).
#[derive(Debug)]
pub struct LoginSlowdown {
    policy: SlowdownPolicy,
    table: Mutex<Table>,
    delayed: Counter,
}

/// Who failed: a peer address, or the user id of a unix-socket peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlowdownKey {
    /// A TCP peer's address (normalised by [`peer_key`]).
    Ip(IpAddr),
    /// A unix-socket peer's user id.
    Uid(u32),
}

impl From<IpAddr> for SlowdownKey {
    fn from(ip: IpAddr) -> SlowdownKey {
        SlowdownKey::Ip(ip)
    }
}

/// The normalised form of `key`: addresses by [`peer_key`].
fn table_key(key: SlowdownKey) -> SlowdownKey {
    match key {
        SlowdownKey::Ip(ip) => SlowdownKey::Ip(peer_key(ip)),
        uid => uid,
    }
}

/// The key an address is tracked under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl LoginSlowdown {
    /// An empty table applying `policy`.
    pub fn new(policy: SlowdownPolicy) -> LoginSlowdown {
        LoginSlowdown {
            policy,
            table: Mutex::new(
                Rank::LoginSlowdown,
                Table {
                    peers: HashMap::new(),
                    swept: Instant::now(),
                },
            ),
            delayed: Counter::default(),
        }
    }

    /// The policy applied.
    pub fn policy(&self) -> &SlowdownPolicy {
        &self.policy
    }

    /// Records a failed login from `ip` at `now` and returns how long to hold back its refusal
    /// (zero for the first [`SlowdownPolicy::free_failures`] recent failures).
    pub fn record_failure(&self, ip: impl Into<SlowdownKey>, now: Instant) -> Duration {
        if !self.policy.is_enabled() {
            return Duration::ZERO;
        }
        let key = table_key(ip.into());
        let failures = {
            let mut table = self.table.lock();
            self.sweep(&mut table, now);
            if !table.peers.contains_key(&key) {
                self.make_room(&mut table, now);
            }
            let entry = table.peers.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if self.forgotten(entry, now) {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = now;
            entry.failures
        };
        let delay = self.policy.delay_after(failures);
        if !delay.is_zero() {
            self.delayed.inc();
        }
        delay
    }

    /// The delay the last failure recorded for `ip` was given, as of `now`: zero for an address
    /// with no recent failures. Records nothing (for a caller that wants to hold back a request
    /// from an address being slowed, or to show it).
    pub fn delay_for(&self, ip: impl Into<SlowdownKey>, now: Instant) -> Duration {
        let table = self.table.lock();
        match table.peers.get(&table_key(ip.into())) {
            Some(e) if !self.forgotten(e, now) => self.policy.delay_after(e.failures),
            _ => Duration::ZERO,
        }
    }

    /// Recent failures recorded for `ip` as of `now`.
    pub fn failures(&self, ip: impl Into<SlowdownKey>, now: Instant) -> u32 {
        let table = self.table.lock();
        match table.peers.get(&table_key(ip.into())) {
            Some(e) if !self.forgotten(e, now) => e.failures,
            _ => 0,
        }
    }

    /// Forgets `ip`'s failures (an operator unblocking an address). Returns whether it had any.
    pub fn forget(&self, ip: impl Into<SlowdownKey>) -> bool {
        self.table
            .lock()
            .peers
            .remove(&table_key(ip.into()))
            .is_some()
    }

    /// Addresses in the table (at most [`SlowdownPolicy::max_peers`]; entries past
    /// `forget_after` are dropped lazily, on a later failure).
    pub fn tracked_peers(&self) -> usize {
        self.table.lock().peers.len()
    }

    /// Refusals given a delay since start.
    pub fn delayed_total(&self) -> u64 {
        self.delayed.get()
    }

    fn forgotten(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last) >= self.policy.forget_after
    }

    /// Drops forgotten entries, at most once per `forget_after` (so the cost is amortised).
    fn sweep(&self, table: &mut Table, now: Instant) {
        if now.saturating_duration_since(table.swept) < self.policy.forget_after {
            return;
        }
        table.swept = now;
        table.peers.retain(|_, e| !self.forgotten(e, now));
    }

    /// Before a new address is added to a full table: drops the forgotten entries, and if none
    /// was, the address whose last failure is the oldest.
    fn make_room(&self, table: &mut Table, now: Instant) {
        if table.peers.len() < self.policy.max_peers {
            return;
        }
        table.peers.retain(|_, e| !self.forgotten(e, now));
        table.swept = now;
        while table.peers.len() >= self.policy.max_peers {
            let oldest = table
                .peers
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => table.peers.remove(&k),
                None => break,
            };
        }
    }
}

#[cfg(test)]
#[path = "slowdown_tests.rs"]
mod tests;
