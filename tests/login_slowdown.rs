//! Failed logins are slowed per peer address (issue 14 item 5, `[auth] login_*` keys): the
//! refusing CONNACK of an address that keeps failing is held back longer and longer, while a
//! correct password, and every other address, is answered at once.
//!
//! Every test runs on loopback; a second peer address is a client socket bound to 127.0.0.2
//! (Linux routes all of 127.0.0.0/8 to lo). Delays are checked through the limiter's state and
//! the metrics, and from below only ("the refusal took at least its delay"), never as an upper
//! wall-clock bound; "answered at once" means "within the generous [`WAIT`] while the delay it
//! would have got is 30 s".

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use starling::auth::slowdown::SlowdownPolicy;
use starling::codec::Packet;
use starling::config::Config;
use tokio::net::TcpSocket;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A password file with alice:right, in a temp dir kept alive by the caller.
fn password_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("passwd");
    let hash = starling::auth::password::hash_password(b"right", 10).expect("hash");
    std::fs::write(&path, format!("alice:{hash}\n")).expect("write password file");
    (dir, path)
}

fn config(passwd: PathBuf) -> Config {
    let mut cfg = test_config();
    cfg.auth.password_file = Some(passwd);
    cfg.auth.allow_anonymous = Some(false);
    cfg.mqtt.connect_timeout = Duration::from_secs(60);
    cfg
}

fn login(id: &str, password: &[u8]) -> ConnectOpts {
    let mut o = ConnectOpts::v311(id);
    o.username = Some("alice".into());
    o.password = Some(password.to_vec());
    o
}

/// A connection to `broker` from the loopback address `from`.
async fn open_from(from: IpAddr, broker: SocketAddr) -> Raw {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind a loopback address");
    let stream = tokio::time::timeout(WAIT, socket.connect(broker))
        .await
        .expect("TCP connect timed out")
        .expect("TCP connect");
    Raw::from_stream(stream)
}

/// Sends CONNECT and returns the CONNACK code, or None if nothing came within `within`.
async fn connack_code(raw: &mut Raw, opts: &ConnectOpts, within: Duration) -> Option<u8> {
    raw.send(&opts.encode()).await;
    match raw.recv_timeout(within).await {
        Recv::Packet(Packet::ConnAck(ack)) => Some(ack.code.0),
        Recv::Timeout => None,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn repeated_wrong_passwords_from_one_address_get_increasing_delays() {
    let (_dir, passwd) = password_file();
    let mut cfg = config(passwd);
    cfg.auth.login_failures_before_delay = 2;
    cfg.auth.login_delay = Duration::from_millis(40);
    cfg.auth.login_delay_max = Duration::from_millis(320);
    let policy = SlowdownPolicy::from_config(&cfg.auth);
    let b = start_with(cfg).await;
    let slowdown = b.state().login_slowdown().clone();

    let mut delays = Vec::new();
    for i in 0..7u32 {
        let started = Instant::now();
        let mut raw = Raw::open(b.addr).await;
        let code = connack_code(&mut raw, &login(&format!("guess-{i}"), b"wrong"), WAIT).await;
        assert_eq!(code, Some(5), "attempt {i}: refused, not authorized");
        let delay = slowdown.delay_for(LOCAL, Instant::now());
        assert_eq!(delay, policy.delay_after(i + 1), "attempt {i}");
        assert!(
            started.elapsed() >= delay,
            "attempt {i}: CONNACK held for its delay"
        );
        delays.push(delay);
    }
    assert!(
        delays[..2].iter().all(Duration::is_zero),
        "the first failures are free"
    );
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]) && delays[2] < delays[5],
        "delays grow: {delays:?}"
    );
    assert_eq!(delays.last(), Some(&policy.max_delay), "capped: {delays:?}");
    assert_eq!(slowdown.delayed_total(), 5);
    assert_eq!(slowdown.failures(LOCAL, Instant::now()), 7);
    assert_eq!(slowdown.tracked_peers(), 1);
    assert!(b.stop_within(WAIT).await);
}

#[tokio::test]
async fn a_correct_password_and_other_addresses_are_never_delayed() {
    let (_dir, passwd) = password_file();
    let mut cfg = config(passwd);
    cfg.auth.login_failures_before_delay = 1;
    cfg.auth.login_delay = Duration::from_secs(30);
    cfg.auth.login_delay_max = Duration::from_secs(30);
    let b = start_with(cfg).await;

    let mut first = Raw::open(b.addr).await;
    assert_eq!(
        connack_code(&mut first, &login("g1", b"wrong"), WAIT).await,
        Some(5)
    );
    // The second failure is held back for 30 s: no CONNACK yet.
    let mut held = Raw::open(b.addr).await;
    assert_eq!(
        connack_code(&mut held, &login("g2", b"wrong"), QUIET).await,
        None
    );
    assert_eq!(b.state().login_slowdown().delayed_total(), 1);

    // The right password from the same address is accepted at once, while the other
    // connection's refusal is still held (its sleep holds no worker thread).
    let mut ok = Raw::open(b.addr).await;
    assert_eq!(
        connack_code(&mut ok, &login("alice-1", b"right"), WAIT).await,
        Some(0)
    );
    // A wrong password from another address is its own first failure: refused at once.
    let mut other = open_from("127.0.0.2".parse().unwrap(), b.addr).await;
    assert_eq!(
        connack_code(&mut other, &login("g3", b"wrong"), WAIT).await,
        Some(5)
    );
    // A success does not wipe the record: the next failure here is still slowed.
    let mut again = Raw::open(b.addr).await;
    assert_eq!(
        connack_code(&mut again, &login("g4", b"wrong"), QUIET).await,
        None
    );
    assert_eq!(b.state().login_slowdown().delayed_total(), 2);

    // Shutdown cuts the held refusals short.
    assert!(b.stop_within(WAIT).await);
    for raw in [&mut held, &mut again] {
        assert!(raw.closed_within(WAIT).await.is_ok(), "closed at shutdown");
    }
}

#[tokio::test]
async fn the_table_of_failing_addresses_is_bounded() {
    let (_dir, passwd) = password_file();
    let mut cfg = config(passwd);
    cfg.auth.login_tracked_peers = 3;
    let b = start_with(cfg).await;
    for last in 2..=9u8 {
        let from = IpAddr::from([127, 0, 0, last]);
        let mut raw = open_from(from, b.addr).await;
        assert_eq!(
            connack_code(&mut raw, &login("g", b"wrong"), WAIT).await,
            Some(5)
        );
        assert!(b.state().login_slowdown().tracked_peers() <= 3);
    }
    let slowdown = b.state().login_slowdown();
    assert_eq!(slowdown.tracked_peers(), 3);
    let now = Instant::now();
    assert_eq!(
        slowdown.failures(IpAddr::from([127, 0, 0, 9]), now),
        1,
        "newest kept"
    );
    assert_eq!(
        slowdown.failures(IpAddr::from([127, 0, 0, 2]), now),
        0,
        "oldest forgotten"
    );
    assert!(b.stop_within(WAIT).await);
}
