//! MQTT 5.0 properties: one struct for every packet type. The decoder rejects a property that is
//! not allowed on the packet it appears in, and a second copy of a once-only property
//! [MQTT-2.2.2-2 .. see DecodeError]; only `user_properties` and `subscription_identifiers` repeat.

use bytes::Bytes;

/// Every MQTT 5.0 property (spec 2.2.2.2). `None`/empty means absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01, PUBLISH / Will.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, PUBLISH / Will, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH / Will.
    pub content_type: Option<String>,
    /// 0x08, PUBLISH / Will.
    pub response_topic: Option<String>,
    /// 0x09, PUBLISH / Will.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, PUBLISH (may repeat, server to client) / SUBSCRIBE (at most one, 1..=268435455).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, CONNECT / CONNACK / DISCONNECT, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK.
    pub assigned_client_identifier: Option<String>,
    /// 0x13, CONNACK, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT / CONNACK / AUTH.
    pub authentication_method: Option<String>,
    /// 0x16, CONNECT / CONNACK / AUTH.
    pub authentication_data: Option<Bytes>,
    /// 0x17, CONNECT, 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18, Will, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT, 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A, CONNACK.
    pub response_information: Option<String>,
    /// 0x1C, CONNACK / DISCONNECT.
    pub server_reference: Option<String>,
    /// 0x1F, every ack, CONNACK, DISCONNECT, AUTH.
    pub reason_string: Option<String>,
    /// 0x21, CONNECT / CONNACK, non-zero.
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT / CONNACK.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH, non-zero.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK, 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25, CONNACK, 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26, everywhere; order kept, may repeat.
    pub user_properties: Vec<(String, String)>,
    /// 0x27, CONNECT / CONNACK, non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK, 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, CONNACK, 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, CONNACK, 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
