//! The restart variant: the real `starling` binary with persistence on, persistent subscribers
//! (two plain, two in one `$share` group, one of which is a slow consumer that stops reading
//! shortly before the stop, so the broker holds unsent shared messages for it when it stops)
//! and persistent publishers at QoS 1 and QoS 2. Mid-run
//! the broker is stopped (SIGTERM, or SIGKILL) and started again on the same store; every client
//! reconnects without clean start and carries on with its session (publishers resend what was in
//! flight [MQTT-4.4.0-1]). At the end every message whose PUBACK / PUBCOMP its publisher read
//! must have reached every plain subscriber and one member of the group, and no QoS 2 message
//! may reach a subscriber (or the group) twice [MQTT-4.3.3-2].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Conn, Got};
use crate::ledger::{self, Copies, Key, PubRecord};
use crate::psupport::{free_port, temp_dir, write_config, BrokerProc};
use crate::session::{ClientSession, Event, Flight};

/// How the broker is stopped mid-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Term,
    Kill,
}

/// No per-session count limit: an acknowledged message may not be dropped at all.
const CONFIG: &str = "[mqtt]\nmax_queued_messages = 0\n";
/// Messages a publisher keeps in flight.
const WINDOW: usize = 10;
/// At most one new message per publisher per this.
const PUBLISH_EVERY: Duration = Duration::from_millis(3);
/// Traffic before the stop, and after the restart.
const BEFORE: Duration = Duration::from_secs(8);
const AFTER: Duration = Duration::from_secs(6);
/// Bounds: clients noticing the stop, publishers completing, subscribers receiving everything.
const NOTICE: Duration = Duration::from_secs(15);
const COMPLETE: Duration = Duration::from_secs(30);
/// After a subscriber has everything: how long it keeps reading for late duplicates.
const QUIET: Duration = Duration::from_millis(500);
const GROUP: &str = "$share/grp/rs/#";
/// The slow consumers' pause before each acknowledgement.
const SLOW_ACK: Duration = Duration::from_millis(3);
/// How long before the stop the slow group member stops reading.
const STALL: Duration = Duration::from_millis(1500);

/// A persistent subscriber; its session state and receipts outlive its connections.
struct Sub {
    id: &'static str,
    version: ProtocolVersion,
    filter: &'static str,
    session: ClientSession,
    copies: HashMap<Key, Copies>,
    /// The group's receipts (shared with the other member), for a group member.
    group: Option<Arc<Mutex<HashSet<Key>>>>,
    /// A slow consumer pauses this long before acknowledging each message, so its queue holds
    /// unsent messages when the broker stops (and a shared member's are handed to the other).
    slow: Option<Duration>,
    /// While set, the subscriber does not read at all (its unsent messages pile up in the
    /// broker) — set shortly before the stop.
    stall: Option<Arc<AtomicBool>>,
    /// 0 before the stop, 1 after the restart.
    phase: usize,
    /// Per message, the phases it arrived in (bit 0: before the stop, bit 1: after).
    phases: HashMap<Key, u8>,
    errors: Vec<String>,
}

/// A persistent publisher at one QoS.
struct Pub {
    idx: usize,
    id: &'static str,
    version: ProtocolVersion,
    qos: QoS,
    topic: &'static str,
    session: ClientSession,
    pubs: Vec<PubRecord>,
}

/// The subscribers, the publishers, and the flag that stalls the slow group member.
fn clients() -> (Vec<Sub>, Vec<Pub>, Arc<AtomicBool>) {
    let group = Arc::new(Mutex::new(HashSet::new()));
    let stall = Arc::new(AtomicBool::new(false));
    let sub = |id, version, filter, group: Option<&Arc<_>>, slow: Option<Duration>| Sub {
        id,
        version,
        filter,
        session: ClientSession::default(),
        copies: HashMap::new(),
        group: group.cloned(),
        slow,
        stall: slow.map(|_| stall.clone()),
        phase: 0,
        phases: HashMap::new(),
        errors: Vec::new(),
    };
    let slow = Some(SLOW_ACK);
    let subs = vec![
        sub("rs-sub-a", ProtocolVersion::V311, "rs/#", None, None),
        sub("rs-sub-b", ProtocolVersion::V5, "rs/+", None, None),
        sub("rs-g-1", ProtocolVersion::V311, GROUP, Some(&group), slow),
        sub("rs-g-2", ProtocolVersion::V5, GROUP, Some(&group), None),
    ];
    let publisher = |idx, id, version, qos, topic| Pub {
        idx,
        id,
        version,
        qos,
        topic,
        session: ClientSession::default(),
        pubs: Vec::new(),
    };
    let pubs = vec![
        publisher(
            0,
            "rs-pub-1",
            ProtocolVersion::V311,
            QoS::AtLeastOnce,
            "rs/q1",
        ),
        publisher(
            1,
            "rs-pub-2",
            ProtocolVersion::V5,
            QoS::ExactlyOnce,
            "rs/q2",
        ),
    ];
    (subs, pubs, stall)
}

/// Connects without clean start (v5: expiry "never") and checks Session Present.
async fn reconnect(
    addr: std::net::SocketAddr,
    id: &str,
    version: ProtocolVersion,
    present: bool,
) -> Result<Conn, String> {
    let (c, ack) = Conn::open(addr, conn::connect_packet(version, id, false, true)).await?;
    if ack.code != ReasonCode::SUCCESS || ack.session_present != present {
        return Err(format!(
            "{id}: CONNACK {ack:?}, expected success with Session Present {present} \
             [MQTT-3.1.2-4] [MQTT-3.2.2-2]"
        ));
    }
    Ok(c)
}

impl Sub {
    fn has_all(&self, required: &[Key]) -> bool {
        match &self.group {
            Some(g) => {
                let g = g.lock().unwrap();
                required.iter().all(|k| g.contains(k))
            }
            None => required.iter().all(|k| self.copies.contains_key(k)),
        }
    }

    /// Reads and acknowledges for `d`. Err when the connection ends.
    async fn pump(&mut self, c: &mut Conn, d: Duration) -> Result<(), String> {
        let deadline = Instant::now() + d;
        loop {
            let (p, delivered) = match c.recv_until(deadline).await {
                Got::Timeout => return Ok(()),
                Got::Closed(why) => return Err(format!("closed: {why}")),
                Got::Packet(p) => match self.session.handle(p, c) {
                    Event::Delivered(p) => (p, true),
                    Event::Repeated(p) => (p, false),
                    // A PUBCOMP answering a PUBREL goes out at once, as a real client's
                    // does: left buffered until the next delivery, it deadlocked against a
                    // broker window full of PUBRELs (ids awaiting PUBCOMP, no PUBLISH to come).
                    Event::Nothing => {
                        c.flush().await.map_err(|e| format!("closed: {e}"))?;
                        continue;
                    }
                    Event::Disconnect(r) => return Err(format!("closed: DISCONNECT {r:?}")),
                    other => {
                        self.errors.push(format!("{}: {other:?}", self.id));
                        continue;
                    }
                },
            };
            if let Some(pause) = self.slow {
                // Pacing: a slow consumer acknowledges late.
                tokio::time::sleep(pause).await;
            }
            c.flush().await.map_err(|e| format!("closed: {e}"))?;
            let Some(key) = ledger::parse_payload(&p.payload) else {
                self.errors
                    .push(format!("{}: foreign payload {p:?}", self.id));
                continue;
            };
            let copies = self.copies.entry(key).or_default();
            if p.dup {
                copies.resent += 1;
            } else {
                copies.fresh += 1;
            }
            if delivered && p.qos == QoS::ExactlyOnce {
                copies.qos2_delivered += 1;
            }
            *self.phases.entry(key).or_default() |= 1 << self.phase;
            if let Some(g) = &self.group {
                g.lock().unwrap().insert(key);
            }
        }
    }
}

/// A subscriber's connection: reads until it closes; once the required set is known, until
/// it has all of it (bounded by [`COMPLETE`]), then a [`QUIET`] read for late duplicates and
/// DISCONNECT. Returns how it ended ("done" when complete).
async fn sub_run(
    mut sub: Sub,
    mut c: Conn,
    mut goal: watch::Receiver<Option<Arc<Vec<Key>>>>,
) -> (Sub, String) {
    let mut deadline = None;
    loop {
        let required = goal.borrow_and_update().clone();
        if let Some(req) = required {
            let until = *deadline.get_or_insert_with(|| Instant::now() + COMPLETE);
            let complete = sub.has_all(&req);
            if complete || Instant::now() >= until {
                let end = match sub.pump(&mut c, QUIET).await {
                    Err(e) => e,
                    Ok(()) if complete => {
                        c.disconnect().await.map_or_else(|e| e, |_| "done".into())
                    }
                    Ok(()) => format!("incomplete after {COMPLETE:?}"),
                };
                return (sub, end);
            }
        }
        if sub.stall.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            // Pacing: stalled, not reading.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if let Err(e) = sub.pump(&mut c, Duration::from_millis(100)).await {
            return (sub, e);
        }
    }
}

impl Pub {
    fn queue_next(&mut self, c: &mut Conn) {
        let msg = self.pubs.len();
        self.pubs.push(PubRecord {
            topic: self.topic.to_owned(),
            qos: self.qos,
            retain: false,
            first_send: 0,
            sends: 1,
            acked: None,
        });
        let f = Flight {
            pid: self.session.allocate(),
            msg,
            topic: self.topic.to_owned(),
            payload: ledger::payload(self.idx, msg),
            qos: self.qos,
            retain: false,
            released: false,
            resent: false,
            sent_at: Instant::now(),
        };
        self.session.send_publish(c, f);
    }

    fn acked(&self) -> impl Iterator<Item = Key> + '_ {
        let idx = self.idx;
        self.pubs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.acked.is_some())
            .map(move |(seq, _)| (idx, seq))
    }
}

/// Publishes (window [`WINDOW`], one message per [`PUBLISH_EVERY`]) until the connection
/// closes or `stop`; after `stop`, completes what is in flight and disconnects ("done").
async fn pub_run(
    mut p: Pub,
    mut c: Conn,
    stop: CancellationToken,
    progress: Arc<AtomicU64>,
) -> (Pub, String) {
    let mut next = Instant::now();
    loop {
        let stopping = stop.is_cancelled();
        if stopping && p.session.out.is_empty() {
            let end = c.disconnect().await.map_or_else(|e| e, |_| "done".into());
            return (p, end);
        }
        if !stopping && p.session.out.len() < WINDOW && Instant::now() >= next {
            p.queue_next(&mut c);
            next = (next + PUBLISH_EVERY).max(Instant::now() - PUBLISH_EVERY * 4);
        }
        // A write that fails because the broker died (ECONNRESET/EPIPE: after SIGKILL the kernel
        // resets a socket with unread data) is this client seeing the connection close, as the
        // subscribers' flush already says.
        if let Err(e) = c.flush().await {
            return (p, format!("closed: {e}"));
        }
        if let Some(f) = p.session.overdue(COMPLETE) {
            let why = format!("no acknowledgement within {COMPLETE:?} for {f:?}");
            return (p, why);
        }
        let wake = next.max(Instant::now() + Duration::from_millis(1));
        match c.recv_until(wake).await {
            Got::Timeout => {}
            Got::Closed(why) => return (p, format!("closed: {why}")),
            Got::Packet(packet) => match p.session.handle(packet, &mut c) {
                Event::Completed(f) => {
                    p.pubs[f.msg].acked = Some(1);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                Event::Nothing => {}
                Event::Disconnect(r) => return (p, format!("closed: DISCONNECT {r:?}")),
                other => {
                    let why = format!("{}: {other:?}", p.id);
                    return (p, why);
                }
            },
        }
    }
}

/// SIGTERM, then waits (bounded) for the process to exit and log "shutdown complete".
async fn terminate(b: &BrokerProc) -> Result<Duration, String> {
    let started = Instant::now();
    let pid = b.pid();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| format!("run kill: {e}"))?;
    if !sent.success() {
        return Err(format!("kill -TERM {pid} failed"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(exited(pid) && b.line_with("shutdown complete").is_some()) {
        if Instant::now() >= deadline {
            return Err(format!(
                "the broker did not finish a graceful shutdown within 20 s of SIGTERM\n{}",
                b.log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// Gone or a zombie (exited, not yet reaped: `BrokerProc`'s drop reaps it).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                == Some("Z")
        }
    }
}

async fn join<T>(handles: Vec<JoinHandle<T>>, limit: Duration, what: &str) -> Vec<T> {
    let all = futures_util::future::join_all(handles);
    tokio::time::timeout(limit, all)
        .await
        .unwrap_or_else(|_| panic!("{what}: clients still running after {limit:?}"))
        .into_iter()
        .map(|r| r.expect("client task panicked"))
        .collect()
}

/// What one run shares across its two brokers.
struct Run {
    label: String,
    tmp: tempfile::TempDir,
    goal_tx: watch::Sender<Option<Arc<Vec<Key>>>>,
    goal: watch::Receiver<Option<Arc<Vec<Key>>>>,
}

impl Run {
    /// Starts the binary on the run's store (a fresh port each time).
    async fn broker(&self, name: &str) -> BrokerProc {
        let port = free_port();
        let store = self.tmp.path().join("store");
        let cfg = write_config(self.tmp.path(), name, port, &store, CONFIG);
        BrokerProc::start(&cfg, port).await
    }

    /// Connects each subscriber (Session Present as `present`; a new one subscribes at QoS 2)
    /// and starts reading.
    async fn subscribers(
        &self,
        b: &BrokerProc,
        subs: Vec<Sub>,
        present: bool,
    ) -> Vec<JoinHandle<(Sub, String)>> {
        let mut tasks = Vec::new();
        for mut s in subs {
            s.phase = usize::from(present);
            let mut c = reconnect(b.addr, s.id, s.version, present)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.label, b.log()));
            if !present {
                subscribe(&mut c, s.filter)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", self.label));
            }
            tasks.push(tokio::spawn(sub_run(s, c, self.goal.clone())));
        }
        tasks
    }

    /// Connects each publisher, resends what a resumed session has in flight, starts
    /// publishing.
    async fn publishers(
        &self,
        b: &BrokerProc,
        pubs: Vec<Pub>,
        present: bool,
        stop: &CancellationToken,
        progress: &Arc<AtomicU64>,
    ) -> Vec<JoinHandle<(Pub, String)>> {
        let mut tasks = Vec::new();
        for mut p in pubs {
            let mut c = reconnect(b.addr, p.id, p.version, present)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.label, b.log()));
            for msg in p.session.resend(&mut c) {
                p.pubs[msg].sends += 1;
            }
            tasks.push(tokio::spawn(pub_run(p, c, stop.clone(), progress.clone())));
        }
        tasks
    }
}

async fn subscribe(c: &mut Conn, filter: &str) -> Result<(), String> {
    c.send(&conn::subscribe(1, filter, QoS::ExactlyOnce))
        .await?;
    match c.recv(conn::IO_WAIT).await {
        Got::Packet(Packet::SubAck(a)) if a.reasons == [ReasonCode(2)] => Ok(()),
        other => Err(format!(
            "{}: expected SUBACK granting QoS 2, got {other:?}",
            c.name
        )),
    }
}

/// Runs the whole variant; panics with the evidence when an invariant fails.
pub async fn run(stop: Stop) {
    let (goal_tx, goal) = watch::channel(None);
    let run = Run {
        label: format!("restart ({stop:?})"),
        tmp: temp_dir("soak-restart"),
        goal_tx,
        goal,
    };
    let label = &run.label;
    let mut first = run.broker("first.toml").await;
    let (subs, pubs, stall) = clients();
    let progress = Arc::new(AtomicU64::new(0));
    let sub_tasks = run.subscribers(&first, subs, false).await;
    let never = CancellationToken::new();
    let pub_tasks = run.publishers(&first, pubs, false, &never, &progress).await;
    // Pacing: the traffic runs this long before the stop, the last part of it with the slow
    // group member not reading, so the broker holds unsent messages for it when it stops.
    tokio::time::sleep(BEFORE - STALL).await;
    stall.store(true, Ordering::SeqCst);
    tokio::time::sleep(STALL).await;
    let acked_before = progress.load(Ordering::Relaxed);
    assert!(
        acked_before > 100,
        "{label}: only {acked_before} messages acknowledged in {BEFORE:?}"
    );
    let stopped_in = match stop {
        Stop::Term => terminate(&first)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}")),
        Stop::Kill => {
            first.kill();
            Duration::ZERO
        }
    };
    stall.store(false, Ordering::SeqCst);
    let first_log = first.log();
    drop(first);
    let subs = join(sub_tasks, NOTICE, "subscribers noticing the stop").await;
    let pubs = join(pub_tasks, NOTICE, "publishers noticing the stop").await;
    let ends = subs
        .iter()
        .map(|(s, e)| (s.id, e))
        .chain(pubs.iter().map(|(p, e)| (p.id, e)));
    for (id, end) in ends {
        assert!(
            end.starts_with("closed"),
            "{label}: {id} ended with {end:?} before the restart"
        );
    }
    let before = Before {
        acked_before,
        stopped_in,
        first_log,
    };
    let subs = subs.into_iter().map(|(s, _)| s).collect();
    let pubs = pubs.into_iter().map(|(p, _)| p).collect();
    second_half(&run, subs, pubs, before).await;
}

/// What happened before the restart, for the report.
struct Before {
    acked_before: u64,
    stopped_in: Duration,
    first_log: String,
}

/// The restarted broker: every session resumes, traffic goes on for [`AFTER`], then every
/// acknowledged message must reach the subscribers.
async fn second_half(run: &Run, subs: Vec<Sub>, pubs: Vec<Pub>, before: Before) {
    let label = &run.label;
    let second = run.broker("second.toml").await;
    let opened = second.line_with("store opened").unwrap_or_default();
    let progress = Arc::new(AtomicU64::new(0));
    let sub_tasks = run.subscribers(&second, subs, true).await;
    let stop = CancellationToken::new();
    let pub_tasks = run.publishers(&second, pubs, true, &stop, &progress).await;
    // Pacing: the traffic runs this long after the restart.
    tokio::time::sleep(AFTER).await;
    stop.cancel();
    let pubs = join(pub_tasks, COMPLETE, "publishers completing").await;
    for (p, end) in &pubs {
        assert_eq!(end, "done", "{label}: {} after the restart", p.id);
    }
    let required: Vec<Key> = pubs.iter().flat_map(|(p, _)| p.acked()).collect();
    run.goal_tx.send(Some(Arc::new(required.clone()))).unwrap();
    let subs = join(sub_tasks, COMPLETE + NOTICE, "subscribers draining").await;
    let stopped = terminate(&second).await;
    let pubs: Vec<Pub> = pubs.into_iter().map(|(p, _)| p).collect();
    let report = Report {
        label,
        before: &before,
        opened: &opened,
        pubs: &pubs,
        subs: &subs,
    };
    report.print(progress.load(Ordering::Relaxed));
    let mut failures = report.check(&required);
    failures.extend(stopped.err());
    // Debug builds check the lock hierarchy; an inversion panics one connection task.
    for (which, log) in [
        ("before the stop", &before.first_log),
        ("after the restart", &second.log()),
    ] {
        if let Some(l) = log.lines().find(|l| l.contains("lock-order inversion")) {
            failures.push(format!("the broker {which} reported: {l}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} failures:\n  {}\n--- broker log after the restart ---\n{}",
        failures.len(),
        failures.join("\n  "),
        second.log()
    );
}

struct Report<'a> {
    label: &'a str,
    before: &'a Before,
    opened: &'a str,
    pubs: &'a [Pub],
    subs: &'a [(Sub, String)],
}

impl Report<'_> {
    fn print(&self, acked_after: u64) {
        let b = self.before;
        eprintln!(
            "[{}] acknowledged before the stop {}, after the restart {acked_after}; stop took \
             {:?}; restart: {}",
            self.label, b.acked_before, b.stopped_in, self.opened
        );
        for p in self.pubs {
            let resent: u32 = p.pubs.iter().map(|r| r.sends - 1).sum();
            eprintln!(
                "[{}] {} ({:?}): published {}, acknowledged {}, resent {resent}",
                self.label,
                p.id,
                p.qos,
                p.pubs.len(),
                p.acked().count()
            );
        }
        for (s, end) in self.subs {
            let copies: u32 = s.copies.values().map(|c| c.fresh + c.resent).sum();
            let dup: u32 = s.copies.values().map(|c| c.resent).sum();
            eprintln!(
                "[{}] {} ({}): {} messages, {copies} copies ({dup} DUP=1), ended: {end}",
                self.label,
                s.id,
                s.filter,
                s.copies.len()
            );
        }
        let notable = |l: &&str| {
            l.contains("WARN") || l.contains("ERROR") || l.contains("handing unacknowledged")
        };
        for w in self.before.first_log.lines().filter(notable) {
            eprintln!("[{}] broker before the stop: {w}", self.label);
        }
    }

    fn check(&self, required: &[Key]) -> Vec<String> {
        let mut failures = Vec::new();
        let qos2 = |k: &Key| self.pubs[k.0].qos == QoS::ExactlyOnce;
        let mut group: HashMap<Key, u32> = HashMap::new();
        for (s, end) in self.subs {
            failures.extend(s.errors.iter().cloned());
            if end != "done" {
                failures.push(format!("{}: ended with {end:?}", s.id));
            }
            for (k, c) in &s.copies {
                if qos2(k) && c.qos2_delivered > 1 {
                    failures.push(format!(
                        "{}: QoS 2 message m {} {} delivered {} times [MQTT-4.3.3-2]",
                        s.id, k.0, k.1, c.qos2_delivered
                    ));
                }
                if s.group.is_some() && qos2(k) {
                    *group.entry(*k).or_default() += c.qos2_delivered;
                }
            }
            if s.group.is_none() {
                let lost: Vec<&Key> = required
                    .iter()
                    .filter(|k| !s.copies.contains_key(k))
                    .collect();
                if !lost.is_empty() {
                    failures.push(format!(
                        "{}: {} acknowledged messages never arrived (first {:?}) [MQTT-4.5.0-1]",
                        s.id,
                        lost.len(),
                        &lost[..lost.len().min(10)]
                    ));
                }
            }
        }
        self.check_group(required, &group, &mut failures);
        failures
    }

    /// The group as a whole got every acknowledged message, and each QoS 2 one once.
    fn check_group(
        &self,
        required: &[Key],
        counts: &HashMap<Key, u32>,
        failures: &mut Vec<String>,
    ) {
        let members: Vec<&Sub> = self
            .subs
            .iter()
            .map(|(s, _)| s)
            .filter(|s| s.group.is_some())
            .collect();
        let lost: Vec<&Key> = required
            .iter()
            .filter(|k| !members.iter().any(|m| m.copies.contains_key(k)))
            .collect();
        if !lost.is_empty() {
            failures.push(format!(
                "{GROUP}: {} acknowledged messages reached no member (first {:?}) \
                 [MQTT-4.5.0-1] (v5 §4.8.2: each to one session of the group)",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        let mut twice: Vec<&Key> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        twice.sort();
        if !twice.is_empty() {
            let phase = ["", "before the stop", "after the restart", "both"];
            let show = |k: &Key| {
                let at: Vec<String> = members
                    .iter()
                    .filter_map(|m| {
                        m.phases
                            .get(k)
                            .map(|p| format!("{} {}", m.id, phase[*p as usize]))
                    })
                    .collect();
                format!("m {} {}: {}", k.0, k.1, at.join(", "))
            };
            let examples: Vec<String> = twice.iter().take(8).map(|k| show(k)).collect();
            failures.push(format!(
                "{GROUP}: {} QoS 2 messages delivered to more than one member or more than once \
                 [MQTT-4.3.3-2] (v5 §4.8.2, [MQTT-4.8.2-5]):\n    {}",
                twice.len(),
                examples.join("\n    ")
            ));
        }
    }
}
