//! The liveness probe: a client of its own that, once a second, publishes a QoS 1 message to its
//! own topic `probe/<n>` (subscribed at QoS 1) and must get both the PUBACK and its own message
//! back within one second. The first miss ends the probe with a message saying which round,
//! when, and what was missing.

use std::time::Duration;

use bytes::Bytes;
use starling::codec::{Packet, ProtocolVersion, PubResp, QoS, ReasonCode};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Conn, Got, IO_WAIT};

/// A round trip must complete within this.
pub const ROUND_TRIP: Duration = Duration::from_secs(1);
/// One round per this.
const PERIOD: Duration = Duration::from_secs(1);

/// What a probe measured.
#[derive(Debug, Default, Clone)]
pub struct ProbeReport {
    pub rounds: u64,
    pub max_rtt: Duration,
    pub total_rtt: Duration,
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean = self.total_rtt / u32::try_from(self.rounds.max(1)).unwrap_or(u32::MAX);
        write!(
            f,
            "{} probe rounds, round trip max {:?}, mean {:?}",
            self.rounds, self.max_rtt, mean
        )
    }
}

pub struct Probe {
    stop: CancellationToken,
    task: Option<JoinHandle<Result<ProbeReport, String>>>,
    outcome: Option<Result<ProbeReport, String>>,
}

impl Probe {
    /// Connects (clean session, 3.1.1), subscribes to `probe/<n>` and starts the rounds.
    pub async fn start(addr: std::net::SocketAddr, n: u32) -> Result<Probe, String> {
        let id = format!("probe-{n}");
        let (mut c, ack) = Conn::open(
            addr,
            conn::connect_packet(ProtocolVersion::V311, &id, true, false),
        )
        .await?;
        if ack.code != ReasonCode::SUCCESS {
            return Err(format!("{id}: CONNACK {ack:?}"));
        }
        let topic = format!("probe/{n}");
        c.send(&conn::subscribe(1, &topic, QoS::AtLeastOnce))
            .await?;
        match c.recv(IO_WAIT).await {
            Got::Packet(Packet::SubAck(a)) if a.reasons == [ReasonCode(1)] => {}
            other => {
                return Err(format!(
                    "{id}: expected SUBACK granting QoS 1, got {other:?}"
                ))
            }
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(rounds(c, topic, stop.clone()));
        Ok(Probe {
            stop,
            task: Some(task),
            outcome: None,
        })
    }

    /// Waits `d`, or less when the probe misses a round meanwhile: then Err with the miss.
    pub async fn run_for(&mut self, d: Duration) -> Result<(), String> {
        if let Some(Err(e)) = &self.outcome {
            return Err(e.clone());
        }
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        tokio::select! {
            r = task => {
                self.task = None;
                let r = r.unwrap_or_else(|e| Err(format!("probe task panicked: {e}")));
                let err = r.as_ref().err().cloned();
                self.outcome = Some(r);
                match err {
                    Some(e) => Err(e),
                    None => Err("the probe stopped by itself".into()),
                }
            }
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Ends the rounds (the current one completes first) and disconnects.
    pub async fn stop(mut self) -> Result<ProbeReport, String> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(ROUND_TRIP + IO_WAIT, task)
                .await
                .map_err(|_| "the probe did not stop".to_string())?;
            self.outcome = Some(r.unwrap_or_else(|e| Err(format!("probe task panicked: {e}"))));
        }
        self.outcome.take().expect("outcome recorded")
    }
}

/// One round a second until stopped or a miss.
async fn rounds(
    mut c: Conn,
    topic: String,
    stop: CancellationToken,
) -> Result<ProbeReport, String> {
    let began = Instant::now();
    let mut report = ProbeReport::default();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let round = report.rounds + 1;
        let at = began.elapsed();
        let rtt = round_trip(&mut c, &topic, round).await.map_err(|what| {
            format!(
                "probe {topic}: round {round} (second {} of the run) missed: {what}",
                at.as_secs()
            )
        })?;
        report.rounds = round;
        report.total_rtt += rtt;
        report.max_rtt = report.max_rtt.max(rtt);
        next += PERIOD;
        // A slow round does not make the next ones bunch up.
        next = next.max(Instant::now());
    }
    c.disconnect().await.map_err(|e| format!("probe: {e}"))?;
    Ok(report)
}

/// Publishes one QoS 1 message and waits for its PUBACK and its delivery.
async fn round_trip(c: &mut Conn, topic: &str, round: u64) -> Result<Duration, String> {
    let start = Instant::now();
    let deadline = start + ROUND_TRIP;
    let payload = Bytes::from(format!("probe round {round}"));
    let pid = (round % 65_535) as u16 + 1;
    c.send(&conn::publish(
        topic,
        payload.clone(),
        QoS::AtLeastOnce,
        false,
        pid,
        false,
    ))
    .await?;
    let (mut acked, mut echoed) = (false, false);
    while !(acked && echoed) {
        match c.recv_until(deadline).await {
            Got::Packet(Packet::PubAck(a)) if a.packet_id == pid => acked = true,
            Got::Packet(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    c.send(&Packet::PubAck(PubResp::new(p.packet_id))).await?;
                }
                echoed |= p.payload == payload;
            }
            Got::Packet(other) => return Err(format!("unexpected {other:?}")),
            Got::Closed(why) => return Err(format!("connection closed: {why}")),
            Got::Timeout => {
                let missing = match (acked, echoed) {
                    (false, false) => "neither the PUBACK nor its own message",
                    (false, true) => "no PUBACK",
                    _ => "its own message never came back",
                };
                return Err(format!("{missing} within {ROUND_TRIP:?}"));
            }
        }
    }
    Ok(start.elapsed())
}
