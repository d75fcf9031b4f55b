//! Packet encoding (stub).
use super::*;
use bytes::BytesMut;

pub fn encode(_packet: &Packet, _version: ProtocolVersion, _buf: &mut BytesMut) {}

pub fn encode_publish(_p: &Publish, _version: ProtocolVersion, _buf: &mut BytesMut) {}

pub fn encoded_len(_packet: &Packet, _version: ProtocolVersion) -> usize {
    0
}
