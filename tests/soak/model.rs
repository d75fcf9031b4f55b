//! The seeded model soak: N randomised clients ([`crate::driver`]) against an in-process broker
//! for a while, with the probe checking liveness every second; then a drain phase in which every
//! persistent client reconnects and reads what its session holds; then the invariants of
//! [`crate::ledger::check`] and the broker's own figures (session count, queue budget, drops,
//! shutdown time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use starling::broker::BrokerState;
use starling::codec::ProtocolVersion;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, Env, Spec};
use crate::isolated::IsolatedBroker;
use crate::ledger::{self, ClientLog, Clock, Verdict};
use crate::probe::Probe;
use crate::rng::{self, Rng};

/// Bound for the drivers to finish a phase once told to.
const PHASE_END: Duration = Duration::from_secs(60);
/// Bound for the drain phase to empty every session.
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// Bound for the broker's figures to settle and for its shutdown.
const SETTLE: Duration = Duration::from_secs(10);

/// One variant of the soak.
#[derive(Debug, Clone, Copy)]
pub struct Soak {
    pub label: &'static str,
    pub clients: usize,
    /// Random phase length when `SOAK_SECS` is not set.
    pub default_secs: u64,
    /// `mqtt.max_queued_messages`; 0 = no limit, and then no message may be lost at all.
    pub max_queued: usize,
    /// Persistence on, with a store in a temporary directory: persistent sessions' queues then
    /// go to disk and back (spilled when their client leaves, read back when it returns).
    pub store: bool,
}

/// The broker's drop counters for QoS 1/2 messages, and its traffic.
#[derive(Debug, Default)]
struct Figures {
    dropped_queue_full: u64,
    dropped_expired: u64,
    dropped_too_large: u64,
    dropped_quota: u64,
    dropped_offline_qos0: u64,
    dropped_shed: u64,
    publish_received: u64,
    publish_sent: u64,
}

impl Figures {
    fn read(s: &BrokerState) -> Figures {
        let m = &s.metrics();
        Figures {
            dropped_queue_full: m.dropped_queue_full.get(),
            dropped_expired: m.dropped_expired.get(),
            dropped_too_large: m.dropped_too_large.get(),
            dropped_quota: m.dropped_quota.get(),
            dropped_offline_qos0: m.dropped_offline_qos0.get(),
            dropped_shed: m.dropped_shed.get(),
            publish_received: m.publish_received.get(),
            publish_sent: m.publish_sent.get(),
        }
    }

    /// Drops that can hit a QoS 1/2 message (an upper bound: queue-full counts QoS 0 too).
    fn qos12_drops(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_expired
            + self.dropped_too_large
            + self.dropped_quota
            + self.dropped_shed
    }
}

/// Fixed mix: even clients speak 3.1.1, odd ones v5; two in three are persistent, and half of
/// those (both versions) sometimes clean-start.
fn specs(n: usize) -> Vec<Spec> {
    (0..n)
        .map(|idx| Spec {
            idx,
            id: format!("soak-{idx}"),
            version: if idx % 2 == 0 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            },
            persistent: idx % 3 != 0,
            clean_starts: idx % 6 >= 4,
        })
        .collect()
}

fn broker_config(soak: &Soak, store: Option<&std::path::Path>) -> starling::config::Config {
    let mut cfg = crate::common::test_config();
    if let Some(dir) = store {
        cfg.persistence.enabled = Some(true);
        cfg.persistence.dir = dir.to_path_buf();
    }
    cfg.mqtt.max_queued_messages = soak.max_queued;
    if soak.max_queued == 0 {
        // No per-session limit and a global budget nothing here comes near: nothing may drop.
        cfg.limits.global_queued_bytes_high = 4 << 30;
        cfg.limits.global_queued_bytes_low = 3 << 30;
    }
    cfg
}

/// Runs one soak and panics with the seed and every failure when an invariant does not hold.
pub async fn run(soak: Soak) {
    let seed = rng::seed_from_env();
    let secs = rng::secs_from_env(soak.default_secs);
    let tag = format!("[{}] SOAK_SEED={seed} SOAK_SECS={secs}", soak.label);
    eprintln!(
        "{tag}: {} clients, max_queued_messages = {}, store {}",
        soak.clients, soak.max_queued, soak.store
    );
    // Outlives the broker (dropped at the end of the run).
    let dir = soak
        .store
        .then(|| tempfile::tempdir().expect("a temporary directory"));
    let cfg = broker_config(&soak, dir.as_ref().map(|d| d.path()));
    let broker = IsolatedBroker::start(cfg).await;
    let mut probe = Probe::start(broker.addr, 0)
        .await
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    let specs = specs(soak.clients);
    let persistent = specs.iter().filter(|s| s.persistent).count();
    let env = Env {
        addr: broker.addr,
        clock: Arc::new(Clock::default()),
        stop: CancellationToken::new(),
        failed: CancellationToken::new(),
        settled: Arc::new(AtomicUsize::new(0)),
        drained: CancellationToken::new(),
    };
    let started = Instant::now();
    let drivers = random_phase(&tag, &broker, &mut probe, &env, specs, seed, secs).await;
    let random_phase = started.elapsed();
    let logs = drain_phase(&tag, &broker, &mut probe, &env, drivers, persistent).await;
    let probe = probe.stop().await;
    let probed = probe.as_ref().map(|_| ()).map_err(Clone::clone);
    fail_early(&tag, &broker, probed, logs.iter()).await;

    let mut failures = Vec::new();
    let figures = settle(&broker, persistent, &mut failures).await;
    match broker.stop_within(SETTLE).await {
        Ok(took) => eprintln!("{tag}: broker stopped in {took:?}"),
        Err(e) => failures.push(e),
    }
    let verdict = ledger::check(&logs);
    let probe = probe.as_ref().ok();
    report(&tag, random_phase, &logs, &verdict, &figures, probe);
    judge(&tag, &soak, &verdict, &figures, failures);
}

/// Runs the drivers for `secs` (less when the probe misses or a client fails) and waits for
/// them to complete their flows and disconnect.
async fn random_phase(
    tag: &str,
    broker: &IsolatedBroker,
    probe: &mut Probe,
    env: &Env,
    specs: Vec<Spec>,
    seed: u64,
    secs: u64,
) -> Vec<Driver> {
    let mut root = Rng::new(seed);
    let handles: Vec<JoinHandle<Driver>> = specs
        .into_iter()
        .map(|s| tokio::spawn(Driver::new(s, env.clone(), root.fork()).run()))
        .collect();
    let phase = tokio::select! {
        r = probe.run_for(Duration::from_secs(secs)) => r,
        _ = env.failed.cancelled() => Err("a client failed".into()),
    };
    if phase.is_err() {
        // The clients give up at once instead of completing their flows.
        env.failed.cancel();
    }
    env.stop.cancel();
    let drivers = join_all(handles, "the random phase", tag).await;
    fail_early(tag, broker, phase, drivers.iter().map(|d| &d.log)).await;
    drivers
}

/// Every persistent client reconnects and reads until the broker holds nothing for anyone.
async fn drain_phase(
    tag: &str,
    broker: &IsolatedBroker,
    probe: &mut Probe,
    env: &Env,
    drivers: Vec<Driver>,
    persistent: usize,
) -> Vec<ClientLog> {
    let handles: Vec<JoinHandle<ClientLog>> = drivers
        .into_iter()
        .map(|d| tokio::spawn(d.drain()))
        .collect();
    let drained = drain(broker, probe, env, persistent).await;
    env.drained.cancel();
    let logs = join_all(handles, "the drain phase", tag).await;
    fail_early(tag, broker, drained, logs.iter()).await;
    logs
}

/// Waits for the drivers of a phase; a driver that does not end in time means a stuck broker.
async fn join_all<T>(handles: Vec<JoinHandle<T>>, what: &str, tag: &str) -> Vec<T> {
    let all = futures_util::future::join_all(handles);
    let joined = tokio::time::timeout(PHASE_END, all)
        .await
        .unwrap_or_else(|_| {
            panic!("{tag}: clients still busy {PHASE_END:?} after the end of {what}")
        });
    joined
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{tag}: a client task panicked: {e}")))
        .collect()
}

/// Panics with every error so far, if any (the broker is then leaked, not waited for).
async fn fail_early<'a>(
    tag: &str,
    broker: &IsolatedBroker,
    r: Result<(), String>,
    logs: impl Iterator<Item = &'a ClientLog>,
) {
    let mut errors: Vec<String> = r.err().into_iter().collect();
    errors.extend(logs.flat_map(|l| l.errors.iter().cloned()));
    if !errors.is_empty() {
        errors.push(broker.diagnose().await);
        panic!("{tag}: the soak failed:\n  {}", errors.join("\n  "));
    }
}

/// The drain phase: waits (with the probe running) until every persistent client has
/// reconnected and completed its flows and the broker holds no queued or in-flight message.
async fn drain(
    broker: &IsolatedBroker,
    probe: &mut Probe,
    env: &Env,
    persistent: usize,
) -> Result<(), String> {
    let deadline = Instant::now() + DRAIN_WAIT;
    loop {
        if env.failed.is_cancelled() {
            return Err("a client failed during the drain".into());
        }
        let settled = env.settled.load(Ordering::SeqCst);
        let held = broker
            .query(|s| s.queued_messages() + s.inflight_messages())
            .await?;
        if settled == persistent && held == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "drain: after {DRAIN_WAIT:?}, {settled}/{persistent} persistent clients settled \
                 and the broker still holds {held} queued or in-flight messages"
            ));
        }
        probe.run_for(Duration::from_millis(50)).await?;
    }
}

/// Once every client has gone: the broker keeps exactly the persistent sessions, and its
/// queue budget is back to 0.
async fn settle(broker: &IsolatedBroker, persistent: usize, failures: &mut Vec<String>) -> Figures {
    let sessions = broker
        .wait_until(
            "session count",
            SETTLE,
            |s| s.session_count(),
            |n| *n == persistent,
        )
        .await;
    if let Err(e) = sessions {
        failures.push(format!(
            "{e} (expected the {persistent} persistent sessions)"
        ));
    }
    let budget = broker
        .wait_until(
            "queued bytes (budget.used())",
            SETTLE,
            |s| s.budget().used(),
            |b| *b == 0,
        )
        .await;
    if let Err(e) = budget {
        failures.push(e);
    }
    broker.query(Figures::read).await.unwrap_or_else(|e| {
        failures.push(e);
        Figures::default()
    })
}

fn report(
    tag: &str,
    took: Duration,
    logs: &[ClientLog],
    v: &Verdict,
    f: &Figures,
    probe: Option<&crate::probe::ProbeReport>,
) {
    let mut ops: HashMap<&str, u64> = HashMap::new();
    for l in logs {
        for (op, n) in &l.ops {
            *ops.entry(op).or_default() += n;
        }
    }
    let mut ops: Vec<_> = ops.into_iter().collect();
    ops.sort();
    eprintln!(
        "{tag}: random phase {took:.1?}; operations {ops:?}\n\
         published QoS0/1/2 {:?}, acknowledged {}, copies received {} ({} redelivered), \
         required (message, persistent session) pairs {}, missing {}\n\
         broker: PUBLISH received {}, sent {}, dropped queue-full {}, expired {}, too large {}, \
         quota {}, offline QoS 0 {}\n{}",
        v.published,
        v.acked,
        v.received,
        v.redelivered,
        v.required,
        v.missing,
        f.publish_received,
        f.publish_sent,
        f.dropped_queue_full,
        f.dropped_expired,
        f.dropped_too_large,
        f.dropped_quota,
        f.dropped_offline_qos0,
        probe.map_or("no probe report".into(), |p| p.to_string()),
    );
}

fn judge(tag: &str, soak: &Soak, v: &Verdict, f: &Figures, mut failures: Vec<String>) {
    failures.extend(v.violations.iter().take(20).cloned());
    let allowed = if soak.max_queued == 0 {
        if f.qos12_drops() > 0 {
            failures.push(format!(
                "the broker dropped {} QoS 1/2 messages with no queue limit",
                f.qos12_drops()
            ));
        }
        0
    } else {
        f.qos12_drops()
    };
    if v.missing > allowed {
        failures.push(format!(
            "{} acknowledged messages never reached a persistent subscriber that was \
             subscribed before they were sent; the broker counted {allowed} drops \
             [MQTT-4.5.0-1]:\n    {}",
            v.missing,
            v.missing_examples.join("\n    ")
        ));
    }
    if v.required == 0 {
        failures.push("the run required no delivery at all: the workload is broken".into());
    }
    assert!(
        failures.is_empty(),
        "{tag}: {} failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
