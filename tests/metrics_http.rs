//! The metrics endpoint under idle and half-open connections (issue 14 item 11): `/healthz`
//! and `/readyz` keep answering while 200 connections that never finish a request are held,
//! the endpoint keeps at most `metrics.max_connections` of them open, and `/metrics` can be
//! guarded by a bearer token.
//!
//! Half-open connections come from one address (127.0.0.1, the per-peer cap) and from many
//! (127.0.0.2 and up: Linux routes all of 127.0.0.0/8 to lo, so the global cap is reached
//! too). The health check is the newest connection and sends its request at once, so it is
//! answered while every older idle socket is still held open by its client. "Answers" is
//! bounded by a generous 5 s, far below the header timeout those sockets would otherwise need
//! to expire (set to a minute here so expiry cannot be what makes room).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use starling::config::Config;
use starling::{Broker, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

async fn start(extra: &str) -> BrokerHandle {
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval = \"0s\"\n\
         [metrics]\nbind = \"127.0.0.1:0\"\nheader_timeout = \"1m\"\n{extra}"
    );
    let config = Config::from_toml_str(&toml).expect("test configuration");
    Broker::start(config).await.expect("broker starts")
}

async fn stop(handle: BrokerHandle) {
    handle.shutdown();
    tokio::time::timeout(WAIT, handle.wait())
        .await
        .expect("the broker stops");
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind a loopback address");
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("TCP connect timed out")
        .expect("TCP connect")
}

/// `GET path` with extra header lines over HTTP/1.0: (status, body).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = connect_from(IpAddr::from([127, 0, 0, 1]), addr).await;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} within {WAIT:?}"))
        .expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    (status.unwrap_or(0), body.to_owned())
}

/// The value of an unlabelled sample in an exposition.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Opens `n` connections from `addrs` (round robin), each sending the start of a request and
/// never finishing it.
async fn half_open(to: SocketAddr, addrs: &[IpAddr], n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect_from(addrs[i % addrs.len()], to).await;
        s.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("send a partial request");
        held.push(s);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_while_200_half_open_connections_are_held() {
    let handle = start("max_connections = 16\nmax_connections_per_peer = 4\n").await;
    let http = handle.metrics_addr().expect("metrics endpoint configured");
    let local = [IpAddr::from([127, 0, 0, 1])];
    let many: Vec<IpAddr> = (2..=41u8).map(|i| IpAddr::from([127, 0, 0, i])).collect();

    // 100 from the health checker's own address, 100 from 40 others.
    let mut held = half_open(http, &local, 100).await;
    assert_eq!(get(http, "/healthz", "").await, (200, "ok\n".into()));
    held.extend(half_open(http, &many, 100).await);
    assert_eq!(held.len(), 200);
    assert_eq!(get(http, "/healthz", "").await, (200, "ok\n".into()));
    assert_eq!(get(http, "/readyz", "").await, (200, "ready\n".into()));

    let (status, body) = get(http, "/metrics", "").await;
    assert_eq!(status, 200);
    let open = sample(&body, "starling_http_connections");
    assert!(open <= 16, "at most max_connections open, got {open}");
    // 2 connections of the 200 plus 3 requests can be open; the rest were closed for room.
    let evicted = sample(&body, "starling_http_connections_evicted_total");
    assert!(evicted >= 200 - 16, "evicted {evicted}");
    drop(held);
    stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_metrics_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken-value\n").expect("write token file");
    let handle = start(&format!(
        "bearer_token_file = {:?}\n",
        token.display().to_string()
    ))
    .await;
    let http = handle.metrics_addr().expect("metrics endpoint configured");

    assert_eq!(get(http, "/metrics", "").await.0, 401);
    let wrong = "Authorization: Bearer nope\r\n";
    assert_eq!(get(http, "/metrics", wrong).await.0, 401);
    let right = "Authorization: Bearer t0ken-value\r\n";
    let (status, body) = get(http, "/metrics", right).await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE starling_http_connections gauge\n"));
    assert_eq!(get(http, "/healthz", "").await.0, 200);
    assert_eq!(get(http, "/readyz", "").await.0, 200);
    stop(handle).await;
}
