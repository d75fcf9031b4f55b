//! The message scenarios (`pub`, `sub`, `fanin`, `fanout`, `p2p`): connect everyone, run the
//! publishers on a shared schedule, drain, and account every message.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::hist::Histogram;
use crate::os::{self, now_ns, Clock, CpuMark, RssSampler};
use crate::report::{Json, Latency};
use crate::wire::{self, push_ack, Conn, In, PublishTemplate, ReadBuf};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A publish timestamp further than this in the past (or more than 1 s in the future) is not a
/// bench payload: the message is counted as delivered but not checked for latency, loss or order.
const STAMP_MAX_AGE_NS: u64 = 3_600_000_000_000;
/// At QoS 0, stop draining once nothing arrived for this long (losses are expected there).
const QOS0_IDLE_DRAIN_NS: u64 = 1_000_000_000;

/// Everything a traffic run needs from the command line.
pub struct Settings {
    pub target: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub keepalive: u16,
    pub concurrency: usize,
    pub broker_pid: Option<u32>,
    pub run: String,
    pub qos: u8,
    pub size: usize,
    pub rate: f64,
    pub window: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    /// Subscribers connect with clean session 0: their QoS 1/2 messages go through the
    /// broker's persistent-session path (stored, where the broker persists).
    pub persistent_subs: bool,
}

impl Settings {
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }
}

/// Who receives whom.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Publishers only (`pub`).
    NoSubscribers,
    /// Every subscriber receives every publisher (`fanin`, `fanout`).
    All,
    /// Subscriber i receives publisher i (`p2p`).
    Pairwise,
    /// Publishers are outside this process (`sub`): peers are discovered from the payloads.
    External,
}

pub struct Plan {
    pub scenario: &'static str,
    pub pubs: usize,
    pub subs: usize,
    pub routing: Routing,
    pub pub_topics: Vec<String>,
    pub sub_filters: Vec<String>,
}

/// The shared schedule, in `now_ns()` nanoseconds.
#[derive(Clone, Copy)]
struct Timing {
    clock: Clock,
    /// Publishers start (warm-up begins).
    start: u64,
    /// Measured interval.
    m_start: u64,
    m_end: u64,
    /// Publishers stop waiting for acks, subscribers for messages.
    drain_end: u64,
}

impl Timing {
    #[inline]
    fn measured(&self, ns: u64) -> bool {
        ns >= self.m_start && ns < self.m_end
    }
}

// ---------------------------------------------------------------------------------------------
// Publisher

/// Packet ids in flight, as a bitset over the 16-bit id space.
struct Inflight {
    used: Vec<u64>,
    count: u32,
    next: u16,
}

impl Inflight {
    fn new() -> Inflight {
        Inflight {
            used: vec![0; 1024],
            count: 0,
            next: 0,
        }
    }

    /// A free non-zero id. The caller keeps `count` below 65535, so one exists.
    #[inline]
    fn alloc(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1);
            let id = self.next as usize;
            if id != 0 && self.used[id / 64] & (1 << (id % 64)) == 0 {
                self.used[id / 64] |= 1 << (id % 64);
                self.count += 1;
                return self.next;
            }
        }
    }

    /// True if `id` was in flight (an ack for an unknown id is ignored).
    #[inline]
    fn release(&mut self, id: u16) -> bool {
        let id = id as usize;
        let bit = 1u64 << (id % 64);
        if self.used[id / 64] & bit == 0 {
            return false;
        }
        self.used[id / 64] &= !bit;
        self.count -= 1;
        true
    }
}

struct PubCfg {
    qos: u8,
    size: usize,
    window: u32,
    rate: f64,
    keepalive_ns: u64,
    t: Timing,
}

#[derive(Default)]
struct PubResult {
    /// PUBLISH packets written.
    sent: u64,
    /// Acknowledged (PUBACK at QoS 1, PUBCOMP at QoS 2); equal to `sent` at QoS 0.
    acked: u64,
    /// Acknowledged (QoS 1/2) or sent (QoS 0) inside the measured interval.
    in_window: u64,
    /// Still unacknowledged when the drain ended.
    unacked: u64,
    error: Option<String>,
}

async fn publisher(conn: Conn, id: u32, topic: String, c: Arc<PubCfg>) -> PubResult {
    let mut r = PubResult::default();
    if let Err(e) = publisher_loop(conn, id, &topic, &c, &mut r).await {
        r.error = Some(format!("publisher {id}: {e:#}"));
    }
    if c.qos == 0 {
        r.acked = r.sent;
    }
    r
}

/// One task per publisher: fill the window (or what the rate allows) into one buffer, write it
/// with one syscall, then wait for acks or the next scheduled send.
async fn publisher_loop(
    conn: Conn,
    id: u32,
    topic: &str,
    c: &PubCfg,
    r: &mut PubResult,
) -> anyhow::Result<()> {
    let Conn {
        mut stream,
        leftover,
    } = conn;
    let t = c.t;
    let tpl = PublishTemplate::new(topic, c.qos, c.size, id)?;
    let batch = c.window as u64;
    let mut w: Vec<u8> = Vec::with_capacity(tpl.len() * (batch as usize).min(4096) + 64);
    let mut rb = ReadBuf::new(64 * 1024, &leftover);
    let mut inflight = Inflight::new();
    let ns_per_msg = if c.rate > 0.0 { 1e9 / c.rate } else { 0.0 };
    let due_at = |k: u64| t.start + (k as f64 * ns_per_msg) as u64;
    let sleep = tokio::time::sleep_until(t.clock.instant(t.start));
    tokio::pin!(sleep);
    let mut sleep_at = t.start;
    (&mut sleep).await;
    let mut last_write = now_ns();
    let mut stopping = false;
    let refill_min = u64::from((c.window / 4).max(1));
    loop {
        let now = now_ns();
        if now >= t.m_end {
            stopping = true;
        }
        if (stopping && (c.qos == 0 || inflight.count == 0)) || now >= t.drain_end {
            break;
        }
        if !stopping {
            let room = if c.qos == 0 {
                batch
            } else {
                u64::from(c.window - inflight.count)
            };
            // As fast as acknowledged: refill in chunks of a quarter window, not one message
            // per ack, so each write carries many PUBLISHes.
            let room = if c.rate == 0.0 && room < refill_min {
                0
            } else {
                room
            };
            let n = if c.rate > 0.0 {
                let due = ((now - t.start) as f64 / ns_per_msg) as u64 + 1;
                room.min(due.saturating_sub(r.sent))
            } else {
                room
            };
            for _ in 0..n {
                let pid = if c.qos > 0 { inflight.alloc() } else { 0 };
                tpl.append(&mut w, pid, now, r.sent as u32);
                r.sent += 1;
            }
            if c.qos == 0 && t.measured(now) {
                r.in_window += n;
            }
        }
        if w.is_empty() && c.keepalive_ns > 0 && now - last_write >= c.keepalive_ns / 2 {
            w.extend_from_slice(&wire::PINGREQ);
        }
        if !w.is_empty() {
            stream.write_all(&w).await?;
            w.clear();
            last_write = now;
        }
        if c.qos == 0 {
            // Nothing to wait for; take whatever the broker sent (PINGRESP) without blocking.
            loop {
                match stream.try_read(rb.spare()) {
                    Ok(0) => bail!("broker closed the connection"),
                    Ok(n) => {
                        rb.filled(n);
                        let mut off = 0;
                        while let Some((_, used)) = wire::parse(&rb.data()[off..])? {
                            off += used;
                        }
                        rb.consume(off);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if c.rate > 0.0 {
                let at = due_at(r.sent).min(t.m_end);
                if at > now_ns() {
                    tokio::time::sleep_until(t.clock.instant(at)).await;
                }
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        // QoS 1/2: the window is full or nothing is due yet. Wait for acks or the next deadline.
        let mut wake = if stopping { t.drain_end } else { t.m_end };
        if !stopping && c.rate > 0.0 && inflight.count < c.window {
            wake = wake.min(due_at(r.sent));
        }
        if c.keepalive_ns > 0 {
            wake = wake.min(last_write + c.keepalive_ns / 2);
        }
        if wake != sleep_at {
            sleep_at = wake;
            sleep.as_mut().reset(t.clock.instant(wake));
        }
        tokio::select! {
            res = stream.read(rb.spare()) => {
                let n = res?;
                if n == 0 {
                    bail!("broker closed the connection ({} unacknowledged)", inflight.count);
                }
                rb.filled(n);
                rb.drain_ready(&stream, 64 * 1024)?;
                let counted = t.measured(now_ns());
                let mut off = 0;
                while let Some((p, used)) = wire::parse(&rb.data()[off..])? {
                    off += used;
                    let done = match p {
                        In::PubAck(pid) if c.qos == 1 => pid,
                        In::PubComp(pid) if c.qos == 2 => pid,
                        In::PubRec(pid) if c.qos == 2 => {
                            push_ack(&mut w, wire::PUBREL, pid);
                            continue;
                        }
                        _ => continue,
                    };
                    if inflight.release(done) {
                        r.acked += 1;
                        if counted {
                            r.in_window += 1;
                        }
                    }
                }
                rb.consume(off);
            }
            () = &mut sleep => {}
        }
    }
    r.unacked = u64::from(inflight.count);
    let _ = stream.write_all(&wire::DISCONNECT).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Subscriber

/// Order/loss state of one (subscriber, publisher) stream.
#[derive(Clone, Default)]
struct Peer {
    /// This subscriber should receive this publisher (in-process scenarios).
    expected: bool,
    seen: bool,
    next: u32,
    unique: u64,
    dups: u64,
    gaps: u64,
}

struct SubCfg {
    keepalive_ns: u64,
    t: Timing,
    dynamic: bool,
}

#[derive(Default)]
struct SubResult {
    delivered: u64,
    in_window: u64,
    /// Payloads without a bench stamp.
    foreign: u64,
    /// From a publisher this subscriber did not subscribe to.
    misrouted: u64,
    peers: Vec<Peer>,
    hist: Histogram,
    error: Option<String>,
}

impl SubResult {
    /// Accounts one delivered payload received at `now`; returns true if it was a first delivery
    /// from an expected publisher.
    #[inline]
    fn on_publish(&mut self, payload: &[u8], now: u64, c: &SubCfg) -> bool {
        self.delivered += 1;
        if c.t.measured(now) {
            self.in_window += 1;
        }
        let Some(s) = wire::read_stamp(payload) else {
            self.foreign += 1;
            return false;
        };
        if s.sent_ns == 0
            || s.sent_ns > now + 1_000_000_000
            || now.saturating_sub(s.sent_ns) > STAMP_MAX_AGE_NS
        {
            self.foreign += 1;
            return false;
        }
        if c.t.measured(s.sent_ns) {
            self.hist.record(now.saturating_sub(s.sent_ns));
        }
        let idx = s.publisher as usize;
        if idx >= self.peers.len() {
            if c.dynamic && idx < 1 << 20 {
                self.peers.resize(idx + 1, Peer::default());
            } else {
                self.foreign += 1;
                return false;
            }
        }
        let p = &mut self.peers[idx];
        if !c.dynamic && !p.expected {
            self.misrouted += 1;
        }
        if !p.seen {
            p.seen = true;
            p.next = s.seq;
        }
        if s.seq >= p.next {
            p.gaps += u64::from(s.seq - p.next);
            p.next = s.seq.wrapping_add(1);
            p.unique += 1;
            p.expected
        } else {
            p.dups += 1;
            false
        }
    }
}

async fn subscriber(
    conn: Conn,
    id: usize,
    peers: Vec<Peer>,
    c: Arc<SubCfg>,
    cancel: CancellationToken,
    progress: Arc<AtomicU64>,
) -> SubResult {
    let mut r = SubResult {
        peers,
        ..SubResult::default()
    };
    if let Err(e) = subscriber_loop(conn, &c, &cancel, &progress, &mut r).await {
        r.error = Some(format!("subscriber {id}: {e:#}"));
    }
    r
}

/// One task per subscriber: read as much as the socket has, account every PUBLISH in it with
/// one clock read for the whole batch, and answer all of them with one write.
async fn subscriber_loop(
    conn: Conn,
    c: &SubCfg,
    cancel: &CancellationToken,
    progress: &AtomicU64,
    r: &mut SubResult,
) -> anyhow::Result<()> {
    let Conn {
        mut stream,
        leftover,
    } = conn;
    let mut rb = ReadBuf::new(256 * 1024, &leftover);
    let mut w: Vec<u8> = Vec::with_capacity(16 * 1024);
    let ping_every = if c.keepalive_ns > 0 {
        Duration::from_nanos(c.keepalive_ns / 2)
    } else {
        Duration::from_secs(86_400 * 365)
    };
    let ping = tokio::time::sleep(ping_every);
    tokio::pin!(ping);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let mut fresh = 0u64;
    let mut parse_first = !rb.is_empty();
    loop {
        if !parse_first {
            tokio::select! {
                biased;
                () = &mut cancelled => break,
                res = stream.read(rb.spare()) => {
                    let n = res?;
                    if n == 0 {
                        bail!("broker closed the connection");
                    }
                    rb.filled(n);
                    rb.drain_ready(&stream, 256 * 1024)?;
                }
                () = &mut ping => {
                    w.extend_from_slice(&wire::PINGREQ);
                    ping.as_mut().reset(tokio::time::Instant::now() + ping_every);
                }
            }
        }
        parse_first = false;
        let now = now_ns();
        let mut off = 0;
        while let Some((p, used)) = wire::parse(&rb.data()[off..])? {
            off += used;
            match p {
                In::Publish {
                    qos,
                    packet_id,
                    payload,
                } => {
                    if r.on_publish(payload, now, c) {
                        fresh += 1;
                    }
                    match qos {
                        1 => push_ack(&mut w, wire::PUBACK, packet_id),
                        2 => push_ack(&mut w, wire::PUBREC, packet_id),
                        _ => {}
                    }
                }
                In::PubRel(pid) => push_ack(&mut w, wire::PUBCOMP, pid),
                _ => {}
            }
        }
        rb.consume(off);
        progress.store(fresh, Ordering::Relaxed);
        if !w.is_empty() {
            stream.write_all(&w).await?;
            w.clear();
        }
    }
    let _ = stream.write_all(&wire::DISCONNECT).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Orchestration

/// Connects `n` clients (at most `concurrency` handshakes at a time), subscribing each to
/// `filters[i]` if given. Fails on the first client that cannot connect or subscribe.
async fn connect_many(
    s: &Settings,
    role: &str,
    n: usize,
    source_offset: usize,
    filters: Option<&[String]>,
) -> anyhow::Result<Vec<Conn>> {
    let sem = Arc::new(Semaphore::new(s.concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let client_id = format!("bench-{}-{role}-{i}", s.run);
        let source = s.source(source_offset + i);
        let filter = filters.map(|f| f[i].clone());
        let (sem, target, keepalive, qos) = (sem.clone(), s.target, s.keepalive, s.qos);
        let clean = !(s.persistent_subs && filter.is_some());
        set.spawn(async move {
            let work = async {
                let _permit = sem.acquire_owned().await?;
                let mut c = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    wire::connect(target, source, &client_id, keepalive, clean),
                )
                .await
                .map_err(|_| anyhow!("no CONNACK within {CONNECT_TIMEOUT:?}"))??;
                if let Some(f) = filter {
                    tokio::time::timeout(CONNECT_TIMEOUT, c.subscribe(&f, qos))
                        .await
                        .map_err(|_| anyhow!("no SUBACK within {CONNECT_TIMEOUT:?}"))??;
                }
                anyhow::Ok(c)
            };
            (i, work.await.with_context(|| client_id.clone()))
        });
    }
    let mut out: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, c) = joined.context("connect task panicked")?;
        out[i] = Some(c?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Runs one traffic scenario and returns its report.
pub async fn run(plan: Plan, s: Settings, label: &str) -> anyhow::Result<Json> {
    let pid_str = s.broker_pid.map(|p| p.to_string());
    if let Some(p) = &pid_str {
        if os::memory(p).is_none() {
            bail!("--broker-pid {p}: no such process (cannot read /proc/{p}/status)");
        }
    }
    let rss_before = pid_str.as_deref().and_then(os::memory).map(|m| m.0);
    let sampler = s.broker_pid.map(RssSampler::start);

    let subs = if plan.subs > 0 {
        connect_many(&s, "sub", plan.subs, 0, Some(&plan.sub_filters)).await?
    } else {
        Vec::new()
    };
    let pubs = connect_many(&s, "pub", plan.pubs, plan.subs, None).await?;

    let clock = Clock::new();
    let start = now_ns() + 20_000_000;
    let m_start = start + s.warmup.as_nanos() as u64;
    let m_end = m_start + s.duration.as_nanos() as u64;
    let t = Timing {
        clock,
        start,
        m_start,
        m_end,
        drain_end: m_end + s.drain.as_nanos() as u64,
    };
    let keepalive_ns = u64::from(s.keepalive) * 1_000_000_000;

    let cancel = CancellationToken::new();
    let sub_cfg = Arc::new(SubCfg {
        keepalive_ns,
        t,
        dynamic: plan.routing == Routing::External,
    });
    let mut progress = Vec::new();
    let mut sub_tasks = Vec::new();
    for (i, conn) in subs.into_iter().enumerate() {
        let mut peers = vec![Peer::default(); if sub_cfg.dynamic { 0 } else { plan.pubs }];
        for (p, peer) in peers.iter_mut().enumerate() {
            peer.seen = true;
            peer.expected = plan.routing == Routing::All || p == i;
        }
        let prog = Arc::new(AtomicU64::new(0));
        progress.push(prog.clone());
        sub_tasks.push(tokio::spawn(subscriber(
            conn,
            i,
            peers,
            sub_cfg.clone(),
            cancel.clone(),
            prog,
        )));
    }
    let pub_cfg = Arc::new(PubCfg {
        qos: s.qos,
        size: s.size,
        window: if s.qos == 0 {
            s.window.clamp(1, 4096)
        } else {
            s.window
        },
        rate: s.rate,
        keepalive_ns,
        t,
    });
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            tokio::spawn(publisher(
                conn,
                i as u32,
                plan.pub_topics[i].clone(),
                pub_cfg.clone(),
            ))
        })
        .collect();

    tokio::time::sleep_until(clock.instant(m_start)).await;
    let cpu0 = CpuMark::take(s.broker_pid);
    tokio::time::sleep_until(clock.instant(m_end)).await;
    let cpu1 = CpuMark::take(s.broker_pid);

    let mut pub_results = Vec::new();
    for h in pub_tasks {
        pub_results.push(h.await.context("publisher task panicked")?);
    }
    // Every subscriber expects every acknowledged message of each publisher it listens to.
    let count = |p: &PubResult| if s.qos == 0 { p.sent } else { p.acked };
    let expected_per_sub: Vec<u64> = (0..plan.subs)
        .map(|i| match plan.routing {
            Routing::All => pub_results.iter().map(count).sum(),
            Routing::Pairwise => pub_results.get(i).map(count).unwrap_or(0),
            _ => 0,
        })
        .collect();
    let expected: u64 = expected_per_sub.iter().sum();
    let drain_start = now_ns();
    if plan.routing != Routing::External {
        let (mut last, mut last_change) = (u64::MAX, now_ns());
        loop {
            let got: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            let now = now_ns();
            if got != last {
                (last, last_change) = (got, now);
            }
            if got >= expected
                || now >= t.drain_end
                || (s.qos == 0 && now - last_change >= QOS0_IDLE_DRAIN_NS)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let drain_used = (now_ns() - drain_start) as f64 / 1e9;
    cancel.cancel();
    let mut sub_results = Vec::new();
    for h in sub_tasks {
        sub_results.push(h.await.context("subscriber task panicked")?);
    }
    let mem_after = pid_str.as_deref().and_then(os::memory);
    let rss_peak = sampler.as_ref().map(|s| s.peak());
    drop(sampler);

    // ---- aggregate
    let secs = s.duration.as_secs_f64();
    let sent: u64 = pub_results.iter().map(|p| p.sent).sum();
    let acked: u64 = pub_results.iter().map(|p| p.acked).sum();
    let unacked: u64 = pub_results.iter().map(|p| p.unacked).sum();
    let pub_window: u64 = pub_results.iter().map(|p| p.in_window).sum();
    let mut hist = Histogram::default();
    let (mut delivered, mut del_window, mut foreign, mut misrouted) = (0u64, 0u64, 0u64, 0u64);
    let (mut dups, mut gaps, mut lost, mut tail) = (0u64, 0u64, 0u64, 0u64);
    for r in &sub_results {
        hist.merge(&r.hist);
        delivered += r.delivered;
        del_window += r.in_window;
        foreign += r.foreign;
        misrouted += r.misrouted;
        for (p, peer) in r.peers.iter().enumerate() {
            dups += peer.dups;
            gaps += peer.gaps;
            if peer.expected {
                let want = pub_results.get(p).map(count).unwrap_or(0);
                lost += want.saturating_sub(peer.unique);
                tail += want.saturating_sub(u64::from(peer.next));
            }
        }
    }
    let errors: Vec<&String> = pub_results
        .iter()
        .filter_map(|p| p.error.as_ref())
        .chain(sub_results.iter().filter_map(|r| r.error.as_ref()))
        .collect();
    for e in errors.iter().take(10) {
        eprintln!("error: {e}");
    }
    if errors.len() > 10 {
        eprintln!("error: ... and {} more clients failed", errors.len() - 10);
    }

    let mut j = Json::new();
    j.str("scenario", plan.scenario)
        .str("label", label)
        .str("run", &s.run)
        .str("target", &s.target.to_string())
        .int("qos", u64::from(s.qos))
        .int("persistent_subs", u64::from(s.persistent_subs))
        .int("size", s.size as u64)
        .int("pubs", plan.pubs as u64)
        .int("subs", plan.subs as u64)
        .num("rate_per_pub", s.rate)
        .int("window", u64::from(s.window))
        .num("duration_s", secs)
        .num("warmup_s", s.warmup.as_secs_f64())
        .num("drain_max_s", s.drain.as_secs_f64());
    if plan.pubs > 0 {
        j.num("published_rate", pub_window as f64 / secs)
            .int("published_in_window", pub_window)
            .int("sent", sent)
            .int("acked", acked)
            .int("unacked", unacked);
    }
    if plan.subs > 0 {
        j.num("delivered_rate", del_window as f64 / secs)
            .int("delivered_in_window", del_window)
            .int("delivered", delivered);
        if plan.routing != Routing::External {
            j.int("expected", expected)
                .int("lost", if s.qos > 0 { lost } else { 0 })
                .int("dropped", if s.qos == 0 { lost } else { 0 })
                .int("missing_tail", tail.min(lost))
                .int("misrouted", misrouted)
                .num("drain_used_s", drain_used);
        }
        j.int("duplicates", dups)
            .int("gaps", gaps)
            .int("foreign", foreign);
        Latency::from(&hist).add_to(&mut j);
    }
    crate::report::add_cpu_mem(
        &mut j,
        s.broker_pid,
        cpu0,
        cpu1,
        secs,
        rss_before,
        mem_after,
        rss_peak,
        del_window.max(pub_window),
    );
    j.int("errors", errors.len() as u64);
    Ok(j)
}
