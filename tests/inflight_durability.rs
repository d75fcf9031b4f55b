//! When a delivery to a persistent session may be written to the socket, relative to the store
//! record of its packet id. A store that holds every write of an in-flight record (until the
//! test releases it) shows both rules through a real connection:
//! - QoS 2: the PUBLISH is written only once its packet id is durable, so a resend after a crash
//!   uses the same id [MQTT-4.4.0-1] and the client does not take it for a new message
//!   [MQTT-4.3.3-2];
//! - QoS 1: the PUBLISH is written without waiting for its record: after a crash it is redelivered
//!   (perhaps under a new id), which at-least-once allows [MQTT-4.3.2-1], and deliveries do not
//!   queue behind the publishers' fsyncs.

#[path = "v5_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use starling::codec::{Packet, QoS};
use starling::storage::{InflightStage, Op};
use starling::Broker;
use support::*;

#[path = "support/gated_store.rs"]
mod gated_store;
use gated_store::GatedStore;

/// Whether `batch` carries the in-flight record of a PUBLISH being sent: the writes the gate
/// holds.
fn sends_inflight(batch: &[Op]) -> bool {
    batch.iter().any(|op| {
        matches!(
            op,
            Op::PutInflight {
                stage: InflightStage::Publish,
                ..
            }
        )
    })
}

/// Waits (up to 10 s) for the store to block a write of an in-flight record.
async fn until_blocked(store: &GatedStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.blocked() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery's in-flight record never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_waits_for_its_packet_id_on_disk_and_qos1_does_not() {
    let store = Arc::new(GatedStore::new(false, sends_inflight));
    let h = Broker::builder(config())
        .store(store.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = h.local_addrs()[0];

    let mut c = connect_packet("durable-sub");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    let (mut sub, _) = Client::connect_with(addr, c).await;
    sub.subscribe("d/q1", QoS::AtLeastOnce).await;
    sub.subscribe("d/q2", QoS::ExactlyOnce).await;
    let mut publ = Client::connect(addr, "durable-pub").await;

    // QoS 1: arrives while its in-flight record is still held.
    store.close();
    publ.send(&Packet::Publish(publish(
        "d/q1",
        b"one",
        QoS::AtLeastOnce,
        1,
    )))
    .await;
    until_blocked(&store).await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(
        store.blocked() > 0,
        "the in-flight record was still held when the QoS 1 PUBLISH arrived"
    );
    store.open();
    sub.send(&puback(p.packet_id, starling::codec::ReasonCode::SUCCESS))
        .await;

    // QoS 2: nothing is written to the subscriber until the record is on disk.
    store.close();
    publ.send(&Packet::Publish(publish(
        "d/q2",
        b"two",
        QoS::ExactlyOnce,
        2,
    )))
    .await;
    until_blocked(&store).await;
    sub.expect_nothing("a QoS 2 PUBLISH before its packet id is durable [MQTT-4.4.0-1]")
        .await;
    store.open();
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"two");
    assert_eq!(p.qos, QoS::ExactlyOnce);
    h.shutdown();
}
