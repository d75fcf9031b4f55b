//! MQTT's primitive data types (section 1.5): a bounds-checked reader over one packet's bytes and
//! the matching writers. The reader works on `Bytes`, so binary fields and payloads are slices of
//! the input, never copies.

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;

/// Reads one packet's variable header and payload; every read is checked against the end.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let s = self.slice(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.slice(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// Variable Byte Integer, at most 4 bytes [MQTT-1.5.5-1].
    pub fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8(what)?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidVarInt)
    }

    fn slice(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    /// `n` bytes as a zero-copy slice of the packet.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(what))?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    /// The rest of the packet (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u16(what)?;
        self.bytes(usize::from(n), what)
    }

    /// UTF-8 Encoded String: well-formed, without U+0000 [MQTT-1.5.3-1][MQTT-1.5.3-2].
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(what)?;
        let raw = self.slice(usize::from(n), what)?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(s.to_owned())
    }

    /// Takes the next `n` bytes as a reader of their own (a property block).
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.bytes(n, what)?))
    }
}

/// Bytes a Variable Byte Integer of `v` takes.
pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(buf: &mut BytesMut, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if v == 0 {
            return;
        }
    }
}

/// Writes a length-prefixed string or binary field. Callers keep fields under 65536 bytes (the
/// decoder and the broker never produce longer ones); longer input is cut rather than framed
/// wrongly.
pub fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    buf.put_u16(n as u16);
    buf.put_slice(&b[..n]);
}

pub fn put_str(buf: &mut BytesMut, s: &str) {
    put_bytes(buf, s.as_bytes());
}

/// Encoded size of a length-prefixed field.
pub fn field_len(b: &[u8]) -> usize {
    2 + b.len().min(usize::from(u16::MAX))
}
