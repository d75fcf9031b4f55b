//! The CONNECT handshake of a connection, before its loop runs (`accept` in the parent
//! module): the first packet read under the handshake/connect deadline, a refused first packet
//! answered as the spec asks, and the MQTT 5 enhanced-authentication exchange CONNECT may ask
//! for.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::READ_MIN;
use crate::auth::enhanced::{AuthStep, Authenticator};
use crate::broker::BrokerState;
use crate::codec::{self, DecodeError, Packet, ProtocolVersion, ReasonCode};
use crate::metrics::Metrics;
use crate::protocol::peer::PeerAddr;
use crate::protocol::{AuthOutcome, ConnectionInfo};

/// Reads the first packet, which must be CONNECT, by the connection's deadline (see
/// [`ConnectionInfo::connect_deadline`]); `None` when the
/// connection ends before one arrives (logged, and answered when the protocol level is not
/// one we speak).
pub(super) async fn first_connect<S>(
    io: &mut S,
    rbuf: &mut BytesMut,
    broker: &BrokerState,
    info: &ConnectionInfo,
) -> Option<Box<codec::Connect>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = &info.peer;
    // A plain listener's `handshake_timeout` counts from accept (it also covers a PROXY
    // header); otherwise `mqtt.connect_timeout` counts from here, after TLS/WebSocket.
    let deadline = info
        .connect_deadline
        .unwrap_or_else(|| Instant::now() + broker.config().mqtt.connect_timeout);
    let max_in = broker.config().mqtt.max_packet_size;
    let shutdown = broker.shutdown_token().clone();
    let connect = tokio::select! {
        // A connection that has not sent CONNECT yet must not hold up shutdown.
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout_at(deadline, read_connect(io, rbuf, max_in, broker.metrics())) => r,
    };
    match connect {
        Err(_) => {
            crate::refusal!(%peer, listener = info.listener_index,
                "closing: no complete CONNECT within the handshake/connect timeout");
            None
        }
        // A peer that just went away (a health check, a port scan) is not worth a line; a
        // stream that broke (a WebSocket protocol violation, a corrupt TLS record) is.
        Ok(Err(ConnectError::Io(e))) if gone_away(&e) => {
            tracing::debug!(%peer, error = %e, "closed before CONNECT");
            None
        }
        Ok(Err(ConnectError::Io(e))) => {
            crate::refusal!(%peer, listener = info.listener_index, error = %e,
                "closing: stream error before CONNECT");
            // A WebSocket gets its close frame (1002, 1003 or 1009: RFC 6455 7.1.7), as after
            // CONNECT; bounded, as the peer may not answer it.
            let _ = tokio::time::timeout(CLOSE_WAIT, io.shutdown()).await;
            None
        }
        Ok(Err(ConnectError::NotConnect(first))) => {
            crate::refusal!(%peer, first, "closing: [MQTT-3.1.0-1] first packet is not CONNECT");
            None
        }
        Ok(Err(ConnectError::Protocol(e))) => {
            refuse_first_packet(io, e, peer, broker.metrics()).await;
            None
        }
        Ok(Ok(c)) => Some(c),
    }
}

/// How long closing a stream that broke before CONNECT may take.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The peer closed or reset the connection (as opposed to sending something broken).
fn gone_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Logs why a first packet that did not decode is refused, answering an unsupported protocol
/// level as the spec asks.
pub(super) async fn refuse_first_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    e: DecodeError,
    peer: &PeerAddr,
    metrics: &Metrics,
) {
    if let DecodeError::UnsupportedProtocolLevel(level) = e {
        // [MQTT-3.1.2-2] answer with return code 0x01 in the 3.1.1 form, then close.
        let mut out = BytesMut::new();
        codec::encode(
            &Packet::ConnAck(codec::ConnAck {
                session_present: false,
                code: ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION,
                properties: Default::default(),
            }),
            ProtocolVersion::V311,
            &mut out,
        );
        if writer.write_all(&out).await.is_ok() {
            metrics.packets_sent.inc();
            metrics.bytes_sent.add(out.len() as u64);
        }
        crate::refusal!(%peer, level, "refused: unsupported protocol level");
    } else {
        crate::refusal!(%peer, reason = %e, "closing: bad first packet");
    }
}

/// The connection was refused or closed during the handshake (logged).
pub(super) struct HandshakeEnded;

/// Runs the enhanced-authentication exchange CONNECT asks for, if its method is one we know,
/// under the connect timeout. `Ok(None)`: no exchange ran (an unknown method is refused by
/// [`Handler::connect`]).
pub(super) async fn authenticate<S>(
    io: &mut S,
    rbuf: &mut BytesMut,
    broker: &BrokerState,
    connect: &codec::Connect,
    peer: &PeerAddr,
) -> Result<Option<AuthOutcome>, HandshakeEnded>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(method) = connect.properties.authentication_method.clone() else {
        return Ok(None);
    };
    let Some(authenticator) = broker.authenticator(&method).cloned() else {
        return Ok(None);
    };
    let timeout = broker.config().mqtt.connect_timeout;
    let max_in = broker.config().mqtt.max_packet_size;
    let exchange = enhanced_auth(io, rbuf, connect, authenticator, max_in, broker.metrics());
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(done)) => Ok(Some(done)),
        Ok(Err(why)) => {
            crate::refusal!(%peer, client_id = %connect.client_id, %method, reason = why,
                "refused: enhanced authentication failed");
            let refusal = connack(ReasonCode::NOT_AUTHORIZED);
            // Nothing larger than the client's Maximum Packet Size [MQTT-3.1.2-24].
            if connect.properties.maximum_packet_size.unwrap_or(u32::MAX) as usize >= refusal.len()
                && io.write_all(&refusal).await.is_ok()
            {
                broker.metrics().packets_sent.inc();
                broker.metrics().bytes_sent.add(refusal.len() as u64);
            }
            Err(HandshakeEnded)
        }
        Err(_) => {
            crate::refusal!(%peer, %method, "closing: authentication exchange timed out");
            Err(HandshakeEnded)
        }
    }
}

/// A v5 CONNACK refusing the connection with `code`.
pub(super) fn connack(code: ReasonCode) -> BytesMut {
    let mut out = BytesMut::new();
    codec::encode(
        &Packet::ConnAck(codec::ConnAck {
            session_present: false,
            code,
            properties: Default::default(),
        }),
        ProtocolVersion::V5,
        &mut out,
    );
    out
}

/// Runs an enhanced-authentication exchange [MQTT-4.12.0-1]: AUTH 0x18 back and forth until the
/// authenticator decides. Returns the successful exchange's outcome for CONNACK.
pub(super) async fn enhanced_auth<S>(
    io: &mut S,
    rbuf: &mut BytesMut,
    connect: &codec::Connect,
    authenticator: Arc<dyn Authenticator>,
    max_in: u32,
    metrics: &Metrics,
) -> Result<AuthOutcome, &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let method = authenticator.method().to_string();
    let mut exchange = authenticator.begin(&connect.client_id, connect.username.as_deref());
    let mut data = connect.properties.authentication_data.clone();
    loop {
        match exchange.step(data.as_deref()) {
            AuthStep::Success(data) => {
                return Ok(AuthOutcome {
                    authenticator,
                    data,
                })
            }
            AuthStep::Failure => return Err("the authenticator refused"),
            AuthStep::Continue(challenge) => {
                let mut auth = Packet::Auth(codec::Auth {
                    reason: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: codec::Properties {
                        authentication_method: Some(method.clone()),
                        authentication_data: challenge,
                        ..Default::default()
                    }
                    .into(),
                });
                let max = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
                if !codec::fit_within(&mut auth, ProtocolVersion::V5, max as usize) {
                    return Err(
                        "[MQTT-3.1.2-24] AUTH larger than the client's Maximum Packet Size",
                    );
                }
                let mut out = BytesMut::new();
                codec::encode(&auth, ProtocolVersion::V5, &mut out);
                io.write_all(&out).await.map_err(|_| "write failed")?;
                metrics.packets_sent.inc();
                metrics.bytes_sent.add(out.len() as u64);
                let reply = read_packet(io, rbuf, ProtocolVersion::V5, max_in, metrics)
                    .await
                    .map_err(|_| "connection closed during authentication")?;
                match reply {
                    Packet::Auth(mut a)
                        if a.reason == ReasonCode::CONTINUE_AUTHENTICATION
                            && a.properties.authentication_method.as_deref()
                                == Some(method.as_str()) =>
                    {
                        data = a.properties.authentication_data.take();
                    }
                    _ => return Err("[MQTT-4.12.0-5] expected AUTH with the same method"),
                }
            }
        }
    }
}

pub(super) enum ConnectError {
    Io(std::io::Error),
    Protocol(DecodeError),
    /// A well-formed packet other than CONNECT came first (its name).
    NotConnect(&'static str),
}

/// Reads until a whole CONNECT is buffered. The first packet must be CONNECT [MQTT-3.1.0-1].
pub(super) async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    max: u32,
    metrics: &Metrics,
) -> Result<Box<codec::Connect>, ConnectError> {
    match read_packet(reader, rbuf, ProtocolVersion::V311, max, metrics).await? {
        Packet::Connect(c) => Ok(c),
        other => Err(ConnectError::NotConnect(other.name())),
    }
}

/// Reads one whole packet before the connection loop runs (CONNECT and the AUTH exchange),
/// counted in the received packets and bytes like the loop's (`$SYS/broker/messages/received`,
/// `$SYS/broker/bytes/received`).
pub(super) async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    version: ProtocolVersion,
    max: u32,
    metrics: &Metrics,
) -> Result<Packet, ConnectError> {
    loop {
        match codec::decode(rbuf, version, max) {
            Ok(Some(p)) => {
                metrics.packets_received.inc();
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Protocol(e)),
        }
        rbuf.reserve(READ_MIN);
        match reader.read_buf(rbuf).await {
            Ok(0) => {
                return Err(ConnectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => metrics.bytes_received.add(n as u64),
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
}
