//! Packet decoding (stub).
use super::*;
use bytes::BytesMut;

pub fn decode(
    _buf: &mut BytesMut,
    _version: ProtocolVersion,
    _max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    Err(DecodeError::Malformed)
}

pub fn decode_remaining_length(_buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    Err(DecodeError::Malformed)
}
