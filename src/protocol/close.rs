//! Why a connection ends, what the server says (MQTT 5 DISCONNECT reason) and whether the will
//! is published.

use crate::codec::{DecodeError, ReasonCode};

/// Why a connection ends.
#[derive(Debug)]
pub enum Close {
    /// The peer closed the socket without DISCONNECT.
    PeerClosed,
    Io(std::io::Error),
    KeepAliveTimeout,
    /// Another connection took the session over [MQTT-3.1.4-2]; `session_ends` when the
    /// session does not continue with it (see [`Close::publishes_will`]).
    TakenOver {
        session_ends: bool,
    },
    ServerShutdown,
    /// The client sent DISCONNECT; `will` is true for v5 reason 0x04.
    ClientDisconnect {
        will: bool,
    },
    Decode(DecodeError),
    /// The client broke a rule; v5 gets DISCONNECT with this reason.
    Protocol(ReasonCode, &'static str),
    /// The server closes for its own reason.
    Server(ReasonCode, &'static str),
}

impl Close {
    /// Whether anything can still be written to the socket.
    pub fn can_write(&self) -> bool {
        !matches!(self, Close::PeerClosed | Close::Io(_))
    }

    /// The v5 DISCONNECT reason the server sends, if it sends one.
    pub(super) fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            Close::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Close::TakenOver { .. } => Some(ReasonCode::SESSION_TAKEN_OVER),
            Close::ServerShutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Close::Decode(e) => Some(e.reason_code()),
            Close::Protocol(rc, _) | Close::Server(rc, _) => Some(*rc),
            Close::PeerClosed | Close::Io(_) | Close::ClientDisconnect { .. } => None,
        }
    }

    /// Whether the will is published [MQTT-3.1.2-8]: on every end but a normal DISCONNECT and
    /// a takeover by a new connection to the same session, which cancels it [MQTT-3.1.3-9]
    /// (for MQTT 3.x too, as Mosquitto: see the README).
    pub(super) fn publishes_will(&self) -> bool {
        !matches!(
            self,
            Close::ClientDisconnect { will: false }
                | Close::TakenOver {
                    session_ends: false
                }
        )
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::PeerClosed => f.write_str("peer closed the connection"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::KeepAliveTimeout => f.write_str("[MQTT-3.1.2-24] keep-alive timeout"),
            Close::TakenOver { .. } => f.write_str("[MQTT-3.1.4-2] session taken over"),
            Close::ServerShutdown => f.write_str("server shutting down"),
            Close::ClientDisconnect { will: false } => f.write_str("client sent DISCONNECT"),
            Close::ClientDisconnect { will: true } => {
                f.write_str("client sent DISCONNECT with will message")
            }
            Close::Decode(e) => write!(f, "bad packet: {e}"),
            Close::Protocol(rc, why) => write!(f, "protocol error ({:#04x}): {why}", rc.0),
            Close::Server(rc, why) => write!(f, "{why} ({:#04x})", rc.0),
        }
    }
}
