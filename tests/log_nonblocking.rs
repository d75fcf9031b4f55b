//! Logging never blocks the data path: the real `starling` binary runs with its stderr piped
//! to a reader that stops reading (a stalled supervisor, a full journald buffer), and clients
//! that make it log thousands of lines are all still served. The lines that did not fit the
//! log writer's queue are dropped and counted in `/metrics`. A client-supplied string in a log
//! line is cut to `logging::MAX_FIELD_BYTES` with its length shown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};

use common::*;

/// The broker with a stderr pipe nobody reads after start-up; killed on drop.
struct Stalled {
    child: Child,
    /// Held open and never read again, so the pipe fills and the log writer blocks on it
    /// (taken by a test that does read it).
    stderr: Option<BufReader<ChildStderr>>,
    mqtt: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, marker: &str) -> SocketAddr {
    let rest = line.split(marker).nth(1).expect("marker in line");
    let addr = rest.split(['/', ' ']).next().unwrap_or(rest).trim();
    addr.parse().expect("an address in the log line")
}

/// Starts the broker at debug level and reads its log only until both ports are known.
fn start(dir: &std::path::Path) -> Stalled {
    let path = dir.join("starling.toml");
    // Client ids up to the protocol's 65,535 bytes are let in (an operator may raise
    // mqtt.max_client_id_length): the log must stay bounded even then.
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n[metrics]\nbind = \"127.0.0.1:0\"\n\n\
                  [persistence]\nenabled = false\n\n[mqtt]\nmax_client_id_length = 65535\n\n\
                  [log]\nlevel = \"debug\"\n";
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut mqtt, mut metrics) = (None, None);
    let mut line = String::new();
    while mqtt.is_none() || metrics.is_none() {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "broker exited");
        if line.contains("listening on ") {
            mqtt = Some(addr_after(&line, "listening on "));
        }
        if line.contains("serving metrics at http://") {
            metrics = Some(addr_after(&line, "serving metrics at http://"));
        }
    }
    Stalled {
        child,
        stderr: Some(stderr),
        mqtt: mqtt.unwrap(),
        metrics: metrics.unwrap(),
    }
}

/// The value of one counter from `GET /metrics`.
fn scrape(addr: SocketAddr, name: &str) -> u64 {
    let mut s = StdTcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_stalled_stderr_never_stops_clients_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut sub = Raw::connect_v311(broker.mqtt, "watcher").await;
    sub.subscribe(1, "flood/#", 1).await;
    // Every connection logs its CONNECT and its DISCONNECT with a 2 KB client id: far more
    // than the pipe (64 KiB) and the log queue (`logging::LOG_QUEUE_LINES`) hold once nobody
    // reads.
    for i in 0..2500u32 {
        let id = format!("{i:05}-{}", "x".repeat(2000));
        let mut c = Raw::connect(broker.mqtt, &ConnectOpts::v311(&id)).await.0;
        c.publish("flood/t", &i.to_be_bytes(), 1, false, 1).await;
        let p = tokio::time::timeout(WAIT, sub.recv_and_ack())
            .await
            .unwrap_or_else(|_| panic!("client {i}: its message was not delivered in time"));
        assert_eq!(&p.payload[..], &i.to_be_bytes()[..]);
        c.send(&[0xE0, 0x00]).await;
    }
    // Still served at the end, and the lines that did not fit were counted.
    let mut probe = Raw::connect_v311(broker.mqtt, "probe").await;
    probe.publish("flood/end", b"end", 1, false, 2).await;
    assert_eq!(&sub.recv_and_ack().await.payload[..], b"end");
    let dropped = scrape(broker.metrics, "starling_log_lines_dropped_total");
    assert!(
        dropped > 0,
        "no log line was dropped: the test did not stall the log"
    );
    eprintln!("log lines dropped while stderr was stalled: {dropped}");
}

#[tokio::test]
async fn a_long_client_id_is_cut_in_the_log_line_with_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    let id = format!("long-{}", "y".repeat(20_000));
    let mut c = Raw::connect(broker.mqtt, &ConnectOpts::v311(&id)).await.0;
    c.send(&[0xE0, 0x00]).await;
    let mut stderr = broker.stderr.take().unwrap();
    let found = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            if line.contains("client connected") && line.contains("long-yyy") {
                return Some(line);
            }
        }
    });
    let line = tokio::time::timeout(WAIT, found)
        .await
        .expect("the connect line within WAIT")
        .unwrap()
        .expect("a connect line for the long client id");
    assert!(line.contains("…(20005 bytes)"), "{line}");
    assert!(
        line.len() < 2_000,
        "the line is bounded: {} bytes",
        line.len()
    );
}
