//! Per-listener authentication (Mosquitto's `per_listener_settings true`): each
//! `[[listeners]]` table may set its own `allow_anonymous`, `password_file` and `acl_file`, each
//! falling back to `[auth]` (see [`Config::listener_auth`]). [`AuthSet`] holds the resulting
//! [`AuthConfig`] of every listener plus the `[auth]` one, which serves what no listener
//! answers for (a session restored from the store that has not reconnected).
//!
//! [`AuthFiles`] does the loading for one pass (start-up, `check-config`, one reload): a file
//! named by several listeners is read and parsed once, and listeners whose effective settings
//! are the same share one `Arc<AuthConfig>`, so a configuration without per-listener keys costs
//! what the single global snapshot did and routing can tell so at a glance
//! ([`AuthSet::uniform`]).
//!
//! Dynamic security (`[auth] dynamic_security`) is one state for the whole broker: every
//! snapshot of a set carries the same `Arc<DynSec>`, so every listener consults it first and
//! then its own password and ACL files (the precedence of [`crate::auth`]). A reload keeps the
//! running state ([`AuthFiles::keeping`], [`AuthSet::with_dynsec`]); only the control API
//! replaces it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dynsec::DynSec;
use super::{AclFile, AuthConfig, AuthError, PasswordFile};
use crate::config::{AuthSection, Config};

/// How errors and warnings name the settings of one scope: `auth.password_file`, or
/// `listeners[1].password_file (bind 127.0.0.1:8883)` when the listener sets it itself.
#[derive(Debug, Clone)]
pub struct KeyNames {
    /// Where the scope is: `[auth]` or `listeners[1] (127.0.0.1:8883)`, for warnings.
    pub scope: String,
    /// The setting that names the password file.
    pub password_file: String,
    /// The setting that names the ACL file.
    pub acl_file: String,
}

impl KeyNames {
    /// The `[auth]` section's own keys.
    pub fn global() -> KeyNames {
        KeyNames {
            scope: "[auth]".into(),
            password_file: "auth.password_file".into(),
            acl_file: "auth.acl_file".into(),
        }
    }

    /// Listener `index`'s keys: its own where it sets them, `[auth]`'s where it inherits.
    pub fn listener(config: &Config, index: usize) -> KeyNames {
        let Some(l) = config.listeners.get(index) else {
            return KeyNames::global();
        };
        let name = |own: bool, key: &str| {
            if own {
                format!("listeners[{index}].{key} (bind {})", l.bind)
            } else {
                format!(
                    "auth.{key} (inherited by listeners[{index}], bind {})",
                    l.bind
                )
            }
        };
        KeyNames {
            scope: format!("listeners[{index}] ({})", l.bind),
            password_file: name(l.password_file.is_some(), "password_file"),
            acl_file: name(l.acl_file.is_some(), "acl_file"),
        }
    }
}

/// What one effective section resolves to; equal keys give the same snapshot.
type SnapshotKey = (Option<PathBuf>, Option<PathBuf>, bool);

/// The files read during one load (start-up or one reload), so that each is read once however
/// many listeners name it, and the snapshots built from them.
#[derive(Default)]
pub struct AuthFiles {
    passwords: HashMap<PathBuf, Arc<PasswordFile>>,
    acls: HashMap<PathBuf, Arc<AclFile>>,
    snapshots: HashMap<SnapshotKey, Arc<AuthConfig>>,
    /// The dynamic-security state every snapshot of this pass carries.
    dynsec: Option<Arc<DynSec>>,
}

impl AuthFiles {
    /// A start-up pass: reads `auth.dynamic_security` from `global` (the `[auth]` section, the
    /// only place it can be set) when it is set.
    pub fn for_start(global: &AuthSection) -> Result<AuthFiles, AuthError> {
        let dynsec = match &global.dynamic_security {
            Some(path) => Some(Arc::new(super::load_dynsec(path)?)),
            None => None,
        };
        Ok(AuthFiles::keeping(dynsec))
    }

    /// A reload pass: the snapshots carry `dynsec`, the running state, which is never re-read.
    pub fn keeping(dynsec: Option<Arc<DynSec>>) -> AuthFiles {
        AuthFiles {
            dynsec,
            ..AuthFiles::default()
        }
    }

    /// The snapshot for `cfg`: the files it names (read now, or earlier in this pass) and its
    /// effective `allow_anonymous`. Errors name the keys as `names` says.
    pub fn load(
        &mut self,
        cfg: &AuthSection,
        listeners_all_loopback: bool,
        names: &KeyNames,
    ) -> Result<Arc<AuthConfig>, AuthError> {
        let allow_anonymous = cfg.allow_anonymous_effective(listeners_all_loopback);
        let key = (
            cfg.password_file.clone(),
            cfg.acl_file.clone(),
            allow_anonymous,
        );
        if let Some(done) = self.snapshots.get(&key) {
            return Ok(done.clone());
        }
        let passwords = match &cfg.password_file {
            Some(path) => Some(self.password_file(path, &names.password_file)?),
            None => None,
        };
        let acl = match &cfg.acl_file {
            Some(path) => Some(self.acl_file(path, &names.acl_file)?),
            None => None,
        };
        let auth = AuthConfig {
            passwords,
            acl,
            allow_anonymous,
            dynsec: self.dynsec.clone(),
        };
        let auth = Arc::new(auth);
        self.snapshots.insert(key, auth.clone());
        Ok(auth)
    }

    fn password_file(&mut self, path: &Path, key: &str) -> Result<Arc<PasswordFile>, AuthError> {
        if let Some(p) = self.passwords.get(path) {
            return Ok(p.clone());
        }
        let p = PasswordFile::load(path).map_err(|source| AuthError::PasswordFile {
            key: key.to_owned(),
            path: path.to_path_buf(),
            source,
        })?;
        tracing::info!("{}: {} users", path.display(), p.len());
        let p = Arc::new(p);
        self.passwords.insert(path.to_path_buf(), p.clone());
        Ok(p)
    }

    fn acl_file(&mut self, path: &Path, key: &str) -> Result<Arc<AclFile>, AuthError> {
        if let Some(a) = self.acls.get(path) {
            return Ok(a.clone());
        }
        let a = AclFile::load(path).map_err(|source| AuthError::AclFile {
            key: key.to_owned(),
            path: path.to_path_buf(),
            source,
        })?;
        let a = Arc::new(a);
        self.acls.insert(path.to_path_buf(), a.clone());
        Ok(a)
    }

    /// How many distinct files this pass read (password and ACL files together), for tests
    /// of the sharing.
    pub fn files_read(&self) -> usize {
        self.passwords.len() + self.acls.len()
    }
}

/// The listener index of a bridge's in-process local end (`[[bridges]]`), which no
/// configured listener has (a session keeps its listener as a `u16`). Its snapshot is
/// [`bridge_auth`].
pub const BRIDGE_LISTENER: usize = u16::MAX as usize;

/// What a bridge's local end is checked against: nothing but the `$SYS`/`$share` rules. A
/// bridge is the operator's own configuration and, as in Mosquitto, bypasses the password
/// file, the ACL and dynamic security (its topics are what it may carry).
pub fn bridge_auth() -> &'static Arc<AuthConfig> {
    static OPEN: std::sync::LazyLock<Arc<AuthConfig>> =
        std::sync::LazyLock::new(|| Arc::new(AuthConfig::default()));
    &OPEN
}

/// The auth snapshot of every listener and of `[auth]`, replaced whole on reload.
#[derive(Debug, Clone, Default)]
pub struct AuthSet {
    /// `[auth]` itself: what a listener without keys of its own uses, and what answers for a
    /// session no listener holds.
    pub default: Arc<AuthConfig>,
    /// One per listener, indexed like `Config::listeners`.
    pub listeners: Vec<Arc<AuthConfig>>,
}

impl AuthSet {
    /// Loads `[auth]` (with its dynamic security) and every listener's effective settings,
    /// each file once. The first file that does not load stops it, named with its key and
    /// listener.
    pub fn load(config: &Config) -> Result<AuthSet, AuthError> {
        let mut files = AuthFiles::for_start(&config.auth)?;
        AuthSet::load_with(config, &mut files)
    }

    /// [`AuthSet::load`] with the caller's [`AuthFiles`] (to see what was read).
    pub fn load_with(config: &Config, files: &mut AuthFiles) -> Result<AuthSet, AuthError> {
        let loopback = config.listeners_all_loopback();
        let default = files.load(&config.auth, loopback, &KeyNames::global())?;
        let listeners = (0..config.listeners.len())
            .map(|i| {
                let names = KeyNames::listener(config, i);
                files.load(&config.listener_auth(i), loopback, &names)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let set = AuthSet { default, listeners };
        set.warn_if_closed(config);
        Ok(set)
    }

    /// Warns once per snapshot in use that refuses every client (`[auth]`'s only when a
    /// listener uses it).
    fn warn_if_closed(&self, config: &Config) {
        let mut warned: Vec<&Arc<AuthConfig>> = Vec::new();
        for (i, a) in self.listeners.iter().enumerate() {
            if warned.iter().any(|w| Arc::ptr_eq(w, a)) {
                continue;
            }
            warned.push(a);
            if Arc::ptr_eq(a, &self.default) {
                a.warn_if_closed(&config.auth, "[auth]");
            } else {
                let scope = KeyNames::listener(config, i).scope;
                a.warn_if_closed(&config.listener_auth(i), &scope);
            }
        }
    }

    /// Every listener uses `auth` (tests and embedders without per-listener keys).
    pub fn single(auth: AuthConfig, listeners: usize) -> AuthSet {
        let auth = Arc::new(auth);
        AuthSet {
            listeners: vec![auth.clone(); listeners],
            default: auth,
        }
    }

    /// The snapshot for a connection of listener `index`; `[auth]`'s for `None` (a session
    /// that no connection holds) or an index past the listeners.
    pub fn for_listener(&self, index: Option<usize>) -> &Arc<AuthConfig> {
        match index {
            Some(BRIDGE_LISTENER) => bridge_auth(),
            Some(i) => self.listeners.get(i).unwrap_or(&self.default),
            None => &self.default,
        }
    }

    /// The one snapshot every listener uses, when they all use the same (no per-listener
    /// keys): routing then needs no per-subscriber lookup.
    pub fn uniform(&self) -> Option<&Arc<AuthConfig>> {
        self.listeners
            .iter()
            .all(|l| Arc::ptr_eq(l, &self.default))
            .then_some(&self.default)
    }

    /// Whether any snapshot restricts topics, by an ACL file or dynamic security (otherwise
    /// READ needs no check per message).
    pub fn restricts(&self) -> bool {
        self.default.restricts() || self.listeners.iter().any(|l| l.restricts())
    }

    /// The dynamic-security state (every snapshot carries the same one).
    pub fn dynsec(&self) -> Option<&Arc<DynSec>> {
        self.default.dynsec.as_ref()
    }

    /// This set with `dynsec` in every snapshot, listeners that shared a snapshot still sharing
    /// one (so [`AuthSet::uniform`] answers as before). Only builds values: safe under the
    /// broker's auth lock.
    pub fn with_dynsec(&self, dynsec: Option<&Arc<DynSec>>) -> AuthSet {
        let mut done: Vec<(Arc<AuthConfig>, Arc<AuthConfig>)> = Vec::new();
        let mut stamp = |a: &Arc<AuthConfig>| -> Arc<AuthConfig> {
            if let Some((_, new)) = done.iter().find(|(old, _)| Arc::ptr_eq(old, a)) {
                return new.clone();
            }
            let new = Arc::new(AuthConfig {
                dynsec: dynsec.cloned(),
                ..AuthConfig::clone(a)
            });
            done.push((a.clone(), new.clone()));
            new
        };
        let default = stamp(&self.default);
        let listeners = self.listeners.iter().map(&mut stamp).collect();
        AuthSet { default, listeners }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerConfig;

    const ALICE: &str =
        "alice:$7$101$HCtCbRFe7t3O+ehn$EU9zhUmXciA+DpGk7HOssBqxAugV1XWiZ+9c8dLqqwNp\
                         Wue/A4hvdw6KBx8IvpxL9y0fJ4IOQ6gCAvI/Ahf4nw==\n";

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("starling-lauth-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listener(port: u16) -> ListenerConfig {
        ListenerConfig {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
            ..ListenerConfig::default()
        }
    }

    #[test]
    fn listeners_inherit_and_share_files() {
        let dir = scratch("share");
        let pw = dir.join("passwd");
        let (a, b) = (dir.join("a.acl"), dir.join("b.acl"));
        std::fs::write(&pw, ALICE).unwrap();
        std::fs::write(&a, "user alice\ntopic a/#\n").unwrap();
        std::fs::write(&b, "user alice\ntopic b/#\n").unwrap();
        let mut config = Config {
            listeners: vec![listener(1), listener(2), listener(3), listener(4)],
            ..Config::default()
        };
        config.auth.password_file = Some(pw.clone());
        config.listeners[0].allow_anonymous = Some(true);
        config.listeners[1].acl_file = Some(a.clone());
        config.listeners[2].acl_file = Some(b.clone());
        config.listeners[2].password_file = Some(pw.clone());
        let mut files = AuthFiles::default();
        let set = AuthSet::load_with(&config, &mut files).unwrap();
        // One password file and two ACL files, however many listeners name them.
        assert_eq!(files.files_read(), 3);
        assert!(set.listeners[0].allow_anonymous);
        assert!(!set.default.allow_anonymous);
        assert!(Arc::ptr_eq(
            set.listeners[1].passwords.as_ref().unwrap(),
            set.listeners[2].passwords.as_ref().unwrap()
        ));
        // Listener 3 sets nothing: it is `[auth]`, the very same snapshot.
        assert!(Arc::ptr_eq(&set.listeners[3], &set.default));
        assert!(set.uniform().is_none());
        let acl = |i: usize, t: &str| {
            set.listeners[i].check_acl("c", Some("alice"), t, super::super::Access::Write)
        };
        assert!(acl(1, "a/x") && !acl(1, "b/x"));
        assert!(acl(2, "b/x") && !acl(2, "a/x"));
        assert!(Arc::ptr_eq(set.for_listener(None), &set.default));
        assert!(Arc::ptr_eq(set.for_listener(Some(9)), &set.default));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_listener_keys_is_one_snapshot() {
        let config = Config::default();
        let set = AuthSet::load(&config).unwrap();
        assert!(set.uniform().is_some());
        assert!(!set.restricts());
    }

    #[test]
    fn errors_name_the_listener() {
        let dir = scratch("err");
        let mut config = Config {
            listeners: vec![listener(1), listener(8883)],
            ..Config::default()
        };
        config.listeners[1].password_file = Some(dir.join("missing"));
        let e = AuthSet::load(&config).unwrap_err().to_string();
        assert!(
            e.contains("listeners[1].password_file") && e.contains("127.0.0.1:8883"),
            "{e}"
        );
        config.listeners[1].password_file = None;
        config.auth.acl_file = Some(dir.join("missing.acl"));
        let e = AuthSet::load(&config).unwrap_err().to_string();
        assert!(
            e.contains("auth.acl_file") && e.contains("missing.acl"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
