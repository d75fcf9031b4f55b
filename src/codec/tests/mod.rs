//! Codec tests: round trips (`roundtrip`), the malformed-input table (`malformed`), MQTT 5.0
//! properties (`properties`), the reason code of each rejection (`reason_codes`), and here the
//! framing tests (partial input, back-to-back packets, maximum packet size) and a no-panic fuzz
//! loop.

mod malformed;
mod properties;
mod reason_codes;
mod roundtrip;

use bytes::{Bytes, BytesMut};

use super::*;
use ProtocolVersion::{V31, V311, V5};

pub(super) const ALL_VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

/// Encodes, checks `encoded_len`, decodes, checks equality and that re-encoding is byte-exact.
pub(super) fn roundtrip(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf);
    assert_eq!(buf.len(), encoded_len(p, v), "encoded_len of {p:?} in {v}");
    let bytes = buf.clone();
    let got = decode(&mut buf, v, u32::MAX)
        .unwrap_or_else(|e| panic!("{p:?} in {v}: {e}"))
        .unwrap_or_else(|| panic!("{p:?} in {v}: incomplete"));
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    assert_eq!(&got, p, "in {v}");
    let mut again = BytesMut::new();
    encode(&got, v, &mut again);
    assert_eq!(again, bytes);
    bytes
}

/// A fixed header with `first` and a correct remaining length around `body`.
pub(super) fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
pub(super) fn s(v: impl AsRef<[u8]>) -> Vec<u8> {
    let v = v.as_ref();
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(super) fn publish(qos: QoS, topic: &str, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
        properties: Default::default(),
        payload: Bytes::from_static(payload),
    }
}

pub(super) fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "client-1".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
        bridge: false,
    }
}

fn sample_packets(v: ProtocolVersion) -> Vec<Packet> {
    let mut c = connect(v);
    c.will = Some(Will {
        topic: "will/t".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"p"));
    let mut p = publish(QoS::ExactlyOnce, "a/b", b"hello");
    p.retain = true;
    vec![
        Packet::Connect(Box::new(c)),
        Packet::Publish(p),
        Packet::PubRel(PubResp::new(9)),
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![("a/+/c".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
            properties: Default::default(),
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION)),
    ]
}

#[test]
fn byte_by_byte_returns_none_until_complete() {
    for v in ALL_VERSIONS {
        for p in sample_packets(v) {
            let mut full = BytesMut::new();
            encode(&p, v, &mut full);
            let mut buf = BytesMut::new();
            for (i, b) in full.iter().enumerate() {
                buf.extend_from_slice(&[*b]);
                let before = buf.len();
                let got = decode(&mut buf, v, u32::MAX).unwrap();
                if i + 1 < full.len() {
                    assert_eq!(got, None, "{p:?} after {} bytes", i + 1);
                    assert_eq!(buf.len(), before, "Ok(None) must consume nothing");
                } else {
                    assert_eq!(got.as_ref(), Some(&p));
                    assert!(buf.is_empty());
                }
            }
        }
    }
}

#[test]
fn back_to_back_packets_decode_one_at_a_time() {
    for v in ALL_VERSIONS {
        let packets = sample_packets(v);
        let mut buf = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut buf);
        }
        // Plus the first byte of another packet, which must stay buffered.
        buf.extend_from_slice(&[0xC0]);
        for p in &packets {
            assert_eq!(decode(&mut buf, v, u32::MAX).unwrap().as_ref(), Some(p));
        }
        assert_eq!(decode(&mut buf, v, u32::MAX).unwrap(), None);
        assert_eq!(&buf[..], &[0xC0]);
    }
}

#[test]
fn empty_buffer_and_incomplete_remaining_length_are_none() {
    assert_eq!(decode(&mut BytesMut::new(), V311, 100).unwrap(), None);
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80][..]);
    assert_eq!(decode(&mut buf, V311, u32::MAX).unwrap(), None);
    assert_eq!(buf.len(), 3);
}

#[test]
fn oversized_packet_rejected_with_only_fixed_header_buffered() {
    // PUBLISH announcing 268,435,455 bytes: rejected at once, never waited for.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let err = decode(&mut buf, V5, 1 << 20).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1 << 20
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);

    // The limit counts the fixed header: a 10-byte packet passes a limit of 10, not of 9.
    let p = Packet::Publish(publish(QoS::AtMostOnce, "t", b"12345"));
    let mut bytes = BytesMut::new();
    encode(&p, V311, &mut bytes);
    assert_eq!(bytes.len(), 10);
    let header_only = &bytes[..2];
    assert!(matches!(
        decode(&mut BytesMut::from(header_only), V311, 9),
        Err(DecodeError::PacketTooLarge { size: 10, max: 9 })
    ));
    assert_eq!(decode(&mut bytes.clone(), V311, 10).unwrap(), Some(p));
}

#[test]
fn remaining_length_boundaries() {
    type Case<'a> = (&'a [u8], Option<(usize, usize)>);
    let cases: [Case; 8] = [
        (&[0x00], Some((0, 1))),
        (&[0x7F], Some((127, 1))),
        (&[0x80, 0x01], Some((128, 2))),
        (&[0xFF, 0x7F], Some((16_383, 2))),
        (&[0x80, 0x80, 0x01], Some((16_384, 3))),
        (&[0xFF, 0xFF, 0xFF, 0x7F], Some((268_435_455, 4))),
        (&[0xFF, 0xFF, 0xFF], None),
        (&[], None),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_remaining_length(bytes).unwrap(), want, "{bytes:?}");
    }
    assert_eq!(
        decode_remaining_length(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        Err(DecodeError::VariableByteIntegerTooLong)
    );
    assert_eq!(
        decode_remaining_length(&[0x80, 0x80, 0x80, 0x80]),
        Err(DecodeError::VariableByteIntegerTooLong)
    );
}

#[test]
fn reason_codes_follow_the_spec() {
    use DecodeError as E;
    use ReasonCode as R;
    let cases = [
        (
            E::UnsupportedProtocolLevel(6),
            R::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        (E::PacketTooLarge { size: 9, max: 8 }, R::PACKET_TOO_LARGE),
        (E::PublishQos3, R::MALFORMED_PACKET),
        (E::UnknownProperty(0x05), R::MALFORMED_PACKET),
        (
            E::DuplicateProperty {
                id: 0x02,
                name: "Message Expiry Interval",
            },
            R::PROTOCOL_ERROR,
        ),
        (E::AuthNotAllowed(V311), R::PROTOCOL_ERROR),
        (E::EmptyTopicName, R::PROTOCOL_ERROR),
        (E::RetainHandling3, R::PROTOCOL_ERROR),
        (E::TopicAliasZero, R::TOPIC_ALIAS_INVALID),
        (E::WillQos3, R::MALFORMED_PACKET),
    ];
    for (e, want) in cases {
        assert_eq!(e.reason_code(), want, "{e}");
    }
}

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn decode_until_stuck(bytes: &[u8], v: ProtocolVersion) {
    let mut buf = BytesMut::from(bytes);
    // Each Ok(Some) consumes at least one byte, so this terminates.
    while let Ok(Some(p)) = decode(&mut buf, v, 4096) {
        // Whatever decodes must encode without panicking, to the length it claims.
        let mut out = BytesMut::new();
        encode(&p, v, &mut out);
        assert_eq!(out.len(), encoded_len(&p, v));
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5000 {
        let len = rng.below(80);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Keep most remaining lengths small so the bodies actually get parsed.
        if let Some(b) = bytes.get_mut(1) {
            *b &= 0x7F;
        }
        for v in ALL_VERSIONS {
            decode_until_stuck(&bytes, v);
        }
    }
}

#[test]
fn mutated_valid_packets_never_panic() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut seeds = Vec::new();
    for v in ALL_VERSIONS {
        for p in sample_packets(v)
            .into_iter()
            .chain(roundtrip::all_packets(v))
        {
            let mut b = BytesMut::new();
            encode(&p, v, &mut b);
            seeds.push((b.to_vec(), v));
        }
    }
    for _ in 0..4000 {
        let (seed, v) = &seeds[rng.below(seeds.len())];
        let mut bytes = seed.clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[i] = rng.next() as u8,
                1 => bytes[i] ^= 1 << rng.below(8),
                _ => bytes.truncate(i.max(1)),
            }
        }
        decode_until_stuck(&bytes, *v);
    }
}

/// [MQTT-3.2.2-19] / [MQTT-3.2.2-20]: `fit_within` leaves out the Reason String first, then the
/// User Properties, and nothing else; a packet that does not fit even so is reported, and
/// PUBLISH is never touched.
#[test]
fn fit_within_drops_only_reason_string_then_user_properties() {
    let v = ProtocolVersion::V5;
    let full = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        properties: Properties {
            reason_string: Some("why".into()),
            user_properties: vec![("k".into(), "v".into())],
            topic_alias_maximum: Some(10),
            ..Properties::default()
        }
        .into(),
    });
    let strip = |reason: bool, users: bool| {
        let mut p = full.clone();
        if let Packet::ConnAck(a) = &mut p {
            if reason {
                a.properties.reason_string = None;
            }
            if users {
                a.properties.user_properties.clear();
            }
        }
        p
    };
    let len = |p: &Packet| encoded_len(p, v);
    for (max, fits, expected) in [
        (len(&full), true, full.clone()),
        (len(&strip(true, false)), true, strip(true, false)),
        (len(&strip(true, false)) - 1, true, strip(true, true)),
        (len(&strip(true, true)), true, strip(true, true)),
        (len(&strip(true, true)) - 1, false, strip(true, true)),
    ] {
        let mut p = full.clone();
        assert_eq!(fit_within(&mut p, v, max), fits, "max {max}");
        assert_eq!(p, expected, "max {max}");
    }
    let mut p = Packet::Publish(publish(QoS::AtLeastOnce, "t/opic", b"payload"));
    let before = p.clone();
    assert!(!fit_within(&mut p, v, 5));
    assert_eq!(p, before);
}
