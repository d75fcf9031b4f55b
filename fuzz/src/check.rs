//! Decoder invariants, checked on arbitrary input. Used by the `decode_v311` and `decode_v5` fuzz
//! targets and, through `#[path]`, by the main crate's `tests/fuzz_corpus.rs`.
//!
//! For a byte stream read as one connection's input (`decode_stream`):
//! - `decode` never panics, and `Ok(None)` consumes nothing;
//! - a packet's frame cut one byte short decodes to `Ok(None)`, not to an error, so a packet
//!   that arrives in pieces is not refused before it is whole;
//! - every decoded packet `p` round-trips (`round_trip`): `encoded_len(p) == encode(p).len()`,
//!   `decode(encode(p)) == p` with nothing left over, and `encode(p)` is never longer than the
//!   frame `p` was decoded from (re-encoding only drops non-canonical forms: over-long variable
//!   byte integers, an explicit reason code 0 without properties, property order);
//! - the topic helpers never panic on the decoded topic names and filters.

use bytes::BytesMut;
use starling::codec::{self, topic, Packet, ProtocolVersion};

/// The maximum packet size the decode targets use (the broker's is configurable).
pub const MAX_PACKET_SIZE: u32 = 64 * 1024;

/// Lower-case hex, for assertion messages and regression files.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes `data` as a connection with protocol `version` would read it: packet after packet
/// until `Ok(None)` or an error. Checks every invariant above and panics on a violation. Returns
/// how many packets were decoded.
pub fn decode_stream(data: &[u8], version: ProtocolVersion) -> usize {
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    loop {
        let before = buf.clone();
        match codec::decode(&mut buf, version, MAX_PACKET_SIZE) {
            Ok(Some(packet)) => {
                let frame = &before[..before.len() - buf.len()];
                check_prefix_incomplete(frame, version);
                round_trip(&packet, version, frame);
                exercise_topics(&packet);
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(
                    buf, before,
                    "decode returned Ok(None) but changed the buffer"
                );
                return decoded;
            }
            Err(e) => {
                // The close path formats the error and maps it to a reason code.
                let _ = (e.to_string(), e.reason_code());
                return decoded;
            }
        }
    }
}

/// The frame of a packet that decoded, less its last byte, is not yet a packet.
fn check_prefix_incomplete(frame: &[u8], version: ProtocolVersion) {
    let mut short = BytesMut::from(&frame[..frame.len() - 1]);
    match codec::decode(&mut short, version, MAX_PACKET_SIZE) {
        Ok(None) => {}
        other => panic!(
            "a whole packet decodes but its frame minus the last byte gives {other:?} instead of \
             Ok(None)\nframe: {}",
            hex(frame)
        ),
    }
}

/// Checks `encoded_len`, `encode` and `decode` against each other for one decoded `packet`;
/// `frame` is the bytes it was decoded from (empty when it was built, not decoded).
pub fn round_trip(packet: &Packet, version: ProtocolVersion, frame: &[u8]) {
    let mut out = BytesMut::new();
    codec::encode(packet, version, &mut out);
    assert_eq!(
        codec::encoded_len(packet, version),
        out.len(),
        "encoded_len disagrees with encode\npacket: {packet:?}\nencoded: {}",
        hex(&out)
    );
    if !frame.is_empty() {
        assert!(
            out.len() <= frame.len(),
            "re-encoding grew the packet from {} to {} bytes\npacket: {packet:?}\nframe:   {}\n\
             encoded: {}",
            frame.len(),
            out.len(),
            hex(frame),
            hex(&out)
        );
    }
    let mut again = out.clone();
    let back = match codec::decode(&mut again, version, u32::MAX) {
        Ok(Some(back)) => back,
        other => panic!(
            "encode(p) does not decode back: {other:?}\npacket: {packet:?}\nframe:   {}\n\
             encoded: {}",
            hex(frame),
            hex(&out)
        ),
    };
    assert!(
        again.is_empty(),
        "decode(encode(p)) left {} bytes\npacket: {packet:?}\nencoded: {}",
        again.len(),
        hex(&out)
    );
    assert_eq!(
        &back,
        packet,
        "decode(encode(p)) != p\nframe:   {}\nencoded: {}",
        hex(frame),
        hex(&out)
    );
}

/// The topic helpers promise to be panic-free on any input.
fn exercise_topics(packet: &Packet) {
    let filters: Vec<&str> = match packet {
        Packet::Subscribe(s) => s.filters.iter().map(|(f, _)| f.as_str()).collect(),
        Packet::Unsubscribe(u) => u.filters.iter().map(String::as_str).collect(),
        Packet::Publish(p) => vec![&*p.topic],
        _ => return,
    };
    for f in filters {
        let valid = topic::valid_topic_filter(f);
        let _ = topic::valid_topic_name(f);
        if let Some((group, rest)) = topic::parse_shared(f) {
            assert!(!group.is_empty() && !rest.is_empty(), "parse_shared({f:?})");
        }
        let _ = topic::matches(f, f);
        let _ = topic::matches(f, "a/b/c");
        let _ = topic::matches("+/#", f);
        if valid && topic::parse_shared(f).is_none() && topic::valid_topic_name(f) {
            // A filter without wildcards is also a topic name, and matches itself.
            assert!(topic::matches(f, f), "{f:?} does not match itself");
        }
    }
}
