//! The hasher of the trie's level maps: every PUBLISH hashes each level of its topic once, and
//! std's SipHash-1-3 cost ~100 instructions per short level (most of them in its three
//! finalisation rounds), a fifth of the whole trie match.
//!
//! Levels are short client-chosen strings, so the hash stays keyed: a per-process random seed
//! (taken from std's `RandomState`, which draws it from the OS) enters every multiply, as in
//! the "folded multiply" construction of aHash and foldhash, so a client cannot compute
//! colliding level names offline. It is not a cryptographic MAC; SipHash was chosen by std for
//! the general case, where keys are arbitrary and long-lived maps face adaptive attackers.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Builds [`LevelHasher`]s with the process seed. Zero-sized, so a node's map is 16 bytes
/// smaller than with `RandomState`.
#[derive(Clone, Copy, Default)]
pub(super) struct LevelHash;

/// Odd constants from the fractional digits of pi, as in foldhash: they spread the seed's bits
/// when it is mixed in.
const PI: [u64; 2] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344];

fn seed() -> &'static [u64; 2] {
    static SEED: OnceLock<[u64; 2]> = OnceLock::new();
    SEED.get_or_init(|| {
        let s = std::collections::hash_map::RandomState::new();
        [s.hash_one(PI[0]) | 1, s.hash_one(PI[1]) | 1]
    })
}

impl BuildHasher for LevelHash {
    type Hasher = LevelHasher;

    fn build_hasher(&self) -> LevelHasher {
        let s = seed();
        LevelHasher {
            acc: s[0] ^ PI[0],
            key: s[1] ^ PI[1],
        }
    }
}

/// 128-bit product of `a` and `b`, its halves xored: every input bit reaches the output.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// See the module doc.
pub(super) struct LevelHasher {
    acc: u64,
    key: u64,
}

impl Hasher for LevelHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.acc = fold(self.acc ^ u64::from_le_bytes(w), self.key);
        }
        let tail = chunks.remainder();
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        // The length keeps "a" and "a\0" apart.
        let w = u64::from_le_bytes(w) ^ ((bytes.len() as u64) << 56);
        self.acc = fold(self.acc ^ w, self.key ^ PI[0]);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        // `str`'s terminator: every key of a level map is a str, so it is the same for all.
        self.acc ^= u64::from(i);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.acc, self.key ^ PI[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_hash_equal_and_near_ones_apart() {
        let h = LevelHash;
        assert_eq!(h.hash_one("sensors"), h.hash_one(String::from("sensors")));
        let names = [
            "",
            "a",
            "b",
            "a\0",
            "ab",
            "ba",
            "sensors1",
            "sensors2",
            "sensors12",
            "1sensors",
        ];
        let hashes: std::collections::HashSet<u64> = names.iter().map(|n| h.hash_one(n)).collect();
        assert_eq!(hashes.len(), names.len());
    }

    #[test]
    fn a_thousand_numbered_levels_spread_over_the_buckets() {
        // Low bits pick hashbrown's bucket: 1,000 keys over 1,024 buckets leave few empty.
        let h = LevelHash;
        let mut used = std::collections::HashSet::new();
        for i in 0..1000 {
            used.insert(h.hash_one(format!("client-{i}")) & 1023);
        }
        assert!(used.len() > 550, "{} buckets used", used.len());
    }
}
