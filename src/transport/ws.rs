//! MQTT over WebSocket (`ws`, `wss` listeners), on `tokio-tungstenite`.
//!
//! [`accept`] runs the HTTP upgrade: the request path must be the listener's `path` when it
//! has one (else `404`; without one any path is served, as by Mosquitto), a request that is
//! not a valid WebSocket upgrade gets `400`, and when the client offers the `mqtt` (or legacy
//! `mqttv3.1`) subprotocol it is answered, as browsers drop a connection whose offered
//! subprotocol is ignored. Incoming frames and messages are limited to `mqtt.max_packet_size`
//! plus [`MESSAGE_SLACK`].
//!
//! [`WsStream`] turns the message stream back into the byte stream MQTT expects
//! ([`AsyncRead`] + [`AsyncWrite`]), as MQTT over WebSocket defines it (MQTT 3.1.1 §6, 5.0 §6):
//! binary messages carry a byte stream, so a packet may span messages and a message may carry
//! several packets. A text message is a protocol error [MQTT-6.0.0-1]: the read fails and the
//! close frame sent at shutdown carries code 1003 (1009 for an oversized message, 1002 for a
//! WebSocket protocol error, RFC 6455 7.4.1). Pings are answered by tungstenite while
//! reading or writing, with the outgoing buffer capped. Each `poll_write` becomes one binary
//! message of at most 64 KiB; the connection already batches its writes, so messages are not
//! needlessly small. Shutdown sends a close frame and waits up to [`CLOSE_LINGER`] for the
//! peer's, so clients see a clean closing handshake.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsProtoError, Message};
use tokio_tungstenite::WebSocketStream;

/// Room above `max_packet_size` in one message, for small packets sent along with a maximal one.
pub const MESSAGE_SLACK: usize = 64 * 1024;
/// Initial read buffer per connection; tungstenite's default (128 KiB) is too much for many
/// idle clients.
const READ_BUFFER: usize = 8 * 1024;
/// Largest binary message one `poll_write` makes; a larger write is taken in parts, so
/// tungstenite's outgoing buffer can be capped ([`MAX_WRITE_BUFFER`]).
const WRITE_CHUNK: usize = 64 * 1024;
/// tungstenite buffers outgoing frames up to this before writing them (its default).
const WRITE_BUFFER: usize = 128 * 1024;
/// Cap on tungstenite's outgoing buffer: the write buffer, one chunk and room for control
/// frames. Without a cap, the pongs answering a flood of pings from a client that does not
/// read piled up without bound (gigabytes in seconds); above it the next pong replaces the one
/// waiting (RFC 6455 5.5.3 allows answering only the most recent ping).
const MAX_WRITE_BUFFER: usize = WRITE_BUFFER + WRITE_CHUNK + 16 * 1024;
/// How long shutdown waits for the peer to answer our close frame.
pub const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// The subprotocols answered, in MQTT 3.1.1/5.0 and MQTT 3.1 spelling.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The WebSocket settings of one listener.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// None: any path (Mosquitto's behaviour).
    path: Option<String>,
    config: WebSocketConfig,
}

impl WsSettings {
    /// Upgrades on `path` (any path when None); messages and frames up to `max_packet_size` +
    /// [`MESSAGE_SLACK`].
    pub fn new(path: Option<&str>, max_packet_size: u32) -> WsSettings {
        let limit = (max_packet_size as usize).saturating_add(MESSAGE_SLACK);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        WsSettings {
            path: path.map(str::to_owned),
            config,
        }
    }

    /// The upgrade path; None: any.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

/// Why a WebSocket upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The request was answered with an HTTP error (wrong path, not an upgrade).
    #[error("upgrade refused with HTTP {status}: {reason}")]
    Refused { status: StatusCode, reason: String },
    /// The connection failed during the upgrade.
    #[error("WebSocket upgrade failed: {0}")]
    Handshake(#[from] WsProtoError),
}

/// Runs the server side of the upgrade on `stream` and returns the MQTT byte stream.
// The callback's error type is tungstenite's, large by design and built once per refusal.
#[allow(clippy::result_large_err)]
pub async fn accept<S>(mut stream: S, settings: &WsSettings) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = settings.path.as_deref();
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if path.is_some_and(|p| req.uri().path() != p) {
            return Err(http_error(StatusCode::NOT_FOUND, "no MQTT endpoint here"));
        }
        if let Some(proto) = pick_subprotocol(req) {
            resp.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, proto);
        }
        Ok(resp)
    };
    // The handshake runs on a borrow so that a malformed request can still be answered with a
    // 400 below; tungstenite itself closes without a response. It reads exactly the request
    // (trailing bytes are an error), so nothing is buffered when the stream is taken back.
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        &mut stream,
        callback,
        Some(settings.config),
    )
    .await;
    match handshake {
        Ok(ws) => drop(ws),
        Err(WsProtoError::Http(resp)) => {
            let reason = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err(WsError::Refused {
                status: resp.status(),
                reason,
            });
        }
        Err(
            e @ (WsProtoError::Protocol(_)
            | WsProtoError::HttpFormat(_)
            | WsProtoError::Capacity(_)
            | WsProtoError::Utf8(_)
            | WsProtoError::Url(_)),
        ) => {
            let reason = e.to_string();
            let body = format!("not a valid WebSocket upgrade: {reason}\n");
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
            return Err(WsError::Refused {
                status: StatusCode::BAD_REQUEST,
                reason,
            });
        }
        Err(e) => return Err(WsError::Handshake(e)),
    }
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(settings.config)).await;
    Ok(WsStream::new(ws))
}

fn http_error(status: StatusCode, body: &str) -> ErrorResponse {
    let body = format!("{body}\n");
    let mut resp = ErrorResponse::new(None);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    *resp.body_mut() = Some(body);
    resp
}

/// The first subprotocol the client offers that MQTT answers to, spelt as the client did.
fn pick_subprotocol(req: &Request) -> Option<HeaderValue> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(p)))
        .and_then(|p| HeaderValue::from_str(p).ok())
}

/// A WebSocket connection as an MQTT byte stream. See the module documentation.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the current binary message.
    pending: Bytes,
    /// The peer closed (or broke the protocol): reads return end of stream.
    read_closed: bool,
    /// The close frame to send at shutdown instead of a plain close.
    close_frame: Option<CloseFrame>,
    /// Limit on waiting for the peer's close frame at shutdown, started at the first wait.
    linger: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Wraps an established WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            inner,
            pending: Bytes::new(),
            read_closed: false,
            close_frame: None,
            linger: None,
        }
    }

    /// The underlying stream (for example the TLS session, to read the client certificate).
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

fn to_io(e: WsProtoError) -> io::Error {
    match e {
        WsProtoError::Io(e) => e,
        WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let next = ready!(Pin::new(&mut this.inner).poll_next(cx));
            match next {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    this.read_closed = true;
                    this.close_frame = Some(CloseFrame {
                        code: CloseCode::Unsupported,
                        reason: "MQTT uses binary messages".into(),
                    });
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message: MQTT needs binary messages [MQTT-6.0.0-1]",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => {
                    this.read_closed = true;
                }
                Some(Err(WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed)) => {
                    this.read_closed = true;
                }
                Some(Err(e)) => {
                    this.read_closed = true;
                    this.close_frame = match e {
                        WsProtoError::Capacity(_) => Some(CloseFrame {
                            code: CloseCode::Size,
                            reason: "message too large".into(),
                        }),
                        WsProtoError::Protocol(_) => Some(CloseFrame {
                            code: CloseCode::Protocol,
                            reason: "WebSocket protocol error".into(),
                        }),
                        _ => None,
                    };
                    return Poll::Ready(Err(to_io(e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(WRITE_CHUNK);
        Pin::new(&mut this.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.close_frame.is_some() {
            match ready!(Pin::new(&mut this.inner).poll_ready(cx)) {
                Ok(()) => {
                    let frame = this.close_frame.take();
                    // An error here means the connection is already closing; poll_close below
                    // finishes it either way.
                    let _ = Pin::new(&mut this.inner).start_send(Message::Close(frame));
                }
                Err(_) => this.close_frame = None,
            }
        }
        match ready!(Pin::new(&mut this.inner).poll_close(cx)) {
            Ok(()) | Err(WsProtoError::ConnectionClosed | WsProtoError::AlreadyClosed) => {}
            Err(e) => return Poll::Ready(Err(to_io(e))),
        }
        // Complete the closing handshake: wait (briefly) for the peer's close frame, so that
        // the TCP connection is not gone while the client is still answering.
        let linger = this
            .linger
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_LINGER)));
        while !this.read_closed {
            if linger.as_mut().poll(cx).is_ready() {
                break;
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                // Data after our close is dropped: the connection is ending.
                Some(Ok(Message::Binary(_) | Message::Text(_)))
                | Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => this.read_closed = true,
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
