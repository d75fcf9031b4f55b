//! Mosquitto ACL files (`acl_file`): parsing, the per-message check, and a subscribe-time check
//! that goes beyond Mosquitto.
//!
//! # Grammar (Mosquitto 2.0 `aclfile__parse`)
//!
//! ```text
//! # comment                  only when `#` is the first character of the line
//! topic [read|write|readwrite|deny] <filter>
//! user <username>
//! pattern [read|write|readwrite|deny] <filter with %c / %u>
//! ```
//!
//! Trailing whitespace is stripped and tokens are separated by spaces (runs of spaces count as
//! one; a tab does not separate). Without an access word the access is `readwrite`, and the
//! filter is then the single word after the keyword (so `topic read` grants readwrite on the
//! topic `read`, as in Mosquitto); with one, the filter is the rest of the line, trimmed, and may
//! contain spaces. The filter must be a valid subscription filter. `topic` lines before the
//! first `user` line apply to anonymous clients (no username); after `user X` to clients whose
//! *username* is `X`; repeated `user X` blocks add to the same list. `pattern` lines apply to
//! every client, whatever `user` precedes them, with `%c` replaced by the client id and `%u` by
//! the username (plain string substitution; patterns with `%u` are skipped for clients without
//! a username). `deny` entries go to the front of their list, so within a list deny wins. Any
//! other line is an error naming its line number, and the file is refused.
//!
//! # Check ([`AclFile::check`], Mosquitto `mosquitto_acl_check_default`)
//!
//! 1. A client without an id is denied (pass the broker-assigned id for clients that sent an
//!    empty one). The `$` rules of [`dollar_check`] apply first: nobody publishes into `$SYS`
//!    (except a bridge's `$SYS/broker/connection/<id>/state`), and `$share/...` is not a topic
//!    one can publish to or receive on.
//! 2. The client's list is walked: its `user` list, or the anonymous list when it has no
//!    username. A matching `deny` entry denies; a matching entry granting the access allows.
//! 3. If any patterns exist and the username or client id contains `+` or `#`, access is
//!    denied (otherwise a client could pick an id that widens a `%c` pattern).
//! 4. The patterns are walked the same way, after substitution.
//! 5. Nothing matched: denied.
//!
//! Matching follows MQTT: `+` is one level, `#` the rest (including the parent level), and an
//! ACL filter must itself start with `$` to match a topic that starts with `$`, so `topic #`
//! does not grant `$SYS/...`.
//!
//! # Subscribe-time check ([`AclFile::check_subscribe`])
//!
//! Mosquitto accepts every SUBSCRIBE and only filters deliveries. Starling also refuses a
//! subscription when it can *prove* that no topic the filter matches is readable, using filter
//! intersection ([`filters_intersect`]) and containment ([`filter_covers`]). When in doubt it
//! grants, and READ is still checked for every delivered message.

use std::collections::HashMap;
use std::path::Path;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive messages published to the topic (checked on delivery, retained ones included).
    Read,
    /// Publish to the topic.
    Write,
}

impl Access {
    fn bit(self) -> u8 {
        match self {
            Access::Read => READ,
            Access::Write => WRITE,
        }
    }
}

const READ: u8 = 1;
const WRITE: u8 = 2;

/// Outcome of [`AclFile::check_subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeVerdict {
    /// Some topic the filter matches may be readable; deliveries are still checked one by one.
    Granted,
    /// No topic the filter matches is readable: refuse the subscription (v5 reason 0x87, v3
    /// return code 0x80).
    Denied,
}

/// Why an ACL file was refused. `Display` gives the line number and the reason; the caller adds
/// the path.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A line does not follow the grammar.
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: String },
}

/// The entries of one list, with denies kept apart: Mosquitto puts each deny at the front of
/// its list, so any matching deny decides before any grant of the same list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RuleList {
    denies: Vec<String>,
    /// `(access bits, filter)` in file order.
    grants: Vec<(u8, String)>,
}

impl RuleList {
    fn add(&mut self, access: u8, filter: &str) {
        if access == 0 {
            self.denies.push(filter.to_owned());
        } else {
            self.grants.push((access, filter.to_owned()));
        }
    }

    /// `Some(true)` allowed, `Some(false)` denied, `None` nothing in this list decides.
    fn decide(&self, topic: &str, bit: u8) -> Option<bool> {
        if self.denies.iter().any(|f| acl_matches(f, topic)) {
            return Some(false);
        }
        self.grants
            .iter()
            .any(|(a, f)| a & bit != 0 && acl_matches(f, topic))
            .then_some(true)
    }
}

/// A pattern, kept as written; substituted per client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    access: u8,
    filter: String,
    uses_username: bool,
}

/// A parsed ACL file. Immutable; a reload builds a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    /// `topic` lines before the first `user` line.
    anonymous: RuleList,
    users: HashMap<String, RuleList>,
    /// Denies first, then grants in file order.
    pattern_denies: Vec<Pattern>,
    pattern_grants: Vec<Pattern>,
}

impl AclFile {
    /// Reads and parses `path`. A line that does not parse refuses the whole file.
    pub fn load(path: &Path) -> Result<AclFile, AclError> {
        let bytes = std::fs::read(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            AclError::Parse {
                line,
                reason: "not valid UTF-8".to_owned(),
            }
        })?;
        Self::parse(text)
    }

    /// Parses the text of an ACL file (see the module docs for the grammar).
    pub fn parse(text: &str) -> Result<AclFile, AclError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let line_no = i + 1;
            let err = |reason: String| AclError::Parse {
                line: line_no,
                reason,
            };
            let line = raw.trim_end_matches(c_space);
            if line.starts_with('#') {
                continue;
            }
            let Some((keyword, rest)) = next_token(line) else {
                continue;
            };
            match keyword {
                "topic" | "pattern" => {
                    let (access, filter) = parse_rule(rest).map_err(err)?;
                    if keyword == "pattern" {
                        let uses_client = filter.contains("%c");
                        let uses_username = filter.contains("%u");
                        if !uses_client && !uses_username {
                            tracing::warn!(
                                "ACL line {line_no}: pattern {filter:?} contains neither %c \
                                 nor %u, so it applies to every client alike"
                            );
                        }
                        let p = Pattern {
                            access,
                            filter: filter.to_owned(),
                            uses_username,
                        };
                        if access == 0 {
                            acl.pattern_denies.push(p);
                        } else {
                            acl.pattern_grants.push(p);
                        }
                    } else {
                        match &user {
                            Some(u) => acl.users.entry(u.clone()).or_default(),
                            None => &mut acl.anonymous,
                        }
                        .add(access, filter);
                    }
                }
                "user" => {
                    let name = rest.trim_matches(c_space);
                    if name.is_empty() {
                        return Err(err("missing username after `user`".to_owned()));
                    }
                    user = Some(name.to_owned());
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword {other:?} (expected topic, user or pattern; \
                         comments need `#` as the first character)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Whether the client may `access` `topic` (a topic name, not a filter). See the module docs
    /// for the algorithm.
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        if client_id.is_empty() || !dollar_check(topic, access) {
            return false;
        }
        let bit = access.bit();
        if let Some(list) = self.list_for(username) {
            if let Some(decision) = list.decide(topic, bit) {
                return decision;
            }
        }
        if !self.has_patterns() || injection(client_id, username) {
            return false;
        }
        let applicable = |p: &&Pattern| !p.uses_username || username.is_some();
        for p in self.pattern_denies.iter().filter(applicable) {
            if acl_matches(&substitute(&p.filter, client_id, username), topic) {
                return false;
            }
        }
        self.pattern_grants.iter().filter(applicable).any(|p| {
            p.access & bit != 0 && acl_matches(&substitute(&p.filter, client_id, username), topic)
        })
    }

    /// Subscribe-time check, beyond Mosquitto: [`SubscribeVerdict::Denied`] when provably no
    /// topic matched by `filter` is readable by this client, [`SubscribeVerdict::Granted`]
    /// otherwise (READ is then checked per message). `$share/{group}/{f}` is judged by `f`.
    ///
    /// A topic is readable when some read grant matches it and no deny that is walked before
    /// that grant does. So the filter is granted as soon as one read grant `G` intersects it in
    /// a set `S ∩ G` that no single earlier deny covers entirely. This is conservative: several
    /// denies that only together cover `S ∩ G` still give `Granted`.
    pub fn check_subscribe(
        &self,
        client_id: &str,
        username: Option<&str>,
        filter: &str,
    ) -> SubscribeVerdict {
        let filter = match crate::codec::topic::parse_shared(filter) {
            Some((_group, inner)) => inner,
            None => filter,
        };
        if client_id.is_empty() || !valid_filter(filter) {
            return SubscribeVerdict::Denied;
        }
        let mut denies: Vec<String> = Vec::new();
        let granted = |denies: &[String], grant: &str| match intersection(filter, grant) {
            Some(both) => !denies.iter().any(|d| covers_levels(&levels(d), &both)),
            None => false,
        };
        if let Some(list) = self.list_for(username) {
            denies.extend(list.denies.iter().cloned());
            for (access, grant) in &list.grants {
                if access & READ != 0 && granted(&denies, grant) {
                    return SubscribeVerdict::Granted;
                }
            }
        }
        if self.has_patterns() && !injection(client_id, username) {
            let applicable = |p: &&Pattern| !p.uses_username || username.is_some();
            for p in self.pattern_denies.iter().filter(applicable) {
                denies.push(substitute(&p.filter, client_id, username));
            }
            for p in self.pattern_grants.iter().filter(applicable) {
                if p.access & READ != 0
                    && granted(&denies, &substitute(&p.filter, client_id, username))
                {
                    return SubscribeVerdict::Granted;
                }
            }
        }
        SubscribeVerdict::Denied
    }

    /// The `user` list for `username`, or the anonymous list when there is no username.
    fn list_for(&self, username: Option<&str>) -> Option<&RuleList> {
        match username {
            Some(u) => self.users.get(u),
            None => Some(&self.anonymous),
        }
    }

    fn has_patterns(&self) -> bool {
        !self.pattern_denies.is_empty() || !self.pattern_grants.is_empty()
    }
}

/// Mosquitto's `acl__check_dollar`, applied before any ACL (and also when no ACL file is
/// configured): writing to a topic starting with `$SYS` is refused except for a bridge's
/// `$SYS/broker/connection/<client id>/state` (Mosquitto compatibility; such a write still
/// needs an ACL grant when an ACL file is in use); a topic starting with `$share` can be neither
/// published to nor read (it is only subscription syntax; the codec already refuses it as a
/// PUBLISH topic). Everything else passes.
pub fn dollar_check(topic: &str, access: Access) -> bool {
    if topic.starts_with("$SYS") {
        return access == Access::Read || acl_matches("$SYS/broker/connection/+/state", topic);
    }
    !topic.starts_with("$share")
}

/// C's `isspace` in the "C" locale, which Mosquitto uses to strip lines and trim fields.
fn c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Splits off the next space-separated token, like `strtok_r(s, " ")`: leading spaces are
/// skipped and exactly one space after the token is consumed.
fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once(' ') {
        Some((token, rest)) => (token, rest),
        None => (s, ""),
    })
}

/// `[access] <filter>` after `topic` / `pattern`.
fn parse_rule(rest: &str) -> Result<(u8, &str), String> {
    let Some((first, remainder)) = next_token(rest) else {
        return Err("missing topic".to_owned());
    };
    let remainder = remainder.trim_matches(c_space);
    let (access, filter) = if remainder.is_empty() {
        (READ | WRITE, first)
    } else {
        let access = match first {
            "read" => READ,
            "write" => WRITE,
            "readwrite" => READ | WRITE,
            "deny" => 0,
            other => {
                return Err(format!(
                    "invalid access type {other:?} (expected read, write, readwrite or deny)"
                ))
            }
        };
        (access, remainder)
    };
    if !valid_filter(filter) {
        return Err(format!("invalid ACL topic {filter:?}"));
    }
    Ok((access, filter))
}

/// A subscription filter as Mosquitto's `mosquitto_sub_topic_check` accepts it: `+` and `#` only
/// as whole levels, `#` only last; additionally non-empty, at most 65535 bytes, no NUL.
fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.len() > 65_535 || f.contains('\0') {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => {}
            "#" if levels.peek().is_none() => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

fn acl_matches(filter: &str, topic: &str) -> bool {
    crate::codec::topic::matches(filter, topic)
}

/// Username or client id containing a wildcard: patterns are not applied (step 3).
fn injection(client_id: &str, username: Option<&str>) -> bool {
    let bad = |s: &str| s.contains(['+', '#']);
    bad(client_id) || username.is_some_and(bad)
}

/// Mosquitto's left-to-right substitution of `%c` and `%u` (`%u` is left as is without a
/// username, but such patterns are skipped anyway).
fn substitute(filter: &str, client_id: &str, username: Option<&str>) -> String {
    let mut out = String::with_capacity(filter.len() + client_id.len());
    let mut chars = filter.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match (chars.peek(), username) {
                (Some('c'), _) => {
                    chars.next();
                    out.push_str(client_id);
                    continue;
                }
                (Some('u'), Some(u)) => {
                    chars.next();
                    out.push_str(u);
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

fn levels(f: &str) -> Vec<&str> {
    f.split('/').collect()
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Whether a filter whose first level is `a` can share a topic with one whose first level is
/// `b` as far as the `$` rule goes: a wildcard first level never matches a `$` topic.
fn dollar_compatible(a: &str, b: &str) -> bool {
    !(is_wild(a) && b.starts_with('$') || is_wild(b) && a.starts_with('$'))
}

/// The set of topics matched by both filters, as a filter (the intersection of two MQTT
/// filters is always one filter or empty), or `None` when no topic matches both.
fn intersection<'a>(a: &'a str, b: &'a str) -> Option<Vec<&'a str>> {
    let a = levels(a);
    let b = levels(b);
    if !dollar_compatible(a[0], b[0]) {
        return None;
    }
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut i = 0;
    loop {
        match (a.get(i).copied(), b.get(i).copied()) {
            // `#` matches any remainder, including none: the other side's rest is the answer.
            (Some("#"), _) => {
                out.extend_from_slice(&b[i.min(b.len())..]);
                return Some(out);
            }
            (_, Some("#")) => {
                out.extend_from_slice(&a[i.min(a.len())..]);
                return Some(out);
            }
            (None, None) => return Some(out),
            (None, Some(_)) | (Some(_), None) => return None,
            (Some("+"), Some(y)) => out.push(y),
            (Some(x), Some("+")) => out.push(x),
            (Some(x), Some(y)) if x == y => out.push(x),
            _ => return None,
        }
        i += 1;
    }
}

/// Whether some topic matches both filters `a` and `b` (plain filters, not `$share/...`).
pub fn filters_intersect(a: &str, b: &str) -> bool {
    intersection(a, b).is_some()
}

/// Whether every topic matched by `inner` is also matched by `outer` (filter containment).
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    covers_levels(&levels(outer), &levels(inner))
}

fn covers_levels(outer: &[&str], inner: &[&str]) -> bool {
    // `#` alone matches exactly what `+/#` does (every non-`$` topic has at least one level);
    // the longer form lets `+/#` be seen to cover `#`.
    let inner: &[&str] = if inner == ["#"] { &["+", "#"] } else { inner };
    let (Some(o0), Some(i0)) = (outer.first(), inner.first()) else {
        return false;
    };
    if is_wild(o0) && i0.starts_with('$') {
        return false;
    }
    let mut i = 0;
    loop {
        match (outer.get(i).copied(), inner.get(i).copied()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
        i += 1;
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
