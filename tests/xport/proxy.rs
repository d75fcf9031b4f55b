//! PROXY protocol listeners with raw headers: v1 TCP4/TCP6/UNKNOWN, v2 PROXY/LOCAL; the
//! header's client is the one the broker uses (session list, login slowdown); untrusted peers,
//! garbage and silence are closed.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use starling::codec::Packet;
use starling::config::Config;

use crate::closed_after;
use crate::common::*;

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn proxied(trusted: Option<&[&str]>) -> Config {
    let mut cfg = test_config();
    cfg.listeners[0].proxy_protocol = true;
    // Behind a proxy a loopback listener is not local: anonymous access must be asked for.
    cfg.auth.allow_anonymous = Some(true);
    cfg.listeners[0].handshake_timeout = Some(Duration::from_millis(500));
    cfg.listeners[0].proxy_protocol_trusted =
        trusted.map(|t| t.iter().map(|c| c.parse().unwrap()).collect());
    cfg
}

fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x20 | cmd, family]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp6(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src.ip(), dst.ip()) else {
        panic!("v6 addresses")
    };
    let body = [
        &s.octets()[..],
        &d.octets(),
        &src.port().to_be_bytes(),
        &dst.port().to_be_bytes(),
    ]
    .concat();
    v2(1, 0x21, &body)
}

/// Sends `header` then CONNECT as `id`; returns the connection once CONNACK accepted it.
async fn connect_behind(addr: SocketAddr, header: &[u8], id: &str) -> Raw {
    let mut raw = Raw::open(addr).await;
    let opts = ConnectOpts::v311(id);
    raw.send(&[header, &opts.encode()].concat()).await;
    match raw.recv_timeout(WAIT).await {
        Recv::Packet(Packet::ConnAck(ack)) if ack.code.0 == 0 => raw,
        other => panic!("{id}: expected an accepting CONNACK, got {other:?}"),
    }
}

fn peer_of(broker: &TestBroker, id: &str) -> String {
    let info = broker.state().session_info(id).expect("session");
    info.peer.expect("peer").to_string()
}

#[tokio::test]
async fn raw_v1_and_v2_headers_set_the_client_address() {
    let broker = start_with(proxied(None)).await;
    let a = broker.addr;
    let _v1 = connect_behind(
        a,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 1883\r\n",
        "v1-tcp4",
    )
    .await;
    assert_eq!(peer_of(&broker, "v1-tcp4"), "203.0.113.7:40001");
    let _v1_6 = connect_behind(
        a,
        b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 1883\r\n",
        "v1-tcp6",
    )
    .await;
    assert_eq!(peer_of(&broker, "v1-tcp6"), "[2001:db8::7]:40002");
    // UNKNOWN: the proxy cannot say; the socket's own peer (loopback) stands in.
    let unknown = connect_behind(a, b"PROXY UNKNOWN\r\n", "v1-unknown").await;
    let local = unknown.stream.local_addr().unwrap();
    assert_eq!(peer_of(&broker, "v1-unknown"), local.to_string());
    let mut body4 = vec![198, 51, 100, 9, 127, 0, 0, 1];
    body4.extend_from_slice(&40003u16.to_be_bytes());
    body4.extend_from_slice(&1883u16.to_be_bytes());
    let _v2 = connect_behind(a, &v2(1, 0x11, &body4), "v2-tcp4").await;
    assert_eq!(peer_of(&broker, "v2-tcp4"), "198.51.100.9:40003");
    let src = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)),
        40004,
    );
    let dst: SocketAddr = "[2001:db8::1]:1883".parse().unwrap();
    let _v2_6 = connect_behind(a, &v2_tcp6(src, dst), "v2-tcp6").await;
    assert_eq!(peer_of(&broker, "v2-tcp6"), "[2001:db8::9]:40004");
}

#[tokio::test]
async fn v2_local_health_check_is_served_with_the_real_endpoints() {
    // PROXY protocol 2.2: "the receiver must accept this connection as valid and must use the
    // real connection endpoints". haproxy's `option mqtt-chk` sends a CONNECT after a LOCAL
    // header and wants a CONNACK; closing would mark the broker down.
    let broker = start_with(proxied(None)).await;
    let check = connect_behind(broker.addr, &v2(0, 0x00, &[]), "health").await;
    assert!(peer_of(&broker, "health").starts_with("127.0.0.1:"));
    // LOCAL with an address block: the addresses are ignored.
    let src: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
    let dst: SocketAddr = "[2001:db8::1]:1883".parse().unwrap();
    let mut local = v2_tcp6(src, dst);
    local[12] = 0x20;
    let _c = connect_behind(broker.addr, &local, "health2").await;
    assert!(peer_of(&broker, "health2").starts_with("127.0.0.1:"));
    drop(check);
    // And the listener still serves proxied clients.
    let _c = connect_behind(broker.addr, b"PROXY UNKNOWN\r\n", "after-local").await;
}

#[tokio::test]
async fn untrusted_peer_missing_header_and_silence_are_closed() {
    // 127.0.0.1 is not in 10.0.0.0/8: a valid header from it is a spoof attempt.
    let broker = start_with(proxied(Some(&["10.0.0.0/8", "::1/128"]))).await;
    let mut spoof = Raw::open(broker.addr).await;
    let opts = ConnectOpts::v311("spoof");
    let header = b"PROXY TCP4 203.0.113.1 127.0.0.1 1 1883\r\n";
    let _ = spoof
        .try_send(&[&header[..], &opts.encode()].concat())
        .await;
    closed_after(&mut spoof, "an untrusted peer").await;
    assert!(broker.state().session_info("spoof").is_none());
    drop(broker);

    let broker = start_with(proxied(None)).await;
    // A client that bypasses the proxy: its CONNECT is not a PROXY header.
    let mut direct = Raw::open(broker.addr).await;
    direct.send(&ConnectOpts::v311("direct").encode()).await;
    closed_after(&mut direct, "no PROXY header").await;
    let mut garbled = Raw::open(broker.addr).await;
    garbled
        .send(b"PROXY TCP4 not-an-address 127.0.0.1 1 1883\r\n")
        .await;
    closed_after(&mut garbled, "a garbled v1 header").await;
    // Nothing at all, or half a header: closed at handshake_timeout (500 ms), not at
    // mqtt.connect_timeout.
    let mut silent = Raw::open(broker.addr).await;
    let took = closed_after(&mut silent, "silence").await;
    assert!(took >= Duration::from_millis(400), "{took:?}");
    let mut half = Raw::open(broker.addr).await;
    half.send(b"PROXY TCP4 203.0").await;
    closed_after(&mut half, "half a header").await;
    assert!(broker.state().list_sessions().is_empty());
}

/// A password file with alice:right.
fn password_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("passwd");
    let hash = starling::auth::password::hash_password(b"right", 10).expect("hash");
    std::fs::write(&path, format!("alice:{hash}\n")).expect("write password file");
    path
}

#[tokio::test]
async fn login_slowdown_tracks_the_proxied_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = proxied(None);
    cfg.auth.password_file = Some(password_file(&dir));
    cfg.auth.allow_anonymous = Some(false);
    let broker = start_with(cfg).await;
    let mut raw = Raw::open(broker.addr).await;
    let mut opts = ConnectOpts::v311("guesser");
    opts.username = Some("alice".into());
    opts.password = Some(b"wrong".to_vec());
    raw.send(
        &[
            &b"PROXY TCP4 203.0.113.50 127.0.0.1 5000 1883\r\n"[..],
            &opts.encode(),
        ]
        .concat(),
    )
    .await;
    match raw.recv_timeout(WAIT).await {
        Recv::Packet(Packet::ConnAck(ack)) => assert_ne!(ack.code.0, 0),
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
    let slowdown = broker.state().login_slowdown();
    let now = std::time::Instant::now();
    assert_eq!(slowdown.failures(IpAddr::from([203, 0, 113, 50]), now), 1);
    assert_eq!(slowdown.failures(IpAddr::from([127, 0, 0, 1]), now), 0);
}
