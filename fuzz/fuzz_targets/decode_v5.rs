//! Arbitrary bytes as a v5 connection's read buffer: decode until None or an error, and check
//! every decoded packet's round trip (see `starling_fuzz::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    starling_fuzz::check::decode_stream(data, ProtocolVersion::V5);
});
