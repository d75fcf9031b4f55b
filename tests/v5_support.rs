//! Helpers shared by the MQTT 5.0 conformance tests (`tests/v5_*.rs`), included by each of them
//! with `#[path = "v5_support.rs"] mod support;` (Cargo also builds this file as an empty test
//! target).
//!
//! - an in-process broker on an ephemeral port, shut down on drop;
//! - [`Client`], a raw MQTT client that encodes and decodes whole packets with
//!   `starling::codec`, so a test sees (and can send) every packet exactly, properties included;
//! - [`rumq`], a thin driver for the rumqttc 0.25 v5 client;
//! - helpers to run external clients (mosquitto, paho) with a bounded wait.
//!
//! Every wait is bounded by [`WAIT`]; negative checks wait [`QUIET`] and are always followed by a
//! positive marker in the tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use starling::broker::BrokerState;
use starling::codec::{
    self, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use starling::config::Config;
use starling::{Broker, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(5);
/// Bounded wait for "this does not happen" checks (always followed by a positive marker).
pub const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Broker
// ---------------------------------------------------------------------------------------------

/// Ephemeral loopback port, no `$SYS` publisher, short connect timeout.
pub fn config() -> Config {
    let mut cfg = Config::default();
    cfg.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    cfg.sys.interval = Duration::ZERO;
    cfg.mqtt.connect_timeout = Duration::from_secs(2);
    cfg
}

fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// A broker in this process; shut down when dropped.
pub struct TestBroker {
    handle: Option<BrokerHandle>,
    pub addr: SocketAddr,
}

pub async fn start() -> TestBroker {
    start_with(config()).await
}

pub async fn start_with(cfg: Config) -> TestBroker {
    init_tracing();
    let handle = Broker::start(cfg).await.expect("broker starts");
    let addr = handle.local_addrs()[0];
    TestBroker {
        handle: Some(handle),
        addr,
    }
}

impl TestBroker {
    pub fn state(&self) -> &Arc<BrokerState> {
        self.handle.as_ref().unwrap().state()
    }

    pub fn handle(&self) -> &BrokerHandle {
        self.handle.as_ref().unwrap()
    }

    /// Graceful shutdown; true when it finished within `limit`.
    pub async fn stop_within(mut self, limit: Duration) -> bool {
        let h = self.handle.take().unwrap();
        h.shutdown();
        tokio::time::timeout(limit, h.wait()).await.is_ok()
    }

    /// Waits (bounded) until `cond` holds on the broker state: for events only the broker sees
    /// (a session expired, a subscription registered by an external client).
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&BrokerState) -> bool) {
        let state = self.state().clone();
        let deadline = Instant::now() + WAIT;
        while !cond(&state) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        // A lock-order inversion inside a connection task only ends that task; make it fail
        // the test that ran it (debug builds check the lock hierarchy, see starling::sync).
        if !std::thread::panicking() {
            assert_eq!(
                starling::sync::inversions(),
                0,
                "the broker reported a lock-order inversion (see the panic message above)"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

/// A v5 CONNECT: clean start, keep alive 0, no properties.
pub fn connect_packet(client_id: &str) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
        bridge: false,
    }
}

/// A will message with the given properties.
pub fn will(topic: &str, payload: &[u8], qos: QoS, properties: Properties) -> Will {
    Will {
        topic: topic.to_owned(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain: false,
        properties,
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, pid: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned().into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        properties: Default::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::new(qos)
}

pub fn subscribe(pid: u16, filters: &[(&str, SubscriptionOptions)], props: Properties) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid,
        filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
        properties: props.into(),
    })
}

pub fn unsubscribe(pid: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid,
        filters: filters.iter().map(|f| f.to_string()).collect(),
        properties: Default::default(),
    })
}

pub fn puback(pid: u16, reason: ReasonCode) -> Packet {
    let mut r = PubResp::new(pid);
    r.reason = reason;
    Packet::PubAck(r)
}

/// Subscription identifier property block.
pub fn sub_id(id: u32) -> Properties {
    Properties {
        subscription_identifiers: vec![id],
        ..Default::default()
    }
}

pub fn encode(p: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    codec::encode(p, version, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// What a bounded read produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Recv {
    Packet(Packet),
    /// EOF or a socket error.
    Closed(String),
    Timeout,
}

/// A raw MQTT client: sends packets encoded by `starling::codec::encode` (or raw bytes) and
/// decodes what the broker sends with `starling::codec::decode`.
pub struct Client {
    pub name: String,
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
    /// Packets set aside by a selective wait, returned first by later reads.
    stash: VecDeque<Packet>,
    next_pid: u16,
}

impl Client {
    pub async fn open(addr: SocketAddr, name: &str) -> Client {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        Client {
            name: name.to_owned(),
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V5,
            stash: VecDeque::new(),
            next_pid: 1,
        }
    }

    /// Sends CONNECT and returns the CONNACK whatever its code.
    pub async fn connect_raw(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
        let name = if c.client_id.is_empty() {
            "<empty id>".to_owned()
        } else {
            c.client_id.clone()
        };
        let mut cl = Client::open(addr, &name).await;
        cl.version = c.protocol;
        cl.send(&Packet::Connect(Box::new(c))).await;
        match cl.recv(WAIT).await {
            Recv::Packet(Packet::ConnAck(ack)) => (cl, ack),
            other => panic!("{name}: expected CONNACK, got {other:?}"),
        }
    }

    /// Connects and asserts CONNACK 0x00.
    pub async fn connect_with(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
        let (cl, ack) = Client::connect_raw(addr, c).await;
        assert_eq!(
            ack.code,
            ReasonCode::SUCCESS,
            "{}: CONNACK {ack:?}",
            cl.name
        );
        (cl, ack)
    }

    /// A clean-start v5 client with keep alive 0.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        Client::connect_with(addr, connect_packet(client_id))
            .await
            .0
    }

    pub async fn send(&mut self, p: &Packet) {
        let bytes = encode(p, self.version);
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .expect("write timed out")
        .unwrap_or_else(|e| panic!("{}: write failed: {e}", self.name));
    }

    /// Sends, ignoring a socket error (for packets the broker may answer by closing).
    pub async fn try_send(&mut self, p: &Packet) {
        let bytes = encode(p, self.version);
        let _ = tokio::time::timeout(WAIT, self.stream.write_all(&bytes)).await;
    }

    /// The next packet, a close, or a timeout after `d`.
    pub async fn recv(&mut self, d: Duration) -> Recv {
        if let Some(p) = self.stash.pop_front() {
            return Recv::Packet(p);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match codec::decode(&mut self.buf, self.version, u32::MAX) {
                Ok(Some(p)) => return Recv::Packet(p),
                Ok(None) => {}
                Err(e) => panic!("{}: broker sent an undecodable packet: {e}", self.name),
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) => return Recv::Closed("EOF".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Recv::Closed(e.to_string()),
            }
        }
    }

    /// The next packet; panics on timeout or close.
    pub async fn next(&mut self) -> Packet {
        match self.recv(WAIT).await {
            Recv::Packet(p) => p,
            other => panic!("{}: expected a packet, got {other:?}", self.name),
        }
    }

    /// The next packet must be a PUBLISH.
    pub async fn next_publish(&mut self) -> Publish {
        match self.next().await {
            Packet::Publish(p) => p,
            other => panic!("{}: expected PUBLISH, got {other:?}", self.name),
        }
    }

    /// Receives a PUBLISH and acknowledges it if QoS 1 (QoS 2: PUBREC, PUBREL is answered by
    /// [`Client::ack_pubrel`]).
    pub async fn next_publish_acked(&mut self) -> Publish {
        let p = self.next_publish().await;
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await,
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubResp::new(p.packet_id))).await;
                match self.next().await {
                    Packet::PubRel(r) if r.packet_id == p.packet_id => {
                        self.send(&Packet::PubComp(PubResp::new(p.packet_id))).await
                    }
                    other => panic!("{}: expected PUBREL, got {other:?}", self.name),
                }
            }
        }
        p
    }

    /// Skips (stashing) packets until one matches `pick`.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = match self.recv(left).await {
                Recv::Packet(p) => p,
                other => panic!(
                    "{}: waiting for {what}, got {other:?} (skipped {skipped:?})",
                    self.name
                ),
            };
            if let Some(t) = pick(&p) {
                for s in skipped.into_iter().rev() {
                    self.stash.push_front(s);
                }
                return t;
            }
            skipped.push(p);
        }
    }

    pub fn pid(&mut self) -> u16 {
        let p = self.next_pid;
        self.next_pid = if p == u16::MAX { 1 } else { p + 1 };
        p
    }

    /// SUBSCRIBE and wait for its SUBACK.
    pub async fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        props: Properties,
    ) -> SubAck {
        let pid = self.pid();
        self.send(&subscribe(pid, filters, props)).await;
        self.wait_for("SUBACK", |p| match p {
            Packet::SubAck(s) if s.packet_id == pid => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes to one filter and asserts it was granted `qos`.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let ack = self
            .subscribe_with(&[(filter, opts(qos))], Properties::default())
            .await;
        assert_eq!(
            ack.reasons,
            vec![ReasonCode(qos as u8)],
            "{}: SUBACK for {filter}",
            self.name
        );
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) -> UnsubAck {
        let pid = self.pid();
        self.send(&unsubscribe(pid, filters)).await;
        self.wait_for("UNSUBACK", |p| match p {
            Packet::UnsubAck(s) if s.packet_id == pid => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes and completes the QoS flow; returns the PUBACK/PUBREC (None for QoS 0).
    pub async fn publish_packet(&mut self, mut p: Publish) -> Option<PubResp> {
        if p.qos == QoS::AtMostOnce {
            p.packet_id = 0;
            self.send(&Packet::Publish(p)).await;
            return None;
        }
        let pid = self.pid();
        p.packet_id = pid;
        let qos = p.qos;
        self.send(&Packet::Publish(p)).await;
        if qos == QoS::AtLeastOnce {
            return Some(
                self.wait_for("PUBACK", |p| match p {
                    Packet::PubAck(r) if r.packet_id == pid => Some(r.clone()),
                    _ => None,
                })
                .await,
            );
        }
        let rec = self
            .wait_for("PUBREC", |p| match p {
                Packet::PubRec(r) if r.packet_id == pid => Some(r.clone()),
                _ => None,
            })
            .await;
        if rec.reason.is_error() {
            return Some(rec);
        }
        self.send(&Packet::PubRel(PubResp::new(pid))).await;
        self.wait_for("PUBCOMP", |p| match p {
            Packet::PubComp(r) if r.packet_id == pid => Some(()),
            _ => None,
        })
        .await;
        Some(rec)
    }

    /// Publishes a plain message and completes the QoS flow.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) {
        let resp = self.publish_packet(publish(topic, payload, qos, 0)).await;
        if let Some(r) = resp {
            assert!(
                !r.reason.is_error(),
                "{}: publish refused: {r:?}",
                self.name
            );
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub async fn expect_nothing(&mut self, what: &str) {
        match self.recv(QUIET).await {
            Recv::Timeout => {}
            other => panic!("{}: expected nothing ({what}), got {other:?}", self.name),
        }
    }

    /// The next packet must be a DISCONNECT with `reason`, after which the broker closes.
    pub async fn expect_disconnect(&mut self, reason: ReasonCode, why: &str) -> Disconnect {
        let d = match self.recv(WAIT).await {
            Recv::Packet(Packet::Disconnect(d)) => d,
            other => panic!(
                "{}: {why}: expected DISCONNECT {:#04x} ({}), got {other:?}",
                self.name,
                reason.0,
                reason.name()
            ),
        };
        assert_eq!(
            d.reason,
            reason,
            "{}: {why}: DISCONNECT reason {:#04x} ({}), expected {:#04x} ({})",
            self.name,
            d.reason.0,
            d.reason.name(),
            reason.0,
            reason.name()
        );
        self.expect_closed(why).await;
        d
    }

    /// The broker closes the connection, sending nothing more first.
    pub async fn expect_closed(&mut self, why: &str) {
        match self.recv(WAIT).await {
            Recv::Closed(_) => {}
            Recv::Timeout => panic!("{}: {why}: connection still open", self.name),
            Recv::Packet(p) => panic!("{}: {why}: expected close, got {p:?}", self.name),
        }
    }

    /// Normal DISCONNECT (0x00) and wait for the broker to close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)))
            .await;
        let _ = self.recv(WAIT).await;
    }

    /// DISCONNECT with properties / reason.
    pub async fn disconnect_with(&mut self, d: Disconnect) {
        self.send(&Packet::Disconnect(d)).await;
    }
}

/// Payloads as strings, for readable assertions.
pub fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

// ---------------------------------------------------------------------------------------------
// rumqttc v5
// ---------------------------------------------------------------------------------------------

pub mod rumq {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Packet as RPacket;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    /// A rumqttc v5 client whose event loop runs in a task until the first error (it never
    /// reconnects behind the test's back).
    pub struct Rumq {
        pub client: AsyncClient,
        events: tokio::sync::mpsc::UnboundedReceiver<Result<Event, String>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Rumq {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub fn spawn(opts: MqttOptions) -> Rumq {
        let (client, mut el) = AsyncClient::new(opts, 64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Rumq {
            client,
            events: rx,
            task,
        }
    }

    impl Rumq {
        /// Skips events until an incoming packet matches `pick`.
        pub async fn incoming<T>(
            &mut self,
            what: &str,
            mut pick: impl FnMut(&RPacket) -> Option<T>,
        ) -> T {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Err(_) => panic!("rumqttc: timed out waiting for {what}"),
                    Ok(None) => panic!("rumqttc: event loop ended waiting for {what}"),
                    Ok(Some(Err(e))) => panic!("rumqttc: connection error waiting for {what}: {e}"),
                    Ok(Some(Ok(Event::Incoming(p)))) => {
                        if let Some(t) = pick(&p) {
                            return t;
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
        }

        pub async fn connack(&mut self) -> rumqttc::v5::mqttbytes::v5::ConnAck {
            self.incoming("CONNACK", |p| match p {
                RPacket::ConnAck(c) => Some(c.clone()),
                _ => None,
            })
            .await
        }

        pub async fn suback(&mut self) -> rumqttc::v5::mqttbytes::v5::SubAck {
            self.incoming("SUBACK", |p| match p {
                RPacket::SubAck(s) => Some(s.clone()),
                _ => None,
            })
            .await
        }

        pub async fn puback(&mut self) {
            self.incoming("PUBACK", |p| match p {
                RPacket::PubAck(_) => Some(()),
                _ => None,
            })
            .await
        }

        /// No PUBLISH arrives for [`QUIET`] (other events are skipped; always followed by a
        /// positive check in the tests).
        pub async fn no_publish(&mut self, what: &str) {
            let deadline = tokio::time::Instant::now() + QUIET;
            loop {
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Err(_) => return,
                    Ok(None) => panic!("rumqttc: event loop ended ({what})"),
                    Ok(Some(Err(e))) => panic!("rumqttc: connection error ({what}): {e}"),
                    Ok(Some(Ok(Event::Incoming(RPacket::Publish(p))))) => {
                        panic!("rumqttc: expected no PUBLISH ({what}), got {p:?}")
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
        }

        pub async fn publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
            self.incoming("PUBLISH", |p| match p {
                RPacket::Publish(s) => Some(s.clone()),
                _ => None,
            })
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// External clients
// ---------------------------------------------------------------------------------------------

#[path = "common/skip.rs"]
mod skip;

/// True when available; otherwise panics under STARLING_INTEROP=1, or reports the skip on the
/// terminal (see `common/skip.rs`).
pub fn require(tool: &str, available: bool) -> bool {
    if available {
        return true;
    }
    skip::skip(&format!("{tool} is not installed"));
    false
}

pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

pub fn have_mosquitto_clients() -> bool {
    require(
        "mosquitto-clients (mosquitto_pub, mosquitto_sub)",
        on_path("mosquitto_pub") && on_path("mosquitto_sub"),
    )
}

pub fn have_paho() -> bool {
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, paho.mqtt; sys.exit(0 if paho.mqtt.__version__.split('.')[0] == '2' else 1)",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require("python3 with paho-mqtt 2.x", ok)
}

/// Path of a file under tests/.
pub fn tests_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

/// A child process (one we started) whose stdout is read line by line; killed on drop.
pub struct Proc {
    pub name: String,
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: Arc<std::sync::Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Proc {
    /// Spawns `cmd`; `stdin` (if any) is written and closed.
    pub fn spawn(name: &str, cmd: &mut std::process::Command, stdin: Option<Vec<u8>>) -> Proc {
        use std::io::{BufRead, Read, Write};
        use std::process::Stdio;
        let mut child = cmd
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        if let Some(data) = stdin {
            let mut w = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines: rx,
            stderr,
            seen: Vec::new(),
        }
    }

    pub fn transcript(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.seen.join("\n"),
            self.name,
            self.stderr.lock().unwrap()
        )
    }

    /// The next stdout line; None on EOF or after `d`.
    pub async fn line_within(&mut self, d: Duration) -> Option<String> {
        match tokio::time::timeout(d, self.lines.recv()).await {
            Ok(Some(l)) => {
                self.seen.push(l.clone());
                Some(l)
            }
            _ => None,
        }
    }

    /// The next stdout line; panics with the transcript on EOF or timeout.
    pub async fn line(&mut self, what: &str) -> String {
        match self.line_within(WAIT).await {
            Some(l) => l,
            None => panic!(
                "{}: no line ({what}) within {WAIT:?}\n{}",
                self.name,
                self.transcript()
            ),
        }
    }

    /// Waits (bounded) for the process to exit and asserts success; returns every stdout line.
    pub async fn success(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {d:?}\n{}",
                self.name,
                self.transcript()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The reader thread ends at EOF once the process is gone.
        while self.line_within(Duration::from_millis(500)).await.is_some() {}
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            self.name,
            self.transcript()
        );
        self.seen.clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
