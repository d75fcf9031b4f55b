//! A clean start that discards a stored session is durable before its CONNACK: the client is
//! told its old session is gone (Session Present 0), so a crash right after must not bring it
//! back [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4] (5.0). The delete used to be submitted without
//! waiting, so a SIGKILL within a few milliseconds of the CONNACK could restore the old
//! session with its subscriptions and queue (chaos round h8's lead).
//!
//! The broker runs in process on a gated in-memory store whose session deletes wait until the
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

const V: ProtocolVersion = ProtocolVersion::V311;

/// A client over an in-memory stream to `broker`.
struct Client {
    io: DuplexStream,
    inbox: BytesMut,
}

impl Client {
    fn open(broker: &Arc<BrokerState>) -> Client {
        let (server, io) = tokio::io::duplex(1 << 16);
        let info = ConnectionInfo::plain("127.0.0.1:40000".parse().expect("address"), 0);
        tokio::spawn(starling::connection::serve(server, info, broker.clone()));
        Client {
            io,
            inbox: BytesMut::new(),
        }
    }

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(p, V, &mut out);
        self.io.write_all(&out).await.expect("write");
    }

    /// The next packet within `limit`; None when nothing came.
    async fn next_within(&mut self, limit: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(p) = codec::decode(&mut self.inbox, V, 1 << 20).expect("decodes") {
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
        let connect = Connect {
            protocol: V,
            clean_start: clean,
            keep_alive: 0,
            client_id: "device".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            bridge: false,
        };
        self.send(&Packet::Connect(Box::new(connect))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_start_is_durable_before_its_connack() {
    let gate = Arc::new(GatedStore::new(false, |batch| {
        batch
            .iter()
            .any(|op| matches!(op, Op::DeleteSession { .. }))
    }));
    let writer = StoreWriter::spawn(gate.clone(), SyncMode::Batch, 64);
    let p = Arc::new(Persistence::new(gate.clone(), writer, 1, 100));
    let broker = Arc::new(
        BrokerState::new(Config::default(), CancellationToken::new())
            .with_persistence(Some(p.clone())),
    );

    // A persistent session with a subscription, stored.
    let mut c = Client::open(&broker);
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
    c.send(&Packet::Disconnect(codec::Disconnect::new(
        codec::ReasonCode::NORMAL_DISCONNECTION,
    )))
    .await;
    c.closed().await;

    // The same client comes back with a clean session while the store holds the delete.
    gate.close();
    let mut back = Client::open(&broker);
    back.connect(true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gate.blocked() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the delete reaches the store"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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
