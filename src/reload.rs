//! Configuration reload (SIGHUP): what changed between the running configuration and a newly
//! loaded one, and what happened to each change.
//!
//! [`crate::BrokerHandle::reload`] compares the two key by key (dotted TOML paths such as
//! `mqtt.max_inflight` or `listeners[0].bind`) and returns a [`ReloadReport`]. The settings a
//! running broker takes are [`AUTH_KEYS`], each listener's own auth keys
//! ([`listener_auth_keys`]) and each TLS listener's `cert`, `key` and `ca`
//! (adding or removing a `ca` still needs a restart, and so does any change to a listener
//! whose `bind` or `protocol` changed); they are reported [`ChangeStatus::Applied`], or
//! [`ChangeStatus::Failed`] when their files do not load. Every other change is
//! [`ChangeStatus::RestartRequired`]. The files behind the reloadable settings are re-read
//! on every reload, changed path or not; [`ReloadReport::files`] says how that went.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::Config;

/// What became of one changed setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeStatus {
    /// The running broker uses the new value.
    Applied,
    /// The new value takes effect only after a restart; the broker keeps the old one.
    RestartRequired,
    /// Applying the new value failed; the broker keeps the old one.
    Failed(String),
}

/// One setting whose value differs between the running and the reloaded configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted key, e.g. `mqtt.max_inflight` or `listeners[0].bind`.
    pub key: String,
    /// The running value as TOML, or `None` when the key was absent.
    pub old: Option<String>,
    /// The reloaded value as TOML, or `None` when the key is now absent.
    pub new: Option<String>,
    pub status: ChangeStatus,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old = self.old.as_deref().unwrap_or("(absent)");
        let new = self.new.as_deref().unwrap_or("(absent)");
        write!(f, "{}: {old} -> {new}", self.key)?;
        match &self.status {
            ChangeStatus::Applied => write!(f, " (applied)"),
            ChangeStatus::RestartRequired => write!(f, " (needs a restart)"),
            ChangeStatus::Failed(why) => write!(f, " (not applied: {why})"),
        }
    }
}

/// The `[auth]` settings a reload applies (together, as one snapshot).
pub const AUTH_KEYS: &[&str] = &[
    "auth.acl_file",
    "auth.allow_anonymous",
    "auth.password_file",
];

/// The auth keys a listener may set itself, each falling back to `[auth]`.
pub const LISTENER_AUTH_KEYS: &[&str] = &["acl_file", "allow_anonymous", "password_file"];

/// Listener `index`'s auth keys as dotted paths (`listeners[1].password_file`, ...).
pub fn listener_auth_keys(index: usize) -> Vec<String> {
    LISTENER_AUTH_KEYS
        .iter()
        .map(|k| format!("listeners[{index}].{k}"))
        .collect()
}

/// Copies into `running` the reloadable auth keys of `new`: `[auth]`'s, and those of each
/// listener that `new` still describes the same way (same `bind` and `protocol`; a listener
/// that changed needs a restart, and keeps its running keys).
pub fn take_auth_keys(running: &mut Config, new: &Config) {
    running.auth.password_file = new.auth.password_file.clone();
    running.auth.acl_file = new.auth.acl_file.clone();
    running.auth.allow_anonymous = new.auth.allow_anonymous;
    for i in 0..running.listeners.len() {
        let same = new.listeners.get(i).is_some_and(|l| {
            l.bind == running.listeners[i].bind && l.protocol == running.listeners[i].protocol
        });
        if same {
            copy_listener_auth_keys(running, new, i);
        }
    }
}

/// Copies listener `index`'s auth keys from `from` into `to` (both must have it).
pub fn copy_listener_auth_keys(to: &mut Config, from: &Config, index: usize) {
    if let (Some(t), Some(f)) = (to.listeners.get_mut(index), from.listeners.get(index)) {
        t.password_file = f.password_file.clone();
        t.acl_file = f.acl_file.clone();
        t.allow_anonymous = f.allow_anonymous;
    }
}

/// One set of files a reload read again, whether or not its paths changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reread {
    /// What was read, e.g. `auth files (password_file, acl_file)`.
    pub what: String,
    /// [`ChangeStatus::Applied`] when the broker now uses what the files hold,
    /// [`ChangeStatus::Failed`] when it kept the previous contents.
    pub status: ChangeStatus,
}

impl fmt::Display for Reread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            ChangeStatus::Failed(why) => {
                write!(
                    f,
                    "{}: not reloaded, keeping the previous ones: {why}",
                    self.what
                )
            }
            _ => write!(f, "{}: re-read and in use", self.what),
        }
    }
}

/// The outcome of a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Every setting that differs from the running configuration, in key order.
    pub changes: Vec<Change>,
    /// The files re-read, in the order they were read.
    pub files: Vec<Reread>,
}

impl ReloadReport {
    /// The report for moving from `running` to `new`, with every change marked
    /// [`ChangeStatus::RestartRequired`] until a reloadable setting says otherwise.
    pub fn compare(running: &Config, new: &Config) -> ReloadReport {
        let old = flatten(running);
        let new = flatten(new);
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort();
        keys.dedup();
        let changes = keys
            .into_iter()
            .filter(|k| old.get(*k) != new.get(*k))
            .map(|k| Change {
                key: k.clone(),
                old: old.get(k).cloned(),
                new: new.get(k).cloned(),
                status: ChangeStatus::RestartRequired,
            })
            .collect();
        ReloadReport {
            changes,
            files: Vec::new(),
        }
    }

    /// No setting differs (the files may still have been re-read; see [`ReloadReport::files`]).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Sets the status of the changes among `keys` (keys that did not change are not listed).
    pub fn set_status<S: AsRef<str>>(&mut self, keys: &[S], status: &ChangeStatus) {
        for c in &mut self.changes {
            if keys.iter().any(|k| k.as_ref() == c.key) {
                c.status = status.clone();
            }
        }
    }

    /// Changes the running broker now uses.
    pub fn applied(&self) -> impl Iterator<Item = &Change> {
        self.with_status(|s| matches!(s, ChangeStatus::Applied))
    }

    /// Changes that wait for a restart.
    pub fn restart_required(&self) -> impl Iterator<Item = &Change> {
        self.with_status(|s| matches!(s, ChangeStatus::RestartRequired))
    }

    /// Changes that could not be applied.
    pub fn failed(&self) -> impl Iterator<Item = &Change> {
        self.with_status(|s| matches!(s, ChangeStatus::Failed(_)))
    }

    fn with_status(&self, f: impl Fn(&ChangeStatus) -> bool) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| f(&c.status))
    }
}

/// Every leaf value of `config` by dotted key, rendered as TOML.
fn flatten(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // Serialization cannot fail for this schema (see `Config::to_toml_string`); should it, the
    // whole configuration compares as one opaque value rather than panicking.
    match toml::Value::try_from(config) {
        Ok(value) => walk("", &value, &mut out),
        Err(e) => {
            out.insert(String::from("(configuration)"), e.to_string());
        }
    }
    out
}

fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&key, v, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{prefix}[{i}]"), v, out);
            }
        }
        leaf if prefix.ends_with("password") || prefix == "cluster.token" => {
            out.insert(prefix.to_owned(), hidden(&leaf.to_string()));
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.to_string());
        }
    }
}

/// A secret as the report shows it (a bridge's `remote_password`, the cluster's NATS password
/// or token): never the value, but a
/// hash keyed at random for this process, so a change still shows and the log line gives
/// nothing to guess against.
fn hidden(secret: &str) -> String {
    use std::hash::BuildHasher;
    static KEY: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    format!("(hidden {:016x})", KEY.hash_one(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_changed_bridge_password_is_reported_without_its_value() {
        let with = |pw: &str| {
            Config::from_toml_str(&format!(
                "[[bridges]]\nname = \"b\"\naddress = \"h\"\nremote_username = \"u\"\n\
                 remote_password = \"{pw}\"\n[[bridges.topics]]\npattern = \"a\"\n"
            ))
            .unwrap()
        };
        let report = ReloadReport::compare(&with("s3cret-one"), &with("s3cret-two"));
        let line = report.changes[0].to_string();
        assert!(
            line.starts_with("bridges[0].remote_password: (hidden "),
            "{line}"
        );
        assert!(line.ends_with("(needs a restart)"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
    }

    #[test]
    fn cluster_changes_need_a_restart_and_hide_the_token() {
        let running = Config::from_toml_str("[cluster]\ntoken = \"old-secret\"\n").unwrap();
        let new =
            Config::from_toml_str("[cluster]\ntoken = \"new-secret\"\nnode = \"n\"\n").unwrap();
        let report = ReloadReport::compare(&running, &new);
        let text: Vec<String> = report.changes.iter().map(|c| c.to_string()).collect();
        let text = text.join("\n");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("cluster.token: (hidden "), "{text}");
        assert_eq!(report.restart_required().count(), 2, "{text}");
    }

    #[test]
    fn same_config_has_no_changes() {
        let c = Config::default();
        assert!(ReloadReport::compare(&c, &c.clone()).is_empty());
    }

    #[test]
    fn changes_are_listed_by_key_with_old_and_new_values() {
        let old = Config::default();
        let mut new = old.clone();
        new.mqtt.max_inflight = 5;
        new.sys.interval = Duration::from_millis(500);
        new.listeners[0].max_connections = Some(10);
        new.listeners.push(new.listeners[0].clone());
        new.listeners[1].bind = "127.0.0.1:1884".parse().unwrap();
        let report = ReloadReport::compare(&old, &new);
        let keys: Vec<&str> = report.changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listeners[0].max_connections",
                "listeners[1].backlog",
                "listeners[1].bind",
                "listeners[1].max_connections",
                "listeners[1].protocol",
                "mqtt.max_inflight",
                "sys.interval",
            ]
        );
        let inflight = &report.changes[5];
        assert_eq!(inflight.old.as_deref(), Some("20"));
        assert_eq!(inflight.new.as_deref(), Some("5"));
        assert_eq!(
            inflight.to_string(),
            "mqtt.max_inflight: 20 -> 5 (needs a restart)"
        );
        assert_eq!(
            report.changes[0].to_string(),
            "listeners[0].max_connections: (absent) -> 10 (needs a restart)"
        );
        assert_eq!(report.restart_required().count(), 7);
        assert_eq!(report.applied().count(), 0);
        assert_eq!(report.failed().count(), 0);
    }

    #[test]
    fn set_status_marks_only_listed_changes() {
        let old = Config::default();
        let mut new = old.clone();
        new.mqtt.max_inflight = 5;
        new.auth.acl_file = Some("/etc/starling/acl".into());
        let mut report = ReloadReport::compare(&old, &new);
        report.set_status(AUTH_KEYS, &ChangeStatus::Applied);
        assert_eq!(
            report.applied().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            ["auth.acl_file"]
        );
        assert_eq!(
            report
                .restart_required()
                .map(|c| c.key.as_str())
                .collect::<Vec<_>>(),
            ["mqtt.max_inflight"]
        );
        let failed = ChangeStatus::Failed("no such file".into());
        report.set_status(&["auth.acl_file".to_owned()], &failed);
        assert_eq!(
            report.failed().next().map(ToString::to_string).as_deref(),
            Some("auth.acl_file: (absent) -> \"/etc/starling/acl\" (not applied: no such file)")
        );
        let r = Reread {
            what: "auth files".into(),
            status: failed,
        };
        assert_eq!(
            r.to_string(),
            "auth files: not reloaded, keeping the previous ones: no such file"
        );
    }
}
