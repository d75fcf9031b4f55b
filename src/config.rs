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

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest packet MQTT can frame: the Remaining Length is at most 268,435,455 bytes
/// (four-byte variable byte integer), so no larger `max_packet_size` can mean anything.
pub const MQTT_MAX_PACKET_SIZE: u32 = 268_435_455;

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
    /// `[metrics]`: the Prometheus / health-check HTTP endpoint (off unless `bind` is set).
    pub metrics: MetricsConfig,
    /// `[persistence]`: the on-disk message store.
    pub persistence: PersistenceConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            auth: AuthSection::default(),
            mqtt: MqttConfig::default(),
            limits: LimitsConfig::default(),
            sys: SysConfig::default(),
            metrics: MetricsConfig::default(),
            persistence: PersistenceConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// One `[[listeners]]` entry.
///
/// The TLS keys (`cert`, `key`, `ca`, `require_certificate`, `use_identity_as_username`,
/// `use_subject_as_username`) are only valid on `mqtts` and `wss` listeners, `path` only on `ws`
/// and `wss`, and `handshake_timeout` on every listener but plain `mqtt`. Optional keys are
/// left out when rendered, so `check-config` shows only what applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to bind, e.g. `"0.0.0.0:1883"` or `"[::]:1883"`. Port 0 picks a free
    /// port (useful in tests; the broker reports the real address).
    pub bind: SocketAddr,
    /// Transport spoken on this listener.
    pub protocol: ListenerProtocol,
    /// Cap on concurrent connections accepted by this listener, on top of the global
    /// `limits.max_connections`. Absent means only the global limit applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
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
    /// HTTP path WebSocket clients must upgrade on (`ws`, `wss`). Absent means
    /// [`DEFAULT_WS_PATH`]; see [`ListenerConfig::ws_path`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Time a new connection has for the TLS handshake and/or WebSocket upgrade (`mqtts`, `ws`,
    /// `wss`). Absent means [`DEFAULT_HANDSHAKE_TIMEOUT`]; see
    /// [`ListenerConfig::handshake_timeout`].
    #[serde(
        with = "duration::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub handshake_timeout: Option<Duration>,
}

/// The WebSocket path used when a `ws`/`wss` listener has no `path`.
pub const DEFAULT_WS_PATH: &str = "/mqtt";
/// The transport handshake time used when a listener has no `handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn is_false(b: &bool) -> bool {
    !*b
}

impl ListenerConfig {
    /// The WebSocket upgrade path: `path`, or [`DEFAULT_WS_PATH`].
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_WS_PATH)
    }

    /// The TLS/WebSocket handshake time limit: `handshake_timeout`, or
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)),
            protocol: ListenerProtocol::Mqtt,
            max_connections: None,
            cert: None,
            key: None,
            ca: None,
            require_certificate: false,
            use_identity_as_username: false,
            use_subject_as_username: false,
            path: None,
            handshake_timeout: None,
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

/// `[auth]`: who may connect and what they may do, with Mosquitto's file formats (see
/// [`crate::auth`]). The files are read at start-up; relative paths are relative to the
/// broker's working directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Mosquitto password file (`$7$`/`$6$` hashes; `starling passwd` or `mosquitto_passwd`
    /// writes it). When set, clients that send a username must be in it with the right
    /// password. Absent means no password checking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file (`topic`/`user`/`pattern` lines). Absent means every topic is allowed
    /// (except publishing into `$SYS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
    /// Whether clients without a username may connect. Absent means: true only when there is
    /// no `password_file` and every listener is on a loopback address (Mosquitto 2.0's "local
    /// only mode"); see [`AuthSection::allow_anonymous_effective`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// A persistent session can be resumed only by a client with the same username as the one
    /// that created it, so knowing a client id is not enough to take over its session and its
    /// queued messages.
    pub session_owner_check: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            session_owner_check: true,
        }
    }
}

impl AuthSection {
    /// `allow_anonymous` with its default applied: the configured value, or else true exactly
    /// when no `password_file` is set and `listeners_all_loopback`.
    pub fn allow_anonymous_effective(&self, listeners_all_loopback: bool) -> bool {
        self.allow_anonymous
            .unwrap_or(self.password_file.is_none() && listeners_all_loopback)
    }
}

/// `[mqtt]`: protocol limits applied to every client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Largest keep alive, in seconds, a client may use, so a client cannot make the broker hold
    /// a dead connection for hours. For v5 it is the ceiling on Server Keep Alive.
    pub max_keepalive: u16,
    /// Largest packet, in bytes, the broker accepts (and, for v5, announces as Maximum Packet
    /// Size). Checked before the packet is buffered, so it bounds per-connection memory.
    /// 1..=268435455.
    pub max_packet_size: u32,
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
    /// pin file descriptors.
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
    /// Accept `$share/...` subscriptions (v5 Shared Subscription Available; refused with 0x9E).
    pub shared_subscriptions: bool,
    /// Accept filters with `+` or `#` (v5 Wildcard Subscription Available; refused with 0xA2).
    pub wildcard_subscriptions: bool,
    /// Accept v5 Subscription Identifiers (refused with 0xA1 when off).
    pub subscription_identifiers: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_keepalive: 65535,
            max_packet_size: 1_048_576,
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
    /// Subscriptions one client may hold; SUBSCRIBEs beyond it are refused. 0 means no limit.
    pub max_subscriptions_per_client: usize,
    /// Levels (`/`-separated parts) a topic name or filter may have; deeper ones are refused so
    /// a client cannot make the subscription tree arbitrarily deep. At least 1.
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
            max_subscriptions_per_client: 0,
            max_topic_levels: 128,
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
/// and `GET /readyz`. Off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port of the HTTP endpoint, e.g. `"127.0.0.1:9183"`. Absent (the default)
    /// means no endpoint. It has no authentication: keep it on loopback or a private network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
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

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `"info"` or `"warn,starling=debug"`. The `RUST_LOG`
    /// environment variable, when set, takes precedence.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
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

impl Config {
    /// Parses a TOML document and validates it.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(s).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. Parse errors are prefixed with the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Whether every listener binds a loopback address (127.0.0.0/8 or ::1), which makes
    /// `auth.allow_anonymous` default to true when there is no password file.
    pub fn listeners_all_loopback(&self) -> bool {
        self.listeners.iter().all(|l| l.bind.ip().is_loopback())
    }

    /// Checks what the types cannot: ranges, relations between keys and unsupported features.
    /// Returns the first problem found, naming its key (e.g. `mqtt.max_packet_size`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listeners()?;
        for (key, path) in [
            ("auth.password_file", &self.auth.password_file),
            ("auth.acl_file", &self.auth.acl_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(
                    key,
                    "must not be empty; leave the key out instead",
                ));
            }
        }
        self.validate_mqtt()?;
        self.validate_limits()?;
        self.validate_metrics()?;
        self.validate_persistence()?;
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return Err(ConfigError::invalid(
                "log.level",
                format!("{:?} is not a valid log filter: {e}", self.log.level),
            ));
        }
        Ok(())
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError::invalid(
                "listeners",
                "at least one listener is required",
            ));
        }
        let mut bound = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            Self::validate_transport(i, l)?;
            if l.max_connections == Some(0) {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].max_connections"),
                    "must be at least 1; leave it out for no per-listener limit",
                ));
            }
            // Port 0 asks the OS for a fresh port each time, so repeats are not conflicts.
            if l.bind.port() != 0 && !bound.insert(l.bind) {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].bind"),
                    format!("{} is already used by another listener", l.bind),
                ));
            }
        }
        Ok(())
    }

    /// The TLS and WebSocket keys of listener `i`: present only where they apply, complete
    /// where they are needed.
    fn validate_transport(i: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
        let key = |name: &str| format!("listeners[{i}].{name}");
        let proto = l.protocol;
        let tls_keys = [
            ("cert", l.cert.is_some()),
            ("key", l.key.is_some()),
            ("ca", l.ca.is_some()),
            ("require_certificate", l.require_certificate),
            ("use_identity_as_username", l.use_identity_as_username),
            ("use_subject_as_username", l.use_subject_as_username),
        ];
        if !proto.is_tls() {
            if let Some((name, _)) = tls_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(
                    key(name),
                    format!("only valid on \"mqtts\" and \"wss\" listeners, not \"{proto}\""),
                ));
            }
        }
        if !proto.is_websocket() && l.path.is_some() {
            return Err(ConfigError::invalid(
                key("path"),
                format!("only valid on \"ws\" and \"wss\" listeners, not \"{proto}\""),
            ));
        }
        if proto == ListenerProtocol::Mqtt && l.handshake_timeout.is_some() {
            return Err(ConfigError::invalid(
                key("handshake_timeout"),
                "only valid on \"mqtts\", \"ws\" and \"wss\" listeners (plain \"mqtt\" has no \
                 handshake before CONNECT; see mqtt.connect_timeout)",
            ));
        }
        if l.handshake_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::invalid(
                key("handshake_timeout"),
                "must be greater than 0",
            ));
        }
        if let Some(path) = &l.path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '?') {
                return Err(ConfigError::invalid(
                    key("path"),
                    format!("{path:?} must start with \"/\" and hold no blanks or query"),
                ));
            }
        }
        if proto.is_tls() {
            for (name, missing) in [("cert", l.cert.is_none()), ("key", l.key.is_none())] {
                if missing {
                    return Err(ConfigError::invalid(
                        key(name),
                        format!("required on a \"{proto}\" listener (a PEM file path)"),
                    ));
                }
            }
        }
        for (name, set) in [
            ("require_certificate", l.require_certificate),
            ("use_identity_as_username", l.use_identity_as_username),
            ("use_subject_as_username", l.use_subject_as_username),
        ] {
            if set && l.ca.is_none() {
                return Err(ConfigError::invalid(
                    key(name),
                    "requires `ca`, the CA bundle client certificates are verified against",
                ));
            }
        }
        if l.use_identity_as_username && l.use_subject_as_username {
            return Err(ConfigError::invalid(
                key("use_subject_as_username"),
                "cannot be combined with use_identity_as_username: choose one",
            ));
        }
        Ok(())
    }

    fn validate_mqtt(&self) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        if m.receive_maximum == 0 {
            return Err(ConfigError::invalid(
                "mqtt.receive_maximum",
                "must be at least 1 [MQTT-3.2.2-?: Receive Maximum 0 is a protocol error]",
            ));
        }
        if !(1..=MQTT_MAX_PACKET_SIZE).contains(&m.max_packet_size) {
            return Err(ConfigError::invalid(
                "mqtt.max_packet_size",
                format!(
                    "{} is out of range: must be between 1 and {MQTT_MAX_PACKET_SIZE}",
                    m.max_packet_size
                ),
            ));
        }
        if m.max_inflight == 0 {
            return Err(ConfigError::invalid(
                "mqtt.max_inflight",
                "must be at least 1",
            ));
        }
        if m.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "mqtt.connect_timeout",
                "must be greater than 0",
            ));
        }
        // Written this way so NaN fails too.
        if !(m.keepalive_factor >= 1.0 && m.keepalive_factor.is_finite()) {
            return Err(ConfigError::invalid(
                "mqtt.keepalive_factor",
                format!(
                    "{} is out of range: must be a finite number >= 1.0 [MQTT-3.1.2-24]",
                    m.keepalive_factor
                ),
            ));
        }
        if m.max_qos > 2 {
            return Err(ConfigError::invalid(
                "mqtt.max_qos",
                format!("{} is out of range: must be 0, 1 or 2", m.max_qos),
            ));
        }
        if m.persistent_client_expiration == Some(Duration::ZERO) {
            return Err(ConfigError::invalid(
                "mqtt.persistent_client_expiration",
                "must be greater than 0; leave it out for sessions that never expire",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.global_queued_bytes_low >= l.global_queued_bytes_high {
            return Err(ConfigError::invalid(
                "limits.global_queued_bytes_low",
                format!(
                    "{} must be lower than limits.global_queued_bytes_high ({})",
                    l.global_queued_bytes_low, l.global_queued_bytes_high
                ),
            ));
        }
        if l.max_topic_levels == 0 {
            return Err(ConfigError::invalid(
                "limits.max_topic_levels",
                "must be at least 1",
            ));
        }
        if l.max_topic_length == 0 || l.max_topic_length > 65_535 {
            return Err(ConfigError::invalid(
                "limits.max_topic_length",
                "must be between 1 and 65535",
            ));
        }
        if l.slow_consumer_grace.is_zero() {
            return Err(ConfigError::invalid(
                "limits.slow_consumer_grace",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), ConfigError> {
        let Some(bind) = self.metrics.bind else {
            return Ok(());
        };
        if bind.port() != 0 && self.listeners.iter().any(|l| l.bind == bind) {
            return Err(ConfigError::invalid(
                "metrics.bind",
                format!("{bind} is already used by a listener"),
            ));
        }
        Ok(())
    }

    fn validate_persistence(&self) -> Result<(), ConfigError> {
        let p = &self.persistence;
        if p.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("persistence.dir", "must not be empty"));
        }
        if p.sync == SyncPolicy::Interval && p.sync_interval.is_zero() {
            return Err(ConfigError::invalid(
                "persistence.sync_interval",
                "must be greater than 0 with sync = \"interval\"",
            ));
        }
        if p.cache_size < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "persistence.cache_size",
                format!("{} is too small: at least 1048576 (1 MiB)", p.cache_size),
            ));
        }
        Ok(())
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

/// Serde support for human-readable durations: `"250ms"`, `"10s"`, `"1m"`, `"2h"`, `"1d"`,
/// `"1w"` (also `"us"` and `"ns"`), or a plain non-negative integer of seconds.
///
/// Use as `#[serde(with = "duration")]`, or `#[serde(with = "duration::option")]` for an
/// `Option<Duration>`. Formatting picks the largest unit that divides the value exactly, so
/// `format(parse(s))` gives back a canonical spelling of the same duration.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Units from largest to smallest, with their length in nanoseconds.
    const UNITS: &[(&str, u128)] = &[
        ("w", 7 * 86_400 * 1_000_000_000),
        ("d", 86_400 * 1_000_000_000),
        ("h", 3_600 * 1_000_000_000),
        ("m", 60 * 1_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];

    /// Parses `"<integer><unit>"` or a bare integer (seconds). Surrounding blanks and a blank
    /// between number and unit are allowed.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim_start();
        if num.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: expected a whole number followed by a unit \
                 (ms, s, m, h, d, w), e.g. \"10s\" or \"500ms\""
            ));
        }
        let n: u128 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        let unit_nanos = if unit.is_empty() {
            1_000_000_000
        } else {
            match UNITS.iter().find(|(name, _)| *name == unit) {
                Some((_, nanos)) => *nanos,
                None => {
                    return Err(format!(
                        "invalid duration {s:?}: unknown unit {unit:?} \
                         (expected ns, us, ms, s, m, h, d or w)"
                    ))
                }
            }
        };
        let total = n
            .checked_mul(unit_nanos)
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| format!("invalid duration {s:?}: too large"))?;
        // The remainder of a division by 1e9 always fits in u32.
        let nanos = (total % 1_000_000_000) as u32;
        Ok(Duration::new(secs, nanos))
    }

    /// Formats with the largest unit that represents `d` exactly: `10s`, `1500ms`, `2h`.
    pub fn format(d: Duration) -> String {
        let total = d.as_nanos();
        if total == 0 {
            return "0s".to_owned();
        }
        for (name, nanos) in UNITS {
            if total.is_multiple_of(*nanos) {
                return format!("{}{name}", total / nanos);
            }
        }
        // Unreachable: the last unit is 1ns, which divides everything.
        format!("{total}ns")
    }

    pub fn serialize<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        de.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10s\" or \"500ms\", or an integer of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
        }
    }

    /// The same format for `Option<Duration>`; pair with `skip_serializing_if =
    /// "Option::is_none"` and `default`, since TOML has no null.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, ser),
                None => ser.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(de).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(toml: &str) -> String {
        match Config::from_toml_str(toml) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error for {toml:?}, got {other:?}"),
        }
    }

    fn parse_error(toml: &str) -> String {
        match Config::from_toml_str(toml) {
            Err(ConfigError::Parse(msg)) => msg,
            other => panic!("expected a Parse error for {toml:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(c.listeners[0].protocol, ListenerProtocol::Mqtt);
        assert_eq!(c.listeners[0].max_connections, None);
        assert_eq!(c.mqtt.max_keepalive, 65535);
        assert_eq!(c.mqtt.max_packet_size, 1_048_576);
        assert_eq!(c.mqtt.max_inflight, 20);
        assert_eq!(c.mqtt.max_queued_messages, 1000);
        assert_eq!(c.mqtt.max_queued_bytes, 0);
        assert_eq!(c.mqtt.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.mqtt.keepalive_factor, 1.5);
        assert!(c.mqtt.retain_available);
        assert_eq!(c.mqtt.max_qos, 2);
        assert_eq!(c.mqtt.persistent_client_expiration, None);
        assert_eq!(c.mqtt.max_topic_alias, 10);
        assert_eq!(
            c.mqtt.shared_subscription_strategy,
            SharedStrategy::RoundRobin
        );
        assert_eq!(c.limits.max_connections, 100_000);
        assert_eq!(c.limits.global_queued_bytes_high, 128 << 20);
        assert_eq!(c.limits.global_queued_bytes_low, 96 << 20);
        assert_eq!(c.limits.max_subscriptions_per_client, 0);
        assert_eq!(c.limits.max_topic_levels, 128);
        assert_eq!(c.log.level, "info");
        c.validate().unwrap();
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
        assert_eq!(
            Config::from_toml_str("# nothing\n\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn empty_sections_are_the_default() {
        let c = Config::from_toml_str("[mqtt]\n[limits]\n[log]\n").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn brief_example() {
        let c = Config::from_toml_str(
            r#"
[[listeners]]
bind = "127.0.0.1:1883"          # protocol = "mqtt" by default
[mqtt]
max_keepalive = 65535
max_packet_size = 1048576
max_inflight = 20
max_queued_messages = 1000
[log]
level = "info"
"#,
        )
        .unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = Config::from_toml_str(
            "[mqtt]\nmax_inflight = 5\n[limits]\nglobal_queued_bytes_low = 1024\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.max_inflight, 5);
        assert_eq!(c.mqtt.max_packet_size, 1_048_576);
        assert_eq!(c.limits.global_queued_bytes_low, 1024);
        assert_eq!(c.limits.global_queued_bytes_high, 128 << 20);
        assert_eq!(c.listeners, Config::default().listeners);
    }

    #[test]
    fn listeners_replace_the_default_one() {
        let c = Config::from_toml_str(
            r#"
[[listeners]]
bind = "0.0.0.0:1884"
protocol = "mqtt"
max_connections = 10

[[listeners]]
bind = "[::1]:0"
"#,
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].bind, "0.0.0.0:1884".parse().unwrap());
        assert_eq!(c.listeners[0].max_connections, Some(10));
        assert_eq!(c.listeners[1].bind, "[::1]:0".parse().unwrap());
        assert_eq!(c.listeners[1].protocol, ListenerProtocol::Mqtt);
    }

    #[test]
    fn auth_section() {
        let c = Config::default();
        assert_eq!(c.auth, AuthSection::default());
        assert!(c.auth.session_owner_check);
        assert!(c.listeners_all_loopback());
        assert!(c.auth.allow_anonymous_effective(true));
        assert!(!c.auth.allow_anonymous_effective(false));

        let c = Config::from_toml_str(
            "[auth]\npassword_file = \"/etc/starling/passwd\"\nacl_file = \"acl\"\n\
             session_owner_check = false\n",
        )
        .unwrap();
        assert_eq!(
            c.auth.password_file.as_deref(),
            Some(Path::new("/etc/starling/passwd"))
        );
        assert_eq!(c.auth.acl_file.as_deref(), Some(Path::new("acl")));
        assert!(!c.auth.session_owner_check);
        assert!(
            !c.auth.allow_anonymous_effective(true),
            "a password file turns anonymous access off by default"
        );
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);

        let c = Config::from_toml_str("[auth]\nallow_anonymous = false\n").unwrap();
        assert!(!c.auth.allow_anonymous_effective(true));
        let c = Config::from_toml_str(
            "[[listeners]]\nbind = \"0.0.0.0:1883\"\n[auth]\nallow_anonymous = true\n",
        )
        .unwrap();
        assert!(!c.listeners_all_loopback());
        assert!(c.auth.allow_anonymous_effective(c.listeners_all_loopback()));
        let c = Config::from_toml_str(
            "[[listeners]]\nbind = \"[::1]:0\"\n[[listeners]]\nbind = \"127.0.0.2:0\"\n",
        )
        .unwrap();
        assert!(c.listeners_all_loopback());

        assert_eq!(
            invalid_key("[auth]\npassword_file = \"\"\n"),
            "auth.password_file"
        );
        assert_eq!(invalid_key("[auth]\nacl_file = \"\"\n"), "auth.acl_file");
        let msg = parse_error("[auth]\npasword_file = \"x\"\n");
        assert!(msg.contains("pasword_file"), "{msg}");
        let msg = parse_error("[auth]\nallow_anonymous = \"yes\"\n");
        assert!(msg.contains("allow_anonymous"), "{msg}");
    }

    #[test]
    fn listener_without_bind_uses_default_address() {
        let c = Config::from_toml_str("[[listeners]]\nprotocol = \"mqtt\"\n").unwrap();
        assert_eq!(c.listeners, vec![ListenerConfig::default()]);
    }

    #[test]
    fn listener_protocol_parsing() {
        for (text, proto) in [
            ("mqtt", ListenerProtocol::Mqtt),
            ("mqtts", ListenerProtocol::Mqtts),
            ("ws", ListenerProtocol::Ws),
            ("wss", ListenerProtocol::Wss),
        ] {
            let doc = format!("[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"{text}\"\n");
            let parsed: Config = toml::from_str(&doc).unwrap();
            assert_eq!(parsed.listeners[0].protocol, proto);
            assert_eq!(proto.to_string(), text);
            let result = Config::from_toml_str(&doc);
            if proto.is_tls() {
                // TLS listeners need a certificate and key.
                match result {
                    Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "listeners[0].cert"),
                    other => panic!("{text}: expected Invalid, got {other:?}"),
                }
                let doc = format!("{doc}cert = \"c.pem\"\nkey = \"k.pem\"\n");
                Config::from_toml_str(&doc).unwrap();
            } else {
                result.unwrap();
            }
        }
        let msg = parse_error("[[listeners]]\nprotocol = \"MQTT\"\n");
        assert!(msg.contains("protocol"), "{msg}");
        let msg = parse_error("[[listeners]]\nprotocol = \"quic\"\n");
        assert!(msg.contains("quic"), "{msg}");
    }

    #[test]
    fn bad_bind_address_names_the_key() {
        let msg = parse_error("[[listeners]]\nbind = \"localhost\"\n");
        assert!(msg.contains("bind"), "{msg}");
    }

    #[test]
    fn no_listeners_is_invalid() {
        assert_eq!(invalid_key("listeners = []\n"), "listeners");
    }

    #[test]
    fn duplicate_binds_are_invalid_except_port_zero() {
        let dup =
            "[[listeners]]\nbind = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1883\"\n";
        assert_eq!(invalid_key(dup), "listeners[1].bind");
        let zero = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\n";
        Config::from_toml_str(zero).unwrap();
    }

    #[test]
    fn metrics_bind() {
        assert_eq!(Config::default().metrics.bind, None);
        let c = Config::from_toml_str("[metrics]\nbind = \"127.0.0.1:9183\"\n").unwrap();
        assert_eq!(c.metrics.bind, Some("127.0.0.1:9183".parse().unwrap()));
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
        let clash =
            "[[listeners]]\nbind = \"127.0.0.1:1883\"\n[metrics]\nbind = \"127.0.0.1:1883\"\n";
        assert_eq!(invalid_key(clash), "metrics.bind");
        let msg = parse_error("[metrics]\nbind = \"localhost\"\n");
        assert!(msg.contains("bind"), "{msg}");
        let msg = parse_error("[metrics]\nport = 9183\n");
        assert!(msg.contains("port"), "{msg}");
    }

    #[test]
    fn tls_and_ws_listener_keys() {
        let c = Config::from_toml_str(
            r#"
[[listeners]]
bind = "127.0.0.1:8883"
protocol = "mqtts"
cert = "/etc/starling/server.pem"
key = "/etc/starling/server.key"
ca = "/etc/starling/ca.pem"
require_certificate = true
use_identity_as_username = true
handshake_timeout = "3s"

[[listeners]]
bind = "127.0.0.1:8080"
protocol = "ws"

[[listeners]]
bind = "127.0.0.1:8081"
protocol = "wss"
cert = "s.pem"
key = "s.key"
path = "/ws"
"#,
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(
            l.cert.as_deref(),
            Some(Path::new("/etc/starling/server.pem"))
        );
        assert_eq!(
            l.key.as_deref(),
            Some(Path::new("/etc/starling/server.key"))
        );
        assert_eq!(l.ca.as_deref(), Some(Path::new("/etc/starling/ca.pem")));
        assert!(l.require_certificate && l.use_identity_as_username);
        assert!(!l.use_subject_as_username);
        assert_eq!(l.handshake_timeout(), Duration::from_secs(3));
        assert_eq!(c.listeners[1].ws_path(), "/mqtt");
        assert_eq!(c.listeners[1].handshake_timeout(), Duration::from_secs(10));
        assert_eq!(c.listeners[2].ws_path(), "/ws");
        // Absent optional keys are not rendered, so a plain listener stays short.
        let text = Config::default().to_toml_string();
        for k in ["cert", "path", "handshake_timeout", "require_certificate"] {
            assert!(!text.contains(&format!("{k} = ")), "{text}");
        }
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
    }

    #[test]
    fn tls_and_ws_listener_validation() {
        let tls = "[[listeners]]\nprotocol = \"mqtts\"\ncert = \"c\"\nkey = \"k\"\n";
        let wss = "[[listeners]]\nprotocol = \"wss\"\ncert = \"c\"\nkey = \"k\"\n";
        for (doc, key) in [
            ("[[listeners]]\nprotocol = \"mqtts\"\ncert = \"c\"\n", "key"),
            ("[[listeners]]\nprotocol = \"wss\"\nkey = \"k\"\n", "cert"),
            ("[[listeners]]\ncert = \"c\"\n", "cert"),
            ("[[listeners]]\nprotocol = \"ws\"\nkey = \"k\"\n", "key"),
            ("[[listeners]]\nca = \"a\"\n", "ca"),
            ("[[listeners]]\nrequire_certificate = true\n", "require_certificate"),
            ("[[listeners]]\nuse_identity_as_username = true\n", "use_identity_as_username"),
            ("[[listeners]]\npath = \"/mqtt\"\n", "path"),
            (&format!("{tls}path = \"/mqtt\"\n"), "path"),
            ("[[listeners]]\nhandshake_timeout = \"5s\"\n", "handshake_timeout"),
            (&format!("{tls}handshake_timeout = \"0s\"\n"), "handshake_timeout"),
            (&format!("{tls}require_certificate = true\n"), "require_certificate"),
            (&format!("{wss}use_subject_as_username = true\n"), "use_subject_as_username"),
            (
                &format!(
                    "{tls}ca = \"a\"\nuse_identity_as_username = true\nuse_subject_as_username = true\n"
                ),
                "use_subject_as_username",
            ),
            (&format!("{wss}path = \"mqtt\"\n"), "path"),
            (&format!("{wss}path = \"/a b\"\n"), "path"),
        ] {
            assert_eq!(invalid_key(doc), format!("listeners[0].{key}"), "{doc}");
        }
        // An explicit `false` is the default and allowed anywhere.
        Config::from_toml_str("[[listeners]]\nrequire_certificate = false\n").unwrap();
        Config::from_toml_str(&format!("{tls}ca = \"a\"\nrequire_certificate = true\n")).unwrap();
        Config::from_toml_str(&format!("{tls}ca = \"a\"\n")).unwrap();
        Config::from_toml_str("[[listeners]]\nprotocol = \"ws\"\nhandshake_timeout = \"1s\"\n")
            .unwrap();
        let err = Config::from_toml_str("[[listeners]]\nprotocol = \"wss\"\n").unwrap_err();
        assert!(err.to_string().contains("listeners[0].cert"), "{err}");
    }

    #[test]
    fn listener_max_connections_zero_is_invalid() {
        assert_eq!(
            invalid_key("[[listeners]]\nmax_connections = 0\n"),
            "listeners[0].max_connections"
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        for (doc, key) in [
            ("[mqtt]\nmax_packet_sise = 10\n", "max_packet_sise"),
            ("bogus = 1\n", "bogus"),
            ("[limits]\nmax_conections = 3\n", "max_conections"),
            ("[log]\nformat = \"json\"\n", "format"),
            ("[[listeners]]\nport = 1883\n", "port"),
            ("[tls]\ncert = \"x\"\n", "tls"),
        ] {
            let msg = parse_error(doc);
            assert!(
                msg.contains(key),
                "error for {doc:?} does not name {key}: {msg}"
            );
        }
    }

    #[test]
    fn wrong_types_name_the_key() {
        let msg = parse_error("[mqtt]\nmax_inflight = \"twenty\"\n");
        assert!(msg.contains("max_inflight"), "{msg}");
        let msg = parse_error("[mqtt]\nmax_qos = 300\n");
        assert!(msg.contains("max_qos"), "{msg}");
        let msg = parse_error("[mqtt]\nretain_available = 1\n");
        assert!(msg.contains("retain_available"), "{msg}");
    }

    #[test]
    fn max_packet_size_range() {
        assert_eq!(
            invalid_key("[mqtt]\nmax_packet_size = 0\n"),
            "mqtt.max_packet_size"
        );
        assert_eq!(
            invalid_key("[mqtt]\nmax_packet_size = 268435456\n"),
            "mqtt.max_packet_size"
        );
        let c = Config::from_toml_str("[mqtt]\nmax_packet_size = 268435455\n").unwrap();
        assert_eq!(c.mqtt.max_packet_size, MQTT_MAX_PACKET_SIZE);
        Config::from_toml_str("[mqtt]\nmax_packet_size = 1\n").unwrap();
    }

    #[test]
    fn error_message_names_the_key() {
        let err = Config::from_toml_str("[mqtt]\nmax_packet_size = 0\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mqtt.max_packet_size"), "{text}");
        assert!(text.contains("268435455"), "{text}");
    }

    #[test]
    fn keepalive_factor_range() {
        assert_eq!(
            invalid_key("[mqtt]\nkeepalive_factor = 0.5\n"),
            "mqtt.keepalive_factor"
        );
        assert_eq!(
            invalid_key("[mqtt]\nkeepalive_factor = nan\n"),
            "mqtt.keepalive_factor"
        );
        assert_eq!(
            invalid_key("[mqtt]\nkeepalive_factor = inf\n"),
            "mqtt.keepalive_factor"
        );
        let c = Config::from_toml_str("[mqtt]\nkeepalive_factor = 1.0\n").unwrap();
        assert_eq!(c.mqtt.keepalive_factor, 1.0);
        // An integer is accepted where a float is expected.
        let c = Config::from_toml_str("[mqtt]\nkeepalive_factor = 2\n").unwrap();
        assert_eq!(c.mqtt.keepalive_factor, 2.0);
    }

    #[test]
    fn other_ranges() {
        assert_eq!(
            invalid_key("[mqtt]\nmax_inflight = 0\n"),
            "mqtt.max_inflight"
        );
        assert_eq!(invalid_key("[mqtt]\nmax_qos = 3\n"), "mqtt.max_qos");
        assert_eq!(
            invalid_key("[mqtt]\nconnect_timeout = \"0s\"\n"),
            "mqtt.connect_timeout"
        );
        assert_eq!(
            invalid_key("[mqtt]\npersistent_client_expiration = \"0s\"\n"),
            "mqtt.persistent_client_expiration"
        );
        assert_eq!(
            invalid_key("[limits]\nmax_topic_levels = 0\n"),
            "limits.max_topic_levels"
        );
        assert_eq!(invalid_key("[log]\nlevel = \"info,[[[\"\n"), "log.level");
        Config::from_toml_str("[log]\nlevel = \"warn,starling=debug\"\n").unwrap();
        Config::from_toml_str("[mqtt]\nmax_qos = 0\nmax_topic_alias = 0\n").unwrap();
    }

    #[test]
    fn negative_values_are_parse_errors() {
        let msg = parse_error("[mqtt]\nmax_queued_bytes = -1\n");
        assert!(msg.contains("max_queued_bytes"), "{msg}");
    }

    #[test]
    fn watermarks_must_be_ordered() {
        assert_eq!(
            invalid_key("[limits]\nglobal_queued_bytes_low = 536870912\n"),
            "limits.global_queued_bytes_low"
        );
        assert_eq!(
            invalid_key(
                "[limits]\nglobal_queued_bytes_high = 100\nglobal_queued_bytes_low = 200\n"
            ),
            "limits.global_queued_bytes_low"
        );
        let c = Config::from_toml_str(
            "[limits]\nglobal_queued_bytes_high = 200\nglobal_queued_bytes_low = 100\n",
        )
        .unwrap();
        assert_eq!(c.limits.global_queued_bytes_high, 200);
    }

    #[test]
    fn shared_strategy_parsing() {
        let c =
            Config::from_toml_str("[mqtt]\nshared_subscription_strategy = \"random\"\n").unwrap();
        assert_eq!(c.mqtt.shared_subscription_strategy, SharedStrategy::Random);
        let c = Config::from_toml_str("[mqtt]\nshared_subscription_strategy = \"round_robin\"\n")
            .unwrap();
        assert_eq!(
            c.mqtt.shared_subscription_strategy,
            SharedStrategy::RoundRobin
        );
        let msg = parse_error("[mqtt]\nshared_subscription_strategy = \"roundrobin\"\n");
        assert!(msg.contains("shared_subscription_strategy"), "{msg}");
    }

    #[test]
    fn durations_parse() {
        use duration::parse;
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse(" 3 s "), Ok(Duration::from_secs(3)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "10x",
            "1.5s",
            "-1s",
            "10 seconds",
            "1h30m",
            "99999999999999999999999999w",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn durations_format() {
        use duration::format;
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_millis(200)), "200ms");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(60)), "1m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_secs(86_400)), "1d");
        assert_eq!(format(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(format(Duration::from_nanos(1_000_001)), "1000001ns");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn durations_round_trip() {
        use duration::{format, parse};
        for text in [
            "10s", "500ms", "1m", "2h", "1d", "1w", "90s", "7ns", "250us",
        ] {
            let d = parse(text).unwrap();
            assert_eq!(format(d), text);
            assert_eq!(parse(&format(d)), Ok(d));
        }
        for d in [
            Duration::from_millis(1),
            Duration::from_millis(61_001),
            Duration::new(3, 7),
            Duration::from_secs(u64::from(u32::MAX)),
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    #[test]
    fn sub_second_and_integer_durations_in_toml() {
        let c = Config::from_toml_str(
            "[mqtt]\nconnect_timeout = \"200ms\"\npersistent_client_expiration = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.connect_timeout, Duration::from_millis(200));
        assert_eq!(
            c.mqtt.persistent_client_expiration,
            Some(Duration::from_secs(7200))
        );
        let c = Config::from_toml_str("[mqtt]\nconnect_timeout = 3\n").unwrap();
        assert_eq!(c.mqtt.connect_timeout, Duration::from_secs(3));
        let c = Config::from_toml_str("[mqtt]\npersistent_client_expiration = 60\n").unwrap();
        assert_eq!(
            c.mqtt.persistent_client_expiration,
            Some(Duration::from_secs(60))
        );
        let msg = parse_error("[mqtt]\nconnect_timeout = \"10 parsecs\"\n");
        assert!(msg.contains("connect_timeout"), "{msg}");
        let msg = parse_error("[mqtt]\nconnect_timeout = -5\n");
        assert!(msg.contains("connect_timeout"), "{msg}");
    }

    #[test]
    fn to_toml_string_round_trips() {
        let default = Config::default();
        let text = default.to_toml_string();
        assert!(text.contains("connect_timeout = \"10s\""), "{text}");
        assert!(text.contains("[[listeners]]"), "{text}");
        assert!(
            text.contains("shared_subscription_strategy = \"round_robin\""),
            "{text}"
        );
        assert_eq!(Config::from_toml_str(&text).unwrap(), default);

        let mut custom = Config::default();
        custom.mqtt.connect_timeout = Duration::from_millis(200);
        custom.mqtt.persistent_client_expiration = Some(Duration::from_secs(86_400));
        custom.mqtt.shared_subscription_strategy = SharedStrategy::Random;
        custom.listeners.push(ListenerConfig {
            bind: "[::]:1884".parse().unwrap(),
            protocol: ListenerProtocol::Mqtt,
            max_connections: Some(50),
            ..ListenerConfig::default()
        });
        custom.listeners.push(ListenerConfig {
            bind: "[::]:8884".parse().unwrap(),
            protocol: ListenerProtocol::Wss,
            cert: Some("/etc/starling/server.pem".into()),
            key: Some("/etc/starling/server.key".into()),
            ca: Some("/etc/starling/ca.pem".into()),
            require_certificate: true,
            use_subject_as_username: true,
            path: Some("/ws".to_owned()),
            handshake_timeout: Some(Duration::from_secs(3)),
            ..ListenerConfig::default()
        });
        let text = custom.to_toml_string();
        assert!(text.contains("connect_timeout = \"200ms\""), "{text}");
        assert!(
            text.contains("persistent_client_expiration = \"1d\""),
            "{text}"
        );
        assert_eq!(Config::from_toml_str(&text).unwrap(), custom);
    }

    #[test]
    fn full_range_integers_round_trip() {
        let mut c = Config::default();
        c.mqtt.max_queued_bytes = u64::MAX;
        c.limits.max_connections = usize::MAX;
        c.limits.global_queued_bytes_high = u64::MAX;
        c.validate().unwrap();
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
    }

    #[test]
    fn load_reports_missing_file_and_path_in_parse_errors() {
        let dir = std::env::temp_dir().join(format!("starling-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        match Config::load(&missing) {
            Err(e @ ConfigError::Io { .. }) => {
                assert!(e.to_string().contains("missing.toml"), "{e}")
            }
            other => panic!("expected Io, got {other:?}"),
        }
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[mqtt]\nmax_inflight = 0\nnope = 1\n").unwrap();
        match Config::load(&bad) {
            Err(ConfigError::Parse(msg)) => {
                assert!(msg.contains("bad.toml"), "{msg}");
                assert!(msg.contains("nope"), "{msg}");
                assert!(msg.contains("line 3"), "{msg}");
            }
            other => panic!("expected Parse, got {other:?}"),
        }
        let good = dir.join("good.toml");
        std::fs::write(&good, "[mqtt]\nconnect_timeout = \"200ms\"\n").unwrap();
        let c = Config::load(&good).unwrap();
        assert_eq!(c.mqtt.connect_timeout, Duration::from_millis(200));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn persistence_section() {
        let c = Config::default();
        assert_eq!(c.persistence.enabled, None);
        assert!(
            !c.persistence.is_enabled(false),
            "the library defaults to memory"
        );
        assert!(
            c.persistence.is_enabled(true),
            "the binary defaults to disk"
        );
        assert_eq!(c.persistence.dir, PathBuf::from("data"));
        assert_eq!(c.persistence.sync_mode(), crate::storage::SyncMode::Batch);
        assert_eq!(c.persistence.store_options().cache_size, 32 * 1024 * 1024);
        let c = Config::from_toml_str(
            "[persistence]\nenabled = false\ndir = \"/var/lib/starling\"\nsync = \"interval\"\n\
             sync_interval = \"250ms\"\ncache_size = 1048576\n",
        )
        .unwrap();
        assert!(!c.persistence.is_enabled(true), "explicit false wins");
        assert_eq!(
            c.persistence.sync_mode(),
            crate::storage::SyncMode::Interval(Duration::from_millis(250))
        );
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
        for (text, mode) in [
            ("always", crate::storage::SyncMode::Always),
            ("none", crate::storage::SyncMode::None),
            ("batch", crate::storage::SyncMode::Batch),
        ] {
            let c = Config::from_toml_str(&format!("[persistence]\nsync = \"{text}\"\n")).unwrap();
            assert_eq!(c.persistence.sync_mode(), mode);
        }
        let msg = parse_error("[persistence]\nsync = \"sometimes\"\n");
        assert!(msg.contains("sync"), "{msg}");
        assert_eq!(
            invalid_key("[persistence]\nsync = \"interval\"\nsync_interval = \"0s\"\n"),
            "persistence.sync_interval"
        );
        // A zero interval is fine when it is not used.
        Config::from_toml_str("[persistence]\nsync_interval = \"0s\"\n").unwrap();
        assert_eq!(
            invalid_key("[persistence]\ncache_size = 1000\n"),
            "persistence.cache_size"
        );
        assert_eq!(
            invalid_key("[persistence]\ndir = \"\"\n"),
            "persistence.dir"
        );
    }

    #[test]
    fn shipped_example_is_the_default() {
        let example = include_str!("../config/starling.toml");
        let c = Config::from_toml_str(example).unwrap();
        assert_eq!(c, Config::default());
        // Every key the schema knows appears in the example (commented-out keys included), so
        // the example stays the complete reference when fields are added.
        let rendered = {
            let mut c = Config::default();
            c.mqtt.persistent_client_expiration = Some(Duration::from_secs(1));
            c.listeners[0].max_connections = Some(1);
            c.metrics.bind = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9183)));
            c.auth.password_file = Some("p".into());
            c.auth.acl_file = Some("a".into());
            c.auth.allow_anonymous = Some(true);
            c.listeners.push(ListenerConfig {
                bind: "127.0.0.1:8883".parse().unwrap(),
                protocol: ListenerProtocol::Wss,
                cert: Some("c".into()),
                key: Some("k".into()),
                ca: Some("a".into()),
                require_certificate: true,
                use_identity_as_username: true,
                use_subject_as_username: true,
                path: Some("/p".into()),
                handshake_timeout: Some(Duration::from_secs(1)),
                ..ListenerConfig::default()
            });
            c.persistence.enabled = Some(true);
            c.to_toml_string()
        };
        for line in rendered.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                let key = key.trim();
                assert!(
                    example.contains(&format!("{key} = ")),
                    "config/starling.toml does not mention `{key}`"
                );
            }
        }
    }
}
