//! Listeners: accept loops that turn sockets into byte streams for [`crate::connection::serve`].
//! An accept loop only takes a connection permit and spawns; every handshake (TLS, WebSocket,
//! CONNECT) happens inside the connection's own task under a timeout.
//!
//! [`Endpoint`] is what one configured listener does with an accepted socket: nothing (`mqtt`),
//! a TLS handshake ([`tls`], `mqtts`), a WebSocket upgrade ([`ws`], `ws`) or both (`wss`), all
//! within the listener's `handshake_timeout`, before MQTT starts on the resulting stream.

pub mod tcp;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::broker::BrokerState;
use crate::config::{ListenerConfig, ListenerProtocol, MqttConfig};
use crate::connection;
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

/// One configured listener: its transport and handshake limit.
#[derive(Debug, Clone)]
pub struct Endpoint {
    index: usize,
    transport: Transport,
    handshake_timeout: Duration,
}

/// Why a TLS or WebSocket handshake did not complete.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Ws(#[from] ws::WsError),
}

impl HandshakeError {
    /// Failures an operator wants to see (bad certificates, wrong paths), as opposed to peers
    /// that just went away.
    fn is_notable(&self) -> bool {
        match self {
            HandshakeError::Tls(e) => e.kind() == std::io::ErrorKind::InvalidData,
            HandshakeError::Ws(ws::WsError::Refused { .. }) => true,
            HandshakeError::Ws(ws::WsError::Handshake(_)) => false,
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
            handshake_timeout: listener.handshake_timeout(),
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

    /// Runs the transport handshake on an accepted socket, then serves MQTT on the result.
    /// A handshake that fails or times out is logged and the socket closed.
    ///
    /// Each transport's future is boxed: a task stores its future inline, so without the boxes
    /// every plain TCP connection would carry the space of the largest one (TLS + WebSocket,
    /// about 17 KB), most of the memory of an idle connection.
    pub async fn serve(&self, stream: TcpStream, peer: SocketAddr, broker: Arc<BrokerState>) {
        let info = |tls_identity| ConnectionInfo {
            peer,
            listener_index: self.index,
            tls_identity,
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
                    if let Some(s) = self.handshake(peer, accept).await {
                        let identity = tls::client_identity(s.get_ref().1);
                        connection::serve(s, info(identity), broker).await;
                    }
                })
                .await
            }
            Transport::Ws(settings) => {
                Box::pin(async {
                    let accept = async { Ok(ws::accept(stream, settings).await?) };
                    if let Some(s) = self.handshake(peer, accept).await {
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
                    if let Some(s) = self.handshake(peer, accept).await {
                        let identity = tls::client_identity(s.get_ref().get_ref().1);
                        connection::serve(s, info(identity), broker).await;
                    }
                })
                .await
            }
        }
    }

    async fn handshake<T>(
        &self,
        peer: SocketAddr,
        accept: impl Future<Output = Result<T, HandshakeError>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.handshake_timeout, accept).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) if e.is_notable() => {
                crate::refusal!(%peer, listener = self.index, error = %e, "handshake failed");
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
