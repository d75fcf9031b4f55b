//! Giving freed heap memory back to the operating system.
//!
//! glibc's allocator keeps memory freed by a large structure (a session with 250,000
//! subscriptions: ~300 MB) in its arenas for reuse, so RSS stays at its peak after the
//! structure is gone (BENCHMARKS.md, "Subscriptions"). `malloc_trim(0)` returns the free pages of
//! every arena. It walks the arenas under their locks, so it runs on a blocking thread, at most
//! one at a time, and only after something large was freed. Other allocators (musl, macOS)
//! return memory on their own or have no such call: there it does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

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
}
