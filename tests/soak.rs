//! Soak tests: the broker under sustained, mixed, adversarial client behaviour must stay live
//! (a probe round-trips a QoS 1 message within one second, every second), lose nothing it
//! acknowledged, deliver no QoS 2 message twice, and return to idle (sessions, queue budget)
//! and shut down within a bound afterwards.
//!
//! - `churn_sixteen_subscribers_two_publishers`: issue 12. 16 clean-session clients connect,
//!   subscribe to `churn/#` at QoS 1 and drop their socket in a loop while two clients publish
//!   to `churn/x` at QoS 0 and QoS 1, for 40 s.
//!
//! The in-process broker runs on a runtime of its own and every wait is bounded, so a broker
//! that deadlocks fails the test (with the probe's account of when) instead of hanging it.
//! Tests run one at a time (they measure liveness on a small machine).
//!
//! Every run prints its seed (`SOAK_SEED`); `SOAK_SECS` sets the duration.

#[path = "soak/churn.rs"]
mod churn;
mod common;
#[path = "soak/conn.rs"]
mod conn;
#[path = "soak/isolated.rs"]
mod isolated;
#[path = "soak/probe.rs"]
mod probe;
#[path = "soak/rng.rs"]
mod rng;

/// One soak at a time: each measures liveness with a 1 s bound on a machine with few cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_sixteen_subscribers_two_publishers() {
    let _serial = SERIAL.lock().await;
    let seed = rng::seed_from_env();
    churn::run(rng::secs_from_env(40), seed).await;
}
