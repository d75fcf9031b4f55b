//! Packet decoding: framing (fixed header, remaining length, maximum packet size) and the parse of
//! every packet type in both directions, for MQTT 3.1, 3.1.1 and 5.0.
//!
//! The fixed header is validated and the size limit enforced before waiting for the rest of the
//! packet, so an oversized or bogus packet is rejected with only its header buffered. Once a
//! whole packet is buffered it is split off and frozen, and the PUBLISH payload (like every
//! binary field) is a zero-copy slice of it.

use bytes::{Buf, BytesMut};

use super::properties::{decode_boxed_properties, decode_properties, PropCtx};
use super::reader::{decode_var_int, Reader};
use super::*;

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` and consumes nothing while `buf` holds less than a whole packet; on success
/// consumes exactly that packet's bytes. `version` is the connection's negotiated version (pass
/// `V311` before CONNECT; CONNECT is parsed by its own protocol name and level).
/// `max_packet_size` bounds the whole packet (fixed header included) and is checked as soon as the
/// remaining length is known. After an error the connection must be closed.
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
    let name = check_fixed_header(packet_type, flags, version)?;
    let Some((remaining, len_bytes)) = decode_remaining_length(buf.get(1..).unwrap_or_default())?
    else {
        return Ok(None);
    };
    let size = 1 + len_bytes + remaining;
    // u32 always fits in usize on the 32- and 64-bit targets this broker supports.
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    if remaining == 2 && (4..=7).contains(&packet_type) {
        return decode_bare_ack(buf, packet_type, name, 1 + len_bytes).map(Some);
    }
    // A small buffer holding exactly this packet (a connection with light traffic reads one
    // packet at a time) is handed over whole: splitting a frame off a buffer that owns its
    // memory allocates the shared header every split needs, once per packet when the
    // connection drops its emptied buffer between reads. Small only, so a slice kept from it
    // (a PUBLISH payload in a queue) never pins a large read buffer.
    let mut frame = if buf.len() == size && buf.capacity() <= WHOLE_BUFFER_MAX {
        std::mem::take(buf).freeze()
    } else {
        buf.split_to(size).freeze()
    };
    frame.advance(1 + len_bytes);
    let mut r = Reader::new(frame, name);
    let v5 = version.is_v5();
    let packet = match packet_type {
        1 => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        2 => Packet::ConnAck(decode_connack(&mut r, version)?),
        3 => Packet::Publish(decode_publish(&mut r, flags, v5)?),
        4 => Packet::PubAck(decode_pub_resp(&mut r, PropCtx::PubAck, v5)?),
        5 => Packet::PubRec(decode_pub_resp(&mut r, PropCtx::PubRec, v5)?),
        6 => Packet::PubRel(decode_pub_resp(&mut r, PropCtx::PubRel, v5)?),
        7 => Packet::PubComp(decode_pub_resp(&mut r, PropCtx::PubComp, v5)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        9 => Packet::SubAck(decode_suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(decode_unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(decode_disconnect(&mut r, v5)?),
        // check_fixed_header let 15 through only for 5.0.
        _ => Packet::Auth(decode_auth(&mut r)?),
    };
    r.finish()?;
    Ok(Some(packet))
}

/// The largest read buffer [`decode`] hands over whole as a packet's frame.
const WHOLE_BUFFER_MAX: usize = 1024;

/// PUBACK, PUBREC, PUBREL or PUBCOMP that is only a packet id (every 3.x one, and a 5.0
/// Success without properties, spec 3.4.2.1), read in place: no frame split off the buffer
/// (a reference count or an allocation) and no `Reader`. Half the packets a QoS 1 load
/// brings in are such acks. `at` is where the packet id starts; the whole packet is buffered.
fn decode_bare_ack(
    buf: &mut BytesMut,
    packet_type: u8,
    name: &'static str,
    at: usize,
) -> Result<Packet, DecodeError> {
    let id = buf
        .get(at..at + 2)
        .and_then(|b| <[u8; 2]>::try_from(b).ok());
    let packet_id = id.map_or(0, u16::from_be_bytes);
    if packet_id == 0 {
        return Err(DecodeError::ZeroPacketId { packet_type: name });
    }
    buf.advance(at + 2);
    let resp = PubResp::new(packet_id);
    Ok(match packet_type {
        4 => Packet::PubAck(resp),
        5 => Packet::PubRec(resp),
        6 => Packet::PubRel(resp),
        _ => Packet::PubComp(resp),
    })
}

/// The Remaining Length at the start of `buf`: `Ok(Some((value, bytes_used)))`, `Ok(None)` if
/// incomplete, an error if longer than four bytes (spec 1.5.5).
pub fn decode_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    decode_var_int(buf)
}

/// Validates the packet type and its flag bits (spec 2.1.3) and returns the type's name.
fn check_fixed_header(
    packet_type: u8,
    flags: u8,
    version: ProtocolVersion,
) -> Result<&'static str, DecodeError> {
    let (name, required) = match packet_type {
        0 => return Err(DecodeError::ReservedPacketType(0)),
        1 => ("CONNECT", 0),
        2 => ("CONNACK", 0),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::PublishQos3);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupOnQos0);
            }
            return Ok("PUBLISH");
        }
        4 => ("PUBACK", 0),
        5 => ("PUBREC", 0),
        6 => ("PUBREL", 0b0010),
        7 => ("PUBCOMP", 0),
        8 => ("SUBSCRIBE", 0b0010),
        9 => ("SUBACK", 0),
        10 => ("UNSUBSCRIBE", 0b0010),
        11 => ("UNSUBACK", 0),
        12 => ("PINGREQ", 0),
        13 => ("PINGRESP", 0),
        14 => ("DISCONNECT", 0),
        _ if version.is_v5() => ("AUTH", 0),
        _ => return Err(DecodeError::AuthNotAllowed(version)),
    };
    // MQTT 3.1 gave these bits meaning (DUP/QoS on every type) and clients still set DUP on
    // retried PUBREL/SUBSCRIBE/UNSUBSCRIBE, so 3.1 flags are ignored, as Mosquitto does.
    if flags != required && version != ProtocolVersion::V31 {
        return Err(DecodeError::InvalidHeaderFlags {
            packet_type: name,
            flags,
        });
    }
    Ok(name)
}

/// Rejects an empty or wildcard-bearing Topic Name; `alias` allows the empty name in 5.0.
fn check_topic_name(topic: &str, alias: bool) -> Result<(), DecodeError> {
    if topic.is_empty() {
        if alias {
            return Ok(());
        }
        return Err(DecodeError::EmptyTopicName);
    }
    if !topic::valid_topic_name(topic) {
        return Err(DecodeError::InvalidTopicName);
    }
    Ok(())
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let (protocol, bridge) = decode_protocol(r)?;
    let v5 = protocol.is_v5();
    let flags = r.u8("connect flags")?;
    if flags & 0b0000_0001 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill(flags));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::WillQos3)?;
    // 5.0 dropped this rule so a password can carry a token without a user name.
    if password_flag && !username_flag && !v5 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = if v5 {
        decode_properties(r, PropCtx::Connect)?
    } else {
        Properties::default()
    };
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        Some(decode_will(r, v5, will_qos, will_retain)?)
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
        bridge,
    })
}

/// CONNECT's protocol name and level: the version, and whether a Mosquitto bridge set the
/// level's top bit.
fn decode_protocol(r: &mut Reader) -> Result<(ProtocolVersion, bool), DecodeError> {
    // Read as bytes: a name that is not UTF-8 is still just a wrong protocol name.
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    // A Mosquitto bridge with `try_private` sets the level's top bit, for 3.1 and 3.1.1 only.
    let bridge = level & 0x80 != 0;
    let protocol = match (name.as_ref(), level & 0x7F) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) if !bridge => ProtocolVersion::V5,
        (b"MQIsdp", _) | (b"MQTT", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    Ok((protocol, bridge))
}

/// CONNECT's will part (properties on 5.0, topic, payload), present when the Will Flag is set.
fn decode_will(r: &mut Reader, v5: bool, qos: QoS, retain: bool) -> Result<Will, DecodeError> {
    let properties = if v5 {
        decode_properties(r, PropCtx::Will)?
    } else {
        Properties::default()
    };
    let topic = r.string("will topic")?;
    check_topic_name(&topic, false)?;
    let payload = r.binary("will payload")?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn decode_connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("acknowledge flags")?;
    // 3.1 has no Session Present bit: the byte is simply unused there.
    let session_present = match version {
        ProtocolVersion::V31 => false,
        _ if flags & 0xFE != 0 => return Err(DecodeError::ConnAckReservedFlags(flags)),
        _ => flags & 1 != 0,
    };
    let code = r.u8("reason code")?;
    let valid = if version.is_v5() {
        reason_allowed(PropCtx::ConnAck, code)
    } else {
        code <= 5
    };
    if !valid {
        return Err(invalid_reason(r, code));
    }
    let properties = if version.is_v5() {
        decode_boxed_properties(r, PropCtx::ConnAck)?
    } else {
        BoxedProperties::default()
    };
    Ok(ConnAck {
        session_present,
        code: ReasonCode(code),
        properties,
    })
}

fn decode_publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    // check_fixed_header already rejected QoS 3.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::PublishQos3)?;
    let topic = r.shared_string("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = if v5 {
        decode_boxed_properties(r, PropCtx::Publish)?
    } else {
        BoxedProperties::default()
    };
    check_topic_name(&topic, properties.topic_alias.is_some())?;
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and the properties may each be left
/// off when they are Success / empty (spec 3.4.2.1).
fn decode_pub_resp(r: &mut Reader, ctx: PropCtx, v5: bool) -> Result<PubResp, DecodeError> {
    let packet_id = r.packet_id()?;
    let (reason, properties) = if v5 {
        decode_reason_and_properties(r, ctx)?
    } else {
        (ReasonCode::SUCCESS, BoxedProperties::default())
    };
    Ok(PubResp {
        packet_id,
        reason,
        properties,
    })
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_boxed_properties(r, PropCtx::Subscribe)?
    } else {
        BoxedProperties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        // MQTT 5 answers an invalid filter with SUBACK 0x8F Topic Filter invalid and keeps the
        // connection; 3.x has no such code and closes it.
        if !v5 && !topic::valid_topic_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        let options = decode_subscription_options(r.u8("subscription options")?, v5)?;
        if options.no_local && topic::parse_shared(&filter).is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push((filter, options));
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

fn decode_subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    // 3.x uses only the QoS bits; 5.0 reserves the top two.
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::SubscribeReservedBits(byte));
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::SubscribeQos3)?;
    let retain_handling = (byte >> 4) & 0b11;
    if retain_handling == 3 {
        return Err(DecodeError::RetainHandling3);
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
        local_origin: false,
    })
}

fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_boxed_properties(r, PropCtx::SubAck)?
    } else {
        BoxedProperties::default()
    };
    let reasons = decode_reason_list(r, PropCtx::SubAck, v5)?;
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        decode_boxed_properties(r, PropCtx::Unsubscribe)?
    } else {
        BoxedProperties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        // As for SUBSCRIBE: MQTT 5 answers UNSUBACK 0x8F.
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

fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    // 3.x UNSUBACK is just the packet identifier.
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: BoxedProperties::default(),
        });
    }
    let properties = decode_boxed_properties(r, PropCtx::UnsubAck)?;
    let reasons = decode_reason_list(r, PropCtx::UnsubAck, true)?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    // 3.x DISCONNECT has no variable header; Reader::finish rejects any byte.
    if !v5 {
        return Ok(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    }
    let (reason, properties) = decode_reason_and_properties(r, PropCtx::Disconnect)?;
    Ok(Disconnect { reason, properties })
}

fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let (reason, properties) = decode_reason_and_properties(r, PropCtx::Auth)?;
    Ok(Auth { reason, properties })
}

/// The optional "reason code, then optional properties" tail of 5.0 acks, DISCONNECT and AUTH:
/// absent means Success with no properties (spec 3.4.2.1, 3.14.2.1, 3.15.2.1).
fn decode_reason_and_properties(
    r: &mut Reader,
    ctx: PropCtx,
) -> Result<(ReasonCode, BoxedProperties), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, BoxedProperties::default()));
    }
    let code = r.u8("reason code")?;
    if !reason_allowed(ctx, code) {
        return Err(invalid_reason(r, code));
    }
    let properties = if r.is_empty() {
        BoxedProperties::default()
    } else {
        decode_boxed_properties(r, ctx)?
    };
    Ok((ReasonCode(code), properties))
}

/// The rest of the packet as one reason code per byte (SUBACK / UNSUBACK payload).
fn decode_reason_list(
    r: &mut Reader,
    ctx: PropCtx,
    v5: bool,
) -> Result<Vec<ReasonCode>, DecodeError> {
    let bytes = r.rest();
    let mut reasons = Vec::with_capacity(bytes.len());
    for &code in bytes.iter() {
        // 3.x SUBACK return codes are 0x00..=0x02 and 0x80 (3.1.1 section 3.9.3).
        let valid = if v5 {
            reason_allowed(ctx, code)
        } else {
            matches!(code, 0x00..=0x02 | 0x80)
        };
        if !valid {
            return Err(invalid_reason(r, code));
        }
        reasons.push(ReasonCode(code));
    }
    Ok(reasons)
}

fn invalid_reason(r: &Reader, code: u8) -> DecodeError {
    DecodeError::InvalidReasonCode {
        packet_type: r.packet_type(),
        code,
    }
}

/// Whether `code` is one of the 5.0 reason codes the spec lists for the packet (spec 2.4 and each
/// packet's reason code table).
fn reason_allowed(ctx: PropCtx, code: u8) -> bool {
    match ctx {
        PropCtx::ConnAck => matches!(
            code,
            0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
        ),
        PropCtx::PubAck | PropCtx::PubRec => {
            matches!(
                code,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            )
        }
        PropCtx::PubRel | PropCtx::PubComp => matches!(code, 0x00 | 0x92),
        PropCtx::SubAck => matches!(
            code,
            0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
        PropCtx::UnsubAck => matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
        PropCtx::Disconnect => matches!(
            code,
            0x00 | 0x04
                | 0x80..=0x83
                | 0x87
                | 0x89
                | 0x8B
                | 0x8D..=0x90
                | 0x93..=0xA2
        ),
        PropCtx::Auth => matches!(code, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}
