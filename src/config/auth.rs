//! `[auth]`: the password and ACL files, dynamic security, anonymous access and the failed-login
//! slowdown; the checks themselves are [`crate::auth`]. Listeners may override some keys (see
//! [`super::Config::listener_auth`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[auth]`: who may connect and what they may do, with Mosquitto's file formats (see
/// [`crate::auth`]). The files are read at start-up; relative paths are relative to the
/// directory of the configuration file (see [`super::Config::resolve_paths`]).
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
    /// Mosquitto's `dynamic-security.json` (clients, groups and roles, changed at run time
    /// through `$CONTROL/dynamic-security/v1`, e.g. by `mosquitto_ctrl dynsec`). When set, it
    /// is consulted before `password_file` and `acl_file` (see `crate::auth`). Absent means
    /// no dynamic security. Changing the path needs a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_security: Option<PathBuf>,
    /// Whether clients without a username may connect. Absent means: true only when there is
    /// no `password_file` and every listener is on a loopback address (Mosquitto 2.0's "local
    /// only mode"); see [`AuthSection::allow_anonymous_effective`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// A persistent session can be resumed only by a client with the same username as the one
    /// that created it, so knowing a client id is not enough to take over its session and its
    /// queued messages.
    pub session_owner_check: bool,
    /// Failed logins from one peer address (IPv4, or IPv6 /64) answered at once; the refusals
    /// after them are held back, see [`crate::auth::slowdown`].
    pub login_failures_before_delay: u32,
    /// How long the first slowed refusal is held back; each further failure doubles it.
    #[serde(with = "duration")]
    pub login_delay: Duration,
    /// The longest a refusal is held back (it is also never held past `mqtt.connect_timeout`).
    /// `"0s"` turns the slowdown off.
    #[serde(with = "duration")]
    pub login_delay_max: Duration,
    /// An address that has not failed for this long is forgotten (its next failure is free).
    #[serde(with = "duration")]
    pub login_failure_memory: Duration,
    /// Addresses tracked at once (bounds memory); when full, the one that failed longest ago
    /// is forgotten first.
    pub login_tracked_peers: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            password_file: None,
            acl_file: None,
            dynamic_security: None,
            allow_anonymous: None,
            session_owner_check: true,
            login_failures_before_delay: 3,
            login_delay: Duration::from_millis(100),
            login_delay_max: Duration::from_secs(3),
            login_failure_memory: Duration::from_secs(600),
            login_tracked_peers: 10_000,
        }
    }
}

impl AuthSection {
    /// `allow_anonymous` with its default applied: the configured value, or else true exactly
    /// when neither `password_file` nor `dynamic_security` is set and `listeners_all_loopback`.
    pub fn allow_anonymous_effective(&self, listeners_all_loopback: bool) -> bool {
        self.allow_anonymous.unwrap_or(
            self.password_file.is_none()
                && self.dynamic_security.is_none()
                && listeners_all_loopback,
        )
    }
}
