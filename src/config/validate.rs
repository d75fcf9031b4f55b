//! Validation of a parsed [`Config`]: what the types cannot express (ranges, relations between
//! keys, files that must exist, transport settings that only fit some protocols). Every error
//! names the key it is about.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

impl Config {
    /// Checks what the types cannot: ranges, relations between keys and unsupported features.
    /// Returns the first problem found, naming its key (e.g. `mqtt.max_packet_size`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listeners()?;
        super::bridge::validate(&self.bridges)?;
        super::bridge::validate_cluster_mode(&self.bridges, self.cluster_node())?;
        if let Some(c) = &self.cluster {
            super::cluster::validate(c)?;
        }
        for (key, path) in [
            ("auth.password_file", &self.auth.password_file),
            ("auth.acl_file", &self.auth.acl_file),
            ("auth.dynamic_security", &self.auth.dynamic_security),
            ("log.file", &self.log.file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(
                    key,
                    "must not be empty; leave the key out instead",
                ));
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            for (key, path) in [
                ("password_file", &l.password_file),
                ("acl_file", &l.acl_file),
            ] {
                if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(ConfigError::invalid(
                        format!("listeners[{i}].{key}"),
                        "must not be empty; leave the key out to use the [auth] one",
                    ));
                }
            }
        }
        self.validate_login_slowdown()?;
        self.validate_mqtt()?;
        self.validate_limits()?;
        self.validate_metrics()?;
        self.validate_persistence()?;
        let max_bytes = self.retained.max_bytes;
        if max_bytes != 0 && max_bytes < 1024 {
            return Err(ConfigError::invalid(
                "retained.max_bytes",
                format!("{max_bytes} is too small: 0 (no limit) or at least 1024"),
            ));
        }
        if self.log.syslog && self.log.syslog_socket.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "log.syslog_socket",
                "must not be empty when log.syslog is true (the default is /dev/log)",
            ));
        }
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
            if l.backlog == 0 {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].backlog"),
                    "must be at least 1",
                ));
            }
            if l.max_connections == Some(0) {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].max_connections"),
                    "must be at least 1; leave it out for no per-listener limit",
                ));
            }
            for (name, rate) in [
                ("max_publish_rate", l.max_publish_rate),
                ("max_publish_bandwidth", l.max_publish_bandwidth),
            ] {
                if rate == Some(0) {
                    return Err(ConfigError::invalid(
                        format!("listeners[{i}].{name}"),
                        "must be at least 1; leave it out for no per-listener limit",
                    ));
                }
            }
            Self::validate_unix(i, l)?;
            Self::validate_proxy(i, l)?;
            // Port 0 asks the OS for a fresh port each time, so repeats are not conflicts.
            let fresh_port = l.bind.tcp().is_some_and(|a| a.port() == 0);
            if !fresh_port && !bound.insert(l.bind.clone()) {
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
        Self::validate_transport_keys_apply(i, l)?;
        if l.handshake_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::invalid(
                format!("listeners[{i}].handshake_timeout"),
                "must be greater than 0",
            ));
        }
        if let Some(path) = &l.path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '?') {
                return Err(ConfigError::invalid(
                    format!("listeners[{i}].path"),
                    format!("{path:?} must start with \"/\" and hold no blanks or query"),
                ));
            }
        }
        Self::validate_tls(i, l)
    }

    /// Listener `i` sets TLS keys only on a TLS protocol and `path` only on a WebSocket one.
    fn validate_transport_keys_apply(i: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Listener `i`'s TLS keys are complete: a certificate and key on a TLS listener, `ca` for
    /// any client-certificate setting, and at most one way to take the username from it.
    fn validate_tls(i: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
        let key = |name: &str| format!("listeners[{i}].{name}");
        let proto = l.protocol;
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

    /// `mqtt.max_packet_size`, `max_client_id_length` and `max_payload_size`: what the wire
    /// format can carry.
    fn validate_mqtt_sizes(&self) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        if !(1..=MQTT_MAX_PACKET_SIZE).contains(&m.max_packet_size) {
            return Err(ConfigError::invalid(
                "mqtt.max_packet_size",
                format!(
                    "{} is out of range: must be between 1 and {MQTT_MAX_PACKET_SIZE}",
                    m.max_packet_size
                ),
            ));
        }
        if !(MIN_CLIENT_ID_LENGTH..=usize::from(u16::MAX)).contains(&m.max_client_id_length) {
            return Err(ConfigError::invalid(
                "mqtt.max_client_id_length",
                format!(
                    "{} is out of range: must be between {MIN_CLIENT_ID_LENGTH} (every server \
                     accepts ids of 1 to 23 bytes [MQTT-3.1.3-5]) and 65535",
                    m.max_client_id_length
                ),
            ));
        }
        let prefix = &m.auto_id_prefix;
        if prefix.len() > 64
            || prefix.contains(['/', '+', '#'])
            || prefix.chars().any(char::is_control)
        {
            return Err(ConfigError::invalid(
                "mqtt.auto_id_prefix",
                "must be at most 64 bytes without '/', '+', '#' or control characters (made-up \
                 ids are substituted into ACL patterns as %c)",
            ));
        }
        if m.max_payload_size > MQTT_MAX_PACKET_SIZE {
            return Err(ConfigError::invalid(
                "mqtt.max_payload_size",
                format!(
                    "{} is out of range: must be between 0 (no limit) and {MQTT_MAX_PACKET_SIZE}",
                    m.max_payload_size
                ),
            ));
        }
        Ok(())
    }

    fn validate_mqtt(&self) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        if m.receive_maximum == 0 {
            return Err(ConfigError::invalid(
                "mqtt.receive_maximum",
                "must be at least 1 [MQTT 5.0 §3.2.2.3.3: Receive Maximum 0 is a Protocol Error]",
            ));
        }
        self.validate_mqtt_sizes()?;
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

    /// The failed-login slowdown: off with `login_delay_max = "0s"`, otherwise every key must
    /// make it do something.
    fn validate_login_slowdown(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if a.login_delay_max.is_zero() {
            return Ok(());
        }
        if a.login_delay.is_zero() || a.login_delay > a.login_delay_max {
            return Err(ConfigError::invalid(
                "auth.login_delay",
                "must be greater than 0 and at most auth.login_delay_max \
                 (set login_delay_max = \"0s\" to turn the slowdown off)",
            ));
        }
        if a.login_failure_memory.is_zero() {
            return Err(ConfigError::invalid(
                "auth.login_failure_memory",
                "must be greater than 0",
            ));
        }
        if a.login_tracked_peers == 0 {
            return Err(ConfigError::invalid(
                "auth.login_tracked_peers",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), ConfigError> {
        let m = &self.metrics;
        for (key, n) in [
            ("metrics.max_connections", m.max_connections),
            (
                "metrics.max_connections_per_peer",
                m.max_connections_per_peer,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if m.header_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "metrics.header_timeout",
                "must be greater than 0",
            ));
        }
        for (key, file) in [
            ("metrics.bearer_token_file", &m.bearer_token_file),
            ("metrics.admin_token_file", &m.admin_token_file),
        ] {
            if file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(
                    key,
                    "must not be empty; leave the key out instead",
                ));
            }
        }
        let Some(bind) = self.metrics.bind else {
            return Ok(());
        };
        if bind.port() != 0 && self.listeners.iter().any(|l| l.bind == bind.into()) {
            return Err(ConfigError::invalid(
                "metrics.bind",
                format!("{bind} is already used by a listener"),
            ));
        }
        Ok(())
    }

    /// The unix-socket keys of listener `i`: only on unix sockets, and well formed.
    fn validate_unix(i: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
        let key = |name: &str| format!("listeners[{i}].{name}");
        let path = match &l.bind {
            BindAddr::Unix(p) => p,
            BindAddr::Tcp(_) => {
                let set = [("mode", &l.mode), ("owner", &l.owner), ("group", &l.group)];
                if let Some((name, _)) = set.iter().find(|(_, v)| v.is_some()) {
                    return Err(ConfigError::invalid(
                        key(name),
                        "only valid on unix-socket listeners (bind = \"unix:/path\")",
                    ));
                }
                return Ok(());
            }
        };
        if path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                key("bind"),
                "a unix socket needs a path, e.g. \"unix:/run/starling/starling.sock\"",
            ));
        }
        // sun_path holds 108 bytes with the terminating NUL.
        if path.as_os_str().len() > 107 {
            return Err(ConfigError::invalid(
                key("bind"),
                format!(
                    "{}: a unix socket path has at most 107 bytes",
                    path.display()
                ),
            ));
        }
        if let Some(mode) = &l.mode {
            ListenerConfig::parse_mode(mode)
                .map_err(|why| ConfigError::invalid(key("mode"), why))?;
        }
        for (name, value) in [("owner", &l.owner), ("group", &l.group)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    key(name),
                    "must not be empty; leave the key out instead",
                ));
            }
        }
        Ok(())
    }

    /// The PROXY protocol keys of listener `i`.
    fn validate_proxy(i: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
        if l.proxy_protocol_trusted.is_some() && !l.proxy_protocol {
            return Err(ConfigError::invalid(
                format!("listeners[{i}].proxy_protocol_trusted"),
                "only valid with proxy_protocol = true",
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

    /// `[[listeners]] backlog`: the listen queue, 1024 unless set, at least 1.
    #[test]
    fn listener_backlog() {
        assert_eq!(Config::default().listeners[0].backlog, 1024);
        let c = Config::from_toml_str("[[listeners]]\nbind = \"127.0.0.1:0\"\nbacklog = 4096\n")
            .unwrap();
        assert_eq!(c.listeners[0].backlog, 4096);
        assert_eq!(
            invalid_key("[[listeners]]\nbind = \"127.0.0.1:0\"\nbacklog = 0\n"),
            "listeners[0].backlog"
        );
    }
}
