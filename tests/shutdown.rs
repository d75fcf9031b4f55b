//! Graceful shutdown: `shutdown()` closes every connection and `wait()` returns promptly.

mod common;

use std::time::{Duration, Instant};

use common::rumq::{options, spawn};
use common::*;

/// Connected 3.1.1 and 3.1 raw clients and a rumqttc client are all disconnected, `wait()`
/// returns, and the listener is closed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_wait_returns() {
    let b = start().await;
    let addr = b.addr;
    let mut a = Raw::connect_v311(addr, "sd-a").await;
    assert_eq!(a.subscribe(1, "sd/#", 1).await, 1);
    let (mut c31, _) = Raw::connect(addr, &ConnectOpts::v31("sd-31").clean(false)).await;
    let mut r = spawn(options(addr, "sd-rumq"));
    r.connack().await;

    let t0 = Instant::now();
    assert!(
        b.stop_within(Duration::from_secs(5)).await,
        "wait() did not return within 5 s of shutdown()"
    );
    println!("wait() returned after {:?}", t0.elapsed());

    for (name, c) in [("3.1.1", &mut a), ("3.1", &mut c31)] {
        match c.closed_within(CLOSE_WAIT).await {
            Ok((seen, _)) => assert!(
                seen.is_empty(),
                "{name} client got {seen:?} (3.x gets no DISCONNECT)"
            ),
            Err(seen) => panic!("{name} client still connected after shutdown (got {seen:?})"),
        }
    }
    let why = r.closed().await;
    println!("rumqttc: {why}");
    let refused = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "listener still accepting after wait(): {refused:?}"
    );
}

/// A connection that has not sent CONNECT yet must not hold up shutdown until its
/// `connect_timeout` (10 s here) expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_connect_timeout_of_silent_connections() {
    let mut cfg = test_config();
    cfg.mqtt.connect_timeout = Duration::from_secs(10);
    let b = start_with(cfg).await;
    let mut silent = Raw::open(b.addr).await;
    // Prove the broker accepted it (the connection task exists): a normal client round trip
    // after it, on the same listener.
    let mut ok = Raw::connect_v311(b.addr, "sd-ok").await;
    assert!(ok.ping().await.is_empty());

    let t0 = Instant::now();
    let returned = b.stop_within(Duration::from_secs(3)).await;
    let e = t0.elapsed();
    assert!(
        returned,
        "wait() still pending {e:?} after shutdown(): a connection that never sent CONNECT \
         keeps the broker alive until connect_timeout"
    );
    silent
        .expect_closed("pre-CONNECT connection after shutdown")
        .await;
}

/// Shutdown with an idle 3.1.1 client that has a will: the connection closes and `wait()`
/// returns; a client in the middle of a QoS 2 flow does not block it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_inflight_qos2_and_will() {
    let b = start().await;
    let (mut w, _) = Raw::connect(
        b.addr,
        &ConnectOpts::v311("sd-will").will("sd/will", b"bye", 1, false),
    )
    .await;
    let (mut s, _) = Raw::connect(b.addr, &ConnectOpts::v311("sd-q2").clean(false)).await;
    assert_eq!(s.subscribe(1, "sd/q2", 2).await, 2);
    let mut p = Raw::connect_v311(b.addr, "sd-pub").await;
    p.publish("sd/q2", b"x", 2, false, 1).await;
    let got = s.recv_publish().await; // never acknowledged
    assert_publish(&got, "sd/q2", b"x");

    assert!(
        b.stop_within(Duration::from_secs(5)).await,
        "wait() did not return"
    );
    w.expect_closed("will client after shutdown").await;
    p.expect_closed("publisher after shutdown").await;
    // The subscriber may still see nothing but the close.
    match s.closed_within(CLOSE_WAIT).await {
        Ok(_) => {}
        Err(seen) => panic!("subscriber still connected after shutdown (got {seen:?})"),
    }
}
