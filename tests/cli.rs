//! End-to-end tests of the `starling` command line: exit codes, `check-config` output, broker
//! runs stopped by SIGTERM and SIGINT, and the connect / disconnect log lines.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ConnectOpts, DISCONNECT};

fn starling() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// A scratch directory unique to this test process and test name.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let path = scratch(name).join("starling.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run starling")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_prints_effective_config() {
    let path = write_config(
        "check-ok",
        "[mqtt]\nconnect_timeout = \"200ms\"\nmax_inflight = 5\n",
    );
    let o = output(starling().arg("check-config").arg(&path));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("connect_timeout = \"200ms\""), "{out}");
    assert!(out.contains("max_inflight = 5"), "{out}");
    assert!(out.contains("bind = \"127.0.0.1:1883\""), "{out}");
    assert!(out.contains("level = \"info\""), "{out}");
    // The printed configuration is itself a valid configuration with the same meaning.
    let again = write_config("check-ok-again", &out);
    let o2 = output(starling().arg("check-config").arg(&again));
    assert_eq!(o2.status.code(), Some(0), "stderr: {}", stderr(&o2));
    assert_eq!(stdout(&o2), out);
}

/// Issue 16: `check-config` prints each listener's effective auth, resolved, saying where each
/// value comes from (the listener's own key, `[auth]`, or none set), relative paths resolved
/// against the configuration file; a listener file that does not load is an error naming the
/// listener and its address.
#[test]
fn check_config_prints_each_listeners_auth() {
    let dir = scratch("per-listener-auth");
    std::fs::write(dir.join("passwd"), "").unwrap();
    std::fs::write(dir.join("public.acl"), "topic read pub/#\n").unwrap();
    let text = "[auth]\npassword_file = \"passwd\"\n\
                [[listeners]]\nbind = \"127.0.0.1:1883\"\nallow_anonymous = true\n\
                [[listeners]]\nbind = \"0.0.0.0:1884\"\nacl_file = \"public.acl\"\n";
    let path = dir.join("starling.toml");
    std::fs::write(&path, text).unwrap();
    let o = output(starling().arg("check-config").arg(&path));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let d = dir.display();
    let expected = format!(
        "# effective auth per listener:\n\
         #   listeners[0] (mqtt 127.0.0.1:1883): allow_anonymous = true (listener), \
         password_file = \"{d}/passwd\" (from [auth]), acl_file = none (default)\n\
         #   listeners[1] (mqtt 0.0.0.0:1884): allow_anonymous = false (from [auth]), \
         password_file = \"{d}/passwd\" (from [auth]), acl_file = \"{d}/public.acl\" (listener)\n"
    );
    assert!(out.contains(&expected), "want\n{expected}\nin\n{out}");
    assert!(
        out.contains("# listeners[1].allow_anonymous is not set: auth.allow_anonymous applies"),
        "{out}"
    );

    std::fs::remove_file(dir.join("public.acl")).unwrap();
    let o = output(starling().arg("check-config").arg(&path));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("listeners[1].acl_file (bind 0.0.0.0:1884)") && err.contains("public.acl"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_shipped_example() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/starling.toml");
    let o = output(starling().arg("check-config").arg(&example));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
}

#[test]
fn check_config_rejects_bad_value_naming_the_key() {
    let path = write_config("check-bad", "[mqtt]\nmax_packet_size = 0\n");
    let o = output(starling().arg("check-config").arg(&path));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("mqtt.max_packet_size"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_config_rejects_unknown_key_naming_it() {
    let path = write_config("check-unknown", "[mqtt]\nmax_inflite = 3\n");
    let o = output(starling().arg("check-config").arg(&path));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("max_inflite"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn check_config_missing_file_exits_1() {
    let o = output(starling().args(["check-config", "/nonexistent/starling.toml"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/starling.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        output(starling().arg("check-config")).status.code(),
        Some(2)
    );
    assert_eq!(
        output(starling().arg("--no-such-flag")).status.code(),
        Some(2)
    );
    assert_eq!(output(starling().arg("frobnicate")).status.code(), Some(2));
    assert_eq!(output(starling().args(["passwd"])).status.code(), Some(2));
}

/// Every command line the binary accepts, as the words before `--help` / `--version`.
const SUBCOMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["check-config"],
    &["passwd"],
    &["store"],
    &["store", "check"],
    &["store", "dump"],
    &["store", "reset"],
];

/// `--version` and `--help` work (exit 0, on stdout) for every subcommand, and `--help` is the
/// subcommand's own: its usage line names it.
#[test]
fn version_and_help_work_everywhere() {
    let version = env!("CARGO_PKG_VERSION");
    for sub in SUBCOMMANDS {
        let args = [sub, &["--version"][..]].concat();
        let o = output(starling().args(&args));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains(version), "{args:?}: {}", stdout(&o));

        let args = [sub, &["--help"][..]].concat();
        let o = output(starling().args(&args));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let usage = ["Usage: starling"]
            .into_iter()
            .chain(sub.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            stdout(&o).contains(&usage),
            "{args:?}: want {usage:?} in {}",
            stdout(&o)
        );
    }
}

#[test]
fn run_with_bad_config_exits_1() {
    let path = write_config("run-bad", "[mqtt]\nkeepalive_factor = 0.5\n");
    let o = output(starling().arg("--config").arg(&path));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("mqtt.keepalive_factor"),
        "{}",
        stderr(&o)
    );
}

/// A broker process run from a scratch config with its own working directory (it persists to
/// `data` there by default, so parallel runs never contend for the store's lock), with its
/// stderr collected line by line. Killed on drop if still running.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl Running {
    /// Starts `starling ARGS CONFIG` and waits for its "listening on" line.
    fn start(name: &str, args: &[&str]) -> Running {
        let path = write_config(
            name,
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n",
        );
        let dir = path
            .parent()
            .expect("config has a parent dir")
            .to_path_buf();
        let mut child = starling()
            .current_dir(&dir)
            .args(args)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn starling");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut all = sink.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let mut run = Running {
            child,
            lines,
            log,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        let line = run.wait_line("listening on", |l| l.contains("listening on "));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        run.addr = addr.parse().expect("address in log line");
        assert_ne!(run.addr.port(), 0);
        run
    }

    /// The next stderr line satisfying `pred`, within 20 s.
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line {what}; stderr:\n{}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, name: &str) {
        let kill = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
    }

    /// Waits (20 s at most) for the process to exit; returns its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for starling") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "starling did not exit within 20 s; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens a TCP connection and completes CONNECT / CONNACK (accepted).
    fn mqtt_connect(&self, opts: &ConnectOpts) -> TcpStream {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .expect("connect to listener");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&opts.encode()).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).expect("CONNACK");
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
        s
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Reads until EOF (bounded by the socket's read timeout); panics on data or timeout.
fn expect_eof(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: got {n} bytes instead of the close"),
        Err(e) => panic!("{what}: no close: {e}"),
    }
}

/// Starts the broker with `args`, connects to its address, then sends SIGTERM and expects a
/// clean exit 0.
fn run_until_sigterm(name: &str, args: &[&str]) {
    let mut run = Running::start(name, args);
    TcpStream::connect_timeout(&run.addr, Duration::from_secs(5)).expect("connect to listener");
    run.signal("TERM");
    let code = run.exit_code();
    let log = run.log();
    assert_eq!(code, Some(0), "stderr: {log}");
    assert!(log.contains("open file limit"), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn run_subcommand_stops_cleanly_on_sigterm() {
    run_until_sigterm("run-sub", &["run", "--config"]);
}

#[test]
fn default_command_stops_cleanly_on_sigterm() {
    run_until_sigterm("run-default", &["--config"]);
}

/// SIGINT is a graceful shutdown too: the broker closes a connected MQTT client's connection
/// itself (its log says so, before "shutdown complete"; an exiting process would close the
/// socket as well, so the EOF alone proves nothing) and exits 0.
#[test]
fn sigint_closes_connections_and_exits_0() {
    let mut run = Running::start("sigint", &["--config"]);
    let mut c = run.mqtt_connect(&ConnectOpts::v311("cli-sigint"));
    run.wait_line("for the CONNECT", |l| {
        l.contains("client connected") && l.contains("client_id=cli-sigint")
    });
    run.signal("INT");
    expect_eof(&mut c, "connected client after SIGINT");
    let code = run.exit_code();
    let log = run.log();
    assert_eq!(code, Some(0), "stderr: {log}");
    assert!(log.contains("SIGINT received"), "{log}");
    let closed = log
        .find("reason=server shutting down")
        .unwrap_or_else(|| panic!("no close line for the client: {log}"));
    let complete = log
        .find("shutdown complete")
        .unwrap_or_else(|| panic!("no 'shutdown complete': {log}"));
    assert!(
        closed < complete,
        "connection closed after shutdown completed?\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("reason=server shutting down"))
        .unwrap();
    assert!(line.contains("client_id=cli-sigint"), "{line}");
}

/// The connect and disconnect log lines of a normal session carry the client id, the peer
/// address, the protocol version and (for the disconnect) the reason, for a 3.1.1 client that
/// sends DISCONNECT and a 3.1 client that just drops the connection.
#[test]
fn connect_and_disconnect_log_lines_carry_id_peer_protocol_and_reason() {
    let mut run = Running::start("log-lines", &["--config"]);
    let cases = [
        (
            ConnectOpts::v311("log-311"),
            "3.1.1",
            true,
            "client sent DISCONNECT",
        ),
        (
            ConnectOpts::v31("log-31"),
            "3.1",
            false,
            "peer closed the connection",
        ),
    ];
    for (opts, protocol, disconnect, reason) in cases {
        let mut c = run.mqtt_connect(&opts);
        let id = format!("client_id={}", opts.client_id);
        let peer = format!("peer={}", c.local_addr().unwrap());
        let protocol = format!("protocol={protocol}");
        let line = run.wait_line(&format!("connect of {id}"), |l| {
            l.contains("client connected") && l.contains(&id)
        });
        for field in [&peer, &protocol] {
            assert!(
                line.contains(field.as_str()),
                "connect line lacks {field}: {line}"
            );
        }
        if disconnect {
            c.write_all(&DISCONNECT).unwrap();
            expect_eof(&mut c, "after DISCONNECT");
        } else {
            drop(c);
        }
        let line = run.wait_line(&format!("disconnect of {id}"), |l| {
            l.contains(&id) && !l.contains("client connected")
        });
        let reason = format!("reason={reason}");
        for field in [&peer, &protocol, &reason] {
            assert!(
                line.contains(field.as_str()),
                "disconnect line lacks {field}: {line}"
            );
        }
    }
    run.signal("TERM");
    assert_eq!(run.exit_code(), Some(0), "stderr: {}", run.log());
}
