//! `starling store check|dump|reset --dir DIR`: offline tools for the message store.
//!
//! - `check` opens the store (without creating one), decodes every record and cross-checks
//!   references; prints counts and problems to stdout; exits 1 when anything is wrong.
//! - `dump` prints every record human-readably; payloads as a length and a short preview.
//! - `reset` moves the directory aside to `DIR.broken-<unix time>`; it never deletes.
//!
//! None of them runs while a broker holds the store open: fjall's directory lock refuses it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use starling::storage::{FjallOptions, FjallStore};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Decode every record, cross-check references; exit 1 on any problem.
    Check(StoreArgs),
    /// Print every record (payloads as length and a short preview).
    Dump(StoreArgs),
    /// Move the store aside to DIR.broken-<unix time> so the broker starts empty.
    Reset(StoreArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store directory (the `persistence.dir` setting).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Check(a) => {
            let store = FjallStore::open_existing(&a.dir, &FjallOptions::default())?;
            let report = store.check();
            println!("{}: {report}", a.dir.display());
            if !report.is_ok() {
                anyhow::bail!(
                    "the store in {} has problems; `starling store reset --dir {}` moves it aside",
                    a.dir.display(),
                    a.dir.display()
                );
            }
            Ok(())
        }
        StoreCommand::Dump(a) => {
            let store = FjallStore::open_existing(&a.dir, &FjallOptions::default())?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match store.dump(&mut out).and_then(|()| out.flush()) {
                // `starling store dump | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("cannot write the dump"),
            }
        }
        StoreCommand::Reset(a) => {
            let moved = FjallStore::move_aside(&a.dir)?;
            println!(
                "moved the store {} aside to {}; the broker will start with an empty store. \
                 Nothing was deleted: remove {} once you no longer need it.",
                a.dir.display(),
                moved.display(),
                moved.display()
            );
            Ok(())
        }
    }
}
