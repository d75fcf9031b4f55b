//! MQTT 3.1.1 on the wire, for the bench.
//!
//! Setup packets (CONNECT/CONNACK, SUBSCRIBE/SUBACK) go through Starling's own codec. The hot
//! path does not: [`PublishTemplate`] writes a PUBLISH by copying a pre-encoded packet and
//! patching the packet id and the 16-byte payload header, and [`parse`] frames incoming packets
//! in place, borrowing topic and payload from the read buffer. Neither allocates.

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use starling::codec::{
    decode, encode, Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const V: ProtocolVersion = ProtocolVersion::V311;
/// Largest setup packet we accept from the broker.
const SETUP_MAX: u32 = 1 << 20;

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;

/// Bytes of the bench header at the start of every payload: send time (ns, CLOCK_MONOTONIC,
/// u64 LE), publisher id (u32 LE), sequence number (u32 LE).
pub const HEADER: usize = 16;

/// Appends a 4-byte ack (PUBACK, PUBREC, PUBREL or PUBCOMP).
#[inline]
pub fn push_ack(out: &mut Vec<u8>, first_byte: u8, packet_id: u16) {
    let id = packet_id.to_be_bytes();
    out.extend_from_slice(&[first_byte, 0x02, id[0], id[1]]);
}

/// The decoded bench header of a payload.
pub struct Stamp {
    pub sent_ns: u64,
    pub publisher: u32,
    pub seq: u32,
}

#[inline]
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let h: &[u8; HEADER] = payload.get(..HEADER)?.try_into().ok()?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&h[0..8]);
    let mut id = [0u8; 4];
    id.copy_from_slice(&h[8..12]);
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&h[12..16]);
    Some(Stamp {
        sent_ns: u64::from_le_bytes(ts),
        publisher: u32::from_le_bytes(id),
        seq: u32::from_le_bytes(seq),
    })
}

/// A fully encoded PUBLISH for one publisher; each message patches packet id and stamp.
pub struct PublishTemplate {
    bytes: Vec<u8>,
    packet_id_at: Option<usize>,
    payload_at: usize,
}

impl PublishTemplate {
    pub fn new(topic: &str, qos: u8, size: usize, publisher: u32) -> anyhow::Result<Self> {
        let size = size.max(HEADER);
        let topic_len = u16::try_from(topic.len()).map_err(|_| anyhow!("topic too long"))?;
        let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + size;
        if remaining > 268_435_455 {
            bail!("payload too large for one MQTT packet");
        }
        let mut bytes = Vec::with_capacity(remaining + 5);
        bytes.push(0x30 | (qos << 1));
        let mut x = remaining;
        loop {
            let mut b = (x % 128) as u8;
            x /= 128;
            if x > 0 {
                b |= 0x80;
            }
            bytes.push(b);
            if x == 0 {
                break;
            }
        }
        bytes.extend_from_slice(&topic_len.to_be_bytes());
        bytes.extend_from_slice(topic.as_bytes());
        let packet_id_at = (qos > 0).then(|| {
            bytes.extend_from_slice(&[0, 0]);
            bytes.len() - 2
        });
        let payload_at = bytes.len();
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&publisher.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.resize(payload_at + size, b'.');
        Ok(PublishTemplate {
            bytes,
            packet_id_at,
            payload_at,
        })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one PUBLISH: a copy of the template with packet id, send time and seq patched.
    #[inline]
    pub fn append(&self, out: &mut Vec<u8>, packet_id: u16, sent_ns: u64, seq: u32) {
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.packet_id_at {
            out[base + at..base + at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        let p = base + self.payload_at;
        out[p..p + 8].copy_from_slice(&sent_ns.to_le_bytes());
        out[p + 12..p + 16].copy_from_slice(&seq.to_le_bytes());
    }
}

/// An incoming packet, borrowed from the read buffer.
pub enum In<'a> {
    Publish {
        qos: u8,
        packet_id: u16,
        payload: &'a [u8],
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    PingResp,
    /// Any other packet type.
    Other,
}

/// Frames one packet at the front of `buf`. `Ok(None)` means "need more bytes"; otherwise the
/// packet and how many bytes it used.
#[inline]
pub fn parse(buf: &[u8]) -> anyhow::Result<Option<(In<'_>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut remaining = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        remaining |= ((b & 0x7F) as usize) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            bail!("malformed remaining length from broker");
        }
    }
    let total = i + remaining;
    let Some(body) = buf.get(i..total) else {
        return Ok(None);
    };
    let first = buf[0];
    let id = |body: &[u8]| -> anyhow::Result<u16> {
        match body {
            [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
            _ => bail!("short packet (type {}) from broker", first >> 4),
        }
    };
    let pkt = match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let topic_len = id(body)? as usize;
            let mut at = 2 + topic_len;
            let mut packet_id = 0;
            if qos > 0 {
                packet_id = id(body.get(at..).unwrap_or(&[]))?;
                at += 2;
            }
            let Some(payload) = body.get(at..) else {
                bail!("PUBLISH shorter than its topic from broker");
            };
            In::Publish {
                qos,
                packet_id,
                payload,
            }
        }
        4 => In::PubAck(id(body)?),
        5 => In::PubRec(id(body)?),
        6 => In::PubRel(id(body)?),
        7 => In::PubComp(id(body)?),
        13 => In::PingResp,
        _ => In::Other,
    };
    Ok(Some((pkt, total)))
}

/// A growable read buffer: read into [`ReadBuf::spare`], parse [`ReadBuf::data`], then
/// [`ReadBuf::consume`] what was parsed. Leftover partial packets are moved to the front.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new(capacity: usize, initial: &[u8]) -> ReadBuf {
        let mut buf = vec![0; capacity.max(initial.len() * 2).max(64)];
        buf[..initial.len()].copy_from_slice(initial);
        ReadBuf {
            buf,
            start: 0,
            end: initial.len(),
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space after the data, compacting or growing so there is always some.
    pub fn spare(&mut self) -> &mut [u8] {
        let cap = self.buf.len();
        if cap - self.end < cap / 4 {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if cap - self.end < cap / 4 {
                // A packet larger than most of the buffer: grow.
                self.buf.resize(cap * 2, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// After a read: take whatever else the socket already holds, without waiting, until
    /// `limit` bytes are buffered. Parsing (and acknowledging) a larger batch means fewer
    /// syscalls, which on loopback are most of the bench's cost. Errors if the peer closed.
    pub fn drain_ready(&mut self, stream: &TcpStream, limit: usize) -> std::io::Result<()> {
        while self.end - self.start < limit {
            match stream.try_read(self.spare()) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "broker closed the connection",
                    ))
                }
                Ok(n) => self.filled(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A connected, accepted MQTT client: the socket and any bytes read past the last setup packet.
pub struct Conn {
    pub stream: TcpStream,
    pub leftover: BytesMut,
}

/// TCP connect from `source` (if given; port chosen by the kernel), CONNECT with the given
/// clean session flag, wait for a successful CONNACK.
pub async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    client_id: &str,
    keep_alive: u16,
    clean_session: bool,
) -> anyhow::Result<Conn> {
    let mut stream = tcp(target, source).await?;
    let leftover = mqtt_connect(&mut stream, client_id, keep_alive, clean_session).await?;
    Ok(Conn { stream, leftover })
}

/// A TCP connection to `target` from `source` (if given; port chosen by the kernel), with
/// `TCP_NODELAY`.
pub async fn tcp(target: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = sock
        .connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// CONNECT on an open stream (TCP or TLS) and wait for a successful CONNACK; returns the bytes
/// read past it.
pub async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    client_id: &str,
    keep_alive: u16,
    clean_session: bool,
) -> anyhow::Result<BytesMut> {
    let mut out = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(Connect {
            protocol: V,
            clean_start: clean_session,
            keep_alive,
            client_id: client_id.to_string(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            bridge: false,
        })),
        V,
        &mut out,
    );
    stream.write_all(&out).await?;
    // TLS buffers writes until flushed; on TCP this is a no-op.
    stream.flush().await?;
    let mut leftover = BytesMut::with_capacity(256);
    match read_setup_packet(stream, &mut leftover).await? {
        Packet::ConnAck(c) if c.code == ReasonCode::V3_ACCEPTED => {}
        Packet::ConnAck(c) => bail!("CONNACK refused with return code {}", c.code.0),
        p => bail!("expected CONNACK, got {}", p.name()),
    }
    Ok(leftover)
}

impl Conn {
    /// SUBSCRIBE to one filter without waiting for the SUBACK, for a caller that reads the
    /// stream itself (retained messages may come right behind it).
    pub async fn subscribe_no_wait(&mut self, filter: &str, qos: u8) -> anyhow::Result<()> {
        let qos_v = QoS::from_u8(qos).ok_or_else(|| anyhow!("bad QoS {qos}"))?;
        let mut out = BytesMut::new();
        encode(
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(filter.to_string(), SubscriptionOptions::new(qos_v))],
                properties: Default::default(),
            }),
            V,
            &mut out,
        );
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// SUBSCRIBE to one filter and wait for its SUBACK; fails if the broker refuses it.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> anyhow::Result<()> {
        self.subscribe_no_wait(filter, qos).await?;
        match read_setup_packet(&mut self.stream, &mut self.leftover).await? {
            Packet::SubAck(s) => match s.reasons.first() {
                Some(r) if r.is_error() => bail!("SUBSCRIBE {filter} refused (0x{:02x})", r.0),
                Some(r) if r.0 != qos => {
                    bail!(
                        "SUBSCRIBE {filter}: asked QoS {qos}, broker granted {}",
                        r.0
                    )
                }
                Some(_) => Ok(()),
                None => bail!("SUBACK without a return code"),
            },
            p => bail!("expected SUBACK, got {}", p.name()),
        }
    }
}

async fn read_setup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> anyhow::Result<Packet> {
    loop {
        if let Some(p) = decode(buf, V, SETUP_MAX).map_err(|e| anyhow!("from broker: {e}"))? {
            return Ok(p);
        }
        buf.reserve(256);
        if stream.read_buf(buf).await? == 0 {
            bail!("broker closed the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_round_trips_through_parse() {
        for qos in 0..=2u8 {
            let t = PublishTemplate::new("bench/x/in/3", qos, 200, 7).expect("template");
            let mut out = Vec::new();
            t.append(&mut out, 513, 123_456_789, 42);
            t.append(&mut out, 514, 5, 43);
            assert_eq!(out.len(), 2 * t.len());
            let (p, n) = parse(&out).expect("ok").expect("whole");
            assert_eq!(n, t.len());
            let In::Publish {
                qos: q,
                packet_id,
                payload,
            } = p
            else {
                panic!("not a publish");
            };
            assert_eq!(q, qos);
            assert_eq!(packet_id, if qos > 0 { 513 } else { 0 });
            assert_eq!(payload.len(), 200);
            let s = read_stamp(payload).expect("stamp");
            assert_eq!((s.sent_ns, s.publisher, s.seq), (123_456_789, 7, 42));
            // Truncated input is "need more", never an error.
            for cut in 0..t.len() {
                assert!(parse(&out[..cut]).expect("ok").is_none());
            }
        }
    }

    #[test]
    fn parses_acks_and_large_lengths() {
        let mut out = Vec::new();
        push_ack(&mut out, PUBREL, 0xBEEF);
        out.extend_from_slice(&[0xD0, 0]);
        let (p, n) = parse(&out).expect("ok").expect("whole");
        assert!(matches!(p, In::PubRel(0xBEEF)) && n == 4);
        let (p, n) = parse(&out[4..]).expect("ok").expect("whole");
        assert!(matches!(p, In::PingResp) && n == 2);
        let t = PublishTemplate::new("t", 1, 20_000, 1).expect("template");
        let mut big = Vec::new();
        t.append(&mut big, 1, 1, 1);
        assert_eq!(big[1] & 0x80, 0x80);
        assert_eq!(parse(&big).expect("ok").expect("whole").1, big.len());
        assert!(parse(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        assert!(parse(&[0x40, 0x01, 0x00]).is_err());
    }

    #[test]
    fn read_buf_compacts_and_grows() {
        let mut rb = ReadBuf::new(64, &[1, 2, 3]);
        assert_eq!(rb.data(), &[1, 2, 3]);
        let n = rb.spare().len();
        rb.filled(n);
        rb.consume(2);
        assert!(!rb.spare().is_empty());
        assert_eq!(rb.data()[0], 3);
        let n = rb.spare().len();
        rb.filled(n);
        assert!(rb.spare().len() >= 64);
    }
}
