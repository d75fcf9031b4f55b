//! Harness code shared by the fuzz targets and the main crate's `tests/fuzz_corpus.rs`, which
//! includes `check.rs` and `conn.rs` with `#[path]` so that a plain `cargo test` replays the
//! corpus through exactly the checks the fuzzers run. Both files depend only on crates the main
//! crate already has (`starling`, `bytes`, `tokio`, `tokio-util`), and neither is part of the
//! library's public API.

pub mod check;
pub mod conn;
