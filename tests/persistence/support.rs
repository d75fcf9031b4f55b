//! Support for `tests/persistence.rs`: the `starling` binary as a child process (config file,
//! readiness on its "listening on" log line, SIGKILL, RSS), a raw MQTT client that encodes and
//! decodes whole packets with `starling::codec`, and a QoS-aware subscriber that keeps its own
//! session state (the QoS 2 receiver's packet ids) across reconnects, as a real client would.
//!
//! Every wait is bounded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use starling::codec::{
    self, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// A store directory (and config file) removed on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!(
            "starling-persistence-{tag}-{}-",
            std::process::id()
        ))
        .tempdir()
        .expect("create a temp dir")
}

/// A port that was free a moment ago (bound on 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Writes a broker config with persistence on and returns its path. `extra` is appended (TOML
/// sections such as `[mqtt]`).
pub fn write_config(dir: &Path, name: &str, port: u16, store: &Path, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\n\n[sys]\ninterval = \"0s\"\n\n\
         [log]\nlevel = \"info\"\n\n[persistence]\nenabled = true\ndir = {:?}\n\n{extra}\n",
        store.display().to_string()
    );
    std::fs::write(&path, text).expect("write the config file");
    path
}

// ---------------------------------------------------------------------------------------------
// The broker binary
// ---------------------------------------------------------------------------------------------

/// The `starling` binary running with a config file; SIGKILLed on drop.
pub struct BrokerProc {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl BrokerProc {
    /// Starts the binary and waits (bounded) for its "listening on" log line.
    pub async fn start(config: &Path, port: u16) -> BrokerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the starling binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let want = format!("listening on 127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(l)) if l.contains(&want) => break,
                Ok(Some(_)) => {}
                Ok(None) => {
                    let status = child.wait().ok();
                    panic!(
                        "the broker exited ({status:?}) before listening\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no {want:?} within 30 s\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }
        BrokerProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` (or another `/proc/PID/status` field) in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// SIGKILL (what `Child::kill` sends on unix), then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the killed broker");
        assert!(
            !status.success(),
            "the broker exited normally instead of being killed"
        );
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log lines at WARN or ERROR.
    pub fn warnings(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .cloned()
            .collect()
    }

    /// The log line containing `what`, if any.
    pub fn line_with(&self, what: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(what))
            .cloned()
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// What a bounded read produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Recv {
    Packet(Packet),
    /// EOF or a socket error (a crashed broker).
    Closed(String),
    Timeout,
}

/// A raw MQTT client: packets are encoded and decoded by `starling::codec`. Writes are buffered
/// with [`Client::queue`] and sent with [`Client::flush`], so a publisher can pipeline a window.
pub struct Client {
    pub name: String,
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    pub version: ProtocolVersion,
}

pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean: bool,
    expiry: Option<u32>,
) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 0,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: expiry,
            ..Properties::default()
        },
        bridge: false,
    }
}

pub fn publish_packet(topic: &str, payload: Bytes, qos: QoS, pid: u16, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_owned().into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        properties: Default::default(),
        payload,
    })
}

impl Client {
    /// Connects and returns the CONNACK; Err when the TCP connection or the CONNECT fails.
    pub async fn connect(addr: SocketAddr, c: Connect) -> Result<(Client, ConnAck), String> {
        let name = c.client_id.clone();
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{name}: TCP connect timed out"))?
            .map_err(|e| format!("{name}: TCP connect: {e}"))?;
        stream.set_nodelay(true).unwrap();
        let mut cl = Client {
            name: name.clone(),
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
            version: c.protocol,
        };
        cl.send(&Packet::Connect(Box::new(c)))
            .await
            .map_err(|e| format!("{name}: send CONNECT: {e}"))?;
        match cl.recv(WAIT).await {
            Recv::Packet(Packet::ConnAck(ack)) => Ok((cl, ack)),
            other => Err(format!("{name}: expected CONNACK, got {other:?}")),
        }
    }

    /// Connects and asserts CONNACK success.
    pub async fn connect_ok(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
        let (cl, ack) = Client::connect(addr, c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ack.code,
            ReasonCode::SUCCESS,
            "{}: CONNACK refused: {ack:?}",
            cl.name
        );
        (cl, ack)
    }

    /// Encodes `p` into the write buffer.
    pub fn queue(&mut self, p: &Packet) {
        codec::encode(p, self.version, &mut self.out);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        tokio::time::timeout(WAIT, self.stream.write_all(&out))
            .await
            .map_err(|_| std::io::Error::other("write timed out"))?
    }

    pub async fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        self.queue(p);
        self.flush().await
    }

    /// The next packet, a close, or a timeout after `d`.
    pub async fn recv(&mut self, d: Duration) -> Recv {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match codec::decode(&mut self.buf, self.version, u32::MAX) {
                Ok(Some(p)) => return Recv::Packet(p),
                Ok(None) => {}
                Err(e) => panic!("{}: the broker sent an undecodable packet: {e}", self.name),
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) => return Recv::Closed("EOF".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Recv::Closed(e.to_string()),
            }
        }
    }

    /// The next packet; panics on a timeout or a close.
    pub async fn next(&mut self) -> Packet {
        match self.recv(WAIT).await {
            Recv::Packet(p) => p,
            other => panic!("{}: expected a packet, got {other:?}", self.name),
        }
    }

    /// SUBSCRIBE one filter; asserts the granted QoS.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(filter.to_owned(), SubscriptionOptions::new(qos))],
            properties: Default::default(),
        }))
        .await
        .expect("send SUBSCRIBE");
        match self.next().await {
            Packet::SubAck(s) => assert_eq!(
                s.reasons,
                vec![ReasonCode(qos as u8)],
                "{}: SUBACK for {filter}",
                self.name
            ),
            other => panic!("{}: expected SUBACK, got {other:?}", self.name),
        }
    }

    /// Publishes one message (packet id 1) and completes its QoS flow.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.publish_full(topic, payload, qos, retain, 1).await;
    }

    /// Publishes one message under `pid` (not retained) and completes its QoS flow.
    pub async fn publish_with_id(&mut self, topic: &str, payload: &[u8], qos: QoS, pid: u16) {
        self.publish_full(topic, payload, qos, false, pid).await;
    }

    async fn publish_full(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        pid: u16,
    ) {
        self.send(&publish_packet(
            topic,
            Bytes::copy_from_slice(payload),
            qos,
            pid,
            retain,
        ))
        .await
        .expect("send PUBLISH");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.next().await {
                Packet::PubAck(a) if a.packet_id == pid && a.reason == ReasonCode::SUCCESS => {}
                other => panic!("{}: expected PUBACK, got {other:?}", self.name),
            },
            QoS::ExactlyOnce => {
                match self.next().await {
                    Packet::PubRec(a) if a.packet_id == pid && a.reason == ReasonCode::SUCCESS => {}
                    other => panic!("{}: expected PUBREC, got {other:?}", self.name),
                }
                self.send(&Packet::PubRel(PubResp::new(pid)))
                    .await
                    .expect("send PUBREL");
                match self.next().await {
                    Packet::PubComp(a) if a.packet_id == pid => {}
                    other => panic!("{}: expected PUBCOMP, got {other:?}", self.name),
                }
            }
        }
    }

    /// Sends DISCONNECT and waits (bounded) for the broker to close the connection.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await
        .expect("send DISCONNECT");
        loop {
            match self.recv(WAIT).await {
                Recv::Closed(_) => return,
                Recv::Packet(_) => {}
                Recv::Timeout => panic!("{}: still open after DISCONNECT", self.name),
            }
        }
    }

    /// PINGREQ → PINGRESP: every packet sent before the PINGRESP is returned, in order.
    pub async fn ping(&mut self) -> Vec<Packet> {
        self.send(&Packet::PingReq).await.expect("send PINGREQ");
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Packet::PingResp => return before,
                p => before.push(p),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sequence-numbered payloads
// ---------------------------------------------------------------------------------------------

/// A payload carrying `seq`, padded to `len` bytes.
pub fn seq_payload(seq: u64, len: usize) -> Bytes {
    let mut v = format!("{seq:020}").into_bytes();
    v.resize(len.max(20), b'.');
    Bytes::from(v)
}

pub fn payload_seq(p: &[u8]) -> u64 {
    std::str::from_utf8(&p[..20.min(p.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("payload without a sequence number: {p:?}"))
}

// ---------------------------------------------------------------------------------------------
// Subscriber
// ---------------------------------------------------------------------------------------------

/// A subscriber that keeps its client-side session state across connections: for QoS 2 the
/// packet ids it has PUBREC'd and not yet seen PUBREL for (a PUBLISH with such an id is the
/// same message again and is not delivered twice [MQTT-4.3.3]).
pub struct Subscriber {
    pub id: String,
    pub version: ProtocolVersion,
    pub qos2_pending: HashSet<u16>,
    /// Deliveries to the application, in arrival order.
    pub delivered: Vec<u64>,
    /// PUBLISH packets received with DUP=1.
    pub dup_flagged: u64,
    /// PUBLISH packets not delivered because their QoS 2 packet id was pending.
    pub qos2_redelivered: u64,
}

/// Why a drain stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainEnd {
    Quiet,
    Closed(String),
    Limit,
    Done,
}

impl Subscriber {
    pub fn new(id: &str, version: ProtocolVersion) -> Subscriber {
        Subscriber {
            id: id.to_owned(),
            version,
            qos2_pending: HashSet::new(),
            delivered: Vec::new(),
            dup_flagged: 0,
            qos2_redelivered: 0,
        }
    }

    /// Connects with clean session 0 (v5: Clean Start 0, Session Expiry `expiry`).
    pub async fn connect(&self, addr: SocketAddr, expiry: Option<u32>) -> (Client, ConnAck) {
        Client::connect_ok(addr, connect_packet(self.version, &self.id, false, expiry)).await
    }

    /// Receives and acknowledges until `quiet` passes without a packet, the connection closes,
    /// `want` deliveries have been made in total, or `limit` passes. `ack_delay` makes a slow
    /// consumer (a pause before each acknowledgement).
    pub async fn drain(
        &mut self,
        cl: &mut Client,
        quiet: Duration,
        limit: Duration,
        ack_delay: Option<Duration>,
        want: Option<usize>,
    ) -> DrainEnd {
        let end = Instant::now() + limit;
        loop {
            if want.is_some_and(|w| self.delivered.len() >= w) {
                return DrainEnd::Done;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return DrainEnd::Limit;
            }
            let p = match cl.recv(quiet.min(left)).await {
                Recv::Packet(p) => p,
                Recv::Closed(why) => return DrainEnd::Closed(why),
                Recv::Timeout if left <= quiet => return DrainEnd::Limit,
                Recv::Timeout => return DrainEnd::Quiet,
            };
            let ack = match p {
                Packet::Publish(p) => {
                    if p.dup {
                        self.dup_flagged += 1;
                    }
                    let seq = payload_seq(&p.payload);
                    match p.qos {
                        QoS::AtMostOnce => {
                            self.delivered.push(seq);
                            None
                        }
                        QoS::AtLeastOnce => {
                            self.delivered.push(seq);
                            Some(Packet::PubAck(PubResp::new(p.packet_id)))
                        }
                        QoS::ExactlyOnce => {
                            if self.qos2_pending.insert(p.packet_id) {
                                self.delivered.push(seq);
                            } else {
                                self.qos2_redelivered += 1;
                            }
                            Some(Packet::PubRec(PubResp::new(p.packet_id)))
                        }
                    }
                }
                Packet::PubRel(r) => {
                    self.qos2_pending.remove(&r.packet_id);
                    Some(Packet::PubComp(PubResp::new(r.packet_id)))
                }
                other => panic!("{}: unexpected {other:?}", self.id),
            };
            if let Some(ack) = ack {
                if let Some(d) = ack_delay {
                    tokio::time::sleep(d).await;
                }
                if let Err(e) = cl.send(&ack).await {
                    return DrainEnd::Closed(e.to_string());
                }
            }
        }
    }

    /// seq → number of deliveries.
    pub fn counts(&self) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for s in &self.delivered {
            *m.entry(*s).or_insert(0) += 1;
        }
        m
    }
}
