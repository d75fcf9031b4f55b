//! Dynamic security compatible with Mosquitto 2.0's `mosquitto_dynamic_security` plugin: clients,
//! groups and roles held in Mosquitto's `dynamic-security.json`, changed at run time through the
//! `$CONTROL/dynamic-security/v1` API that `mosquitto_ctrl dynsec ...` speaks.
//!
//! This module owns the model ([`DynSec`], one immutable snapshot that lives in
//! [`crate::auth::AuthConfig`]), the CONNECT check ([`DynSec::check_login`]) and the ACL check
//! ([`DynSec::check`]); [`file`] reads and writes the JSON file, [`control`] answers the control
//! API's commands. The broker side (the task that applies commands, persists them and swaps the
//! snapshot) is `crate::broker::dynsec`.
//!
//! # Semantics (Mosquitto 2.0's plugin)
//!
//! - **Login**: a client whose username is a dynsec client is let in only when the client is not
//!   disabled, its client id equals the record's `clientid` (when one is set), and its password
//!   hashes (PBKDF2-SHA512 with the record's salt and iterations) to the stored hash. A username
//!   dynsec does not know, or a client without a password, is left to the other checks
//!   ([`LoginVerdict::Unknown`]).
//! - **ACLs**: the roles are walked in this order, and the first ACL that matches decides:
//!   the client's roles (highest priority first), then each of its groups (highest group
//!   priority first) with that group's roles (highest first); within a role, its ACLs of the
//!   type asked about, highest priority first. A client without a username uses the anonymous
//!   group's roles. `publishClientSend` / `publishClientReceive` match the topic against the ACL
//!   filter with MQTT wildcards; `subscribeLiteral` / `unsubscribeLiteral` compare the filter
//!   as a string and are looked at before the role's patterns; `subscribePattern` /
//!   `unsubscribePattern` grant a filter the ACL filter covers ([`acl::sub_acl_check`]).
//!   Nothing matched: `defaultACLAccess` decides, except that it never grants a `$CONTROL`
//!   topic, which must be granted explicitly. A denial by default, or a username dynsec does
//!   not know, is "no answer" (`None`): the caller then asks the ACL file, if any, or denies.
//!
//! Hashes are never logged; `Debug` output omits them.

pub mod acl;
pub mod control;
mod control_clients;
mod control_groups;
mod control_roles;
pub mod file;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use subtle::ConstantTimeEq;

pub use acl::Action;
pub use file::DynsecError;

use crate::auth::password::{pbkdf2_sha512, HASH_LEN};

/// One snapshot of the dynamic-security state. Changes are made on a copy and swapped in
/// whole, so every check sees one consistent version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DynSec {
    pub(crate) clients: BTreeMap<String, Client>,
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) roles: BTreeMap<String, Role>,
    pub(crate) default_access: DefaultAccess,
    pub(crate) anonymous_group: Option<String>,
    /// Derived from `groups`: each username's groups, highest priority first (rebuilt by
    /// [`DynSec::reindex`] after every change), so an ACL check does not scan every group.
    memberships: HashMap<String, Vec<Link>>,
}

/// A dynsec client (a username and what it may do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    pub username: String,
    pub clientid: Option<String>,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    pub disabled: bool,
    pub password: Option<PasswordHash>,
    /// Roles, highest priority first (ties in the order they were added).
    pub roles: Vec<Link>,
}

/// A reference by name with a priority: a client's or group's role, a group's member, a
/// client's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    pub priority: i32,
}

/// A group: roles shared by its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub name: String,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    /// Roles, highest priority first.
    pub roles: Vec<Link>,
    /// Members (usernames) with the group's priority for each.
    pub clients: Vec<Link>,
}

/// A role: a list of ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Role {
    pub name: String,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    /// Grouped by type, highest priority first (ties in the order they were added); see
    /// [`insert_acl`].
    pub acls: Vec<Acl>,
}

/// One ACL of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acl {
    pub acltype: AclType,
    pub topic: String,
    pub priority: i32,
    pub allow: bool,
}

/// The six ACL types of Mosquitto's plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclType {
    /// Publishing by the client (PUBLISH received by the broker).
    PublishClientSend,
    /// Delivery to the client.
    PublishClientReceive,
    /// SUBSCRIBE with exactly this filter.
    SubscribeLiteral,
    /// SUBSCRIBE with a filter this pattern covers.
    SubscribePattern,
    /// UNSUBSCRIBE with exactly this filter.
    UnsubscribeLiteral,
    /// UNSUBSCRIBE with a filter this pattern covers.
    UnsubscribePattern,
}

impl AclType {
    /// Every type, in the order Mosquitto writes them.
    pub const ALL: [AclType; 6] = [
        AclType::PublishClientSend,
        AclType::PublishClientReceive,
        AclType::SubscribeLiteral,
        AclType::SubscribePattern,
        AclType::UnsubscribeLiteral,
        AclType::UnsubscribePattern,
    ];

    /// The name in the JSON file and the control API.
    pub fn name(self) -> &'static str {
        match self {
            AclType::PublishClientSend => "publishClientSend",
            AclType::PublishClientReceive => "publishClientReceive",
            AclType::SubscribeLiteral => "subscribeLiteral",
            AclType::SubscribePattern => "subscribePattern",
            AclType::UnsubscribeLiteral => "unsubscribeLiteral",
            AclType::UnsubscribePattern => "unsubscribePattern",
        }
    }

    /// Parses a name case-insensitively, as Mosquitto's `strcasecmp` does.
    pub fn parse(s: &str) -> Option<AclType> {
        AclType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

/// `defaultACLAccess`: what happens when no ACL matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultAccess {
    pub publish_client_send: bool,
    pub publish_client_receive: bool,
    pub subscribe: bool,
    pub unsubscribe: bool,
}

impl Default for DefaultAccess {
    /// Mosquitto's defaults: publishing and subscribing denied, receiving and unsubscribing
    /// allowed.
    fn default() -> Self {
        DefaultAccess {
            publish_client_send: false,
            publish_client_receive: true,
            subscribe: false,
            unsubscribe: true,
        }
    }
}

/// A salted PBKDF2-SHA512 password hash.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PasswordHash {
    pub salt: Vec<u8>,
    pub hash: [u8; HASH_LEN],
    pub iterations: u32,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the salt or digest.
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(
        password: &[u8],
        iterations: u32,
    ) -> Result<PasswordHash, crate::auth::password::HashPasswordError> {
        let salt = crate::auth::password::random_salt()?.to_vec();
        let hash = pbkdf2_sha512(password, &salt, iterations);
        Ok(PasswordHash {
            salt,
            hash,
            iterations,
        })
    }

    /// Constant-time comparison of the digest of `password` with the stored one.
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = pbkdf2_sha512(password, &self.salt, self.iterations);
        bool::from(computed.ct_eq(&self.hash))
    }
}

/// Outcome of [`DynSec::check_login`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginVerdict {
    /// The username is a dynsec client and the password is right.
    Allowed,
    /// The username is a dynsec client, and it is disabled, bound to another client id, or the
    /// password is wrong.
    Refused,
    /// Dynsec has no say: the username is not a dynsec client, or the client has no password,
    /// or no password was sent (Mosquitto's "defer").
    Unknown,
}

/// Inserts `item` after the items whose priority is at least its own: the list stays sorted
/// highest priority first, ties in insertion order (Mosquitto's `HASH_ADD_INORDER`).
pub(crate) fn insert_by_priority<T>(list: &mut Vec<T>, item: T, priority: impl Fn(&T) -> i32) {
    let p = priority(&item);
    let at = list
        .iter()
        .position(|x| priority(x) < p)
        .unwrap_or(list.len());
    list.insert(at, item);
}

/// Inserts an ACL into a role's list, which is kept grouped by type (in [`AclType::ALL`]
/// order, as Mosquitto keeps one list per type) and, within a type, sorted like
/// [`insert_by_priority`]: the same ACLs always make the same list.
pub(crate) fn insert_acl(list: &mut Vec<Acl>, acl: Acl) {
    let rank = |a: &Acl| AclType::ALL.iter().position(|t| *t == a.acltype);
    let at = list
        .iter()
        .position(|x| rank(x) > rank(&acl) || (rank(x) == rank(&acl) && x.priority < acl.priority))
        .unwrap_or(list.len());
    list.insert(at, acl);
}

impl DynSec {
    /// Checks a CONNECT's credentials (see the module doc). Costs one PBKDF2 when the username
    /// is a dynsec client with a password: run it off the reactor.
    pub fn check_login(
        &self,
        client_id: &str,
        username: &str,
        password: Option<&[u8]>,
    ) -> LoginVerdict {
        let (Some(client), Some(password)) = (self.clients.get(username), password) else {
            return LoginVerdict::Unknown;
        };
        if client.disabled || client.clientid.as_deref().is_some_and(|id| id != client_id) {
            return LoginVerdict::Refused;
        }
        let Some(stored) = &client.password else {
            return LoginVerdict::Unknown;
        };
        if stored.verify(password) {
            LoginVerdict::Allowed
        } else {
            LoginVerdict::Refused
        }
    }

    /// What `mosquitto_ctrl dynsec init FILE USER` creates: one client `admin_user` with the
    /// password, in the role `admin`, whose ACLs let it use the control API and read (subscribe
    /// to and receive) every topic including `$SYS`, but publish only to
    /// `$CONTROL/dynamic-security/#`; Mosquitto's default access.
    pub fn with_admin(
        admin_user: &str,
        password: &[u8],
        iterations: u32,
    ) -> Result<DynSec, crate::auth::password::HashPasswordError> {
        const ADMIN_ACLS: [(AclType, &str); 8] = [
            (AclType::PublishClientSend, "$CONTROL/dynamic-security/#"),
            (AclType::PublishClientReceive, "$CONTROL/dynamic-security/#"),
            (AclType::SubscribePattern, "$CONTROL/dynamic-security/#"),
            (AclType::PublishClientReceive, "$SYS/#"),
            (AclType::SubscribePattern, "$SYS/#"),
            (AclType::PublishClientReceive, "#"),
            (AclType::SubscribePattern, "#"),
            (AclType::UnsubscribePattern, "#"),
        ];
        let mut role = Role {
            name: "admin".into(),
            textname: None,
            textdescription: None,
            acls: Vec::new(),
        };
        for (acltype, topic) in ADMIN_ACLS {
            let acl = Acl {
                acltype,
                topic: topic.into(),
                priority: 0,
                allow: true,
            };
            insert_acl(&mut role.acls, acl);
        }
        let client = Client {
            username: admin_user.into(),
            clientid: None,
            textname: Some("Dynsec admin user".into()),
            textdescription: None,
            disabled: false,
            password: Some(PasswordHash::new(password, iterations)?),
            roles: vec![Link {
                name: "admin".into(),
                priority: -1,
            }],
        };
        let mut d = DynSec::default();
        d.roles.insert(role.name.clone(), role);
        d.clients.insert(client.username.clone(), client);
        d.reindex();
        Ok(d)
    }

    /// Whether `username` is a dynsec client.
    pub fn knows(&self, username: &str) -> bool {
        self.clients.contains_key(username)
    }

    /// Number of clients, groups and roles (for the start-up log line).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.clients.len(), self.groups.len(), self.roles.len())
    }

    /// The roles consulted for `username` (or an anonymous client), in evaluation order; None
    /// when the username is not a dynsec client.
    pub(crate) fn roles_in_order(&self, username: Option<&str>) -> Option<Vec<&Role>> {
        let mut out = Vec::new();
        let mut push_roles = |links: &[Link]| {
            out.extend(links.iter().filter_map(|l| self.roles.get(&l.name)));
        };
        match username {
            Some(u) => {
                let client = self.clients.get(u)?;
                push_roles(&client.roles);
                for membership in self.memberships.get(u).into_iter().flatten() {
                    if let Some(group) = self.groups.get(&membership.name) {
                        push_roles(&group.roles);
                    }
                }
            }
            None => {
                let group = self
                    .anonymous_group
                    .as_ref()
                    .and_then(|g| self.groups.get(g));
                if let Some(group) = group {
                    push_roles(&group.roles);
                }
            }
        }
        Some(out)
    }

    /// Whether a client connected as `username` (None: anonymous) is judged exactly the same
    /// way by `self` and `other`: same client record (password, client id, disabled) and the
    /// same roles with the same ACLs in the same order. When not, Mosquitto disconnects it
    /// so that it is authorised again.
    pub fn same_identity(&self, other: &DynSec, username: Option<&str>) -> bool {
        let record = |d: &DynSec| username.and_then(|u| d.clients.get(u)).cloned();
        record(self) == record(other)
            && self.roles_in_order(username) == other.roles_in_order(username)
    }

    /// Rebuilds the derived membership index; call after changing `groups` or `clients`.
    pub(crate) fn reindex(&mut self) {
        let mut memberships: HashMap<String, Vec<Link>> = HashMap::new();
        for group in self.groups.values() {
            for member in &group.clients {
                let link = Link {
                    name: group.name.clone(),
                    priority: member.priority,
                };
                insert_by_priority(
                    memberships.entry(member.name.clone()).or_default(),
                    link,
                    |l| l.priority,
                );
            }
        }
        self.memberships = memberships;
    }

    /// The groups `username` belongs to, highest priority first.
    pub(crate) fn groups_of(&self, username: &str) -> &[Link] {
        self.memberships.get(username).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests;
