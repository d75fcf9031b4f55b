//! Why a packet could not be decoded. Every variant names the normative statement it enforces,
//! so a log line or a test says exactly which rule the peer broke.

use super::ReasonCode;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("[MQTT-3.1.2-1] invalid protocol name")]
    InvalidProtocolName,
    #[error("[MQTT-2.2.1] reserved packet type {0}")]
    ReservedPacketType(u8),
    #[error("[MQTT-2.2.2-2] invalid fixed header flags {flags:#x} for packet type {packet_type}")]
    InvalidFlags { packet_type: u8, flags: u8 },
    #[error("[MQTT-1.5.5-1] remaining length encoded in more than 4 bytes")]
    RemainingLengthTooLong,
    #[error("[MQTT-3.1.2-24] packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("[MQTT-1.5.3-1] malformed packet: {0} runs past the end of the packet")]
    Truncated(&'static str),
    #[error("[MQTT-2.1.4] malformed packet: {0} unexpected bytes after the content")]
    TrailingBytes(usize),
    #[error("[MQTT-1.5.3-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.3-2] string contains U+0000")]
    NullCharacter,
    #[error("[MQTT-3.3.1-4] PUBLISH with QoS 3")]
    InvalidQoS,
    #[error("[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard or is invalid")]
    InvalidTopicName,
    #[error("[MQTT-4.7.3-1] empty topic name")]
    EmptyTopicName,
    #[error("[MQTT-4.7.1-1] invalid topic filter")]
    InvalidTopicFilter,
    #[error("[MQTT-2.3.1-1] packet identifier is 0")]
    ZeroPacketId,
    #[error("[MQTT-3.8.3-3] SUBSCRIBE without topic filters")]
    EmptySubscribe,
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    #[error("[MQTT-3.8.3-4] invalid subscription options {0:#x}")]
    InvalidSubscriptionOptions(u8),
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag is set")]
    ConnectReservedFlag,
    #[error("[MQTT-3.1.2-11] will QoS or retain set without the will flag")]
    WillFlagsWithoutWill,
    #[error("[MQTT-3.1.2-14] will QoS 3")]
    InvalidWillQoS,
    #[error("[MQTT-3.1.2-22] password flag set without the user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-3.2.2-1] CONNACK reserved flags are set")]
    ConnAckReservedFlags,
    #[error("[MQTT-3.15.1-1] AUTH is an MQTT 5 packet")]
    AuthBeforeV5,
    #[error("[MQTT-2.2.2-1] unknown property identifier {0:#x}")]
    UnknownProperty(u8),
    #[error("[MQTT-2.2.2-2] property {id:#x} is not allowed in {packet}")]
    PropertyNotAllowed { id: u8, packet: &'static str },
    #[error("[MQTT-2.2.2-2] property {0:#x} included more than once")]
    DuplicateProperty(u8),
    #[error("[MQTT-2.2.2-2] property {0:#x} has an invalid value")]
    InvalidPropertyValue(u8),
    #[error("[MQTT-2.4] reason code {code:#x} is not valid in {packet}")]
    InvalidReasonCode { code: u8, packet: &'static str },
    #[error("[MQTT-1.5.5] malformed variable byte integer")]
    InvalidVarInt,
}

impl DecodeError {
    /// The MQTT 5 reason code a server sends (CONNACK or DISCONNECT) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::UnsupportedProtocolLevel(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::InvalidTopicName | DecodeError::EmptyTopicName => {
                ReasonCode::TOPIC_NAME_INVALID
            }
            // The spec calls these Protocol Errors rather than malformed packets.
            DecodeError::DuplicateProperty(_)
            | DecodeError::AuthBeforeV5
            | DecodeError::PropertyNotAllowed { .. } => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}
