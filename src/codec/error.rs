//! Decode errors: one variant per rule the decoder enforces, each message citing the normative
//! statement (MQTT 5.0 numbering first, 3.1.1 numbering where it differs; `[MQTT 5.0 §x.y]` where
//! the rule is spec text without a statement number), and the mapping from a variant to the
//! MQTT 5.0 reason code the server puts in its CONNACK or DISCONNECT.
//!
//! After any error the connection must be closed: the decoder makes no promise about how much of
//! the buffer was consumed.

use super::{ProtocolVersion, ReasonCode};

/// Why a byte sequence is not a valid MQTT packet.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    // ---- CONNECT framing: these decide whether the broker answers with a CONNACK at all.
    /// Valid protocol name but a level this server does not implement; the broker answers with
    /// CONNACK 0x01 (3.x) or 0x84 (5.0).
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// Neither `MQTT` nor `MQIsdp`: the broker closes without a CONNACK.
    #[error("[MQTT-3.1.2-1] invalid protocol name")]
    InvalidProtocolName,

    // ---- Fixed header.
    #[error("[MQTT 5.0 §2.1.2] reserved packet type {0}")]
    ReservedPacketType(u8),
    #[error("[MQTT 3.1.1 §2.2.1] AUTH (packet type 15) is reserved in MQTT {0}")]
    AuthNotAllowed(ProtocolVersion),
    #[error("[MQTT-2.1.3-1][MQTT-2.2.2-1][MQTT-2.2.2-2] invalid fixed header flags {flags:#x} for packet type {packet_type}")]
    InvalidHeaderFlags {
        packet_type: &'static str,
        flags: u8,
    },
    #[error("[MQTT-3.3.1-4] PUBLISH with both QoS bits set")]
    PublishQos3,
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupOnQos0,
    #[error("[MQTT 5.0 §1.5.5][MQTT 3.1.1 §2.2.3] variable byte integer longer than 4 bytes")]
    VariableByteIntegerTooLong,
    #[error("[MQTT 5.0 §3.1.2.11.4][MQTT 5.0 §3.2.2.3.6] packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },

    // ---- Remaining length versus content.
    #[error("[MQTT 5.0 §2.1.4] remaining length leaves {extra} unread bytes after {packet_type}")]
    TrailingBytes {
        packet_type: &'static str,
        extra: usize,
    },
    #[error("[MQTT 5.0 §2.1.4] {packet_type} ends inside its {field}")]
    UnexpectedEnd {
        packet_type: &'static str,
        field: &'static str,
    },

    // ---- Strings and topics.
    #[error("[MQTT-1.5.4-1][MQTT-1.5.3-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.4-2][MQTT-1.5.3-2] string contains U+0000")]
    NullCharacter,
    /// A Topic Name (of a PUBLISH or a Will) with a wildcard character: well-formed data that
    /// breaks a rule, answered with the dedicated code 0x90.
    #[error("[MQTT-3.3.2-2][MQTT-4.7.0-1] topic name contains wildcard characters")]
    InvalidTopicName,
    #[error("[MQTT-3.3.2-14] response topic contains wildcard characters or is empty")]
    InvalidResponseTopic,
    #[error("[MQTT-4.7.3-1] empty topic name without a topic alias")]
    EmptyTopicName,
    #[error("[MQTT-4.7.1-1][MQTT-4.7.1-2][MQTT-4.7.1-3][MQTT-4.7.3-1] invalid topic filter")]
    InvalidTopicFilter,
    #[error("[MQTT-3.3.2-8] topic alias 0 is not permitted")]
    TopicAliasZero,

    // ---- Packet identifiers and payload shape.
    #[error("[MQTT-2.2.1-3][MQTT-2.3.1-1] {packet_type} with packet identifier 0")]
    ZeroPacketId { packet_type: &'static str },
    #[error("[MQTT-3.8.3-2][MQTT-3.8.3-3] SUBSCRIBE with no topic filters")]
    EmptySubscribe,
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filters")]
    EmptyUnsubscribe,
    #[error("[MQTT-3.8.3-4][MQTT 5.0 §3.8.3.1] SUBSCRIBE requesting QoS 3")]
    SubscribeQos3,
    #[error("[MQTT-3.8.3-5][MQTT-3.8.3-4] SUBSCRIBE options {0:#x} have reserved bits set")]
    SubscribeReservedBits(u8),
    #[error("[MQTT 5.0 §3.8.3.1] SUBSCRIBE with retain handling 3")]
    RetainHandling3,
    #[error("[MQTT-3.8.3-4] No Local set on a shared subscription")]
    NoLocalOnSharedSubscription,

    // ---- CONNECT / CONNACK flags.
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag is set")]
    ConnectReservedFlag,
    #[error("[MQTT-3.1.2-11][MQTT-3.1.2-13][MQTT-3.1.2-15] will QoS or will retain set without the will flag (flags {0:#x})")]
    WillFlagsWithoutWill(u8),
    #[error("[MQTT-3.1.2-12][MQTT-3.1.2-14] will QoS 3")]
    WillQos3,
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-3.2.2-1] CONNACK acknowledge flags {0:#x} have reserved bits set")]
    ConnAckReservedFlags(u8),

    // ---- MQTT 5.0 properties and reason codes.
    #[error("[MQTT 5.0 §2.2.2.2] unknown property identifier {0:#x}")]
    UnknownProperty(u32),
    #[error("[MQTT 5.0 §2.2.2.2] property {name} ({id:#x}) is not allowed on {packet_type}")]
    PropertyNotAllowed {
        id: u8,
        name: &'static str,
        packet_type: &'static str,
    },
    #[error("[MQTT 5.0 §2.2.2.2][MQTT 5.0 §3] property {name} ({id:#x}) included more than once")]
    DuplicateProperty { id: u8, name: &'static str },
    #[error("[MQTT 5.0 §2.2.2.2][MQTT 5.0 §3] property {name} has invalid value {value}")]
    InvalidPropertyValue { name: &'static str, value: u32 },
    #[error(
        "[MQTT 5.0 §2.2.2.1] property length {len} exceeds the {available} bytes left in the packet"
    )]
    PropertyLengthExceedsPacket { len: usize, available: usize },
    #[error("[MQTT 5.0 §3.1.2.11.10] authentication data without authentication method")]
    AuthDataWithoutMethod,
    #[error("[MQTT 5.0 §2.4] reason code {code:#x} is not valid for {packet_type}")]
    InvalidReasonCode { packet_type: &'static str, code: u8 },
}

impl DecodeError {
    /// The MQTT 5.0 reason code the server sends in its CONNACK (during the handshake) or
    /// DISCONNECT. The split follows the definitions of spec 1.2 and the rule of 4.13.1: a packet
    /// that cannot be parsed is a Malformed Packet (0x81); one that parses but carries data the
    /// protocol does not allow is a Protocol Error (0x82), "unless a more specific Reason Code has
    /// been defined" (0x90, 0x94, 0x95). Where the spec names the class for a rule, that wins.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            UnsupportedProtocolLevel(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            // §3.3.4: "A Topic Alias value of 0 or greater than the Maximum Topic Alias is a
            // Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94".
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            // A wildcard in a Topic Name parses; 0x90 is the specific code for a Topic Name the
            // receiver does not accept (§3.14.2.1, and §3.2.2.2 for a Will Topic).
            InvalidTopicName => ReasonCode::TOPIC_NAME_INVALID,
            // Each of these is called a "Protocol Error" by the spec text that forbids it, or is
            // well-formed data the protocol does not allow (spec 1.2).
            AuthNotAllowed(_)
            | EmptyTopicName
            | InvalidResponseTopic
            | ZeroPacketId { .. }
            | EmptySubscribe
            | EmptyUnsubscribe
            | SubscribeQos3
            | RetainHandling3
            | NoLocalOnSharedSubscription
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod
            | InvalidReasonCode { .. } => ReasonCode::PROTOCOL_ERROR,
            // Spec text calls each of these malformed, or the bytes cannot be parsed at all.
            InvalidProtocolName
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | PublishQos3
            | DupOnQos0
            | VariableByteIntegerTooLong
            | TrailingBytes { .. }
            | UnexpectedEnd { .. }
            | InvalidUtf8
            | NullCharacter
            | InvalidTopicFilter
            | SubscribeReservedBits(_)
            | ConnectReservedFlag
            | WillFlagsWithoutWill(_)
            | WillQos3
            | PasswordWithoutUsername
            | ConnAckReservedFlags(_)
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | PropertyLengthExceedsPacket { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }
}
