//! The output side of the encoder: one `Sink` trait implemented by a byte counter and by
//! `BytesMut`, so a packet is described once and both its exact length and its bytes come from
//! the same code (the length can never disagree with what is written).

use bytes::{BufMut, BytesMut};

/// Largest value a Variable Byte Integer can carry (spec 1.5.5).
pub(crate) const VAR_INT_MAX: usize = 268_435_455;

/// Largest UTF-8 string or binary field: its length prefix is two bytes.
const FIELD_MAX: usize = u16::MAX as usize;

/// Destination of encoded MQTT data types.
pub(crate) trait Sink {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn raw(&mut self, v: &[u8]);
    fn var_int(&mut self, v: usize);

    /// Binary Data; longer fields are cut to 65,535 bytes because the prefix cannot say more
    /// (the broker bounds what it lets in, so this only guards against misuse).
    fn binary(&mut self, v: &[u8]) {
        let v = v.get(..FIELD_MAX).unwrap_or(v);
        // Cannot truncate: `v` is at most FIELD_MAX long.
        self.u16(v.len() as u16);
        self.raw(v);
    }

    /// UTF-8 Encoded String, cut like `binary` but on a character boundary.
    fn string(&mut self, s: &str) {
        self.binary(clamp_str(s).as_bytes());
    }
}

fn clamp_str(s: &str) -> &str {
    if s.len() <= FIELD_MAX {
        return s;
    }
    let mut end = FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Number of bytes of the Variable Byte Integer encoding of `v`.
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Counts bytes instead of writing them.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn raw(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
    fn var_int(&mut self, v: usize) {
        self.0 += var_int_len(v);
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn raw(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn var_int(&mut self, v: usize) {
        // Values above VAR_INT_MAX cannot be framed; the caller bounds packet sizes, so clamp
        // rather than emit a 5-byte integer no peer could parse.
        debug_assert!(v <= VAR_INT_MAX, "variable byte integer {v} out of range");
        let mut v = v.min(VAR_INT_MAX);
        loop {
            let mut byte = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                byte |= 0x80;
            }
            self.put_u8(byte);
            if v == 0 {
                break;
            }
        }
    }
}
