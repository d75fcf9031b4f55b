//! A tiny deterministic generator (SplitMix64) and the soak's environment knobs: `SOAK_SEED`
//! (replay a run) and `SOAK_SECS` (duration of the random phase).
//!
//! The seed fixes every random choice each client makes (its operation sequence, topics, QoS,
//! pauses); it does not fix the thread schedule, so a replay repeats the same workload, not the
//! same interleaving.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, full period, good enough mixing for
/// choosing operations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi` (`lo < hi`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An independent generator for a sub-task (one per client), derived from this one.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// `SOAK_SEED` when set (decimal or 0x-hex), otherwise a fresh seed from the clock.
pub fn seed_from_env() -> u64 {
    match std::env::var("SOAK_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("SOAK_SEED={s:?} is not a u64: {e}"))
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos();
            // Mixed so that two runs started in the same microsecond still differ in practice.
            Rng::new(nanos as u64 ^ u64::from(std::process::id())).next_u64()
        }
    }
}

/// `SOAK_SECS` when set, otherwise `default`.
pub fn secs_from_env(default: u64) -> u64 {
    match std::env::var("SOAK_SECS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("SOAK_SECS={s:?} is not a number of seconds: {e}")),
        Err(_) => default,
    }
}

#[test]
fn splitmix_is_deterministic_and_spreads() {
    let mut a = Rng::new(42);
    let mut b = Rng::new(42);
    let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    let mut seen = [0u32; 10];
    let mut r = Rng::new(7);
    for _ in 0..10_000 {
        seen[r.below(10) as usize] += 1;
    }
    assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
}
