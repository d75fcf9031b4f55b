//! A bridge's two connections, each made through CONNECT and CONNACK: to the remote broker
//! (TCP, TLS when `cafile` is set) and to this broker, served in-process over a pipe by the
//! same connection code that serves every client, so the bridge's local session gets what
//! any session gets (persistence, queue limits, flow control, retained messages).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BridgeError;
use crate::auth::listeners::BRIDGE_LISTENER;
use crate::broker::BrokerState;
use crate::codec::{self, ConnAck, Connect, Packet, Properties, ProtocolVersion, QoS, Will};
use crate::config::{BridgeConfig, BridgeProtocol, MQTT_MAX_PACKET_SIZE};
use crate::peer::PeerAddr;
use crate::protocol::ConnectionInfo;

/// Time the remote broker has to accept the TCP connection, finish TLS and answer CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes the in-process pipe holds each way before a writer waits.
const PIPE_BYTES: usize = 64 * 1024;

/// A byte stream a link runs over (TCP, TLS or the in-process pipe).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// One connected side of a bridge, and what its CONNACK said.
pub struct Link {
    pub io: Box<dyn Stream>,
    pub version: ProtocolVersion,
    /// What was read after CONNACK (the first packets that followed it).
    pub rbuf: BytesMut,
    /// The other end's Maximum Packet Size (MQTT's maximum when it set none).
    pub max_packet: u32,
    /// The other end's Receive Maximum: QoS 1/2 messages it takes in flight (65535 in 3.x).
    pub receive_max: u16,
    /// The highest QoS it takes (2 unless a v5 server said less).
    pub max_qos: QoS,
    /// Whether it keeps retained messages (unless a v5 server said it does not).
    pub retain_available: bool,
    /// How often the bridge must show it is alive on this link.
    pub keep_alive: Duration,
    /// The other end resumed the bridge's session.
    pub session_present: bool,
}

/// The client ids and notification topic of one bridge, fixed for its life.
#[derive(Debug, Clone)]
pub struct Names {
    pub remote_id: String,
    pub local_id: String,
    pub notification_topic: String,
}

impl Names {
    /// The names `cfg` asks for on cluster node `node` (if any), defaults filled in.
    pub fn of(cfg: &BridgeConfig, node: Option<&str>) -> Names {
        let remote_id = cfg.remote_client_id(node);
        Names {
            local_id: cfg.local_client_id(&remote_id, node),
            notification_topic: cfg.notification_topic(&remote_id),
            remote_id,
        }
    }
}

/// How the bridge's will (its `0` notification at the remote broker) is sent: QoS 1 and
/// retained, unless the remote broker refused that. An MQTT 5 server without retained
/// messages refuses a retained will with CONNACK 0x9A [MQTT-3.2.2-13], one whose Maximum QoS
/// is 0 a QoS 1 will with 0x9B [MQTT-3.2.2-12]; the next attempt then sends it as taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WillShape {
    pub qos: QoS,
    pub retain: bool,
}

impl Default for WillShape {
    fn default() -> WillShape {
        WillShape {
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }
}

impl WillShape {
    /// The shape to try after CONNACK refused with `code`, if the will was the reason.
    pub fn after_refusal(self, code: u8) -> Option<WillShape> {
        match code {
            0x9A if self.retain => Some(WillShape {
                retain: false,
                ..self
            }),
            0x9B if self.qos != QoS::AtMostOnce => Some(WillShape {
                qos: QoS::AtMostOnce,
                ..self
            }),
            _ => None,
        }
    }
}

/// The Session Expiry Interval the bridge asks for: none with `cleansession`, else never.
fn session_expiry(cfg: &BridgeConfig) -> u32 {
    if cfg.cleansession {
        0
    } else {
        u32::MAX
    }
}

/// Connects to the remote broker and logs in. `max_packet` is the largest packet the bridge
/// takes from it (told to a v5 server).
pub async fn connect_remote(
    cfg: &BridgeConfig,
    (names, address): (&Names, &str),
    tls: Option<&tokio_rustls::TlsConnector>,
    (max_packet, will): (u32, WillShape),
) -> Result<Link, BridgeError> {
    let (host, port) = cfg
        .host_port_of(address)
        .ok_or_else(|| BridgeError::Protocol("address does not parse".into()))?;
    let io: Box<dyn Stream> = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, BridgeError>(match tls {
            Some(tls) => {
                let name = cfg.tls_server_name.clone().unwrap_or_else(|| host.clone());
                let name = rustls_pki_types::ServerName::try_from(name)
                    .map_err(|e| BridgeError::Protocol(format!("TLS server name: {e}")))?;
                Box::new(tls.connect(name, tcp).await?) as Box<dyn Stream>
            }
            None => Box::new(tcp) as Box<dyn Stream>,
        })
    })
    .await
    .map_err(|_| BridgeError::Timeout("connecting"))??;
    let connect = remote_connect(cfg, names, max_packet, will);
    let version = connect.protocol;
    let (io, ack, rbuf) = handshake(io, connect, max_packet).await?;
    Ok(link(io, version, ack, rbuf, cfg.keepalive_interval))
}

/// Resolves once `address` accepts a TCP connection, trying every `every` (the main broker,
/// while the bridge is on a fallback).
pub async fn accepting(cfg: &BridgeConfig, address: &str, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some((host, port)) = cfg.host_port_of(address) else {
            continue;
        };
        let connect = TcpStream::connect((host.as_str(), port));
        if let Ok(Ok(_)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            return;
        }
    }
}

/// The CONNECT for the remote broker.
fn remote_connect(cfg: &BridgeConfig, names: &Names, max_packet: u32, shape: WillShape) -> Connect {
    let protocol = match cfg.protocol_version {
        BridgeProtocol::Mqttv31 => ProtocolVersion::V31,
        BridgeProtocol::Mqttv311 => ProtocolVersion::V311,
        BridgeProtocol::Mqttv50 => ProtocolVersion::V5,
    };
    let mut properties = Properties::default();
    if protocol.is_v5() {
        properties.session_expiry_interval = Some(session_expiry(cfg));
        properties.receive_maximum = Some(cfg.max_inflight);
        if max_packet < MQTT_MAX_PACKET_SIZE {
            properties.maximum_packet_size = Some(max_packet);
        }
    }
    let will = (cfg.notifications && !cfg.notifications_local_only).then(|| Will {
        topic: names.notification_topic.clone(),
        payload: Bytes::from_static(b"0"),
        qos: shape.qos,
        retain: shape.retain,
        properties: Properties::default(),
    });
    Connect {
        protocol,
        clean_start: cfg.cleansession,
        keep_alive: keep_alive_secs(cfg.keepalive_interval),
        client_id: names.remote_id.clone(),
        will,
        username: cfg.remote_username.clone(),
        password: cfg
            .remote_password
            .as_ref()
            .map(|p| Bytes::from(p.clone().into_bytes())),
        properties,
        bridge: cfg.try_private && !protocol.is_v5(),
    }
}

fn keep_alive_secs(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX).max(1)
}

/// Opens the bridge's session here: a pipe served like a client connection (its peer named
/// `bridge:<name>`, checked against no password file or ACL), logged in over MQTT 5 with
/// `receive_max` in flight and packets of at most `max_packet`.
pub async fn connect_local(
    broker: &Arc<BrokerState>,
    cfg: &BridgeConfig,
    names: &Names,
    receive_max: u16,
    max_packet: u32,
) -> Result<Link, BridgeError> {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let info = ConnectionInfo {
        peer: PeerAddr::Bridge(Arc::from(cfg.name.as_str())),
        listener_index: BRIDGE_LISTENER,
        tls_identity: None,
        connect_deadline: None,
    };
    tokio::spawn(crate::connection::serve(theirs, info, broker.clone()));
    let properties = Properties {
        session_expiry_interval: Some(session_expiry(cfg)),
        receive_maximum: Some(receive_max),
        maximum_packet_size: (max_packet < MQTT_MAX_PACKET_SIZE).then_some(max_packet),
        ..Properties::default()
    };
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: cfg.cleansession,
        keep_alive: keep_alive_secs(cfg.keepalive_interval),
        client_id: names.local_id.clone(),
        will: None,
        username: None,
        password: None,
        properties,
        bridge: false,
    };
    let ours: Box<dyn Stream> = Box::new(ours);
    let own_max = broker.config().mqtt.max_packet_size;
    let (io, ack, rbuf) = tokio::time::timeout(CONNECT_TIMEOUT, handshake(ours, connect, own_max))
        .await
        .map_err(|_| BridgeError::Timeout("connecting here"))??;
    Ok(link(
        io,
        ProtocolVersion::V5,
        ack,
        rbuf,
        cfg.keepalive_interval,
    ))
}

/// Sends CONNECT and reads up to CONNACK; a refusal is an error naming its code.
async fn handshake(
    mut io: Box<dyn Stream>,
    connect: Connect,
    max_packet: u32,
) -> Result<(Box<dyn Stream>, ConnAck, BytesMut), BridgeError> {
    let version = connect.protocol;
    let mut buf = BytesMut::new();
    codec::encode(&Packet::Connect(Box::new(connect)), version, &mut buf);
    io.write_all(&buf).await?;
    io.flush().await?;
    let mut rbuf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            match codec::decode(&mut rbuf, version, max_packet)? {
                Some(Packet::ConnAck(ack)) if ack.code.0 == 0 => return Ok(ack),
                Some(Packet::ConnAck(ack)) => return Err(BridgeError::Refused(ack.code.0)),
                Some(p) => {
                    return Err(BridgeError::Protocol(format!(
                        "{} before CONNACK",
                        p.name()
                    )))
                }
                None => {
                    if io.read_buf(&mut rbuf).await? == 0 {
                        return Err(BridgeError::Closed("before CONNACK"));
                    }
                }
            }
        }
    };
    let ack = tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .map_err(|_| BridgeError::Timeout("waiting for CONNACK"))??;
    Ok((io, ack, rbuf))
}

/// The [`Link`] a CONNACK describes.
fn link(
    io: Box<dyn Stream>,
    version: ProtocolVersion,
    ack: ConnAck,
    rbuf: BytesMut,
    keep_alive: Duration,
) -> Link {
    let p = &ack.properties;
    Link {
        io,
        version,
        rbuf,
        max_packet: p.maximum_packet_size.unwrap_or(MQTT_MAX_PACKET_SIZE),
        receive_max: p.receive_maximum.unwrap_or(u16::MAX),
        max_qos: p
            .maximum_qos
            .and_then(QoS::from_u8)
            .unwrap_or(QoS::ExactlyOnce),
        retain_available: p.retain_available != Some(0),
        keep_alive: p
            .server_keep_alive
            .filter(|&s| s > 0)
            .map_or(keep_alive, |s| Duration::from_secs(u64::from(s))),
        session_present: ack.session_present,
    }
}

/// The TLS client for a bridge with `cafile`: its CAs as the only trust anchors, and the
/// client certificate when one is set.
pub fn tls_connector(
    cfg: &BridgeConfig,
) -> Result<Option<tokio_rustls::TlsConnector>, BridgeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &cfg.cafile else {
        return Ok(None);
    };
    let tls = |e: String| BridgeError::Tls(e);
    let roots = crate::transport::tls::read_roots(ca).map_err(|e| tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&cfg.certfile, &cfg.keyfile) {
        (Some(cert), Some(key)) => {
            let what = |p: &std::path::Path, e: &dyn std::fmt::Display| {
                tls(format!("{}: {e}", p.display()))
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| what(cert, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| what(cert, &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| what(key, &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| what(cert, &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
}
