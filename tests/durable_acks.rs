//! Acknowledgements that tell a client its stored session changed wait until the change is
//! durable, so a crash right after cannot undo what the client was told:
//! - a clean start that discards a stored session: the CONNACK says Session Present 0
//!   [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4] (5.0). The delete used to be submitted without
//!   waiting, so a SIGKILL within a few milliseconds of the CONNACK could restore the old
//!   session with its subscriptions and queue (chaos round h8's lead);
//! - an UNSUBSCRIBE of a persistent session's subscription: after the UNSUBACK the server
//!   stops adding messages for it [MQTT-3.10.4-2], also after a restart.
//!
//! The broker runs in process on a gated in-memory store whose chosen writes wait until the
//! test opens the gate; clients speak raw MQTT over in-memory duplex streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use starling::broker::BrokerState;
use starling::codec::{self, Connect, Packet, Properties, ProtocolVersion, QoS};
use starling::config::Config;
use starling::persistence::Persistence;
use starling::protocol::ConnectionInfo;
use starling::storage::{Op, StoreWriter, SyncMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

#[path = "support/gated_store.rs"]
mod gated_store;
use gated_store::GatedStore;

/// A client over an in-memory stream to `broker`.
struct Client {
    io: DuplexStream,
    inbox: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    fn open(broker: &Arc<BrokerState>) -> Client {
        Client::open_as(broker, ProtocolVersion::V311)
    }

    fn open_as(broker: &Arc<BrokerState>, version: ProtocolVersion) -> Client {
        let (server, io) = tokio::io::duplex(1 << 16);
        let info = ConnectionInfo::plain("127.0.0.1:40000".parse().expect("address"), 0);
        tokio::spawn(starling::connection::serve(server, info, broker.clone()));
        Client {
            io,
            inbox: BytesMut::new(),
            version,
        }
    }

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(p, self.version, &mut out);
        self.io.write_all(&out).await.expect("write");
    }

    /// The next packet within `limit`; None when nothing came.
    async fn next_within(&mut self, limit: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let decoded = codec::decode(&mut self.inbox, self.version, 1 << 20);
            if let Some(p) = decoded.expect("decodes") {
                return Some(p);
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.inbox)).await {
                Err(_) => return None,
                Ok(read) => assert!(read.expect("read") > 0, "the broker closed the connection"),
            }
        }
    }

    /// Waits (up to 10 s) until the broker closes the connection.
    async fn closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.io.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "the broker closes the connection");
    }

    async fn next(&mut self) -> Packet {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a packet within 10 s")
    }

    async fn connect(&mut self, clean: bool) {
        let mut properties = Properties::default();
        if self.version == ProtocolVersion::V5 && !clean {
            properties.session_expiry_interval = Some(600);
        }
        let connect = Connect {
            protocol: self.version,
            clean_start: clean,
            keep_alive: 0,
            client_id: "device".into(),
            will: None,
            username: None,
            password: None,
            properties,
            bridge: false,
        };
        self.send(&Packet::Connect(Box::new(connect))).await;
    }
}

/// A broker on a store that holds the writes `holds` picks while its gate is closed.
fn broker(holds: fn(&[Op]) -> bool) -> (Arc<BrokerState>, Arc<GatedStore>) {
    let gate = Arc::new(GatedStore::new(false, holds));
    let writer = StoreWriter::spawn(gate.clone(), SyncMode::Batch, 64);
    let p = Arc::new(Persistence::new(gate.clone(), writer, 1, 100));
    let broker =
        BrokerState::new(Config::default(), CancellationToken::new()).with_persistence(Some(p));
    (Arc::new(broker), gate)
}

/// Waits (up to 10 s, polling: the gate has no event for it) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until a write is held at the gate.
async fn held(gate: &GatedStore) {
    until("the write reaches the store", || gate.blocked() > 0).await;
}

/// Waits until `n` writes of the kind the gate holds went through it.
async fn went_through(gate: &GatedStore, n: usize) {
    until(&format!("{n} writes reach the store"), || {
        gate.groups().len() >= n
    })
    .await;
}

/// A persistent session subscribed to `t/#`, stored; its client still connected.
async fn subscribed(broker: &Arc<BrokerState>) -> Client {
    let mut c = Client::open(broker);
    c.connect(false).await;
    assert!(matches!(c.next().await, Packet::ConnAck(_)));
    let sub = codec::Subscribe {
        packet_id: 1,
        filters: vec![(
            "t/#".into(),
            codec::SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
        properties: Default::default(),
    };
    c.send(&Packet::Subscribe(sub)).await;
    assert!(matches!(c.next().await, Packet::SubAck(_)));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_start_is_durable_before_its_connack() {
    let (broker, gate) = broker(|batch| {
        batch
            .iter()
            .any(|op| matches!(op, Op::DeleteSession { .. }))
    });
    let mut c = subscribed(&broker).await;
    c.send(&Packet::Disconnect(codec::Disconnect::new(
        codec::ReasonCode::NORMAL_DISCONNECTION,
    )))
    .await;
    c.closed().await;

    // The same client comes back with a clean session while the store holds the delete.
    gate.close();
    let mut back = Client::open(&broker);
    back.connect(true).await;
    held(&gate).await;
    assert!(
        back.next_within(Duration::from_millis(300)).await.is_none(),
        "no CONNACK before the old session's delete is durable"
    );
    gate.open();
    match back.next().await {
        Packet::ConnAck(ack) => assert!(!ack.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_is_durable_before_its_unsuback() {
    let (broker, gate) = broker(|batch| {
        batch
            .iter()
            .any(|op| matches!(op, Op::DeleteSubscription { .. }))
    });
    let mut c = subscribed(&broker).await;
    gate.close();
    let unsub = codec::Unsubscribe {
        packet_id: 2,
        filters: vec!["t/#".into()],
        properties: Default::default(),
    };
    c.send(&Packet::Unsubscribe(unsub)).await;
    held(&gate).await;
    assert!(
        c.next_within(Duration::from_millis(300)).await.is_none(),
        "no UNSUBACK before the subscription's delete is durable"
    );
    gate.open();
    match c.next().await {
        Packet::UnsubAck(ack) => assert_eq!(ack.packet_id, 2),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// A CONNECT that resumes a stored session waits for its record before CONNACK; a second
/// CONNECT for the client id takes the session over meanwhile. The first connection is closed
/// without a DISCONNECT 0x8E written ahead of its CONNACK: the first packet the server sends
/// is a CONNACK [MQTT-3.2.0-1] (chaos round h9, L1). Here the store holds the record past the
/// connection's bounded wait for it, so nothing at all is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_taken_over_before_its_connack_sends_nothing_else_first() {
    let (broker, gate) = broker(|batch| batch.iter().any(|op| matches!(op, Op::PutSession(_))));
    let mut c = Client::open_as(&broker, ProtocolVersion::V5);
    c.connect(false).await;
    assert!(matches!(c.next().await, Packet::ConnAck(_)));
    c.send(&Packet::Disconnect(codec::Disconnect::new(
        codec::ReasonCode::NORMAL_DISCONNECTION,
    )))
    .await;
    c.closed().await;
    // The session's record is written again as the connection ends, after the socket closed:
    // let it through before closing the gate, so the write held next is `first`'s (with it
    // held instead, `second` could claim the session before `first`, and `first` would be
    // the one left waiting for its CONNACK).
    went_through(&gate, 2).await;

    gate.close();
    let mut first = Client::open_as(&broker, ProtocolVersion::V5);
    first.connect(false).await;
    held(&gate).await;
    let mut second = Client::open_as(&broker, ProtocolVersion::V5);
    second.connect(false).await;
    let mut sent = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), first.io.read_to_end(&mut sent));
    assert!(read.await.is_ok(), "the first connection is closed");
    assert!(
        sent.is_empty(),
        "nothing may come before a CONNACK: {:?}",
        codec::decode(&mut BytesMut::from(&sent[..]), ProtocolVersion::V5, 1 << 20)
    );
    gate.open();
    match second.next().await {
        Packet::ConnAck(ack) => assert!(ack.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}
