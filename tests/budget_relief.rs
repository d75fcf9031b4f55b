//! Overload rule (b) with a subscriber that takes nothing. Above
//! `limits.global_queued_bytes_high` the broker stops reading publishers until the queues
//! drain; a connected clean-session subscriber of large messages that stops reading (its queue
//! below `max_queued_messages`, so never called stuck by rule (c)) used to hold the budget, and
//! with it every publisher on the broker, until it left: a chaos run got 1 of 10 round trips
//! through an unrelated client. Now the queues of subscribers that take nothing while the
//! budget stays saturated are shed (counted), and publishers are read again.

mod common;

use common::*;
use starling::codec::Packet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Messages of 256 KB, 64 of them (16 MB) against a budget of 8 MiB: far more than the stuck
/// subscriber's socket takes with its 4 KB receive buffer.
const SIZE: usize = 256 * 1024;
const COUNT: u16 = 64;

/// A broker with an 8 MiB global budget (low mark 4 MiB).
async fn small_budget() -> TestBroker {
    let mut cfg = test_config();
    cfg.limits.global_queued_bytes_high = 8 << 20;
    cfg.limits.global_queued_bytes_low = 4 << 20;
    start_with(cfg).await
}

/// A publisher of [`COUNT`] QoS 1 messages of [`SIZE`] bytes to `topic` (packet id and
/// sequence number in the first two payload bytes) that writes them all without waiting for
/// acknowledgements: its writes block while the broker does not read it. Returns its socket,
/// kept open (closing it with acknowledgements unread would reset it).
fn bulk_publisher(b: &TestBroker, topic: &'static str) -> tokio::task::JoinHandle<TcpStream> {
    let addr = b.addr;
    tokio::spawn(async move {
        let mut publisher = TcpStream::connect(addr).await.unwrap();
        publisher
            .write_all(&ConnectOpts::v311("bulk").encode())
            .await
            .unwrap();
        for i in 1..=COUNT {
            let mut payload = vec![b'x'; SIZE];
            payload[..2].copy_from_slice(&i.to_be_bytes());
            let p = publish_packet(topic, &payload, 1, false, false, i);
            publisher.write_all(&p).await.unwrap();
        }
        publisher
    })
}

/// Waits until the [`bulk_publisher`] has written everything (the broker reads it again) and
/// got every PUBACK: every message has been routed. Returns it, still open.
async fn all_routed(bulk: tokio::task::JoinHandle<TcpStream>) -> Raw {
    let publisher = tokio::time::timeout(WAIT, bulk)
        .await
        .expect("the publisher is read again")
        .unwrap();
    let mut publisher = Raw::from_stream(publisher);
    assert!(matches!(publisher.recv().await, Packet::ConnAck(_)));
    for i in 1..=COUNT {
        publisher
            .recv_ack(
                "PUBACK",
                |p| matches!(p, Packet::PubAck(a) if a.packet_id == i),
            )
            .await;
    }
    publisher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_takes_nothing_does_not_pause_every_publisher() {
    let b = small_budget().await;
    // A clean-session subscriber to everything that reads nothing, and a publisher of large
    // QoS 1 messages that nobody else takes.
    let mut stuck = stuck_client(&b, "stuck", "#").await;
    let bulk = bulk_publisher(&b, "bulk/t");
    b.wait_until("the global budget is saturated", |s| {
        s.budget().is_saturated()
    })
    .await;

    // An unrelated client keeps its round trips: each PUBLISH after the first is read again
    // once the stuck subscriber's queue is shed.
    // An unrelated publisher keeps its round trips (to a subscriber of its own): each PUBLISH
    // after its first is read again once the stuck subscriber's queue is shed.
    let mut app_sub = Raw::connect_v311(b.addr, "app-sub").await;
    assert_eq!(app_sub.subscribe(1, "app/t", 1).await, 1);
    let mut app = Raw::connect_v311(b.addr, "app").await;
    for i in 1..=3u16 {
        let payload = format!("ping {i}");
        app.publish("app/t", payload.as_bytes(), 1, false, i).await;
        let p = app_sub.recv_and_ack().await;
        assert_publish(&p, "app/t", payload.as_bytes());
    }
    // Every bulk message has been routed once its PUBACK came.
    let _publisher = all_routed(bulk).await;
    let m = b.state().metrics();
    assert!(m.queues_shed.get() >= 1, "the stuck queue was shed");
    assert!(
        m.dropped_shed.get() >= 1,
        "its messages were counted as dropped"
    );
    b.wait_until("the budget is relieved", |s| !s.budget().is_saturated())
        .await;

    // The shed subscriber is still connected and, once it takes messages again, gets new
    // ones (until then it got drops beyond its small bound).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let p = stuck.recv_and_ack().await;
            let _ = tx.send((p.topic.to_string(), p.payload));
        }
    });
    b.wait_until("the shed subscriber has taken everything", |s| {
        s.session_info("stuck")
            .is_some_and(|i| i.connected && i.queued == 0 && i.inflight == 0)
    })
    .await;
    app.publish("app/t", b"after", 1, false, 10).await;
    assert_publish(&app_sub.recv_and_ack().await, "app/t", b"after");
    loop {
        let (topic, payload) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the shed subscriber gets new messages")
            .expect("the shed subscriber stays connected");
        if topic == "app/t" && payload.as_ref() == b"after" {
            break;
        }
        assert!(
            topic == "bulk/t" || payload.starts_with(b"ping"),
            "{topic}: only what was published"
        );
    }
}

/// A subscriber that keeps taking messages, however slowly, is never shed: publishers wait for
/// it (rule (b)), and it gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_that_keeps_taking_is_not_shed() {
    let b = small_budget().await;
    let (mut slow, _) = Raw::connect(b.addr, &ConnectOpts::v311("slow")).await;
    assert_eq!(slow.subscribe(1, "bulk/#", 1).await, 1);
    let bulk = bulk_publisher(&b, "bulk/t");
    b.wait_until("the global budget is saturated", |s| {
        s.budget().is_saturated()
    })
    .await;
    // One message every 40 ms: 25 in each second the relief task watches.
    for i in 1..=COUNT {
        let p = slow.recv_and_ack().await;
        assert_eq!(p.payload[..2], i.to_be_bytes(), "all of them, in order");
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let _publisher = bulk.await.unwrap();
    assert_eq!(b.state().metrics().queues_shed.get(), 0);
    assert_eq!(b.state().metrics().dropped_shed.get(), 0);
}

/// The global budget counts a message that many queues hold once, plus a small record per
/// queue: a fan-out of large messages used to count the payload once per subscriber and
/// saturate the budget (pausing every publisher, and now shedding) at a small fraction of the
/// memory it bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanned_out_message_counts_its_payload_once() {
    const SUBSCRIBERS: usize = 20;
    const MESSAGES: u16 = 10;
    const PAYLOAD: usize = 100_000;
    let b = start().await;
    for i in 0..SUBSCRIBERS {
        let id = format!("fan-{i}");
        let (mut s, _) = Raw::connect(b.addr, &ConnectOpts::v311(&id).clean(false)).await;
        assert_eq!(s.subscribe(1, "fan/#", 1).await, 1);
        s.send(&[0xE0, 0]).await;
        s.expect_closed("DISCONNECT").await;
    }
    b.wait_until("every subscriber is offline", |s| {
        (0..SUBSCRIBERS).all(|i| {
            s.session_info(&format!("fan-{i}"))
                .is_some_and(|info| !info.connected)
        })
    })
    .await;
    let mut publisher = Raw::connect_v311(b.addr, "fan-pub").await;
    for i in 1..=MESSAGES {
        publisher
            .publish("fan/t", &vec![b'f'; PAYLOAD], 1, false, i)
            .await;
    }
    // Each offline session holds all ten.
    let used = b.state().budget().used();
    let once = u64::from(MESSAGES) * PAYLOAD as u64;
    assert!(
        (once..2 * once).contains(&used),
        "{used} bytes counted for {once} bytes of payload held by {SUBSCRIBERS} queues"
    );
    for i in 0..SUBSCRIBERS {
        let id = format!("fan-{i}");
        let (mut s, _) = Raw::connect(b.addr, &ConnectOpts::v311(&id).clean(false)).await;
        for _ in 0..MESSAGES {
            let p = s.recv_and_ack().await;
            assert_eq!(p.payload.len(), PAYLOAD);
        }
    }
    b.wait_until("the budget is back to zero", |s| s.budget().used() == 0)
        .await;
}

/// A client that reads nothing, on a socket with a 4 KB receive buffer.
async fn stuck_client(b: &TestBroker, id: &str, filter: &str) -> Raw {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = Raw::from_stream(socket.connect(b.addr).await.unwrap());
    c.send(&ConnectOpts::v311(id).encode()).await;
    assert!(matches!(c.recv().await, Packet::ConnAck(_)));
    assert_eq!(c.subscribe(1, filter, 1).await, 1);
    c
}

/// A shed member of a `$share` group is passed over while another member takes messages: a
/// stuck member holds at most 64 KiB, and picking it in turn dropped every other message the
/// group's live member would have taken (acknowledged QoS 1 messages lost; chaos round h5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_shared_member_is_passed_over() {
    let b = small_budget().await;
    let _stuck_member = stuck_client(&b, "member-stuck", "$share/g/s/#").await;
    let _stuck_plain = stuck_client(&b, "plain-stuck", "s/#").await;
    let (mut live, _) = Raw::connect(b.addr, &ConnectOpts::v311("member-live")).await;
    assert_eq!(live.subscribe(1, "$share/g/s/#", 1).await, 1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let p = live.recv_and_ack().await;
            let _ = tx.send((p.topic.to_string(), p.payload));
        }
    });

    // Large messages until the stuck subscribers are shed.
    let bulk = bulk_publisher(&b, "s/big");
    // Bounded generously: 16 MB to move and the relief's 1.5 s, on a loaded 2-core machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.state().metrics().queues_shed.get() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck subscribers were not shed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _publisher = all_routed(bulk).await;

    // Every message after that reaches the live member, none is dropped at the stuck one.
    let mut app = Raw::connect_v311(b.addr, "app").await;
    for i in 1..=20u16 {
        let mut payload = vec![b'n'; 70_000];
        payload[..2].copy_from_slice(&i.to_be_bytes());
        app.publish("s/n", &payload, 1, false, i).await;
    }
    let mut next = 1u16;
    while next <= 20 {
        let (topic, payload) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the live member gets every message")
            .unwrap();
        if topic == "s/n" {
            assert_eq!(payload[..2], next.to_be_bytes(), "in order, none missing");
            next += 1;
        }
    }
}
