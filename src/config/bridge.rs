//! `[[bridges]]`: connections from this broker to another MQTT broker, with the topics that
//! cross in each direction. The keys follow Mosquitto's bridge options (`address`, `topic`
//! lines, `cleansession`, `remote_clientid`, `notifications`, `bridge_cafile`, ...), so a
//! `connection` block translates one to one (see `starling migrate`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ConfigError};
use crate::codec::topic::{valid_topic_filter, valid_topic_name};

/// One bridge: the remote broker, how to log in to it, and the topics it exchanges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Names the bridge in logs, and in the default client ids (Mosquitto's `connection`).
    pub name: String,
    /// The remote broker, `host:port` or `host` (port 1883, or 8883 with TLS). A host name is
    /// resolved at every connection attempt.
    pub address: String,
    /// Brokers to try when `address` cannot be reached, in turn (Mosquitto's further
    /// `address` entries), each written as `address` is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_addresses: Vec<String>,
    /// `false` (default): `address` is the main broker; while connected to a fallback the
    /// bridge checks every `keepalive_interval` whether the main one accepts connections and
    /// goes back to it when it does. `true`: all addresses are equals, and a connection stays
    /// where it is until it fails.
    #[serde(default)]
    pub round_robin: bool,
    /// `"mqttv311"` (default), `"mqttv31"` or `"mqttv50"` (Mosquitto's
    /// `bridge_protocol_version`).
    #[serde(default)]
    pub protocol_version: BridgeProtocol,
    /// The client id at the remote broker; default `<host name>.<name>` (as Mosquitto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_clientid: Option<String>,
    /// The client id of the bridge's session in this broker; default
    /// `local.<remote client id>` (as Mosquitto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_clientid: Option<String>,
    /// Username at the remote broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_username: Option<String>,
    /// Password at the remote broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_password: Option<String>,
    /// `false` (default): both ends keep the bridge's session across reconnections, so
    /// messages published while the link is down wait and QoS 1/2 resume where they stopped.
    /// `true`: each connection starts afresh and what was not forwarded is dropped.
    #[serde(default)]
    pub cleansession: bool,
    /// Keep alive at the remote broker (Mosquitto's `keepalive_interval`); a link that brings
    /// nothing for one and a half times this is dropped and made again. 1s..=65535s.
    #[serde(with = "duration", default = "default_keepalive")]
    pub keepalive_interval: Duration,
    /// Wait before the first reconnection attempt; each failure doubles it, up to
    /// `restart_timeout_max` (Mosquitto's `restart_timeout base cap`).
    #[serde(with = "duration", default = "default_restart")]
    pub restart_timeout: Duration,
    /// The longest wait between attempts.
    #[serde(with = "duration", default = "default_restart_max")]
    pub restart_timeout_max: Duration,
    /// Tell the remote broker it is talking to a bridge (protocol level with its top bit set,
    /// 3.x only), so that it does not send back what the bridge published (loop prevention)
    /// and keeps RETAIN as published. Mosquitto, Starling and most brokers understand it;
    /// turn it off for one that refuses the CONNECT. MQTT 5 bridges use No Local instead.
    #[serde(default = "yes")]
    pub try_private: bool,
    /// Publish `1` (connected) and `0` (not connected), retained, to `notification_topic`
    /// here and at the remote broker (there as the will, too).
    #[serde(default = "yes")]
    pub notifications: bool,
    /// Publish the notifications only here.
    #[serde(default)]
    pub notifications_local_only: bool,
    /// Default `$SYS/broker/connection/<remote client id>/state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_topic: Option<String>,
    /// QoS 1/2 messages in flight to the remote broker at a time (lowered to its Receive
    /// Maximum under MQTT 5). 1..=65535.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// PEM CA bundle that signs the remote broker's certificate; setting it turns TLS on
    /// (Mosquitto's `bridge_cafile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cafile: Option<PathBuf>,
    /// PEM client certificate chain, for a remote broker that asks for one (with `keyfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certfile: Option<PathBuf>,
    /// PEM private key of `certfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyfile: Option<PathBuf>,
    /// The name the remote certificate must carry; default the host of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// In a cluster: `"one_node"` (default): this node runs the bridge for the whole
    /// cluster; it forwards every message the cluster routes, so configure it on one node
    /// only. `"each_node"`: the same bridge is configured on every node (one configuration
    /// for all); each node forwards only what was published on it, and one node at a time,
    /// holding a lease in NATS, brings the remote broker's messages in. The client ids get
    /// `.<node>` appended. Needs `[cluster]` with a `node` name.
    #[serde(default)]
    pub cluster: BridgeCluster,
    /// `[[bridges.topics]]`: what crosses, at least one.
    pub topics: Vec<BridgeTopic>,
}

/// Which nodes of a cluster run a bridge (see [`BridgeConfig::cluster`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeCluster {
    /// Only the node it is configured on, for the whole cluster.
    #[default]
    OneNode,
    /// Every node, each for what was published on it; inbound on the lease holder.
    EachNode,
}

/// The MQTT version a bridge speaks to the remote broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeProtocol {
    /// MQTT 3.1.
    Mqttv31,
    /// MQTT 3.1.1.
    #[default]
    Mqttv311,
    /// MQTT 5.0.
    Mqttv50,
}

/// One `topic` line: `pattern`, published here, goes out under `remote_prefix` (direction
/// `out`), or published there comes in under `local_prefix` (`in`), or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTopic {
    /// Topic filter, below the prefixes. May be empty when a prefix is set: the prefix is then
    /// the whole topic (as Mosquitto's `topic "" out 0 a/b c/d`).
    pub pattern: String,
    /// `"out"` (default), `"in"` or `"both"`.
    #[serde(default)]
    pub direction: Direction,
    /// The QoS of the subscriptions (here for `out`, there for `in`): messages cross at their
    /// own QoS up to this one. 0..=2, default 0.
    #[serde(default)]
    pub qos: u8,
    /// What topics start with here.
    #[serde(default)]
    pub local_prefix: String,
    /// What topics start with at the remote broker.
    #[serde(default)]
    pub remote_prefix: String,
}

/// Which way a bridge topic's messages cross.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From this broker to the remote one.
    #[default]
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    /// Messages published here go out.
    pub fn is_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Messages published at the remote broker come in.
    pub fn is_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

impl BridgeTopic {
    /// The filter subscribed to here.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter subscribed to at the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}

fn default_restart() -> Duration {
    Duration::from_secs(5)
}

fn default_restart_max() -> Duration {
    Duration::from_secs(60)
}

fn default_inflight() -> u16 {
    20
}

fn yes() -> bool {
    true
}

impl BridgeConfig {
    /// The remote client id (see [`Self::remote_clientid`]); with `cluster = "each_node"`,
    /// `.<node>` appended, so that the nodes' links do not take each other over.
    pub fn remote_client_id(&self, node: Option<&str>) -> String {
        let id = self.remote_clientid.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "starling".to_string());
            format!("{host}.{}", self.name)
        });
        match (self.cluster, node) {
            (BridgeCluster::EachNode, Some(node)) => format!("{id}.{node}"),
            _ => id,
        }
    }

    /// The local client id (see [`Self::local_clientid`]); with `cluster = "each_node"`,
    /// `.<node>` appended to a configured one: a client id is claimed cluster-wide, so the
    /// nodes' bridges need one each.
    pub fn local_client_id(&self, remote: &str, node: Option<&str>) -> String {
        match (&self.local_clientid, self.cluster, node) {
            (Some(id), BridgeCluster::EachNode, Some(node)) => format!("{id}.{node}"),
            (Some(id), _, _) => id.clone(),
            (None, _, _) => format!("local.{remote}"),
        }
    }

    /// The notification topic (see [`Self::notification_topic`]).
    pub fn notification_topic(&self, remote: &str) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{remote}/state"))
    }

    /// Whether the link runs over TLS.
    pub fn tls(&self) -> bool {
        self.cafile.is_some()
    }

    /// Every address, the main one first.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str())
            .chain(self.fallback_addresses.iter().map(String::as_str))
    }

    /// The host and port of [`Self::address`] (port defaulted).
    pub fn host_port(&self) -> Option<(String, u16)> {
        self.host_port_of(&self.address)
    }

    /// The host and port of `address` (port defaulted: 1883, or 8883 with TLS).
    pub fn host_port_of(&self, address: &str) -> Option<(String, u16)> {
        let default = if self.tls() { 8883 } else { 1883 };
        let a = address.trim();
        // `[v6]:port` or `[v6]`.
        if let Some(rest) = a.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default,
                None => return None,
            };
            return Some((host.to_string(), port));
        }
        match a.rsplit_once(':') {
            // More than one colon and no brackets: a bare IPv6 address.
            Some((host, _)) if host.contains(':') => Some((a.to_string(), default)),
            Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
            None => Some((a.to_string(), default)),
        }
        .filter(|(h, p)| !h.is_empty() && *p != 0)
    }
}

/// Checks every bridge: names unique, addresses that parse, topics that make valid filters.
pub fn validate(bridges: &[BridgeConfig]) -> Result<(), ConfigError> {
    for (i, b) in bridges.iter().enumerate() {
        let key = |name: &str| format!("bridges[{i}].{name}");
        if b.name.is_empty() || b.name.contains(['/', '+', '#']) {
            return Err(ConfigError::invalid(
                key("name"),
                "must be non-empty, without '/', '+' or '#'",
            ));
        }
        if bridges[..i].iter().any(|o| o.name == b.name) {
            return Err(ConfigError::invalid(key("name"), "another bridge has it"));
        }
        if b.host_port().is_none() {
            return Err(ConfigError::invalid(
                key("address"),
                "must be host, host:port or [ipv6]:port",
            ));
        }
        if b.fallback_addresses
            .iter()
            .any(|a| b.host_port_of(a).is_none())
        {
            return Err(ConfigError::invalid(
                key("fallback_addresses"),
                "each must be host, host:port or [ipv6]:port",
            ));
        }
        check_ids(b, &key)?;
        check_times(b, &key)?;
        check_tls(b, &key)?;
        if b.topics.is_empty() {
            return Err(ConfigError::invalid(
                key("topics"),
                "at least one [[bridges.topics]] is needed",
            ));
        }
        for (j, t) in b.topics.iter().enumerate() {
            check_topic(t, &|name: &str| format!("bridges[{i}].topics[{j}].{name}"))?;
        }
    }
    Ok(())
}

/// Checks that a bridge run on every node (`cluster = "each_node"`) has a cluster with a
/// `node` name: its client ids are made from it, and must stay the same across restarts for
/// the sessions kept under them.
pub fn validate_cluster_mode(
    bridges: &[BridgeConfig],
    node: Option<&str>,
) -> Result<(), ConfigError> {
    let each = bridges
        .iter()
        .position(|b| b.cluster == BridgeCluster::EachNode);
    match (each, node) {
        (Some(i), None) => Err(ConfigError::invalid(
            format!("bridges[{i}].cluster"),
            "\"each_node\" needs [cluster] with a `node` name",
        )),
        _ => Ok(()),
    }
}

fn check_ids(b: &BridgeConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    for (name, id) in [
        ("remote_clientid", &b.remote_clientid),
        ("local_clientid", &b.local_clientid),
    ] {
        if id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 65535)
        {
            return Err(ConfigError::invalid(key(name), "must be 1 to 65535 bytes"));
        }
    }
    if let Some(t) = &b.notification_topic {
        if !valid_topic_name(t) {
            return Err(ConfigError::invalid(
                key("notification_topic"),
                "must be a topic name (no wildcards)",
            ));
        }
    }
    if b.max_inflight == 0 {
        return Err(ConfigError::invalid(
            key("max_inflight"),
            "must be at least 1",
        ));
    }
    if b.remote_password.is_some() && b.remote_username.is_none() {
        return Err(ConfigError::invalid(
            key("remote_password"),
            "needs remote_username (MQTT sends no password without a username)",
        ));
    }
    Ok(())
}

fn check_times(b: &BridgeConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let ka = b.keepalive_interval;
    if ka < Duration::from_secs(1) || ka > Duration::from_secs(65535) {
        return Err(ConfigError::invalid(
            key("keepalive_interval"),
            "must be 1s to 65535s",
        ));
    }
    if b.restart_timeout.is_zero() {
        return Err(ConfigError::invalid(
            key("restart_timeout"),
            "must be more than 0",
        ));
    }
    if b.restart_timeout_max < b.restart_timeout {
        return Err(ConfigError::invalid(
            key("restart_timeout_max"),
            "must be at least restart_timeout",
        ));
    }
    Ok(())
}

fn check_tls(b: &BridgeConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if b.certfile.is_some() != b.keyfile.is_some() {
        return Err(ConfigError::invalid(
            key("certfile"),
            "certfile and keyfile go together",
        ));
    }
    if (b.certfile.is_some() || b.tls_server_name.is_some()) && b.cafile.is_none() {
        return Err(ConfigError::invalid(
            key("cafile"),
            "TLS settings need cafile (which turns TLS on)",
        ));
    }
    Ok(())
}

fn check_topic(t: &BridgeTopic, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if t.qos > 2 {
        return Err(ConfigError::invalid(key("qos"), "must be 0, 1 or 2"));
    }
    for (name, p) in [
        ("local_prefix", &t.local_prefix),
        ("remote_prefix", &t.remote_prefix),
    ] {
        if p.contains(['+', '#']) {
            return Err(ConfigError::invalid(key(name), "must not hold wildcards"));
        }
    }
    if t.pattern.is_empty() && t.local_prefix.is_empty() && t.remote_prefix.is_empty() {
        return Err(ConfigError::invalid(
            key("pattern"),
            "may be empty only with a prefix",
        ));
    }
    for (side, f) in [("local", t.local_filter()), ("remote", t.remote_filter())] {
        if !valid_topic_filter(&f) || f.starts_with("$share/") {
            return Err(ConfigError::invalid(
                key("pattern"),
                format!("with the {side} prefix it makes `{f}`, not a topic filter"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<crate::config::Config, ConfigError> {
        crate::config::Config::from_toml_str(&format!(
            "[[bridges]]\nname = \"b\"\naddress = \"central:1884\"\n{extra}\n\
             [[bridges.topics]]\npattern = \"s/#\"\n"
        ))
    }

    #[test]
    fn defaults_follow_mosquitto() {
        let c = parse("").unwrap();
        let b = &c.bridges[0];
        assert_eq!(b.protocol_version, BridgeProtocol::Mqttv311);
        assert!(!b.cleansession && b.try_private && b.notifications);
        assert_eq!(b.keepalive_interval, Duration::from_secs(60));
        assert_eq!(b.topics[0].direction, Direction::Out);
        assert_eq!(b.topics[0].qos, 0);
        assert_eq!(b.host_port(), Some(("central".into(), 1884)));
        assert_eq!(b.local_client_id("x.b", None), "local.x.b");
        assert_eq!(
            b.notification_topic("x.b"),
            "$SYS/broker/connection/x.b/state"
        );
    }

    #[test]
    fn a_bridge_on_every_node_needs_a_named_node_and_gets_its_ids_from_it() {
        let err = parse("cluster = \"each_node\"").unwrap_err().to_string();
        assert!(err.contains("bridges[0].cluster"), "{err}");
        let both = |extra: &str| {
            crate::config::Config::from_toml_str(&format!(
                "[cluster]\nnode = \"n1\"\n[[bridges]]\nname = \"b\"\naddress = \"c\"\n\
                 remote_clientid = \"site\"\n{extra}\n[[bridges.topics]]\npattern = \"s/#\"\n"
            ))
        };
        let err = crate::config::Config::from_toml_str(
            "[cluster]\n[[bridges]]\nname = \"b\"\naddress = \"c\"\ncluster = \"each_node\"\n\
             [[bridges.topics]]\npattern = \"s/#\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("node"), "{err}");
        let c = both("cluster = \"each_node\"\nlocal_clientid = \"here\"").unwrap();
        let (b, node) = (&c.bridges[0], c.cluster_node());
        assert_eq!(b.cluster, BridgeCluster::EachNode);
        assert_eq!(b.remote_client_id(node), "site.n1");
        assert_eq!(b.local_client_id("site.n1", node), "here.n1");
        // One node (the default): the names as configured.
        let c = both("local_clientid = \"here\"").unwrap();
        let (b, node) = (&c.bridges[0], c.cluster_node());
        assert_eq!(b.cluster, BridgeCluster::OneNode);
        assert_eq!(b.remote_client_id(node), "site");
        assert_eq!(b.local_client_id("site", node), "here");
    }

    #[test]
    fn addresses_parse_with_default_ports() {
        let mut b = parse("").unwrap().bridges.remove(0);
        for (a, want) in [
            ("h", Some(("h", 1883))),
            ("[::1]:99", Some(("::1", 99))),
            ("[::1]", Some(("::1", 1883))),
            ("::1", Some(("::1", 1883))),
            ("h:0", None),
            (":5", None),
            ("h:x", None),
        ] {
            b.address = a.into();
            assert_eq!(b.host_port(), want.map(|(h, p)| (h.to_string(), p)), "{a}");
        }
        b.address = "h".into();
        b.cafile = Some("/ca.pem".into());
        assert_eq!(b.host_port(), Some(("h".into(), 8883)));
    }

    #[test]
    fn bad_bridges_name_their_key() {
        for (extra, key) in [
            (
                "keepalive_interval = \"0s\"",
                "bridges[0].keepalive_interval",
            ),
            ("max_inflight = 0", "bridges[0].max_inflight"),
            ("certfile = \"/c\"", "bridges[0].certfile"),
            ("remote_password = \"p\"", "bridges[0].remote_password"),
            (
                "restart_timeout = \"9s\"\nrestart_timeout_max = \"1s\"",
                "bridges[0].restart_timeout_max",
            ),
        ] {
            match parse(extra) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        let bad_topic = "[[bridges]]\nname = \"b\"\naddress = \"h\"\n[[bridges.topics]]\n\
                         pattern = \"a/#/b\"\n";
        assert!(matches!(
            crate::config::Config::from_toml_str(bad_topic),
            Err(ConfigError::Invalid { key, .. }) if key == "bridges[0].topics[0].pattern"
        ));
        let prefix_only = "[[bridges]]\nname = \"b\"\naddress = \"h\"\n[[bridges.topics]]\n\
                           pattern = \"\"\nlocal_prefix = \"a/b\"\nremote_prefix = \"c\"\n";
        assert!(crate::config::Config::from_toml_str(prefix_only).is_ok());
        let twice = "[[bridges]]\nname = \"b\"\naddress = \"h\"\n[[bridges.topics]]\n\
                     pattern = \"a\"\n[[bridges]]\nname = \"b\"\naddress = \"h\"\n\
                     [[bridges.topics]]\npattern = \"a\"\n";
        assert!(matches!(
            crate::config::Config::from_toml_str(twice),
            Err(ConfigError::Invalid { key, .. }) if key == "bridges[1].name"
        ));
    }
}
