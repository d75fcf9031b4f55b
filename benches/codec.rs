//! PUBLISH decode and encode, 16-byte and 1 KiB payloads, MQTT 3.1.1 and 5.0, QoS 1.
//!
//! - `decode`: one whole PUBLISH frame in a fresh `BytesMut` (the copy into it is criterion's
//!   untimed setup) → `Packet::Publish`: framing, topic validation, payload split zero-copy.
//! - `encode`: `codec::encode(&Packet::Publish(..))` into a reused buffer (cleared, not freed).
//! - `encode_publish_parts`: the broker's per-subscriber path, from a borrowed topic and payload.
//!
//! The 5.0 packets carry no properties (the common case); their cost is the property-length
//! byte. Run: `cargo bench --bench codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use starling::codec::{
    decode, encode, encode_publish_parts, Packet, ProtocolVersion, Publish, PublishHeader, QoS,
};

const TOPIC: &str = "site/42/dev/17/temp";
const MAX_PACKET: u32 = 1 << 20;

fn publish(size: usize) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TOPIC.to_string().into(),
        packet_id: 4711,
        properties: Default::default(),
        payload: Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>()),
    }
}

fn versions() -> [(&'static str, ProtocolVersion); 2] {
    [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)]
}

const SIZES: [(&str, usize); 2] = [("16B", 16), ("1KiB", 1024)];

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/decode_publish");
    for (vname, v) in versions() {
        for (sname, size) in SIZES {
            let p = Packet::Publish(publish(size));
            let mut wire = BytesMut::new();
            encode(&p, v, &mut wire);
            let wire = wire.freeze();
            // Sanity: the bytes decode back to the same packet.
            let mut check = BytesMut::from(&wire[..]);
            assert_eq!(
                decode(&mut check, v, MAX_PACKET).expect("decodes"),
                Some(p.clone())
            );
            g.throughput(Throughput::Bytes(wire.len() as u64));
            g.bench_function(format!("{vname}/{sname}"), |b| {
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| {
                        let packet = decode(&mut buf, v, MAX_PACKET);
                        black_box(packet)
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode_publish");
    for (vname, v) in versions() {
        for (sname, size) in SIZES {
            let p = Packet::Publish(publish(size));
            let mut buf = BytesMut::with_capacity(4096);
            encode(&p, v, &mut buf);
            g.throughput(Throughput::Bytes(buf.len() as u64));
            g.bench_function(format!("{vname}/{sname}"), |b| {
                b.iter(|| {
                    buf.clear();
                    encode(black_box(&p), v, &mut buf);
                    black_box(buf.len())
                })
            });
        }
    }
    g.finish();
}

fn bench_encode_parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode_publish_parts");
    for (vname, v) in versions() {
        for (sname, size) in SIZES {
            let p = publish(size);
            let header = PublishHeader {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                packet_id: 4711,
            };
            let mut buf = BytesMut::with_capacity(4096);
            encode_publish_parts(header, TOPIC, &p.properties, &p.payload, v, &mut buf);
            // Same bytes as the generic encoder.
            let mut whole = BytesMut::new();
            encode(&Packet::Publish(p.clone()), v, &mut whole);
            assert_eq!(buf, whole);
            g.throughput(Throughput::Bytes(buf.len() as u64));
            g.bench_function(format!("{vname}/{sname}"), |b| {
                b.iter(|| {
                    buf.clear();
                    encode_publish_parts(
                        black_box(header),
                        black_box(TOPIC),
                        &p.properties,
                        black_box(&p.payload),
                        v,
                        &mut buf,
                    );
                    black_box(buf.len())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode, bench_encode_parts);
criterion_main!(benches);
