//! Broker configuration: the TOML schema, its defaults and its validation.
//!
//! Every section and every key has a default, so an empty file (or no file at all) gives a
//! working broker on `127.0.0.1:1883`. Unknown keys are errors rather than silently ignored,
//! because a misspelt limit that is ignored is worse than a broker that refuses to start.
//!
//! Loading is two steps: [`Config::from_toml_str`] / [`Config::load`] parse *and* call
//! [`Config::validate`], which checks the rules that types alone cannot express (ranges,
//! ordering between keys, features that are not implemented yet). Every error names the key.
//!
//! Durations are written as a number followed by a unit: `"500ms"`, `"10s"`, `"1m"`, `"2h"`,
//! `"1d"`, `"1w"`, or as a plain integer meaning seconds (see [`duration`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::auth::AuthSection;
pub use self::bridge::{BridgeCluster, BridgeConfig, BridgeProtocol, BridgeTopic, Direction};
pub use self::cluster::ClusterConfig;
pub use self::log::{LogConfig, LogFormat, SyslogFacility};
pub use listener::*;

/// The largest packet MQTT can frame: the Remaining Length is at most 268,435,455 bytes
/// (four-byte variable byte integer), so no larger `max_packet_size` can mean anything.
pub const MQTT_MAX_PACKET_SIZE: u32 = 268_435_455;

/// The smallest `mqtt.max_client_id_length`: every server must accept client ids of 1 to 23
/// bytes [MQTT-3.1.3-5].
pub const MIN_CLIENT_ID_LENGTH: usize = 23;

/// The whole broker configuration, one field per TOML section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[[listeners]]`: where the broker accepts connections. Absent means one MQTT listener on
    /// `127.0.0.1:1883`; loopback by default so a fresh broker is not exposed to the network.
    pub listeners: Vec<ListenerConfig>,
    /// `[auth]`: password file, ACL file and anonymous access (Mosquitto-compatible files).
    pub auth: AuthSection,
    /// `[mqtt]`: protocol limits and behaviour applied to every session.
    pub mqtt: MqttConfig,
    /// `[limits]`: broker-wide resource limits.
    pub limits: LimitsConfig,
    /// `[sys]`: the `$SYS/broker/...` tree.
    pub sys: SysConfig,
    /// `[retained]`: bounds on the retained-message store.
    pub retained: RetainedConfig,
    /// `[metrics]`: the Prometheus / health-check HTTP endpoint (off unless `bind` is set).
    pub metrics: MetricsConfig,
    /// `[persistence]`: the on-disk message store.
    pub persistence: PersistenceConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[[bridges]]`: connections to other brokers and the topics they exchange (none by
    /// default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<BridgeConfig>,
    /// `[cluster]`: the other nodes, through NATS (absent: this node runs alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            auth: AuthSection::default(),
            mqtt: MqttConfig::default(),
            limits: LimitsConfig::default(),
            sys: SysConfig::default(),
            retained: RetainedConfig::default(),
            metrics: MetricsConfig::default(),
            persistence: PersistenceConfig::default(),
            log: LogConfig::default(),
            bridges: Vec::new(),
            cluster: None,
        }
    }
}

/// `[mqtt]`: protocol limits applied to every client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Largest keep alive, in seconds, a client may use, so a client cannot make the broker hold
    /// a dead connection for hours. For v5 it is the ceiling on Server Keep Alive.
    pub max_keepalive: u16,
    /// Longest client identifier, in bytes of UTF-8, a client may send; a longer one is refused
    /// with CONNACK 0x85 Client Identifier not valid (v5) or 2 identifier rejected (3.x).
    /// 23..=65535: the spec makes every server accept 1 to 23 bytes [MQTT-3.1.3-5], and a
    /// client id cannot be longer than 65535. The default, 256, takes what clients really use
    /// (UUIDs, MAC addresses or host names with a prefix, Kubernetes pod names of up to 253
    /// characters) while a client cannot make the broker keep, store and log ids of 64 KiB.
    pub max_client_id_length: usize,
    /// Accept a CONNECT with an empty client id (Mosquitto's `allow_zero_length_clientid`):
    /// the broker then makes one up from `auto_id_prefix` (and tells a v5 client in Assigned
    /// Client Identifier). When off, an empty id is refused with CONNACK 0x85 Client Identifier
    /// not valid (v5) or 2 identifier rejected (3.x). 3.1 never allows it, 3.1.1 only with
    /// clean session [MQTT-3.1.3-8].
    pub allow_zero_length_clientid: bool,
    /// Prefix of the ids the broker makes up for clients that send an empty one (Mosquitto's
    /// `auto_id_prefix`, default `"auto-"`). At most 64 bytes and no `/`, `+`, `#`.
    pub auto_id_prefix: String,
    /// Largest packet, in bytes, the broker accepts (and, for v5, announces as Maximum Packet
    /// Size). Checked before the packet is buffered, so it bounds per-connection memory.
    /// 1..=268435455.
    pub max_packet_size: u32,
    /// Largest PUBLISH or will payload, in bytes, the broker takes (Mosquitto's
    /// `message_size_limit`). Above it an MQTT 5 QoS 1/2 PUBLISH is answered 0x97 Quota
    /// exceeded; a v5 QoS 0 and every 3.x PUBLISH is acknowledged as usual and dropped
    /// (counted); a CONNECT whose will payload is larger is refused (v5 0x95 Packet too large,
    /// 3.x return code 5, as Mosquitto). 0 means no limit beyond `max_packet_size`.
    /// 0..=268435455.
    pub max_payload_size: u32,
    /// QoS 1/2 messages in flight to one client at a time (v5 Receive Maximum the broker
    /// honours towards clients). At least 1.
    pub max_inflight: u16,
    /// Messages queued per session beyond the in-flight window before new ones are dropped.
    /// 0 means no count limit (as in Mosquitto).
    pub max_queued_messages: usize,
    /// Payload bytes queued per session beyond the in-flight window before new messages are
    /// dropped. 0 means no byte limit (Mosquitto's default); the global watermarks in
    /// `[limits]` still bound the total.
    pub max_queued_bytes: u64,
    /// Time a new connection has to send CONNECT before it is closed, so idle sockets cannot
    /// pin file descriptors. A plain `mqtt` listener's own `handshake_timeout` replaces it
    /// there (see [`ListenerConfig::handshake_timeout`]).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// A client is disconnected after `keepalive_factor × keep alive` without a packet
    /// [MQTT-3.1.2-24] (the spec's "one and a half times"). At least 1.0.
    pub keepalive_factor: f64,
    /// Whether retained messages are stored and delivered (v5 Retain Available).
    pub retain_available: bool,
    /// Highest QoS the broker grants and delivers (v5 Maximum QoS). 0..=2.
    pub max_qos: u8,
    /// Persistent sessions of clients that stay disconnected this long are discarded (like
    /// Mosquitto's `persistent_client_expiration`). Absent means they never expire.
    #[serde(
        with = "duration::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub persistent_client_expiration: Option<Duration>,
    /// Topic aliases a v5 client may use towards the broker (v5 Topic Alias Maximum). 0
    /// disables them.
    pub max_topic_alias: u16,
    /// How a message on a shared subscription (`$share/group/filter`) picks a group member.
    pub shared_subscription_strategy: SharedStrategy,
    /// Unacknowledged QoS 2 PUBLISH a client may have outstanding towards the broker (the
    /// server's MQTT 5 Receive Maximum, announced in CONNACK when below 65535). A v5 client that
    /// exceeds it is disconnected with 0x93 [MQTT-3.3.4-7]. At least 1.
    pub receive_maximum: u16,
    /// Accept `$share/...` subscriptions (v5 Shared Subscription Available). When off, a v5
    /// SUBSCRIBE with one gets DISCONNECT 0x9E (spec 3.2.2.3.13), 3.x SUBACK 0x80.
    pub shared_subscriptions: bool,
    /// Accept filters with `+` or `#` (v5 Wildcard Subscription Available). When off, a v5
    /// SUBSCRIBE with one gets DISCONNECT 0xA2 (spec 3.2.2.3.11), 3.x SUBACK 0x80.
    pub wildcard_subscriptions: bool,
    /// Accept v5 Subscription Identifiers. When off, a SUBSCRIBE with one gets DISCONNECT
    /// 0xA1 (spec 3.2.2.3.12).
    pub subscription_identifiers: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_keepalive: 65535,
            max_client_id_length: 256,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_owned(),
            max_packet_size: 1_048_576,
            max_payload_size: 0,
            max_inflight: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            connect_timeout: Duration::from_secs(10),
            keepalive_factor: 1.5,
            retain_available: true,
            max_qos: 2,
            persistent_client_expiration: None,
            max_topic_alias: 10,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            receive_maximum: 65535,
            shared_subscriptions: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
        }
    }
}

/// Member selection for shared subscriptions, written `"round_robin"` or `"random"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Each member in turn: even load when members are equally fast.
    #[default]
    RoundRobin,
    /// A random member each time: no shared cursor to contend on.
    Random,
}

/// `[limits]`: broker-wide resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent connections over all listeners; further connections are closed at accept.
    /// 0 means no limit (the process file-descriptor limit still applies).
    pub max_connections: usize,
    /// When the bytes queued across all sessions exceed this, the broker stops reading from
    /// publishers (TCP backpressure) instead of growing without bound.
    pub global_queued_bytes_high: u64,
    /// Reading resumes once queued bytes fall below this. Must be lower than
    /// `global_queued_bytes_high` so the broker does not flap at the threshold.
    pub global_queued_bytes_low: u64,
    /// Subscriptions one client may hold; SUBSCRIBEs beyond it are refused (SUBACK 0x97 Quota
    /// exceeded for MQTT 5, 0x80 for 3.1.1; replacing a filter already held is not a new one).
    /// 0 means no limit. The default, 10,000, is far above what a device or an application
    /// subscribes to, and bounds what one client id can make the broker hold (about 1.2 KB per
    /// subscription in the trie and the session, see BENCHMARKS.md).
    pub max_subscriptions_per_client: usize,
    /// Levels (`/`-separated parts) a topic name or filter may have; deeper ones are refused so
    /// a client cannot make the subscription tree arbitrarily deep. At least 1. The default,
    /// 201, is Mosquitto's (at most 200 `/`), so topics that work there work here.
    pub max_topic_levels: usize,
    /// Bytes a topic name or filter may have (MQTT allows 65535). At least 1.
    pub max_topic_length: usize,
    /// PUBLISH packets per second one client may send (token bucket, one second of burst).
    /// Above it an MQTT 5 client is disconnected with 0x96 Message rate too high; a 3.x client is
    /// slowed down by not reading its socket. 0 means no limit.
    pub max_publish_rate: u64,
    /// PUBLISH payload bytes per second one client may send. Above it an MQTT 5 client's QoS 1/2
    /// messages are refused with 0x97 Quota exceeded (QoS 0 ones dropped and counted); a 3.x
    /// client is slowed down by not reading its socket. 0 means no limit.
    pub max_publish_bandwidth: u64,
    /// What happens to a subscriber whose queue stays full: `"drop"` keeps dropping what does
    /// not fit (counted); `"disconnect"` also closes its connection once the queue has been full
    /// for `slow_consumer_grace` (MQTT 5 clients get DISCONNECT 0x97).
    pub slow_consumer_policy: SlowConsumerPolicy,
    /// How long a subscriber's queue may stay full before `"disconnect"` applies.
    #[serde(with = "duration")]
    pub slow_consumer_grace: Duration,
}

/// What to do with a subscriber that does not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Drop what does not fit in its queue; the client stays connected.
    #[default]
    Drop,
    /// Drop, and disconnect it after the grace period.
    Disconnect,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            global_queued_bytes_high: 128 * 1024 * 1024,
            global_queued_bytes_low: 96 * 1024 * 1024,
            max_topic_length: 65_535,
            max_publish_rate: 0,
            max_publish_bandwidth: 0,
            slow_consumer_policy: SlowConsumerPolicy::Drop,
            slow_consumer_grace: Duration::from_secs(30),
            max_subscriptions_per_client: 10_000,
            max_topic_levels: 201,
        }
    }
}

/// `[retained]`: how much the retained-message store may hold. When either bound is reached,
/// a retained PUBLISH on a topic that has no retained message yet is delivered as usual and
/// acknowledged with success, but not stored (counted in `starling_retained_refused_total`,
/// logged at most a few times a second). Replacing or deleting an existing retained message is
/// always accepted, and the broker's own `$SYS` topics are not counted against the bounds.
/// Messages restored from the store at start are all kept, even over the bounds (a warning
/// says so); new topics are then refused until the store is back under them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetainedConfig {
    /// Most topics with a retained message. 0 means no count limit.
    pub max_messages: u64,
    /// Most bytes of retained messages, counting each message's payload and topic name (the
    /// memory each takes is about this plus a few hundred bytes, see BENCHMARKS.md). 0 means
    /// no byte limit; otherwise at least 1024.
    pub max_bytes: u64,
}

impl Default for RetainedConfig {
    /// One million topics and 256 MiB: far beyond what most deployments retain, and low
    /// enough that a runaway publisher cannot exhaust the memory of a modest host.
    fn default() -> Self {
        RetainedConfig {
            max_messages: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[sys]`: the Mosquitto-compatible `$SYS/broker/...` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysConfig {
    /// How often the tree is published, like Mosquitto's `sys_interval`; `"0s"` turns it off.
    #[serde(with = "duration")]
    pub interval: Duration,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            interval: Duration::from_secs(10),
        }
    }
}

/// `[metrics]`: an HTTP endpoint serving `GET /metrics` (Prometheus text format), `GET /healthz`
/// and `GET /readyz`, and with `admin_token_file` the admin API and dashboard. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port of the HTTP endpoint, e.g. `"127.0.0.1:9183"`. Absent (the default)
    /// means no endpoint. Health checks have no authentication, `/metrics` only with
    /// `bearer_token_file`: keep it on loopback or a private network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// HTTP connections open at once. A new connection is always accepted: at the cap, the
    /// oldest connection that has not been answered (else the oldest) is closed to make room,
    /// so idle sockets cannot keep health checks out. At least 1.
    pub max_connections: usize,
    /// HTTP connections open at once from one peer address; beyond it that peer's oldest
    /// unanswered connection is closed. At least 1.
    pub max_connections_per_peer: usize,
    /// Time a client has to send a request's headers, also the longest an idle keep-alive
    /// connection is kept. Greater than 0.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// File holding a token that `GET /metrics` must present as `Authorization: Bearer
    /// <token>` (surrounding blanks and the trailing newline ignored); read at start. Absent
    /// means `/metrics` is open. `/healthz` and `/readyz` never need it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// File holding the token of the admin API (`/api/v1/...`: the broker, its sessions,
    /// disconnecting a client) and its dashboard (`/dashboard`), presented as
    /// `Authorization: Bearer <token>`; read at start. Absent (the default) means no admin
    /// API: it can end sessions, so it is never open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: None,
            max_connections: 64,
            max_connections_per_peer: 8,
            header_timeout: Duration::from_secs(3),
            bearer_token_file: None,
            admin_token_file: None,
        }
    }
}

/// `[persistence]`: where and how sessions, queued messages and retained messages are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersistenceConfig {
    /// Whether state is stored on disk. Absent means "the embedder decides": the `starling`
    /// binary turns persistence on, while the library (`Broker::start`, tests) keeps state in
    /// memory, so that tests and embedders never share a directory by accident. See
    /// [`PersistenceConfig::is_enabled`].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub enabled: Option<bool>,
    /// Directory of the store, relative to the working directory unless absolute.
    pub dir: PathBuf,
    /// When writes are made durable (fsync), see [`SyncPolicy`].
    pub sync: SyncPolicy,
    /// With `sync = "interval"`: the longest time between fsyncs.
    #[serde(with = "duration")]
    pub sync_interval: Duration,
    /// Block cache of the store in bytes (at least 1 MiB).
    pub cache_size: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: None,
            dir: PathBuf::from("data"),
            sync: SyncPolicy::Batch,
            sync_interval: Duration::from_millis(100),
            cache_size: 32 * 1024 * 1024,
        }
    }
}

impl PersistenceConfig {
    /// Whether persistence is on. `default_on` is what an absent `enabled` means: `true` for
    /// the `starling` binary, `false` for the library.
    pub fn is_enabled(&self, default_on: bool) -> bool {
        self.enabled.unwrap_or(default_on)
    }

    /// The writer's fsync policy.
    pub fn sync_mode(&self) -> crate::storage::SyncMode {
        use crate::storage::SyncMode;
        match self.sync {
            SyncPolicy::Batch => SyncMode::Batch,
            SyncPolicy::Always => SyncMode::Always,
            SyncPolicy::Interval => SyncMode::Interval(self.sync_interval),
            SyncPolicy::None => SyncMode::None,
        }
    }

    /// Options for opening the store.
    pub fn store_options(&self) -> crate::storage::FjallOptions {
        crate::storage::FjallOptions {
            cache_size: self.cache_size,
            ..crate::storage::FjallOptions::default()
        }
    }
}

/// When the store fsyncs, written `"batch"`, `"always"`, `"interval"` or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// One fsync per group of writes that arrived together; acknowledgements wait for it.
    #[default]
    Batch,
    /// One fsync per write: safest and slowest (a few hundred writes/s on most disks).
    Always,
    /// Acknowledge after the write reaches the OS; fsync at most every `sync_interval`. A power
    /// loss can lose that long; a broker crash loses nothing.
    Interval,
    /// Never fsync while running; the OS writes back when it likes.
    None,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type. The text is the
    /// parser's, which names the key and the line.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value parsed but is out of range or inconsistent with another key.
    #[error("invalid configuration: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Whether `text` reads as a mosquitto.conf rather than TOML: its first setting is one of
/// Mosquitto's `key value` lines. Users moving over pass their old file to `-c`; the TOML
/// parser's "expected `=`" alone would not tell them what to do.
fn looks_like_mosquitto_conf(text: &str) -> bool {
    const KEYS: &[&str] = &[
        "listener",
        "port",
        "allow_anonymous",
        "password_file",
        "acl_file",
        "persistence",
        "persistence_location",
        "log_dest",
        "log_type",
        "include_dir",
        "per_listener_settings",
        "max_inflight_messages",
        "max_queued_messages",
        "message_size_limit",
        "connection",
        "protocol",
        "cafile",
        "certfile",
        "keyfile",
        "require_certificate",
        "pid_file",
        "user",
        "bind_address",
        "sys_interval",
        "autosave_interval",
        "plugin",
    ];
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    first.is_some_and(|line| {
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or_default();
        !line.contains('=') && KEYS.contains(&key) && words.next().is_some()
    })
}

impl Config {
    /// This node's configured name in a cluster (`[cluster] node`), if it has one.
    pub fn cluster_node(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .map(|c| c.node.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Parses a TOML document and validates it.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(s).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. Parse errors are prefixed with the path.
    /// Relative file paths in it are resolved against the file's directory
    /// ([`Config::resolve_paths`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            let hint = if looks_like_mosquitto_conf(&text) {
                format!(
                    "\nthis looks like a Mosquitto configuration file: translate it with \
                     `starling migrate {} -o starling.toml` (README: Coming from Mosquitto)",
                    path.display()
                )
            } else {
                String::new()
            };
            ConfigError::Parse(format!("{}: {e}{hint}", path.display()))
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        // An empty parent means the working directory.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let dir = std::path::absolute(dir).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        config.resolve_paths(&dir);
        config.validate()?;
        Ok(config)
    }

    /// Makes the relative file paths of the configuration (`auth.password_file`,
    /// `auth.acl_file`, `auth.dynamic_security`, `metrics.bearer_token_file`, `log.file`,
    /// `log.syslog_socket`, the listeners' `cert`, `key`, `ca`, `password_file` and `acl_file`,
    /// unix socket `bind` paths, the bridges' `cafile`, `certfile` and `keyfile`, and
    /// `cluster.cafile`)
    /// relative to `dir`, the configuration file's directory, so the file means the same from
    /// any working directory.
    /// `persistence.dir` is left alone: it stays relative to the working directory (the systemd
    /// unit's `WorkingDirectory`), so an upgrade cannot move a broker to an empty store.
    pub fn resolve_paths(&mut self, dir: &Path) {
        let files = [
            &mut self.auth.password_file,
            &mut self.auth.acl_file,
            &mut self.auth.dynamic_security,
            &mut self.metrics.bearer_token_file,
            &mut self.metrics.admin_token_file,
            &mut self.log.file,
        ]
        .into_iter()
        .flatten()
        .chain([&mut self.log.syslog_socket])
        .chain(self.listeners.iter_mut().flat_map(|l| {
            let socket = match &mut l.bind {
                BindAddr::Unix(p) => Some(p),
                BindAddr::Tcp(_) => None,
            };
            [
                l.cert.as_mut(),
                l.key.as_mut(),
                l.ca.as_mut(),
                l.password_file.as_mut(),
                l.acl_file.as_mut(),
                socket,
            ]
            .into_iter()
            .flatten()
        }))
        .chain(self.bridges.iter_mut().flat_map(|b| {
            [b.cafile.as_mut(), b.certfile.as_mut(), b.keyfile.as_mut()]
                .into_iter()
                .flatten()
        }))
        .chain(self.cluster.iter_mut().filter_map(|c| c.cafile.as_mut()));
        for file in files {
            // An empty path stays empty, for validation to name it.
            if file.is_relative() && !file.as_os_str().is_empty() {
                *file = dir.join(&*file).components().collect();
            }
        }
    }

    /// The `[auth]` settings that apply to listener `index`: its own `allow_anonymous`,
    /// `password_file` and `acl_file` where set, `[auth]`'s otherwise (Mosquitto's
    /// `per_listener_settings true`, with `[auth]` as the fallback). An index past the listeners
    /// gets `[auth]` itself.
    pub fn listener_auth(&self, index: usize) -> AuthSection {
        let mut section = self.auth.clone();
        if let Some(l) = self.listeners.get(index) {
            if l.allow_anonymous.is_some() {
                section.allow_anonymous = l.allow_anonymous;
            }
            if l.password_file.is_some() {
                section.password_file = l.password_file.clone();
            }
            if l.acl_file.is_some() {
                section.acl_file = l.acl_file.clone();
            }
        }
        section
    }

    /// Whether listener `index` sets any auth key of its own (else it uses `[auth]` as is).
    pub fn listener_has_own_auth(&self, index: usize) -> bool {
        self.listeners.get(index).is_some_and(|l| {
            l.allow_anonymous.is_some() || l.password_file.is_some() || l.acl_file.is_some()
        })
    }

    /// Whether every listener binds a loopback address (127.0.0.0/8 or ::1) or a unix socket
    /// (only this host can reach either), without `proxy_protocol` (a local proxy relays
    /// clients from anywhere), which makes `auth.allow_anonymous` default to true when there is
    /// no password file.
    pub fn listeners_all_loopback(&self) -> bool {
        self.listeners
            .iter()
            .all(|l| l.bind.is_local() && !l.proxy_protocol)
    }

    /// The configuration as TOML, as `starling check-config` prints it; parsing the output gives
    /// back an equal `Config`. Keys whose value is "absent" (e.g. `persistent_client_expiration`
    /// = never) are left out. Serialization cannot fail for this schema, but should it ever, the
    /// result is a TOML comment saying why rather than a panic.
    pub fn to_toml_string(&self) -> String {
        match toml::to_string(self) {
            Ok(s) => s,
            Err(e) => format!("# cannot render this configuration as TOML: {e}\n"),
        }
    }
}

mod auth;
mod bridge;
mod cluster;
pub mod duration;
mod listener;
mod log;
mod render;
mod validate;

#[cfg(test)]
mod tests;
