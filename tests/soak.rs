//! Soak tests: the broker under sustained, mixed, adversarial client behaviour must stay live
//! (a probe round-trips a QoS 1 message within one second, every second), lose nothing it
//! acknowledged, deliver no QoS 2 message twice, and return to idle (sessions, queue budget)
//! and shut down within a bound afterwards.
//!
//! - `churn_sixteen_subscribers_two_publishers`: issue 12. 16 clean-session clients connect,
//!   subscribe to `churn/#` at QoS 1 and drop their socket in a loop while two clients publish
//!   to `churn/x` at QoS 0 and QoS 1, for 40 s.
//! - `model_soak_*`: 24 randomised clients (3.1.1 and v5, clean and persistent) driven by a
//!   seeded generator: connect, subscribe (literal, `+`, `#`, `$share`), unsubscribe, publish
//!   at QoS 0/1/2 with and without RETAIN, drop the socket, DISCONNECT, take the session over.
//!   Every delivery is recorded and checked against a model of the sessions (see
//!   `soak/ledger.rs`). `model_soak_no_drops` has no queue limit and allows no loss at all;
//!   `model_soak_small_queues` has small queues and allows only losses the broker counted;
//!   `model_soak_with_a_store` runs with persistence on, so persistent sessions' queues go to
//!   disk when their client leaves and are read back when it returns.
//! - `restart_*`: the `starling` binary with persistence, stopped with SIGTERM or SIGKILL
//!   mid-run and restarted on the same store; acknowledged messages survive, QoS 2 stays
//!   exactly once, for plain and `$share` subscribers.
//!
//! The in-process broker runs on a runtime of its own and every wait is bounded, so a broker
//! that deadlocks fails the test (with the probe's account of when) instead of hanging it.
//! Tests run one at a time (they measure liveness on a small machine).
//!
//! Replay: every run prints its seed; `SOAK_SEED=<seed> cargo test --test soak <name>` repeats
//! the same workload (not the same thread schedule). `SOAK_SECS` sets the random phase (and the
//! churn) duration. The ten-minute soaks: `cargo test --test soak -- --ignored --nocapture
//! --exact model_soak_ten_minutes`, and `... model_soak_ten_minutes_with_a_store` with a store.

#[path = "soak/churn.rs"]
mod churn;
mod common;
#[path = "soak/conn.rs"]
mod conn;
#[path = "soak/driver.rs"]
mod driver;
#[path = "soak/isolated.rs"]
mod isolated;
#[path = "soak/ledger.rs"]
mod ledger;
#[path = "soak/model.rs"]
mod model;
#[path = "soak/probe.rs"]
mod probe;
#[path = "persistence/support.rs"]
mod psupport;
#[path = "soak/restart.rs"]
mod restart;
#[path = "soak/rng.rs"]
mod rng;
#[path = "soak/session.rs"]
mod session;

use model::Soak;

/// One soak at a time: each measures liveness with a 1 s bound on a machine with few cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_sixteen_subscribers_two_publishers() {
    let _serial = SERIAL.lock().await;
    let seed = rng::seed_from_env();
    churn::run(rng::secs_from_env(40), seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_soak_no_drops() {
    let _serial = SERIAL.lock().await;
    model::run(Soak {
        label: "model, no queue limit",
        clients: 24,
        default_secs: 50,
        max_queued: 0,
        store: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_soak_small_queues() {
    let _serial = SERIAL.lock().await;
    model::run(Soak {
        label: "model, max_queued_messages = 20",
        clients: 24,
        default_secs: 20,
        max_queued: 20,
        store: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes; run with --ignored"]
async fn model_soak_ten_minutes() {
    let _serial = SERIAL.lock().await;
    model::run(Soak {
        label: "model, ten minutes, no queue limit",
        clients: 24,
        default_secs: 600,
        max_queued: 0,
        store: false,
    })
    .await;
}

/// The model soak with persistence on: persistent sessions' queues go to disk when their
/// client leaves and are read back when it returns, through takeovers, `$share` hand-overs and
/// dropped sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_soak_with_a_store() {
    let _serial = SERIAL.lock().await;
    model::run(Soak {
        label: "model, store, no queue limit",
        clients: 24,
        default_secs: 30,
        max_queued: 0,
        store: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes; run with --ignored"]
async fn model_soak_ten_minutes_with_a_store() {
    let _serial = SERIAL.lock().await;
    model::run(Soak {
        label: "model, ten minutes, store, no queue limit",
        clients: 24,
        default_secs: 600,
        max_queued: 0,
        store: true,
    })
    .await;
}

/// A graceful stop while a slow `$share` member holds unsent messages: each message must be in
/// exactly one member's store, so the restart delivers each QoS 2 message once [MQTT-4.8.2-4]
/// (this found the hand-over leaving the departing member's stored entries behind, then two
/// members handing messages to each other at shutdown, their store writes crossing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_sigterm_keeps_acknowledged_messages() {
    let _serial = SERIAL.lock().await;
    restart::run(restart::Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_sigkill_keeps_acknowledged_messages() {
    let _serial = SERIAL.lock().await;
    restart::run(restart::Stop::Kill).await;
}
