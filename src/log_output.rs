//! Where the `starling` binary's log lines go and what they look like: `[log] level`, the
//! destinations (`stderr`, `file`, `syslog`, `journald`) and `format`.
//!
//! Each destination is a layer of its own with its own bounded, lossy queue
//! (`starling::logging::non_blocking`), so a slow disk or a stalled syslog daemon blocks no
//! more than a stalled pipe, and one stalled destination does not starve the others. Syslog
//! and journald are in the submodules of the same names.
//! The file is opened in append mode and re-opened at its configured path on SIGHUP and
//! SIGUSR1 ([`LogFile::reopen`]): logrotate renames it, signals, and the next lines go to a new
//! file at the original path, without `copytruncate` (which loses lines written during the
//! copy).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::Mutex;
use starling::config::{LogConfig, LogFormat};
use tracing::field::Field;
use tracing::{error, info};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::fmt::format::{debug_fn, FieldFn, Writer};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

mod journald;
mod json;
mod syslog;

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

/// The subscriber the destination layers sit on: the level filter over the registry.
type Base = Layered<EnvFilter, Registry>;

/// One destination's layer: its formatter in front of its own non-blocking writer.
type Destination = Box<dyn Layer<Base> + Send + Sync>;

/// Installs the global subscriber for `config`: filter, destinations and format. Keep the
/// guards until exit (dropping them flushes the queued lines); the [`LogFile`], when logging
/// to a file, is for the signal handlers to re-open. A file that cannot be opened, or a syslog
/// or journald socket that cannot be reached, stops the start: the operator asked for that
/// destination, and a broker that silently logs nowhere is worse than one that does not start.
pub fn init(config: &LogConfig) -> anyhow::Result<(Vec<WorkerGuard>, Option<LogFile>)> {
    let filter = filter(&config.level)?;
    let mut layers: Vec<Destination> = Vec::new();
    let mut guards = Vec::new();
    let mut file = None;
    if config.to_stderr() {
        let (writer, guard) = starling::logging::non_blocking(batched(std::io::stderr()));
        layers.push(line_layer(
            config.format,
            writer,
            std::io::stderr().is_terminal(),
        ));
        guards.push(guard);
    }
    if let Some(path) = config.file.as_deref() {
        let opened = LogFile::open(path)
            .with_context(|| format!("cannot open log.file {}", path.display()))?;
        let (writer, guard) =
            starling::logging::non_blocking(batched(FileWriter(Arc::clone(&opened.file))));
        layers.push(line_layer(config.format, writer, false));
        guards.push(guard);
        file = Some(opened);
    }
    if config.syslog {
        let (layer, guard) = syslog::destination(config.syslog_facility, &config.syslog_socket)?;
        layers.push(layer);
        guards.push(guard);
    }
    if config.journald {
        let (layer, guard) = journald::destination(Path::new(journald::SOCKET))?;
        layers.push(layer);
        guards.push(guard);
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))?;
    Ok((guards, file))
}

/// A line destination (stderr, the log file) that the writer thread fills with every line
/// queued at the moment and then flushes (it flushes whenever its queue is empty): one
/// `write(2)` per batch instead of one per line, so a burst of connects (two lines each) costs
/// the writer thread a few syscalls, not thousands. Lines are never held back: the flush comes
/// as soon as the queue is drained. Not for syslog or journald, where each write is one
/// datagram and so one message.
fn batched<W: Write>(out: W) -> std::io::BufWriter<W> {
    std::io::BufWriter::with_capacity(64 * 1024, out)
}

/// The layer writing `format` lines (text or JSON) to stderr or the log file.
fn line_layer(format: LogFormat, writer: NonBlocking, ansi: bool) -> Destination {
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(bounded_fields())
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonLines)
            .with_writer(writer)
            .boxed(),
    }
}

/// How [`bounded_fields`] writes one field.
type WriteField = fn(&mut Writer<'_>, &Field, &dyn fmt::Debug) -> fmt::Result;

/// The text form of an event's fields, every value bounded (see `logging::bounded`):
/// client-supplied strings such as a 64 KB client id cannot make one line arbitrarily long.
fn bounded_fields() -> FieldFn<WriteField> {
    debug_fn(write_bounded)
}

fn write_bounded(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    use std::fmt::Write as _;
    // Metadata of events bridged from the `log` crate, which the default formatter hides.
    if field.name().starts_with("log.") {
        return Ok(());
    }
    // The message comes first; every other field is written with its own leading space, so a
    // skipped field leaves no stray delimiter.
    if field.name() != "message" {
        write!(w, " {field}=")?;
    }
    let mut out = Bounded {
        out: w,
        written: 0,
        total: 0,
        cut: false,
    };
    write!(out, "{value:?}")?;
    if out.total > starling::logging::MAX_FIELD_BYTES {
        write!(out.out, "…({} bytes)", out.total)?;
    }
    Ok(())
}

/// Writes what `logging::bounded` would make of the text written through it, straight into the
/// line: the first [`starling::logging::MAX_FIELD_BYTES`] bytes (cut at a character boundary);
/// the caller adds `…(N bytes)` when `total` is larger. No String per field: every connect
/// and disconnect line has eight fields.
struct Bounded<'a, 'w> {
    out: &'a mut Writer<'w>,
    written: usize,
    total: usize,
    /// The cut is made: nothing more is written.
    cut: bool,
}

impl fmt::Write for Bounded<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.total += s.len();
        if self.cut {
            return Ok(());
        }
        let room = starling::logging::MAX_FIELD_BYTES - self.written;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.cut = take < s.len();
        self.written += take;
        self.out.write_str(&s[..take])
    }
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

    /// The streaming cut writes exactly what `logging::bounded` makes of the whole text,
    /// whatever pieces the text arrives in (a character straddling the cut included).
    #[test]
    fn bounded_writer_matches_bounded() {
        use std::fmt::Write as _;
        let max = starling::logging::MAX_FIELD_BYTES;
        let texts = [
            String::new(),
            "sensor-1".to_owned(),
            "x".repeat(max),
            "x".repeat(max + 1),
            format!("{}é{}", "x".repeat(max - 1), "y".repeat(50)),
            "é".repeat(max),
        ];
        for text in &texts {
            for piece in [1, 3, 7, 1000] {
                let mut line = String::new();
                let mut w = Writer::new(&mut line);
                let mut out = Bounded {
                    out: &mut w,
                    written: 0,
                    total: 0,
                    cut: false,
                };
                let mut rest = text.as_str();
                while !rest.is_empty() {
                    let mut n = piece.min(rest.len());
                    while !rest.is_char_boundary(n) {
                        n += 1;
                    }
                    out.write_str(&rest[..n]).unwrap();
                    rest = &rest[n..];
                }
                let total = out.total;
                if total > max {
                    write!(w, "…({total} bytes)").unwrap();
                }
                assert_eq!(line, starling::logging::bounded(text), "pieces of {piece}");
            }
        }
    }
}
