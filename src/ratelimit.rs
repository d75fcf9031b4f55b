//! Token buckets for publish rate limits (messages/s and bytes/s), per client and per listener.
//! Pure: the caller passes the time in, so the arithmetic is tested without clocks.

use std::time::{Duration, Instant};

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
}
