//! Refusals are logged by the real `starling` binary with the client id, the peer address and
//! the reason, and the refusal log limiter (at most `logging::PER_SECOND` lines a second, the
//! rest counted in a summary line) lets the first refusals through.
//!
//! The limiter is process-wide, so this runs the built binary: in-process tests would share its
//! counters with every other test of the process.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;

/// The broker binary with its stderr (the log) read line by line; killed on drop.
struct Starling {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line logged so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Starling {
    async fn start(dir: &std::path::Path, config: &str) -> Starling {
        let path = dir.join("starling.toml");
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
        let (tx, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut s = Starling {
            child,
            lines,
            log,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        let line = s
            .wait_line("listening on", |l| l.contains("listening on "))
            .await;
        let rest = line.split("listening on ").nth(1).unwrap();
        // "listening on ADDR (PROTOCOL)"
        let addr = rest.split_whitespace().next().unwrap();
        s.addr = addr.parse().expect("address in the log line");
        s
    }

    /// The next log line satisfying `pred`, within [`WAIT`]; None otherwise.
    async fn line_within(&mut self, d: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if pred(&l) => return Some(l),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.line_within(WAIT, pred).await {
            Some(l) => l,
            None => panic!(
                "no log line {what} within {WAIT:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            ),
        }
    }

    /// Waits for the refusal line that names `client_id` and contains every one of `reason`,
    /// and asserts it names the peer `peer` too.
    async fn assert_refusal_logged(&mut self, client_id: &str, peer: SocketAddr, reason: &[&str]) {
        let id = format!("client_id={client_id} ");
        let what = format!("with {id}and {reason:?}");
        let line = self
            .wait_line(&what, |l| {
                l.contains(&id) && reason.iter().all(|r| l.contains(r))
            })
            .await;
        println!("{line}");
        assert!(
            line.contains(&format!("peer={peer}")),
            "peer {peer}: {line}"
        );
    }
}

impl Drop for Starling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "starling-refusal-log-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn passwd_file(dir: &std::path::Path) -> PathBuf {
    let file = dir.join("passwd");
    let o = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["passwd", "-c", "-b"])
        .arg(&file)
        .args(["alice", "alice-pw"])
        .output()
        .expect("run starling passwd");
    assert!(o.status.success(), "starling passwd: {o:?}");
    file
}

/// A 3.1.1 client that sends a second CONNECT [MQTT-3.1.0-2]; returns its address.
async fn second_connect(addr: SocketAddr, client_id: &str) -> SocketAddr {
    let opts = ConnectOpts::v311(client_id);
    let (mut c, _) = Raw::connect(addr, &opts).await;
    let local = c.stream.local_addr().unwrap();
    c.send(&opts.encode()).await;
    c.expect_closed("second CONNECT [MQTT-3.1.0-2]").await;
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_logged_with_client_id_peer_and_reason_first_ones_through_the_limiter() {
    let dir = scratch("refusals");
    let passwd = passwd_file(&dir);
    let mut broker = Starling::start(
        &dir,
        &format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
             [auth]\npassword_file = {passwd:?}\nallow_anonymous = true\n\
             [mqtt]\nmax_packet_size = 1024\n\
             [persistence]\nenabled = false\n\
             [sys]\ninterval = \"0s\"\n\
             [log]\nlevel = \"info\"\n"
        ),
    )
    .await;
    let addr = broker.addr;

    // 1. A second CONNECT on a connection [MQTT-3.1.0-2]: the first refusal of the process.
    let peer = second_connect(addr, "log-dup").await;
    broker
        .assert_refusal_logged("log-dup", peer, &["[MQTT-3.1.0-2] second CONNECT"])
        .await;

    // 2. A wrong password: CONNACK 5, and the line says why (never the password).
    let mut opts = ConnectOpts::v311("log-badpw");
    opts.username = Some("alice".into());
    opts.password = Some(b"wrong-pw".to_vec());
    let (c, ack) = Raw::connect_raw(addr, &opts).await;
    assert_eq!(ack.code.0, 5, "CONNACK for a wrong password: {ack:?}");
    let peer = c.stream.local_addr().unwrap();
    broker
        .assert_refusal_logged("log-badpw", peer, &["login failed", "BadCredentials"])
        .await;
    assert!(
        !broker
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("wrong-pw")),
        "the password must never be logged"
    );

    // 3. A PUBLISH over mqtt.max_packet_size, after a good login.
    let mut opts = ConnectOpts::v311("log-big");
    opts.username = Some("alice".into());
    opts.password = Some(b"alice-pw".to_vec());
    let (mut c, _) = Raw::connect(addr, &opts).await;
    let peer = c.stream.local_addr().unwrap();
    c.send(&publish_packet("t", &[b'x'; 2048], 1, false, false, 1))
        .await;
    c.expect_closed("2 KB PUBLISH with max_packet_size = 1024")
        .await;
    broker
        .assert_refusal_logged("log-big", peer, &["exceeds the maximum packet size 1024"])
        .await;

    // 4. A first packet that is not CONNECT [MQTT-3.1.0-1]: no client id exists yet; the line
    // names the peer and the packet.
    let mut c = Raw::open(addr).await;
    let peer = c.stream.local_addr().unwrap();
    c.send(&PINGREQ).await;
    c.expect_closed("PINGREQ before CONNECT [MQTT-3.1.0-1]")
        .await;
    let line = broker
        .wait_line("for the PINGREQ before CONNECT", |l| {
            l.contains(&format!("peer={peer}"))
        })
        .await;
    println!("{line}");
    assert!(
        line.contains("[MQTT-3.1.0-1] first packet is not CONNECT") && line.contains("PINGREQ"),
        "{line}"
    );

    // 5. A client id over mqtt.max_client_id_length (256): CONNACK 2, and one line with the
    // peer and the id cut to 256 bytes with its length (issue 14 item 2).
    let long_id = format!("long-{}", "i".repeat(995));
    let (mut c, ack) = Raw::connect_raw(addr, &ConnectOpts::v311(&long_id)).await;
    assert_eq!(ack.code.0, 2, "CONNACK for a 1000-byte client id: {ack:?}");
    let peer = c.stream.local_addr().unwrap();
    c.expect_closed("1000-byte client id").await;
    let line = broker
        .wait_line("for the long client id", |l| {
            l.contains(&format!("peer={peer}"))
        })
        .await;
    println!("{line}");
    assert!(line.contains("max_client_id_length"), "{line}");
    assert!(line.contains("…(1000 bytes)"), "the id is cut: {line}");
    assert!(
        !line.contains(&long_id),
        "the whole id is not logged: {line}"
    );

    // 6. A flood of refusals: the limiter lets the first ones through, counts the rest, and
    // reports how many it suppressed once the next second's first refusal is logged.
    const FLOOD: usize = 300;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        tasks.spawn(async move { second_connect(addr, &format!("flood-{i}")).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // A refusal in a later second than the flood's is logged again, after the summary. Each
    // attempt uses a new client id; the first ones may still fall in the flood's second, whose
    // quota is spent.
    let mut after = None;
    let mut attempts = 0;
    for attempt in 0..10 {
        attempts += 1;
        let id = format!("after-flood-{attempt}");
        let peer = second_connect(addr, &id).await;
        let key = format!("client_id={id} ");
        if let Some(line) = broker
            .line_within(Duration::from_millis(500), |l| {
                l.contains(&key) && l.contains("second CONNECT")
            })
            .await
        {
            assert!(line.contains(&format!("peer={peer}")), "{line}");
            after = Some(line);
            break;
        }
    }
    let Some(after) = after else {
        panic!(
            "no refusal logged in the seconds after the flood; log:\n{}",
            broker.log.lock().unwrap().join("\n")
        )
    };
    // The limiter counts per wall-clock second: in the next one, a refusal is logged at once
    // (and by then every flood connection has certainly been logged or counted: a client sees
    // the close just before the broker's refusal call).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let peer = second_connect(addr, "final").await;
    broker
        .assert_refusal_logged("final", peer, &["second CONNECT"])
        .await;
    let log = broker.log.lock().unwrap().clone();
    let flood_lines = log
        .iter()
        .filter(|l| l.contains("client_id=flood-") && l.contains("second CONNECT"))
        .count();
    let summary = log
        .iter()
        .find(|l| l.contains("refusal log lines suppressed"))
        .unwrap_or_else(|| panic!("no summary of suppressed lines; log:\n{}", log.join("\n")));
    println!("{flood_lines} of {FLOOD} flood refusals logged; {summary}; then {after}");
    // Every refusal is logged once or counted once: the summaries (all reported by now: a
    // summary precedes the first line of a second) and the refusal lines add up to the
    // refusals provoked.
    let suppressed: usize = log
        .iter()
        .filter_map(|l| l.split("suppressed=").nth(1))
        .map(|n| n.trim().parse::<usize>().expect("suppressed count"))
        .sum();
    let logged = log
        .iter()
        .filter(|l| {
            l.contains("connection closed") || l.contains("refused: ") || l.contains("closing: ")
        })
        .count();
    assert_eq!(
        logged + suppressed,
        5 + FLOOD + attempts + 1,
        "refusal lines {logged} + suppressed {suppressed}"
    );
    assert!(
        flood_lines >= 1,
        "the first refusals of the flood must be logged"
    );
    assert!(
        flood_lines < FLOOD,
        "all {FLOOD} flood refusals were logged: the limiter did not limit"
    );
    assert!(summary.contains("suppressed="), "{summary}");

    // The broker still serves clients.
    let mut opts = ConnectOpts::v311("log-ok");
    opts.username = Some("alice".into());
    opts.password = Some(b"alice-pw".to_vec());
    let (mut c, _) = Raw::connect(addr, &opts).await;
    assert!(c.ping().await.is_empty());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 14 item 6: a PUBLISH the ACL denies was logged only at debug level and without the
/// peer. It is a refusal like the others: logged at info through the limiter, with the client
/// id, the username, the peer and the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denied_publish_logged_with_client_user_peer_and_topic() {
    let dir = scratch("acl-publish");
    let passwd = passwd_file(&dir);
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic read secret/#\ntopic readwrite public/#\n",
    )
    .unwrap();
    let mut broker = Starling::start(
        &dir,
        &format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
             [auth]\npassword_file = {passwd:?}\nacl_file = {acl:?}\n\
             [persistence]\nenabled = false\n\
             [sys]\ninterval = \"0s\"\n\
             [log]\nlevel = \"info\"\n"
        ),
    )
    .await;
    let mut opts = ConnectOpts::v311("log-acl");
    opts.username = Some("alice".into());
    opts.password = Some(b"alice-pw".to_vec());
    let (mut c, _) = Raw::connect(broker.addr, &opts).await;
    let peer = c.stream.local_addr().unwrap();
    c.send(&publish_packet("secret/plans", b"x", 0, false, false, 0))
        .await;
    broker
        .assert_refusal_logged(
            "log-acl",
            peer,
            &[
                "publish denied by the ACL",
                "username=\"alice\"",
                "topic=secret/plans",
            ],
        )
        .await;
    // The connection stays up (3.1.1 has no way to refuse a QoS 0 PUBLISH).
    assert!(c.ping().await.is_empty());
}

/// h12 LOW-1: a WebSocket client whose first frame breaks the protocol (a TEXT frame, which
/// MQTT over WebSocket does not allow [MQTT-6.0.0-1]) was closed with no log line at all. It
/// is logged through the limiter with the peer and the stream's error, and the client gets its
/// close frame; a peer that simply goes away before CONNECT is not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stream_error_before_connect_is_logged_with_the_peer() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let dir = scratch("ws-first-frame");
    let mut broker = Starling::start(
        &dir,
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n\
         [persistence]\nenabled = false\n\
         [sys]\ninterval = \"0s\"\n\
         [log]\nlevel = \"info\"\n",
    )
    .await;
    let addr = broker.addr;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let peer = stream.local_addr().unwrap();
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.send(Message::Text("hello".into())).await.unwrap();
    let line = broker
        .wait_line("for the stream error", |l| {
            l.contains("stream error before CONNECT")
        })
        .await;
    assert!(
        line.contains(&format!("peer={peer}")),
        "peer {peer}: {line}"
    );
    // And the close frame RFC 6455 7.1.7 asks for: 1003, as after CONNECT.
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(frame.code, CloseCode::Unsupported)
        }
        other => panic!("expected a close frame with 1003, got {other:?}"),
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
