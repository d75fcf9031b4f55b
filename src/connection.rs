//! One task per client connection: reads CONNECT under the connect timeout, then runs one
//! `select!` loop over the socket (reads and writes as separate arms), the session's delivery
//! queue (gated by the inflight window), the keep-alive deadline, control requests (takeover) and
//! shutdown. Protocol decisions live in [`crate::protocol`]; this file owns I/O and framing.
//!
//! Backpressure: the write buffer is filled from the session queue only while it is below
//! `WRITE_HIGH`, so a client that does not read leaves its messages in its own bounded queue;
//! reads pause while the broker's global queue budget is saturated (for connections that publish).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::broker::BrokerState;
use crate::codec::{self, DecodeError, Packet, ProtocolVersion, ReasonCode};
use crate::protocol::{Close, ConnectOutcome, Handler};
use crate::session::Control;
use crate::transport::ConnectionInfo;

/// Fill the write buffer from the session queue only below this many bytes.
const WRITE_HIGH: usize = 64 * 1024;
/// Read at least this much per read call.
const READ_CHUNK: usize = 4096;
/// Above this, an emptied read buffer is released so idle connections stay small.
const READ_KEEP: usize = 16 * 1024;

/// Serves one client connection until it ends. Never panics on peer input; every close is
/// logged with its reason.
pub async fn serve<S>(stream: S, info: ConnectionInfo, broker: Arc<BrokerState>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer = info.peer;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::new();
    let timeout = broker.config.mqtt.connect_timeout;
    let max_in = broker.config.mqtt.max_packet_size;
    let connect = tokio::time::timeout(timeout, read_connect(&mut reader, &mut rbuf, max_in)).await;
    let connect = match connect {
        Err(_) => {
            tracing::info!(%peer, "closing: no CONNECT within the connect timeout");
            return;
        }
        Ok(Err(ConnectError::Io(e))) => {
            tracing::debug!(%peer, error = %e, "closed before CONNECT");
            return;
        }
        Ok(Err(ConnectError::Protocol(e))) => {
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
                let _ = writer.write_all(&out).await;
                tracing::info!(%peer, level, "refused: unsupported protocol level");
            } else {
                tracing::info!(%peer, reason = %e, "closing: bad first packet");
            }
            return;
        }
        Ok(Ok(c)) => c,
    };
    broker.metrics.connects.inc();
    let mut wbuf = BytesMut::new();
    let outcome = Handler::connect(&broker, connect, peer, &mut wbuf).await;
    let (handler, control) = match outcome {
        ConnectOutcome::Refused => {
            let _ = writer.write_all(&wbuf).await;
            let _ = writer.shutdown().await;
            return;
        }
        ConnectOutcome::Accepted(h, control) => (h, control),
    };
    let mut conn = Connection {
        broker,
        handler: *handler,
        reader,
        writer,
        rbuf,
        wbuf,
        needs_flush: false,
        want_pump: true,
        control,
        last_read: Instant::now(),
    };
    let close = conn.run().await;
    conn.finish(close).await;
}

enum ConnectError {
    Io(std::io::Error),
    Protocol(DecodeError),
}

/// Reads until a whole CONNECT is buffered. The first packet must be CONNECT [MQTT-3.1.0-1].
async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    max: u32,
) -> Result<Box<codec::Connect>, ConnectError> {
    loop {
        match codec::decode(rbuf, ProtocolVersion::V311, max) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(other)) => {
                return Err(ConnectError::Io(std::io::Error::other(format!(
                    "[MQTT-3.1.0-1] first packet was {}, not CONNECT",
                    other.name()
                ))))
            }
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Protocol(e)),
        }
        rbuf.reserve(512);
        match reader.read_buf(rbuf).await {
            Ok(0) => {
                return Err(ConnectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
}

struct Connection<S> {
    broker: Arc<BrokerState>,
    handler: Handler,
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// A write completed since the last flush (TLS and WebSocket buffer inside the stream).
    needs_flush: bool,
    /// The session queue may hold something this connection can send now.
    want_pump: bool,
    control: tokio::sync::mpsc::Receiver<Control>,
    last_read: Instant,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Connection<S> {
    async fn run(&mut self) -> Close {
        let keep_alive = self.handler.keep_alive_timeout();
        let shutdown = self.broker.shutdown.clone();
        loop {
            if self.want_pump && self.wbuf.len() < WRITE_HIGH {
                self.want_pump = self.handler.pump(&mut self.wbuf, WRITE_HIGH);
            }
            // A client that does not read its acks stops being read (TCP backpressure), so its
            // write buffer stays bounded.
            let backed_up = self.wbuf.len() >= WRITE_HIGH * 2;
            let paused = self.broker.budget.is_saturated() && self.handler.should_pause_reads();
            let deadline = keep_alive.map(|k| self.last_read + k);
            let writing = !self.wbuf.is_empty() || self.needs_flush;
            tokio::select! {
                biased;
                // Cancellation-safe: a token check.
                _ = shutdown.cancelled() => return Close::ServerShutdown,
                // Cancellation-safe: mpsc recv loses nothing when dropped.
                ctl = self.control.recv() => match ctl {
                    Some(Control::TakenOver) => return Close::TakenOver,
                    Some(Control::Disconnect(rc)) => return Close::Server(rc, "closed by the server"),
                    None => return Close::TakenOver,
                },
                // Cancellation-safe: write_buf advances the buffer only by what was written.
                r = write_some(&mut self.writer, &mut self.wbuf, &mut self.needs_flush), if writing => {
                    match r {
                        Ok(n) => self.broker.metrics.bytes_sent.add(n as u64),
                        Err(e) => return Close::Io(e),
                    }
                    if self.wbuf.len() < WRITE_HIGH / 2 {
                        self.want_pump = true;
                    }
                }
                // Cancellation-safe: read_buf appends only what it read.
                r = read_some(&mut self.reader, &mut self.rbuf), if !paused && !backed_up => {
                    match r {
                        Ok(0) => return Close::PeerClosed,
                        Ok(n) => {
                            self.broker.metrics.bytes_received.add(n as u64);
                            self.last_read = Instant::now();
                            if let Err(close) = self.decode_all() {
                                return close;
                            }
                        }
                        Err(e) => return Close::Io(e),
                    }
                }
                // Cancellation-safe: a dropped Notified passes its permit on.
                _ = self.handler.session().notified(), if !self.want_pump => {
                    self.want_pump = true;
                }
                _ = self.broker.budget.relieved(), if paused => {}
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if let Some(k) = keep_alive {
                        if self.last_read.elapsed() >= k {
                            return Close::KeepAliveTimeout;
                        }
                    }
                }
            }
        }
    }

    /// Handles every whole packet in the read buffer.
    fn decode_all(&mut self) -> Result<(), Close> {
        let max_in = self.broker.config.mqtt.max_packet_size;
        loop {
            match codec::decode(&mut self.rbuf, self.handler.version(), max_in) {
                Ok(Some(packet)) => {
                    self.broker.metrics.packets_received.inc();
                    if self.handler.handle(packet, &mut self.wbuf)? {
                        self.want_pump = true;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(Close::Decode(e)),
            }
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > READ_KEEP {
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Sends what the close requires (v5 DISCONNECT), flushes, and ends the session's
    /// connection (will, session end) through the handler.
    async fn finish(mut self, close: Close) {
        self.handler.closing(&close, &mut self.wbuf);
        if !self.wbuf.is_empty() && close.can_write() {
            let flush = async {
                self.writer.write_all(&self.wbuf).await?;
                self.writer.flush().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
        self.handler.finish(close);
    }
}

async fn write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    wbuf: &mut BytesMut,
    needs_flush: &mut bool,
) -> std::io::Result<usize> {
    let mut n = 0;
    if !wbuf.is_empty() {
        n = writer.write_buf(wbuf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *needs_flush = true;
        if !wbuf.is_empty() {
            return Ok(n);
        }
    }
    writer.flush().await?;
    *needs_flush = false;
    Ok(n)
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
) -> std::io::Result<usize> {
    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
        rbuf.reserve(READ_CHUNK);
    }
    reader.read_buf(rbuf).await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
