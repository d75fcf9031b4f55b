//! `[log]`: the log level, the destinations (stderr, a file, syslog, journald) and the line
//! format. Where the lines are written is the `starling` binary's `log_output` module.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[log]`: logging.
///
/// Destinations combine as Mosquitto's `log_dest` lines do: `file`, `syslog` and `journald`
/// each add one, and stderr is used when none of them is set (or when `stderr = true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `"info"` or `"warn,starling=debug"`. A bare level
    /// more verbose than `warn` applies to Starling only; other crates log at `warn` unless a
    /// directive names them. The `RUST_LOG` environment variable, when set, takes precedence.
    pub level: String,
    /// Log to this file (appended to, created if missing); relative to the configuration
    /// file's directory. Re-opened on SIGHUP and SIGUSR1, for log rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// How each line is written to stderr and the file: `text` (human-readable) or `json` (one
    /// object per line). Syslog and journald get the text form of the message and fields.
    pub format: LogFormat,
    /// Log to stderr too (`true`) or not (`false`); absent: only when no other destination is
    /// set, so a configured destination replaces stderr as Mosquitto's `log_dest` does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<bool>,
    /// Send each line to the local syslog daemon at `syslog_socket`, ident `starling[pid]`,
    /// with the severity of its level and `syslog_facility`.
    pub syslog: bool,
    /// The syslog facility of the lines sent to syslog.
    pub syslog_facility: SyslogFacility,
    /// The syslog daemon's socket (datagram, or stream as some daemons offer).
    pub syslog_socket: PathBuf,
    /// Send each line to journald by its native protocol (priority, identifier and every field
    /// as a journal field).
    pub journald: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            file: None,
            format: LogFormat::Text,
            stderr: None,
            syslog: false,
            syslog_facility: SyslogFacility::Daemon,
            syslog_socket: PathBuf::from("/dev/log"),
            journald: false,
        }
    }
}

impl LogConfig {
    /// Whether lines go to stderr: asked for, or no other destination is set.
    pub fn to_stderr(&self) -> bool {
        self.stderr
            .unwrap_or(self.file.is_none() && !self.syslog && !self.journald)
    }
}

/// `[log] format`: the shape of a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO starling: message key=value`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target` and `fields` (with `message`).
    Json,
}

/// `[log] syslog_facility`: the facilities of syslog(3), by their names without `LOG_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFacility {
    Kern = 0,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Local0 = 16,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl SyslogFacility {
    /// The facility's code (`daemon` is 3, `local0` 16): the priority of a line is
    /// `code * 8 + severity`.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_codes_are_syslog_h() {
        assert_eq!(SyslogFacility::Kern.code(), 0);
        assert_eq!(SyslogFacility::Daemon.code(), 3);
        assert_eq!(SyslogFacility::Authpriv.code(), 10);
        assert_eq!(SyslogFacility::Ftp.code(), 11);
        assert_eq!(SyslogFacility::Local0.code(), 16);
        assert_eq!(SyslogFacility::Local7.code(), 23);
    }

    #[test]
    fn a_configured_destination_replaces_stderr_unless_asked_for() {
        let mut log = LogConfig::default();
        assert!(log.to_stderr());
        log.syslog = true;
        assert!(!log.to_stderr());
        log.stderr = Some(true);
        assert!(log.to_stderr());
        let journald = LogConfig {
            journald: true,
            ..LogConfig::default()
        };
        assert!(!journald.to_stderr());
    }
}
