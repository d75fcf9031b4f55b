//! Bounds-checked cursor over one packet's bytes (the variable header and payload). Every read
//! checks the bytes left first, so peer-supplied lengths never size an allocation or index out of
//! range; binary fields are zero-copy slices of the frame.

use std::sync::Arc;

use bytes::{Buf, Bytes};

use super::DecodeError;

/// Reads MQTT data types from a frozen frame; `packet_type` names the packet in errors.
pub(crate) struct Reader {
    buf: Bytes,
    packet_type: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet_type: &'static str) -> Reader {
        Reader { buf, packet_type }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn packet_type(&self) -> &'static str {
        self.packet_type
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd {
                packet_type: self.packet_type,
                field,
            });
        }
        Ok(())
    }

    /// The next byte, not consumed.
    pub(crate) fn peek_u8(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    /// Variable Byte Integer (spec 1.5.5).
    pub(crate) fn var_int(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match decode_var_int(&self.buf)? {
            Some((value, used)) => {
                self.buf.advance(used);
                // At most 4 bytes of 7 bits each, so it always fits in a u32.
                Ok(value as u32)
            }
            None => Err(DecodeError::UnexpectedEnd {
                packet_type: self.packet_type,
                field,
            }),
        }
    }

    /// `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left, zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Binary Data: 2-byte length then bytes (spec 1.5.6).
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.take(len, field)
    }

    /// UTF-8 Encoded String (spec 1.5.4): well-formed UTF-8 without U+0000. U+FEFF is allowed
    /// and the surrogates cannot occur in well-formed UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.string_with(field, str::to_owned)
    }

    /// As [`Reader::string`], straight into the shared form a PUBLISH topic is routed in: one
    /// allocation, not a `String` then a copy of it.
    pub(crate) fn shared_string(&mut self, field: &'static str) -> Result<Arc<str>, DecodeError> {
        self.string_with(field, |s| Arc::from(s))
    }

    /// Checks a UTF-8 Encoded String in place and hands it to `make`: no `Bytes` slice (two
    /// atomic reference-count updates) for a field that is copied anyway.
    fn string_with<T>(
        &mut self,
        field: &'static str,
        make: impl FnOnce(&str) -> T,
    ) -> Result<T, DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.need(len, field)?;
        let raw = self.buf.get(..len).unwrap_or_default();
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        // A plain scan: strings here are short, below what `memchr` pays off for.
        if s.bytes().any(|b| b == 0) {
            return Err(DecodeError::NullCharacter);
        }
        let v = make(s);
        self.buf.advance(len);
        Ok(v)
    }

    /// Packet Identifier, which must be non-zero wherever it appears [MQTT-2.2.1-3].
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        let id = self.u16("packet identifier")?;
        if id == 0 {
            return Err(DecodeError::ZeroPacketId {
                packet_type: self.packet_type,
            });
        }
        Ok(id)
    }

    /// Errors unless every byte was consumed: the remaining length must match the content.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if !self.buf.is_empty() {
            return Err(DecodeError::TrailingBytes {
                packet_type: self.packet_type,
                extra: self.buf.len(),
            });
        }
        Ok(())
    }
}

/// Variable Byte Integer at the start of `buf`: `Ok(Some((value, bytes_used)))`, `Ok(None)` if
/// `buf` ends before the last byte, and an error if a fourth byte still has the continuation bit.
pub(crate) fn decode_var_int(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::VariableByteIntegerTooLong);
    }
    Ok(None)
}
