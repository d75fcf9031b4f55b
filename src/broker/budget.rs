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
        // SeqCst here and on the flag (free on x86, where these are locked instructions and
        // plain loads): `add` writes the total then reads the flag's state, `sub` writes the
        // total then reads the flag; each must see the other's write (see `relieve_if_low`).
        let used = self.used.0.fetch_add(n, Ordering::SeqCst).saturating_add(n);
        if used > clamp(self.high)
            && !self.saturated.load(Ordering::Relaxed)
            && self
                .saturated
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                queued_bytes = used,
                high = self.high,
                "global queue budget exceeded: pausing reads from publishers"
            );
            // A permit when nobody waits yet: the relief task never misses a saturation.
            self.exceeded.notify_one();
            // A `sub` that took the total below the low mark between the add above and the
            // flag being set found no flag to clear: look again, or publishers would wait for
            // a relief that already came.
            self.relieve_if_low();
        }
    }

    pub fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let used = self.used.0.fetch_sub(n, Ordering::SeqCst).saturating_sub(n);
        if used < clamp(self.low) {
            self.relieve_if_low();
        }
    }

    /// Clears the flag and wakes the paused publishers when it is set and the total is below
    /// the low mark.
    fn relieve_if_low(&self) {
        if self.saturated.load(Ordering::SeqCst)
            && self.used.0.load(Ordering::SeqCst) < clamp(self.low)
            && self
                .saturated
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
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

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn saturates_above_high_and_is_relieved_below_low_only() {
        let b = Budget::new(1000, 500);
        b.add(900);
        assert!(!b.is_saturated());
        b.add(200);
        assert!(b.is_saturated(), "1100 > 1000");
        b.sub(400);
        assert!(b.is_saturated(), "700: between the marks, no flapping");
        b.sub(300);
        assert!(!b.is_saturated(), "400 < 500");
        assert_eq!(b.used(), 400);
    }

    /// Adds and subs racing across the marks from two threads: once everything is taken out,
    /// the flag must be down (a `sub` below the low mark between an `add`'s total and its
    /// setting of the flag once left it up with nothing queued, every publisher paused).
    #[test]
    fn the_flag_is_down_once_the_total_is_back_to_zero() {
        for _ in 0..20 {
            let b = std::sync::Arc::new(Budget::new(1000, 500));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || {
                        for _ in 0..20_000 {
                            b.add(600);
                            b.sub(600);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker");
            }
            assert_eq!(b.used(), 0);
            assert!(!b.is_saturated(), "saturated with nothing queued");
        }
    }
}
