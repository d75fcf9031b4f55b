//! The translation itself: Mosquitto option lines, in order, to Starling tables.

use toml::Value;

use super::bridge::{self, Bridge};
use super::listener::{Draft, Listener};
use super::options::{self, Conv};
use super::parse::Line;
use super::{Entry, Note};

/// Starling's tables in the order they are written.
pub const SECTIONS: &[&str] = &["auth", "mqtt", "sys", "persistence", "log"];

/// Options Mosquitto lets each listener set when `per_listener_settings` is true; they become
/// the same keys in that listener's `[[listeners]]` table.
const PER_LISTENER_AUTH: &[&str] = &["allow_anonymous", "password_file", "acl_file"];

/// The result: Starling tables, and what could not be translated.
#[derive(Debug, Default)]
pub struct Migration {
    /// `[[listeners]]`, in Mosquitto's order.
    pub listeners: Vec<Listener>,
    /// `[[bridges]]`, one per `connection` block, in Mosquitto's order.
    pub bridges: Vec<Bridge>,
    /// The keys of each table of [`SECTIONS`], by table name.
    pub sections: Vec<(&'static str, Vec<Entry>)>,
    /// Translated options that need no key, written as comments at the top.
    pub comments: Vec<Entry>,
    /// Options with no equivalent.
    pub left_out: Vec<Note>,
    /// Translations that differ in some way worth knowing.
    pub warnings: Vec<Note>,
}

struct Translator {
    out: Migration,
    /// The default listener (`port`, `bind_address`, options before any `listener`).
    default: Draft,
    /// The listener being read, once a `listener` line was seen.
    current: Option<Draft>,
    per_listener: bool,
    persistence_set: bool,
    /// The last `plugin` line loads Mosquitto's dynamic-security plugin, so its
    /// `plugin_opt_config_file` is `auth.dynamic_security`.
    dynsec_plugin: bool,
    /// The bridge being read, once a `connection` line was seen; `Err` with the reason its
    /// options are left out when that line could not be translated.
    bridge: Option<Result<bridge::Draft, String>>,
    /// The names of the bridges read so far (Mosquitto refuses a second one).
    bridge_names: Vec<String>,
}

/// Translates `lines`, in the order Mosquitto reads them.
pub fn translate(lines: &[Line]) -> Migration {
    let mut t = Translator {
        out: Migration {
            sections: SECTIONS.iter().map(|s| (*s, Vec::new())).collect(),
            ..Migration::default()
        },
        default: Draft::default(),
        current: None,
        // Mosquitto applies it to the whole file, wherever it is.
        per_listener: lines
            .iter()
            .any(|l| l.key == "per_listener_settings" && l.rest == "true"),
        persistence_set: false,
        dynsec_plugin: false,
        bridge: None,
        bridge_names: Vec::new(),
    };
    for line in lines {
        t.option(line);
    }
    let mut m = t.finish();
    // Listener options are judged when the listener ends: list everything in file order.
    let order: std::collections::HashMap<String, usize> =
        lines.iter().enumerate().map(|(i, l)| (l.at(), i)).collect();
    m.left_out
        .sort_by_key(|n| order.get(&n.at).copied().unwrap_or(usize::MAX));
    m
}

impl Translator {
    fn option(&mut self, l: &Line) {
        let key = l.key.as_str();
        self.relative_path(l);
        if self.bridge_option(l) || self.listener_option(l) {
            return;
        }
        if let Some((_, section, name, conv)) = options::SIMPLE.iter().find(|o| o.0 == key) {
            return self.simple(l, section, name, *conv);
        }
        match key {
            "plugin" | "auth_plugin" => {
                self.dynsec_plugin = l.rest.contains("dynamic_security");
                if self.dynsec_plugin {
                    self.note(
                        l,
                        "Starling's built-in dynamic security (auth.dynamic_security)",
                    );
                } else {
                    self.left_out(l, options::no_equivalent(key));
                }
            }
            "plugin_opt_config_file" if self.dynsec_plugin => {
                self.simple(l, "auth", "dynamic_security", Conv::Str);
            }
            "per_listener_settings" => match l.rest.as_str() {
                "false" => self.note(l, "as Starling: one [auth] for all listeners"),
                "true" => self.note(
                    l,
                    "allow_anonymous, password_file and acl_file are set per [[listeners]]; \
                     [auth] holds Mosquitto's defaults for the listeners that set none",
                ),
                other => self.left_out(l, &format!("{other:?} is not true or false")),
            },
            "autosave_interval" | "autosave_on_changes" => {
                self.warn(
                    l,
                    "Starling writes the store as it changes (persistence.sync)",
                );
                self.comment("persistence", l, "written as it changes");
            }
            "log_dest" => self.log_dest(l),
            "log_facility" => self.log_facility(l),
            "log_timestamp" => match l.rest.as_str() {
                "true" => self.note(l, "Starling's log lines always carry a timestamp"),
                _ => self.left_out(l, "Starling's log lines always carry a timestamp"),
            },
            "pid_file" => {
                self.warn(
                    l,
                    "Starling writes no pid file (under systemd use Type=notify)",
                );
                self.note(l, "no pid file");
            }
            k => self.left_out(l, options::no_equivalent(k)),
        }
    }

    /// The options of bridges: `connection` starts one, the others belong to the bridge being
    /// read (Mosquitto refuses them before any `connection` line). True when `l` was one.
    fn bridge_option(&mut self, l: &Line) -> bool {
        if l.key == "connection" {
            self.new_bridge(l);
            return true;
        }
        if !options::is_bridge(&l.key) {
            return false;
        }
        let out = &mut self.out;
        match &mut self.bridge {
            Some(Ok(draft)) => draft.option(l, &mut out.left_out, &mut out.warnings),
            Some(Err(why)) => out.left_out.push(Note::new(&l.at(), &l.key, why.clone())),
            None => {
                let why = "outside a connection block: Mosquitto refuses it";
                out.left_out.push(Note::new(&l.at(), &l.key, why));
            }
        }
        true
    }

    fn new_bridge(&mut self, l: &Line) {
        self.close_bridge();
        let draft = match bridge::Draft::new(l) {
            Ok(d) if self.bridge_names.iter().any(|n| n == d.name()) => {
                Err("another connection block has this name: Mosquitto refuses it".to_string())
            }
            other => other,
        };
        match &draft {
            Ok(d) => self.bridge_names.push(d.name().to_string()),
            Err(why) => self.left_out(l, why),
        }
        self.bridge =
            Some(draft.map_err(|_| format!("its connection block ({}) is left out", l.at())));
    }

    fn close_bridge(&mut self) {
        if let Some(Ok(draft)) = self.bridge.take() {
            if let Some(out) = draft.finish(&mut self.out.left_out) {
                self.out.bridges.push(out);
            }
        }
    }

    /// The options that belong to the listener being read. True when `l` was one.
    fn listener_option(&mut self, l: &Line) -> bool {
        let key = l.key.as_str();
        if key == "listener" {
            self.new_listener(l);
            return true;
        }
        let draft = match (key, self.current.as_mut()) {
            ("port" | "bind_address", _) => &mut self.default,
            (_, Some(d)) => d,
            (_, None) => &mut self.default,
        };
        let at = l.at();
        let path = Some((l.rest.clone(), at.clone()));
        match key {
            "port" => match l.rest.parse::<u16>() {
                Ok(p) => draft.port = Some((p, at)),
                Err(_) => self
                    .out
                    .left_out
                    .push(Note::new(&at, key, "not a port number")),
            },
            "bind_address" => draft.host = path,
            "socket_domain" => draft.ipv6 = (l.rest == "ipv6").then_some(at),
            "protocol" => match l.rest.as_str() {
                "websockets" => draft.websockets = Some((true, at)),
                "mqtt" => draft.websockets = Some((false, at)),
                _ => self
                    .out
                    .left_out
                    .push(Note::new(&at, key, "unknown protocol")),
            },
            "certfile" => draft.cert = path,
            "keyfile" => draft.key = path,
            "cafile" => draft.ca = path,
            "require_certificate" | "use_identity_as_username" | "use_subject_as_username" => {
                match parse_bool(l) {
                    Ok(on) => draft.flags.push((static_name(key), on, at)),
                    Err(why) => self.out.left_out.push(Note::new(&at, key, why)),
                }
            }
            "tls_version" => draft.tls_version = Some(l.clone()),
            k if self.per_listener && PER_LISTENER_AUTH.contains(&k) => {
                let conv = if k == "allow_anonymous" {
                    Conv::Bool
                } else {
                    Conv::Str
                };
                match convert(l, conv) {
                    Ok(value) => draft.set_auth(static_auth_name(k), value, at),
                    Err(why) => self.out.left_out.push(Note::new(&at, k, why)),
                }
            }
            "max_connections" => match l.rest.parse::<i64>() {
                Ok(n) => draft.max_connections = Some((n, at)),
                Err(_) => self.out.left_out.push(Note::new(&at, key, "not a number")),
            },
            _ => return false,
        }
        draft.used = true;
        true
    }

    fn new_listener(&mut self, l: &Line) {
        self.close_listener();
        let args = l.args();
        let mut draft = Draft {
            line: Some(l.clone()),
            used: true,
            ..Draft::default()
        };
        match args.first().map(|p| p.parse::<u16>()) {
            Some(Ok(p)) => draft.port = Some((p, l.at())),
            _ => {
                self.left_out(l, "no port number");
                return;
            }
        }
        draft.host = args.get(1).map(|h| (h.to_string(), l.at()));
        self.current = Some(draft);
    }

    fn close_listener(&mut self) {
        if let Some(draft) = self.current.take() {
            if let Some(out) = draft.finish(&mut self.out.left_out, &mut self.out.warnings) {
                self.out.listeners.push(out);
            }
        }
    }

    /// The default listener exists when no `listener` line does, or when `port` or
    /// `bind_address` gave it one. Options set on it otherwise are left out: Mosquitto would
    /// open a second listener on 1883 for them.
    fn close_default(&mut self) {
        let default = std::mem::take(&mut self.default);
        let explicit = default.port.is_some() || default.host.is_some();
        if !self.out.listeners.is_empty() && !explicit {
            if default.used {
                let why = "set before any `listener` line, so for Mosquitto's default listener: \
                           move it after the listener it is meant for";
                for (name, at) in default.sources() {
                    self.out.left_out.push(Note::new(&at, name, why));
                }
            }
            return;
        }
        if !default.used && self.out.listeners.is_empty() {
            return; // Starling's default is Mosquitto's: 127.0.0.1:1883.
        }
        if let Some(out) = default.finish(&mut self.out.left_out, &mut self.out.warnings) {
            self.out.listeners.insert(0, out);
        }
    }

    fn finish(mut self) -> Migration {
        self.close_bridge();
        self.close_listener();
        self.close_default();
        self.anonymous_default();
        self.size_defaults();
        if !self.persistence_set {
            let entry = Entry::new(
                "enabled",
                Value::Boolean(false),
                "(persistence not set: Mosquitto's default is false)",
            );
            self.section("persistence").push(entry);
        }
        self.out
    }

    /// Mosquitto 2 refuses anonymous clients unless allowed or no listener is configured
    /// (local only mode); Starling allows them when every listener is on loopback and there is
    /// no password file, so the Mosquitto default is written out.
    fn anonymous_default(&mut self) {
        let set = |e: &Entry| e.key.as_deref() == Some("allow_anonymous");
        if self.out.listeners.is_empty() || self.section("auth").iter().any(set) {
            return;
        }
        let entry = Entry::new(
            "allow_anonymous",
            Value::Boolean(false),
            "(allow_anonymous not set: Mosquitto 2's default once a listener is configured)",
        );
        self.section("auth").push(entry);
    }

    /// Mosquitto takes packets up to the protocol's limit and client ids of any length unless
    /// told otherwise; Starling's own defaults (1 MiB, 256 bytes) would refuse what the
    /// migrated clients sent before (an MQTT 5 publisher that reads Maximum Packet Size in
    /// CONNACK drops a larger message without an error). So Mosquitto's are written out.
    fn size_defaults(&mut self) {
        const KEEP: [(&str, i64, &str); 2] = [
            (
                "max_packet_size",
                268_435_455,
                "(max_packet_size not set: Mosquitto takes packets up to the protocol's \
                 256 MB; Starling's own default is 1 MiB, lower this if no client sends \
                 large messages)",
            ),
            (
                "max_client_id_length",
                65_535,
                "(max_client_id_length not set: Mosquitto has no limit but the protocol's \
                 65535 bytes; Starling's own default is 256)",
            ),
        ];
        for (key, value, why) in KEEP {
            let set = |e: &Entry| e.key.as_deref() == Some(key);
            if self.section("mqtt").iter().any(set) {
                continue;
            }
            self.section("mqtt")
                .push(Entry::new(key, Value::Integer(value), why));
        }
    }

    /// Mosquitto reads a relative path from its working directory, Starling from the
    /// directory of its configuration file.
    fn relative_path(&mut self, l: &Line) {
        const PATHS: &[&str] = &[
            "certfile",
            "keyfile",
            "cafile",
            "password_file",
            "acl_file",
            "persistence_location",
            "plugin_opt_config_file",
        ];
        if PATHS.contains(&l.key.as_str()) && std::path::Path::new(&l.rest).is_relative() {
            self.warn(
                l,
                "relative path: Mosquitto reads it from its working directory, Starling from \
                 the directory of the TOML file",
            );
        }
    }

    /// `log_dest file PATH` is `[log] file`, `log_dest syslog` is `syslog = true` and
    /// `log_dest stderr` is `stderr = true`: like Mosquitto's, Starling's destinations add up,
    /// and any of them replaces the stderr default. `log_dest stdout` is the console too:
    /// Starling writes it to stderr (`stderr = true`), so a file beside it does not silence
    /// the console. The other destinations have no equivalent.
    fn log_dest(&mut self, l: &Line) {
        let mut words = l.rest.splitn(2, char::is_whitespace);
        let set = |rest: &str| Line {
            rest: rest.to_string(),
            ..l.clone()
        };
        match (words.next(), words.next().map(str::trim)) {
            (Some("file"), Some(path)) if !path.is_empty() => {
                self.simple(&set(path), "log", "file", Conv::Str);
            }
            (Some("syslog"), None) => self.simple(&set("true"), "log", "syslog", Conv::Bool),
            (Some("stderr" | "stdout"), None) => {
                self.simple(&set("true"), "log", "stderr", Conv::Bool);
            }
            _ => self.left_out(
                l,
                "Starling logs to stderr, a file (log.file), syslog (log.syslog) or journald \
                 (log.journald)",
            ),
        }
    }

    /// `log_facility N` (0 to 7: local0 to local7) is `[log] syslog_facility = "localN"`.
    fn log_facility(&mut self, l: &Line) {
        match l.rest.parse::<u8>() {
            Ok(n) if n <= 7 => {
                let local = Line {
                    rest: format!("local{n}"),
                    ..l.clone()
                };
                self.simple(&local, "log", "syslog_facility", Conv::Str);
            }
            _ => self.left_out(l, "Mosquitto's log_facility is 0 to 7 (local0 to local7)"),
        }
    }

    fn simple(&mut self, l: &Line, section: &'static str, name: &str, conv: Conv) {
        let value = match convert(l, conv) {
            Ok(v) => v,
            Err(why) => return self.left_out(l, &why),
        };
        if section == "persistence" && name == "enabled" {
            self.persistence_set = true;
        }
        if name == "dir" {
            self.warn(
                l,
                "Starling keeps its own store there: mosquitto.db is not read",
            );
        }
        let entries = self.section(section);
        if let Some(i) = entries.iter().position(|e| e.key.as_deref() == Some(name)) {
            let old = entries.remove(i);
            let text = format!("{} {} at {} overridden", l.key, old.value, old.from);
            entries.push(Entry::comment(&text, &l.at()));
        }
        entries.push(Entry::new(name, value, &l.at()));
    }

    fn section(&mut self, name: &str) -> &mut Vec<Entry> {
        let i = self.out.sections.iter().position(|s| s.0 == name);
        let i = i.unwrap_or(0);
        &mut self.out.sections[i].1
    }

    fn comment(&mut self, section: &str, l: &Line, text: &str) {
        let text = format!("{} {}: {text}", l.key, l.rest);
        self.section(section).push(Entry::comment(&text, &l.at()));
    }

    /// A translated option that needs no key: a comment at the top.
    fn note(&mut self, l: &Line, text: &str) {
        let text = format!("{} {}: {text}", l.key, l.rest);
        self.out.comments.push(Entry::comment(&text, &l.at()));
    }

    fn warn(&mut self, l: &Line, why: &str) {
        self.out.warnings.push(Note::new(&l.at(), &l.key, why));
    }

    fn left_out(&mut self, l: &Line, why: &str) {
        self.out.left_out.push(Note::new(&l.at(), &l.key, why));
    }
}

fn static_name(key: &str) -> &'static str {
    match key {
        "require_certificate" => "require_certificate",
        "use_identity_as_username" => "use_identity_as_username",
        _ => "use_subject_as_username",
    }
}

fn static_auth_name(key: &str) -> &'static str {
    match key {
        "allow_anonymous" => "allow_anonymous",
        "password_file" => "password_file",
        _ => "acl_file",
    }
}

fn parse_bool(l: &Line) -> Result<bool, String> {
    match l.rest.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// The TOML value of a one-to-one option.
fn convert(l: &Line, conv: Conv) -> Result<Value, String> {
    let v = l.rest.as_str();
    match conv {
        Conv::Bool => parse_bool(l).map(Value::Boolean),
        Conv::Str if v.is_empty() => Err("no value".into()),
        Conv::Str => Ok(Value::String(v.to_owned())),
        Conv::Int { min, max, zero } => {
            let n: i64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
            let n = if n == 0 { zero.unwrap_or(0) } else { n };
            if !(min..=max).contains(&n) {
                return Err(format!("{n} is outside Starling's range {min}..={max}"));
            }
            Ok(Value::Integer(n))
        }
        Conv::Seconds => {
            let n: u64 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a number of seconds"))?;
            Ok(Value::String(format!("{n}s")))
        }
        Conv::Expiry => expiry(v).map(Value::String),
    }
}

/// Mosquitto's `<n>h|d|w|m|y` (m is months) as a Starling duration.
fn expiry(v: &str) -> Result<String, String> {
    let bad = || format!("{v:?} is not <number><h|d|w|m|y>");
    let unit = v.chars().last().ok_or_else(bad)?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    Ok(match unit {
        'h' => format!("{n}h"),
        'd' => format!("{n}d"),
        'w' => format!("{n}w"),
        'm' => format!("{}d", n.checked_mul(30).ok_or_else(bad)?),
        'y' => format!("{}d", n.checked_mul(365).ok_or_else(bad)?),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &str, rest: &str, number: usize) -> Line {
        Line {
            file: "m.conf".into(),
            number,
            key: key.into(),
            rest: rest.into(),
        }
    }

    #[test]
    fn expiry_months_and_years_become_days() {
        assert_eq!(expiry("2h").as_deref(), Ok("2h"));
        assert_eq!(expiry("3m").as_deref(), Ok("90d"));
        assert_eq!(expiry("1y").as_deref(), Ok("365d"));
        assert!(expiry("5").is_err());
        assert!(expiry("").is_err());
        assert!(expiry("x1d").is_err());
    }

    #[test]
    fn bad_values_are_left_out_with_the_reason() {
        let m = translate(&[
            line("max_qos", "3", 1),
            line("retain_available", "yes", 2),
            line("max_inflight_messages", "lots", 3),
            line("listener", "", 4),
            line("frobnicate", "1", 5),
        ]);
        let why: Vec<(&str, &str)> = m
            .left_out
            .iter()
            .map(|n| (n.at.as_str(), n.why.as_str()))
            .collect();
        assert_eq!(
            why,
            [
                ("m.conf:1", "3 is outside Starling's range 0..=2"),
                ("m.conf:2", "\"yes\" is not true or false"),
                ("m.conf:3", "\"lots\" is not a number"),
                ("m.conf:4", "no port number"),
                ("m.conf:5", "unknown to starling migrate"),
            ]
        );
    }

    /// The `[mqtt]` entries, without the size limits every migration writes.
    fn mqtt_entries(m: &Migration) -> Vec<&Entry> {
        let sizes = [Some("max_packet_size"), Some("max_client_id_length")];
        let mqtt = &m.sections.iter().find(|s| s.0 == "mqtt").unwrap().1;
        mqtt.iter()
            .filter(|e| !sizes.contains(&e.key.as_deref()) || !e.from.starts_with('('))
            .collect()
    }

    /// h11 M1: Mosquitto takes 256 MB packets and any client id unless told otherwise; the
    /// migrated configuration says so instead of Starling's smaller defaults, and keeps a
    /// limit the file set.
    #[test]
    fn mosquittos_size_limits_are_kept() {
        let value = |m: &Migration, key: &str| {
            let mqtt = &m.sections.iter().find(|s| s.0 == "mqtt").unwrap().1;
            let found: Vec<_> = mqtt
                .iter()
                .filter(|e| e.key.as_deref() == Some(key))
                .collect();
            assert_eq!(found.len(), 1, "{key}: {mqtt:?}");
            found[0].value.clone()
        };
        let m = translate(&[line("message_size_limit", "0", 1)]);
        assert_eq!(value(&m, "max_packet_size"), Value::Integer(268_435_455));
        assert_eq!(value(&m, "max_client_id_length"), Value::Integer(65_535));
        let m = translate(&[line("max_packet_size", "5000", 1)]);
        assert_eq!(value(&m, "max_packet_size"), Value::Integer(5000));
        assert_eq!(value(&m, "max_client_id_length"), Value::Integer(65_535));
    }

    #[test]
    fn a_later_value_overrides_and_says_so() {
        let m = translate(&[line("max_qos", "1", 1), line("max_qos", "2", 7)]);
        let mqtt = mqtt_entries(&m);
        assert_eq!(mqtt.len(), 2, "{mqtt:?}");
        assert_eq!(mqtt[0].key, None);
        assert_eq!(mqtt[1].key.as_deref(), Some("max_qos"));
        assert_eq!(mqtt[1].value, Value::Integer(2));
        assert_eq!(mqtt[1].from, "m.conf:7");
    }

    #[test]
    fn relative_paths_are_warned_about_once() {
        let m = translate(&[
            line("listener", "8883", 1),
            line("certfile", "server.crt", 2),
            line("keyfile", "/etc/k.pem", 3),
            line("password_file", "passwd", 4),
        ]);
        let warned: Vec<&str> = m.warnings.iter().map(|n| n.at.as_str()).collect();
        assert_eq!(warned, ["m.conf:2", "m.conf:4"]);
    }

    #[test]
    fn port_and_bind_address_make_the_default_listener() {
        let m = translate(&[line("bind_address", "10.0.0.1", 1), line("port", "1884", 2)]);
        assert_eq!(m.listeners.len(), 1);
        let bind = &m.listeners[0].entries[0];
        assert_eq!(bind.value, Value::String("10.0.0.1:1884".into()));
        assert_eq!(bind.from, "m.conf:2, m.conf:1");
        assert!(m.left_out.is_empty(), "{:?}", m.left_out);
    }

    #[test]
    fn the_dynamic_security_plugin_becomes_auth_dynamic_security() {
        let m = translate(&[
            line("listener", "1883", 1),
            line(
                "plugin",
                "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
                2,
            ),
            line(
                "plugin_opt_config_file",
                "/etc/mosquitto/dynamic-security.json",
                3,
            ),
            line("plugin", "/usr/lib/other_auth.so", 4),
            line("plugin_opt_config_file", "/etc/other.conf", 5),
        ]);
        let auth = &m.sections.iter().find(|s| s.0 == "auth").unwrap().1;
        let e = auth
            .iter()
            .find(|e| e.key.as_deref() == Some("dynamic_security"))
            .expect("auth.dynamic_security");
        assert_eq!(
            e.value,
            Value::String("/etc/mosquitto/dynamic-security.json".into())
        );
        let left: Vec<_> = m.left_out.iter().map(|n| n.option.as_str()).collect();
        assert_eq!(
            left,
            ["plugin", "plugin_opt_config_file"],
            "the other plugin's lines"
        );
    }

    #[test]
    fn options_before_listener_lines_are_left_out() {
        let m = translate(&[
            line("max_connections", "10", 1),
            line("listener", "1883", 2),
        ]);
        assert_eq!(m.listeners.len(), 1);
        assert_eq!(m.left_out.len(), 1, "{:?}", m.left_out);
        assert_eq!(m.left_out[0].option, "max_connections");
    }

    /// The option lines of a mosquitto.conf text, numbered from 1 (as `parse` reads them).
    fn conf(text: &str) -> Vec<Line> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
            .map(|(i, l)| {
                let (key, rest) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
                line(key, rest.trim(), i + 1)
            })
            .collect()
    }

    /// The migration of `text` written out and loaded back as Starling loads it.
    fn migrate(text: &str) -> (Migration, starling::config::Config) {
        let m = translate(&conf(text));
        let toml = super::super::emit::render(&m, &[]);
        let config = starling::config::Config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        (m, config)
    }

    /// `file:line: option` of each option left out.
    fn left(m: &Migration) -> Vec<String> {
        let at = |n: &Note| format!("{}: {}", n.at, n.option);
        m.left_out.iter().map(at).collect()
    }

    const TWO_BRIDGES: &str = "\
listener 1883
allow_anonymous true
connection cloud
address broker.example.com:8883 backup.example.com
bridge_protocol_version mqttv50
remote_clientid site1-cloud
remote_username site1
remote_password s3cret
bridge_cafile /etc/mosquitto/ca.crt
cleansession true
keepalive_interval 30
restart_timeout 10 120
notification_topic site1/bridge/state
topic sensors/# out 1 \"\" site1/
topic commands/# in 2 site1/ cloud/site1/
topic \"\" out 0 status/now cloud/status
bridge_capath /etc/ssl/certs
connection peer
addresses 2001:db8::2:1884
clientid peer-bridge
username peer
try_private false
notifications_local_only true
restart_timeout 15
start_type automatic
idle_timeout 60
topic shared/# BOTH
";

    /// Two `connection` blocks become two `[[bridges]]` that Starling loads with Mosquitto's
    /// meaning; what has no equivalent is left out, each line with its reason.
    #[test]
    fn bridge_blocks_become_bridges_tables() {
        use starling::config::{BridgeProtocol, Direction};
        use std::time::Duration;
        let (m, c) = migrate(TWO_BRIDGES);
        let (cloud, peer) = (&c.bridges[0], &c.bridges[1]);
        assert_eq!(c.bridges.len(), 2);
        assert_eq!(cloud.name, "cloud");
        assert_eq!(cloud.address, "broker.example.com:8883");
        assert_eq!(cloud.protocol_version, BridgeProtocol::Mqttv50);
        assert_eq!(cloud.remote_clientid.as_deref(), Some("site1-cloud"));
        assert_eq!(cloud.remote_password.as_deref(), Some("s3cret"));
        assert!(cloud.cleansession && cloud.try_private && cloud.tls());
        assert_eq!(cloud.keepalive_interval, Duration::from_secs(30));
        assert_eq!(cloud.restart_timeout, Duration::from_secs(10));
        assert_eq!(cloud.restart_timeout_max, Duration::from_secs(120));
        assert_eq!(cloud.topics.len(), 3);
        let t = &cloud.topics;
        assert_eq!((t[0].direction, t[0].qos), (Direction::Out, 1));
        assert_eq!(
            (t[0].local_filter(), t[0].remote_filter()),
            ("sensors/#".into(), "site1/sensors/#".into())
        );
        assert_eq!((t[1].direction, t[1].qos), (Direction::In, 2));
        assert_eq!(t[1].remote_filter(), "cloud/site1/commands/#");
        assert_eq!(
            (t[2].local_filter(), t[2].remote_filter()),
            ("status/now".into(), "cloud/status".into())
        );
        assert_eq!(peer.address, "[2001:db8::2]:1884");
        assert_eq!(peer.remote_clientid.as_deref(), Some("peer-bridge"));
        assert_eq!(peer.remote_username.as_deref(), Some("peer"));
        assert!(!peer.try_private && peer.notifications_local_only);
        assert_eq!(peer.restart_timeout, Duration::from_secs(15));
        assert_eq!(peer.restart_timeout_max, Duration::from_secs(15));
        assert_eq!(
            (peer.topics[0].direction, peer.topics[0].qos),
            (Direction::Both, 0)
        );
        assert_eq!(cloud.fallback_addresses, ["backup.example.com:1883"]);
        assert_eq!(
            left(&m),
            ["m.conf:17: bridge_capath", "m.conf:26: idle_timeout"]
        );
    }

    /// Mosquitto refuses a bridge without a topic line, a bridge option outside a
    /// `connection` block and a second bridge of the same name: each is left out, the bridge
    /// with its whole block.
    #[test]
    fn bridges_mosquitto_refuses_are_left_out() {
        let (m, c) = migrate(
            "try_private false\n\
             connection a\naddress h\n\
             connection b\naddress h\ntopic x out 0\n\
             connection b\naddress h\ntopic y\n",
        );
        assert_eq!(c.bridges.len(), 1);
        assert_eq!(c.bridges[0].name, "b");
        assert_eq!(c.bridges[0].address, "h:1883");
        assert_eq!(
            left(&m),
            [
                "m.conf:1: try_private",
                "m.conf:2: connection",
                "m.conf:7: connection",
                "m.conf:8: address",
                "m.conf:9: topic",
            ]
        );
        assert!(
            m.left_out[1].why.contains("no topic line"),
            "{:?}",
            m.left_out
        );
        assert!(m.left_out[2].why.contains("another connection block"));
    }

    /// Lines whose values Mosquitto or Starling refuse are left out one by one and the
    /// bridge keeps the rest.
    #[test]
    fn bridge_lines_with_bad_values_are_left_out() {
        let (m, c) = migrate(
            "connection b\naddress h:99\n\
             topic a/# sideways\ntopic a/# out 3\ntopic \"\" out 0 only/local\n\
             topic a/# out 0 x/+/ y/\ntopic ok/# in\n\
             remote_password p\nbridge_certfile /c.pem\nbridge_keyfile /k.pem\n\
             bridge_protocol_version mqttv4\nrestart_timeout 9 3\nkeepalive_interval 2\n",
        );
        let b = &c.bridges[0];
        assert_eq!(b.address, "h:99");
        assert_eq!(b.topics.len(), 1);
        assert_eq!(b.topics[0].pattern, "ok/#");
        assert_eq!(b.keepalive_interval, std::time::Duration::from_secs(5));
        assert!(b.remote_password.is_none() && b.certfile.is_none());
        let why: Vec<String> = m
            .left_out
            .iter()
            .map(|n| format!("{}: {}", n.at, n.why))
            .collect();
        assert_eq!(why.len(), 9, "{why:#?}");
        assert!(
            why[0].starts_with("m.conf:3: direction \"sideways\""),
            "{why:#?}"
        );
        assert!(why[1].starts_with("m.conf:4: QoS \"3\""), "{why:#?}");
        assert!(why[2].contains("needs both prefixes"), "{why:#?}");
        assert!(
            why[3].contains("Starling refuses its local_prefix: must not hold wildcards"),
            "{why:#?}"
        );
        assert!(
            why[4].starts_with("m.conf:8: Starling refuses it"),
            "{why:#?}"
        );
        assert!(why[5].contains("bridge_cafile") && why[6].contains("bridge_cafile"));
        assert!(why[7].starts_with("m.conf:11: \"mqttv4\""), "{why:#?}");
        assert!(
            why[8].starts_with("m.conf:12: cap 3 below base 9"),
            "{why:#?}"
        );
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    }
}
