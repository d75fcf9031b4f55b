//! Mosquitto's `dynamic-security.json`: reading ([`DynSec::parse`], [`DynSec::load`]), writing
//! ([`DynSec::to_json`]) and replacing the file atomically ([`write_atomic`]).
//!
//! Reading is as lenient as Mosquitto 2.0's plugin (`dynsec__config_load`): the top level must
//! be an object, and `clients`, `groups` and `roles`, when present, arrays; entries that do not
//! make sense (no name, a password hash of the wrong length, an iteration count below 1) are
//! skipped with a warning, and so are references to roles or clients that do not exist. Text
//! fields are read from `textname` (and, for files written by `mosquitto_ctrl dynsec init`,
//! which spells it `textName`, from that too). Priorities default to -1 for role and group
//! links and to 0 for ACLs, as in Mosquitto.
//!
//! Writing produces what Mosquitto writes: `clients` (with `password`, `salt` and `iterations`
//! when the client has a password), `groups` (with their `roles` and `clients`), `roles` (with
//! their `acls`), `defaultACLAccess` and, when set, `anonymousGroup`; link priorities of -1
//! are left out, ACL priorities always written.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tracing::warn;

use super::{
    insert_acl, insert_by_priority, Acl, AclType, Client, DefaultAccess, DynSec, Group, Link,
    PasswordHash, Role,
};
use crate::auth::password::HASH_LEN;

/// Longest salt accepted when reading (Mosquitto 2.1 writes 64 bytes, 2.0 writes 12).
const MAX_SALT_LEN: usize = 64;

/// Why the dynamic-security file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DynsecError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON, or its structure is not Mosquitto's.
    #[error("{}: {why}", path.display())]
    Format { path: PathBuf, why: String },
}

impl DynSec {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<DynSec, DynsecError> {
        let text = std::fs::read(path).map_err(|source| DynsecError::Io {
            path: path.to_owned(),
            source,
        })?;
        DynSec::parse(&text).map_err(|why| DynsecError::Format {
            path: path.to_owned(),
            why,
        })
    }

    /// Parses the file's contents (see the module doc for what is skipped).
    pub fn parse(text: &[u8]) -> Result<DynSec, String> {
        let tree: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(tree) = tree else {
            return Err("the top level is not a JSON object".into());
        };
        let mut d = DynSec::default();
        if let Some(v) = tree.get("defaultACLAccess") {
            d.default_access = parse_default_access(v, DefaultAccess::default());
        }
        for role in array(&tree, "roles")? {
            if let Some(role) = parse_role(role) {
                d.roles.insert(role.name.clone(), role);
            }
        }
        for client in array(&tree, "clients")? {
            if let Some(client) = parse_client(client, &d) {
                d.clients.insert(client.username.clone(), client);
            }
        }
        for group in array(&tree, "groups")? {
            if let Some(group) = parse_group(group, &d) {
                d.groups.insert(group.name.clone(), group);
            }
        }
        d.anonymous_group = tree
            .get("anonymousGroup")
            .and_then(Value::as_str)
            .filter(|g| d.groups.contains_key(*g))
            .map(str::to_owned);
        d.reindex();
        Ok(d)
    }

    /// The file's contents, as Mosquitto would write them.
    pub fn to_json(&self) -> Value {
        let mut tree = Map::new();
        let clients: Vec<Value> = self.clients.values().map(client_json).collect();
        let groups: Vec<Value> = self.groups.values().map(group_json).collect();
        let roles: Vec<Value> = self.roles.values().map(role_json).collect();
        tree.insert("clients".into(), Value::Array(clients));
        tree.insert("groups".into(), Value::Array(groups));
        tree.insert("roles".into(), Value::Array(roles));
        tree.insert(
            "defaultACLAccess".into(),
            default_access_json(&self.default_access),
        );
        if let Some(g) = &self.anonymous_group {
            tree.insert("anonymousGroup".into(), Value::String(g.clone()));
        }
        Value::Object(tree)
    }

    /// Writes the state to `path` atomically (see [`write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<(), DynsecError> {
        let mut text = serde_json::to_vec_pretty(&self.to_json()).map_err(|e| DynsecError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        write_atomic(path, &text).map_err(|source| DynsecError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// Replaces `path` with `contents` so that a crash at any point leaves either the old file or
/// the new one, never a mix: the contents go to a temporary file in the same directory
/// (created exclusively, mode 0600: it holds password hashes), which is flushed to disk, then
/// renamed over `path`, and the directory is flushed so the rename itself is durable.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = write_then_rename(&tmp, path, contents);
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::File::open(dir)?.sync_all()
}

fn write_then_rename(tmp: &Path, path: &Path, contents: &[u8]) -> std::io::Result<()> {
    // A leftover from a crash of this very process id would make create_new fail.
    let _ = std::fs::remove_file(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)
}

/// `tree[key]` as an array: absent means empty, anything else is an error (as in Mosquitto).
fn array<'a>(tree: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match tree.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("`{key}` is not an array")),
    }
}

/// A string field.
pub(crate) fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `textname` (or `textName`, as `mosquitto_ctrl dynsec init` writes it).
fn text_name(v: &Value) -> Option<String> {
    string(v, "textname").or_else(|| string(v, "textName"))
}

/// A number field as Mosquitto reads it (`(int)valuedouble`), or `default`.
pub(crate) fn int(v: &Value, key: &str, default: i32) -> i32 {
    // `as` saturates, like the clamp a C cast of an out-of-range double should have been.
    v.get(key)
        .and_then(Value::as_f64)
        .map_or(default, |f| f as i32)
}

/// A boolean field, or `default`.
pub(crate) fn boolean(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// `defaultACLAccess` as an object of four booleans (missing ones keep `base`'s value).
fn parse_default_access(v: &Value, base: DefaultAccess) -> DefaultAccess {
    DefaultAccess {
        publish_client_send: boolean(v, "publishClientSend", base.publish_client_send),
        publish_client_receive: boolean(v, "publishClientReceive", base.publish_client_receive),
        subscribe: boolean(v, "subscribe", base.subscribe),
        unsubscribe: boolean(v, "unsubscribe", base.unsubscribe),
    }
}

pub(crate) fn default_access_json(d: &DefaultAccess) -> Value {
    json!({
        "publishClientSend": d.publish_client_send,
        "publishClientReceive": d.publish_client_receive,
        "subscribe": d.subscribe,
        "unsubscribe": d.unsubscribe,
    })
}

/// One role, or None (with a warning) when it has no name.
fn parse_role(v: &Value) -> Option<Role> {
    let Some(name) = string(v, "rolename") else {
        warn!("dynamic security: a role without a rolename is skipped");
        return None;
    };
    let mut role = Role {
        name,
        textname: text_name(v),
        textdescription: string(v, "textdescription"),
        acls: Vec::new(),
    };
    for acl in v
        .get("acls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(acl) = parse_acl(acl) {
            insert_acl(&mut role.acls, acl);
        }
    }
    Some(role)
}

/// One ACL (file or `createRole`/`modifyRole` command); None when its type or topic is missing.
pub(crate) fn parse_acl(v: &Value) -> Option<Acl> {
    let acltype = v
        .get("acltype")
        .and_then(Value::as_str)
        .and_then(AclType::parse)?;
    Some(Acl {
        acltype,
        topic: string(v, "topic")?,
        priority: int(v, "priority", 0),
        allow: boolean(v, "allow", false),
    })
}

/// The role links of a client or group; links to unknown roles are skipped with a warning.
pub(crate) fn parse_role_links(v: &Value, d: &DynSec, owner: &str) -> Vec<Link> {
    let mut links = Vec::new();
    for r in v
        .get("roles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = string(r, "rolename") else {
            continue;
        };
        if !d.roles.contains_key(&name) {
            warn!("dynamic security: {owner} refers to role {name:?}, which does not exist");
            continue;
        }
        if links.iter().any(|l: &Link| l.name == name) {
            continue;
        }
        let link = Link {
            name,
            priority: int(r, "priority", -1),
        };
        insert_by_priority(&mut links, link, |l| l.priority);
    }
    links
}

fn parse_client(v: &Value, d: &DynSec) -> Option<Client> {
    let username = string(v, "username").filter(|u| !u.is_empty())?;
    let password = match parse_password(v) {
        Ok(p) => p,
        Err(why) => {
            warn!("dynamic security: client {username:?} is skipped: {why}");
            return None;
        }
    };
    Some(Client {
        roles: parse_role_links(v, d, &format!("client {username:?}")),
        clientid: string(v, "clientid"),
        textname: text_name(v),
        textdescription: string(v, "textdescription"),
        disabled: boolean(v, "disabled", false),
        password,
        username,
    })
}

/// `password` + `salt` + `iterations`: all three, or none (a client without a password).
fn parse_password(v: &Value) -> Result<Option<PasswordHash>, String> {
    let (Some(hash), Some(salt), Some(iterations)) = (
        v.get("password").and_then(Value::as_str),
        v.get("salt").and_then(Value::as_str),
        v.get("iterations").and_then(Value::as_f64),
    ) else {
        return Ok(None);
    };
    if iterations < 1.0 {
        return Err("iterations below 1".into());
    }
    let salt = BASE64.decode(salt).map_err(|_| "salt is not base64")?;
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(format!("salt of {} bytes", salt.len()));
    }
    let hash: [u8; HASH_LEN] = BASE64
        .decode(hash)
        .map_err(|_| "password is not base64")?
        .try_into()
        .map_err(|_| format!("password hash is not {HASH_LEN} bytes"))?;
    Ok(Some(PasswordHash {
        salt,
        hash,
        iterations: iterations as u32,
    }))
}

fn parse_group(v: &Value, d: &DynSec) -> Option<Group> {
    let Some(name) = string(v, "groupname") else {
        warn!("dynamic security: a group without a groupname is skipped");
        return None;
    };
    let mut clients = Vec::new();
    for c in v
        .get("clients")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(username) = string(c, "username") else {
            continue;
        };
        if !d.clients.contains_key(&username) || clients.iter().any(|l: &Link| l.name == username) {
            continue;
        }
        let link = Link {
            name: username,
            priority: int(c, "priority", -1),
        };
        clients.push(link);
    }
    Some(Group {
        roles: parse_role_links(v, d, &format!("group {name:?}")),
        textname: text_name(v),
        textdescription: string(v, "textdescription"),
        clients,
        name,
    })
}

/// `[{"rolename": .., "priority": ..}]`, priority left out when it is -1 (as Mosquitto does).
pub(crate) fn links_json(links: &[Link], key: &str) -> Value {
    Value::Array(
        links
            .iter()
            .map(|l| {
                let mut o = Map::new();
                o.insert(key.into(), Value::String(l.name.clone()));
                if l.priority != -1 {
                    o.insert("priority".into(), l.priority.into());
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// Adds the optional text fields the way Mosquitto does (only when set).
pub(crate) fn put_texts(o: &mut Map<String, Value>, name: &Option<String>, desc: &Option<String>) {
    if let Some(t) = name {
        o.insert("textname".into(), Value::String(t.clone()));
    }
    if let Some(t) = desc {
        o.insert("textdescription".into(), Value::String(t.clone()));
    }
}

fn client_json(c: &Client) -> Value {
    let mut o = Map::new();
    o.insert("username".into(), Value::String(c.username.clone()));
    if let Some(id) = &c.clientid {
        o.insert("clientid".into(), Value::String(id.clone()));
    }
    put_texts(&mut o, &c.textname, &c.textdescription);
    if c.disabled {
        o.insert("disabled".into(), Value::Bool(true));
    }
    o.insert("roles".into(), links_json(&c.roles, "rolename"));
    if let Some(p) = &c.password {
        o.insert("password".into(), Value::String(BASE64.encode(p.hash)));
        o.insert("salt".into(), Value::String(BASE64.encode(&p.salt)));
        o.insert("iterations".into(), p.iterations.into());
    }
    Value::Object(o)
}

fn group_json(g: &Group) -> Value {
    let mut o = Map::new();
    o.insert("groupname".into(), Value::String(g.name.clone()));
    put_texts(&mut o, &g.textname, &g.textdescription);
    o.insert("roles".into(), links_json(&g.roles, "rolename"));
    o.insert("clients".into(), links_json(&g.clients, "username"));
    Value::Object(o)
}

/// A role with its ACLs (the file, `getRole` and verbose `listRoles`).
pub(crate) fn role_json(r: &Role) -> Value {
    let mut o = Map::new();
    o.insert("rolename".into(), Value::String(r.name.clone()));
    put_texts(&mut o, &r.textname, &r.textdescription);
    let acls = AclType::ALL
        .iter()
        .flat_map(|t| r.acls.iter().filter(move |a| a.acltype == *t))
        .map(|a| {
            json!({
                "acltype": a.acltype.name(),
                "topic": a.topic,
                "priority": a.priority,
                "allow": a.allow,
            })
        })
        .collect();
    o.insert("acls".into(), Value::Array(acls));
    Value::Object(o)
}
