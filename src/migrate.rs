//! `starling migrate mosquitto.conf [-o starling.toml]`: translates a Mosquitto 2.x
//! configuration (with its `include_dir` files) into Starling TOML.
//!
//! Each translated key carries a comment naming the Mosquitto line it came from (`file:line`).
//! Options with no equivalent are listed on stderr with their line and why, and again at the
//! end of the TOML as comments; warnings (a translation that is close but not the same) go to
//! stderr too. The exit code is 0 when everything was translated and [`EXIT_LEFT_OUT`] when
//! something was left out.

mod bridge;
mod emit;
mod listener;
mod options;
mod parse;
mod translate;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use toml::Value;

/// The exit code when some options could not be translated.
pub const EXIT_LEFT_OUT: u8 = 3;

/// Arguments of `starling migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The Mosquitto configuration file (mosquitto.conf); include_dir is followed.
    file: PathBuf,
    /// Where to write the Starling TOML; standard output when absent.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// A Starling key (or a comment with no key) and the Mosquitto line(s) it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key within its table; `None` for a comment-only line.
    pub key: Option<String>,
    /// The value, or the comment text when `key` is `None`.
    pub value: Value,
    /// `file:line` of the Mosquitto option(s).
    pub from: String,
}

impl Entry {
    fn new(key: &str, value: Value, from: &str) -> Entry {
        Entry {
            key: Some(key.to_owned()),
            value,
            from: from.to_owned(),
        }
    }

    fn comment(text: &str, from: &str) -> Entry {
        Entry {
            key: None,
            value: Value::String(text.to_owned()),
            from: from.to_owned(),
        }
    }
}

/// An option left out, or a warning: where it is, which option, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `file:line`.
    pub at: String,
    /// The Mosquitto option.
    pub option: String,
    /// Why it was left out, or what the warning is about.
    pub why: String,
}

impl Note {
    fn new(at: &str, option: &str, why: impl Into<String>) -> Note {
        Note {
            at: at.to_owned(),
            option: option.to_owned(),
            why: why.into(),
        }
    }
}

/// Runs `starling migrate`: Ok(true) when every option was translated.
pub fn run(args: MigrateArgs) -> anyhow::Result<bool> {
    let source = parse::read(&args.file)?;
    let migration = translate::translate(&source.lines);
    let toml = emit::render(&migration, &source.files);
    match &args.output {
        Some(path) => write_output(path, &toml)?,
        None => print!("{toml}"),
    }
    for n in &migration.warnings {
        eprintln!("warning: {}: {}: {}", n.at, n.option, n.why);
    }
    for n in &migration.left_out {
        eprintln!("left out: {}: {}: {}", n.at, n.option, n.why);
    }
    if let Some(path) = &args.output {
        eprintln!("{}: written", path.display());
    }
    Ok(migration.left_out.is_empty())
}

fn write_output(path: &Path, toml: &str) -> anyhow::Result<()> {
    std::fs::write(path, toml).with_context(|| format!("cannot write {}", path.display()))
}
