//! Decode errors (stub; the codec implementation replaces this).
use super::ReasonCode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("malformed packet")]
    Malformed,
}

impl DecodeError {
    pub fn reason_code(&self) -> ReasonCode {
        ReasonCode::MALFORMED_PACKET
    }
}
