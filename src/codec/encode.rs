//! Packet encoding. Each packet's size is computed first so the buffer is reserved once and the
//! header written directly; [`encode_publish_parts`] is the hot path for outgoing messages and
//! borrows the topic and payload instead of requiring an owned `Publish`.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{field_len, put_bytes, put_str, put_varint, varint_len};
use super::*;

/// Total encoded size (fixed header included) of `packet` for `version`.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body = body_len(packet, version);
    1 + varint_len(body) + body
}

/// Appends `packet` to `buf`. For 3.x, properties and v5-only fields are left out.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    if let Packet::Publish(p) = packet {
        return encode_publish(p, version, buf);
    }
    let body = body_len(packet, version);
    buf.reserve(1 + varint_len(body) + body);
    buf.put_u8(first_byte(packet));
    put_varint(buf, body);
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => write_connect(c, buf),
        Packet::ConnAck(c) => {
            buf.put_u8(u8::from(c.session_present));
            buf.put_u8(c.code.0);
            if v5 {
                c.properties.encode(buf);
            }
        }
        Packet::Publish(_) => {}
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            buf.put_u16(r.packet_id);
            if v5 && !short_ack(r) {
                buf.put_u8(r.reason.0);
                if !r.properties.is_empty() {
                    r.properties.encode(buf);
                }
            }
        }
        Packet::Subscribe(s) => {
            buf.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(buf);
            }
            for (f, o) in &s.filters {
                put_str(buf, f);
                buf.put_u8(options_byte(o, v5));
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(buf);
            }
            for r in &s.reasons {
                buf.put_u8(r.0);
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(buf);
            }
            for f in &u.filters {
                put_str(buf, f);
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(buf);
                for r in &u.reasons {
                    buf.put_u8(r.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { reason, properties })
        | Packet::Auth(Auth { reason, properties }) => {
            if v5 && !(reason.0 == 0 && properties.is_empty()) {
                buf.put_u8(reason.0);
                if !properties.is_empty() {
                    properties.encode(buf);
                }
            }
        }
    }
}

/// Appends a PUBLISH. Same bytes as `encode(&Packet::Publish(p.clone()), ..)`.
pub fn encode_publish(p: &Publish, version: ProtocolVersion, buf: &mut BytesMut) {
    encode_publish_parts(
        PublishHeader {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            packet_id: p.packet_id,
        },
        &p.topic,
        &p.properties,
        &p.payload,
        version,
        buf,
    );
}

/// The fixed-header flags and packet id of an outgoing PUBLISH.
#[derive(Clone, Copy, Debug)]
pub struct PublishHeader {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Ignored for QoS 0.
    pub packet_id: u16,
}

/// Appends a PUBLISH from borrowed parts: the broker's per-subscriber hot path, so the topic
/// and payload shared by every subscriber are never cloned into an owned packet.
pub fn encode_publish_parts(
    h: PublishHeader,
    topic: &str,
    properties: &Properties,
    payload: &Bytes,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    let body = publish_body_len(topic, h.qos, properties, payload.len(), version);
    buf.reserve(1 + varint_len(body) + body);
    let mut first = 0x30 | ((h.qos as u8) << 1);
    if h.dup {
        first |= 0x08;
    }
    if h.retain {
        first |= 0x01;
    }
    buf.put_u8(first);
    put_varint(buf, body);
    put_str(buf, topic);
    if h.qos != QoS::AtMostOnce {
        buf.put_u16(h.packet_id);
    }
    if version.is_v5() {
        properties.encode(buf);
    }
    buf.put_slice(payload);
}

fn publish_body_len(
    topic: &str,
    qos: QoS,
    properties: &Properties,
    payload: usize,
    version: ProtocolVersion,
) -> usize {
    field_len(topic.as_bytes())
        + if qos == QoS::AtMostOnce { 0 } else { 2 }
        + if version.is_v5() {
            properties.encoded_len()
        } else {
            0
        }
        + payload
}

/// A v5 ack with reason 0 and no properties uses the two-byte form.
fn short_ack(r: &PubResp) -> bool {
    r.reason.0 == 0 && r.properties.is_empty()
}

fn options_byte(o: &SubscriptionOptions, v5: bool) -> u8 {
    let mut b = o.qos as u8;
    if v5 {
        b |= u8::from(o.no_local) << 2;
        b |= u8::from(o.retain_as_published) << 3;
        b |= (o.retain_handling & 0b11) << 4;
    }
    b
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(_) => 0x30,
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let v5 = version.is_v5();
    let props = |p: &Properties| if v5 { p.encoded_len() } else { 0 };
    match packet {
        Packet::Connect(c) => connect_len(c),
        Packet::ConnAck(c) => 2 + props(&c.properties),
        Packet::Publish(p) => {
            publish_body_len(&p.topic, p.qos, &p.properties, p.payload.len(), version)
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            if !v5 || short_ack(r) {
                2
            } else if r.properties.is_empty() {
                3
            } else {
                3 + r.properties.encoded_len()
            }
        }
        Packet::Subscribe(s) => {
            2 + props(&s.properties)
                + s.filters
                    .iter()
                    .map(|(f, _)| field_len(f.as_bytes()) + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props(&s.properties) + s.reasons.len(),
        Packet::Unsubscribe(u) => {
            2 + props(&u.properties)
                + u.filters
                    .iter()
                    .map(|f| field_len(f.as_bytes()))
                    .sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            2 + if v5 {
                u.properties.encoded_len() + u.reasons.len()
            } else {
                0
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(Disconnect { reason, properties })
        | Packet::Auth(Auth { reason, properties }) => {
            if !v5 || (reason.0 == 0 && properties.is_empty()) {
                0
            } else if properties.is_empty() {
                1
            } else {
                1 + properties.encoded_len()
            }
        }
    }
}

fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V31 => "MQIsdp",
        _ => "MQTT",
    }
}

fn connect_len(c: &Connect) -> usize {
    let v5 = c.protocol.is_v5();
    let mut n = field_len(protocol_name(c.protocol).as_bytes()) + 1 + 1 + 2;
    if v5 {
        n += c.properties.encoded_len();
    }
    n += field_len(c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            n += w.properties.encoded_len();
        }
        n += field_len(w.topic.as_bytes()) + field_len(&w.payload);
    }
    if let Some(u) = &c.username {
        n += field_len(u.as_bytes());
    }
    if let Some(p) = &c.password {
        n += field_len(p);
    }
    n
}

fn write_connect(c: &Connect, buf: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    put_str(buf, protocol_name(c.protocol));
    buf.put_u8(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        c.properties.encode(buf);
    }
    put_str(buf, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            w.properties.encode(buf);
        }
        put_str(buf, &w.topic);
        put_bytes(buf, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(buf, u);
    }
    if let Some(p) = &c.password {
        put_bytes(buf, p);
    }
}
