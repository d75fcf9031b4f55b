//! A persistent session's memory queue is bounded in bytes as well as in count: with a store,
//! QoS 1/2 deliveries beyond `session::MEMORY_BYTES` of payload wait on disk. A subscriber of
//! large messages that stops reading (or goes away) used to keep up to 1,000 of them in memory,
//! counted against the global queue budget: a few such sessions paused every publisher on the
//! broker, for as long as the sessions lived (a chaos run found it).

mod common;

use common::*;
use starling::codec::Packet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_persistent_subscriber_holds_its_backlog_on_disk_not_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config();
    cfg.persistence.enabled = Some(true);
    cfg.persistence.dir = dir.path().to_path_buf();
    let b = start_with(cfg).await;
    let (mut sub, _) = Raw::connect(b.addr, &ConnectOpts::v311("spill-sub").clean(false)).await;
    assert_eq!(sub.subscribe(1, "spill/#", 1).await, 1);
    // 200 messages of 100 KB: 20 MB, far more than the socket and the in-flight window take.
    let mut publ = Raw::connect_v311(b.addr, "spill-pub").await;
    for i in 0..200u16 {
        let mut payload = vec![b'p'; 100_000];
        payload[..2].copy_from_slice(&i.to_be_bytes());
        publ.publish("spill/t", &payload, 1, false, i + 1).await;
    }
    let used = b.state().budget().used();
    assert!(
        used < 4 << 20,
        "{used} bytes of queued messages counted in memory for a subscriber that reads nothing"
    );
    // Everything arrives, in order, from memory and then from disk.
    let mut next = 0u16;
    while next < 200 {
        match sub.recv().await {
            Packet::Publish(p) => {
                let n = u16::from_be_bytes([p.payload[0], p.payload[1]]);
                assert_eq!(p.payload.len(), 100_000);
                if p.dup && n < next {
                    continue;
                }
                assert_eq!(n, next, "in order [MQTT-4.6.0-6]");
                next += 1;
                sub.send(&puback(p.packet_id)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
