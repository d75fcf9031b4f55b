//! `[log] syslog = true`: each line to the local syslog daemon, as glibc's syslog(3) sends it
//! over /dev/log: `<PRI>Mmm dd hh:mm:ss starling[PID]: target: message key=value` (RFC 3164
//! without the hostname, which the daemon adds), formatted by the `syslog` crate.
//!
//! The line is formatted on the thread that logs it and queued whole, so the writer thread
//! only sends datagrams: a daemon that stops reading its socket blocks that thread, the queue
//! fills, and further lines are dropped and counted like those of a stalled stderr. A daemon
//! that restarts (and so replaces its socket) is reconnected to on the next line that fails.
//! The timestamp is UTC (the crate's choice on Unix, where the local offset cannot be read
//! safely from a multi-threaded process); rsyslog and journald stamp lines on receipt anyway.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use starling::config::SyslogFacility;
use syslog::{Facility, Formatter3164, LogFormat as _, LoggerBackend, Severity};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::Destination;

/// The syslog ident, shown as `starling[PID]`.
pub const IDENT: &str = "starling";

/// The syslog destination: its layer and the guard of its writer thread. Fails when nothing
/// listens at `socket` (a missing /dev/log), naming the key.
pub fn destination(
    facility: SyslogFacility,
    socket: &Path,
) -> anyhow::Result<(Destination, WorkerGuard)> {
    let backend = connect(socket).with_context(|| {
        format!(
            "log.syslog: cannot connect to the syslog socket {} (log.syslog_socket)",
            socket.display()
        )
    })?;
    let writer = SyslogSocket {
        path: socket.to_path_buf(),
        backend,
    };
    let (writer, guard) = starling::logging::non_blocking(writer);
    let layer = tracing_subscriber::fmt::layer()
        .fmt_fields(super::bounded_fields())
        .event_format(SyslogLines::new(facility))
        .with_writer(writer)
        .with_ansi(false)
        .boxed();
    Ok((layer, guard))
}

/// Connects to the daemon's socket: datagram, or stream when the daemon offers that (the
/// crate tries both).
fn connect(path: &Path) -> Result<LoggerBackend, syslog::Error> {
    syslog::unix_custom((), path).map(|logger| logger.backend)
}

/// The syslog severity of a tracing level. There is no notice level in tracing; trace lines
/// are debug lines to syslog.
pub fn severity(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::LOG_ERR,
        Level::WARN => Severity::LOG_WARNING,
        Level::INFO => Severity::LOG_INFO,
        _ => Severity::LOG_DEBUG,
    }
}

fn facility(f: SyslogFacility) -> Facility {
    use SyslogFacility as F;
    match f {
        F::Kern => Facility::LOG_KERN,
        F::User => Facility::LOG_USER,
        F::Mail => Facility::LOG_MAIL,
        F::Daemon => Facility::LOG_DAEMON,
        F::Auth => Facility::LOG_AUTH,
        F::Syslog => Facility::LOG_SYSLOG,
        F::Lpr => Facility::LOG_LPR,
        F::News => Facility::LOG_NEWS,
        F::Uucp => Facility::LOG_UUCP,
        F::Cron => Facility::LOG_CRON,
        F::Authpriv => Facility::LOG_AUTHPRIV,
        F::Ftp => Facility::LOG_FTP,
        F::Local0 => Facility::LOG_LOCAL0,
        F::Local1 => Facility::LOG_LOCAL1,
        F::Local2 => Facility::LOG_LOCAL2,
        F::Local3 => Facility::LOG_LOCAL3,
        F::Local4 => Facility::LOG_LOCAL4,
        F::Local5 => Facility::LOG_LOCAL5,
        F::Local6 => Facility::LOG_LOCAL6,
        F::Local7 => Facility::LOG_LOCAL7,
    }
}

/// Formats an event as one complete syslog message: the text line without timestamp and
/// level (the priority carries the severity) inside the crate's RFC 3164 frame.
struct SyslogLines {
    frame: Formatter3164,
    text: Format<Full, ()>,
}

impl SyslogLines {
    fn new(f: SyslogFacility) -> SyslogLines {
        SyslogLines {
            frame: Formatter3164 {
                facility: facility(f),
                hostname: None,
                process: IDENT.to_owned(),
                pid: std::process::id(),
            },
            text: tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for SyslogLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        self.text.format_event(ctx, Writer::new(&mut text), event)?;
        let mut message = Vec::with_capacity(text.len() + 48);
        let severity = severity(event.metadata().level());
        self.frame
            .format(&mut message, severity, text.trim_end())
            .map_err(|_| fmt::Error)?;
        writer.write_str(&String::from_utf8_lossy(&message))
    }
}

/// The writer thread's end: each write is one complete message, sent as one datagram.
struct SyslogSocket {
    path: PathBuf,
    backend: LoggerBackend,
}

impl Write for SyslogSocket {
    /// Sends `message`; a restarted daemon has a new socket at the same path, so a failed send
    /// connects again (once per line) and retries. A line that cannot be sent is counted as
    /// dropped, and the writer thread goes on with the next.
    fn write(&mut self, message: &[u8]) -> io::Result<usize> {
        if self.backend.write(message).is_err() {
            let sent = match connect(&self.path) {
                Ok(backend) => {
                    self.backend = backend;
                    self.backend.write(message).is_ok()
                }
                Err(_) => false,
            };
            if !sent {
                starling::logging::count_undelivered();
            }
        }
        Ok(message.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.backend.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::EnvFilter;

    #[test]
    fn severities_follow_syslog_h() {
        let codes: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(|l| severity(l) as u8)
        .collect();
        assert_eq!(codes, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn every_facility_maps_to_the_crates_code() {
        use SyslogFacility as F;
        for f in [
            F::Kern,
            F::Daemon,
            F::Authpriv,
            F::Ftp,
            F::Local0,
            F::Local3,
            F::Local7,
        ] {
            assert_eq!(facility(f) as u8, f.code() << 3, "{f:?}");
        }
    }

    #[test]
    fn a_restarted_daemon_is_reconnected_to_and_a_missing_one_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let bind = || {
            let daemon = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
            daemon
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            daemon
        };
        let recv = |daemon: &std::os::unix::net::UnixDatagram| {
            let mut buf = [0u8; 64];
            let n = daemon.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        };
        let daemon = bind();
        let mut out = SyslogSocket {
            path: path.clone(),
            backend: connect(&path).unwrap(),
        };
        out.write_all(b"one").unwrap();
        assert_eq!(recv(&daemon), b"one");
        // The daemon restarts: a new socket at the same path.
        drop(daemon);
        std::fs::remove_file(&path).unwrap();
        let daemon = bind();
        out.write_all(b"two").unwrap();
        assert_eq!(recv(&daemon), b"two");
        // The daemon is gone: the line is counted, the writer is not stopped.
        drop(daemon);
        std::fs::remove_file(&path).unwrap();
        let before = starling::logging::dropped_lines();
        out.write_all(b"three").unwrap();
        assert!(starling::logging::dropped_lines() > before);
    }

    #[test]
    fn a_warning_is_one_datagram_with_its_priority_ident_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let daemon = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        daemon
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (layer, guard) = destination(SyslogFacility::Local3, &path).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(layer);
        let id = "k".repeat(1000);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(client_id = %id, "slow \"subscriber\"");
        });
        drop(guard);
        let mut buf = vec![0u8; 8192];
        let n = daemon.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        // local3 (19) * 8 + warning (4)
        assert!(text.starts_with("<156>"), "{text}");
        let pid = format!(" starling[{}]: ", std::process::id());
        let (_, rest) = text.split_once(&pid).unwrap_or_else(|| panic!("{text}"));
        assert!(rest.contains("slow \"subscriber\" client_id=kkk"), "{text}");
        assert!(
            rest.ends_with("…(1000 bytes)"),
            "not bounded or not one line: {text}"
        );
    }
}
