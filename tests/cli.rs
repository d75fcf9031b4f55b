//! End-to-end tests of the `starling` command line: exit codes, `check-config` output, and a
//! broker run that is stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// Starts the broker with `args`, waits for its "listening on" line, connects to the address,
/// then sends SIGTERM and expects a clean exit 0.
fn run_until_sigterm(name: &str, args: &[&str]) {
    let path = write_config(
        name,
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n",
    );
    // The binary persists to `data` in its working directory by default; give each run its own
    // so parallel tests never contend for the store's lock.
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
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
        all
    });

    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no 'listening on' line; stderr: {}", reader.join().unwrap());
        }
    };
    let addr: SocketAddr = addr.parse().expect("address in log line");
    assert_ne!(addr.port(), 0);
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to listener");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for starling") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("starling did not exit within 20s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {log}");
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
