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

use bytes::{BufMut, BytesMut};

use super::wire::{field_len, put_bytes, put_str, put_varint, varint_len, Reader};
use super::DecodeError;

/// Where a property block appears; decides which properties are allowed (spec table 2-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Connect,
    ConnAck,
    Publish,
    Will,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Connect => "CONNECT",
            Context::ConnAck => "CONNACK",
            Context::Publish => "PUBLISH",
            Context::Will => "Will properties",
            Context::PubResp => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            Context::Subscribe => "SUBSCRIBE",
            Context::SubAck => "SUBACK",
            Context::Unsubscribe => "UNSUBSCRIBE",
            Context::UnsubAck => "UNSUBACK",
            Context::Disconnect => "DISCONNECT",
            Context::Auth => "AUTH",
        }
    }
}

/// Whether property `id` may appear in `ctx` (MQTT 5.0 section 2.2.2.2).
fn allowed(id: u8, ctx: Context) -> bool {
    use Context::*;
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(ctx, Publish | Will),
        0x0B => matches!(ctx, Publish | Subscribe),
        0x11 => matches!(ctx, Connect | ConnAck | Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => ctx == ConnAck,
        0x15 | 0x16 => matches!(ctx, Connect | ConnAck | Auth),
        0x17 | 0x19 => ctx == Connect,
        0x18 => ctx == Will,
        0x1C => matches!(ctx, ConnAck | Disconnect),
        0x1F => matches!(
            ctx,
            ConnAck | PubResp | SubAck | UnsubAck | Disconnect | Auth
        ),
        0x21 | 0x22 | 0x27 => matches!(ctx, Connect | ConnAck),
        0x23 => ctx == Publish,
        0x26 => true,
        _ => false,
    }
}

fn set_once<T>(slot: &mut Option<T>, id: u8, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(id: u8, v: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(v)
}

fn nonzero_u16(id: u8, v: u16) -> Result<u16, DecodeError> {
    if v == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(v)
}

impl Properties {
    /// Reads a property block (its length, then the properties) for packet context `ctx`.
    pub(super) fn decode(r: &mut Reader, ctx: Context) -> Result<Properties, DecodeError> {
        let len = r.varint("property length")? as usize;
        if len > r.remaining() {
            return Err(DecodeError::Truncated("properties"));
        }
        let mut r = r.sub(len, "properties")?;
        let mut p = Properties::default();
        while !r.is_empty() {
            let id = r.varint("property identifier")?;
            let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xFF))?;
            if !allowed(id, ctx) {
                if (0x01..=0x2A).contains(&id) && known(id) {
                    return Err(DecodeError::PropertyNotAllowed {
                        id,
                        packet: ctx.name(),
                    });
                }
                return Err(DecodeError::UnknownProperty(id));
            }
            p.read_one(id, &mut r, ctx)?;
        }
        Ok(p)
    }

    fn read_one(&mut self, id: u8, r: &mut Reader, ctx: Context) -> Result<(), DecodeError> {
        const W: &str = "property";
        match id {
            0x01 => set_once(&mut self.payload_format_indicator, id, flag(id, r.u8(W)?)?),
            0x02 => set_once(&mut self.message_expiry_interval, id, r.u32(W)?),
            0x03 => set_once(&mut self.content_type, id, r.string(W)?),
            0x08 => {
                let t = r.string(W)?;
                if !super::topic::valid_topic_name(&t) {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                set_once(&mut self.response_topic, id, t)
            }
            0x09 => set_once(&mut self.correlation_data, id, r.binary(W)?),
            0x0B => {
                let v = r.varint(W)?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                if ctx == Context::Subscribe && !self.subscription_identifiers.is_empty() {
                    return Err(DecodeError::DuplicateProperty(id));
                }
                self.subscription_identifiers.push(v);
                Ok(())
            }
            0x11 => set_once(&mut self.session_expiry_interval, id, r.u32(W)?),
            0x12 => set_once(&mut self.assigned_client_identifier, id, r.string(W)?),
            0x13 => set_once(&mut self.server_keep_alive, id, r.u16(W)?),
            0x15 => set_once(&mut self.authentication_method, id, r.string(W)?),
            0x16 => set_once(&mut self.authentication_data, id, r.binary(W)?),
            0x17 => set_once(
                &mut self.request_problem_information,
                id,
                flag(id, r.u8(W)?)?,
            ),
            0x18 => set_once(&mut self.will_delay_interval, id, r.u32(W)?),
            0x19 => set_once(
                &mut self.request_response_information,
                id,
                flag(id, r.u8(W)?)?,
            ),
            0x1A => set_once(&mut self.response_information, id, r.string(W)?),
            0x1C => set_once(&mut self.server_reference, id, r.string(W)?),
            0x1F => set_once(&mut self.reason_string, id, r.string(W)?),
            0x21 => set_once(&mut self.receive_maximum, id, nonzero_u16(id, r.u16(W)?)?),
            0x22 => set_once(&mut self.topic_alias_maximum, id, r.u16(W)?),
            0x23 => set_once(&mut self.topic_alias, id, nonzero_u16(id, r.u16(W)?)?),
            0x24 => set_once(&mut self.maximum_qos, id, flag(id, r.u8(W)?)?),
            0x25 => set_once(&mut self.retain_available, id, flag(id, r.u8(W)?)?),
            0x26 => {
                let k = r.string(W)?;
                let v = r.string(W)?;
                self.user_properties.push((k, v));
                Ok(())
            }
            0x27 => {
                let v = r.u32(W)?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                set_once(&mut self.maximum_packet_size, id, v)
            }
            0x28 => set_once(
                &mut self.wildcard_subscription_available,
                id,
                flag(id, r.u8(W)?)?,
            ),
            0x29 => set_once(
                &mut self.subscription_identifier_available,
                id,
                flag(id, r.u8(W)?)?,
            ),
            0x2A => set_once(
                &mut self.shared_subscription_available,
                id,
                flag(id, r.u8(W)?)?,
            ),
            _ => Err(DecodeError::UnknownProperty(id)),
        }
    }

    /// Size of the property block's content (without its length prefix).
    pub(super) fn content_len(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, |v| 1 + field_len(v.as_bytes()));
        let b = |o: &Option<bytes::Bytes>| o.as_ref().map_or(0, |v| 1 + field_len(v));
        let byte = |o: &Option<u8>| o.map_or(0, |_| 2);
        let u16_ = |o: &Option<u16>| o.map_or(0, |_| 3);
        let u32_ = |o: &Option<u32>| o.map_or(0, |_| 5);
        byte(&self.payload_format_indicator)
            + u32_(&self.message_expiry_interval)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|v| 1 + varint_len(*v as usize))
                .sum::<usize>()
            + u32_(&self.session_expiry_interval)
            + s(&self.assigned_client_identifier)
            + u16_(&self.server_keep_alive)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + byte(&self.request_problem_information)
            + u32_(&self.will_delay_interval)
            + byte(&self.request_response_information)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + u16_(&self.receive_maximum)
            + u16_(&self.topic_alias_maximum)
            + u16_(&self.topic_alias)
            + byte(&self.maximum_qos)
            + byte(&self.retain_available)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + field_len(k.as_bytes()) + field_len(v.as_bytes()))
                .sum::<usize>()
            + u32_(&self.maximum_packet_size)
            + byte(&self.wildcard_subscription_available)
            + byte(&self.subscription_identifier_available)
            + byte(&self.shared_subscription_available)
    }

    /// Size of the whole block: length prefix and content.
    pub(super) fn encoded_len(&self) -> usize {
        let n = self.content_len();
        varint_len(n) + n
    }

    /// Writes the block: length prefix, then every present property.
    pub(super) fn encode(&self, buf: &mut BytesMut) {
        put_varint(buf, self.content_len());
        let put_u8 = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
            if let Some(v) = v {
                buf.put_u8(id);
                buf.put_u8(v);
            }
        };
        let put_u16 = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
            if let Some(v) = v {
                buf.put_u8(id);
                buf.put_u16(v);
            }
        };
        let put_u32 = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
            if let Some(v) = v {
                buf.put_u8(id);
                buf.put_u32(v);
            }
        };
        let put_s = |buf: &mut BytesMut, id: u8, v: &Option<String>| {
            if let Some(v) = v {
                buf.put_u8(id);
                put_str(buf, v);
            }
        };
        let put_b = |buf: &mut BytesMut, id: u8, v: &Option<bytes::Bytes>| {
            if let Some(v) = v {
                buf.put_u8(id);
                put_bytes(buf, v);
            }
        };
        put_u8(buf, 0x01, self.payload_format_indicator);
        put_u32(buf, 0x02, self.message_expiry_interval);
        put_s(buf, 0x03, &self.content_type);
        put_s(buf, 0x08, &self.response_topic);
        put_b(buf, 0x09, &self.correlation_data);
        for id in &self.subscription_identifiers {
            buf.put_u8(0x0B);
            put_varint(buf, *id as usize);
        }
        put_u32(buf, 0x11, self.session_expiry_interval);
        put_s(buf, 0x12, &self.assigned_client_identifier);
        put_u16(buf, 0x13, self.server_keep_alive);
        put_s(buf, 0x15, &self.authentication_method);
        put_b(buf, 0x16, &self.authentication_data);
        put_u8(buf, 0x17, self.request_problem_information);
        put_u32(buf, 0x18, self.will_delay_interval);
        put_u8(buf, 0x19, self.request_response_information);
        put_s(buf, 0x1A, &self.response_information);
        put_s(buf, 0x1C, &self.server_reference);
        put_s(buf, 0x1F, &self.reason_string);
        put_u16(buf, 0x21, self.receive_maximum);
        put_u16(buf, 0x22, self.topic_alias_maximum);
        put_u16(buf, 0x23, self.topic_alias);
        put_u8(buf, 0x24, self.maximum_qos);
        put_u8(buf, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            buf.put_u8(0x26);
            put_str(buf, k);
            put_str(buf, v);
        }
        put_u32(buf, 0x27, self.maximum_packet_size);
        put_u8(buf, 0x28, self.wildcard_subscription_available);
        put_u8(buf, 0x29, self.subscription_identifier_available);
        put_u8(buf, 0x2A, self.shared_subscription_available);
    }
}

/// Property identifiers MQTT 5.0 defines.
fn known(id: u8) -> bool {
    matches!(
        id,
        0x01 | 0x02
            | 0x03
            | 0x08
            | 0x09
            | 0x0B
            | 0x11
            | 0x12
            | 0x13
            | 0x15
            | 0x16
            | 0x17
            | 0x18
            | 0x19
            | 0x1A
            | 0x1C
            | 0x1F
            | 0x21
            | 0x22
            | 0x23
            | 0x24
            | 0x25
            | 0x26
            | 0x27
            | 0x28
            | 0x29
            | 0x2A
    )
}
