//! Giving freed heap memory back to the operating system.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse, so RSS stays at its peak
//! after the memory is no longer used: after a session with 250,000 subscriptions ends
//! (~300 MB; BENCHMARKS.md, "Subscriptions"), and after any burst of load (a QoS 0 flood's
//! write buffers, persistent sessions' store memtables). `malloc_trim(0)` returns the free
//! pages of every arena. Two things ask for it:
//!
//! - a large session ending ([`release_free_memory`]), at once;
//! - the [`watch`] task, every [`WATCH_INTERVAL`], when the allocator holds more than
//!   [`TRIM_SLACK`] of free memory resident beyond what it held after its last trim.
//!
//! A trim walks the arenas under their locks, so it runs on a blocking thread, at most one at
//! a time. Other allocators (musl, macOS) return memory on their own or have no such call:
//! there both do nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Freeing at least this many subscriptions at once asks the allocator to give memory back
/// (about 1 KB each, so roughly 1 MB and more).
pub const TRIM_AFTER_SUBSCRIPTIONS: usize = 1_000;

/// Set while a trim is queued or running, so a burst of large sessions ending costs one trim.
static TRIM_PENDING: AtomicBool = AtomicBool::new(false);

/// Asks the allocator to return free memory to the OS: on a tokio blocking thread when called
/// inside a runtime, inline otherwise. Does nothing while a trim is already pending.
pub fn release_free_memory() {
    if TRIM_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let run = || {
        trim();
        TRIM_PENDING.store(false, Ordering::Release);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(run)),
        Err(_) => run(),
    }
}

/// How often [`watch`] looks at the allocator: RSS comes down within about this long after a
/// load ends.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// Free memory the allocator may keep resident, beyond what it kept after the last trim,
/// before [`watch`] trims. Below it a trim would give back little and cost page faults when
/// the load comes back.
pub const TRIM_SLACK: u64 = 16 << 20;

/// Traffic (bytes read and written) in one [`WATCH_INTERVAL`] that still counts as quiet:
/// keep-alives of many idle clients, a trickle of telemetry.
pub const QUIET_BYTES: u64 = 1 << 20;

/// Intervals of traffic remembered to tell that a load has ended (a minute).
const RECENT: usize = 6;

/// Every [`WATCH_INTERVAL`] until `shutdown`: once traffic has subsided (see [`Watch`]),
/// trims when the allocator holds more than [`TRIM_SLACK`] of free memory resident beyond
/// its last trim's. `traffic` is the broker's total of bytes read and written. The allocator
/// is measured only while quiet (reading its totals locks its arenas and walks their free
/// lists, cheap then), on this task; the trim itself runs on a blocking thread.
pub async fn watch(traffic: impl Fn() -> u64 + Send + 'static, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Watch {
        baseline: free_resident(),
        ..Watch::default()
    };
    // The first tick completes at once.
    tick.tick().await;
    let mut last_total = traffic();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let total = traffic();
        let quiet = state.interval_ended(total.saturating_sub(last_total));
        last_total = total;
        let (Some(base), Some(held)) = (state.baseline, quiet.then(free_resident).flatten()) else {
            continue;
        };
        if !should_trim(held, base) {
            state.baseline = Some(base.min(held));
            continue;
        }
        // Measured again after the trim: the new baseline.
        match tokio::task::spawn_blocking(move || trim_from(held)).await {
            Ok(Some(after)) => state.baseline = Some(after),
            // A trim after a large session was running: look again next time.
            Ok(None) => {}
            // The blocking pool is shutting down with the runtime.
            Err(_) => return,
        }
    }
}

/// What [`watch`] remembers between looks.
#[derive(Default)]
struct Watch {
    /// Free resident bytes after the last trim (or at the first look).
    baseline: Option<u64>,
    /// Traffic of the last [`RECENT`] intervals, oldest overwritten first.
    recent: [u64; RECENT],
    next: usize,
    /// The previous interval was quiet too.
    was_quiet: bool,
}

impl Watch {
    /// Records one interval's traffic; whether the broker has been quiet for two intervals.
    /// A trim under load stalls every thread allocating from the arena it walks (15-30 ms
    /// with ~100 MB free), and the load takes the pages back at once: wait until the traffic
    /// has fallen to a quarter of the last minute's busiest interval, or to [`QUIET_BYTES`].
    /// Twice: what the load leaves is freed in the seconds after it (the store's last flushes
    /// and compactions), and a trim before that gives back little.
    fn interval_ended(&mut self, bytes: u64) -> bool {
        let busiest = self.recent.iter().copied().max().unwrap_or(0);
        self.recent[self.next] = bytes;
        self.next = (self.next + 1) % RECENT;
        let quiet = bytes <= QUIET_BYTES || bytes <= busiest / 4;
        std::mem::replace(&mut self.was_quiet, quiet) && quiet
    }
}

/// Trims, `held` bytes being free and resident before; what is held after, or `None` when a
/// trim after a large session is already running.
fn trim_from(held: u64) -> Option<u64> {
    if TRIM_PENDING.swap(true, Ordering::AcqRel) {
        return None;
    }
    let started = Instant::now();
    trim();
    TRIM_PENDING.store(false, Ordering::Release);
    let after = free_resident().unwrap_or(held);
    tracing::debug!(
        held_mib = held >> 20,
        released_mib = held.saturating_sub(after) >> 20,
        took_us = started.elapsed().as_micros() as u64,
        "gave free heap memory back to the OS"
    );
    Some(after)
}

/// Whether `held` bytes of free resident memory are worth a trim, given `baseline` (what was
/// held after the last one: pages glibc cannot return, and the process's non-heap memory).
fn should_trim(held: u64, baseline: u64) -> bool {
    held > baseline.saturating_add(TRIM_SLACK)
}

/// Resident memory not in use by the heap: the process's RSS minus the bytes the allocator
/// has handed out. Free pages in the arenas are most of what changes in it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn free_resident() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and returns totals by value; it locks each arena
    // while it sums it.
    let info = unsafe { libc::mallinfo2() };
    let in_use = (info.uordblks as u64).saturating_add(info.hblkhd as u64);
    Some(resident_bytes()?.saturating_sub(in_use))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_resident() -> Option<u64> {
    None
}

/// The process's resident set in bytes, from `/proc/self/statm` (pages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases pages glibc itself holds free;
    // it is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_outside_a_runtime_runs_inline_and_clears_pending() {
        let big: Vec<Box<[u8; 512]>> = (0..10_000).map(|_| Box::new([1u8; 512])).collect();
        drop(big);
        release_free_memory();
        assert!(!TRIM_PENDING.load(Ordering::Acquire));
    }

    #[test]
    fn a_trim_needs_more_than_the_slack_above_the_last_one() {
        let base = 5 << 20;
        assert!(!should_trim(base, base));
        assert!(!should_trim(base + TRIM_SLACK, base));
        assert!(should_trim(base + TRIM_SLACK + 1, base));
        assert!(!should_trim(u64::MAX, u64::MAX), "no overflow");
    }

    #[test]
    fn quiet_means_two_intervals_of_little_traffic_or_a_quarter_of_the_busiest() {
        let mut w = Watch::default();
        assert!(!w.interval_ended(0), "one quiet interval is not enough");
        assert!(w.interval_ended(QUIET_BYTES), "keep-alives only, twice");
        assert!(!w.interval_ended(100 << 20), "a load starts");
        assert!(!w.interval_ended(90 << 20), "steady load");
        assert!(!w.interval_ended(30 << 20), "still above a quarter");
        assert!(!w.interval_ended(20 << 20), "the load has just fallen off");
        assert!(w.interval_ended(20 << 20), "and stayed low");
        for _ in 0..RECENT - 2 {
            w.interval_ended(20 << 20);
        }
        assert!(
            !w.interval_ended(20 << 20),
            "a minute later the lower load is the steady one"
        );
    }

    /// Freed memory that glibc keeps resident is seen, and the trim gives it back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_held_by_the_allocator_is_given_back() {
        let base = free_resident().expect("measurable on glibc");
        // Many small chunks (below the mmap threshold), touched so they are resident.
        let big: Vec<Box<[u8; 1024]>> = (0..64 * 1024).map(|_| Box::new([7u8; 1024])).collect();
        // Keep one chunk past the others so the freed ones are not all at the arena's top.
        let keep = Box::new([1u8; 1024]);
        drop(big);
        let held = free_resident().expect("measurable");
        assert!(should_trim(held, base), "held {held}, baseline {base}");
        let after = trim_from(held).expect("no other trim running");
        assert!(after + (32 << 20) <= held, "after {after}, held {held}");
        drop(keep);
    }
}
