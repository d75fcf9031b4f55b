//! The PROXY protocol (haproxy's, versions 1 and 2): the header a load balancer puts in front of
//! a connection to say which client it carries. On a `proxy_protocol = true` listener the header
//! is read first, before TLS, WebSocket and MQTT, and its source address becomes the client's.
//!
//! Framing only, written here rather than taken from a crate: the format is two small fixed
//! layouts, and reading straight from the socket lets us stop at the header's last byte, so the
//! bytes after it (a TLS ClientHello, an HTTP upgrade, CONNECT) stay in the socket for the next
//! layer without a buffering wrapper on every connection. Reads are bounded: a v1 line is at
//! most [`V1_MAX`] bytes (read byte by byte: at most 107 small reads, once per connection), a v2
//! header 16 bytes plus at most [`V2_MAX_BODY`].
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature, the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX: usize = 107;
/// The largest v2 body (addresses and TLVs) accepted. haproxy's own TLVs (ALPN, SNI, SSL
/// details, unique id) stay far below it; the 16-bit length field would allow 64 KiB.
pub const V2_MAX_BODY: usize = 2048;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxy relays a client: `source` is the client, `destination` the address it
    /// connected to on the proxy.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, or a v2 PROXY header with an address family we do not map (unix sockets,
    /// unspecified): the proxy relays someone it cannot name. The socket's peer stands in.
    Unknown,
    /// v2 LOCAL: the proxy's own connection (a health check). Served like any other, with the
    /// socket's peer as the client address, as the PROXY protocol specification requires.
    Local,
}

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection failed or ended inside the header.
    #[error("connection ended in the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The first bytes are neither a v1 nor a v2 header (a client that is not behind the proxy,
    /// or a proxy without `send-proxy`).
    #[error("no PROXY protocol header (the connection must come through a proxy that sends one)")]
    Missing,
    /// A header that does not follow the format.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Reads one PROXY header (v1 or v2) from `stream`, consuming exactly its bytes.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut start = [0u8; 8];
    stream.read_exact(&mut start).await?;
    if start == V2_SIGNATURE[..8] {
        let mut rest = [0u8; 8];
        stream.read_exact(&mut rest).await?;
        if rest[..4] != V2_SIGNATURE[8..] {
            return Err(ProxyError::Missing);
        }
        let len = usize::from(u16::from_be_bytes([rest[6], rest[7]]));
        if len > V2_MAX_BODY {
            return Err(ProxyError::Malformed("v2 header longer than 2048 bytes"));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        return parse_v2(rest[4], rest[5], &body);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyError::Missing);
    }
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(&start);
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed("v1 header longer than 107 bytes"));
        }
        line.push(stream.read_u8().await?);
    }
    parse_v1(&line)
}

/// Parses a v1 line, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (or `TCP6`, or `UNKNOWN`
/// followed by anything).
pub fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let bad = ProxyError::Malformed;
    let text = line
        .strip_suffix(b"\r\n")
        .and_then(|l| l.strip_prefix(b"PROXY "))
        .ok_or(bad("v1 header not of the form \"PROXY ...\\r\\n\""))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("v1 header is not ASCII"))?;
    let mut parts = text.split(' ');
    let family = parts.next().unwrap_or("");
    if family == "UNKNOWN" {
        return Ok(ProxyHeader::Unknown);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(bad("v1 header needs 4 fields after the protocol"));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| bad("v1 bad IPv4 source"))?),
            IpAddr::V4(dst.parse().map_err(|_| bad("v1 bad IPv4 destination"))?),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| bad("v1 bad IPv6 source"))?),
            IpAddr::V6(dst.parse().map_err(|_| bad("v1 bad IPv6 destination"))?),
        ),
        _ => return Err(bad("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    })
}

/// A v1 port: decimal, no sign, no leading zero.
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    match s.parse() {
        Ok(p) if ok => Ok(p),
        _ => Err(ProxyError::Malformed("v1 bad port")),
    }
}

/// Parses a v2 header from its version/command byte, family/transport byte and body.
pub fn parse_v2(ver_cmd: u8, family: u8, body: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let bad = ProxyError::Malformed;
    if ver_cmd >> 4 != 2 {
        return Err(bad("v2 version is not 2"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(ProxyHeader::Local),
        1 => {}
        _ => return Err(bad("v2 command is neither LOCAL nor PROXY")),
    }
    // Only stream transports carry MQTT; UNSPEC transports are "unknown".
    match (family >> 4, family & 0x0f) {
        (1, 1) => {
            let a = body.get(..12).ok_or(bad("v2 IPv4 addresses truncated"))?;
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (2, 1) => {
            let a = body.get(..36).ok_or(bad("v2 IPv6 addresses truncated"))?;
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        (0..=3, 0..=1) => Ok(ProxyHeader::Unknown),
        (_, 2) => Err(bad("v2 datagram transport on a stream listener")),
        _ => Err(bad("v2 unknown address family or transport")),
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
