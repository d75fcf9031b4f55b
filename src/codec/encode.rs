//! Packet encoding for MQTT 3.1, 3.1.1 and 5.0 into a caller's `BytesMut`.
//!
//! Each packet body is described once, generically over [`Sink`]: a counting pass yields the exact
//! remaining length (so the buffer is reserved once and `encoded_len` is exact), then the same
//! code writes the bytes. PUBLISH, the hot path, has its own arithmetic length and writes straight
//! into the buffer without cloning or intermediate allocations.
//!
//! The encoder trusts its input: strings and binary fields longer than 65,535 bytes are cut, and
//! packets whose remaining length exceeds 268,435,455 cannot be framed; the broker bounds both.

use bytes::{BufMut, BytesMut};

use super::properties::{properties_len, write_properties};
use super::sink::{var_int_len, Counter, Sink};
use super::*;

/// Appends `packet` to `buf` in the framing of `version`.
///
/// For 3.x, properties and 5.0-only fields are left out. CONNECT is encoded in its own
/// `protocol` version whatever `version` says. AUTH does not exist before 5.0: for 3.x nothing is
/// written.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    if let Packet::Publish(p) = packet {
        return encode_publish(p, version, buf);
    }
    let Some(header) = header_byte(packet, version) else {
        return;
    };
    let mut counter = Counter::default();
    body(packet, version, &mut counter);
    let remaining = counter.0;
    buf.reserve(1 + var_int_len(remaining) + remaining);
    buf.put_u8(header);
    buf.var_int(remaining);
    body(packet, version, buf);
}

/// Appends a PUBLISH; the same bytes as `encode(&Packet::Publish(p.clone()), ..)` without the
/// clone.
pub fn encode_publish(p: &Publish, version: ProtocolVersion, buf: &mut BytesMut) {
    let header = PublishHeader {
        dup: p.dup,
        qos: p.qos,
        retain: p.retain,
        packet_id: p.packet_id,
    };
    encode_publish_parts(header, &p.topic, &p.properties, &p.payload, version, buf);
}

/// The fixed-header flags and packet id of an outgoing PUBLISH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishHeader {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Ignored for QoS 0.
    pub packet_id: u16,
}

/// Appends a PUBLISH from borrowed parts: the broker's per-subscriber hot path, so the topic and
/// payload every subscriber shares are never cloned into an owned packet.
pub fn encode_publish_parts(
    h: PublishHeader,
    topic: &str,
    properties: &Properties,
    payload: &[u8],
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    let props_len = if version.is_v5() {
        properties_len(properties)
    } else {
        0
    };
    let remaining = publish_remaining_parts(topic, h.qos, version, props_len, payload.len());
    buf.reserve(1 + var_int_len(remaining) + remaining);
    let header = 0x30 | (u8::from(h.dup) << 3) | ((h.qos as u8) << 1) | u8::from(h.retain);
    buf.put_u8(header);
    buf.var_int(remaining);
    buf.string(topic);
    if h.qos != QoS::AtMostOnce {
        buf.put_u16(h.packet_id);
    }
    if version.is_v5() {
        write_properties(properties, props_len, buf);
    }
    buf.extend_from_slice(payload);
}

/// Exact number of bytes `encode` appends for `packet` (fixed header included), for checking the
/// peer's Maximum Packet Size before sending.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = match packet {
        Packet::Publish(p) => publish_remaining(p, version, publish_properties_len(p, version)),
        _ if header_byte(packet, version).is_none() => return 0,
        _ => {
            let mut counter = Counter::default();
            body(packet, version, &mut counter);
            counter.0
        }
    };
    1 + var_int_len(remaining) + remaining
}

/// Shrinks `packet` to at most `max` bytes the one way the spec allows: leaving out its Reason
/// String, then its User Properties ([MQTT-3.2.2-19] and [MQTT-3.2.2-20] for CONNACK; the same
/// rule holds for every acknowledgement, DISCONNECT and AUTH, e.g. [MQTT-3.4.2-2],
/// [MQTT-3.4.2-3], [MQTT-3.14.2-3], [MQTT-3.14.2-4]). Returns whether it fits now; when it does
/// not, it must not be sent [MQTT-3.1.2-24]. Other packets, PUBLISH included, are never changed.
pub fn fit_within(packet: &mut Packet, version: ProtocolVersion, max: usize) -> bool {
    if encoded_len(packet, version) <= max {
        return true;
    }
    let Some(props) = droppable_properties(packet) else {
        return false;
    };
    if props.reason_string.take().is_some() && encoded_len(packet, version) <= max {
        return true;
    }
    if let Some(props) = droppable_properties(packet) {
        props.user_properties.clear();
    }
    encoded_len(packet, version) <= max
}

/// The properties of a packet whose Reason String and User Properties a sender may leave out.
fn droppable_properties(packet: &mut Packet) -> Option<&mut BoxedProperties> {
    match packet {
        Packet::ConnAck(a) => Some(&mut a.properties),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some(&mut r.properties)
        }
        Packet::SubAck(a) => Some(&mut a.properties),
        Packet::UnsubAck(a) => Some(&mut a.properties),
        Packet::Disconnect(d) => Some(&mut d.properties),
        Packet::Auth(a) => Some(&mut a.properties),
        _ => None,
    }
}

fn publish_properties_len(p: &Publish, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        properties_len(&p.properties)
    } else {
        0
    }
}

fn publish_remaining(p: &Publish, version: ProtocolVersion, props_len: usize) -> usize {
    publish_remaining_parts(&p.topic, p.qos, version, props_len, p.payload.len())
}

fn publish_remaining_parts(
    topic: &str,
    qos: QoS,
    version: ProtocolVersion,
    props_len: usize,
    payload: usize,
) -> usize {
    let mut t = Counter::default();
    t.string(topic);
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let props = if version.is_v5() {
        var_int_len(props_len) + props_len
    } else {
        0
    };
    t.0 + packet_id + props + payload
}

/// First byte of the fixed header; `None` for a packet `version` cannot carry (AUTH in 3.x).
fn header_byte(packet: &Packet, version: ProtocolVersion) -> Option<u8> {
    Some(match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        // These three carry 0b0010 in the flags [MQTT-3.6.1-1][MQTT-3.8.1-1][MQTT-3.10.1-1].
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) if version.is_v5() => 0xF0,
        Packet::Auth(_) => return None,
    })
}

/// Property Length and properties, computing the length once.
fn props<S: Sink>(s: &mut S, p: &Properties) {
    write_properties(p, properties_len(p), s);
}

/// Variable header and payload of every packet but PUBLISH.
fn body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect_body(c, s),
        Packet::ConnAck(c) => {
            // 3.1 has no Session Present flag.
            let session_present = c.session_present && version != ProtocolVersion::V31;
            s.u8(u8::from(session_present));
            s.u8(c.code.0);
            if v5 {
                props(s, &c.properties);
            }
        }
        Packet::Publish(p) => {
            // Not reached through `encode`, which delegates to `encode_publish`; kept so `body`
            // covers every packet.
            s.string(&p.topic);
            if p.qos != QoS::AtMostOnce {
                s.u16(p.packet_id);
            }
            if v5 {
                props(s, &p.properties);
            }
            s.raw(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            s.u16(r.packet_id);
            if v5 {
                reason_tail(s, r.reason, &r.properties);
            }
        }
        Packet::Subscribe(sub) => {
            s.u16(sub.packet_id);
            if v5 {
                props(s, &sub.properties);
            }
            for (filter, o) in &sub.filters {
                s.string(filter);
                let mut byte = o.qos as u8;
                if v5 {
                    byte |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling & 0b11) << 4;
                }
                s.u8(byte);
            }
        }
        Packet::SubAck(a) => {
            s.u16(a.packet_id);
            if v5 {
                props(s, &a.properties);
            }
            for r in &a.reasons {
                s.u8(r.0);
            }
        }
        Packet::Unsubscribe(u) => {
            s.u16(u.packet_id);
            if v5 {
                props(s, &u.properties);
            }
            for filter in &u.filters {
                s.string(filter);
            }
        }
        Packet::UnsubAck(a) => {
            s.u16(a.packet_id);
            // 3.x UNSUBACK has no payload.
            if v5 {
                props(s, &a.properties);
                for r in &a.reasons {
                    s.u8(r.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                reason_tail(s, d.reason, &d.properties);
            }
        }
        Packet::Auth(a) => {
            if v5 {
                reason_tail(s, a.reason, &a.properties);
            }
        }
    }
}

/// The 5.0 "reason code, then properties" tail in its shortest legal form: nothing for Success
/// with no properties, the reason code alone without properties (spec 3.4.2.1, 3.14.2.1,
/// 3.15.2.1).
fn reason_tail<S: Sink>(s: &mut S, reason: ReasonCode, p: &Properties) {
    let len = properties_len(p);
    if len == 0 && reason == ReasonCode::SUCCESS {
        return;
    }
    s.u8(reason.0);
    if len > 0 {
        write_properties(p, len, s);
    }
}

fn connect_body<S: Sink>(c: &Connect, s: &mut S) {
    let v5 = c.protocol.is_v5();
    s.string(match c.protocol {
        ProtocolVersion::V31 => "MQIsdp",
        _ => "MQTT",
    });
    let bridge = if c.bridge && !v5 { 0x80 } else { 0 };
    s.u8(c.protocol.level() | bridge);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0b100 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    s.u8(flags);
    s.u16(c.keep_alive);
    if v5 {
        props(s, &c.properties);
    }
    s.string(&c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            props(s, &w.properties);
        }
        s.string(&w.topic);
        s.binary(&w.payload);
    }
    if let Some(u) = &c.username {
        s.string(u);
    }
    if let Some(p) = &c.password {
        s.binary(p);
    }
}
