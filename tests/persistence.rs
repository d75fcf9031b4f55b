//! Persistence acceptance tests: what a publisher had acknowledged survives a SIGKILL of the
//! broker (QoS 1 and QoS 2, with the subscriber offline or consuming slowly), persistent sessions
//! and retained messages survive a graceful restart (v3.1.1 and v5, expired v5 sessions are
//! purged at start), and an offline session's queue waits on disk instead of in memory.
//!
//! The crash and memory tests run the built `starling` binary as a child process (a config file
//! per test, readiness on its "listening on" log line, `Child::kill` = SIGKILL); the restart test
//! runs two in-process brokers one after the other on the same store directory. Each test prints
//! what it measured.
//!
//! The memory test queues 200,000 messages and is `#[ignore]`d in the default run because a
//! debug build takes minutes; run it with
//! `cargo test --release --test persistence -- --ignored memory --nocapture`.

#[path = "persistence/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use starling::codec::{Packet, ProtocolVersion, PubResp, Publish, QoS, ReasonCode};
use starling::config::Config;
use starling::Broker;
use support::*;

/// The tests start brokers and measure memory and throughput on a small machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Acknowledged messages after which the broker is killed.
const KILL_AFTER_ACKS: u64 = 5000;
/// Messages in flight from the crash-test publishers.
const WINDOW: usize = 20;
/// Config for the crash and memory tests: no per-session count limit, so nothing acknowledged is
/// dropped by `max_queued_messages` (which would be a documented loss, not a crash loss).
const UNLIMITED_QUEUE: &str = "[mqtt]\nmax_queued_messages = 0\n";

// ---------------------------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------------------------

/// What a QoS 1 publisher saw.
#[derive(Debug, Default)]
struct Qos1Report {
    published: u64,
    acked: BTreeSet<u64>,
    end: String,
}

/// Publishes QoS 1 messages `crash/...` with sequence-numbered payloads, keeping `window` in
/// flight, until `total` are acknowledged or the connection closes. Every PUBACK is counted in
/// `progress`.
async fn publish_qos1(
    addr: SocketAddr,
    id: &str,
    topic: &str,
    window: usize,
    total: Option<u64>,
    payload_len: usize,
    progress: Arc<AtomicU64>,
) -> Qos1Report {
    let (mut cl, _) =
        Client::connect_ok(addr, connect_packet(ProtocolVersion::V311, id, true, None)).await;
    let mut report = Qos1Report::default();
    let mut inflight: HashMap<u16, u64> = HashMap::new();
    let mut next_pid: u16 = 0;
    loop {
        while inflight.len() < window && total.is_none_or(|t| report.published < t) {
            next_pid = next_pid.checked_add(1).unwrap_or(1);
            while inflight.contains_key(&next_pid) {
                next_pid = next_pid.checked_add(1).unwrap_or(1);
            }
            let seq = report.published;
            cl.queue(&publish_packet(
                topic,
                seq_payload(seq, payload_len),
                QoS::AtLeastOnce,
                next_pid,
                false,
            ));
            inflight.insert(next_pid, seq);
            report.published += 1;
        }
        if inflight.is_empty() {
            report.end = "done".into();
            return report;
        }
        if let Err(e) = cl.flush().await {
            report.end = format!("write failed: {e}");
            return report;
        }
        match cl.recv(Duration::from_secs(30)).await {
            Recv::Packet(Packet::PubAck(a)) => {
                let seq = inflight
                    .remove(&a.packet_id)
                    .unwrap_or_else(|| panic!("{id}: PUBACK for unknown packet id {a:?}"));
                assert_eq!(a.reason, ReasonCode::SUCCESS, "{id}: PUBACK {a:?}");
                report.acked.insert(seq);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Recv::Packet(other) => panic!("{id}: unexpected {other:?}"),
            Recv::Closed(why) => {
                report.end = format!("closed: {why}");
                return report;
            }
            Recv::Timeout => panic!(
                "{id}: no PUBACK within 30 s ({} in flight, {} acked)",
                inflight.len(),
                report.acked.len()
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent, no PUBREC yet.
    Sent,
    /// PUBREC received, PUBREL sent, no PUBCOMP yet.
    Released,
}

/// A QoS 2 publisher whose session state (packet ids and their stage) outlives its connection,
/// so that after reconnecting with clean session 0 it resends unacknowledged PUBLISH (DUP=1) and
/// PUBREL packets in their original order [MQTT-4.4.0-1]. Packet ids come from a pool of
/// [`WINDOW`] ids and are reused as soon as PUBCOMP frees them, as real clients do.
struct Qos2Publisher {
    id: String,
    topic: String,
    free: VecDeque<u16>,
    open: BTreeMap<u16, (u64, Stage)>,
    next_seq: u64,
    /// Sequence numbers whose PUBREC was received: the broker owns these messages.
    pubrec: BTreeSet<u64>,
    completed: u64,
    resent_publish: u64,
    resent_pubrel: u64,
}

impl Qos2Publisher {
    fn new(id: &str, topic: &str) -> Qos2Publisher {
        Qos2Publisher {
            id: id.to_owned(),
            topic: topic.to_owned(),
            free: (1..=WINDOW as u16).collect(),
            open: BTreeMap::new(),
            next_seq: 0,
            pubrec: BTreeSet::new(),
            completed: 0,
            resent_publish: 0,
            resent_pubrel: 0,
        }
    }

    async fn connect(&self, addr: SocketAddr) -> (Client, bool) {
        let (cl, ack) = Client::connect_ok(
            addr,
            connect_packet(ProtocolVersion::V311, &self.id, false, None),
        )
        .await;
        (cl, ack.session_present)
    }

    /// Queues the resends for every open packet id, in send order.
    fn queue_resends(&mut self, cl: &mut Client) {
        let mut open: Vec<(u64, u16, Stage)> = self
            .open
            .iter()
            .map(|(pid, (seq, stage))| (*seq, *pid, *stage))
            .collect();
        open.sort_by_key(|(seq, _, _)| *seq);
        for (seq, pid, stage) in open {
            match stage {
                Stage::Sent => {
                    let mut p = publish_packet(
                        &self.topic,
                        seq_payload(seq, 32),
                        QoS::ExactlyOnce,
                        pid,
                        false,
                    );
                    if let Packet::Publish(Publish { dup, .. }) = &mut p {
                        *dup = true;
                    }
                    cl.queue(&p);
                    self.resent_publish += 1;
                }
                Stage::Released => {
                    cl.queue(&Packet::PubRel(PubResp::new(pid)));
                    self.resent_pubrel += 1;
                }
            }
        }
    }

    /// Publishes new messages up to sequence number `upto` (exclusive; None: without end) and
    /// completes every flow, until all are complete or the connection closes.
    async fn run(&mut self, cl: &mut Client, upto: Option<u64>, progress: &AtomicU64) -> String {
        loop {
            while upto.is_none_or(|u| self.next_seq < u) {
                let Some(pid) = self.free.pop_front() else {
                    break;
                };
                let seq = self.next_seq;
                self.next_seq += 1;
                cl.queue(&publish_packet(
                    &self.topic,
                    seq_payload(seq, 32),
                    QoS::ExactlyOnce,
                    pid,
                    false,
                ));
                self.open.insert(pid, (seq, Stage::Sent));
            }
            if self.open.is_empty() {
                return "done".into();
            }
            if let Err(e) = cl.flush().await {
                return format!("write failed: {e}");
            }
            match cl.recv(Duration::from_secs(30)).await {
                Recv::Packet(Packet::PubRec(r)) => {
                    assert_eq!(r.reason, ReasonCode::SUCCESS, "{}: {r:?}", self.id);
                    let entry = self
                        .open
                        .get_mut(&r.packet_id)
                        .unwrap_or_else(|| panic!("{}: PUBREC for a free id {r:?}", self.id));
                    if entry.1 == Stage::Sent {
                        entry.1 = Stage::Released;
                        self.pubrec.insert(entry.0);
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    cl.queue(&Packet::PubRel(PubResp::new(r.packet_id)));
                }
                Recv::Packet(Packet::PubComp(c)) => {
                    match self.open.get(&c.packet_id) {
                        Some((_, Stage::Released)) => {}
                        other => panic!("{}: PUBCOMP {c:?} for {other:?}", self.id),
                    }
                    self.open.remove(&c.packet_id);
                    self.free.push_back(c.packet_id);
                    self.completed += 1;
                }
                Recv::Packet(other) => panic!("{}: unexpected {other:?}", self.id),
                Recv::Closed(why) => return format!("closed: {why}"),
                Recv::Timeout => panic!(
                    "{}: no PUBREC/PUBCOMP within 30 s (open: {:?})",
                    self.id, self.open
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crash tests
// ---------------------------------------------------------------------------------------------

/// Waits (bounded) until `progress` reaches `n`.
async fn wait_progress(progress: &AtomicU64, n: u64, limit: Duration, what: &str) {
    let end = Instant::now() + limit;
    while progress.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < end,
            "{what}: only {} of {n} acknowledgements within {limit:?}",
            progress.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Subscriber `crash-sub` (3.1.1, clean session 0) on `crash/#`; the publisher streams
/// sequence-numbered messages; the broker is SIGKILLed after [`KILL_AFTER_ACKS`]
/// acknowledgements and restarted on the same store; the subscriber reconnects and drains.
/// `slow`: the subscriber stays connected during the stream and acknowledges slowly (so the
/// crash catches messages in its inflight window and in its disk backlog); otherwise it is
/// offline and everything waits in its stored queue.
async fn crash_test(qos: QoS, slow: bool) {
    let _serial = SERIAL.lock().await;
    let label = format!(
        "crash QoS {} ({} subscriber)",
        qos as u8,
        if slow { "slow online" } else { "offline" }
    );
    let tmp = temp_dir(&format!("crash-q{}", qos as u8));
    let store = tmp.path().join("store");
    let port = free_port();
    let cfg = write_config(tmp.path(), "first.toml", port, &store, UNLIMITED_QUEUE);
    let mut first = BrokerProc::start(&cfg, port).await;

    let mut sub = Subscriber::new("crash-sub", ProtocolVersion::V311);
    let (mut scl, ack) = sub.connect(first.addr, None).await;
    assert!(
        !ack.session_present,
        "{label}: a fresh store has no session"
    );
    scl.subscribe("crash/#", qos).await;
    let sub_task = if slow {
        Some(tokio::spawn(async move {
            let end = sub
                .drain(
                    &mut scl,
                    Duration::from_secs(60),
                    Duration::from_secs(120),
                    Some(Duration::from_millis(2)),
                    None,
                )
                .await;
            (sub, end)
        }))
    } else {
        scl.disconnect().await;
        None
    };

    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let addr = first.addr;
    let pub_task = {
        let progress = progress.clone();
        tokio::spawn(async move {
            if qos == QoS::ExactlyOnce {
                let mut p = Qos2Publisher::new("crash-pub", "crash/q2");
                let (mut cl, _) = p.connect(addr).await;
                let end = p.run(&mut cl, None, &progress).await;
                (None, Some(p), end)
            } else {
                let r =
                    publish_qos1(addr, "crash-pub", "crash/q1", WINDOW, None, 32, progress).await;
                let end = r.end.clone();
                (Some(r), None, end)
            }
        })
    };
    wait_progress(&progress, KILL_AFTER_ACKS, Duration::from_secs(60), &label).await;
    first.kill();
    let killed_after = started.elapsed();
    let first_log = first.log();
    drop(first);

    let (q1, q2, pub_end) = tokio::time::timeout(WAIT, pub_task)
        .await
        .expect("the publisher notices the crash")
        .unwrap();
    let mut sub = match sub_task {
        Some(t) => {
            let (sub, end) = tokio::time::timeout(WAIT, t)
                .await
                .expect("the subscriber notices the crash")
                .unwrap();
            assert!(matches!(end, DrainEnd::Closed(_)), "{label}: {end:?}");
            sub
        }
        None => Subscriber::new("crash-sub", ProtocolVersion::V311),
    };
    let received_before_crash = sub.delivered.len();

    // Restart on the same store.
    let port2 = free_port();
    let cfg2 = write_config(tmp.path(), "second.toml", port2, &store, UNLIMITED_QUEUE);
    let second = BrokerProc::start(&cfg2, port2).await;
    let opened = second.line_with("store opened").unwrap_or_default();

    // The QoS 2 publisher resumes its session: resends what is open, then publishes more with
    // reused packet ids.
    let mut extra_new = 0;
    let (published, must_arrive, pub_detail) = match (q1, q2) {
        (Some(r), _) => (
            r.published,
            r.acked.clone(),
            format!("acked (PUBACK) {}", r.acked.len()),
        ),
        (_, Some(mut p)) => {
            let published_before = p.next_seq;
            let pubrec_before = p.pubrec.len();
            let open_at_crash = p.open.clone();
            let (mut cl, present) = p.connect(second.addr).await;
            assert!(
                present,
                "{label}: the publisher's persistent session must survive the crash \
                 (CONNACK session present = 0)\n{}",
                second.log()
            );
            p.queue_resends(&mut cl);
            extra_new = 200;
            let upto = p.next_seq + extra_new;
            let end = tokio::time::timeout(
                Duration::from_secs(60),
                p.run(&mut cl, Some(upto), &AtomicU64::new(0)),
            )
            .await
            .expect("the publisher completes its flows after the restart");
            assert_eq!(end, "done", "{label}: publisher after restart");
            cl.disconnect().await;
            let detail = format!(
                "PUBREC'd before crash {pubrec_before}, open at crash {} (resent PUBLISH {}, \
                 PUBREL {}), new after restart {extra_new}, PUBREC'd in total {}",
                open_at_crash.len(),
                p.resent_publish,
                p.resent_pubrel,
                p.pubrec.len()
            );
            (published_before, p.pubrec.clone(), detail)
        }
        _ => unreachable!(),
    };

    let (mut scl, ack) = sub.connect(second.addr, None).await;
    assert!(
        ack.session_present,
        "{label}: the subscriber's session must survive the crash\n{}",
        second.log()
    );
    let drain_start = Instant::now();
    // First until as many deliveries as acknowledged messages arrived (an event, with a quiet
    // window long enough for a store read that waits behind an fsync on a busy disk), then
    // until 2 s pass quietly, to see duplicates and anything delivered beyond that.
    let first = sub
        .drain(
            &mut scl,
            Duration::from_secs(15),
            Duration::from_secs(90),
            None,
            Some(must_arrive.len()),
        )
        .await;
    assert!(
        matches!(first, DrainEnd::Done | DrainEnd::Quiet),
        "{label}: subscriber drain: {first:?}"
    );
    let end = sub
        .drain(
            &mut scl,
            Duration::from_secs(2),
            Duration::from_secs(90),
            None,
            None,
        )
        .await;
    let drain_time = drain_start.elapsed();
    assert_eq!(end, DrainEnd::Quiet, "{label}: subscriber drain");

    let counts = sub.counts();
    let lost: Vec<u64> = must_arrive
        .iter()
        .filter(|s| !counts.contains_key(s))
        .copied()
        .collect();
    let duplicates: u64 = counts.values().map(|c| u64::from(c - 1)).sum();
    let unacked_delivered = counts.keys().filter(|s| !must_arrive.contains(s)).count();
    println!(
        "[{label}] killed after {killed_after:?}; publisher: published {published} before the \
         crash, {pub_detail} (publisher ended: {pub_end}); subscriber: received {} before the \
         crash, {} deliveries in total, {} unique, {duplicates} duplicates, {} DUP-flagged, \
         {} QoS 2 redeliveries suppressed, {unacked_delivered} unacknowledged-but-delivered; \
         drained in {drain_time:?}; lost {}",
        received_before_crash,
        sub.delivered.len(),
        counts.len(),
        sub.dup_flagged,
        sub.qos2_redelivered,
        lost.len()
    );
    println!("[{label}] restart: {opened}");
    for w in second.warnings() {
        println!("[{label}] broker warning after restart: {w}");
    }
    let first_warnings: Vec<&str> = first_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    for w in &first_warnings {
        println!("[{label}] broker warning before the crash: {w}");
    }
    assert!(
        lost.is_empty(),
        "{label}: {} acknowledged messages were not delivered after the restart (first: {:?})\n\
         --- broker log after restart ---\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        second.log()
    );
    if qos == QoS::ExactlyOnce {
        let dups: Vec<(u64, u32)> = counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(s, c)| (*s, *c))
            .collect();
        assert_eq!(
            duplicates,
            0,
            "{label}: QoS 2 messages delivered more than once (seq, times): {:?}",
            &dups[..dups.len().min(20)]
        );
        // Everything published, before and after the crash, was PUBREC'd by the end.
        assert_eq!(
            must_arrive.len() as u64,
            published + extra_new,
            "{label}: every QoS 2 message ends acknowledged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_qos1_offline_subscriber_loses_nothing_acknowledged() {
    crash_test(QoS::AtLeastOnce, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_qos1_slow_subscriber_loses_nothing_acknowledged() {
    crash_test(QoS::AtLeastOnce, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_qos2_offline_subscriber_exactly_once() {
    crash_test(QoS::ExactlyOnce, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_qos2_slow_subscriber_exactly_once() {
    crash_test(QoS::ExactlyOnce, true).await;
}

/// `starling store dump` of a store no broker has open.
fn store_dump(store: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["store", "dump", "--dir"])
        .arg(store)
        .env_remove("RUST_LOG")
        .output()
        .expect("run starling store dump");
    assert!(out.status.success(), "store dump: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of one `[keyspace]` section of a dump.
fn dump_section<'a>(dump: &'a str, keyspace: &str) -> Vec<&'a str> {
    let header = format!("[{keyspace}]");
    dump.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .collect()
}

/// PUBCOMP tells the publisher the broker has forgotten the packet id, which the publisher may
/// then reuse at once [MQTT-2.3.1-3]. The broker is SIGKILLed the moment the publisher reads
/// PUBCOMP (while other clients keep the store writer busy); after the restart the publisher
/// sends a NEW QoS 2 message under the same packet id (DUP=0). The broker PUBRECs it, so it must
/// deliver it: a stale "awaiting PUBREL" record for the id would make the broker take the new
/// message for a resend of the old one and drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_right_after_pubcomp_reused_packet_id_is_a_new_message() {
    const ROUNDS: u64 = 3;
    let _serial = SERIAL.lock().await;
    let label = "crash after PUBCOMP";
    let tmp = temp_dir("pubcomp");
    let store = tmp.path().join("store");
    let round_cfg = |round: u64| {
        let port = free_port();
        (
            write_config(
                tmp.path(),
                &format!("round{round}.toml"),
                port,
                &store,
                UNLIMITED_QUEUE,
            ),
            port,
        )
    };
    let (cfg, port) = round_cfg(0);
    let mut broker = BrokerProc::start(&cfg, port).await;

    let mut sub = Subscriber::new("reuse-sub", ProtocolVersion::V311);
    let (mut c, _) = sub.connect(broker.addr, None).await;
    c.subscribe("reuse/#", QoS::ExactlyOnce).await;
    c.disconnect().await;
    let (mut c, _) = Client::connect_ok(
        broker.addr,
        connect_packet(ProtocolVersion::V311, "reuse-load-sub", false, None),
    )
    .await;
    c.subscribe("load/#", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let mut must_arrive = BTreeSet::new();
    let mut stale_rounds = Vec::new();
    let mut stale_records = Vec::new();
    for round in 0..ROUNDS {
        // Background load: every PUBACK of the load publisher waits for an fsync.
        let load_progress = Arc::new(AtomicU64::new(0));
        let load = tokio::spawn(publish_qos1(
            broker.addr,
            "reuse-load",
            "load/x",
            WINDOW,
            None,
            32,
            load_progress.clone(),
        ));
        wait_progress(&load_progress, 200, Duration::from_secs(30), label).await;

        let (mut p, _) = Client::connect_ok(
            broker.addr,
            connect_packet(ProtocolVersion::V311, "reuse-pub", false, None),
        )
        .await;
        let old = 2 * round;
        p.send(&publish_packet(
            "reuse/q2",
            seq_payload(old, 32),
            QoS::ExactlyOnce,
            1,
            false,
        ))
        .await
        .unwrap();
        match p.next().await {
            Packet::PubRec(r) if r.packet_id == 1 && r.reason == ReasonCode::SUCCESS => {}
            other => panic!("expected PUBREC, got {other:?}"),
        }
        must_arrive.insert(old);
        p.send(&Packet::PubRel(PubResp::new(1))).await.unwrap();
        match p.next().await {
            Packet::PubComp(c) if c.packet_id == 1 => {}
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        broker.kill();
        let load_report = tokio::time::timeout(WAIT, load)
            .await
            .expect("the load publisher notices the crash")
            .unwrap();

        let dump = store_dump(&store);
        let stale: Vec<String> = dump_section(&dump, "qos2_in")
            .into_iter()
            .filter(|l| l.contains("\"reuse-pub\""))
            .map(str::to_owned)
            .collect();
        println!(
            "[{label}] round {round}: killed on PUBCOMP (load publisher had {} PUBACKs); \
             inbound QoS 2 records of the publisher in the store: {stale:?}",
            load_report.acked.len()
        );
        if !stale.is_empty() {
            stale_rounds.push(round);
            stale_records.extend(stale);
        }

        let (cfg, port) = round_cfg(round + 1);
        broker = BrokerProc::start(&cfg, port).await;
        let (mut p, ack) = Client::connect_ok(
            broker.addr,
            connect_packet(ProtocolVersion::V311, "reuse-pub", false, None),
        )
        .await;
        assert!(ack.session_present, "{label}: publisher session survives");
        let new = 2 * round + 1;
        p.publish_with_id("reuse/q2", &seq_payload(new, 32), QoS::ExactlyOnce, 1)
            .await;
        must_arrive.insert(new);
        p.disconnect().await;
    }

    let (mut c, ack) = sub.connect(broker.addr, None).await;
    assert!(ack.session_present);
    let end = sub
        .drain(
            &mut c,
            Duration::from_secs(2),
            Duration::from_secs(30),
            None,
            None,
        )
        .await;
    assert_eq!(end, DrainEnd::Quiet);
    let counts = sub.counts();
    let lost: Vec<u64> = must_arrive
        .iter()
        .filter(|s| !counts.contains_key(s))
        .copied()
        .collect();
    println!(
        "[{label}] {ROUNDS} rounds; PUBREC'd {:?}; delivered {:?}; rounds that left a stale \
         inbound QoS 2 record: {stale_rounds:?}; lost {lost:?}",
        must_arrive, sub.delivered
    );
    assert!(
        lost.is_empty(),
        "{label}: QoS 2 messages PUBREC'd after the restart were never delivered: {lost:?} \
         (odd = new message under packet id 1 after the crash). The store still held the \
         publisher's inbound QoS 2 record after PUBCOMP had been sent: {stale_records:?}. \
         The broker sends PUBCOMP before DeleteInboundQos2 is durable (store_nowait on PUBREL), \
         so after a crash the reused id is taken for a resend and the new message is dropped."
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful restart
// ---------------------------------------------------------------------------------------------

fn persistent_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    cfg.sys.interval = Duration::ZERO;
    cfg.mqtt.connect_timeout = Duration::from_secs(2);
    cfg.persistence.enabled = Some(true);
    cfg.persistence.dir = dir.to_path_buf();
    cfg
}

async fn wait_connected(state: &starling::broker::BrokerState, n: u64) {
    let end = Instant::now() + WAIT;
    while state.metrics().clients_connected.get() != n {
        assert!(
            Instant::now() < end,
            "clients connected: {} (want {n})",
            state.metrics().clients_connected.get()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives `n` messages (acknowledging them) and returns their sequence numbers.
async fn receive_n(sub: &mut Subscriber, cl: &mut Client, n: usize) -> Vec<u64> {
    let before = sub.delivered.len();
    let end = sub.drain(cl, WAIT, WAIT * 2, None, Some(before + n)).await;
    assert_eq!(
        end,
        DrainEnd::Done,
        "{}: got {:?}",
        sub.id,
        &sub.delivered[before..]
    );
    sub.delivered[before..].to_vec()
}

/// Graceful restart. Each broker runs on its own runtime, dropped after `shutdown` + `wait`, as
/// a process restart would: see [`graceful_shutdown_releases_the_store`] for why.
#[test]
fn graceful_restart_keeps_sessions_queues_subscriptions_and_retained() {
    let _serial = SERIAL.blocking_lock();
    let tmp = temp_dir("restart");
    let cfg = persistent_config(&tmp.path().join("store"));
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let short_gone = runtime().block_on(restart_phase_one(cfg.clone()));
    // The 1 s session must expire while the broker is down: time has to pass here.
    std::thread::sleep(
        (short_gone + Duration::from_millis(1500)).saturating_duration_since(Instant::now()),
    );
    runtime().block_on(restart_phase_two(
        cfg,
        Subscriber::new("restart-v3", ProtocolVersion::V311),
        Subscriber::new("restart-v5", ProtocolVersion::V5),
    ));
}

/// `BrokerHandle::wait` returning means the broker is gone: the same process can open the
/// store again at once (an embedder restarting the broker, or a test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_the_store() {
    let _serial = SERIAL.lock().await;
    let tmp = temp_dir("release");
    let cfg = persistent_config(&tmp.path().join("store"));
    let first = Broker::builder(cfg.clone())
        .start()
        .await
        .expect("first broker starts");
    let addr = first.local_addrs()[0];
    let (mut c, _) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V5, "release-v5", true, Some(3600)),
    )
    .await;
    c.subscribe("release/#", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connected(first.state(), 0).await;
    let state = first.state().clone();
    first.shutdown();
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .expect("the broker stops within 10 s");
    let others = Arc::strong_count(&state) - 1;
    drop(state);
    let second = Broker::builder(cfg).start().await;
    println!("[release] references to the stopped broker's state left after wait(): {others}");
    match second {
        Ok(h) => {
            h.shutdown();
            h.wait().await;
        }
        Err(e) => panic!(
            "after shutdown() and wait(), the store is still open: {e} ({others} references to \
             the stopped broker's state remain, e.g. the Session Expiry timer of a disconnected \
             v5 session)"
        ),
    }
}

/// Before the restart: three sessions subscribed and disconnected, ten messages queued for each,
/// a retained message; then a graceful shutdown. Returns when the 1 s session disconnected.
async fn restart_phase_one(cfg: Config) -> Instant {
    let first = Broker::builder(cfg.clone())
        .start()
        .await
        .expect("first broker starts");
    let addr = first.local_addrs()[0];

    // Three sessions, each subscribed and then disconnected.
    let v3 = Subscriber::new("restart-v3", ProtocolVersion::V311);
    let (mut c, ack) = v3.connect(addr, None).await;
    assert!(!ack.session_present);
    c.subscribe("restart/#", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let v5 = Subscriber::new("restart-v5", ProtocolVersion::V5);
    let (mut c, ack) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V5, &v5.id, true, Some(3600)),
    )
    .await;
    assert!(!ack.session_present);
    c.subscribe("restart/#", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let (mut c, _) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V5, "restart-v5-short", true, Some(1)),
    )
    .await;
    c.subscribe("restart/#", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let short_gone = Instant::now();
    wait_connected(first.state(), 0).await;

    // Ten messages queued for each, and a retained message.
    let (mut publisher, _) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V311, "restart-pub", true, None),
    )
    .await;
    for i in 0..10 {
        publisher
            .publish(
                &format!("restart/{i}"),
                &seq_payload(i, 32),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    publisher
        .publish(
            "keep/retained",
            &seq_payload(777, 32),
            QoS::AtLeastOnce,
            true,
        )
        .await;
    publisher.disconnect().await;
    wait_connected(first.state(), 0).await;

    first.shutdown();
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .expect("the first broker stops within 10 s");
    short_gone
}

/// After the restart: both sessions resume with their queues and subscriptions, the expired
/// one is gone, the retained message is there.
async fn restart_phase_two(cfg: Config, mut v3: Subscriber, mut v5: Subscriber) {
    let second = Broker::builder(cfg.clone())
        .start()
        .await
        .expect("second broker starts on the same store");
    let addr = second.local_addrs()[0];

    let (mut c3, ack) = v3.connect(addr, None).await;
    assert!(ack.session_present, "v3.1.1 session resumes after restart");
    let got3 = receive_n(&mut v3, &mut c3, 10).await;
    assert_eq!(got3, (0..10).collect::<Vec<_>>(), "v3.1.1 queue order");

    let (mut c5, ack) = v5.connect(addr, Some(3600)).await;
    assert!(ack.session_present, "v5 session resumes after restart");
    let got5 = receive_n(&mut v5, &mut c5, 10).await;
    assert_eq!(got5, (0..10).collect::<Vec<_>>(), "v5 queue order");

    let (mut short, ack) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V5, "restart-v5-short", false, Some(1)),
    )
    .await;
    assert!(
        !ack.session_present,
        "a v5 session whose expiry (1 s) passed while the broker was down is purged at start \
         [MQTT-3.1.2-23]"
    );

    // The subscriptions survived: a new publish reaches both resumed sessions, not the purged one.
    let (mut publisher, _) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V311, "restart-pub", true, None),
    )
    .await;
    publisher
        .publish(
            "restart/new",
            &seq_payload(100, 32),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    assert_eq!(receive_n(&mut v3, &mut c3, 1).await, vec![100]);
    assert_eq!(receive_n(&mut v5, &mut c5, 1).await, vec![100]);
    let stray = short.ping().await;
    assert!(
        stray.is_empty(),
        "the purged session kept a subscription: {stray:?}"
    );
    // Nothing else (no duplicates of the queued ten).
    assert!(c3.ping().await.is_empty(), "v3.1.1: extra packets");
    assert!(c5.ping().await.is_empty(), "v5: extra packets");

    // The retained message survived.
    let (mut cf, _) = Client::connect_ok(
        addr,
        connect_packet(ProtocolVersion::V311, "restart-fresh", true, None),
    )
    .await;
    cf.send(&Packet::Subscribe(starling::codec::Subscribe {
        packet_id: 7,
        filters: vec![(
            "keep/#".into(),
            starling::codec::SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
        properties: Default::default(),
    }))
    .await
    .unwrap();
    let mut retained = None;
    for _ in 0..2 {
        match cf.next().await {
            Packet::SubAck(_) => {}
            Packet::Publish(p) => {
                cf.send(&Packet::PubAck(PubResp::new(p.packet_id)))
                    .await
                    .unwrap();
                retained = Some(p);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let retained = retained.expect("the retained message is delivered after restart");
    assert!(retained.retain, "RETAIN flag on {retained:?}");
    assert_eq!(retained.topic, "keep/retained".into());
    assert_eq!(payload_seq(&retained.payload), 777);

    println!(
        "[restart] v3.1.1 session: present=1, received {:?}; v5 session: present=1, received \
         {:?}; v5 1 s session: present=0; retained: {} on {}",
        v3.delivered,
        v5.delivered,
        payload_seq(&retained.payload),
        retained.topic
    );

    second.shutdown();
    tokio::time::timeout(Duration::from_secs(10), second.wait())
        .await
        .expect("the second broker stops within 10 s");
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

const MEMORY_MESSAGES: u64 = 200_000;
const MEMORY_PAYLOAD: usize = 64;
const MEMORY_LIMIT_MB: f64 = 50.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "queues 200,000 messages: minutes in a debug build; run with \
            `cargo test --release --test persistence -- --ignored memory --nocapture`"]
async fn memory_offline_queue_of_200k_waits_on_disk() {
    let _serial = SERIAL.lock().await;
    let tmp = temp_dir("memory");
    let store = tmp.path().join("store");
    let port = free_port();
    let cfg = write_config(tmp.path(), "memory.toml", port, &store, UNLIMITED_QUEUE);
    let broker = BrokerProc::start(&cfg, port).await;

    let mut sub = Subscriber::new("memory-sub", ProtocolVersion::V311);
    let (mut c, _) = sub.connect(broker.addr, None).await;
    c.subscribe("mem/#", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let rss_before = broker.status_kib("VmRSS");
    let started = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_qos1(
        broker.addr,
        "memory-pub",
        "mem/data",
        500,
        Some(MEMORY_MESSAGES),
        MEMORY_PAYLOAD,
        progress.clone(),
    ));
    // RSS along the way: growth that keeps rising with the queue is memory per message; growth
    // that levels off is the store's buffers.
    let mut curve = Vec::new();
    for step in 1..=8 {
        let n = MEMORY_MESSAGES * step / 8;
        wait_progress(&progress, n, Duration::from_secs(120), "memory publish").await;
        curve.push(format!(
            "{}k: {:.1} MB",
            n / 1000,
            (broker.status_kib("VmRSS") as f64 - rss_before as f64) / 1024.0
        ));
    }
    let report = tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .expect("the publisher finishes")
        .unwrap();
    let publish_time = started.elapsed();
    assert_eq!(report.end, "done");
    assert_eq!(report.acked.len() as u64, MEMORY_MESSAGES);
    let rss_after = broker.status_kib("VmRSS");
    let hwm = broker.status_kib("VmHWM");
    let growth_mb = (rss_after as f64 - rss_before as f64) / 1024.0;
    println!(
        "[memory] {MEMORY_MESSAGES} QoS 1 messages of {MEMORY_PAYLOAD} bytes queued for an \
         offline session in {publish_time:?} ({:.0} msg/s); broker RSS {:.1} MB -> {:.1} MB \
         (growth {growth_mb:.1} MB, limit {MEMORY_LIMIT_MB} MB), peak {:.1} MB",
        MEMORY_MESSAGES as f64 / publish_time.as_secs_f64(),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "[memory] RSS growth by messages acknowledged: {}",
        curve.join(", ")
    );

    // The queue streams back, in order.
    let started = Instant::now();
    let (mut c, ack) = sub.connect(broker.addr, None).await;
    assert!(ack.session_present);
    let end = sub
        .drain(
            &mut c,
            Duration::from_secs(10),
            Duration::from_secs(120),
            None,
            Some(MEMORY_MESSAGES as usize),
        )
        .await;
    let drain_time = started.elapsed();
    let rss_drained = broker.status_kib("VmRSS");
    let hwm = broker.status_kib("VmHWM");
    println!(
        "[memory] received {} of {MEMORY_MESSAGES} in {drain_time:?} ({:.0} msg/s, ended: \
         {end:?}); broker RSS after draining {:.1} MB, peak {:.1} MB",
        sub.delivered.len(),
        sub.delivered.len() as f64 / drain_time.as_secs_f64(),
        rss_drained as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    assert_eq!(end, DrainEnd::Done);
    let out_of_order = sub
        .delivered
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .count();
    assert_eq!(
        sub.delivered.len() as u64,
        MEMORY_MESSAGES,
        "every queued message is delivered"
    );
    assert_eq!(out_of_order, 0, "the queue streams back in order");
    assert_eq!(sub.delivered.first(), Some(&0));
    assert!(
        growth_mb < MEMORY_LIMIT_MB,
        "broker RSS grew by {growth_mb:.1} MB queueing {MEMORY_MESSAGES} messages for an \
         offline session (limit {MEMORY_LIMIT_MB} MB)"
    );
    for w in broker.warnings() {
        println!("[memory] broker warning: {w}");
    }
}

/// A will waiting out its Will Delay Interval is part of the stored session: the broker restarts
/// before the delay passes and still publishes it once the delay is over [MQTT-3.1.3-9]; a will
/// whose session ended while the broker was down goes out at start.
#[test]
fn delayed_will_survives_a_restart() {
    let _serial = SERIAL.blocking_lock();
    let tmp = temp_dir("will");
    let cfg = persistent_config(&tmp.path().join("store"));
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let will_connect = |id: &str, delay: u32, expiry: u32| {
        let mut c = connect_packet(ProtocolVersion::V5, id, false, Some(expiry));
        c.will = Some(starling::codec::Will {
            topic: format!("will/{id}"),
            payload: bytes::Bytes::from(format!("{id} is gone")),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: starling::codec::Properties {
                will_delay_interval: Some(delay),
                ..Default::default()
            },
        });
        c
    };
    runtime().block_on(async {
        let first = Broker::builder(cfg.clone()).start().await.unwrap();
        let addr = first.local_addrs()[0];
        let (mut watcher, _) = Client::connect_ok(
            addr,
            connect_packet(ProtocolVersion::V5, "will-watcher", false, Some(3600)),
        )
        .await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        watcher.disconnect().await;
        // "will-delayed": delay 2 s, the session outlives it. "will-ending": the session
        // (1 s) ends during the downtime, before its 60 s delay.
        let (delayed, _) = Client::connect_ok(addr, will_connect("will-delayed", 2, 3600)).await;
        let (ending, _) = Client::connect_ok(addr, will_connect("will-ending", 60, 1)).await;
        wait_connected(first.state(), 2).await;
        drop(delayed);
        drop(ending);
        wait_connected(first.state(), 0).await;
        first.shutdown();
        first.wait().await;
    });
    // Let the 1 s session expire while the broker is down.
    std::thread::sleep(Duration::from_millis(1200));
    runtime().block_on(async {
        let second = Broker::builder(cfg).start().await.unwrap();
        let addr = second.local_addrs()[0];
        let started = Instant::now();
        let (mut watcher, ack) = Client::connect_ok(
            addr,
            connect_packet(ProtocolVersion::V5, "will-watcher", false, Some(3600)),
        )
        .await;
        assert!(ack.session_present);
        let mut got = BTreeMap::new();
        while got.len() < 2 {
            match watcher.recv(WAIT).await {
                Recv::Packet(Packet::Publish(p)) => {
                    if p.qos != QoS::AtMostOnce {
                        watcher
                            .send(&Packet::PubAck(PubResp::new(p.packet_id)))
                            .await
                            .unwrap();
                    }
                    got.insert(p.topic.clone(), (p.payload.clone(), started.elapsed()));
                }
                other => panic!("waiting for the wills, got {other:?} (so far {got:?})"),
            }
        }
        println!("[will] after restart: {got:?}");
        assert_eq!(
            got["will/will-delayed"].0,
            bytes::Bytes::from("will-delayed is gone")
        );
        assert_eq!(
            got["will/will-ending"].0,
            bytes::Bytes::from("will-ending is gone")
        );
        second.shutdown();
        second.wait().await;
    });
}
