//! Helpers for the transport tests: certificates made with rcgen, a broker with one listener of
//! each kind, TLS and WebSocket client connectors, a minimal MQTT 3.1.1 client over any byte
//! stream, and the skip-or-fail rule for external tools.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use starling::config::{Config, ListenerConfig, ListenerProtocol};
use starling::transport::ws::WsStream;
use starling::{Broker, BrokerHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};

#[path = "../common/skip.rs"]
mod skip;

/// Returns false (after saying why) when `tool` is unavailable; panics instead under
/// `STARLING_INTEROP=1`.
pub fn available(tool: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    skip::skip(&format!("{tool} is not available"));
    false
}

/// Whether `cmd --version`-like probing succeeds.
pub fn runs(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("starling-transports-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA with a server certificate (127.0.0.1, localhost) and a client certificate
/// (CN `client1`), written as PEM files into a scratch directory.
pub struct Pki {
    pub dir: Scratch,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = Scratch::new(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Starling Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca };
        pki.issue_server("server", "Starling Test Server");
        pki.issue(
            "client",
            "client1",
            ExtendedKeyUsagePurpose::ClientAuth,
            vec![],
        );
        pki
    }

    /// Issues `<file>.pem` / `<file>.key` for the server names 127.0.0.1 and localhost.
    pub fn issue_server(&self, file: &str, cn: &str) {
        self.issue(
            file,
            cn,
            ExtendedKeyUsagePurpose::ServerAuth,
            vec!["127.0.0.1".into(), "localhost".into()],
        );
    }

    fn issue(&self, file: &str, cn: &str, usage: ExtendedKeyUsagePurpose, sans: Vec<String>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        // rcgen starts with a placeholder CN, which would keep its place before O.
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Starling");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Write the key first: the broker's watcher reloads once both have changed.
        std::fs::write(self.dir.path(&format!("{file}.key")), key.serialize_pem()).unwrap();
        std::fs::write(self.dir.path(&format!("{file}.pem")), cert.pem()).unwrap();
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path(file)
    }

    /// Issues `<file>.pem` / `<file>.key`, a client certificate whose subject is
    /// `O=Starling, CN=<cn>` (RFC 2253: `CN=<cn>,O=Starling`).
    pub fn issue_client(&self, file: &str, cn: &str) {
        self.issue(file, cn, ExtendedKeyUsagePurpose::ClientAuth, vec![]);
    }

    /// A TLS client trusting the test CA, optionally presenting the client certificate.
    pub fn connector(&self, client_cert: bool) -> tokio_rustls::TlsConnector {
        let client = client_cert.then(|| self.path("client"));
        connector(&self.path("ca.pem"), client.as_deref())
    }

    /// Opens a TLS session to `addr` as 127.0.0.1, trusting this CA and presenting the client
    /// certificate `<client>.pem` / `<client>.key` (a path without the extension), which may
    /// come from another [`Pki`].
    pub async fn tls_as(
        &self,
        addr: SocketAddr,
        client: &Path,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        connector(&self.path("ca.pem"), Some(client))
            .connect(name, tcp)
            .await
    }

    /// Opens a TLS session to `addr` as 127.0.0.1.
    pub async fn tls(
        &self,
        addr: SocketAddr,
        client_cert: bool,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        self.connector(client_cert).connect(name, tcp).await
    }
}

/// A TLS client trusting the CAs in `ca`, presenting `<client>.pem` / `<client>.key` when
/// given.
pub fn connector(ca: &Path, client: Option<&Path>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(base) => {
            let chain = CertificateDer::pem_file_iter(base.with_extension("pem"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(base.with_extension("key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The listeners [`start`] opens, by name.
pub struct Addrs {
    pub mqtt: SocketAddr,
    pub mqtts: SocketAddr,
    pub mtls: SocketAddr,
    pub ws: SocketAddr,
    pub wss: SocketAddr,
}

fn listener(protocol: ListenerProtocol) -> ListenerConfig {
    ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        protocol,
        ..ListenerConfig::default()
    }
}

/// The test configuration: plain, TLS (client certificate optional), mutual TLS (required),
/// WebSocket and WebSocket over TLS, all on 127.0.0.1 with OS-chosen ports.
pub fn config(pki: &Pki) -> Config {
    let tls = |protocol| ListenerConfig {
        cert: Some(pki.path("server.pem")),
        key: Some(pki.path("server.key")),
        ..listener(protocol)
    };
    let mut cfg = Config::default();
    cfg.sys.interval = Duration::ZERO;
    cfg.listeners = vec![
        listener(ListenerProtocol::Mqtt),
        ListenerConfig {
            ca: Some(pki.path("ca.pem")),
            ..tls(ListenerProtocol::Mqtts)
        },
        ListenerConfig {
            ca: Some(pki.path("ca.pem")),
            require_certificate: true,
            use_identity_as_username: true,
            ..tls(ListenerProtocol::Mqtts)
        },
        listener(ListenerProtocol::Ws),
        tls(ListenerProtocol::Wss),
    ];
    cfg
}

pub async fn start(cfg: Config) -> (BrokerHandle, Addrs) {
    let handle = Broker::start(cfg).await.expect("broker starts");
    let a = handle.local_addrs();
    let addrs = Addrs {
        mqtt: a[0],
        mqtts: a[1],
        mtls: a[2],
        ws: a[3],
        wss: a[4],
    };
    (handle, addrs)
}

pub async fn stop(handle: BrokerHandle) {
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("broker stops");
}

/// A WebSocket client on `stream`, offering `protocols`; returns the stream and the answered
/// subprotocol.
pub async fn ws_client<S>(
    stream: S,
    url: &str,
    protocols: Option<&str>,
) -> Result<(WsStream<S>, Option<String>), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = url.into_client_request()?;
    if let Some(p) = protocols {
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await?;
    let answered = resp
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((WsStream::new(ws), answered))
}

/// A minimal MQTT 3.1.1 client (QoS 0) over any byte stream.
pub struct Mqtt<S> {
    pub io: S,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: AsyncRead + AsyncWrite + Unpin> Mqtt<S> {
    /// Sends CONNECT and returns the CONNACK return code (0 = accepted).
    pub async fn connect(io: S, client_id: &str) -> std::io::Result<(Mqtt<S>, u8)> {
        Mqtt::connect_as(io, client_id, None).await
    }

    /// Sends CONNECT, with `username` (and no password) when given, and returns the CONNACK
    /// return code.
    pub async fn connect_as(
        io: S,
        client_id: &str,
        username: Option<&str>,
    ) -> std::io::Result<(Mqtt<S>, u8)> {
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        let flags = if username.is_some() { 0x82 } else { 0x02 };
        body.extend_from_slice(&[4, flags, 0, 30]);
        put_str(&mut body, client_id);
        if let Some(u) = username {
            put_str(&mut body, u);
        }
        let mut m = Mqtt { io };
        m.send(&frame(0x10, &body)).await?;
        let (header, body) = m.read_packet().await?;
        assert_eq!(header, 0x20, "expected CONNACK");
        Ok((m, body[1]))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    pub async fn subscribe(&mut self, filter: &str) -> std::io::Result<()> {
        self.subscribe_code(filter).await.map(|_| ())
    }

    /// Subscribes at QoS 0 and returns the SUBACK return code (0, or 0x80 for a failure).
    pub async fn subscribe_code(&mut self, filter: &str) -> std::io::Result<u8> {
        let mut body = vec![0, 1];
        put_str(&mut body, filter);
        body.push(0);
        self.send(&frame(0x82, &body)).await?;
        loop {
            let (header, body) = self.read_packet().await?;
            if header == 0x90 {
                return Ok(body[2]);
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> std::io::Result<()> {
        let mut body = Vec::new();
        put_str(&mut body, topic);
        body.extend_from_slice(payload);
        self.send(&frame(0x30, &body)).await
    }

    /// The next PUBLISH's topic and payload (QoS 0), skipping other packets.
    pub async fn recv_publish(&mut self) -> std::io::Result<(String, Vec<u8>)> {
        loop {
            let (header, body) = self.read_packet().await?;
            if header & 0xf0 == 0x30 && body.len() >= 2 {
                let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                let topic = String::from_utf8_lossy(&body[2..2 + n]).into_owned();
                let skip = if header & 0x06 != 0 { 2 } else { 0 };
                return Ok((topic, body[2 + n + skip..].to_vec()));
            }
        }
    }

    pub async fn read_packet(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        tokio::time::timeout(IO_TIMEOUT, async {
            let header = self.io.read_u8().await?;
            let mut len = 0usize;
            for shift in [0, 7, 14, 21] {
                let b = self.io.read_u8().await?;
                len |= ((b & 0x7f) as usize) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0; len];
            self.io.read_exact(&mut body).await?;
            Ok((header, body))
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no packet in time"))?
    }
}

/// Subscribes on the plain listener to `topic` and returns the client, ready to receive.
pub async fn watcher(addr: SocketAddr, topic: &str) -> Mqtt<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut m, rc) = Mqtt::connect(tcp, &format!("watch-{topic}")).await.unwrap();
    assert_eq!(rc, 0);
    m.subscribe(topic).await.unwrap();
    m
}

/// Expects `payload` on the watcher's topic within the I/O timeout.
pub async fn expect(m: &mut Mqtt<TcpStream>, payload: &[u8]) {
    let (_, got) = m.recv_publish().await.expect("a PUBLISH");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(payload)
    );
}

/// Runs a command with a time limit, returning (success, stdout + stderr).
pub async fn run(cmd: &mut tokio::process::Command, limit: Duration) -> (bool, String) {
    cmd.kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, format!("timed out after {limit:?}")),
    }
}

/// The repository's `tests/js` folder (MQTT.js and the Node/browser scripts).
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}
