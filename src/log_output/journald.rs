//! `[log] journald = true`: each line to journald by its native protocol, one datagram of
//! `KEY=value` lines to /run/systemd/journal/socket: `PRIORITY` (the syslog severity of the
//! level), `SYSLOG_IDENTIFIER=starling`, `TARGET`, `MESSAGE` and every field of the event as
//! an upper-case journal field (`CLIENT_ID`, `PEER`, ...), so `journalctl CLIENT_ID=x` works.
//!
//! Not `tracing-journald`: its layer sends from the thread that logs, on a blocking socket, so
//! a journald that falls behind (its socket queue full) would block the connection that logs,
//! and it writes client-supplied strings unbounded. Here the datagram is built on the logging
//! thread with every value bounded, and queued through the same bounded, drop-and-count
//! writer as the other destinations; only the writer thread waits on journald. Values are one
//! line each (a newline becomes a space), so the simple `KEY=value` form of the protocol is
//! enough and messages stay far below the datagram size limit.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::Destination;

/// journald's native-protocol socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The journald destination: its layer and the guard of its writer thread. Fails when
/// journald does not listen at `socket`.
pub fn destination(socket: &Path) -> anyhow::Result<(Destination, WorkerGuard)> {
    let out = JournalSocket::connect(socket).with_context(|| {
        format!(
            "log.journald: cannot reach journald at {} (is this a systemd machine?)",
            socket.display()
        )
    })?;
    let (writer, guard) = starling::logging::non_blocking(out);
    let layer = tracing_subscriber::fmt::layer()
        .event_format(JournalFields)
        .with_writer(writer)
        .with_ansi(false)
        .boxed();
    Ok((layer, guard))
}

/// Formats an event as one native-protocol message.
struct JournalFields;

impl<S, N> FormatEvent<S, N> for JournalFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let severity = super::syslog::severity(meta.level()) as u8;
        let target = fields.target.take().unwrap_or_else(|| meta.target().into());
        writeln!(writer, "PRIORITY={severity}")?;
        writeln!(writer, "SYSLOG_IDENTIFIER={}", super::syslog::IDENT)?;
        writeln!(writer, "TARGET={}", one_line(&target))?;
        writer.write_str(&fields.text)
    }
}

/// The event's fields as `KEY=value` lines (the message as `MESSAGE`), values bounded; the
/// `log.*` metadata of events bridged from the `log` crate left out but for the target.
#[derive(Default)]
struct Fields {
    text: String,
    target: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.target = Some(value.to_owned());
        }
        self.put(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: &str) {
        if field.name().starts_with("log.") {
            return;
        }
        let value = starling::logging::bounded(value);
        self.text.push_str(&journal_name(field.name()));
        self.text.push('=');
        self.text.push_str(&one_line(&value));
        self.text.push('\n');
    }
}

/// A field name as journald accepts it: upper case, letters, digits and `_`, not starting
/// with `_` or a digit (those are journald's own), and not one of the fields written above.
fn journal_name(name: &str) -> String {
    if name == "message" {
        return "MESSAGE".to_owned();
    }
    let upper: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .take(60)
        .collect();
    let reserved = ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "TARGET"];
    if upper.starts_with(|c: char| !c.is_ascii_uppercase()) || reserved.contains(&&*upper) {
        format!("F_{upper}")
    } else {
        upper
    }
}

/// `text` with line breaks as spaces: one value per line.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(text.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The writer thread's end: each write is one message, sent as one datagram.
struct JournalSocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalSocket {
    /// An unbound datagram socket, checked by sending journald an empty message (which it
    /// ignores): a missing socket fails here rather than with the first line.
    fn connect(path: &Path) -> io::Result<JournalSocket> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to(&[], path)?;
        Ok(JournalSocket {
            socket,
            path: path.to_path_buf(),
        })
    }
}

impl Write for JournalSocket {
    /// Sends `message`; one journald does not take (it is gone or restarting) is counted as
    /// dropped, and the writer thread goes on with the next.
    fn write(&mut self, message: &[u8]) -> io::Result<usize> {
        if self.socket.send_to(message, &self.path).is_err() {
            starling::logging::count_undelivered();
        }
        Ok(message.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::EnvFilter;

    #[test]
    fn field_names_are_journal_names() {
        assert_eq!(journal_name("message"), "MESSAGE");
        assert_eq!(journal_name("client_id"), "CLIENT_ID");
        assert_eq!(journal_name("a.b-c"), "A_B_C");
        assert_eq!(journal_name("_x"), "F__X");
        assert_eq!(journal_name("9"), "F_9");
        assert_eq!(journal_name("priority"), "F_PRIORITY");
    }

    /// The protocol as a fake journald (a datagram socket in a temporary directory) receives
    /// it; the real journald is tried by tests/log_syslog.rs where the machine has one.
    #[test]
    fn an_event_is_one_datagram_of_key_value_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let journald = UnixDatagram::bind(&path).unwrap();
        journald
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (layer, guard) = destination(&path).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(layer);
        let id = "q".repeat(900);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(client_id = %id, n = 3, "two\nlines");
        });
        drop(guard);
        let mut buf = vec![0u8; 8192];
        let mut n = journald.recv(&mut buf).unwrap();
        if n == 0 {
            // The empty probe sent by `connect`.
            n = journald.recv(&mut buf).unwrap();
        }
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PRIORITY=3", "{text}");
        assert_eq!(lines[1], "SYSLOG_IDENTIFIER=starling", "{text}");
        assert!(lines[2].starts_with("TARGET=starling"), "{text}");
        assert!(lines.contains(&"MESSAGE=two lines"), "{text}");
        assert!(lines.contains(&"N=3"), "{text}");
        let client = lines.iter().find(|l| l.starts_with("CLIENT_ID=qqq"));
        assert!(
            client.is_some_and(|l| l.ends_with("…(900 bytes)")),
            "{text}"
        );
        assert!(text.ends_with('\n'));
    }
}
