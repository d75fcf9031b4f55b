//! `starling migrate` (issue 16): Mosquitto configurations, the Debian package's and ones
//! written for these tests (tests/fixtures/migrate), are translated by the binary; each output
//! passes `starling check-config`, each key names its Mosquitto line, and the options left out
//! (stderr, exit code 3) are exactly the expected ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn starling() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/migrate")
}

/// A scratch directory holding the fixtures with `@DIR@` replaced by its own path, and the
/// files they name (empty password and ACL files, placeholder certificates).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-migrate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("includes.d")).unwrap();
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    copy_dir(&fixtures(), &dir, &dir);
    copy_dir(
        &fixtures().join("includes.d"),
        &dir.join("includes.d"),
        &dir,
    );
    for f in [
        "passwd",
        "acl",
        "acl.other",
        "server.crt",
        "server.key",
        "ca.crt",
    ] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    dir
}

/// Copies the files of `from` into `to`, `@DIR@` replaced by `base`.
fn copy_dir(from: &Path, to: &Path, base: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("@DIR@", base.to_str().unwrap());
            std::fs::write(to.join(path.file_name().unwrap()), text).unwrap();
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `starling migrate NAME.conf -o NAME.toml` in `dir`; the output, the TOML, and the
/// `left out:` lines of stderr with `dir` written as `@DIR@`.
fn migrate(dir: &Path, name: &str) -> (Output, String, Vec<String>) {
    let toml = dir.join(format!("{name}.toml"));
    let o = starling()
        .arg("migrate")
        .arg(dir.join(format!("{name}.conf")))
        .arg("-o")
        .arg(&toml)
        .output()
        .unwrap();
    let written = std::fs::read_to_string(&toml).unwrap_or_default();
    let left = text(&o.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("left out: "))
        .map(|l| l.replace(dir.to_str().unwrap(), "@DIR@"))
        .collect();
    (o, written, left)
}

/// The TOML passes check-config; its effective configuration.
fn check(dir: &Path, name: &str) -> String {
    let o = starling()
        .arg("check-config")
        .arg(dir.join(format!("{name}.toml")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Translates fixture `name`: exit code, left-out list (each `file:line: option: why` prefix
/// up to the option) and lines that must be in the TOML.
fn case(name: &str, left_out: &[&str], has: &[&str]) -> (String, String) {
    let dir = scratch(name);
    let (o, toml, left) = migrate(&dir, name);
    let expected_code = if left_out.is_empty() { 0 } else { 3 };
    assert_eq!(
        o.status.code(),
        Some(expected_code),
        "{name}: {}",
        text(&o.stderr)
    );
    let got: Vec<String> = left
        .iter()
        .map(|l| l.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": "))
        .collect();
    assert_eq!(got, left_out, "{name}: stderr {}", text(&o.stderr));
    for want in has {
        assert!(
            toml.lines().any(|l| l.starts_with(want)),
            "{name}: no {want:?} in\n{toml}"
        );
    }
    for line in toml
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
    {
        assert!(
            line.contains(".conf:") || line.contains(" not set: Mosquitto"),
            "{line}"
        );
    }
    let effective = check(&dir, name);
    (toml, effective)
}

#[test]
fn tls_with_client_certificates_translates_completely() {
    let (toml, effective) = case(
        "tls-client-certs",
        &[],
        &[
            "bind = \"0.0.0.0:8883\"",
            "protocol = \"mqtts\"",
            "require_certificate = true",
            "use_identity_as_username = true",
            "allow_anonymous = false",
            "enabled = false  # (persistence not set",
        ],
    );
    assert!(
        toml.contains("# tls_version tlsv1.2: Starling's minimum already"),
        "{toml}"
    );
    assert!(effective.contains("ca = \""), "{effective}");
}

#[test]
fn websockets_listeners_become_ws_and_wss() {
    let (_, effective) = case(
        "websockets",
        &["@DIR@/websockets.conf:6: http_dir"],
        &[
            "bind = \"127.0.0.1:1883\"",
            "bind = \"0.0.0.0:9001\"",
            "protocol = \"ws\"",
            "protocol = \"wss\"",
        ],
    );
    // Mosquitto serves WebSocket clients on any path; so does a listener without `path`.
    assert!(!effective.contains("path = \""), "{effective}");
    assert!(effective.contains("path is not set: WebSocket clients may upgrade on any path"));
}

#[test]
fn persistence_options() {
    let (toml, _) = case(
        "persistence",
        &["@DIR@/persistence.conf:4: persistence_file"],
        &[
            "enabled = true",
            "dir = \"",
            "persistent_client_expiration = \"60d\"",
            "password_file = \"",
        ],
    );
    assert!(
        toml.contains("# autosave_interval 300: written as it changes"),
        "{toml}"
    );
}

/// A `connection` block is a `[[bridges]]` table, its `topic` line a `[[bridges.topics]]`:
/// the fixture's bridge translates completely.
#[test]
fn a_bridge_block_translates_completely() {
    let (toml, _) = case(
        "bridge",
        &[],
        &[
            "allow_anonymous = true",
            "[[bridges]]",
            "name = \"cloud\"",
            // Mosquitto's port, written out: Starling's default with TLS would be 8883.
            "address = \"broker.example.com:8883\"",
            "cafile = \"/etc/mosquitto/ca_certificates/cloud.crt\"",
            "remote_username = \"site1\"",
            "remote_password = \"secret\"",
            "cleansession = false",
            "[[bridges.topics]]",
            "pattern = \"sensors/#\"",
            "direction = \"out\"",
            "qos = 1",
            "remote_prefix = \"site1/\"",
        ],
    );
    assert!(!toml.contains("local_prefix"), "{toml}");
}

/// A mosquitto.conf bridging to a cloud broker over TLS and to a peer, with options Starling's
/// bridges do not have.
const TWO_BRIDGES: &str = "\
listener 1883
allow_anonymous true

connection cloud
address broker.example.com:8883 backup.example.com:8883
bridge_protocol_version mqttv311
remote_clientid site1-cloud
remote_username site1
remote_password s3cret
bridge_cafile /etc/mosquitto/ca_certificates/cloud.crt
bridge_insecure false
bridge_tls_version tlsv1.2
keepalive_interval 30
restart_timeout 10 120
notification_topic site1/bridge/cloud
topic sensors/# out 1 \"\" site1/
topic commands/# in 2 site1/ cloud/site1/
round_robin true

connection peer
address 10.0.0.2
local_clientid local.peer
cleansession true
notifications false
restart_timeout 20
start_type lazy
threshold 50
local_username bridge
local_password bridgepw
topic # both 0 peer/ peer/
";

/// Two bridge blocks become two `[[bridges]]` that Starling loads with the Mosquitto values;
/// each option with no equivalent is reported on its line (exit code 3).
#[test]
fn two_bridges_translate_and_unsupported_options_are_reported() {
    let dir = scratch("two-bridges");
    std::fs::write(dir.join("two-bridges.conf"), TWO_BRIDGES).unwrap();
    let (o, toml, left) = migrate(&dir, "two-bridges");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let options: Vec<String> = left
        .iter()
        .map(|l| l.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": "))
        .collect();
    let at = |n: usize, o: &str| format!("@DIR@/two-bridges.conf:{n}: {o}");
    assert_eq!(
        options,
        [
            at(12, "bridge_tls_version"),
            at(26, "start_type"),
            at(27, "threshold"),
            at(28, "local_username"),
            at(29, "local_password"),
        ]
    );
    let config =
        starling::config::Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    check_two_bridges(&config.bridges);
    check(&dir, "two-bridges");
}

fn check_two_bridges(bridges: &[starling::config::BridgeConfig]) {
    use starling::config::{BridgeProtocol, Direction};
    use std::time::Duration;
    let [cloud, peer] = bridges else {
        panic!("{bridges:#?}")
    };
    assert_eq!((cloud.name.as_str(), peer.name.as_str()), ("cloud", "peer"));
    assert_eq!(cloud.address, "broker.example.com:8883");
    assert_eq!(cloud.fallback_addresses, ["backup.example.com:8883"]);
    assert!(cloud.round_robin && !peer.round_robin);
    assert_eq!(cloud.protocol_version, BridgeProtocol::Mqttv311);
    assert_eq!(cloud.remote_clientid.as_deref(), Some("site1-cloud"));
    assert_eq!(cloud.remote_username.as_deref(), Some("site1"));
    assert!(cloud.tls() && !cloud.cleansession && cloud.notifications);
    assert_eq!(cloud.keepalive_interval, Duration::from_secs(30));
    assert_eq!(
        (cloud.restart_timeout, cloud.restart_timeout_max),
        (Duration::from_secs(10), Duration::from_secs(120))
    );
    assert_eq!(
        cloud.notification_topic.as_deref(),
        Some("site1/bridge/cloud")
    );
    let t = &cloud.topics;
    assert_eq!((t[0].direction, t[0].qos), (Direction::Out, 1));
    assert_eq!(t[0].remote_filter(), "site1/sensors/#");
    assert_eq!((t[1].direction, t[1].qos), (Direction::In, 2));
    assert_eq!(t[1].local_filter(), "site1/commands/#");
    assert_eq!(t[1].remote_filter(), "cloud/site1/commands/#");
    assert_eq!(peer.address, "10.0.0.2:1883");
    assert_eq!(peer.local_clientid.as_deref(), Some("local.peer"));
    assert!(peer.cleansession && !peer.notifications && !peer.tls());
    assert_eq!(
        (peer.restart_timeout, peer.restart_timeout_max),
        (Duration::from_secs(20), Duration::from_secs(20))
    );
    assert_eq!(peer.topics.len(), 1);
    assert_eq!(peer.topics[0].direction, Direction::Both);
    assert_eq!(peer.topics[0].local_filter(), "peer/#");
}

/// Mosquitto's `log_dest` lines add up, and so do Starling's destinations: stderr, syslog (with
/// `log_facility` as a local facility) and a file; `log_dest topic` has no equivalent.
#[test]
fn log_destinations_translate_one_by_one() {
    let (toml, effective) = case(
        "logging",
        &["@DIR@/logging.conf:8: log_dest"],
        &[
            "stderr = true",
            "syslog = true",
            "syslog_facility = \"local5\"",
            "file = \"",
        ],
    );
    assert!(toml.contains("/mosquitto.log\"  # "), "{toml}");
    assert!(
        effective.contains("syslog_socket = \"/dev/log\""),
        "{effective}"
    );
}

#[test]
fn limits_translate_completely() {
    case(
        "limits",
        &[],
        &[
            "max_connections = 500",
            "max_keepalive = 300",
            "max_payload_size = 1048576",
            "max_packet_size = 268435455",
            "max_inflight = 65535",
            "max_queued_messages = 5000",
            "max_queued_bytes = 10485760",
            "max_qos = 1",
            "retain_available = false",
            "interval = \"0s\"",
            "allow_zero_length_clientid = false",
            "auto_id_prefix = \"dev-\"",
            "allow_anonymous = false  # (allow_anonymous not set",
        ],
    );
}

#[test]
fn multiple_listeners_and_address_families() {
    case(
        "multi-listener",
        &["@DIR@/multi-listener.conf:11: bind_interface"],
        &[
            "bind = \"127.0.0.1:1883\"",
            "bind = \"[::1]:1884\"",
            "bind = \"0.0.0.0:8883\"",
            "bind = \"[::]:1885\"",
            "bind = \"0.0.0.0:1886\"",
            // Mosquitto's unix socket listener, `listener 0 PATH`.
            "bind = \"unix:/",
        ],
    );
}

/// `per_listener_settings true`: each listener's `allow_anonymous`, `password_file` and
/// `acl_file` become that `[[listeners]]` table's keys, `[auth]` keeps Mosquitto 2's default
/// (`allow_anonymous = false`, no files) for listeners that set none, and check-config shows
/// each listener's effective auth. Nothing is left out.
#[test]
fn per_listener_settings_translate_to_listener_keys() {
    let (toml, effective) = case("per-listener", &[], &["allow_anonymous = false"]);
    let value: toml::Table = toml.parse().unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let listeners = value["listeners"].as_array().expect("listeners");
    let key = |i: usize, k: &str| listeners[i].get(k).map(|v| v.to_string());
    assert_eq!(key(0, "allow_anonymous").as_deref(), Some("true"), "{toml}");
    assert_eq!(key(0, "password_file"), None, "{toml}");
    assert_eq!(
        key(1, "allow_anonymous").as_deref(),
        Some("false"),
        "{toml}"
    );
    assert!(key(1, "password_file").is_some_and(|p| p.ends_with("/passwd\"")));
    assert!(key(1, "acl_file").is_some_and(|p| p.ends_with("/acl\"")));
    assert!(key(2, "acl_file").is_some_and(|p| p.ends_with("/acl.other\"")));
    assert_eq!(key(2, "allow_anonymous"), None, "{toml}");
    let auth = value["auth"].as_table().expect("[auth]");
    assert!(auth.get("password_file").is_none() && auth.get("acl_file").is_none());
    let per_listener: Vec<&str> = effective
        .lines()
        .filter(|l| l.starts_with("#   listeners["))
        .collect();
    assert_eq!(per_listener.len(), 3, "{effective}");
    assert!(
        per_listener[0].contains("allow_anonymous = true (listener)")
            && per_listener[0].contains("password_file = none (default)"),
        "{effective}"
    );
    assert!(
        per_listener[2].contains("allow_anonymous = false (from [auth])")
            && per_listener[2].contains("acl.other\" (listener)"),
        "{effective}"
    );
}

/// Under `per_listener_settings true`, an auth option before any `listener` line belongs to
/// Mosquitto's default listener; without `port` there is none to give it to: left out.
#[test]
fn per_listener_auth_before_any_listener_is_left_out() {
    let (toml, _) = case(
        "per-listener-default",
        &["@DIR@/per-listener-default.conf:4: password_file"],
        &["allow_anonymous = true"],
    );
    assert!(!toml.contains("password_file ="), "{toml}");
}

#[test]
fn include_dir_reads_conf_files_in_sorted_order() {
    let (toml, _) = case(
        "includes",
        &["@DIR@/includes.d/05-log.conf:1: log_type"],
        &[
            "bind = \"127.0.0.1:1883\"",
            "protocol = \"ws\"",
            "interval = \"30s\"",
        ],
    );
    assert!(!toml.contains("README"), "{toml}");
    let order: Vec<usize> = ["05-log", "10-listeners", "20-auth"]
        .iter()
        .map(|f| toml.find(f).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{toml}");
}

/// `user` has no equivalent; Mosquitto's dynamic-security plugin is Starling's
/// `auth.dynamic_security` (issue 18), reading the same file.
#[test]
fn user_is_left_out_and_the_dynsec_plugin_translates() {
    case(
        "plugins",
        &["@DIR@/plugins.conf:1: user", "@DIR@/plugins.conf:3: cafile"],
        &[
            "bind = \"0.0.0.0:1883\"",
            "protocol = \"mqtt\"",
            "dynamic_security = ",
        ],
    );
}

/// The configuration Debian's mosquitto package installs, with its include_dir pointed at a
/// conf.d holding the package's README.
#[test]
fn debian_package_configuration() {
    let dir = scratch("debian");
    let conf = std::fs::read_to_string(fixtures().join("debian-mosquitto.conf")).unwrap();
    let conf = conf.replace(
        "/etc/mosquitto/conf.d",
        dir.join("conf.d").to_str().unwrap(),
    );
    std::fs::write(dir.join("debian.conf"), conf).unwrap();
    std::fs::write(
        dir.join("conf.d/README"),
        "Any files placed in this directory that have a .conf ending will be loaded\n",
    )
    .unwrap();
    let (o, toml, left) = migrate(&dir, "debian");
    // Everything translates: `log_dest file` is log.file, pid_file only draws a warning.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(left, Vec::<String>::new());
    assert!(
        toml.contains("file = \"/var/log/mosquitto/mosquitto.log\"  # "),
        "{toml}"
    );
    let stderr = text(&o.stderr);
    assert!(stderr.contains("debian.conf:6: pid_file"), "{stderr}");
    assert!(toml.contains("enabled = true  # "), "{toml}");
    assert!(toml.contains("dir = \"/var/lib/mosquitto/\""), "{toml}");
    // No listener: Starling's default, 127.0.0.1:1883, is Mosquitto's local only mode.
    assert!(!toml.contains("[[listeners]]"), "{toml}");
    let effective = check(&dir, "debian");
    assert!(
        effective.contains("bind = \"127.0.0.1:1883\""),
        "{effective}"
    );
}

#[test]
fn writes_to_stdout_without_output_and_fails_on_missing_file() {
    let dir = scratch("stdout");
    let o = starling()
        .arg("migrate")
        .arg(dir.join("limits.conf"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("max_qos = 1"));
    let o = starling().arg("--help").output().unwrap();
    assert!(text(&o.stdout).contains("migrate"), "{}", text(&o.stdout));
    let o = starling()
        .arg("migrate")
        .arg(dir.join("nope.conf"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("nope.conf"), "{}", text(&o.stderr));
}
