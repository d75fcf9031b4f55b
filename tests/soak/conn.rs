//! A raw MQTT 3.1.1 / 5.0 connection for the soak clients: packets are encoded and decoded with
//! `starling::codec`, writes are buffered with [`Conn::queue`] and sent with [`Conn::flush`].
//!
//! Nothing here panics on the network: a broker that closes, stalls or sends garbage shows up as
//! [`Got::Closed`] / [`Got::Timeout`] / `Err`, which the caller turns into a test failure with
//! context. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use starling::codec::{
    self, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound for a TCP connect, a CONNACK, a write, and a close the broker must make.
pub const IO_WAIT: Duration = Duration::from_secs(10);

/// What a bounded read produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Got {
    Packet(Packet),
    /// EOF, a socket error, or bytes the codec rejects (the text says which).
    Closed(String),
    Timeout,
}

/// One client connection.
pub struct Conn {
    pub name: String,
    pub version: ProtocolVersion,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Conn {
    /// Connects, sends CONNECT and returns the CONNACK (whatever its code).
    pub async fn open(addr: SocketAddr, c: Connect) -> Result<(Conn, ConnAck), String> {
        let name = c.client_id.clone();
        let stream = tokio::time::timeout(IO_WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{name}: TCP connect to {addr} timed out"))?
            .map_err(|e| format!("{name}: TCP connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut conn = Conn {
            name: name.clone(),
            version: c.protocol,
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::new(),
        };
        conn.send(&Packet::Connect(Box::new(c))).await?;
        match conn.recv(IO_WAIT).await {
            Got::Packet(Packet::ConnAck(ack)) => Ok((conn, ack)),
            Got::Timeout => Err(format!("{name}: no CONNACK within {IO_WAIT:?}")),
            other => Err(format!("{name}: expected CONNACK, got {other:?}")),
        }
    }

    /// Encodes `p` into the write buffer.
    pub fn queue(&mut self, p: &Packet) {
        codec::encode(p, self.version, &mut self.wbuf);
    }

    /// Writes the buffer out; a broker that stops reading makes this fail after [`IO_WAIT`].
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let out = self.wbuf.split();
        match tokio::time::timeout(IO_WAIT, self.stream.write_all(&out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: write: {e}", self.name)),
            Err(_) => Err(format!("{}: write blocked for {IO_WAIT:?}", self.name)),
        }
    }

    pub async fn send(&mut self, p: &Packet) -> Result<(), String> {
        self.queue(p);
        self.flush().await
    }

    /// The next packet, a close, or a timeout at `deadline`.
    pub async fn recv_until(&mut self, deadline: Instant) -> Got {
        loop {
            match codec::decode(&mut self.rbuf, self.version, u32::MAX) {
                Ok(Some(p)) => return Got::Packet(p),
                Ok(None) => {}
                Err(e) => return Got::Closed(format!("undecodable packet from the broker: {e}")),
            }
            self.rbuf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Err(_) => return Got::Timeout,
                Ok(Ok(0)) => return Got::Closed("EOF".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Got::Closed(e.to_string()),
            }
        }
    }

    pub async fn recv(&mut self, d: Duration) -> Got {
        self.recv_until(Instant::now() + d).await
    }

    /// Sends DISCONNECT (reason 0) and waits for the broker to close [MQTT-3.14.4-1].
    pub async fn disconnect(mut self) -> Result<(), String> {
        self.send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await?;
        self.await_close().await.map(|_| ())
    }

    /// Reads (and discards) until the broker closes the connection; returns the reason of a
    /// v5 DISCONNECT it sent first, if any. Err when the connection is still open after
    /// [`IO_WAIT`].
    pub async fn await_close(mut self) -> Result<Option<ReasonCode>, String> {
        let deadline = Instant::now() + IO_WAIT;
        let mut reason = None;
        loop {
            match self.recv_until(deadline).await {
                Got::Packet(Packet::Disconnect(d)) => reason = Some(d.reason),
                Got::Packet(_) => {}
                Got::Closed(_) => return Ok(reason),
                Got::Timeout => {
                    return Err(format!(
                        "{}: the broker did not close the connection within {IO_WAIT:?}",
                        self.name
                    ))
                }
            }
        }
    }
}

/// CONNECT with keep-alive 0. `persistent`: v3.1.1 uses Clean Session = `clean_start`; v5 sets
/// Session Expiry Interval 0xFFFFFFFF (never expires) when persistent, absent (0) otherwise.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    persistent: bool,
) -> Connect {
    let expiry = (version.is_v5() && persistent).then_some(u32::MAX);
    Connect {
        protocol: version,
        clean_start,
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

pub fn publish(topic: &str, payload: Bytes, qos: QoS, retain: bool, pid: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: topic.to_owned().into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        properties: Default::default(),
        payload,
    })
}

pub fn subscribe(pid: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid,
        filters: vec![(filter.to_owned(), SubscriptionOptions::new(qos))],
        properties: Default::default(),
    })
}

pub fn unsubscribe(pid: u16, filter: &str) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid,
        filters: vec![filter.to_owned()],
        properties: Default::default(),
    })
}

pub fn qos(n: u8) -> QoS {
    QoS::from_u8(n).expect("QoS 0..=2")
}
