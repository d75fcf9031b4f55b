//! Logging that never blocks the data path, and rate limiting for refusal log lines.
//!
//! The `starling` binary writes log lines through [`non_blocking`]: a bounded queue drained by
//! one writer thread, one of each per destination (stderr, file, syslog, journald). When a
//! destination stalls (a supervisor that stops reading a pipe, a syslog daemon that stops
//! reading its socket, a full journald buffer), its queue fills and further lines are dropped
//! and counted ([`dropped_lines`], summed over the destinations, exported as
//! `starling_log_lines_dropped_total` and `$SYS/broker/log/dropped`) instead of blocking the
//! connection that logs them.
//!
//! A flood of bad connections must not fill the disk either: each refusal is logged once, with
//! client id, peer and reason, up to [`PER_SECOND`] lines a second; beyond that they are counted
//! and one summary line reports how many were suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Log lines the writer queue holds before further ones are dropped (and counted). Lines are
/// about 200 bytes, so this is a few hundred KB; a line carrying a client-supplied string can be
/// far longer, which is why such strings are worth truncating before they are logged.
pub const LOG_QUEUE_LINES: usize = 2_048;

/// The drop counters of every [`non_blocking`] writer (one per log destination).
static DROPPED: parking_lot::Mutex<Vec<tracing_appender::non_blocking::ErrorCounter>> =
    parking_lot::const_mutex(Vec::new());

/// A writer to `out` that never blocks its caller: lines go through a queue of
/// [`LOG_QUEUE_LINES`] to a thread of their own, and are dropped and counted when it is full.
/// Keep the guard until exit: dropping it flushes what is queued.
pub fn non_blocking<W: std::io::Write + Send + 'static>(
    out: W,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("starling-log")
        .finish(out);
    DROPPED.lock().push(writer.error_counter());
    (writer, guard)
}

/// Lines a writer thread could not deliver (a syslog daemon or journald that is gone): see
/// [`count_undelivered`].
static UNDELIVERED: AtomicU64 = AtomicU64::new(0);

/// Counts a line a destination's writer thread could not deliver, so that it shows in
/// [`dropped_lines`] like a line the full queue refused.
pub fn count_undelivered() {
    UNDELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// Log lines dropped because a writer queue was full, over all destinations, plus those a
/// destination could not take ([`count_undelivered`]); 0 when logging does not go through
/// [`non_blocking`], as in the library's tests.
pub fn dropped_lines() -> u64 {
    DROPPED
        .lock()
        .iter()
        .map(|c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
        .fold(UNDELIVERED.load(Ordering::Relaxed), u64::saturating_add)
}

/// Longest field value written to a log line, in bytes; longer ones (a 64 KB client id, a long
/// topic or username) are cut, with their full length shown, so what a client sends bounds
/// neither the log's size nor the log queue's memory.
pub const MAX_FIELD_BYTES: usize = 256;

/// `text`, or its first [`MAX_FIELD_BYTES`] bytes (at a character boundary) followed by
/// `…(N bytes)` when it is longer.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_FIELD_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut = MAX_FIELD_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…({} bytes)", &text[..cut], text.len()))
}

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

/// Everything logged (at info and above) while `f` runs on this thread, for tests.
#[cfg(test)]
pub(crate) fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // A second live dispatcher keeps other test threads (no subscriber) from caching the
    // callsites' interest as "never" for this one (see `failed_login_logged_without_password`
    // in tests/auth.rs).
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (out, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_char_boundary_with_their_length() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(200); // 400 bytes
        let cut = bounded(&long);
        assert!(cut.ends_with("…(400 bytes)"), "{cut}");
        assert!(cut.len() <= MAX_FIELD_BYTES + "…(400 bytes)".len());
    }

    #[test]
    fn at_most_per_second_lines_pass_in_one_second() {
        // Other tests may share the window; count how many of a burst pass.
        let passed = (0..(PER_SECOND * 4)).filter(|_| refusal_allowed()).count() as u64;
        assert!(passed <= PER_SECOND * 2, "{passed} passed");
        assert!(passed < PER_SECOND * 4);
    }
}
