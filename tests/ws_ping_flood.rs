//! A WebSocket client that floods pings and never reads what comes back must not make the
//! broker buffer pongs without bound (RFC 6455 5.5.2 requires a pong per ping, 5.5.3 lets an
//! endpoint answer only the most recent one). A chaos run saw 2 GB of RSS in 8 s from one such
//! connection, before it had even sent CONNECT. Its own test binary: the check reads this
//! process's RSS, which other tests running alongside would move.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use starling::config::{ListenerConfig, ListenerProtocol};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_a_client_that_never_reads_stays_bounded() {
    let mut cfg = test_config();
    cfg.listeners = vec![ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        protocol: ListenerProtocol::Ws,
        // Long enough for the whole flood, before CONNECT.
        handshake_timeout: Some(Duration::from_secs(60)),
        ..ListenerConfig::default()
    }];
    cfg.mqtt.connect_timeout = Duration::from_secs(60);
    let b = start_with(cfg).await;
    let addr = b.handle().local_addrs()[0];
    // A small receive buffer: the broker's pongs soon find the client's window closed.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    let before = rss_bytes();
    // 300,000 pings of 125 bytes: unbounded, some 40 MB of pongs would pile up.
    let ping = bytes::Bytes::from(vec![0x55u8; 125]);
    for _ in 0..300_000 {
        ws.feed(Message::Ping(ping.clone())).await.unwrap();
    }
    ws.flush().await.unwrap();
    // The broker has read the pings once it answers a CONNECT sent after them (in order on
    // the same stream); its reply is not read: the client still never reads.
    ws.send(Message::Binary(
        ConnectOpts::v311("flooder").encode().into(),
    ))
    .await
    .unwrap();
    b.wait_until("the CONNECT behind the pings is handled", |s| {
        s.session_info("flooder").is_some()
    })
    .await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "RSS grew by {} MiB while pongs went unread",
        grown >> 20
    );
}
