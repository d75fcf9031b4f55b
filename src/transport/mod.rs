//! Listeners: accept loops that turn sockets into byte streams for [`crate::connection::serve`].
//! An accept loop only takes a connection permit and spawns; every handshake (TLS, WebSocket,
//! CONNECT) happens inside the connection's own task under a timeout.
//!
//! [`Endpoint`] is what one configured listener does with an accepted socket: nothing (`mqtt`),
//! a TLS handshake ([`tls`], `mqtts`), a WebSocket upgrade ([`ws`], `ws`) or both (`wss`), all
//! within the listener's `handshake_timeout`, before MQTT starts on the resulting stream. On a
//! `proxy_protocol` listener a PROXY header ([`proxy`]) comes first, under the same deadline;
//! on a plain `mqtt` listener the deadline also covers CONNECT. The socket is TCP or a unix
//! socket ([`unix`]); [`accept`] runs the accept loop for both.

pub mod accept;
pub mod proxy;
pub mod tcp;
pub mod tls;
pub mod unix;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::broker::BrokerState;
use crate::config::{Cidr, ListenerConfig, ListenerProtocol, MqttConfig};
use crate::connection;
use crate::protocol::peer::PeerAddr;
use crate::protocol::ConnectionInfo;

/// The transport of one listener, ready to use.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Plain TCP.
    Mqtt,
    /// TLS.
    Mqtts(tls::Tls),
    /// WebSocket.
    Ws(ws::WsSettings),
    /// WebSocket over TLS.
    Wss(tls::Tls, ws::WsSettings),
}

/// One configured listener: its transport, handshake limit and PROXY protocol setting.
#[derive(Debug, Clone)]
pub struct Endpoint {
    index: usize,
    transport: Transport,
    handshake_timeout: Duration,
    /// With `proxy_protocol`: the peers trusted to send the header.
    proxy_trusted: Option<Vec<Cidr>>,
}

/// Why a TLS or WebSocket handshake did not complete.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Ws(#[from] ws::WsError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
}

impl HandshakeError {
    /// Failures an operator wants to see (bad certificates, wrong paths), as opposed to peers
    /// that just went away.
    fn is_notable(&self) -> bool {
        match self {
            HandshakeError::Tls(e) => e.kind() == std::io::ErrorKind::InvalidData,
            HandshakeError::Ws(ws::WsError::Refused { .. }) => true,
            HandshakeError::Ws(ws::WsError::Handshake(_)) => false,
            // The connection closing inside the header is a peer going away; anything else
            // is a client bypassing the proxy or a misconfigured proxy.
            HandshakeError::Proxy(proxy::ProxyError::Io(_)) => false,
            HandshakeError::Proxy(_) => true,
        }
    }

    /// What an operator can do about a failure whose cause is not obvious from the TLS
    /// library's words.
    fn hint(&self) -> Option<&'static str> {
        match self {
            // webpki accepts X.509 version 3 only; OpenSSL's `x509 -req` without an extension
            // file (the recipe in Mosquitto's TLS man page) makes version 1 certificates, which
            // Mosquitto accepts.
            HandshakeError::Tls(e) if e.to_string().contains("UnsupportedCertVersion") => Some(
                "the client certificate is X.509 version 1; only version 3 is accepted: \
                 re-sign it with extensions (e.g. openssl x509 -req ... -extfile with \
                 basicConstraints=CA:FALSE)",
            ),
            _ => None,
        }
    }
}

impl Endpoint {
    /// Prepares listener `index`: reads its certificates (TLS) and WebSocket settings.
    pub fn from_config(
        index: usize,
        listener: &ListenerConfig,
        mqtt: &MqttConfig,
    ) -> Result<Endpoint, tls::TlsError> {
        let ws = || ws::WsSettings::new(listener.ws_path(), mqtt.max_packet_size);
        let transport = match listener.protocol {
            ListenerProtocol::Mqtt => Transport::Mqtt,
            ListenerProtocol::Mqtts => Transport::Mqtts(tls::Tls::from_config(listener)?),
            ListenerProtocol::Ws => Transport::Ws(ws()),
            ListenerProtocol::Wss => Transport::Wss(tls::Tls::from_config(listener)?, ws()),
        };
        Ok(Endpoint {
            index,
            transport,
            handshake_timeout: listener.handshake_timeout(mqtt.connect_timeout),
            proxy_trusted: listener.proxy_protocol.then(|| listener.proxy_trusted()),
        })
    }

    /// The listener's index in `Config::listeners`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The TLS side, on `mqtts` and `wss` listeners.
    pub fn tls(&self) -> Option<&tls::Tls> {
        match &self.transport {
            Transport::Mqtts(t) | Transport::Wss(t, _) => Some(t),
            Transport::Mqtt | Transport::Ws(_) => None,
        }
    }

    /// Whether accepted sockets go straight to MQTT: a plain `mqtt` listener without a PROXY
    /// header. Such a connection's task is spawned with [`Self::serve_plain`]'s future itself,
    /// so tokio's task cell holds the connection and nothing around it.
    pub fn is_plain(&self) -> bool {
        matches!(self.transport, Transport::Mqtt) && self.proxy_trusted.is_none()
    }

    /// Serves MQTT on a socket of a plain listener ([`Self::is_plain`]), keeping `held` until
    /// the end; CONNECT must be complete `handshake_timeout` after now (accept time). Not an
    /// `async fn`: it builds [`connection::serve_holding`]'s future and returns it, so `self`
    /// is not kept in the task.
    pub fn serve_plain<S, H>(
        &self,
        stream: S,
        peer: PeerAddr,
        broker: Arc<BrokerState>,
        held: H,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        H: Send + 'static,
    {
        let info = ConnectionInfo {
            peer,
            listener_index: self.index,
            tls_identity: None,
            connect_deadline: Some(Instant::now() + self.handshake_timeout),
        };
        connection::serve_holding(stream, info, broker, held)
    }

    /// Reads the PROXY header (if the listener wants one) and runs the transport handshake on
    /// an accepted socket, then serves MQTT on the result. All of it shares one deadline,
    /// `handshake_timeout` from now; on plain `mqtt` listeners CONNECT must be complete by it
    /// too. A handshake that fails or times out is logged and the socket closed.
    ///
    /// Each transport's future is boxed: a task stores its future inline, so without the boxes
    /// every plain TCP connection would carry the space of the largest one (TLS + WebSocket,
    /// about 17 KB), most of the memory of an idle connection.
    pub async fn serve<S>(&self, mut stream: S, peer: PeerAddr, broker: Arc<BrokerState>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let deadline = Instant::now() + self.handshake_timeout;
        let peer = match &self.proxy_trusted {
            Some(trusted) => {
                let read = Box::pin(self.proxied_peer(&mut stream, peer, trusted, deadline));
                match read.await {
                    Some(p) => p,
                    None => return,
                }
            }
            None => peer,
        };
        let info = |tls_identity| ConnectionInfo {
            peer: peer.clone(),
            listener_index: self.index,
            tls_identity,
            connect_deadline: matches!(self.transport, Transport::Mqtt).then_some(deadline),
        };
        match &self.transport {
            Transport::Mqtt => Box::pin(connection::serve(stream, info(None), broker)).await,
            Transport::Mqtts(tls) => {
                Box::pin(async {
                    let accept = async {
                        tls.acceptor()
                            .accept(stream)
                            .await
                            .map_err(HandshakeError::Tls)
                    };
                    if let Some(s) = self.handshake(&peer, deadline, accept).await {
                        let identity = tls::client_identity(s.get_ref().1);
                        connection::serve(s, info(identity), broker).await;
                    }
                })
                .await
            }
            Transport::Ws(settings) => {
                Box::pin(async {
                    let accept = async { Ok(ws::accept(stream, settings).await?) };
                    if let Some(s) = self.handshake(&peer, deadline, accept).await {
                        connection::serve(s, info(None), broker).await;
                    }
                })
                .await
            }
            Transport::Wss(tls, settings) => {
                Box::pin(async {
                    let accept = async {
                        let t = tls
                            .acceptor()
                            .accept(stream)
                            .await
                            .map_err(HandshakeError::Tls)?;
                        Ok(ws::accept(t, settings).await?)
                    };
                    if let Some(s) = self.handshake(&peer, deadline, accept).await {
                        let identity = tls::client_identity(s.get_ref().get_ref().1);
                        connection::serve(s, info(identity), broker).await;
                    }
                })
                .await
            }
        }
    }

    /// The client behind a PROXY header: checks that `peer` may send one, reads it by
    /// `deadline` and returns the client it names (the socket's peer for UNKNOWN and LOCAL).
    /// `None`: the connection is to be closed (an untrusted peer, a missing or malformed header,
    /// a timeout: logged).
    async fn proxied_peer<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        peer: PeerAddr,
        trusted: &[Cidr],
        deadline: Instant,
    ) -> Option<PeerAddr> {
        // A unix-socket peer got past the socket file's permissions: trusted.
        if let Some(ip) = peer.ip() {
            if !trusted.iter().any(|c| c.contains(ip)) {
                crate::refusal!(%peer, listener = self.index,
                    "closing: PROXY header from a peer not in proxy_protocol_trusted");
                return None;
            }
        }
        let read = async { Ok(proxy::read_header(stream).await?) };
        match self.handshake(&peer, deadline, read).await? {
            proxy::ProxyHeader::Proxied { source, .. } => Some(PeerAddr::Tcp(source)),
            proxy::ProxyHeader::Unknown => Some(peer),
            // The proxy's own connection (a health check, perhaps haproxy's `mqtt-chk` sending
            // a CONNECT): the PROXY spec says to serve it with the real endpoints.
            proxy::ProxyHeader::Local => {
                tracing::debug!(%peer, listener = self.index, "PROXY LOCAL (proxy's own connection)");
                Some(peer)
            }
        }
    }

    async fn handshake<T>(
        &self,
        peer: &PeerAddr,
        deadline: Instant,
        accept: impl Future<Output = Result<T, HandshakeError>>,
    ) -> Option<T> {
        match tokio::time::timeout_at(deadline, accept).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) if e.is_notable() => {
                let hint = e.hint();
                crate::refusal!(%peer, listener = self.index, error = %e, hint, "handshake failed");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, listener = self.index, error = %e, "handshake failed");
                None
            }
            Err(_) => {
                tracing::info!(
                    %peer,
                    listener = self.index,
                    timeout = ?self.handshake_timeout,
                    "handshake timed out"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod hint_tests {
    use super::HandshakeError;

    /// rustls's words for an X.509 v1 client certificate get a hint an operator can act on
    /// (Mosquitto accepts v1, so a migrated mutual-TLS setup may have them).
    #[test]
    fn a_version_1_client_certificate_gets_a_hint() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: Other(OtherError(UnsupportedCertVersion))",
        );
        let hint = HandshakeError::Tls(e).hint().unwrap_or_default();
        assert!(hint.contains("version 3"), "{hint}");
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "UnknownIssuer");
        assert_eq!(HandshakeError::Tls(other).hint(), None);
    }
}
