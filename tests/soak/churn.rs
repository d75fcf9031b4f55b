//! The issue 12 workload: clean-session clients that connect, subscribe to `churn/#` at QoS 1
//! and drop their socket (no DISCONNECT) in a loop, while publishers send to `churn/x` at QoS 0
//! and QoS 1.
//!
//! The clients only produce load; they do not judge the broker (the probe does). A wait that
//! times out ends that client's loop and is reported, so a stuck broker never makes a task
//! outlive the test's bounds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use starling::codec::{Packet, ProtocolVersion, PubResp, QoS, ReasonCode};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Conn, Got, IO_WAIT};
use crate::isolated::IsolatedBroker;
use crate::probe::Probe;
use crate::rng::Rng;

/// QoS 1 messages a publisher keeps in flight.
const WINDOW: usize = 10;
/// One message per publisher per this.
const PUBLISH_EVERY: Duration = Duration::from_millis(4);

/// What one churning subscriber did.
#[derive(Debug, Default)]
pub struct ChurnerReport {
    pub cycles: u64,
    pub received: u64,
    /// Why the loop ended early (a stuck or misbehaving broker).
    pub failure: Option<String>,
}

/// Connect (clean), SUBSCRIBE `churn/#` QoS 1, read for a moment (acknowledging some of what
/// arrives, so some QoS 1 deliveries are in flight when the socket goes), drop the socket.
pub async fn churner(
    addr: SocketAddr,
    n: usize,
    mut rng: Rng,
    stop: CancellationToken,
) -> ChurnerReport {
    let mut report = ChurnerReport::default();
    let id = format!("churn-{n}");
    while !stop.is_cancelled() {
        if let Err(e) = churn_once(addr, &id, &mut rng, &mut report).await {
            report.failure = Some(e);
            break;
        }
        report.cycles += 1;
    }
    report
}

async fn churn_once(
    addr: SocketAddr,
    id: &str,
    rng: &mut Rng,
    report: &mut ChurnerReport,
) -> Result<(), String> {
    let packet = conn::connect_packet(ProtocolVersion::V311, id, true, false);
    let (mut c, ack) = Conn::open(addr, packet).await?;
    if ack.code != ReasonCode::SUCCESS {
        return Err(format!("{id}: CONNACK {ack:?}"));
    }
    c.send(&conn::subscribe(1, "churn/#", QoS::AtLeastOnce))
        .await?;
    let deadline = Instant::now() + IO_WAIT;
    loop {
        match c.recv_until(deadline).await {
            Got::Packet(Packet::SubAck(_)) => break,
            Got::Packet(_) => {}
            other => return Err(format!("{id}: waiting for SUBACK: {other:?}")),
        }
    }
    // Pacing: stay subscribed for 0-20 ms.
    let until = Instant::now() + Duration::from_millis(rng.below(20));
    let ack_some = rng.chance(50);
    while let Got::Packet(p) = c.recv_until(until).await {
        if let Packet::Publish(p) = p {
            report.received += 1;
            if ack_some && p.qos == QoS::AtLeastOnce {
                c.queue(&Packet::PubAck(PubResp::new(p.packet_id)));
            }
        }
    }
    let _ = c.flush().await;
    drop(c);
    Ok(())
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct PublisherReport {
    pub published: u64,
    pub acked: u64,
    pub failure: Option<String>,
}

/// Publishes `churn/x` at `qos` (one message every [`PUBLISH_EVERY`], at most [`WINDOW`]
/// unacknowledged) until stopped, then waits for the outstanding PUBACKs and disconnects.
pub async fn publisher(addr: SocketAddr, qos: QoS, stop: CancellationToken) -> PublisherReport {
    let mut report = PublisherReport::default();
    if let Err(e) = publish_loop(addr, qos, &stop, &mut report).await {
        report.failure = Some(e);
    }
    report
}

async fn publish_loop(
    addr: SocketAddr,
    qos: QoS,
    stop: &CancellationToken,
    report: &mut PublisherReport,
) -> Result<(), String> {
    let id = format!("churn-pub-q{}", qos as u8);
    let packet = conn::connect_packet(ProtocolVersion::V311, &id, true, false);
    let (mut c, _) = Conn::open(addr, packet).await?;
    let mut open: VecDeque<(u16, Instant)> = VecDeque::new();
    let mut next_send = Instant::now();
    loop {
        let stopping = stop.is_cancelled();
        if stopping && open.is_empty() {
            return c.disconnect().await;
        }
        if let Some((pid, since)) = open.front() {
            if since.elapsed() > IO_WAIT {
                return Err(format!(
                    "{id}: no PUBACK for packet id {pid} within {IO_WAIT:?}"
                ));
            }
        }
        if !stopping && open.len() < WINDOW && Instant::now() >= next_send {
            let seq = report.published;
            let pid = (seq % 65_535) as u16 + 1;
            let payload = Bytes::from(format!("churn {seq}"));
            c.send(&conn::publish("churn/x", payload, qos, false, pid, false))
                .await?;
            report.published += 1;
            if qos != QoS::AtMostOnce {
                open.push_back((pid, Instant::now()));
            }
            next_send += PUBLISH_EVERY;
            next_send = next_send.max(Instant::now() - PUBLISH_EVERY * 4);
            continue;
        }
        let wake = if open.len() < WINDOW && !stopping {
            next_send
        } else {
            Instant::now() + Duration::from_millis(100)
        };
        match c.recv_until(wake).await {
            Got::Packet(Packet::PubAck(a)) => {
                open.retain(|(p, _)| *p != a.packet_id);
                report.acked += 1;
            }
            Got::Packet(other) => return Err(format!("{id}: unexpected {other:?}")),
            Got::Closed(why) => return Err(format!("{id}: connection closed: {why}")),
            Got::Timeout => {}
        }
    }
}

/// Churning subscribers (issue 12 uses 16).
pub const CHURNERS: usize = 16;
/// Bound for every client task to end once stopped.
const WIND_DOWN: Duration = Duration::from_secs(20);
/// Bound for the broker's figures to settle and for its shutdown.
const SETTLE: Duration = Duration::from_secs(10);

/// The client tasks of the churn.
struct Load {
    stop: CancellationToken,
    churners: Vec<JoinHandle<ChurnerReport>>,
    publishers: Vec<JoinHandle<PublisherReport>>,
}

impl Load {
    fn start(addr: SocketAddr, seed: u64) -> Load {
        let stop = CancellationToken::new();
        let mut rng = Rng::new(seed);
        let churners = (0..CHURNERS)
            .map(|n| tokio::spawn(churner(addr, n, rng.fork(), stop.clone())))
            .collect();
        let publishers = [QoS::AtMostOnce, QoS::AtLeastOnce]
            .into_iter()
            .map(|q| tokio::spawn(publisher(addr, q, stop.clone())))
            .collect();
        Load {
            stop,
            churners,
            publishers,
        }
    }

    /// Stops every client and waits for them (bounded); a summary line and their failures.
    async fn wind_down(self, failures: &mut Vec<String>) -> String {
        self.stop.cancel();
        let joined = tokio::time::timeout(WIND_DOWN, async {
            let c = futures_util::future::join_all(self.churners).await;
            let p = futures_util::future::join_all(self.publishers).await;
            (c, p)
        })
        .await;
        let Ok((churners, publishers)) = joined else {
            failures.push(format!("clients still busy {WIND_DOWN:?} after the stop"));
            return String::new();
        };
        let churners: Vec<ChurnerReport> =
            churners.into_iter().map(|r| r.expect("churner")).collect();
        let pubs: Vec<PublisherReport> = publishers
            .into_iter()
            .map(|r| r.expect("publisher"))
            .collect();
        failures.extend(churners.iter().filter_map(|c| c.failure.clone()));
        failures.extend(pubs.iter().filter_map(|p| p.failure.clone()));
        let cycles: u64 = churners.iter().map(|c| c.cycles).sum();
        let received: u64 = churners.iter().map(|c| c.received).sum();
        format!(
            "{cycles} churn cycles, {received} deliveries read by churners; publishers QoS 0 \
             sent {}, QoS 1 sent {} / acknowledged {}",
            pubs[0].published, pubs[1].published, pubs[1].acked
        )
    }
}

/// The issue 12 scenario for `secs` seconds with the probe checking every second, then the
/// broker must answer a new CONNECT, drop every session but the probe's (then the probe's),
/// release its whole queue budget and shut down within a bound. Panics with the first failure.
pub async fn run(secs: u64, seed: u64) {
    let tag = format!("[churn] SOAK_SEED={seed} SOAK_SECS={secs}");
    let broker = IsolatedBroker::start(crate::common::test_config()).await;
    let mut probe = Probe::start(broker.addr, 0)
        .await
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    let load = Load::start(broker.addr, seed);
    let live = probe.run_for(Duration::from_secs(secs)).await;
    // A stuck broker fails here, with the probe's account of when it stopped answering; the
    // broker is then leaked (IsolatedBroker's drop), never waited for.
    if let Err(miss) = live {
        load.stop.cancel();
        let why = broker.diagnose().await;
        panic!("{tag}: the broker stopped answering: {miss}; {why}");
    }
    let mut failures = Vec::new();
    let load = load.wind_down(&mut failures).await;
    check_idle(&broker, &mut failures).await;
    let probe = match probe.stop().await {
        Ok(r) => r.to_string(),
        Err(e) => {
            failures.push(e);
            String::new()
        }
    };
    let figures = check_empty(&broker, &mut failures).await;
    let stopped = broker.stop_within(SETTLE).await;
    eprintln!("{tag}: {load}; broker {figures}; {probe}; shutdown {stopped:?}");
    failures.extend(stopped.err());
    assert!(
        failures.is_empty(),
        "{tag}: {} failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// With the load gone: a new client gets a CONNACK, and only the probe's session remains.
async fn check_idle(broker: &IsolatedBroker, failures: &mut Vec<String>) {
    let packet = conn::connect_packet(ProtocolVersion::V311, "churn-after", true, false);
    match Conn::open(broker.addr, packet).await {
        Ok((c, ack)) if ack.code == ReasonCode::SUCCESS => {
            if let Err(e) = c.disconnect().await {
                failures.push(e);
            }
        }
        Ok((_, ack)) => failures.push(format!("a new CONNECT after the churn got {ack:?}")),
        Err(e) => failures.push(format!("a new CONNECT after the churn: {e}")),
    }
    let idle = broker
        .wait_until(
            "session count with only the probe connected",
            SETTLE,
            |s| s.session_count(),
            |n| *n == 1,
        )
        .await;
    failures.extend(idle.err());
}

/// With the probe gone too: no session, no queued byte. Returns the traffic figures.
async fn check_empty(broker: &IsolatedBroker, failures: &mut Vec<String>) -> String {
    let sessions = broker
        .wait_until("session count", SETTLE, |s| s.session_count(), |n| *n == 0)
        .await;
    let budget = broker
        .wait_until("budget.used()", SETTLE, |s| s.budget().used(), |b| *b == 0)
        .await;
    failures.extend(sessions.err());
    failures.extend(budget.err());
    let figures = broker
        .query(|s| {
            let m = &s.metrics();
            format!(
                "PUBLISH received {}, sent {}, dropped {}",
                m.publish_received.get(),
                m.publish_sent.get(),
                m.publish_dropped()
            )
        })
        .await;
    figures.unwrap_or_else(|e| {
        failures.push(e.clone());
        e
    })
}
