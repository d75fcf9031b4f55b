//! The dynsec ACL check ([`DynSec::check`]) and Mosquitto's filter-against-pattern rule for
//! `subscribePattern` / `unsubscribePattern` ([`sub_acl_check`]). The order of evaluation is
//! described in the [parent module](super).

use super::{AclType, DynSec, Role};

/// What a client is doing, i.e. which ACL type and which default apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publishing (`publishClientSend`, default `publishClientSend`).
    Send,
    /// Receiving a delivery (`publishClientReceive`).
    Receive,
    /// Subscribing (`subscribeLiteral` then `subscribePattern`, default `subscribe`).
    Subscribe,
    /// Unsubscribing (`unsubscribeLiteral` then `unsubscribePattern`, default `unsubscribe`).
    Unsubscribe,
}

impl DynSec {
    /// Mosquitto's verdict for `username` (None: anonymous) doing `action` on `topic` (a topic
    /// name for [`Action::Send`] / [`Action::Receive`], a filter otherwise): `Some(true)`
    /// allowed, `Some(false)` denied by an ACL, `None` no answer (username unknown to dynsec, or
    /// no ACL matched and the default does not allow, or a `$CONTROL` topic nothing granted).
    pub fn check(&self, username: Option<&str>, topic: &str, action: Action) -> Option<bool> {
        if let Some(verdict) = self.first_match(username, topic, action)? {
            return Some(verdict);
        }
        let d = &self.default_access;
        let default = match action {
            Action::Send => d.publish_client_send,
            Action::Receive => d.publish_client_receive,
            Action::Subscribe => d.subscribe,
            Action::Unsubscribe => d.unsubscribe,
        };
        // "We never give fall through access to $CONTROL topics" (Mosquitto).
        (default && !topic.starts_with("$CONTROL")).then_some(true)
    }
}

impl DynSec {
    /// The verdict of the first matching ACL, walking the roles in the order of
    /// [`DynSec::roles_in_order`] without collecting them (this runs for every delivery).
    /// None when the username is not a dynsec client; `Some(None)` when nothing matched.
    fn first_match(
        &self,
        username: Option<&str>,
        topic: &str,
        action: Action,
    ) -> Option<Option<bool>> {
        let in_links = |links: &[super::Link]| {
            links
                .iter()
                .filter_map(|l| self.roles.get(&l.name))
                .find_map(|r| role_verdict(r, topic, action))
        };
        let Some(user) = username else {
            let group = self
                .anonymous_group
                .as_ref()
                .and_then(|g| self.groups.get(g));
            return Some(group.and_then(|g| in_links(&g.roles)));
        };
        let client = self.clients.get(user)?;
        let verdict = in_links(&client.roles).or_else(|| {
            self.groups_of(user)
                .iter()
                .filter_map(|m| self.groups.get(&m.name))
                .find_map(|g| in_links(&g.roles))
        });
        Some(verdict)
    }
}

/// The first matching ACL of `role` for `action`, if any.
fn role_verdict(role: &Role, topic: &str, action: Action) -> Option<bool> {
    let of = |t: AclType| role.acls.iter().filter(move |a| a.acltype == t);
    let (literal, pattern) = match action {
        Action::Send => {
            return of(AclType::PublishClientSend)
                .find(|a| crate::codec::topic::matches(&a.topic, topic))
                .map(|a| a.allow)
        }
        Action::Receive => {
            return of(AclType::PublishClientReceive)
                .find(|a| crate::codec::topic::matches(&a.topic, topic))
                .map(|a| a.allow)
        }
        Action::Subscribe => (AclType::SubscribeLiteral, AclType::SubscribePattern),
        Action::Unsubscribe => (AclType::UnsubscribeLiteral, AclType::UnsubscribePattern),
    };
    // Within a role the literal ACLs are looked up first (a hash table in Mosquitto), whatever
    // the priorities, then the patterns by priority.
    of(literal)
        .find(|a| a.topic == topic)
        .or_else(|| of(pattern).find(|a| sub_acl_check(&a.topic, topic)))
        .map(|a| a.allow)
}

/// Mosquitto's `sub_acl_check(acl, sub)`: whether the ACL filter `acl` grants the subscription
/// filter `sub`, level by level: `#` alone grants everything; a trailing `#` in `acl` grants
/// any further levels; `+` in `acl` grants any single level of `sub` (including `+`); other
/// levels must be equal. A `sub` ending in `#` needs an `acl` ending in `#`.
pub fn sub_acl_check(acl: &str, sub: &str) -> bool {
    if acl == "#" {
        return true;
    }
    let (acl, acl_hash) = strip_hash(acl);
    let (sub, sub_hash) = strip_hash(sub);
    if sub_hash && !acl_hash {
        return false;
    }
    let acl_levels: Vec<&str> = acl.split('/').collect();
    let sub_levels: Vec<&str> = sub.split('/').collect();
    if acl_levels.len() > sub_levels.len() || (sub_levels.len() > acl_levels.len() && !acl_hash) {
        return false;
    }
    sub_levels
        .iter()
        .enumerate()
        .all(|(i, s)| match acl_levels.get(i) {
            Some(a) => *a == "+" || a == s,
            None => acl_hash,
        })
}

/// `f` without a trailing `#` level (`#` or `/#`), and whether it had one (Mosquitto's
/// `hash_check`).
fn strip_hash(f: &str) -> (&str, bool) {
    if f == "#" {
        ("", true)
    } else if let Some(rest) = f.strip_suffix("/#") {
        (rest, true)
    } else {
        (f, false)
    }
}
