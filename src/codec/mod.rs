//! MQTT wire format: typed packets for MQTT 3.1, 3.1.1 and 5.0, decoded from and encoded to
//! `BytesMut`. No I/O and no state beyond the protocol version the caller passes in.
//!
//! Invariants:
//! - [`decode`] never allocates a buffer sized by the peer before the size is checked against the
//!   caller's maximum packet size; it returns `Ok(None)` until a whole packet is buffered, so it is
//!   safe to call again after every read.
//! - Every rejection is a [`DecodeError`] whose message cites the normative statement it enforces.
//! - A `Packet` that decodes also encodes back to the same bytes (modulo property order for
//!   properties that are not user properties).

mod decode;
mod encode;
mod error;
mod properties;
mod reader;
mod reason;
mod sink;
#[cfg(test)]
mod tests;
pub mod topic;

pub use decode::{decode, decode_remaining_length};
pub use encode::{
    encode, encode_publish, encode_publish_parts, encoded_len, fit_within, PublishHeader,
};
pub use error::DecodeError;
pub use properties::{BoxedProperties, Properties};
pub use reason::ReasonCode;

use std::sync::Arc;

use bytes::Bytes;

/// Quality of service of a PUBLISH or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which is malformed everywhere it can appear.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The protocol the client chose in CONNECT; it decides how every later packet is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V31 => "3.1",
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        })
    }
}

/// One MQTT control packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5.0 only.
    Auth(Auth),
}

// Every packet is moved through decode and handling by value: keep the enum small (the
// properties are boxed, the topic shared): 64 bytes, where inline properties made it ~400.
const _: () = assert!(std::mem::size_of::<Packet>() <= 64);

impl Packet {
    /// The packet type's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// CONNECT. The protocol version is read from the packet itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 disables keep-alive.
    pub keep_alive: u16,
    /// May be empty (3.1.1 and 5.0); the server decides whether to assign one.
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0); empty for 3.x.
    pub properties: Properties,
    /// A Mosquitto bridge (`try_private`): the protocol level had its top bit set (0x83 for
    /// 3.1, 0x84 for 3.1.1; never with 5.0).
    pub bridge: bool,
}

/// The Will Message carried by CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (5.0); empty for 3.x.
    pub properties: Properties,
}

/// CONNACK. `code` is the 3.x return code (0..=5) or the 5.0 reason code.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ReasonCode,
    pub properties: BoxedProperties,
}

/// PUBLISH. `packet_id` is 0 for QoS 0 and non-zero otherwise [MQTT-2.3.1-1].
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in 5.0 when a Topic Alias property stands in for it. Shared: decoded
    /// straight into the form the broker routes and queues, so no subscriber copies it.
    pub topic: Arc<str>,
    pub packet_id: u16,
    pub properties: BoxedProperties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape. `reason` is always `SUCCESS` for 3.x.
#[derive(Clone, Debug, PartialEq)]
pub struct PubResp {
    pub packet_id: u16,
    pub reason: ReasonCode,
    pub properties: BoxedProperties,
}

impl PubResp {
    pub fn new(packet_id: u16) -> PubResp {
        PubResp {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: BoxedProperties::default(),
        }
    }
}

/// Subscription options byte of SUBSCRIBE (3.x uses only `qos`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send retained on subscribe, 1 only if the subscription is new, 2 never.
    pub retain_handling: u8,
    /// Not on the wire: only messages that entered the broker on this node match, not those
    /// a cluster peer routed here. Set by the broker for the local end of a bridge that runs
    /// on every node (each forwards what was published on it).
    pub local_origin: bool,
}

impl SubscriptionOptions {
    pub fn new(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            local_origin: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// At least one entry [MQTT-3.8.3-3].
    pub filters: Vec<(String, SubscriptionOptions)>,
    pub properties: BoxedProperties,
}

/// SUBACK. For 3.x each code is 0x00..=0x02 or 0x80.
#[derive(Clone, Debug, PartialEq)]
pub struct SubAck {
    pub packet_id: u16,
    pub reasons: Vec<ReasonCode>,
    pub properties: BoxedProperties,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    /// At least one entry [MQTT-3.10.3-2].
    pub filters: Vec<String>,
    pub properties: BoxedProperties,
}

/// UNSUBACK. `reasons` is empty for 3.x (the packet has no payload there).
#[derive(Clone, Debug, PartialEq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub reasons: Vec<ReasonCode>,
    pub properties: BoxedProperties,
}

/// DISCONNECT. 3.x has neither reason nor properties (always `NORMAL`, empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: BoxedProperties,
}

impl Disconnect {
    pub fn new(reason: ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: BoxedProperties::default(),
        }
    }
}

/// AUTH (5.0 only).
#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: BoxedProperties,
}
