//! A whole client connection fed arbitrary bytes: `connection::serve` over an in-memory duplex
//! stream, on a current-thread runtime with a paused clock (see `starling_fuzz::conn` for how the
//! input is laid out).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    starling_fuzz::conn::run(&rt, data, true);
});
