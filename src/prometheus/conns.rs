//! The metrics endpoint's open connections, bounded without ever refusing a new one.
//!
//! A cap that refuses new connections once full lets a handful of sockets that never finish a
//! request take `/healthz` down (issue 14 item 11). Here a new connection is always admitted;
//! when its peer address already has `per_peer` connections, or the endpoint `max`, an older
//! one is closed to make room: the oldest that has not been answered yet (half-open, or
//! connected and silent), else the oldest. A health check, which sends its request as soon as
//! it connects and is answered at once, is therefore never queued behind idle sockets; those
//! are also closed by the header read timeout.
//!
//! The table's lock is a leaf ([`Rank::HttpConnections`]), held for a scan of at most `max`
//! entries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::sync::{Mutex, Rank};

/// One open connection.
struct Slot {
    peer: IpAddr,
    /// Cancelled to close the connection.
    evict: CancellationToken,
    /// Set once a request was answered on it.
    answered: Arc<AtomicBool>,
}

/// Open connections of the endpoint, oldest first (ids increase).
pub struct ConnTable {
    max: usize,
    per_peer: usize,
    slots: Mutex<BTreeMap<u64, Slot>>,
    next_id: AtomicU64,
    evicted: AtomicU64,
}

/// A connection's place in the table: removed when dropped.
pub struct Admission {
    table: Arc<ConnTable>,
    id: u64,
    /// Cancelled when the connection is closed to make room for a newer one.
    pub evict: CancellationToken,
    /// To be set once a request is answered (the connection is no longer half-open).
    pub answered: Arc<AtomicBool>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.table.slots.lock().remove(&self.id);
    }
}

impl ConnTable {
    /// At most `max` connections, and `per_peer` from one address (both at least 1).
    pub fn new(max: usize, per_peer: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            max: max.max(1),
            per_peer: per_peer.max(1),
            slots: Mutex::new(Rank::HttpConnections, BTreeMap::new()),
            next_id: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `peer`, closing an older one first if a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        let answered = Arc::new(AtomicBool::new(false));
        {
            let mut slots = self.slots.lock();
            let from_peer = slots.values().filter(|s| s.peer == peer).count();
            let victim = if from_peer >= self.per_peer {
                Self::victim(&slots, |s| s.peer == peer)
            } else if slots.len() >= self.max {
                Self::victim(&slots, |_| true)
            } else {
                None
            };
            if let Some(slot) = victim.and_then(|v| slots.remove(&v)) {
                slot.evict.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            slots.insert(
                id,
                Slot {
                    peer,
                    evict: evict.clone(),
                    answered: answered.clone(),
                },
            );
        }
        Admission {
            table: self.clone(),
            id,
            evict,
            answered,
        }
    }

    /// The oldest connection among those `eligible` that was not answered yet, else the
    /// oldest.
    fn victim(slots: &BTreeMap<u64, Slot>, eligible: impl Fn(&Slot) -> bool) -> Option<u64> {
        let mut oldest = None;
        for (id, slot) in slots.iter().filter(|(_, s)| eligible(s)) {
            if !slot.answered.load(Ordering::Relaxed) {
                return Some(*id);
            }
            oldest = oldest.or(Some(*id));
        }
        oldest
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.slots.lock().len()
    }

    /// Connections closed to make room for newer ones since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_peer_at_its_cap_loses_its_own_oldest_connection() {
        let t = ConnTable::new(10, 2);
        let a1 = t.admit(ip(1));
        let a2 = t.admit(ip(1));
        let b = t.admit(ip(2));
        let a3 = t.admit(ip(1));
        assert!(a1.evict.is_cancelled(), "oldest of the same peer");
        assert!(!a2.evict.is_cancelled() && !b.evict.is_cancelled());
        assert!(!a3.evict.is_cancelled());
        assert_eq!((t.open(), t.evicted()), (3, 1));
        drop(a1);
        assert_eq!(
            t.open(),
            3,
            "an evicted connection is already out of the table"
        );
    }

    #[test]
    fn when_full_the_oldest_unanswered_connection_goes_first() {
        let t = ConnTable::new(3, 3);
        let scraper = t.admit(ip(1));
        scraper.answered.store(true, Ordering::Relaxed);
        let idle = t.admit(ip(2));
        let _other = t.admit(ip(3));
        let _new = t.admit(ip(4));
        assert!(
            idle.evict.is_cancelled(),
            "half-open before an answered one"
        );
        assert!(!scraper.evict.is_cancelled());
        assert_eq!(t.open(), 3);
    }

    #[test]
    fn the_table_never_exceeds_its_cap_and_shrinks_on_drop() {
        let t = ConnTable::new(8, 4);
        let held: Vec<_> = (0..200).map(|i| t.admit(ip((i % 50) as u8))).collect();
        assert_eq!(t.open(), 8);
        assert_eq!(t.evicted(), 192);
        drop(held);
        assert_eq!(t.open(), 0);
    }
}
