//! Packet decoding. [`decode`] checks the fixed header and the maximum packet size as soon as the
//! remaining length is known, waits (consuming nothing) until the whole packet is buffered, then
//! parses it from a frozen slice so payloads and binary fields are zero-copy.

use bytes::{Buf, BytesMut};

use super::properties::Context;
use super::wire::Reader;
use super::*;

/// Decodes the Variable Byte Integer at the start of `buf`: `(value, bytes used)`, or None when
/// more bytes are needed [MQTT-1.5.5-1].
pub fn decode_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, b) in buf.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::RemainingLengthTooLong);
    }
    Ok(None)
}

/// Decodes one packet from the front of `buf`, or returns Ok(None) (consuming nothing) until it
/// is complete. `version` is the connection's protocol; CONNECT reads its own.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    check_flags(packet_type, flags, version)?;
    let Some((remaining, len_bytes)) = decode_remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + len_bytes + remaining;
    if total > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        // The size is checked, so reserving the rest is bounded by the configured maximum.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(1 + len_bytes);
    let mut r = Reader::new(frame);
    let packet = parse(packet_type, flags, version, &mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Some(packet))
}

/// Fixed-header flags: PUBLISH carries DUP/QoS/RETAIN, PUBREL/SUBSCRIBE/UNSUBSCRIBE must be
/// 0b0010, every other packet 0 [MQTT-2.2.2-1][MQTT-2.2.2-2].
fn check_flags(packet_type: u8, flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let expected = match packet_type {
        0 => return Err(DecodeError::ReservedPacketType(0)),
        15 if !version.is_v5() => return Err(DecodeError::AuthBeforeV5),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupOnQoS0);
            }
            return Ok(());
        }
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::InvalidFlags { packet_type, flags });
    }
    Ok(())
}

fn parse(
    packet_type: u8,
    flags: u8,
    version: ProtocolVersion,
    r: &mut Reader,
) -> Result<Packet, DecodeError> {
    let v5 = version.is_v5();
    Ok(match packet_type {
        1 => Packet::Connect(Box::new(parse_connect(r)?)),
        2 => Packet::ConnAck(parse_connack(r, v5)?),
        3 => Packet::Publish(parse_publish(flags, r, v5)?),
        4 => Packet::PubAck(parse_pubresp(r, v5, "PUBACK", PUBACK_CODES)?),
        5 => Packet::PubRec(parse_pubresp(r, v5, "PUBREC", PUBACK_CODES)?),
        6 => Packet::PubRel(parse_pubresp(r, v5, "PUBREL", PUBREL_CODES)?),
        7 => Packet::PubComp(parse_pubresp(r, v5, "PUBCOMP", PUBREL_CODES)?),
        8 => Packet::Subscribe(parse_subscribe(r, v5)?),
        9 => Packet::SubAck(parse_suback(r, v5)?),
        10 => Packet::Unsubscribe(parse_unsubscribe(r, v5)?),
        11 => Packet::UnsubAck(parse_unsuback(r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(parse_disconnect(r, v5)?),
        15 => Packet::Auth(parse_auth(r)?),
        t => return Err(DecodeError::ReservedPacketType(t)),
    })
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn reason(r: &mut Reader, packet: &'static str, valid: &[u8]) -> Result<ReasonCode, DecodeError> {
    let code = r.u8("reason code")?;
    if !valid.contains(&code) {
        return Err(DecodeError::InvalidReasonCode { code, packet });
    }
    Ok(ReasonCode(code))
}

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16("packet identifier")? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

fn props(r: &mut Reader, v5: bool, ctx: Context) -> Result<Properties, DecodeError> {
    if v5 {
        Properties::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

fn parse_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", l) | (b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocolLevel(l)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?;
    if has_password && !has_username && !v5 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = props(r, v5, Context::Connect)?;
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = props(r, v5, Context::Will)?;
        let topic = r.string("will topic")?;
        if !topic::valid_topic_name(&topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = has_username.then(|| r.string("user name")).transpose()?;
    let password = has_password.then(|| r.binary("password")).transpose()?;
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn parse_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connack flags")?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let code = ReasonCode(r.u8("connack code")?);
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        code,
        properties: props(r, v5, Context::ConnAck)?,
    })
}

fn parse_publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    // check_flags has rejected QoS 3 already.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let topic = r.string("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r)?
    };
    let properties = props(r, v5, Context::Publish)?;
    if topic.is_empty() {
        // Only a v5 topic alias may stand in for the topic [MQTT-3.3.2-1].
        if properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
    } else if !topic::valid_topic_name(&topic) {
        return Err(DecodeError::InvalidTopicName);
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 1 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn parse_pubresp(
    r: &mut Reader,
    v5: bool,
    name: &'static str,
    codes: &[u8],
) -> Result<PubResp, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut resp = PubResp::new(packet_id);
    if v5 && !r.is_empty() {
        resp.reason = reason(r, name, codes)?;
        if !r.is_empty() {
            resp.properties = Properties::decode(r, Context::PubResp)?;
        }
    }
    Ok(resp)
}

fn parse_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Context::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        // MQTT 5 answers an invalid filter with SUBACK 0x8F; 3.x closes the connection.
        if !v5 && !topic::valid_topic_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        let o = r.u8("subscription options")?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        let retain_handling = (o >> 4) & 0b11;
        if o & reserved != 0 || retain_handling == 3 {
            return Err(DecodeError::InvalidSubscriptionOptions(o));
        }
        let qos = QoS::from_u8(o & 0b11).ok_or(DecodeError::InvalidSubscriptionOptions(o))?;
        filters.push((
            filter,
            SubscriptionOptions {
                qos,
                no_local: v5 && o & 0x04 != 0,
                retain_as_published: v5 && o & 0x08 != 0,
                retain_handling: if v5 { retain_handling } else { 0 },
            },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn parse_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Context::SubAck)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        reasons.push(ReasonCode(r.u8("suback code")?));
    }
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn parse_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Context::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if !v5 && !topic::valid_topic_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn parse_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Context::UnsubAck)?;
    let mut reasons = Vec::new();
    while v5 && !r.is_empty() {
        reasons.push(ReasonCode(r.u8("unsuback code")?));
    }
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn parse_disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    if v5 && !r.is_empty() {
        d.reason = reason(r, "DISCONNECT", DISCONNECT_CODES)?;
        if !r.is_empty() {
            d.properties = Properties::decode(r, Context::Disconnect)?;
        }
    }
    Ok(d)
}

fn parse_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth {
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    if !r.is_empty() {
        a.reason = reason(r, "AUTH", AUTH_CODES)?;
        if !r.is_empty() {
            a.properties = Properties::decode(r, Context::Auth)?;
        }
    }
    Ok(a)
}
