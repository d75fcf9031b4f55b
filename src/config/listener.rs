//! One `[[listeners]]` entry: where it binds (TCP address or unix socket), the transport it
//! speaks and its per-listener settings (TLS files, WebSocket path, handshake limit, PROXY
//! protocol, limits).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// One `[[listeners]]` entry.
///
/// The TLS keys (`cert`, `key`, `ca`, `require_certificate`, `use_identity_as_username`,
/// `use_subject_as_username`) are only valid on `mqtts` and `wss` listeners, `path` only on `ws`
/// and `wss`, `mode`/`owner`/`group` only on unix-socket listeners and `proxy_protocol_trusted`
/// only with `proxy_protocol`. Optional keys are left out when rendered, so `check-config` shows
/// only what applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to bind, e.g. `"0.0.0.0:1883"` or `"[::]:1883"`, or a unix socket,
    /// `"unix:/run/starling/starling.sock"`. Port 0 picks a free port (useful in tests; the
    /// broker reports the real address).
    pub bind: BindAddr,
    /// Transport spoken on this listener.
    pub protocol: ListenerProtocol,
    /// Length of the listen queue: connections the kernel completes before the broker accepts
    /// them. The kernel caps it at `net.core.somaxconn` (4096 on recent Linux). At least 1.
    pub backlog: u32,
    /// Cap on concurrent connections accepted by this listener, on top of the global
    /// `limits.max_connections`. Absent means only the global limit applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// PUBLISH packets per second all connections of this listener may send together (one
    /// token bucket, one second of burst), on top of the per-client `limits.max_publish_rate`.
    /// Above it MQTT 5 clients are disconnected with 0x96 and 3.x clients slowed by not reading
    /// their socket, as for the per-client limit. Absent means no listener limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_publish_rate: Option<u64>,
    /// PUBLISH payload bytes per second all connections of this listener may send together, on
    /// top of the per-client `limits.max_publish_bandwidth`. Above it MQTT 5 QoS 1/2 publishes
    /// are refused with 0x97 (QoS 0 dropped) and 3.x clients slowed by not reading their
    /// socket. Absent means no listener limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_publish_bandwidth: Option<u64>,
    /// PEM file with the server certificate chain, leaf first (`mqtts`, `wss`; required there).
    /// Reloaded when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1; `mqtts`, `wss`;
    /// required there). Reloaded when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM bundle of CA certificates that client certificates are verified against. When set,
    /// clients are asked for a certificate; one that does not verify is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (mutual TLS). Requires `ca`.
    #[serde(skip_serializing_if = "is_false")]
    pub require_certificate: bool,
    /// Use the client certificate's Common Name as the MQTT username. Requires `ca`.
    #[serde(skip_serializing_if = "is_false")]
    pub use_identity_as_username: bool,
    /// Use the client certificate's subject, written as in RFC 2253 (e.g. `CN=dev1,O=Acme`),
    /// as the MQTT username. Requires `ca`; exclusive with `use_identity_as_username`.
    #[serde(skip_serializing_if = "is_false")]
    pub use_subject_as_username: bool,
    /// This listener's own `allow_anonymous` (Mosquitto's `per_listener_settings`). Absent
    /// means `auth.allow_anonymous` applies; see [`super::Config::listener_auth`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// This listener's own password file. Absent means `auth.password_file` applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// This listener's own ACL file. Absent means `auth.acl_file` applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
    /// HTTP path WebSocket clients must upgrade on (`ws`, `wss`). Absent means any path, as
    /// Mosquitto serves WebSocket clients (`ws://host:9001` and `ws://host:9001/mqtt` alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Time a new connection has for its transport handshake: the PROXY header, the TLS
    /// handshake, the WebSocket upgrade, and on plain `mqtt` listeners everything up to a
    /// complete CONNECT. Absent means `mqtt.connect_timeout` on `mqtt` listeners and
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] on the others; see [`ListenerConfig::handshake_timeout`].
    #[serde(
        with = "duration::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub handshake_timeout: Option<Duration>,
    /// Permissions of the socket file of a unix-socket listener, an octal string like
    /// `"0660"`. Absent means what the umask leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// User (name or numeric id) that owns the socket file of a unix-socket listener; changing
    /// it needs root (or CAP_CHOWN). Absent means the broker's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group (name or numeric id) of the socket file of a unix-socket listener. Absent means
    /// the broker's group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, as haproxy and most
    /// load balancers send), read before TLS, WebSocket and MQTT; the client address it carries
    /// is the one logs, the login slowdown and `$SYS` use. A connection without one is closed.
    #[serde(skip_serializing_if = "is_false")]
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: the peers (CIDRs) allowed to send a PROXY header; a connection
    /// from any other is refused, or any client could claim any address. Absent means loopback
    /// only, [`DEFAULT_PROXY_TRUSTED`]. Unix-socket peers are always trusted: the socket file's
    /// permissions decide who connects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol_trusted: Option<Vec<Cidr>>,
}

/// The peers trusted to send PROXY headers when `proxy_protocol_trusted` is absent.
pub const DEFAULT_PROXY_TRUSTED: [&str; 2] = ["127.0.0.1/32", "::1/128"];

/// The listen queue length used when a listener has no `backlog`: a burst of a thousand
/// connects is queued rather than left to SYN retries.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// The transport handshake time used when a listener has no `handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn is_false(b: &bool) -> bool {
    !*b
}

impl ListenerConfig {
    /// The WebSocket upgrade path the listener insists on; None: any path.
    pub fn ws_path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The transport handshake time limit: `handshake_timeout`, or else `connect_timeout`
    /// (`mqtt.connect_timeout`) on plain `mqtt` listeners, where the handshake is CONNECT
    /// itself, and [`DEFAULT_HANDSHAKE_TIMEOUT`] on the others.
    pub fn handshake_timeout(&self, connect_timeout: Duration) -> Duration {
        match (self.handshake_timeout, self.protocol) {
            (Some(t), _) => t,
            (None, ListenerProtocol::Mqtt) => connect_timeout,
            (None, _) => DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// The permission bits of a `mode` string: octal, like `"0660"` or `"660"`, at most
    /// `0777` (no set-id or sticky bits, which mean nothing on a socket).
    pub fn parse_mode(mode: &str) -> Result<u32, String> {
        match u32::from_str_radix(mode.trim(), 8) {
            Ok(m) if m <= 0o777 => Ok(m),
            _ => Err(format!(
                "{mode:?} is not a permission mode: an octal number like \"0660\", at most \"0777\""
            )),
        }
    }

    /// The peers trusted to send PROXY headers: `proxy_protocol_trusted`, or
    /// [`DEFAULT_PROXY_TRUSTED`].
    pub fn proxy_trusted(&self) -> Vec<Cidr> {
        match &self.proxy_protocol_trusted {
            Some(list) => list.clone(),
            None => DEFAULT_PROXY_TRUSTED
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: BindAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 1883))),
            protocol: ListenerProtocol::Mqtt,
            backlog: DEFAULT_BACKLOG,
            max_connections: None,
            max_publish_rate: None,
            max_publish_bandwidth: None,
            cert: None,
            key: None,
            ca: None,
            require_certificate: false,
            use_identity_as_username: false,
            use_subject_as_username: false,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            path: None,
            handshake_timeout: None,
            mode: None,
            owner: None,
            group: None,
            proxy_protocol: false,
            proxy_protocol_trusted: None,
        }
    }
}

/// Transport of a listener, written in lower case in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    #[default]
    Mqtt,
    /// MQTT over TLS.
    Mqtts,
    /// MQTT over WebSocket (binary messages, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerProtocol {
    /// The TOML spelling, used in error messages so they match what the user wrote.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Mqtt => "mqtt",
            ListenerProtocol::Mqtts => "mqtts",
            ListenerProtocol::Ws => "ws",
            ListenerProtocol::Wss => "wss",
        }
    }

    /// Whether the listener speaks TLS (`mqtts`, `wss`).
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerProtocol::Mqtts | ListenerProtocol::Wss)
    }

    /// Whether the listener speaks WebSocket (`ws`, `wss`).
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerProtocol::Ws | ListenerProtocol::Wss)
    }
}

impl fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a listener accepts connections: a TCP address, or a unix socket written
/// `unix:/path/to.sock` in TOML (any other string is parsed as `address:port`, so every
/// existing configuration keeps its meaning).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// An IP address and port.
    Tcp(SocketAddr),
    /// The path of a unix domain socket.
    Unix(PathBuf),
}

/// The prefix that makes a `bind` value a unix socket path.
pub const UNIX_PREFIX: &str = "unix:";

impl BindAddr {
    /// The TCP address, on TCP listeners.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            BindAddr::Tcp(a) => Some(*a),
            BindAddr::Unix(_) => None,
        }
    }

    /// Whether only this host can connect: a loopback address or a unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            BindAddr::Tcp(a) => a.ip().is_loopback(),
            BindAddr::Unix(_) => true,
        }
    }
}

impl From<SocketAddr> for BindAddr {
    fn from(a: SocketAddr) -> BindAddr {
        BindAddr::Tcp(a)
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => a.fmt(f),
            BindAddr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<BindAddr, String> {
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        s.parse().map(BindAddr::Tcp).map_err(|_| {
            format!(
                "{s:?} is not an address and port like \"0.0.0.0:1883\" or \"[::]:1883\", nor \
                 a unix socket like \"unix:/run/starling/starling.sock\""
            )
        })
    }
}

impl Serialize for BindAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BindAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BindAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IP network, `address/prefix-length` (`"10.0.0.0/8"`, `"::1/128"`); a bare address means
/// that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix.min(bits));
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not a network like \"10.0.0.0/8\" or \"::1/128\"");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
