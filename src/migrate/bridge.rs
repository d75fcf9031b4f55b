//! Mosquitto bridge blocks (`connection NAME` and the options after it, up to the next
//! `connection`) to Starling `[[bridges]]` tables, each `topic` line a `[[bridges.topics]]`
//! table.
//!
//! Each finished bridge is checked as Starling checks it: a key or topic Starling refuses is
//! left out with Starling's reason, so the TOML written always loads.

use std::path::Path;

use starling::config::{Config, ConfigError};
use toml::Value;

use super::options;
use super::parse::Line;
use super::{Entry, Note};

/// A translated bridge: its `[[bridges]]` keys, then the keys of each `[[bridges.topics]]`.
#[derive(Debug, Default)]
pub struct Bridge {
    /// The keys of `[[bridges]]` (and comments), each with its source.
    pub entries: Vec<Entry>,
    /// The keys of each `[[bridges.topics]]`, one table per `topic` line.
    pub topics: Vec<Vec<Entry>>,
}

/// The options of one `connection` block, gathered until the next `connection` line (or the
/// end of the configuration).
#[derive(Debug)]
pub struct Draft {
    /// The `connection` line.
    line: Line,
    /// The bridge's keys, each with the Mosquitto option it came from.
    keys: Vec<(String, Entry)>,
    /// Each `topic` line: where it is, and its keys.
    topics: Vec<(String, Vec<Entry>)>,
}

impl Draft {
    /// The block `connection NAME` starts (Mosquitto takes the first word as the name);
    /// `Err` with the reason when the line names nothing.
    pub fn new(l: &Line) -> Result<Draft, String> {
        let name = l.args().first().map(|n| n.to_string()).ok_or("no name")?;
        let mut draft = Draft {
            line: l.clone(),
            keys: Vec::new(),
            topics: Vec::new(),
        };
        draft.set(l, "name", Value::String(name));
        Ok(draft)
    }

    /// The bridge's name (its `connection` line's).
    pub fn name(&self) -> &str {
        self.keys
            .iter()
            .find_map(|(_, e)| match (e.key.as_deref(), &e.value) {
                (Some("name"), Value::String(n)) => Some(n.as_str()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Translates one option of the block into its keys; one that cannot be translated gets
    /// a note in `left_out` saying why, a translation that differs from Mosquitto's in some
    /// way worth knowing one in `warnings`.
    pub fn option(&mut self, l: &Line, left_out: &mut Vec<Note>, warnings: &mut Vec<Note>) {
        let result = match l.key.as_str() {
            "address" | "addresses" => self.address(l),
            "topic" => topic(l).map(|t| self.topics.push((l.at(), t))),
            "bridge_protocol_version" => protocol(l).map(|v| self.set(l, "protocol_version", v)),
            "remote_clientid" | "clientid" => self.string(l, "remote_clientid"),
            "local_clientid" => self.string(l, "local_clientid"),
            "remote_username" | "username" => self.string(l, "remote_username"),
            "remote_password" | "password" => self.string(l, "remote_password"),
            "notification_topic" => self.string(l, "notification_topic"),
            "bridge_cafile" | "bridge_certfile" | "bridge_keyfile" => self.file(l, warnings),
            "cleansession"
            | "try_private"
            | "notifications"
            | "notifications_local_only"
            | "round_robin" => boolean(l).map(|on| self.set(l, &l.key, Value::Boolean(on))),
            "keepalive_interval" => self.keepalive(l, warnings),
            "restart_timeout" => self.restart_timeout(l, warnings),
            key => self.as_starling(l, key),
        };
        if let Err(why) = result {
            left_out.push(Note::new(&l.at(), &l.key, why));
        }
    }

    /// The `[[bridges]]` table, or `None` when the bridge is left out (the reason in
    /// `left_out`, on its `connection` line): Mosquitto refuses a bridge without an address or
    /// a topic, and Starling one whose name or address it refuses. Keys and topics Starling
    /// refuses are left out one by one.
    pub fn finish(mut self, left_out: &mut Vec<Note>) -> Option<Bridge> {
        let at = self.line.at();
        let refuse = |why: String, left_out: &mut Vec<Note>| {
            let why = format!("{why}; the bridge is left out");
            left_out.push(Note::new(&at, "connection", why));
            None
        };
        if !self.has("address") {
            return refuse(
                "no address line: Mosquitto refuses the bridge".into(),
                left_out,
            );
        }
        if self.topics.is_empty() {
            let why = "no topic line translated: Mosquitto refuses a bridge without one";
            return refuse(why.into(), left_out);
        }
        self.tls_files(left_out);
        loop {
            let err = match Config::from_toml_str(&self.toml()) {
                Ok(_) => return Some(self.into_bridge()),
                Err(err) => err,
            };
            if !self.drop_refused(&err, left_out) {
                return refuse(format!("Starling refuses it ({err})"), left_out);
            }
            if self.topics.is_empty() {
                return refuse("every topic line is left out".into(), left_out);
            }
        }
    }

    /// Sets `key`; a later line replaces an earlier one (as Mosquitto does for its numbers and
    /// booleans), keeping its place.
    fn set(&mut self, l: &Line, key: &str, value: Value) {
        let entry = Entry::new(key, value, &l.at());
        match self
            .keys
            .iter_mut()
            .find(|(_, e)| e.key.as_deref() == Some(key))
        {
            Some(old) => *old = (l.key.clone(), entry),
            None => self.keys.push((l.key.clone(), entry)),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(_, e)| e.key.as_deref() == Some(key))
    }

    /// A string option: the rest of the line. Mosquitto refuses a second one.
    fn string(&mut self, l: &Line, key: &str) -> Result<(), String> {
        if l.rest.is_empty() {
            return Err("no value".into());
        }
        if let Some((_, old)) = self
            .keys
            .iter()
            .find(|(_, e)| e.key.as_deref() == Some(key))
        {
            return Err(format!(
                "already set at {}: Mosquitto refuses a second value",
                old.from
            ));
        }
        self.set(l, key, Value::String(l.rest.clone()));
        Ok(())
    }

    /// `bridge_cafile`, `bridge_certfile`, `bridge_keyfile`: `cafile`, `certfile`, `keyfile`.
    fn file(&mut self, l: &Line, warnings: &mut Vec<Note>) -> Result<(), String> {
        let key = l.key.trim_start_matches("bridge_").to_string();
        self.string(l, &key)?;
        if Path::new(&l.rest).is_relative() {
            let why = "relative path: Mosquitto reads it from its working directory; write it \
                       absolute";
            warnings.push(Note::new(&l.at(), &l.key, why));
        }
        Ok(())
    }

    /// `address host[:port] [host[:port] ...]`: the first address is `address`, the others
    /// (Mosquitto's fallbacks, tried in turn) `fallback_addresses`.
    fn address(&mut self, l: &Line) -> Result<(), String> {
        if self.has("address") {
            return Err("a second address line: Mosquitto refuses it".into());
        }
        let words = words(l);
        let (first, others) = words.split_first().ok_or("no address")?;
        let others = others
            .iter()
            .map(|w| address(w).map(Value::String))
            .collect::<Result<Vec<_>, _>>()?;
        self.set(l, "address", Value::String(address(first)?));
        if !others.is_empty() {
            self.set(l, "fallback_addresses", Value::Array(others));
        }
        Ok(())
    }

    /// `keepalive_interval N` (seconds, 5 to 65535: Mosquitto raises a lower value to 5).
    fn keepalive(&mut self, l: &Line, warnings: &mut Vec<Note>) -> Result<(), String> {
        let n = seconds(words(l).first().copied())?;
        if n > 65535 {
            return Err(format!("{n} is more than 65535: Mosquitto refuses it"));
        }
        if n < 5 {
            let why = "below 5 seconds: Mosquitto uses 5, and so does the translation";
            warnings.push(Note::new(&l.at(), &l.key, why));
        }
        self.set(l, "keepalive_interval", secs(n.max(5)));
        Ok(())
    }

    /// `restart_timeout base [cap]`: with a cap, the wait starts at `base` and grows up to
    /// `cap`; without one it is always `base`. Mosquitto raises a base below 1 to 1 second
    /// and refuses a cap below the base.
    fn restart_timeout(&mut self, l: &Line, warnings: &mut Vec<Note>) -> Result<(), String> {
        let words = words(l);
        let mut base = seconds(words.first().copied())?;
        let cap = words.get(1).map(|c| seconds(Some(c))).transpose()?;
        if base < 1 {
            let why = "below 1 second: Mosquitto uses 1, and so does the translation";
            warnings.push(Note::new(&l.at(), &l.key, why));
            base = 1;
        }
        let cap = match cap {
            Some(cap) if cap < base => {
                return Err(format!("cap {cap} below base {base}: Mosquitto refuses it"))
            }
            Some(cap) => cap,
            None => base,
        };
        self.set(l, "restart_timeout", secs(base));
        self.set(l, "restart_timeout_max", secs(cap));
        Ok(())
    }

    /// An option with no `[[bridges]]` key: a comment when its value is what Starling does
    /// anyway, left out otherwise.
    fn as_starling(&mut self, l: &Line, key: &str) -> Result<(), String> {
        let same = options::BRIDGE_AS_STARLING
            .iter()
            .find(|(k, v, _)| *k == key && words(l).first() == Some(v));
        let Some((_, _, why)) = same else {
            return Err(options::bridge_no_equivalent(key).into());
        };
        let text = format!("{key} {}: {why}", l.rest);
        self.keys
            .push((key.to_string(), Entry::comment(&text, &l.at())));
        Ok(())
    }

    /// Starling's bridges speak TLS when `cafile` is set, and take a client certificate as
    /// `certfile` and `keyfile` together: what cannot be used is left out.
    fn tls_files(&mut self, left_out: &mut Vec<Note>) {
        let (cert, key) = (self.has("certfile"), self.has("keyfile"));
        let why = match (self.has("cafile"), cert, key) {
            (false, true, _) | (false, _, true) => {
                "no bridge_cafile: Starling's bridges speak TLS only with bridge_cafile"
            }
            (true, true, false) | (true, false, true) => {
                "bridge_certfile and bridge_keyfile go together: the other one is missing"
            }
            _ => return,
        };
        self.keys.retain(|(option, e)| {
            let tls = matches!(e.key.as_deref(), Some("certfile" | "keyfile"));
            if tls {
                left_out.push(Note::new(&e.from, option, why));
            }
            !tls
        });
    }

    /// Leaves out the key or topic `err` names (true), or does nothing when it names none
    /// that can go (false): the name, the address, or a key that is not there.
    fn drop_refused(&mut self, err: &ConfigError, left_out: &mut Vec<Note>) -> bool {
        let ConfigError::Invalid { key, reason } = err else {
            return false;
        };
        let Some(key) = key.strip_prefix("bridges[0].") else {
            return false;
        };
        if let Some(rest) = key.strip_prefix("topics[") {
            let index = rest.split(']').next().and_then(|i| i.parse::<usize>().ok());
            let Some(i) = index.filter(|i| *i < self.topics.len()) else {
                return false;
            };
            let field = rest.split_once("].").map_or("topic", |(_, f)| f);
            let (at, _) = self.topics.remove(i);
            let why = format!("Starling refuses its {field}: {reason}");
            left_out.push(Note::new(&at, "topic", why));
            return true;
        }
        let found = self
            .keys
            .iter()
            .position(|(_, e)| e.key.as_deref() == Some(key));
        match found {
            Some(i) if !["name", "address"].contains(&key) => {
                let why = format!("Starling refuses it: {reason}");
                let (option, entry) = self.keys.remove(i);
                left_out.push(Note::new(&entry.from, &option, why));
                true
            }
            _ => false,
        }
    }

    /// The bridge alone as a Starling configuration, for Starling to check.
    fn toml(&self) -> String {
        let table = |entries: &mut dyn Iterator<Item = &Entry>| -> toml::Table {
            entries
                .filter_map(|e| Some((e.key.clone()?, e.value.clone())))
                .collect()
        };
        let mut bridge = table(&mut self.keys.iter().map(|(_, e)| e));
        let topics = self
            .topics
            .iter()
            .map(|(_, t)| Value::Table(table(&mut t.iter())))
            .collect();
        bridge.insert("topics".into(), Value::Array(topics));
        let mut doc = toml::Table::new();
        doc.insert("bridges".into(), Value::Array(vec![Value::Table(bridge)]));
        doc.to_string()
    }

    fn into_bridge(self) -> Bridge {
        Bridge {
            entries: self.keys.into_iter().map(|(_, e)| e).collect(),
            topics: self.topics.into_iter().map(|(_, t)| t).collect(),
        }
    }
}

/// The words after the option name, up to a comment (a word starting with `#`).
fn words(l: &Line) -> Vec<&str> {
    l.args()
        .into_iter()
        .take_while(|w| !w.starts_with('#'))
        .collect()
}

/// Mosquitto's `host[:port]` (the port after the last colon, so an IPv6 address needs one;
/// 1883 without) as a Starling address. The port is always written: Starling's default is
/// 8883 with TLS, where Mosquitto's is 1883 either way.
fn address(word: &str) -> Result<String, String> {
    let Some((host, port)) = word.rsplit_once(':') else {
        return Ok(format!("{word}:1883"));
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port number"))?;
    match host {
        "" => Err(format!("{word:?} has no host")),
        h if h.contains(':') && !h.starts_with('[') => Ok(format!("[{h}]:{port}")),
        h => Ok(format!("{h}:{port}")),
    }
}

/// `topic pattern [[[out|in|both] qos] local_prefix remote_prefix]` as the keys of a
/// `[[bridges.topics]]`: `""` is an empty pattern or prefix; direction out and QoS 0 by
/// default. Mosquitto refuses an empty pattern unless both prefixes are set.
fn topic(l: &Line) -> Result<Vec<Entry>, String> {
    let args = l.args();
    let (pattern, rest) = args.split_first().ok_or("no pattern")?;
    let rest: Vec<&str> = rest
        .iter()
        .copied()
        .take_while(|w| !w.starts_with('#'))
        .collect();
    let direction = match rest.first().map(|d| d.to_ascii_lowercase()) {
        None => "out".to_string(),
        Some(d) if ["out", "in", "both"].contains(&d.as_str()) => d,
        Some(d) => return Err(format!("direction {d:?} is not out, in or both")),
    };
    let qos = match rest.get(1) {
        None => 0,
        Some(q) => q
            .parse::<i64>()
            .ok()
            .filter(|q| (0..=2).contains(q))
            .ok_or_else(|| format!("QoS {q:?} is not 0, 1 or 2"))?,
    };
    let (pattern, local, remote) = (
        unquote(Some(*pattern)),
        unquote(rest.get(2).copied()),
        unquote(rest.get(3).copied()),
    );
    if pattern.is_empty() && (local.is_empty() || remote.is_empty()) {
        return Err("an empty pattern needs both prefixes: Mosquitto refuses it".into());
    }
    let at = l.at();
    let string = |s: &str| Value::String(s.to_string());
    let mut keys = vec![
        Entry::new("pattern", string(pattern), &at),
        Entry::new("direction", Value::String(direction), &at),
        Entry::new("qos", Value::Integer(qos), &at),
    ];
    for (key, prefix) in [("local_prefix", local), ("remote_prefix", remote)] {
        if !prefix.is_empty() {
            keys.push(Entry::new(key, string(prefix), &at));
        }
    }
    Ok(keys)
}

/// A pattern or prefix word: `""` (and no word) is empty.
fn unquote(word: Option<&str>) -> &str {
    word.filter(|w| *w != "\"\"").unwrap_or_default()
}

/// `bridge_protocol_version mqttv31|mqttv311|mqttv50`: the same value.
fn protocol(l: &Line) -> Result<Value, String> {
    match words(l).first().copied() {
        Some(v @ ("mqttv31" | "mqttv311" | "mqttv50")) => Ok(Value::String(v.into())),
        Some(v) => Err(format!("{v:?} is not mqttv31, mqttv311 or mqttv50")),
        None => Err("no value".into()),
    }
}

/// Mosquitto's booleans: `true` or `1`, `false` or `0`.
fn boolean(l: &Line) -> Result<bool, String> {
    match words(l).first().copied() {
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(format!("{v:?} is not true or false")),
        None => Err("no value".into()),
    }
}

/// A whole number of seconds.
fn seconds(word: Option<&str>) -> Result<u64, String> {
    let word = word.ok_or("no value")?;
    word.parse()
        .map_err(|_| format!("{word:?} is not a number of seconds"))
}

/// Seconds as a Starling duration.
fn secs(n: u64) -> Value {
    Value::String(format!("{n}s"))
}
