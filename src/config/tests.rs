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
    assert_eq!(c.mqtt.max_client_id_length, 256);
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
    assert_eq!(c.limits.max_subscriptions_per_client, 10_000);
    assert_eq!(c.limits.max_topic_levels, 201);
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
    let clash = "[[listeners]]\nbind = \"127.0.0.1:1883\"\n[metrics]\nbind = \"127.0.0.1:1883\"\n";
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
    let hs = |i: usize| c.listeners[i].handshake_timeout(Duration::ZERO).as_secs();
    assert_eq!((hs(0), hs(1)), (3, 10));
    assert_eq!(c.listeners[1].ws_path(), None, "any path, as Mosquitto");
    assert_eq!(c.listeners[2].ws_path(), Some("/ws"));
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
        (
            "[[listeners]]\nrequire_certificate = true\n",
            "require_certificate",
        ),
        (
            "[[listeners]]\nuse_identity_as_username = true\n",
            "use_identity_as_username",
        ),
        ("[[listeners]]\npath = \"/mqtt\"\n", "path"),
        (&format!("{tls}path = \"/mqtt\"\n"), "path"),
        (
            &format!("{tls}handshake_timeout = \"0s\"\n"),
            "handshake_timeout",
        ),
        (
            &format!("{tls}require_certificate = true\n"),
            "require_certificate",
        ),
        (
            &format!("{wss}use_subject_as_username = true\n"),
            "use_subject_as_username",
        ),
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
fn listener_rate_limits_parse_default_off_and_reject_zero() {
    let c = Config::default();
    assert_eq!(c.listeners[0].max_publish_rate, None);
    assert_eq!(c.listeners[0].max_publish_bandwidth, None);
    let c = Config::from_toml_str(
        "[[listeners]]\nbind = \"127.0.0.1:1884\"\nmax_publish_rate = 100\nmax_publish_bandwidth = 65536\n\n[[listeners]]\nbind = \"127.0.0.1:1885\"\n",
    )
    .unwrap();
    assert_eq!(c.listeners[0].max_publish_rate, Some(100));
    assert_eq!(c.listeners[0].max_publish_bandwidth, Some(65536));
    assert_eq!(c.listeners[1].max_publish_rate, None);
    assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
    assert_eq!(
        invalid_key("[[listeners]]\nmax_publish_rate = 0\n"),
        "listeners[0].max_publish_rate"
    );
    assert_eq!(
        invalid_key("[[listeners]]\nmax_publish_bandwidth = 0\n"),
        "listeners[0].max_publish_bandwidth"
    );
    let msg = parse_error("[[listeners]]\nmax_publish_rate = -1\n");
    assert!(msg.contains("max_publish_rate"), "{msg}");
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    for (doc, key) in [
        ("[mqtt]\nmax_packet_sise = 10\n", "max_packet_sise"),
        ("bogus = 1\n", "bogus"),
        ("[limits]\nmax_conections = 3\n", "max_conections"),
        ("[log]\nformatt = \"json\"\n", "formatt"),
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

/// Issue 13 item 9: `mqtt.max_payload_size` (Mosquitto's `message_size_limit`): 0 (the
/// default) is no limit; above the largest packet MQTT can frame is an error naming the key.
#[test]
fn max_payload_size_range() {
    assert_eq!(Config::default().mqtt.max_payload_size, 0);
    assert_eq!(
        invalid_key("[mqtt]\nmax_payload_size = 268435456\n"),
        "mqtt.max_payload_size"
    );
    let c = Config::from_toml_str("[mqtt]\nmax_payload_size = 268435455\n").unwrap();
    assert_eq!(c.mqtt.max_payload_size, MQTT_MAX_PACKET_SIZE);
}

#[test]
fn max_client_id_length_range() {
    for bad in [0, 22, 65536] {
        let toml = format!("[mqtt]\nmax_client_id_length = {bad}\n");
        assert_eq!(invalid_key(&toml), "mqtt.max_client_id_length", "{bad}");
    }
    for ok in [MIN_CLIENT_ID_LENGTH, 65535] {
        let c = Config::from_toml_str(&format!("[mqtt]\nmax_client_id_length = {ok}\n")).unwrap();
        assert_eq!(c.mqtt.max_client_id_length, ok);
    }
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
        invalid_key("[limits]\nglobal_queued_bytes_high = 100\nglobal_queued_bytes_low = 200\n"),
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
    let c = Config::from_toml_str("[mqtt]\nshared_subscription_strategy = \"random\"\n").unwrap();
    assert_eq!(c.mqtt.shared_subscription_strategy, SharedStrategy::Random);
    let c =
        Config::from_toml_str("[mqtt]\nshared_subscription_strategy = \"round_robin\"\n").unwrap();
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
        duration::MAX,
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
    let example = include_str!("../../config/starling.toml");
    let c = Config::from_toml_str(example).unwrap();
    assert_eq!(c, Config::default());
    // Every key the schema knows appears in the example (commented-out keys included), so
    // the example stays the complete reference when fields are added.
    let rendered = {
        let mut c = Config::default();
        c.mqtt.persistent_client_expiration = Some(Duration::from_secs(1));
        c.listeners[0].max_connections = Some(1);
        c.listeners[0].max_publish_rate = Some(1);
        c.listeners[0].max_publish_bandwidth = Some(1);
        c.metrics.bind = Some(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 9183)));
        c.metrics.bearer_token_file = Some("t".into());
        c.auth.password_file = Some("p".into());
        c.auth.acl_file = Some("a".into());
        c.auth.allow_anonymous = Some(true);
        c.log.file = Some("l".into());
        c.log.stderr = Some(true);
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

#[test]
fn auto_id_prefix_bounds() {
    for bad in ["a/b", "a+", "#", "\\u0001x"] {
        let toml = format!("[mqtt]\nauto_id_prefix = \"{bad}\"\n");
        assert_eq!(invalid_key(&toml), "mqtt.auto_id_prefix", "{bad}");
    }
    let long = "p".repeat(65);
    let toml = format!("[mqtt]\nauto_id_prefix = \"{long}\"\n");
    assert_eq!(invalid_key(&toml), "mqtt.auto_id_prefix");
    let toml = "[mqtt]\nauto_id_prefix = \"\"\nallow_zero_length_clientid = false\n";
    let c = Config::from_toml_str(toml).unwrap();
    assert_eq!(c.mqtt.auto_id_prefix, "");
    assert!(!c.mqtt.allow_zero_length_clientid);
}

#[test]
fn log_file_is_relative_to_the_config_file_and_format_parses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starling.toml");
    std::fs::write(
        &path,
        "[log]\nfile = \"logs/broker.log\"\nformat = \"json\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    let dir = std::path::absolute(dir.path()).unwrap();
    assert_eq!(c.log.file, Some(dir.join("logs/broker.log")));
    assert_eq!(c.log.format, LogFormat::Json);
    let e = Config::from_toml_str("[log]\nfile = \"\"\n").unwrap_err();
    assert!(e.to_string().contains("log.file"), "{e}");
    let e = Config::from_toml_str("[log]\nformat = \"xml\"\n").unwrap_err();
    assert!(e.to_string().contains("xml"), "{e}");
}

#[test]
fn syslog_keys_parse_and_the_socket_is_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starling.toml");
    let toml = "[log]\nsyslog = true\nsyslog_facility = \"local3\"\nsyslog_socket = \"log.sock\"\n";
    std::fs::write(&path, toml).unwrap();
    let c = Config::load(&path).unwrap();
    let dir = std::path::absolute(dir.path()).unwrap();
    assert_eq!(c.log.syslog_socket, dir.join("log.sock"));
    assert_eq!(c.log.syslog_facility, SyslogFacility::Local3);
    assert!(c.log.syslog && !c.log.journald && !c.log.to_stderr());
    let e = Config::from_toml_str("[log]\nsyslog_facility = \"locl0\"\n").unwrap_err();
    assert!(e.to_string().contains("locl0"), "{e}");
    let empty = "[log]\nsyslog = true\nsyslog_socket = \"\"\n";
    assert_eq!(invalid_key(empty), "log.syslog_socket");
}

#[test]
fn a_mosquitto_conf_given_as_config_points_to_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mosquitto.conf");
    let conf = "# Place your local configuration in /etc/mosquitto/conf.d/\n\n\
                pid_file /run/mosquitto/mosquitto.pid\nlistener 1883\nallow_anonymous true\n";
    std::fs::write(&path, conf).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("Mosquitto configuration file"), "{e}");
    assert!(e.contains("starling migrate"), "{e}");
    // A TOML mistake gets the parser's message alone.
    std::fs::write(&path, "[mqtt]\nmax_qos 2\n").unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(!e.contains("Mosquitto"), "{e}");
}
