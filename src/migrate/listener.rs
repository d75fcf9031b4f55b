//! Mosquitto `listener` blocks to Starling `[[listeners]]` tables.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use toml::Value;

use super::parse::Line;
use super::{Entry, Note};

/// Where a value came from: the value and the `file:line` of its option.
type Sourced<T> = Option<(T, String)>;

/// The Mosquitto options of one listener, gathered until the next `listener` line.
#[derive(Debug, Default)]
pub struct Draft {
    /// The `listener` line; `None` for Mosquitto's default listener (`port`, `bind_address`).
    pub line: Option<Line>,
    /// The port (`listener PORT` or `port`).
    pub port: Sourced<u16>,
    /// The bind address or host name (`listener PORT HOST` or `bind_address`).
    pub host: Sourced<String>,
    /// `socket_domain ipv6` (where it is) binds `[::]` when no host is given.
    pub ipv6: Option<String>,
    /// `protocol websockets`.
    pub websockets: Sourced<bool>,
    /// `certfile`.
    pub cert: Sourced<String>,
    /// `keyfile`.
    pub key: Sourced<String>,
    /// `cafile`.
    pub ca: Sourced<String>,
    /// `require_certificate`, `use_identity_as_username`, `use_subject_as_username`.
    pub flags: Vec<(&'static str, bool, String)>,
    /// `max_connections` (-1: no limit).
    pub max_connections: Sourced<i64>,
    /// `tls_version`.
    pub tls_version: Option<Line>,
    /// `allow_anonymous`, `password_file`, `acl_file` under `per_listener_settings true`: the
    /// listener's own auth keys, the last of each kept (as Mosquitto does).
    pub auth: Vec<(&'static str, Value, String)>,
    /// Some option was set on it (for the default listener: whether it exists at all).
    pub used: bool,
}

/// A translated listener: its `[[listeners]]` keys.
#[derive(Debug, Default)]
pub struct Listener {
    /// Its keys, each with its source.
    pub entries: Vec<Entry>,
}

impl Draft {
    /// `[[listeners]]` keys for this listener, or `None` when it cannot be translated (each
    /// reason added to `left_out`).
    pub fn finish(self, left_out: &mut Vec<Note>, warnings: &mut Vec<Note>) -> Option<Listener> {
        let origin = self.origin();
        let bind = match self.bind(warnings) {
            Ok(bind) => bind,
            Err(why) => {
                left_out.push(Note::new(&origin.1, &origin.0, why));
                return None;
            }
        };
        let mut out = Listener::default();
        let mut bind_from = vec![origin.1.clone()];
        for at in [self.host.as_ref().map(|h| &h.1), self.ipv6.as_ref()]
            .into_iter()
            .flatten()
        {
            if !bind_from.contains(at) {
                bind_from.push(at.clone());
            }
        }
        let bind_from = bind_from.join(", ");
        out.push("bind", Value::String(bind.to_string()), &bind_from);
        let tls = self.tls_pair(left_out);
        let protocol = match (self.websockets.as_ref().is_some_and(|w| w.0), tls) {
            (false, false) => "mqtt",
            (false, true) => "mqtts",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        let mut from = vec![origin.1.clone()];
        from.extend(self.websockets.iter().map(|w| w.1.clone()));
        from.extend(self.cert.iter().filter(|_| tls).map(|c| c.1.clone()));
        out.push("protocol", Value::String(protocol.into()), &from.join(", "));
        if tls {
            self.tls_keys(&mut out, left_out);
        }
        self.limits(&mut out, left_out);
        for (name, value, at) in &self.auth {
            out.push(name, value.clone(), at);
        }
        Some(out)
    }

    /// Sets one of the listener's own auth keys; a later line replaces an earlier one.
    pub fn set_auth(&mut self, name: &'static str, value: Value, at: String) {
        self.auth.retain(|(n, _, _)| *n != name);
        self.auth.push((name, value, at));
    }

    /// The options set on this listener, each with where.
    pub fn sources(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut add = |name: &'static str, at: Option<&String>| {
            if let Some(at) = at {
                out.push((name, at.clone()));
            }
        };
        add("protocol", self.websockets.as_ref().map(|w| &w.1));
        add("certfile", self.cert.as_ref().map(|w| &w.1));
        add("keyfile", self.key.as_ref().map(|w| &w.1));
        add("cafile", self.ca.as_ref().map(|w| &w.1));
        add(
            "max_connections",
            self.max_connections.as_ref().map(|w| &w.1),
        );
        let tls_at = self.tls_version.as_ref().map(Line::at);
        add("tls_version", tls_at.as_ref());
        for (name, _, at) in &self.flags {
            out.push((name, at.clone()));
        }
        for (name, _, at) in &self.auth {
            out.push((name, at.clone()));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// The option naming this listener and where it is.
    fn origin(&self) -> (String, String) {
        match (&self.line, &self.port) {
            (Some(l), _) => (format!("listener {}", l.rest), l.at()),
            (None, Some((p, at))) => (format!("port {p}"), at.clone()),
            (None, None) => ("default listener".into(), "(not set)".into()),
        }
    }

    /// The address to bind, as Mosquitto would: all interfaces without a host, a host name
    /// resolved now (with a warning).
    fn bind(&self, warnings: &mut Vec<Note>) -> Result<SocketAddr, String> {
        let port = match &self.port {
            Some((p, _)) => *p,
            None if self.line.is_none() => 1883,
            None => return Err("no port".into()),
        };
        let Some((host, at)) = &self.host else {
            if self.line.is_none() && self.port.is_none() {
                // Mosquitto 2's local only mode: no listener configured.
                return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            let any: IpAddr = if self.ipv6.is_some() {
                "::".parse().map_err(|_| "bad address")?
            } else {
                IpAddr::from([0, 0, 0, 0])
            };
            return Ok(SocketAddr::new(any, port));
        };
        if port == 0 {
            return Err("Unix domain socket listeners are not supported by Starling".into());
        }
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let resolved = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(|a| a.is_ipv4() != self.ipv6.is_some()));
        let Some(addr) = resolved else {
            return Err(format!(
                "cannot resolve host name {host}: Starling binds IP addresses"
            ));
        };
        warnings.push(Note::new(
            at,
            host,
            format!(
                "host name resolved now to {}; Starling binds IP addresses",
                addr.ip()
            ),
        ));
        Ok(addr)
    }

    /// Whether the listener speaks TLS: certfile and keyfile both given. One without the
    /// other is left out, as is cafile (and the certificate options) on a plain listener.
    fn tls_pair(&self, left_out: &mut Vec<Note>) -> bool {
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) => return true,
            (Some((_, at)), None) => left_out.push(Note::new(at, "certfile", "no keyfile")),
            (None, Some((_, at))) => left_out.push(Note::new(at, "keyfile", "no certfile")),
            (None, None) => {}
        }
        let why = "the listener has no certfile and keyfile: it is not a TLS listener";
        if let Some((_, at)) = &self.ca {
            left_out.push(Note::new(at, "cafile", why));
        }
        // Switched off, they are what a plain listener does anyway.
        for (name, _, at) in self.flags.iter().filter(|f| f.1) {
            left_out.push(Note::new(at, name, why));
        }
        if let Some(l) = &self.tls_version {
            left_out.push(Note::new(&l.at(), "tls_version", why));
        }
        false
    }

    fn tls_keys(&self, out: &mut Listener, left_out: &mut Vec<Note>) {
        for (key, v) in [("cert", &self.cert), ("key", &self.key), ("ca", &self.ca)] {
            if let Some((path, at)) = v {
                out.push(key, Value::String(path.clone()), at);
            }
        }
        for (name, on, at) in &self.flags {
            if self.ca.is_none() && *on {
                let why = "needs cafile, the CA bundle client certificates are checked against";
                left_out.push(Note::new(at, name, why));
            } else {
                out.push(name, Value::Boolean(*on), at);
            }
        }
        if let Some(l) = &self.tls_version {
            match l.rest.as_str() {
                "tlsv1.2" => {
                    out.comment(&l.at(), "tls_version tlsv1.2: Starling's minimum already")
                }
                "tlsv1.3" => left_out.push(Note::new(
                    &l.at(),
                    "tls_version",
                    "Starling also accepts TLS 1.2 (rustls allows 1.2 and 1.3)",
                )),
                _ => left_out.push(Note::new(
                    &l.at(),
                    "tls_version",
                    "Starling requires TLS 1.2 or 1.3",
                )),
            }
        }
    }

    fn limits(&self, out: &mut Listener, left_out: &mut Vec<Note>) {
        let Some((n, at)) = &self.max_connections else {
            return;
        };
        match usize::try_from(*n) {
            Ok(n) if n > 0 => out.push("max_connections", Value::Integer(n as i64), at),
            _ if *n == -1 => out.comment(at, "max_connections -1: no listener limit (the default)"),
            _ => left_out.push(Note::new(at, "max_connections", "must be -1 or at least 1")),
        }
    }
}

impl Listener {
    fn push(&mut self, key: &str, value: Value, from: &str) {
        self.entries.push(Entry::new(key, value, from));
    }

    fn comment(&mut self, from: &str, text: &str) {
        self.entries.push(Entry::comment(text, from));
    }
}
