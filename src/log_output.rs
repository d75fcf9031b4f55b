//! Where the `starling` binary's log lines go and what they look like: `[log] level`, `file`
//! and `format`.
//!
//! Lines always go through the bounded, lossy queue of `starling::logging::non_blocking`, in
//! front of stderr or of the log file alike, so a slow disk blocks no more than a stalled pipe.
//! The file is opened in append mode and re-opened at its configured path on SIGHUP and
//! SIGUSR1 ([`LogFile::reopen`]): logrotate renames it, signals, and the next lines go to a new
//! file at the original path, without `copytruncate` (which loses lines written during the
//! copy).

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::Mutex;
use starling::config::{LogConfig, LogFormat};
use tracing::{error, info};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;

mod json;

/// The log file named by `log.file`, shared between the log writer thread (which writes to it)
/// and the signal handlers (which re-open it).
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    /// Opens the configured path again and writes the following lines there; the previous file
    /// is closed. On failure the previous file stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let new = open_append(&self.path)?;
        *self.file.lock() = new;
        Ok(())
    }
}

/// Log lines may name clients and users: readable by the owner and group only.
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// What the log writer thread writes to: whichever file [`LogFile`] holds at the time.
struct FileWriter(Arc<Mutex<File>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().flush()
    }
}

/// The filter for `log.level`, or for `RUST_LOG` when that is set and non-empty (so a running
/// deployment can be debugged without editing its file). A bare level more verbose than `warn`
/// (`info`, `debug`, `trace`) applies to Starling's own modules only: other crates (the store's
/// fjall and lsm-tree, rustls, hyper) log at `warn` unless a directive names them. `RUST_LOG`
/// is used as given.
pub fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            EnvFilter::try_new(&env).with_context(|| format!("invalid RUST_LOG {env:?}"))
        }
        _ => EnvFilter::try_new(directives(level))
            .with_context(|| format!("invalid log.level {level:?}")),
    }
}

/// `log.level` as filter directives: see [`filter`]. The library and the binary are both the
/// `starling` crate, whose events' targets start with `starling`.
fn directives(level: &str) -> String {
    let bare = level.trim();
    match bare.to_ascii_lowercase().as_str() {
        "info" | "debug" | "trace" => format!("warn,starling={bare}"),
        _ => bare.to_owned(),
    }
}

/// Installs the global subscriber for `config`: filter, destination and format. Keep the guard
/// until exit (dropping it flushes the queued lines); the [`LogFile`], when logging to a file,
/// is for the signal handlers to re-open.
pub fn init(config: &LogConfig) -> anyhow::Result<(WorkerGuard, Option<LogFile>)> {
    let filter = filter(&config.level)?;
    let (writer, guard, file) = match config.file.as_deref() {
        Some(path) => {
            let file = LogFile::open(path)
                .with_context(|| format!("cannot open log.file {}", path.display()))?;
            let (writer, guard) =
                starling::logging::non_blocking(FileWriter(Arc::clone(&file.file)));
            (writer, guard, Some(file))
        }
        None => {
            let (writer, guard) = starling::logging::non_blocking(std::io::stderr());
            (writer, guard, None)
        }
    };
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    match config.format {
        LogFormat::Text => init_text(filter, writer, ansi),
        LogFormat::Json => tracing_subscriber::fmt()
            .event_format(json::JsonLines)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}")),
    }?;
    Ok((guard, file))
}

fn init_text(filter: EnvFilter, writer: NonBlocking, ansi: bool) -> anyhow::Result<()> {
    // Every field value is bounded (see `logging::bounded`): client-supplied strings such as a
    // 64 KB client id cannot make one line arbitrarily long.
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        // Metadata of events bridged from the `log` crate, which the default formatter hides.
        if field.name().starts_with("log.") {
            return Ok(());
        }
        let text = format!("{value:?}");
        let text = starling::logging::bounded(&text);
        // The message comes first; every other field is written with its own leading space,
        // so a skipped field leaves no stray delimiter.
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, " {field}={text}")
        }
    });
    tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))
}

/// SIGHUP or SIGUSR1 (`signal`): re-opens the log file, if logging to one, and logs the outcome
/// (to the new file, or to the previous one when the path cannot be opened).
pub fn reopen(file: Option<&LogFile>, signal: &str) {
    let Some(file) = file else {
        if signal == "SIGUSR1" {
            info!("SIGUSR1 received: logging to stderr, no log file to re-open");
        }
        return;
    };
    match file.reopen() {
        Ok(()) => info!(
            "{signal} received: log file {} re-opened",
            file.path.display()
        ),
        Err(e) => error!(
            "{signal} received: cannot re-open log file {}, still writing to the previous \
             one: {e}",
            file.path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_verbose_level_applies_to_starling_only() {
        assert_eq!(directives("info"), "warn,starling=info");
        assert_eq!(directives(" DEBUG "), "warn,starling=DEBUG");
        assert_eq!(directives("warn"), "warn");
        assert_eq!(directives("error"), "error");
        assert_eq!(directives("off"), "off");
        assert_eq!(directives("info,fjall=info"), "info,fjall=info");
        assert_eq!(directives("starling=debug"), "starling=debug");
    }

    #[test]
    fn reopen_writes_to_a_new_file_at_the_path_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let file = LogFile::open(&path).unwrap();
        let mut w = FileWriter(Arc::clone(&file.file));
        w.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("b.log.1")).unwrap();
        w.write_all(b"two\n").unwrap();
        file.reopen().unwrap();
        w.write_all(b"three\n").unwrap();
        let old = std::fs::read_to_string(dir.path().join("b.log.1")).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
