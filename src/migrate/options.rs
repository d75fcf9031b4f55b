//! The Mosquitto options translated one to one into a global Starling key, and the reasons for
//! those that have no equivalent.

/// How a Mosquitto value becomes a TOML value.
#[derive(Debug, Clone, Copy)]
pub enum Conv {
    /// `true` / `false`.
    Bool,
    /// The rest of the line, as a string (paths, prefixes).
    Str,
    /// An integer within `min..=max`; `zero` replaces 0 (Mosquitto's "no limit").
    Int {
        min: i64,
        max: i64,
        zero: Option<i64>,
    },
    /// Seconds, written as a Starling duration (`"10s"`).
    Seconds,
    /// Mosquitto's `<n><h|d|w|m|y>` expiration.
    Expiry,
}

/// `(mosquitto option, starling section, starling key, conversion)`.
pub const SIMPLE: &[(&str, &str, &str, Conv)] = &[
    ("allow_anonymous", "auth", "allow_anonymous", Conv::Bool),
    ("password_file", "auth", "password_file", Conv::Str),
    ("acl_file", "auth", "acl_file", Conv::Str),
    (
        "allow_zero_length_clientid",
        "mqtt",
        "allow_zero_length_clientid",
        Conv::Bool,
    ),
    ("auto_id_prefix", "mqtt", "auto_id_prefix", Conv::Str),
    ("retain_available", "mqtt", "retain_available", Conv::Bool),
    (
        "max_qos",
        "mqtt",
        "max_qos",
        Conv::Int {
            min: 0,
            max: 2,
            zero: None,
        },
    ),
    (
        "max_keepalive",
        "mqtt",
        "max_keepalive",
        Conv::Int {
            min: 1,
            max: 65535,
            zero: None,
        },
    ),
    (
        "message_size_limit",
        "mqtt",
        "max_payload_size",
        Conv::Int {
            min: 0,
            max: 268_435_455,
            zero: None,
        },
    ),
    (
        "max_packet_size",
        "mqtt",
        "max_packet_size",
        Conv::Int {
            min: 1,
            max: 268_435_455,
            zero: Some(268_435_455),
        },
    ),
    (
        "max_inflight_messages",
        "mqtt",
        "max_inflight",
        Conv::Int {
            min: 1,
            max: 65535,
            zero: Some(65535),
        },
    ),
    (
        "max_queued_messages",
        "mqtt",
        "max_queued_messages",
        Conv::Int {
            min: 0,
            max: i64::MAX,
            zero: None,
        },
    ),
    (
        "max_queued_bytes",
        "mqtt",
        "max_queued_bytes",
        Conv::Int {
            min: 0,
            max: i64::MAX,
            zero: None,
        },
    ),
    (
        "persistent_client_expiration",
        "mqtt",
        "persistent_client_expiration",
        Conv::Expiry,
    ),
    ("sys_interval", "sys", "interval", Conv::Seconds),
    ("persistence", "persistence", "enabled", Conv::Bool),
    ("persistence_location", "persistence", "dir", Conv::Str),
];

/// Options of a bridge (`connection` block), besides those starting with `bridge_`,
/// `remote_`, `local_` or `notification`. `clientid`, `username` and `password` are the
/// deprecated names of `remote_clientid`, `remote_username` and `remote_password`.
pub const BRIDGE: &[&str] = &[
    "connection",
    "address",
    "addresses",
    "topic",
    "cleansession",
    "keepalive_interval",
    "idle_timeout",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "try_private",
    "clientid",
    "username",
    "password",
];

/// Bridge options whose value is what Starling's bridges always do: `(option, value, why)`,
/// written as a comment in the `[[bridges]]` table rather than left out.
pub const BRIDGE_AS_STARLING: &[(&str, &str, &str)] = &[
    (
        "start_type",
        "automatic",
        "Starling's bridges start with the broker and reconnect when the link drops",
    ),
    (
        "bridge_insecure",
        "false",
        "Starling always checks the remote certificate and its host name",
    ),
    (
        "bridge_outgoing_retain",
        "true",
        "RETAIN crosses as published",
    ),
];

/// Whether `key` belongs to a bridge block.
pub fn is_bridge(key: &str) -> bool {
    BRIDGE.contains(&key)
        || ["bridge_", "remote_", "local_", "notification"]
            .iter()
            .any(|p| key.starts_with(p))
}

/// Why an option of a bridge block has no equivalent in `[[bridges]]`.
pub fn bridge_no_equivalent(key: &str) -> &'static str {
    match key {
        "bridge_capath" => {
            "Starling takes one PEM bundle: concatenate the certificates into bridge_cafile"
        }
        "bridge_insecure" => "Starling always checks the remote certificate and its host name",
        "bridge_identity" | "bridge_psk" => "TLS-PSK is not supported",
        "bridge_tls_version" => "Starling's bridges speak TLS 1.2 or 1.3 (rustls)",
        "bridge_ciphers" | "bridge_ciphers_tls1.3" => "Starling uses rustls's cipher suites",
        "bridge_alpn" => "Starling's bridges send no ALPN protocol",
        "bridge_require_ocsp" => "OCSP is not supported",
        "bridge_bind_address" => "Starling's bridges do not choose their source address",
        "bridge_outgoing_retain" => "RETAIN always crosses as published",
        "bridge_receive_maximum" => {
            "Starling's max_inflight (default 20) sets the Receive Maximum, and the messages \
             in flight to the remote broker"
        }
        "bridge_session_expiry_interval" => {
            "Starling asks the remote broker to keep the session for ever (cleansession false) \
             or not at all (true)"
        }
        "bridge_max_packet_size" | "bridge_max_topic_alias" | "bridge_attempt_unsubscribe" => {
            "no per-bridge Starling equivalent"
        }
        "bridge_tcp_keepalive" | "bridge_tcp_user_timeout" => {
            "no TCP timer settings: keepalive_interval detects a dead link"
        }
        "bridge_reload_type" => "no Starling equivalent",
        "start_type" => {
            "Starling's bridges start with the broker and reconnect (start_type automatic)"
        }
        "idle_timeout" | "threshold" => "only for start_type lazy, which Starling does not have",
        "local_username" | "local_password" => {
            "a bridge's local end logs in to nothing: it bypasses the password file, the ACL \
             and dynamic security"
        }
        "local_cleansession" => "the bridge's local session follows cleansession",
        _ => "not an option of Starling's bridges",
    }
}

/// Why a known option has no equivalent.
pub fn no_equivalent(key: &str) -> &'static str {
    match key {
        "log_timestamp" | "log_timestamp_format" => {
            "Starling stamps every log line with an RFC 3339 time; the format is not configurable"
        }
        "connection_messages" => {
            "Starling always logs connects and disconnects at info (log.level = \"warn\" hides \
             them)"
        }
        k if k.starts_with("log_") => {
            "Starling's log.level is a tracing filter (error, warn, info, debug), not a set of \
             message types"
        }
        k if k.contains("plugin") || k.starts_with("auth_opt_") => "Starling has no plugins",
        "user" => "Starling does not change user: start it as that user (systemd User=)",
        "capath" => "Starling takes one PEM bundle: concatenate the certificates into a cafile",
        "bind_interface" => {
            "Starling binds addresses, not interfaces: put the interface's address in the listener"
        }
        "ciphers" | "ciphers_tls1.3" => "Starling uses rustls's cipher suites",
        "crlfile" => "certificate revocation lists are not supported",
        "dhparamfile" => "rustls uses ECDHE only: no DH parameters",
        "psk_hint" | "psk_file" => "TLS-PSK is not supported",
        "http_dir" => "Starling serves no files over HTTP",
        "mount_point" => "mount points are not supported",
        "persistence_file" => "Starling's store is a directory of its own files (persistence.dir)",
        "clientid_prefixes" => "client id prefixes are not supported",
        "use_username_as_clientid" => "not supported",
        "websockets_log_level" | "websockets_headers_size" => "no such WebSocket setting",
        "memory_limit" => "use [limits] global_queued_bytes_high/low to bound queued messages",
        "max_inflight_bytes" => "only a count of in-flight messages (mqtt.max_inflight)",
        "queue_qos0_messages" => "no Starling equivalent",
        "upgrade_outgoing_qos" => "no Starling equivalent",
        "check_retain_source" => "no Starling equivalent",
        "set_tcp_nodelay" => "Starling always sets TCP_NODELAY",
        "allow_duplicate_messages" => "deprecated in Mosquitto; no Starling equivalent",
        _ => "unknown to starling migrate",
    }
}
