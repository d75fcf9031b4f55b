//! Where brokers really run (issue 17): `handshake_timeout` on plain `mqtt` listeners,
//! unix-socket listeners (with Debian's `mosquitto_pub`/`mosquitto_sub --unix`), and the PROXY
//! protocol v1/v2 (raw headers here; Debian's `haproxy` in front of the broker in
//! `xport/haproxy.rs`).
//!
//! Closes are observed as EOF on the client's socket, bounded by a generous limit; the client
//! address the broker uses is read from its session list (`session_info(..).peer`, what the
//! admin API shows) and from the login slowdown's per-address table.

mod common;

#[path = "xport/haproxy.rs"]
mod haproxy;
#[path = "xport/proxy.rs"]
mod proxy;
#[path = "xport/tls_pki.rs"]
mod tls_pki;
#[path = "xport/unix.rs"]
mod unix;

use std::time::{Duration, Instant};

use common::*;
use starling::config::Config;

/// Upper bound for "closed within the handshake timeout" (the timeouts under test are a few
/// hundred milliseconds; the connect timeout they must beat is a minute).
const CLOSE_BOUND: Duration = Duration::from_secs(10);

/// A broker whose only listener is plain `mqtt` with a short `handshake_timeout` while
/// `mqtt.connect_timeout` is long: a close within the bound can only be the handshake timeout.
fn short_handshake() -> Config {
    let mut cfg = test_config();
    cfg.mqtt.connect_timeout = Duration::from_secs(60);
    cfg.listeners[0].handshake_timeout = Some(Duration::from_millis(300));
    cfg
}

/// mosquitto_sub with its stdout line-buffered (`stdbuf -oL`, coreutils): its `-d` lines go
/// through stdio, which a pipe would buffer until exit.
fn mosquitto_sub() -> std::process::Command {
    let mut c = std::process::Command::new("stdbuf");
    c.args(["-oL", "mosquitto_sub"]);
    c
}

/// Waits for EOF on `raw` (no packet expected), returning how long it took.
async fn closed_after(raw: &mut Raw, context: &str) -> Duration {
    let t0 = Instant::now();
    match raw.closed_within(CLOSE_BOUND).await {
        Ok((seen, _)) => assert!(seen.is_empty(), "{context}: got {seen:?} before the close"),
        Err(seen) => panic!("{context}: still open after {CLOSE_BOUND:?} (got {seen:?})"),
    }
    t0.elapsed()
}

#[tokio::test]
async fn handshake_timeout_closes_a_silent_plain_mqtt_peer() {
    let broker = start_with(short_handshake()).await;
    let mut silent = Raw::open(broker.addr).await;
    let took = closed_after(&mut silent, "a peer that sends nothing").await;
    assert!(
        took >= Duration::from_millis(250),
        "closed before the timeout: {took:?}"
    );
    // Half a CONNECT (fixed header announcing 16 bytes, 5 sent) is not a CONNECT either.
    let mut half = Raw::open(broker.addr).await;
    half.send(&[0x10, 16, 0, 4, b'M']).await;
    closed_after(&mut half, "half a CONNECT").await;
    // A whole CONNECT in time is served as always, and stays connected past the timeout.
    let (mut ok, _) = Raw::connect(broker.addr, &ConnectOpts::v311("in-time")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        ok.ping().await.is_empty(),
        "only PINGRESP after the timeout"
    );
}

#[tokio::test]
async fn without_handshake_timeout_plain_mqtt_keeps_the_connect_timeout() {
    let mut cfg = test_config();
    cfg.mqtt.connect_timeout = Duration::from_millis(300);
    let broker = start_with(cfg).await;
    let mut silent = Raw::open(broker.addr).await;
    closed_after(&mut silent, "mqtt.connect_timeout still applies").await;
}
