//! Token buckets for publish rate limits (messages/s and bytes/s), per client and per listener.
//! Pure: the caller passes the time in, so the arithmetic is tested without clocks.
//!
//! [`TokenBucket`] belongs to one connection. [`SharedBucket`] is the same bucket shared by every
//! connection of a listener: one atomic, no lock, because it is taken on every PUBLISH.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ListenerConfig;

/// A bucket that refills at `rate` tokens per second up to `capacity` (one second's worth, so a
/// client may burst for a second and is then held to the rate).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` per second; the bucket starts full.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = rate as f64;
        TokenBucket {
            rate,
            capacity: rate.max(1.0),
            tokens: rate.max(1.0),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
    }

    /// Takes `n` tokens if there are enough; otherwise takes nothing and returns how long until
    /// there will be.
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = (n as f64).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (n - self.tokens) / self.rate.max(f64::MIN_POSITIVE),
        ))
    }

    /// Takes `n` tokens even into debt (for backpressure: the caller then waits `debt / rate`).
    /// Returns how long until the bucket is out of debt (zero when it is not in debt).
    pub fn take_debt(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.max(f64::MIN_POSITIVE))
        }
    }
}

/// [`SharedBucket`] time unit: 1/16 ns, so even a byte rate of several GB/s costs at least one
/// tick per byte, while a `u64` of ticks still lasts 36 years.
const TICKS_PER_SEC: u64 = 16_000_000_000;

/// A [`TokenBucket`] with the same behaviour (one second of burst, then the rate; starts full),
/// shared between threads without a lock. It is the generic cell rate algorithm: instead of a
/// token count it keeps the time at which the bucket will be full again (`tat`), so taking
/// tokens is one compare-and-swap on one word.
#[derive(Debug)]
pub struct SharedBucket {
    rate: u64,
    base: Instant,
    /// Ticks since `base` at which the bucket is full again; at or before now means full.
    tat: AtomicU64,
}

impl SharedBucket {
    /// `rate` per second (at least 1); the bucket starts full.
    pub fn new(rate: u64, now: Instant) -> SharedBucket {
        SharedBucket {
            rate: rate.max(1),
            base: now,
            tat: AtomicU64::new(0),
        }
    }

    fn ticks(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(ns.saturating_mul(u128::from(TICKS_PER_SEC / 1_000_000_000)))
            .unwrap_or(u64::MAX)
    }

    /// The ticks `n` tokens take to refill.
    fn cost(&self, n: u64) -> u64 {
        let c = u128::from(n) * u128::from(TICKS_PER_SEC) / u128::from(self.rate);
        u64::try_from(c).unwrap_or(u64::MAX)
    }

    fn duration(ticks: u64) -> Duration {
        Duration::from_nanos(ticks / (TICKS_PER_SEC / 1_000_000_000))
    }

    /// As [`TokenBucket::try_take`]: takes `n` tokens if there are enough (a request larger
    /// than the bucket needs a full bucket); otherwise takes nothing and returns how long until
    /// there will be.
    pub fn try_take(&self, n: u64, now: Instant) -> Result<(), Duration> {
        let now = self.ticks(now);
        let cost = self.cost(n.min(self.rate));
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new = tat.max(now).saturating_add(cost);
            let ahead = new - now;
            if ahead > TICKS_PER_SEC {
                return Err(Self::duration(ahead - TICKS_PER_SEC));
            }
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// As [`TokenBucket::take_debt`]: takes `n` tokens even into debt and returns how long
    /// until the bucket is out of debt (zero when it is not in debt).
    pub fn take_debt(&self, n: u64, now: Instant) -> Duration {
        let now = self.ticks(now);
        let cost = self.cost(n);
        let prev = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.max(now).saturating_add(cost))
            })
            .unwrap_or_else(|tat| tat);
        let ahead = prev.max(now).saturating_add(cost) - now;
        Self::duration(ahead.saturating_sub(TICKS_PER_SEC))
    }
}

/// The publish rate limits of one listener (`listeners[].max_publish_rate` and
/// `max_publish_bandwidth`): one pair of buckets for all of its connections together.
#[derive(Debug)]
pub struct ListenerRates {
    /// PUBLISH packets per second.
    pub messages: Option<SharedBucket>,
    /// PUBLISH payload bytes per second.
    pub bytes: Option<SharedBucket>,
}

impl ListenerRates {
    /// The buckets of a listener; `None` when it has no rate limit, so connections of
    /// unlimited listeners carry nothing.
    pub fn for_listener(l: &ListenerConfig, now: Instant) -> Option<Arc<ListenerRates>> {
        let bucket = |rate: Option<u64>| rate.filter(|r| *r > 0).map(|r| SharedBucket::new(r, now));
        let rates = ListenerRates {
            messages: bucket(l.max_publish_rate),
            bytes: bucket(l.max_publish_bandwidth),
        };
        (rates.messages.is_some() || rates.bytes.is_some()).then(|| Arc::new(rates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert!(b.try_take(1, t0).is_ok());
        }
        let wait = b.try_take(1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(b.try_take(1, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.try_take(1, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn refill_is_capped_at_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, t0);
        for _ in 0..5 {
            b.try_take(1, t0).unwrap();
        }
        let later = t0 + Duration::from_secs(100);
        for _ in 0..5 {
            b.try_take(1, later).unwrap();
        }
        assert!(b.try_take(1, later).is_err());
    }

    #[test]
    fn debt_is_paid_back_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        assert_eq!(b.take_debt(100, t0), Duration::ZERO);
        let wait = b.take_debt(50, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn an_oversized_request_only_needs_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!(
            b.try_take(1000, t0).is_ok(),
            "larger than capacity: one full bucket"
        );
    }

    #[test]
    fn shared_bucket_bursts_one_second_then_the_rate() {
        let t0 = Instant::now();
        let b = SharedBucket::new(10, t0);
        for _ in 0..10 {
            assert!(b.try_take(1, t0).is_ok());
        }
        let wait = b.try_take(1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(b.try_take(1, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.try_take(1, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn shared_bucket_refill_is_capped_at_capacity() {
        let t0 = Instant::now();
        let b = SharedBucket::new(5, t0);
        for _ in 0..5 {
            b.try_take(1, t0).unwrap();
        }
        let later = t0 + Duration::from_secs(100);
        for _ in 0..5 {
            b.try_take(1, later).unwrap();
        }
        assert!(b.try_take(1, later).is_err());
    }

    #[test]
    fn shared_bucket_debt_is_paid_back_at_the_rate() {
        let t0 = Instant::now();
        let b = SharedBucket::new(100, t0);
        assert_eq!(b.take_debt(100, t0), Duration::ZERO);
        let wait = b.take_debt(50, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // A refused try_take takes nothing: the debt is still owed.
        assert!(b.try_take(1, t0 + Duration::from_millis(400)).is_err());
        assert!(b.try_take(1, t0 + Duration::from_millis(510)).is_ok());
    }

    #[test]
    fn shared_bucket_oversized_request_only_needs_a_full_bucket() {
        let t0 = Instant::now();
        let b = SharedBucket::new(10, t0);
        assert!(b.try_take(1000, t0).is_ok());
        assert!(b.try_take(1, t0).is_err());
    }

    #[test]
    fn shared_bucket_high_byte_rates_keep_their_precision() {
        let t0 = Instant::now();
        // 8 GB/s: a 1-byte message still costs something, so the rate is enforced.
        let b = SharedBucket::new(8_000_000_000, t0);
        assert!(b.try_take(8_000_000_000, t0).is_ok());
        assert!(b.try_take(1, t0).is_err());
        assert!(b.try_take(8, t0 + Duration::from_nanos(1)).is_ok());
    }

    #[test]
    fn shared_bucket_threads_together_take_exactly_the_burst() {
        let t0 = Instant::now();
        let b = Arc::new(SharedBucket::new(1000, t0));
        let taken: usize = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.try_take(1, t0).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(
            taken, 1000,
            "4 threads x 1000 tries on one 1000-token burst"
        );
    }
}
