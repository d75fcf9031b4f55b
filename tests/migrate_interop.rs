//! `starling migrate` against the real thing (issue 16 acceptance): for four configurations,
//! with temporary ports and paths, Mosquitto is started from the Mosquitto file and Starling
//! from the file `starling migrate` wrote, and the same `mosquitto_pub` / `mosquitto_sub` round
//! trips must give the same outcomes on both: which ports answer, which logins are accepted or
//! refused, what the ACL lets through, the granted QoS, the payload limit and per-listener
//! authentication.
//!
//! Needs the Debian `mosquitto` and `mosquitto-clients` packages; skipped without them (a
//! failure under `STARLING_INTEROP=1`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/skip.rs"]
mod skip;

fn starling() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

fn have_tools() -> bool {
    let ok = ["mosquitto", "mosquitto_pub", "mosquitto_sub"]
        .iter()
        .all(|t| on_path(t));
    if !ok {
        skip::skip("mosquitto, mosquitto_pub or mosquitto_sub is not installed");
    }
    ok
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "starling-migrate-interop-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct free ports: every listener is held until all are picked, or the kernel may
/// hand the same port out twice.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A broker process, killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits until every port in `ports` accepts connections.
fn start(mut cmd: Command, ports: &[u16], log: &Path) -> Running {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports
        .iter()
        .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
    {
        if let Ok(Some(status)) = running.0.try_wait() {
            panic!(
                "{cmd:?} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{cmd:?} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// A client invocation: port, optional user and password, then tool-specific arguments.
struct Probe<'a> {
    port: u16,
    login: Option<(&'a str, &'a str)>,
}

impl Probe<'_> {
    fn cmd(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-V",
            "mqttv311",
        ]);
        if let Some((u, p)) = self.login {
            cmd.args(["-u", u, "-P", p]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Publishes a retained message at QoS 1: "ok" or "refused".
    fn publish(&self, topic: &str, payload: &str) -> String {
        let o = self
            .cmd("mosquitto_pub")
            .args(["-q", "1", "-r", "-t", topic, "-m", payload])
            .output()
            .unwrap();
        let verdict = if o.status.success() { "ok" } else { "refused" };
        format!("pub {topic}: {verdict}")
    }

    /// Subscribes at `qos` for a second: the granted QoS and the retained payload received,
    /// or "refused".
    fn subscribe(&self, filter: &str, qos: u8) -> String {
        let o = self
            .cmd("mosquitto_sub")
            .args([
                "-q",
                &qos.to_string(),
                "-t",
                filter,
                "-C",
                "1",
                "-W",
                "1",
                "-d",
            ])
            .args(["-F", "MSG %t %p"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let granted = out
            .lines()
            .find_map(|l| l.split_once("Subscribed (mid: 1): "));
        let Some((_, granted)) = granted else {
            return format!("sub {filter}: refused");
        };
        let msgs: Vec<&str> = out.lines().filter(|l| l.starts_with("MSG ")).collect();
        format!("sub {filter}: granted {granted}, got {msgs:?}")
    }
}

/// Writes `conf` (with `extra` lines only Mosquitto gets), migrates it, then runs `probes`
/// against Mosquitto and against Starling: both must give the same outcomes.
fn same_outcomes(dir: &Path, conf: &str, ports: &[u16], probes: &dyn Fn() -> Vec<String>) {
    let name = dir.display();
    let conf_path = dir.join("mosquitto.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let toml = dir.join("starling.toml");
    let o = starling()
        .arg("migrate")
        .arg(&conf_path)
        .arg("-o")
        .arg(&toml)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{name}: {stderr}");
    let run_conf = dir.join("mosquitto-run.conf");
    // `user root` keeps a root-run Mosquitto from switching to a user that cannot read the files.
    std::fs::write(&run_conf, format!("{conf}\nuser root\nlog_dest stderr\n")).unwrap();
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&run_conf);
    let mosquitto = {
        let _m = start(cmd, ports, &dir.join("mosquitto.log"));
        probes()
    };
    let mut cmd = starling();
    cmd.arg("--config").arg(&toml);
    let starling_out = {
        let _s = start(cmd, ports, &dir.join("starling.log"));
        probes()
    };
    assert_eq!(
        starling_out, mosquitto,
        "{name}: Starling (left) and Mosquitto (right) differ"
    );
}

fn write_auth_files(dir: &Path) {
    let o = starling()
        .args(["passwd", "-c", "-b"])
        .arg(dir.join("passwd"))
        .args(["alice", "secret"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        dir.join("acl"),
        "user alice\ntopic readwrite alice/#\ntopic read public/#\n",
    )
    .unwrap();
}

/// Passwords and an ACL on one loopback listener.
#[test]
fn passwords_and_acl_behave_the_same() {
    if !have_tools() {
        return;
    }
    let dir = scratch("auth");
    write_auth_files(&dir);
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwd\n\
         acl_file {d}/acl\npersistence false\n"
    );
    let alice = Probe {
        port,
        login: Some(("alice", "secret")),
    };
    let wrong = Probe {
        port,
        login: Some(("alice", "nope")),
    };
    let anon = Probe { port, login: None };
    same_outcomes(&dir, &conf, &[port], &|| {
        vec![
            anon.publish("public/a", "x"),
            wrong.publish("alice/t", "x"),
            alice.publish("alice/t", "mine"),
            alice.subscribe("alice/t", 1),
            alice.publish("public/t", "read-only for alice"),
            alice.subscribe("public/#", 1),
            anon.subscribe("alice/t", 1),
        ]
    });
}

/// max_qos and message_size_limit, anonymous access allowed.
#[test]
fn limits_behave_the_same() {
    if !have_tools() {
        return;
    }
    let dir = scratch("limits");
    let port = free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_qos 1\nmessage_size_limit 10\n\
         persistence false\n"
    );
    let anon = Probe { port, login: None };
    same_outcomes(&dir, &conf, &[port], &|| {
        vec![
            anon.publish("t/small", "12345"),
            anon.publish("t/big", "0123456789abcdef"),
            anon.subscribe("t/small", 2),
            anon.subscribe("t/big", 1),
        ]
    });
}

/// Two listeners and a password file, allow_anonymous not set (Mosquitto 2 then refuses
/// anonymous clients): the same ports answer, the same logins pass.
#[test]
fn listeners_and_default_anonymous_behave_the_same() {
    if !have_tools() {
        return;
    }
    let dir = scratch("listeners");
    write_auth_files(&dir);
    let [p1, p2, closed] = free_ports();
    let d = dir.display();
    let conf = format!(
        "listener {p1} 127.0.0.1\nlistener {p2} 127.0.0.1\npassword_file {d}/passwd\n\
         persistence false\n"
    );
    same_outcomes(&dir, &conf, &[p1, p2], &|| {
        let mut out = Vec::new();
        for port in [p1, p2, closed] {
            let alice = Probe {
                port,
                login: Some(("alice", "secret")),
            };
            let anon = Probe { port, login: None };
            out.push(format!("{port}: {}", alice.publish("alice/x", "1")));
            out.push(format!(
                "{port}: anonymous {}",
                anon.publish("alice/x", "1")
            ));
        }
        out
    });
}

/// `per_listener_settings true`: an anonymous loopback listener with no files next to one
/// with a password file and an ACL. The same clients get the same answers on each listener.
#[test]
fn per_listener_settings_behave_the_same() {
    if !have_tools() {
        return;
    }
    let dir = scratch("per-listener");
    write_auth_files(&dir);
    let [open, closed] = free_ports();
    let d = dir.display();
    let conf = format!(
        "per_listener_settings true\nlistener {open} 127.0.0.1\nallow_anonymous true\n\
         listener {closed} 127.0.0.1\npassword_file {d}/passwd\nacl_file {d}/acl\n\
         persistence false\n"
    );
    same_outcomes(&dir, &conf, &[open, closed], &|| {
        let mut out = Vec::new();
        for port in [open, closed] {
            let alice = Probe {
                port,
                login: Some(("alice", "secret")),
            };
            let anon = Probe { port, login: None };
            for line in [
                anon.publish("public/a", "anon"),
                alice.publish("alice/t", "mine"),
                alice.publish("other/t", "not hers"),
                alice.subscribe("alice/t", 1),
                alice.subscribe("public/a", 1),
                anon.subscribe("alice/t", 1),
            ] {
                out.push(format!("{port}: {line}"));
            }
        }
        out
    });
}
