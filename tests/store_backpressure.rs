//! A store that cannot keep up paces publishers instead of failing them: with the writer's
//! queue full, a connection whose next acknowledgement waits for the disk stops being read, the
//! queue never holds more than its capacity, and once the disk catches up every message is
//! acknowledged in order on the same connection.
//!
//! The broker runs in process on a gated in-memory store (writes wait until the test opens the
//! gate); the client speaks raw MQTT over an in-memory duplex stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use starling::broker::BrokerState;
use starling::codec::{self, Connect, Packet, Properties, ProtocolVersion, Publish, QoS};
use starling::config::Config;
use starling::persistence::Persistence;
use starling::protocol::ConnectionInfo;
use starling::storage::{StoreWriter, SyncMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

#[path = "support/gated_store.rs"]
mod gated_store;
use gated_store::GatedStore;

/// Requests the writer's queue holds in this test.
const CAPACITY: usize = 4;
/// Retained QoS 1 messages published at once: each needs a durable write before its PUBACK.
const MESSAGES: u16 = 20;

fn encode(packet: &Packet, buf: &mut BytesMut) {
    codec::encode(packet, ProtocolVersion::V311, buf);
}

/// Reads the next packet the broker sends, within 10 s.
async fn next_packet(client: &mut DuplexStream, buf: &mut BytesMut) -> Packet {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = codec::decode(buf, ProtocolVersion::V311, 1 << 20).expect("decodes") {
            return p;
        }
        let read = tokio::time::timeout_at(deadline, client.read_buf(buf)).await;
        let n = read.expect("a packet within 10 s").expect("read");
        assert!(n > 0, "the broker closed the connection");
    }
}

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A broker on the gated store, serving one in-memory connection; returns the client end.
fn start(gate: &Arc<GatedStore>) -> (Arc<Persistence>, DuplexStream) {
    let writer = StoreWriter::spawn(gate.clone(), SyncMode::Batch, CAPACITY);
    let p = Arc::new(Persistence::new(gate.clone(), writer, 1, 100));
    let broker = BrokerState::new(Config::default(), CancellationToken::new())
        .with_persistence(Some(p.clone()));
    let (server, client) = tokio::io::duplex(1 << 20);
    let info = ConnectionInfo::plain("127.0.0.1:40000".parse().expect("address"), 0);
    tokio::spawn(starling::connection::serve(server, info, Arc::new(broker)));
    (p, client)
}

/// Sends CONNECT (clean, no keep-alive) and waits for CONNACK.
async fn connect(client: &mut DuplexStream, inbox: &mut BytesMut) {
    let mut out = BytesMut::new();
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 0,
        client_id: "paced".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
        bridge: false,
    };
    encode(&Packet::Connect(Box::new(connect)), &mut out);
    client.write_all(&out).await.expect("write CONNECT");
    assert!(matches!(
        next_packet(client, inbox).await,
        Packet::ConnAck(_)
    ));
}

/// Sends `MESSAGES` retained QoS 1 PUBLISH in one write: each must be durable before its PUBACK.
async fn publish_all(client: &mut DuplexStream) {
    let mut out = BytesMut::new();
    for pid in 1..=MESSAGES {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: format!("paced/{pid}").into(),
            packet_id: pid,
            properties: Default::default(),
            payload: Bytes::from_static(b"x"),
        };
        encode(&Packet::Publish(publish), &mut out);
    }
    client.write_all(&out).await.expect("write PUBLISH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_paces_a_publisher_without_failing_it() {
    // Every write waits until the gate opens.
    let gate = Arc::new(GatedStore::new(true, |_| true));
    let (p, mut client) = start(&gate);
    let mut inbox = BytesMut::new();
    connect(&mut client, &mut inbox).await;
    publish_all(&mut client).await;

    // One write is stalled, the queue is full, and the next acknowledged write waits for room
    // with the connection's reads paused: nothing more is queued however long we wait.
    until("the writer stalls", || gate.blocked() == 1).await;
    until("the queue fills", || p.writer.stats().waiting == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = p.writer.stats();
    assert_eq!(
        (stats.queued, stats.waiting),
        (CAPACITY as u64, 1),
        "{stats:?}"
    );
    assert!(
        inbox.is_empty(),
        "nothing is acknowledged before it is durable"
    );

    gate.open();
    for pid in 1..=MESSAGES {
        match next_packet(&mut client, &mut inbox).await {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id, pid),
            other => panic!("expected PUBACK {pid}, got {other:?}"),
        }
    }
    // Still connected.
    let mut out = BytesMut::new();
    encode(&Packet::PingReq, &mut out);
    client.write_all(&out).await.expect("write PINGREQ");
    assert!(matches!(
        next_packet(&mut client, &mut inbox).await,
        Packet::PingResp
    ));

    let stats = p.writer.stats();
    assert_eq!(
        (stats.deletes_dropped, stats.over_bound),
        (0, 0),
        "{stats:?}"
    );
    let groups = gate.groups();
    assert!(groups.iter().all(|&n| n <= CAPACITY), "{groups:?}");
    assert_eq!(groups.iter().sum::<usize>(), usize::from(MESSAGES));
    let retained = p.store.load().expect("load").retained.len();
    assert_eq!(retained, usize::from(MESSAGES));
}
