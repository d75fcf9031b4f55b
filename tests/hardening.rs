//! Hardening acceptance tests: the broker stays responsive and bounded under hostile or
//! pathological load.
//!
//! 1. Slow consumer isolation: one subscriber never reads its socket while 10 publishers and 10
//!    healthy subscribers exchange QoS 0 and QoS 1 traffic.
//! 2. Connection flood: 5,000 TCP connections that never send CONNECT, while a client connected
//!    before the flood and a fresh one connecting in the middle of it are served.
//! 3. Reconnect storm: 200 connects with one client id.
//! 4. Garbage bytes: 200 connections sending random bytes.
//!
//! The tests run one at a time (a process-wide lock): test 1 measures the process's RSS and
//! test 2 needs most of the file-descriptor budget, so neither may share the process with
//! another. Each runs on its own two-worker runtime under an overall time limit.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` alone (no other test of this file at the same time), failing after `limit`.
fn run<F: Future<Output = ()>>(limit: Duration, f: F) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if tokio::time::timeout(limit, f).await.is_err() {
            panic!("test did not finish within {limit:?}");
        }
    });
}

/// A `kB` field of /proc/self/status (VmRSS, VmHWM).
fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// xorshift64: deterministic garbage without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to the hard limit; returns (soft, hard).
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere.
fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) },
        0,
        "getrlimit: {}",
        std::io::Error::last_os_error()
    );
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit that outlives the call; setrlimit only reads it.
        assert_eq!(
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) },
            0,
            "setrlimit: {}",
            std::io::Error::last_os_error()
        );
    }
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

/// One round trip through the broker for a client subscribed to `topic`: QoS 1 PUBLISH to
/// itself, PUBACK, and the delivery.
async fn round_trip(c: &mut Raw, topic: &str, pid: u16) {
    let payload = format!("rt-{pid}");
    c.publish(topic, payload.as_bytes(), 1, false, pid).await;
    let got = c.recv_and_ack().await;
    assert_publish(&got, topic, payload.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// 1. Slow consumer isolation
// ---------------------------------------------------------------------------------------------

const PUBLISHERS: usize = 10;
const HEALTHY: usize = 10;
const PER_PUBLISHER: usize = 500;
const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
const PAYLOAD: usize = 512;
/// Messages per burst; bursts alternate QoS 0 and QoS 1, so half the traffic is each.
const BURST: usize = 50;
/// A publisher starts a burst only while the slowest healthy subscriber is at most this many
/// messages behind everything published. With 10 publishers passing the check at once the lag
/// stays below LAG + 10 × BURST = 800, under the default `max_queued_messages` (1000), so a
/// healthy subscriber's own queue never overflows. The slow subscriber is not waited for.
const LAG: u64 = 300;
/// RSS growth allowed over the whole exchange.
const RSS_BOUND_MB: u64 = 200;

#[test]
fn slow_consumer_isolation_10_publishers_10_subscribers_one_never_reads() {
    run(Duration::from_secs(180), async {
        let b = start_with(test_config()).await;
        let addr = b.addr;
        let max_queued = b.state().config().mqtt.max_queued_messages as u64;
        let max_inflight = u64::from(b.state().config().mqtt.max_inflight);

        // Subscribes, then never reads its socket again.
        let mut slow = Raw::connect_v311(addr, "slow").await;
        assert_eq!(slow.subscribe(1, "load/#", 1).await, 1);

        let received: Arc<Vec<AtomicU64>> =
            Arc::new((0..HEALTHY).map(|_| AtomicU64::new(0)).collect());
        let mut healthy = JoinSet::new();
        for i in 0..HEALTHY {
            let mut s = Raw::connect_v311(addr, &format!("healthy-{i}")).await;
            assert_eq!(s.subscribe(1, "load/#", 1).await, 1);
            let received = received.clone();
            healthy.spawn(async move {
                let mut seen = vec![vec![false; PER_PUBLISHER]; PUBLISHERS];
                let mut duplicates = 0;
                for _ in 0..TOTAL {
                    // Panics (failing the test) if nothing arrives within WAIT.
                    let p = s.recv_and_ack().await;
                    assert_eq!(p.payload.len(), PAYLOAD);
                    let publisher = usize::from(p.payload[0]);
                    let seq = usize::from(u16::from_be_bytes([p.payload[1], p.payload[2]]));
                    assert_eq!(p.topic, format!("load/{publisher}").into());
                    if std::mem::replace(&mut seen[publisher][seq], true) {
                        duplicates += 1;
                    }
                    received[i].fetch_add(1, Ordering::Relaxed);
                }
                let extra = s.ping().await;
                let missing = seen.iter().flatten().filter(|s| !**s).count();
                (i, missing, duplicates, extra.len())
            });
        }

        let rss_before = proc_status_kb("VmRSS");
        let published = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let mut publishers = JoinSet::new();
        for pi in 0..PUBLISHERS {
            let published = published.clone();
            let received = received.clone();
            publishers.spawn(async move {
                let mut p = Raw::connect_v311(addr, &format!("pub-{pi}")).await;
                let topic = format!("load/{pi}");
                let mut pid = 0u16;
                for burst in 0..PER_PUBLISHER / BURST {
                    // Pace on the healthy subscribers (bounded: they must keep up).
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let slowest = received
                            .iter()
                            .map(|r| r.load(Ordering::Relaxed))
                            .min()
                            .unwrap();
                        if published.load(Ordering::Relaxed) <= slowest + LAG {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "healthy subscribers stalled at {slowest} of {} published",
                            published.load(Ordering::Relaxed)
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let qos = (burst % 2) as u8;
                    for k in 0..BURST {
                        let seq = (burst * BURST + k) as u16;
                        let mut payload = vec![0x5A; PAYLOAD];
                        payload[0] = pi as u8;
                        payload[1..3].copy_from_slice(&seq.to_be_bytes());
                        published.fetch_add(1, Ordering::Relaxed);
                        if qos == 1 {
                            pid += 1;
                            p.publish(&topic, &payload, 1, false, pid).await;
                        } else {
                            p.send(&publish_packet(&topic, &payload, 0, false, false, 0))
                                .await;
                        }
                    }
                    tokio::task::yield_now().await;
                }
                // Every PUBLISH has been read and routed once PINGRESP is back.
                p.ping().await;
            });
        }
        while let Some(r) = publishers.join_next().await {
            r.expect("publisher task");
        }
        let mut results = Vec::new();
        while let Some(r) = healthy.join_next().await {
            results.push(r.expect("healthy subscriber task"));
        }
        let took = t0.elapsed();
        let rss_after = proc_status_kb("VmRSS");
        let hwm = proc_status_kb("VmHWM");
        let m = &b.state().metrics();
        let dropped = m.dropped_queue_full.get();
        let queued = b.state().queued_messages();
        let growth_mb = rss_after.saturating_sub(rss_before) / 1024;
        println!(
            "slow consumer isolation: {TOTAL} messages x {HEALTHY} healthy subscribers in {took:?}; \
             slow subscriber: dropped_queue_full = {dropped}, still queued = {queued}; \
             RSS before = {} MB, after = {} MB, growth = {growth_mb} MB (bound {RSS_BOUND_MB} MB), \
             VmHWM = {} MB",
            rss_before / 1024,
            rss_after / 1024,
            hwm / 1024
        );
        for (i, missing, duplicates, extra) in results {
            assert_eq!(
                (missing, duplicates, extra),
                (0, 0, 0),
                "healthy-{i}: (missing, duplicate, extra) messages"
            );
        }
        assert!(
            dropped > 0,
            "the slow subscriber's overflow must be counted in dropped_queue_full"
        );
        assert!(
            dropped <= TOTAL as u64,
            "only the slow subscriber may drop: {dropped} drops for {TOTAL} messages"
        );
        // Healthy sessions are drained; what is left is the slow one's, within its limits.
        assert!(
            queued <= max_queued + max_inflight,
            "slow subscriber holds {queued} messages, over max_queued_messages + max_inflight"
        );
        assert!(
            growth_mb < RSS_BOUND_MB,
            "RSS grew by {growth_mb} MB (bound {RSS_BOUND_MB} MB)"
        );
        drop(slow);
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Connection flood
// ---------------------------------------------------------------------------------------------

const FLOOD: usize = 5_000;
/// Connects in flight at once. Each costs three loopback packets at once (SYN, SYN-ACK, ACK);
/// at 500 the burst overflows the loopback input queue (`net.core.netdev_max_backlog`, 1000 by
/// default), SYNs are dropped and wait out the 1 s SYN retransmission timeout.
const FLOOD_CONCURRENCY: usize = 100;

/// What one idle flood socket saw.
struct Idle {
    /// Connect took this long (a dropped SYN shows as ~1 s).
    connect: Duration,
    /// Closed by the broker (EOF or reset) this long after it was opened; None: still open at
    /// the bound.
    closed_after: Option<Duration>,
    /// Bytes the broker sent (expected none).
    received: usize,
}

#[test]
fn connection_flood_5000_sockets_without_connect_closed_after_connect_timeout() {
    run(Duration::from_secs(120), async {
        let (soft, hard) = raise_nofile();
        println!("RLIMIT_NOFILE soft = {soft}, hard = {hard}");
        assert!(
            soft >= (2 * FLOOD + 1000) as u64,
            "RLIMIT_NOFILE {soft} is too low for {FLOOD} client and {FLOOD} server sockets"
        );
        // Long enough for all 5,000 sockets to be open at once (opening them takes a few
        // seconds on a loaded machine), so a fresh client can connect in the middle of the flood.
        let connect_timeout = Duration::from_secs(8);
        let mut cfg = test_config();
        cfg.mqtt.connect_timeout = connect_timeout;
        let b = start_with(cfg).await;
        let addr = b.addr;
        // Each socket must be closed by the broker within this long after it was opened.
        let bound = connect_timeout + Duration::from_secs(3);

        let mut c = Raw::connect_v311(addr, "normal").await;
        assert_eq!(c.subscribe(1, "flood/t", 1).await, 1);

        // Idle sockets currently open, and the most open at once.
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let flood = {
            let (open, peak) = (open.clone(), peak.clone());
            tokio::spawn(async move {
                let connecting = Arc::new(tokio::sync::Semaphore::new(FLOOD_CONCURRENCY));
                let mut tasks = JoinSet::new();
                for _ in 0..FLOOD {
                    let permit = connecting.clone().acquire_owned().await.unwrap();
                    let (open, peak) = (open.clone(), peak.clone());
                    tasks.spawn(async move {
                        let t = Instant::now();
                        let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
                            .await
                            .expect("TCP connect timed out")
                            .expect("TCP connect");
                        let connect = t.elapsed();
                        drop(permit);
                        peak.fetch_max(open.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
                        let mut buf = [0u8; 64];
                        let mut received = 0;
                        let deadline = tokio::time::Instant::from_std(t + bound);
                        let closed_after = loop {
                            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                                Ok(Ok(0)) | Ok(Err(_)) => break Some(t.elapsed()),
                                Ok(Ok(n)) => received += n,
                                Err(_) => break None,
                            }
                        };
                        open.fetch_sub(1, Ordering::Relaxed);
                        Idle {
                            connect,
                            closed_after,
                            received,
                        }
                    });
                }
                let opened_in = t0.elapsed();
                let mut idle = Vec::with_capacity(FLOOD);
                while let Some(r) = tasks.join_next().await {
                    idle.push(r.expect("flood socket task"));
                }
                (opened_in, idle)
            })
        };

        // A normal client is served while the idle sockets are open: round trips until the
        // broker has closed them all. Once all 5,000 are open, a fresh client connects,
        // publishes and receives, before the connect timeout has shed any of them.
        let mut rounds = 0u16;
        let mut slowest = Duration::ZERO;
        let mut most_open_at_a_round = 0;
        // (when the fresh client connected, how long its exchange took, idle sockets open
        // after it)
        let mut fresh_run = None;
        while !flood.is_finished() {
            if fresh_run.is_none() && open.load(Ordering::Relaxed) == FLOOD {
                let at = t0.elapsed();
                let t = Instant::now();
                let mut fresh = Raw::connect_v311(addr, "fresh").await;
                assert_eq!(fresh.subscribe(1, "flood/fresh", 1).await, 1);
                round_trip(&mut fresh, "flood/fresh", 2).await;
                fresh.publish("flood/t", b"from fresh", 1, false, 3).await;
                assert_publish(&c.recv_and_ack().await, "flood/t", b"from fresh");
                fresh_run = Some((at, t.elapsed(), open.load(Ordering::Relaxed)));
                fresh.send(&DISCONNECT).await;
                fresh.expect_closed("fresh client after DISCONNECT").await;
            }
            let t = Instant::now();
            rounds += 1;
            round_trip(&mut c, "flood/t", rounds).await;
            slowest = slowest.max(t.elapsed());
            most_open_at_a_round = most_open_at_a_round.max(open.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (opened_in, idle) = flood.await.expect("flood task");
        let all_closed = t0.elapsed();
        let still_open = idle.iter().filter(|i| i.closed_after.is_none()).count();
        let received: usize = idle.iter().map(|i| i.received).sum();
        let slowest_connect = idle.iter().map(|i| i.connect).max().unwrap_or_default();
        let latest_close = idle
            .iter()
            .filter_map(|i| i.closed_after)
            .max()
            .unwrap_or_default();
        let earliest_close = idle
            .iter()
            .filter_map(|i| i.closed_after)
            .min()
            .unwrap_or_default();
        println!(
            "flood: {FLOOD} idle sockets opened in {opened_in:?} (slowest connect {slowest_connect:?}), \
             at most {} open at once; all closed {all_closed:?} after the first was opened, \
             latest {latest_close:?} after its own open (connect_timeout {connect_timeout:?}, \
             bound {bound:?}); normal client: {rounds} round trips, slowest {slowest:?}, \
             up to {most_open_at_a_round} idle sockets open during one; fresh client \
             (connected at, exchange took, idle sockets still open after): {fresh_run:?}",
            peak.load(Ordering::Relaxed)
        );
        let Some((_, _, open_after_fresh)) = fresh_run else {
            panic!(
                "the {FLOOD} idle sockets were never all open at once (at most {}), so the \
                 fresh client never ran: opening them took longer than connect_timeout",
                peak.load(Ordering::Relaxed)
            );
        };
        assert_eq!(
            open_after_fresh, FLOOD,
            "the fresh client's CONNECT and round trips must happen during the flood, before \
             the connect timeout sheds any idle socket"
        );
        assert_eq!(
            still_open, 0,
            "idle sockets not closed within {bound:?} of being opened"
        );
        assert_eq!(
            received, 0,
            "the broker sent bytes to sockets that never sent CONNECT"
        );
        // The timeout starts at accept, after the client began connecting: never earlier.
        assert!(
            earliest_close >= connect_timeout,
            "an idle socket was closed {earliest_close:?} after opening, before connect_timeout"
        );
        assert!(
            most_open_at_a_round >= FLOOD_CONCURRENCY,
            "the normal client was never served while many idle sockets were open"
        );
        assert!(b.state().metrics().connections_accepted.get() > FLOOD as u64);

        round_trip(&mut c, "flood/t", rounds + 1).await;
        b.wait_until("the fresh client has left", |s| {
            s.metrics().clients_connected.get() == 1
        })
        .await;
        assert_eq!(b.clients_connected(), 1, "no idle socket became a client");
        c.send(&DISCONNECT).await;
        c.expect_closed("normal client after DISCONNECT").await;
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Reconnect storm of one client id
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// DISCONNECT, then the socket closes.
    Disconnect,
    /// The socket is dropped without DISCONNECT.
    Drop,
    /// Left open: the next CONNECT with the same id takes the session over [MQTT-3.1.4-2].
    TakenOver,
}

const STORM: usize = 200;

/// (clean session, with a will, how it ends) of connect `i` of the storm: one extra clean = 0
/// connect and one clean = 1 connect at the end, both DISCONNECT.
fn storm_plan(i: usize) -> (bool, bool, End) {
    if i == STORM {
        (false, false, End::Disconnect)
    } else if i == STORM + 1 {
        (true, false, End::Disconnect)
    } else {
        let end = [End::Disconnect, End::Drop, End::TakenOver][i % 3];
        (i % 2 == 1, i % 4 < 2, end)
    }
}

#[test]
fn reconnect_storm_200_connects_one_client_id_no_leaks() {
    run(Duration::from_secs(120), async {
        let b = start_with(test_config()).await;
        let addr = b.addr;
        let mut watcher = Raw::connect_v311(addr, "watcher").await;
        assert_eq!(watcher.subscribe(1, "storm/will", 1).await, 1);

        let t0 = Instant::now();
        let mut expected_wills = BTreeSet::new();
        let mut mismatches = Vec::new();
        // (clean session, how it ended) of the previous connection, once there is one.
        let mut previous: Option<(bool, End)> = None;
        let mut held: Option<Raw> = None;
        for i in 0..STORM + 2 {
            let (clean, with_will, end) = storm_plan(i);
            let mut opts = ConnectOpts::v311("storm").clean(clean);
            if with_will {
                opts = opts.will("storm/will", format!("will-{i}").as_bytes(), 1, false);
            }
            let (c, ack) = Raw::connect(addr, &opts).await;
            // [MQTT-3.2.2-1] clean session: 0. [MQTT-3.2.2-2] clean = 0: 1 when a session was
            // kept, i.e. the previous connection used clean = 0 (a clean = 1 session "lasts as
            // long as the Network Connection", [MQTT-3.1.2-6], taken over or not).
            let want_present = !clean && matches!(previous, Some((false, _)));
            if ack.session_present != want_present {
                mismatches.push(format!(
                    "connect {i} (clean = {}, previous {previous:?}): session present {}, expected {}",
                    u8::from(clean),
                    u8::from(ack.session_present),
                    u8::from(want_present)
                ));
            }
            if let Some(mut old) = held.take() {
                old.closed_within(CLOSE_WAIT).await.unwrap_or_else(|seen| {
                    panic!("connect {i}: the taken-over connection is still open ({seen:?})")
                });
            }
            // A takeover publishes the old will only when it ends the session (either side
            // has clean session 1); one continuing the session cancels it, as in Mosquitto.
            let will_due = match end {
                End::Disconnect => false,
                End::Drop => true,
                End::TakenOver => clean || storm_plan(i + 1).0,
            };
            if with_will && will_due {
                expected_wills.insert(format!("will-{i}"));
            }
            match end {
                End::Disconnect => {
                    let mut c = c;
                    c.send(&DISCONNECT).await;
                    c.expect_closed(&format!("connect {i} after DISCONNECT"))
                        .await;
                }
                End::Drop => drop(c),
                End::TakenOver => held = Some(c),
            }
            if clean && end != End::TakenOver {
                // A clean session ends with its connection; wait for the broker to see that, so
                // the next CONNECT's Session Present is well defined.
                b.wait_until("the clean session is discarded", |s| s.session_count() == 1)
                    .await;
            }
            previous = Some((clean, end));
        }
        let storm_took = t0.elapsed();

        // Every will of a connection that ended without DISCONNECT, exactly once.
        let mut wills = BTreeSet::new();
        while wills.len() < expected_wills.len() {
            let p = watcher.recv_and_ack().await;
            assert_eq!(p.topic, "storm/will".into());
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            assert!(wills.insert(text.clone()), "will {text} delivered twice");
        }
        let extra = watcher.ping().await;
        assert!(
            extra.is_empty(),
            "unexpected packets (wills after DISCONNECT?): {extra:?}"
        );
        assert_eq!(wills, expected_wills, "wills published");

        // Only the watcher is left: one session, one client.
        b.wait_until("only the watcher is connected", |s| {
            s.metrics().clients_connected.get() == 1 && s.session_count() == 1
        })
        .await;
        watcher.send(&DISCONNECT).await;
        watcher.expect_closed("watcher after DISCONNECT").await;
        b.wait_until("no client and no session is left", |s| {
            s.metrics().clients_connected.get() == 0 && s.session_count() == 0
        })
        .await;
        let connects = b.state().metrics().connects.get();
        let t_stop = Instant::now();
        let stopped = b.stop_within(Duration::from_secs(2)).await;
        println!(
            "reconnect storm: {} connects of one client id in {storm_took:?}, {} wills, \
             broker shut down in {:?}",
            STORM + 2,
            wills.len(),
            t_stop.elapsed()
        );
        assert_eq!(connects, (STORM + 3) as u64, "metrics.connects");
        assert!(
            stopped,
            "broker tasks still running 2 s after shutdown (leaked tasks?)"
        );
        assert!(
            mismatches.is_empty(),
            "Session Present mismatches ({}):\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Garbage bytes
// ---------------------------------------------------------------------------------------------

const GARBAGE: usize = 200;
const GARBAGE_CONCURRENCY: usize = 50;

#[test]
fn garbage_bytes_200_connections_closed_normal_client_served_throughout() {
    run(Duration::from_secs(120), async {
        let connect_timeout = Duration::from_secs(1);
        let mut cfg = test_config();
        cfg.mqtt.connect_timeout = connect_timeout;
        let b = start_with(cfg).await;
        let addr = b.addr;

        // The normal client does round trips for as long as the garbage lasts.
        let mut c = Raw::connect_v311(addr, "normal").await;
        assert_eq!(c.subscribe(1, "g/t", 1).await, 1);
        let done = Arc::new(AtomicBool::new(false));
        let normal = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut rounds = 0u16;
                let mut slowest = Duration::ZERO;
                while !done.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    rounds += 1;
                    round_trip(&mut c, "g/t", rounds).await;
                    slowest = slowest.max(t.elapsed());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (c, rounds, slowest)
            })
        };

        let bound = connect_timeout + Duration::from_secs(4);
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let t0 = Instant::now();
        let mut results = Vec::new();
        let mut pending = JoinSet::new();
        for i in 0..GARBAGE {
            let len = 1024 + (rng.next() % 3073) as usize;
            let bytes = rng.bytes(len);
            if pending.len() >= GARBAGE_CONCURRENCY {
                results.push(pending.join_next().await.unwrap().expect("garbage task"));
            }
            pending.spawn(async move {
                let t = Instant::now();
                let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
                    .await
                    .expect("TCP connect timed out")
                    .expect("TCP connect");
                // The broker may close (and reset) before everything is written.
                let _ = s.write_all(&bytes).await;
                let mut buf = [0u8; 256];
                loop {
                    match tokio::time::timeout(bound, s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return (i, bytes[0], true, t.elapsed()),
                        Ok(Ok(_)) => {}
                        Err(_) => return (i, bytes[0], false, t.elapsed()),
                    }
                }
            });
        }
        while let Some(r) = pending.join_next().await {
            results.push(r.expect("garbage task"));
        }
        let garbage_took = t0.elapsed();
        done.store(true, Ordering::Relaxed);
        let (mut c, rounds, slowest) = normal.await.expect("normal client task");
        round_trip(&mut c, "g/t", rounds + 1).await;

        let still_open: Vec<_> = results.iter().filter(|r| !r.2).collect();
        let slowest_close = results.iter().map(|r| r.3).max().unwrap_or_default();
        println!(
            "garbage: {GARBAGE} connections in {garbage_took:?}, slowest close {slowest_close:?} \
             (bound {bound:?}); normal client: {rounds} round trips meanwhile, slowest {slowest:?}"
        );
        assert_eq!(results.len(), GARBAGE);
        assert!(
            still_open.is_empty(),
            "garbage connections not closed within {bound:?} (index, first byte): {:?}",
            still_open.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>()
        );
        assert!(
            rounds >= 1,
            "the normal client made no round trip during the garbage"
        );
        assert_eq!(
            b.clients_connected(),
            1,
            "no garbage connection became a client"
        );
        c.send(&DISCONNECT).await;
        c.expect_closed("normal client after DISCONNECT").await;
        assert!(
            b.stop_within(Duration::from_secs(2)).await,
            "broker shutdown"
        );
    });
}
