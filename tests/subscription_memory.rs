//! Issue 14 item 4: a session's subscriptions give their memory back when they go. The trie
//! node count is the structural check (RSS depends on the allocator; see BENCHMARKS.md).

mod common;

use common::*;
use starling::codec::Packet;

/// 20,000 filters of one client: literal, `+`, `#`, `$share`, sharing their top levels with
/// another client's subscription so pruning must stop at the nodes still in use.
fn filters() -> Vec<String> {
    (0..20_000u32)
        .map(|i| match i % 5 {
            0 => format!("mem/{i}"),
            1 => format!("dev/{i}/+/temp"),
            2 => format!("dev/{i}/#"),
            3 => format!("$share/g/jobs/{i}/+"),
            _ => format!("{i}/x"),
        })
        .collect()
}

/// Subscribes every filter in SUBSCRIBEs of 500, waiting for each SUBACK.
async fn subscribe_all(raw: &mut Raw, filters: &[String]) {
    for (n, chunk) in filters.chunks(500).enumerate() {
        let pid = u16::try_from(n + 1).expect("few batches");
        let batch: Vec<(&str, u8)> = chunk.iter().map(|f| (f.as_str(), 1)).collect();
        raw.send(&subscribe_packet(pid, &batch)).await;
        match raw.recv().await {
            Packet::SubAck(s) => {
                assert_eq!(s.packet_id, pid);
                assert!(s.reasons.iter().all(|r| r.0 == 1), "all granted QoS 1");
            }
            other => panic!("expected SUBACK {pid}, got {other:?}"),
        }
    }
}

fn config() -> starling::config::Config {
    let mut cfg = test_config();
    cfg.limits.max_subscriptions_per_client = 0;
    cfg
}

/// A broker with one other client subscribed to `dev/+/+/temp`; returns it with the trie's
/// node count at that point.
async fn broker_with_neighbour() -> (TestBroker, Raw, usize) {
    let b = start_with(config()).await;
    let mut other = Raw::connect_v311(b.addr, "neighbour").await;
    assert_eq!(other.subscribe(1, "dev/+/+/temp", 0).await, 0);
    let baseline = b.state().subscription_node_count();
    assert_eq!(baseline, 4, "dev, +, +, temp");
    (b, other, baseline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_subscriptions_leave_no_trie_nodes_after_a_clean_session_ends() {
    let (b, mut other, baseline) = broker_with_neighbour().await;
    let filters = filters();
    let mut big = Raw::connect_v311(b.addr, "big").await;
    subscribe_all(&mut big, &filters).await;
    assert_eq!(b.state().subscription_count(), 20_001);
    assert!(b.state().subscription_node_count() > 30_000);

    big.send(&[0xE0, 0x00]).await; // DISCONNECT; clean session, so the session ends
    big.expect_closed("after DISCONNECT").await;
    b.wait_until("the session is discarded", |s| s.session_count() == 1)
        .await;
    assert_eq!(b.state().subscription_count(), 1);
    assert_eq!(b.state().subscription_node_count(), baseline);

    // The neighbour's subscription, whose nodes the pruning went through, still works.
    let mut p = Raw::connect_v311(b.addr, "pub").await;
    p.publish("dev/1/a/temp", b"21", 0, false, 0).await;
    assert_publish(&other.recv_publish().await, "dev/1/a/temp", b"21");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_everything_leaves_no_trie_nodes() {
    let (b, _other, baseline) = broker_with_neighbour().await;
    let filters = filters();
    let mut big = Raw::connect_v311(b.addr, "big").await;
    subscribe_all(&mut big, &filters).await;
    for (n, chunk) in filters.chunks(500).enumerate() {
        let pid = u16::try_from(n + 100).expect("few batches");
        let batch: Vec<&str> = chunk.iter().map(String::as_str).collect();
        big.send(&unsubscribe_packet(pid, &batch)).await;
        assert!(matches!(big.recv().await, Packet::UnsubAck(u) if u.packet_id == pid));
    }
    assert_eq!(b.state().subscription_count(), 1);
    assert_eq!(b.state().subscription_node_count(), baseline);
}
