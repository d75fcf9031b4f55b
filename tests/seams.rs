//! The seams the cluster, bridges and the admin API plug into, each driven through the real
//! broker over TCP with an in-memory implementation on the other side:
//! - a cluster ([`Cluster`]) told of routed messages, session claims and retained updates,
//!   never of a message that came from a peer (so nothing travels back where it came from);
//! - a PUBLISH fed into routing from outside a connection, resolving once it is stored and
//!   queued everywhere, as a client's PUBACK would;
//! - acknowledgements held until the cluster's receipt for the message resolves;
//! - the registry's session list and an administrator's disconnect (with or without discarding
//!   the session).

#[path = "v5_support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use starling::broker::cluster::Cluster;
use starling::broker::Kicked;
use starling::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use starling::message::{Message, Origin};
use starling::persistence::Receipt;
use starling::storage::{MemoryStore, StoreError};
use starling::Broker;
use support::*;

/// Records every call, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Cluster for Recorder {
    fn routed(&self, msg: &Arc<Message>, _shares: bool) -> Option<Receipt> {
        self.0.lock().unwrap().push(format!("routed {}", msg.topic));
        None
    }
    fn session_claimed(&self, client_id: &str) -> Option<Receipt> {
        self.0.lock().unwrap().push(format!("claimed {client_id}"));
        None
    }
    fn retained_changed(&self, msg: &Arc<Message>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("retained {}", msg.topic));
    }
}

async fn start_with_builder(
    b: starling::BrokerBuilder,
) -> (starling::BrokerHandle, std::net::SocketAddr) {
    let h = b.start().await.expect("broker starts");
    let addr = h.local_addrs()[0];
    (h, addr)
}

fn message(topic: &str, payload: &'static [u8], qos: QoS, origin: Origin) -> Arc<Message> {
    let mut m = Message::new(topic, Bytes::from_static(payload), qos, false);
    m.origin = origin;
    Arc::new(m)
}

#[tokio::test]
async fn cluster_hears_local_traffic_but_never_a_peers_own_message() {
    let rec = Arc::new(Recorder::default());
    let (h, addr) = start_with_builder(Broker::builder(config()).cluster(rec.clone())).await;
    let mut sub = Client::connect(addr, "sub").await;
    sub.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(addr, "pub").await;
    publ.publish("t/local", b"1", QoS::AtLeastOnce).await;
    assert_eq!(sub.next_publish_acked().await.topic, "t/local".into());

    // A message a peer routed here reaches local subscribers, and is not handed back.
    let from_peer = message(
        "t/peer",
        b"2",
        QoS::AtLeastOnce,
        Origin::Peer(Arc::new("n2".to_string())),
    );
    h.state()
        .publish_acknowledged(from_peer)
        .await
        .expect("acknowledged");
    assert_eq!(sub.next_publish_acked().await.topic, "t/peer".into());

    let retained = starling::codec::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "r/x".to_owned().into(),
        packet_id: 0,
        properties: Default::default(),
        payload: Bytes::from_static(b"v"),
    };
    let ack = publ.publish_packet(retained).await.expect("PUBACK");
    assert_eq!(ack.reason, ReasonCode::SUCCESS);

    let calls = rec.calls();
    assert!(calls.contains(&"claimed sub".to_owned()), "{calls:?}");
    assert!(calls.contains(&"claimed pub".to_owned()), "{calls:?}");
    assert!(calls.contains(&"routed t/local".to_owned()), "{calls:?}");
    assert!(calls.contains(&"retained r/x".to_owned()), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.contains("t/peer")),
        "a peer's message must not go back to the cluster: {calls:?}"
    );
    h.shutdown();
}

#[tokio::test]
async fn fed_in_publish_resolves_once_stored_for_an_offline_persistent_subscriber() {
    let store = Arc::new(MemoryStore::new());
    let (h, addr) = start_with_builder(Broker::builder(config()).store(store.clone())).await;
    let mut c = connect_packet("keeper");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    let (mut sub, _) = Client::connect_with(addr, c.clone()).await;
    sub.subscribe("b/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let state = h.state().clone();
    let gone = || state.session_info("keeper").is_some_and(|s| !s.connected);
    for _ in 0..500 {
        if gone() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(gone(), "the broker saw the subscriber leave");

    let bridged = message(
        "b/1",
        b"over the bridge",
        QoS::AtLeastOnce,
        Origin::Bridge(Arc::new("site".to_string())),
    );
    h.state()
        .publish_acknowledged(bridged)
        .await
        .expect("acknowledged");
    // Acknowledged means queued for the subscriber and on disk in its queue.
    let info = h.state().session_info("keeper").expect("session kept");
    assert_eq!(info.queued, 1, "{info:?}");
    assert!(store.check().is_ok(), "the store is consistent");

    c.clean_start = false;
    let (mut sub, ack) = Client::connect_with(addr, c).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2]");
    let p = sub.next_publish_acked().await;
    assert_eq!(&p.payload[..], b"over the bridge");
    h.shutdown();
}

#[tokio::test]
async fn session_list_shows_who_is_there_and_an_administrator_can_disconnect() {
    let b = start().await;
    let mut a = Client::connect(b.addr, "alpha").await;
    a.subscribe("x/+", QoS::AtLeastOnce).await;
    let mut c = connect_packet("beta");
    c.protocol = ProtocolVersion::V311;
    c.clean_start = false;
    let (mut beta, _) = Client::connect_with(b.addr, c).await;
    beta.subscribe("y/#", QoS::AtLeastOnce).await;

    let list = b.state().list_sessions();
    let ids: Vec<&str> = list.iter().map(|s| &*s.client_id).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    let alpha = &list[0];
    assert!(alpha.connected && alpha.connected_since.is_some());
    assert_eq!(alpha.protocol, ProtocolVersion::V5);
    assert_eq!(alpha.subscriptions, ["x/+"]);
    assert!(alpha
        .peer
        .as_deref()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert_eq!(list[1].protocol, ProtocolVersion::V311);

    // Disconnect with a reason: a v5 client is told why [MQTT-3.14.2-1].
    assert_eq!(
        b.state()
            .disconnect_client("alpha", ReasonCode::ADMINISTRATIVE_ACTION, false),
        Kicked::Disconnected
    );
    a.expect_disconnect(ReasonCode::ADMINISTRATIVE_ACTION, "kicked")
        .await;
    b.wait_until("alpha's clean session ends", |s| {
        s.session_info("alpha").is_none()
    })
    .await;

    // beta is persistent: kicked without discard it stays, offline; then discarded.
    assert_eq!(
        b.state()
            .disconnect_client("beta", ReasonCode::ADMINISTRATIVE_ACTION, false),
        Kicked::Disconnected
    );
    beta.expect_closed("a 3.1.1 client is just closed").await;
    b.wait_until("beta offline", |s| {
        s.session_info("beta").is_some_and(|i| !i.connected)
    })
    .await;
    assert_eq!(
        b.state().subscription_count(),
        1,
        "beta's subscription stays"
    );
    assert_eq!(
        b.state()
            .disconnect_client("beta", ReasonCode::ADMINISTRATIVE_ACTION, true),
        Kicked::Discarded
    );
    assert!(b.state().session_info("beta").is_none());
    assert_eq!(
        b.state().subscription_count(),
        0,
        "discarding drops its subscriptions"
    );
    assert_eq!(
        b.state()
            .disconnect_client("nobody", ReasonCode::ADMINISTRATIVE_ACTION, true),
        Kicked::NotFound
    );
}

/// A cluster that holds the acknowledgement of every QoS 1/2 message it is told of until the
/// test lets it go, as the NATS cluster does until the stream has the message.
#[derive(Default)]
struct Holding(Mutex<Vec<tokio::sync::oneshot::Sender<Result<(), StoreError>>>>);

impl Holding {
    /// Answers every receipt handed out so far; how many there were.
    fn release(&self) -> usize {
        let held = std::mem::take(&mut *self.0.lock().unwrap());
        let n = held.len();
        for tx in held {
            let _ = tx.send(Ok(()));
        }
        n
    }
}

impl Cluster for Holding {
    fn routed(&self, msg: &Arc<Message>, _shares: bool) -> Option<Receipt> {
        if msg.qos == QoS::AtMostOnce {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.lock().unwrap().push(tx);
        Some(Receipt::answered_by(rx))
    }
    fn session_claimed(&self, _client_id: &str) -> Option<Receipt> {
        None
    }
    fn retained_changed(&self, _msg: &Arc<Message>) {}
}

/// The cluster's receipt holds a client's PUBACK and PUBREC [MQTT-4.3.2-2] [MQTT-4.3.3-2] and
/// a fed-in message's acknowledgement: the broker takes responsibility for a message only once
/// the other nodes are sure to get it. A subscriber on this node gets it meanwhile.
#[tokio::test]
async fn acknowledgements_wait_for_the_clusters_receipt() {
    let cluster = Arc::new(Holding::default());
    let (h, addr) = start_with_builder(Broker::builder(config()).cluster(cluster.clone())).await;
    let mut sub = Client::connect(addr, "sub").await;
    sub.subscribe("h/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(addr, "pub").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publ.send(&Packet::Publish(publish("h/1", b"x", qos, 3)))
            .await;
        assert_eq!(text(&sub.next_publish_acked().await), "x");
        publ.expect_nothing("an acknowledgement the cluster holds")
            .await;
        assert_eq!(cluster.release(), 1);
        match (qos, publ.next().await) {
            (QoS::AtLeastOnce, Packet::PubAck(a)) => assert_eq!(a.packet_id, 3),
            (QoS::ExactlyOnce, Packet::PubRec(r)) => {
                publ.send(&Packet::PubRel(r)).await;
                assert!(matches!(publ.next().await, Packet::PubComp(_)));
            }
            (_, other) => panic!("expected the acknowledgement, got {other:?}"),
        }
    }
    let bridged = message(
        "h/2",
        b"y",
        QoS::AtLeastOnce,
        Origin::Bridge(Arc::new("site".to_string())),
    );
    let state = h.state().clone();
    let mut fed = tokio::spawn(async move { state.publish_acknowledged(bridged).await });
    assert_eq!(text(&sub.next_publish_acked().await), "y");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut fed)
            .await
            .is_err(),
        "acknowledged before the cluster's receipt"
    );
    assert_eq!(cluster.release(), 1);
    fed.await.expect("task").expect("acknowledged");
    h.shutdown();
}
