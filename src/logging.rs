//! Rate limiting for refusal log lines: a flood of bad connections must not fill the disk.
//! Each refusal is logged once, with client id, peer and reason, up to [`PER_SECOND`] lines a
//! second; beyond that they are counted and one summary line reports how many were suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Refusal lines logged per second before the rest are only counted.
pub const PER_SECOND: u64 = 50;

static WINDOW: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Whether a refusal line may be logged now. Call it right before the `tracing` call.
pub fn refusal_allowed() -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let window = WINDOW.load(Ordering::Relaxed);
    if window != now
        && WINDOW
            .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        COUNT.store(0, Ordering::Relaxed);
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "refusal log lines suppressed in the last second"
            );
        }
    }
    if COUNT.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
        true
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Logs a refusal at info level through the limiter.
#[macro_export]
macro_rules! refusal {
    ($($arg:tt)*) => {
        if $crate::logging::refusal_allowed() {
            tracing::info!($($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_second_lines_pass_in_one_second() {
        // Other tests may share the window; count how many of a burst pass.
        let passed = (0..(PER_SECOND * 4)).filter(|_| refusal_allowed()).count() as u64;
        assert!(passed <= PER_SECOND * 2, "{passed} passed");
        assert!(passed < PER_SECOND * 4);
    }
}
