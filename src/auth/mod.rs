//! Authentication and authorisation with Mosquitto's files: [`password`] reads `password_file`
//! (`$6$`/`$7$` hashes, as written by `mosquitto_passwd` or `starling passwd`), [`acl`] reads
//! `acl_file` and answers "may this client read or write this topic"; [`enhanced`] is the
//! MQTT 5 AUTH exchange behind the `Authenticator` trait.
//!
//! [`AuthConfig`] bundles both with `allow_anonymous` into one immutable snapshot: the unit of
//! authentication and authorisation for one listener. [`listeners::AuthSet`] holds one per
//! listener (each listener's keys over `[auth]`, Mosquitto's `per_listener_settings`) and the
//! `[auth]` one; listeners that resolve to the same files share one snapshot, and a file named
//! by several listeners is read once. The broker keeps the current set behind an
//! `RwLock<Arc<AuthSet>>` and replaces it whole on reload, so a CONNECT or a delivery always
//! sees one consistent version of both files. Loading reads files: do it at start-up or on a
//! blocking thread, not on the reactor.
//!
//! Semantics follow Mosquitto 2.0's built-in security (`security_default.c`):
//!
//! - **CONNECT** ([`AuthConfig::check_login`]): a client without a username is accepted only
//!   when `allow_anonymous` is on. With a password file, a username must be in it and come with
//!   the right password. Without one, `allow_anonymous` decides for every client, username or
//!   not (Mosquitto's "no auth configured" behaviour).
//! - **PUBLISH / delivery** ([`AuthConfig::check_acl`]): the `$SYS`/`$share` rules of
//!   [`acl::dollar_check`] always apply; then the ACL file decides, or everything is allowed
//!   when there is none.
//! - **SUBSCRIBE** ([`AuthConfig::check_subscribe`]): Mosquitto accepts any filter; Starling
//!   also refuses filters under which provably nothing is readable (see [`acl`]).
//!
//! With `auth.dynamic_security` ([`dynsec`], Mosquitto's dynamic-security plugin), dynsec
//! decides first, as the plugin does in Mosquitto: a username that is a dynsec client is judged
//! by it alone at CONNECT ([`AuthConfig::check_connect`]); others go to the password file and
//! are refused without one. For topics, where dynsec has no answer (unknown username, or no
//! match and a denying default) the ACL file decides, or the access is denied. The dynsec state
//! is changed only by its control API, never by a reload ([`crate::broker::dynsec`]).
//!
//! Neither passwords nor hashes are ever logged, and `Debug` output omits them.

pub mod acl;
pub mod dynsec;
pub mod enhanced;
pub mod listeners;
pub mod password;
pub mod slowdown;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::AuthSection;

pub use acl::{Access, AclFile, SubscribeVerdict};
pub use listeners::{AuthFiles, AuthSet};
pub use password::PasswordFile;

/// Immutable snapshot of the auth material; swapped atomically on reload (the broker holds it
/// in an `ArcSwap` or `RwLock<Arc<..>>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Users and password hashes, when a password file is set (shared by every listener that
    /// names the same file).
    pub passwords: Option<Arc<PasswordFile>>,
    /// Access rules, when an ACL file is set (shared like `passwords`).
    pub acl: Option<Arc<AclFile>>,
    /// Whether clients without a username may connect (the effective value, defaults applied).
    pub allow_anonymous: bool,
    /// Mosquitto-compatible dynamic security, when `auth.dynamic_security` is set: consulted
    /// before the password and ACL files (see [`dynsec`] and the precedence in this module's
    /// doc). Changed only through its control API, never by a reload.
    pub dynsec: Option<Arc<dynsec::DynSec>>,
}

impl Default for AuthConfig {
    /// No files, anonymous clients allowed: everything is permitted except the `$SYS`/`$share`
    /// rules.
    fn default() -> Self {
        AuthConfig {
            passwords: None,
            acl: None,
            allow_anonymous: true,
            dynsec: None,
        }
    }
}

/// Result of [`AuthConfig::check_login`].
///
/// Mosquitto answers every refusal with "not authorized" (v3.1.1 CONNACK return code 5, v5
/// reason code 0x87), including an unknown user or a wrong password, and so does Starling, with
/// one exception: a zero-length password is refused with v5 0x86 Bad User Name or Password
/// (Mosquitto 2.0.11 refuses it too, with 0x87). It is refused whoever the user is, before the
/// file is consulted, so the code reveals nothing about the user. The variants exist for logs
/// and metrics. See [`AuthDecision::v3_return_code`] and [`AuthDecision::v5_reason_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthDecision {
    /// The client may connect.
    Allow,
    /// A username was given but is not in the password file, or came without a password or
    /// with the wrong one.
    BadCredentials,
    /// No username and `allow_anonymous` is off, or no password file and `allow_anonymous` is
    /// off.
    NotAuthorized,
    /// A username with a zero-length password (empty, or starting with a NUL byte, which ends
    /// it as Mosquitto reads it) while a password file is in use: refused whatever the file
    /// holds, as Mosquitto does.
    EmptyPassword,
}

impl AuthDecision {
    /// Whether the client may connect.
    pub fn is_allowed(self) -> bool {
        self == AuthDecision::Allow
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code: 0 accepted, 5 not authorized (as Mosquitto, for
    /// every refusal, an empty password included).
    pub fn v3_return_code(self) -> u8 {
        if self.is_allowed() {
            0
        } else {
            5
        }
    }

    /// The MQTT 5 CONNACK reason code: 0x00 success, 0x86 Bad User Name or Password for an
    /// empty password, 0x87 Not authorized (as Mosquitto) for every other refusal.
    pub fn v5_reason_code(self) -> u8 {
        match self {
            AuthDecision::Allow => 0x00,
            AuthDecision::EmptyPassword => 0x86,
            AuthDecision::BadCredentials | AuthDecision::NotAuthorized => 0x87,
        }
    }
}

/// Why the auth files could not be loaded. The broker refuses to start (or, on reload, keeps the
/// previous snapshot).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A password file could not be read. (Bad entries inside it are only warnings.) `key` is
    /// the setting that names it: `auth.password_file`, or `listeners[N].password_file` with
    /// the listener's address.
    #[error("cannot read {key} {}: {source}", path.display())]
    PasswordFile {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `auth.dynamic_security` could not be read or is not Mosquitto's format.
    #[error("invalid auth.dynamic_security {0}")]
    Dynsec(#[source] dynsec::DynsecError),
    /// An ACL file could not be read or does not parse; `key` as for `PasswordFile`.
    #[error("invalid {key} {}: {source}", path.display())]
    AclFile {
        key: String,
        path: PathBuf,
        #[source]
        source: acl::AclError,
    },
}

impl AuthConfig {
    /// Loads the files named by `cfg` and resolves `allow_anonymous` (see
    /// [`AuthSection::allow_anonymous_effective`]; `listeners_all_loopback` is
    /// [`crate::config::Config::listeners_all_loopback`]). Errors name the `auth.` keys; see
    /// [`AuthSet::load`] for every listener at once.
    pub fn load(cfg: &AuthSection, listeners_all_loopback: bool) -> Result<AuthConfig, AuthError> {
        let names = listeners::KeyNames::global();
        let auth = AuthFiles::for_start(cfg)?.load(cfg, listeners_all_loopback, &names)?;
        auth.warn_if_closed(cfg, &names.scope);
        Ok(AuthConfig::clone(&auth))
    }

    /// Says once that nobody can connect, when that is what `cfg` amounts to (dynamic security
    /// can let clients in, so it never does with it).
    fn warn_if_closed(&self, cfg: &AuthSection, scope: &str) {
        if self.checks_passwords() || self.allow_anonymous {
            return;
        }
        if cfg.allow_anonymous.is_none() {
            tracing::warn!(
                "{scope}: a listener is not local and no password file is set, so \
                 allow_anonymous defaults to false and every client will be refused; set a \
                 password file, or allow_anonymous = true to accept anyone"
            );
        } else {
            tracing::warn!(
                "{scope}: allow_anonymous is false and no password file is set: every client \
                 will be refused"
            );
        }
    }

    /// Whether anything restricts topics (an ACL file or dynamic security): without, every
    /// topic is allowed but for the `$SYS`/`$share` rules, and callers skip the checks.
    pub fn restricts(&self) -> bool {
        self.acl.is_some() || self.dynsec.is_some()
    }

    /// Whether usernames are checked against something (a password file or dynamic
    /// security); a CONNECT with a username then costs a PBKDF2.
    pub fn checks_passwords(&self) -> bool {
        self.passwords.is_some() || self.dynsec.is_some()
    }

    /// The CONNECT check with dynamic security first: a username that is a dynsec client is
    /// judged by it alone ([`dynsec::DynSec::check_login`]); any other is left to
    /// [`AuthConfig::check_login`], and refused when there is no password file to vouch for it.
    /// `client_id` is the effective one (assigned when the client sent none).
    pub fn check_connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> AuthDecision {
        let (Some(d), Some(user)) = (&self.dynsec, username) else {
            return self.check_login(username, password);
        };
        if password.is_some_and(password::is_empty_password) {
            return AuthDecision::EmptyPassword;
        }
        match d.check_login(client_id, user, password) {
            dynsec::LoginVerdict::Allowed => AuthDecision::Allow,
            dynsec::LoginVerdict::Refused => AuthDecision::BadCredentials,
            dynsec::LoginVerdict::Unknown if self.passwords.is_none() => {
                AuthDecision::BadCredentials
            }
            dynsec::LoginVerdict::Unknown => self.check_login(username, password),
        }
    }

    /// CONNECT check with Mosquitto semantics: no username → allowed only if
    /// `allow_anonymous`; with a password file, a username without a password or with a
    /// zero-length one ([`AuthDecision::EmptyPassword`], whatever the file says) → refused, a
    /// username not in it → refused, else the password is verified (up to its first NUL byte,
    /// constant-time compare). Without a password file, `allow_anonymous` decides for everyone.
    ///
    /// Costs one PBKDF2 (about 2.4 ms at the default iteration count) whenever a username is
    /// checked against the file, including unknown usernames; call it from a blocking thread
    /// if the file may hold expensive entries.
    pub fn check_login(&self, username: Option<&str>, password: Option<&[u8]>) -> AuthDecision {
        let Some(passwords) = &self.passwords else {
            return if self.allow_anonymous {
                AuthDecision::Allow
            } else {
                AuthDecision::NotAuthorized
            };
        };
        let Some(username) = username else {
            return if self.allow_anonymous {
                AuthDecision::Allow
            } else {
                AuthDecision::NotAuthorized
            };
        };
        match password {
            Some(pw) if password::is_empty_password(pw) => AuthDecision::EmptyPassword,
            Some(pw) if passwords.verify(username, pw) => AuthDecision::Allow,
            _ => AuthDecision::BadCredentials,
        }
    }

    /// Whether a connection let in under `before` would still be let in under these rules
    /// without being asked for its password again: the rule for credentials that change while
    /// clients are connected (a reload of the password file now; an admin API or dynamic
    /// security later). `password_checked` says its username and password were verified
    /// against `before`'s password file; clients vouched for by a certificate or an enhanced
    /// authentication method are not judged here.
    pub fn still_admits(
        &self,
        before: &AuthConfig,
        username: Option<&str>,
        password_checked: bool,
    ) -> bool {
        if let Some(verdict) = self.dynsec_still_admits(before, username, password_checked) {
            return verdict;
        }
        match (&self.passwords, username) {
            (None, _) | (Some(_), None) => self.allow_anonymous,
            (Some(now), Some(user)) => {
                password_checked
                    && before
                        .passwords
                        .as_ref()
                        .is_some_and(|was| now.same_entry(was, user))
            }
        }
    }

    /// [`AuthConfig::still_admits`] for clients dynamic security judges (anonymous ones, and
    /// usernames it knows now or knew before): admitted again only when dynsec judges them
    /// exactly as before ([`dynsec::DynSec::same_identity`]). None for the others.
    fn dynsec_still_admits(
        &self,
        before: &AuthConfig,
        username: Option<&str>,
        password_checked: bool,
    ) -> Option<bool> {
        let now = self.dynsec.as_ref()?;
        let was = before.dynsec.as_ref();
        match username {
            None => {
                Some(self.allow_anonymous && was.is_some_and(|was| was.same_identity(now, None)))
            }
            Some(u) if now.knows(u) || was.is_some_and(|was| was.knows(u)) => {
                Some(password_checked && was.is_some_and(|was| was.same_identity(now, Some(u))))
            }
            Some(_) => None,
        }
    }

    /// Whether the client may read (receive) or write (publish) `topic`: the `$SYS`/`$share`
    /// rules, then dynamic security if set, then the ACL file if there is one. Pass the client's effective id (the assigned
    /// one when it sent none).
    pub fn check_acl(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        if let Some(d) = &self.dynsec {
            if !acl::dollar_check(topic, access) {
                return false;
            }
            let action = match access {
                Access::Read => dynsec::Action::Receive,
                Access::Write => dynsec::Action::Send,
            };
            if let Some(verdict) = d.check(username, topic, action) {
                return verdict;
            }
            // No answer from dynsec: the ACL file decides, or nothing grants it.
            return self
                .acl
                .as_ref()
                .is_some_and(|acl| acl.check(client_id, username, topic, access));
        }
        match &self.acl {
            Some(acl) => acl.check(client_id, username, topic, access),
            None => acl::dollar_check(topic, access),
        }
    }

    /// Subscribe-time check: [`SubscribeVerdict::Granted`] without an ACL file, otherwise
    /// [`AclFile::check_subscribe`].
    pub fn check_subscribe(
        &self,
        client_id: &str,
        username: Option<&str>,
        filter: &str,
    ) -> SubscribeVerdict {
        if let Some(d) = &self.dynsec {
            return match d.check(username, filter, dynsec::Action::Subscribe) {
                Some(true) => SubscribeVerdict::Granted,
                Some(false) => SubscribeVerdict::Denied,
                None => match &self.acl {
                    Some(acl) => acl.check_subscribe(client_id, username, filter),
                    None => SubscribeVerdict::Denied,
                },
            };
        }
        match &self.acl {
            Some(acl) => acl.check_subscribe(client_id, username, filter),
            None => SubscribeVerdict::Granted,
        }
    }

    /// Whether the client may remove its subscription `filter`: only dynamic security has a
    /// say (`unsubscribeLiteral`/`unsubscribePattern`, default `unsubscribe`); with no answer
    /// from it, allowed when an ACL file is in use (it has no unsubscribe rules) and refused
    /// otherwise, as in Mosquitto, where nothing granting it means denied.
    pub fn check_unsubscribe(&self, username: Option<&str>, filter: &str) -> bool {
        match &self.dynsec {
            Some(d) => d
                .check(username, filter, dynsec::Action::Unsubscribe)
                .unwrap_or(self.acl.is_some()),
            None => true,
        }
    }
}

/// Loads the dynamic-security file, logging what it holds.
fn load_dynsec(path: &std::path::Path) -> Result<dynsec::DynSec, AuthError> {
    let d = dynsec::DynSec::load(path).map_err(AuthError::Dynsec)?;
    let (clients, groups, roles) = d.counts();
    tracing::info!(
        "{}: dynamic security with {clients} clients, {groups} groups, {roles} roles",
        path.display()
    );
    Ok(d)
}

#[cfg(test)]
mod tests;
