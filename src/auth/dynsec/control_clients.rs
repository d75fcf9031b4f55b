//! The client commands of the control API (createClient, deleteClient, getClient,
//! listClients, modifyClient, setClientPassword, setClientId, addClientRole, removeClientRole,
//! enableClient, disableClient), with Mosquitto 2.0's checks and error strings.

use serde_json::{json, Map, Value};

use super::control::{optional, page, required, verbose, Ctx, Reply};
use super::file::{int, links_json, parse_role_links, put_texts, string};
use super::{insert_by_priority, Client, DynSec, Link, PasswordHash};

const BAD_USERNAME: &str = "Invalid/missing username";
const NOT_FOUND: &str = "Client not found";

/// The named client, or "Client not found".
fn client_mut<'a>(d: &'a mut DynSec, username: &str) -> Result<&'a mut Client, &'static str> {
    d.clients.get_mut(username).ok_or(NOT_FOUND)
}

fn hash(ctx: &Ctx<'_>, password: &str) -> Result<PasswordHash, &'static str> {
    PasswordHash::new(password.as_bytes(), ctx.iterations).map_err(|_| "Internal error")
}

/// The `roles` of a command, when it has an array of them: every role must exist.
fn role_links(ctx: &Ctx<'_>) -> Result<Option<Vec<Link>>, &'static str> {
    let Some(roles) = ctx.cmd.get("roles").and_then(Value::as_array) else {
        return Ok(None);
    };
    for r in roles {
        match string(r, "rolename") {
            Some(name) if ctx.d.roles.contains_key(&name) => {}
            Some(_) => return Err("Role not found"),
            None => return Err("'roles' not an array or missing/invalid rolename"),
        }
    }
    Ok(Some(parse_role_links(ctx.cmd, ctx.d, "the command")))
}

pub(crate) fn create(ctx: &mut Ctx<'_>) -> Reply {
    let cmd = ctx.cmd;
    let username = required(cmd, "username", BAD_USERNAME)?;
    if username.is_empty() {
        return Err("Empty username");
    }
    let password = optional(cmd, "password", "Invalid/missing password")?;
    let clientid = optional(cmd, "clientid", "Invalid/missing client id")?;
    let textname = optional(cmd, "textname", "Invalid/missing textname")?;
    let textdescription = optional(cmd, "textdescription", "Invalid/missing textdescription")?;
    if ctx.d.clients.contains_key(username) {
        return Err("Client already exists");
    }
    let roles = role_links(ctx)?.unwrap_or_default();
    let password = password.map(|p| hash(ctx, p)).transpose()?;
    let client = Client {
        username: username.to_owned(),
        clientid: clientid.filter(|c| !c.is_empty()).map(str::to_owned),
        textname: textname.map(str::to_owned),
        textdescription: textdescription.map(str::to_owned),
        disabled: false,
        password,
        roles,
    };
    ctx.d.clients.insert(username.to_owned(), client);
    for g in cmd
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(groupname) = string(g, "groupname") else {
            continue;
        };
        let priority = int(g, "priority", -1);
        let group = ctx.d.groups.get_mut(&groupname).ok_or("Group not found")?;
        if !group.clients.iter().any(|l| l.name == username) {
            group.clients.push(Link {
                name: username.to_owned(),
                priority,
            });
        }
    }
    Ok(None)
}

/// Removes `username` from every group.
fn leave_all_groups(d: &mut DynSec, username: &str) {
    for g in d.groups.values_mut() {
        g.clients.retain(|l| l.name != username);
    }
}

pub(crate) fn delete(ctx: &mut Ctx<'_>) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    if ctx.d.clients.remove(username).is_none() {
        return Err(NOT_FOUND);
    }
    leave_all_groups(ctx.d, username);
    Ok(None)
}

fn set_disabled(ctx: &mut Ctx<'_>, disabled: bool) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    client_mut(ctx.d, username)?.disabled = disabled;
    Ok(None)
}

pub(crate) fn enable(ctx: &mut Ctx<'_>) -> Reply {
    set_disabled(ctx, false)
}

pub(crate) fn disable(ctx: &mut Ctx<'_>) -> Reply {
    set_disabled(ctx, true)
}

pub(crate) fn set_id(ctx: &mut Ctx<'_>) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    let clientid = optional(ctx.cmd, "clientid", "Invalid/missing client ID")?;
    let client = client_mut(ctx.d, username)?;
    client.clientid = clientid.filter(|c| !c.is_empty()).map(str::to_owned);
    Ok(None)
}

pub(crate) fn set_password(ctx: &mut Ctx<'_>) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    let password = required(ctx.cmd, "password", "Invalid/missing password")?;
    if password.is_empty() {
        return Err("Empty password is not allowed");
    }
    if !ctx.d.clients.contains_key(username) {
        return Err(NOT_FOUND);
    }
    let hashed = hash(ctx, password)?;
    client_mut(ctx.d, username)?.password = Some(hashed);
    Ok(None)
}

pub(crate) fn add_role(ctx: &mut Ctx<'_>) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    let rolename = required(ctx.cmd, "rolename", "Invalid/missing rolename")?;
    let priority = int(ctx.cmd, "priority", -1);
    if !ctx.d.roles.contains_key(rolename) {
        // Mosquitto looks the client up first.
        client_mut(ctx.d, username)?;
        return Err("Role not found");
    }
    let client = client_mut(ctx.d, username)?;
    if client.roles.iter().any(|l| l.name == rolename) {
        return Err("Client is already in this role");
    }
    let link = Link {
        name: rolename.to_owned(),
        priority,
    };
    insert_by_priority(&mut client.roles, link, |l| l.priority);
    Ok(None)
}

pub(crate) fn remove_role(ctx: &mut Ctx<'_>) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    let rolename = required(ctx.cmd, "rolename", "Invalid/missing rolename")?;
    let role_exists = ctx.d.roles.contains_key(rolename);
    let client = client_mut(ctx.d, username)?;
    if !role_exists {
        return Err("Role not found");
    }
    client.roles.retain(|l| l.name != rolename);
    Ok(None)
}

/// A client as `getClient` and a verbose `listClients` show it.
fn client_json(d: &DynSec, c: &Client) -> Value {
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
    o.insert(
        "groups".into(),
        links_json(d.groups_of(&c.username), "groupname"),
    );
    Value::Object(o)
}

pub(crate) fn get(ctx: &mut Ctx<'_>) -> Reply {
    let username = required(ctx.cmd, "username", BAD_USERNAME)?;
    let client = ctx.d.clients.get(username).ok_or(NOT_FOUND)?;
    Ok(Some(json!({ "client": client_json(ctx.d, client) })))
}

pub(crate) fn list(ctx: &mut Ctx<'_>) -> Reply {
    let d = &*ctx.d;
    let verbose = verbose(ctx.cmd);
    let clients = page(
        ctx.cmd,
        d.clients.values().map(|c| {
            if verbose {
                client_json(d, c)
            } else {
                Value::String(c.username.clone())
            }
        }),
    );
    Ok(Some(
        json!({ "totalCount": d.clients.len(), "clients": clients }),
    ))
}

pub(crate) fn modify(ctx: &mut Ctx<'_>) -> Reply {
    let cmd = ctx.cmd;
    let username = required(cmd, "username", BAD_USERNAME)?;
    if !ctx.d.clients.contains_key(username) {
        return Err(NOT_FOUND);
    }
    let roles = role_links(ctx)?;
    let groups = modify_groups(ctx)?;
    let password = match cmd.get("password").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => Some(hash(ctx, p)?),
        _ => None,
    };
    let client = client_mut(ctx.d, username)?;
    if let Some(id) = cmd.get("clientid").and_then(Value::as_str) {
        client.clientid = (!id.is_empty()).then(|| id.to_owned());
    }
    if password.is_some() {
        client.password = password;
    }
    if let Some(t) = cmd.get("textname").and_then(Value::as_str) {
        client.textname = Some(t.to_owned());
    }
    if let Some(t) = cmd.get("textdescription").and_then(Value::as_str) {
        client.textdescription = Some(t.to_owned());
    }
    if let Some(roles) = roles {
        client.roles = roles;
    }
    if let Some(groups) = groups {
        leave_all_groups(ctx.d, username);
        for (groupname, priority) in groups {
            if let Some(g) = ctx.d.groups.get_mut(&groupname) {
                g.clients.push(Link {
                    name: username.to_owned(),
                    priority,
                });
            }
        }
    }
    Ok(None)
}

/// The `groups` of a modifyClient, when it has an array: every group must exist.
fn modify_groups(ctx: &Ctx<'_>) -> Result<Option<Vec<(String, i32)>>, &'static str> {
    let Some(groups) = ctx.cmd.get("groups").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for g in groups.iter().filter(|g| g.is_object()) {
        let Some(name) = string(g, "groupname") else {
            return Err("'groups' contains an object with an invalid 'groupname'");
        };
        if !ctx.d.groups.contains_key(&name) {
            return Err("'groups' contains an object with a 'groupname' that does not exist");
        }
        out.push((name, int(g, "priority", -1)));
    }
    Ok(Some(out))
}
