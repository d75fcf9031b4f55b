//! The global budget of queued bytes (overload rule (b)): atomics and a `Notify`, no lock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio::sync::Notify;

/// The global budget of queued bytes (overload rule (b)): above `high` the broker stops reading
/// from publishers until the total falls below `low`.
#[derive(Debug)]
pub struct Budget {
    /// Signed: a connection on another thread can take a delivery out of its queue (and
    /// subtract its cost) before the router that queued it has added that cost, so the sum
    /// may dip below zero for a moment. On a cache line of its own: every delivery moves it,
    /// and every connection reads `saturated` on every turn of its loop.
    used: Padded,
    high: u64,
    low: u64,
    saturated: AtomicBool,
    relieved: Notify,
    /// Wakes the relief task ([`super::relief`]) when the budget becomes saturated.
    exceeded: Notify,
}

/// An atomic alone on its cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Padded(AtomicI64);

impl Budget {
    pub fn new(high: u64, low: u64) -> Budget {
        Budget {
            used: Padded(AtomicI64::new(0)),
            high,
            low,
            saturated: AtomicBool::new(false),
            relieved: Notify::new(),
            exceeded: Notify::new(),
        }
    }

    pub fn add(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let used = self
            .used
            .0
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if used > clamp(self.high) && !self.saturated.load(Ordering::Relaxed) {
            self.saturated.store(true, Ordering::Relaxed);
            tracing::warn!(
                queued_bytes = used,
                high = self.high,
                "global queue budget exceeded: pausing reads from publishers"
            );
            // A permit when nobody waits yet: the relief task never misses a saturation.
            self.exceeded.notify_one();
        }
    }

    pub fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let used = self
            .used
            .0
            .fetch_sub(n, Ordering::Relaxed)
            .saturating_sub(n);
        if used < clamp(self.low) && self.saturated.load(Ordering::Relaxed) {
            self.saturated.store(false, Ordering::Relaxed);
            self.relieved.notify_waiters();
        }
    }

    pub fn used(&self) -> u64 {
        u64::try_from(self.used.0.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn is_saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Resolves once the budget is above its high mark.
    pub async fn exceeded(&self) {
        loop {
            let notified = self.exceeded.notified();
            if self.is_saturated() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the budget is below its low mark.
    pub async fn relieved(&self) {
        loop {
            let notified = self.relieved.notified();
            if !self.is_saturated() {
                return;
            }
            notified.await;
        }
    }
}

fn clamp(mark: u64) -> i64 {
    i64::try_from(mark).unwrap_or(i64::MAX)
}
