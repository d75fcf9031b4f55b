//! Syslog and journald destinations of the real `starling` binary.
//!
//! Syslog: the test plays the syslog daemon, a datagram socket in a temporary directory that
//! `[log] syslog_socket` points at, and parses what arrives: `<PRI>` with the configured
//! facility and the level's severity, the ident `starling[PID]`, and the message text. A
//! daemon that stops reading (its socket queue full) must not stop clients being served: the
//! lines that do not fit the syslog writer's queue are dropped and counted, while the log file
//! configured beside it, a queue of its own, keeps every line.
//!
//! Journald: tried where the machine has journald's socket and `journalctl`; elsewhere the test
//! says it skipped (the issue asks for journald "where the machine allows it"), after checking
//! that asking for journald without it stops the start with a clear message.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long a wait for a log line lasts before the test fails.
const LOG_WAIT: Duration = Duration::from_secs(15);

/// journald's native-protocol socket.
const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// The broker process; killed on drop.
struct Broker {
    child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration with `log` as its `[log]` table into `dir` and starts the broker on
/// it, stderr piped (for the tests that read it).
fn spawn(dir: &Path, log: &str) -> Broker {
    let path = dir.join("starling.toml");
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n[metrics]\nbind = \"127.0.0.1:0\"\n\n\
         [persistence]\nenabled = false\n\n[mqtt]\nmax_client_id_length = 65535\n\n[log]\n{log}"
    );
    std::fs::write(&path, config).unwrap();
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .env_remove("RUST_LOG")
        .current_dir(&cwd)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    Broker { child }
}

/// The syslog daemon's end: a datagram socket at `dir/log.sock`.
fn daemon(dir: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(dir.join("log.sock")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket
}

/// Receives datagrams until one satisfies `want`, up to [`LOG_WAIT`]; returns it.
fn recv_until(socket: &UnixDatagram, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    let mut buf = vec![0u8; 65_536];
    loop {
        assert!(Instant::now() < deadline, "no datagram with {what}");
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if want(&text) {
            return text;
        }
    }
}

/// A syslog message as RFC 3164 frames it over /dev/log: `<PRI>Mmm dd hh:mm:ss ident[pid]: msg`.
struct Message {
    priority: u8,
    ident: String,
    pid: u32,
    text: String,
}

fn parse(datagram: &str) -> Message {
    let rest = datagram
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("no <PRI>: {datagram}"));
    let (priority, rest) = rest.split_once('>').expect("<PRI>");
    // "Dec  2 13:45:01 " is 16 bytes: month, day (space-padded), time.
    let (stamp, rest) = rest.split_at(16);
    let fields: Vec<&str> = stamp.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "timestamp {stamp:?} in {datagram}");
    assert_eq!(fields[2].split(':').count(), 3, "time in {datagram}");
    let (tag, text) = rest.split_once(": ").expect("ident[pid]: ");
    let (ident, pid) = tag.split_once('[').expect("ident[pid]");
    Message {
        priority: priority.parse().expect("numeric priority"),
        ident: ident.to_owned(),
        pid: pid.trim_end_matches(']').parse().expect("numeric pid"),
        text: text.to_owned(),
    }
}

fn addr_after(text: &str, marker: &str) -> SocketAddr {
    let rest = text.split(marker).nth(1).expect("marker in log");
    let addr = rest.split(['/', ' ', '"']).next().unwrap_or(rest).trim();
    addr.parse().expect("an address in the log line")
}

#[tokio::test]
async fn syslog_gets_each_line_with_facility_severity_and_ident() {
    let dir = tempfile::tempdir().unwrap();
    let syslogd = daemon(dir.path());
    // A relative socket path is relative to the configuration file, like every file key.
    let log = "syslog = true\nsyslog_facility = \"local3\"\nsyslog_socket = \"../log.sock\"\n";
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    let mut broker = spawn(&dir.path().join("etc"), log);
    let listening = recv_until(&syslogd, "the listener's address", |t| {
        t.contains("listening on ")
    });
    let mqtt = addr_after(&listening, "listening on ");

    let mut c = Raw::connect_v311(mqtt, "syslog-probe").await;
    c.send(&DISCONNECT).await;
    let line = tokio::task::spawn_blocking(move || {
        let line = recv_until(&syslogd, "the client's CONNECT", |t| {
            t.contains("client connected") && t.contains("syslog-probe")
        });
        (line, syslogd)
    });
    let (line, syslogd) = line.await.unwrap();
    let m = parse(&line);
    // local3 is facility 19, info is severity 6: 19 * 8 + 6.
    assert_eq!(m.priority, 158, "{line}");
    assert_eq!(m.ident, "starling", "{line}");
    assert_eq!(m.pid, broker.child.id(), "{line}");
    assert!(m.text.contains("client connected"), "{line}");
    assert!(m.text.contains("client_id=syslog-probe"), "{line}");
    assert!(m.text.contains("peer=127.0.0.1:"), "{line}");
    assert!(!line.contains('\n'), "one line per message: {line:?}");

    // syslog replaces stderr (as Mosquitto's log_dest does): nothing was written there.
    let disconnected = recv_until(&syslogd, "the client's DISCONNECT", |t| {
        t.contains("client disconnected") && t.contains("syslog-probe")
    });
    assert_eq!(parse(&disconnected).priority, 158);
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = broker.child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap();
    }
    assert!(!stderr.contains("client connected"), "{stderr}");
}

/// Polls `path` until `done` holds for its contents, up to [`LOG_WAIT`].
fn wait_for_file(
    broker: &mut Broker,
    path: &Path,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("broker exited ({status}) waiting for {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
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
async fn a_syslog_daemon_that_stops_reading_never_stops_clients_being_served() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and never read: its queue (net.unix.max_dgram_qlen datagrams) fills at once.
    let _syslogd = daemon(dir.path());
    let log = "level = \"debug\"\nfile = \"broker.log\"\nsyslog = true\n\
               syslog_socket = \"log.sock\"\n";
    let mut broker = spawn(dir.path(), log);
    let file: PathBuf = dir.path().join("broker.log");
    let text = wait_for_file(&mut broker, &file, "both ports", |t| {
        t.contains("listening on ") && t.contains("serving metrics at http://")
    });
    let mqtt = addr_after(&text, "listening on ");
    let metrics = addr_after(&text, "serving metrics at http://");

    let mut sub = Raw::connect_v311(mqtt, "watcher").await;
    sub.subscribe(1, "flood/#", 1).await;
    // Each client logs its CONNECT and DISCONNECT (and more at debug): far more lines than the
    // syslog writer's queue (`logging::LOG_QUEUE_LINES`) holds once the daemon stops reading.
    for i in 0..1500u32 {
        let id = format!("{i:05}-{}", "x".repeat(500));
        let mut c = Raw::connect(mqtt, &ConnectOpts::v311(&id)).await.0;
        c.publish("flood/t", &i.to_be_bytes(), 1, false, 1).await;
        let p = tokio::time::timeout(WAIT, sub.recv_and_ack())
            .await
            .unwrap_or_else(|_| panic!("client {i}: its message was not delivered in time"));
        assert_eq!(&p.payload[..], &i.to_be_bytes()[..]);
        c.send(&DISCONNECT).await;
    }
    let mut probe = Raw::connect_v311(mqtt, "probe").await;
    probe.publish("flood/end", b"end", 1, false, 2).await;
    assert_eq!(&sub.recv_and_ack().await.payload[..], b"end");
    let dropped = scrape(metrics, "starling_log_lines_dropped_total");
    assert!(
        dropped > 0,
        "no log line was dropped: the test did not stall syslog"
    );
    // The file has a queue of its own: the stalled daemon did not starve it.
    wait_for_file(&mut broker, &file, "the probe's line in the file", |t| {
        t.contains("client connected") && t.contains("client_id=probe")
    });
    eprintln!("log lines dropped while syslog was stalled: {dropped}");
}

#[test]
fn a_missing_syslog_socket_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = spawn(
        dir.path(),
        "syslog = true\nsyslog_socket = \"nowhere.sock\"\n",
    );
    let status = broker.child.wait().unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = broker.child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap();
    }
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("log.syslog_socket"), "{stderr}");
    assert!(stderr.contains("nowhere.sock"), "{stderr}");
}

/// Writes a note `libtest` does not capture, as tests/common/skip.rs does, but without failing
/// under STARLING_INTEROP=1: journald is asked for only where the machine has it.
fn skip_visibly(why: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED (counted as passed): journald_gets_the_lines: {why}; the issue asks for \
         journald only where the machine allows it, so this is not a failure even with \
         STARLING_INTEROP=1"
    );
}

#[tokio::test]
async fn journald_gets_the_lines_where_the_machine_has_it() {
    let dir = tempfile::tempdir().unwrap();
    if !Path::new(JOURNALD_SOCKET).exists() {
        // Asked for without it, the broker does not start, and says why.
        let mut broker = spawn(dir.path(), "journald = true\n");
        let status = broker.child.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut pipe) = broker.child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains("log.journald"), "{stderr}");
        assert!(stderr.contains(JOURNALD_SOCKET), "{stderr}");
        skip_visibly(&format!(
            "no journald socket at {JOURNALD_SOCKET} (systemd-journald is not running here)"
        ));
        return;
    }
    if Command::new("journalctl")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_visibly("journalctl is not installed, so the journal cannot be read back");
        return;
    }
    let mut broker = spawn(dir.path(), "journald = true\nstderr = true\n");
    let mut stderr = std::io::BufReader::new(broker.child.stderr.take().unwrap());
    let mqtt = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0);
            assert!(n > 0, "broker exited before listening");
            if line.contains("listening on ") {
                return addr_after(&line, "listening on ");
            }
        }
    })
    .await
    .unwrap();
    let id = format!("journald-{}", std::process::id());
    let mut c = Raw::connect_v311(mqtt, &id).await;
    c.send(&DISCONNECT).await;
    let pid = broker.child.id();
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let out = Command::new("journalctl")
            .args(["--no-pager", "-o", "cat"])
            .arg(format!("_PID={pid}"))
            .arg(format!("CLIENT_ID={id}"))
            .output()
            .expect("run journalctl");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("client connected") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no journal entry for {id}: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
