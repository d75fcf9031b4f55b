//! Skipping an interop test whose external client (mosquitto_sub, paho, python3, ...) is
//! missing, so that a plain `cargo test` says so.
//!
//! libtest captures what a passing test prints with `print!`/`eprint!` and shows it only with
//! `--nocapture`, so a skipped test looked exactly like a passed one. The note is written
//! through the process's standard error handle instead, which libtest does not capture: it
//! appears among the `test ... ok` lines of every run, with the number of interop tests this
//! test binary has skipped so far. Under `STARLING_INTEROP=1` (CI) a missing client is a
//! failure instead.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Interop tests skipped so far by this test binary.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Whether interop clients are required (`STARLING_INTEROP=1`, as CI sets it): a missing one
/// fails the test instead of skipping it.
pub fn interop_required() -> bool {
    std::env::var("STARLING_INTEROP").is_ok_and(|v| v == "1")
}

/// Ends the current test as skipped because of `why` (e.g. "mosquitto_sub is not
/// installed"): panics under `STARLING_INTEROP=1`, otherwise writes an uncaptured note to
/// standard error. The caller then returns without testing anything.
pub fn skip(why: &str) {
    if interop_required() {
        panic!("{why}, and STARLING_INTEROP=1 makes that a failure (.ci/run installs it)");
    }
    let n = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let current = std::thread::current();
    let test = current.name().unwrap_or("an interop test");
    // Not `eprintln!`: libtest would capture it.
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED (counted as passed): {test}: {why}. {n} interop test(s) skipped so far in \
         this test binary; STARLING_INTEROP=1 makes a missing client a failure"
    );
}
