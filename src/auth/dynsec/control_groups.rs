//! The group commands of the control API (createGroup, deleteGroup, getGroup, listGroups,
//! modifyGroup, addGroupClient, removeGroupClient, addGroupRole, removeGroupRole,
//! setAnonymousGroup, getAnonymousGroup), with Mosquitto 2.0's checks and error strings.

use serde_json::{json, Map, Value};

use super::control::{optional, page, required, verbose, Ctx, Reply};
use super::file::{int, links_json, parse_role_links, put_texts, string};
use super::{insert_by_priority, DynSec, Group, Link};

const BAD_GROUPNAME: &str = "Invalid/missing groupname";
const NOT_FOUND: &str = "Group not found";

fn group_mut<'a>(d: &'a mut DynSec, name: &str) -> Result<&'a mut Group, &'static str> {
    d.groups.get_mut(name).ok_or(NOT_FOUND)
}

/// The `roles` of a command, when it has an array of them: every role must exist.
fn role_links(ctx: &Ctx<'_>) -> Result<Option<Vec<Link>>, &'static str> {
    let Some(roles) = ctx.cmd.get("roles").and_then(Value::as_array) else {
        return Ok(None);
    };
    let missing = roles
        .iter()
        .filter_map(|r| string(r, "rolename"))
        .any(|name| !ctx.d.roles.contains_key(&name));
    if missing {
        return Err("Role not found");
    }
    Ok(Some(parse_role_links(ctx.cmd, ctx.d, "the command")))
}

pub(crate) fn create(ctx: &mut Ctx<'_>) -> Reply {
    let cmd = ctx.cmd;
    let name = required(cmd, "groupname", BAD_GROUPNAME)?;
    let textname = optional(cmd, "textname", "Invalid/missing textname")?;
    let textdescription = optional(cmd, "textdescription", "Invalid/missing textdescription")?;
    if ctx.d.groups.contains_key(name) {
        return Err("Group already exists");
    }
    let roles = role_links(ctx)?.unwrap_or_default();
    let group = Group {
        name: name.to_owned(),
        textname: textname.map(str::to_owned),
        textdescription: textdescription.map(str::to_owned),
        roles,
        clients: Vec::new(),
    };
    ctx.d.groups.insert(name.to_owned(), group);
    Ok(None)
}

pub(crate) fn delete(ctx: &mut Ctx<'_>) -> Reply {
    let name = required(ctx.cmd, "groupname", BAD_GROUPNAME)?;
    if !ctx.d.groups.contains_key(name) {
        return Err(NOT_FOUND);
    }
    if ctx.d.anonymous_group.as_deref() == Some(name) {
        // Anonymous clients would silently lose their roles.
        return Err("Deleting the anonymous group is forbidden");
    }
    ctx.d.groups.remove(name);
    Ok(None)
}

/// A group as `getGroup` and a verbose `listGroups` show it.
fn group_json(g: &Group) -> Value {
    let mut o = Map::new();
    o.insert("groupname".into(), Value::String(g.name.clone()));
    put_texts(&mut o, &g.textname, &g.textdescription);
    let clients: Vec<Value> = g
        .clients
        .iter()
        .map(|c| json!({ "username": c.name }))
        .collect();
    o.insert("clients".into(), Value::Array(clients));
    o.insert("roles".into(), links_json(&g.roles, "rolename"));
    Value::Object(o)
}

pub(crate) fn get(ctx: &mut Ctx<'_>) -> Reply {
    let name = required(ctx.cmd, "groupname", BAD_GROUPNAME)?;
    let group = ctx.d.groups.get(name).ok_or(NOT_FOUND)?;
    Ok(Some(json!({ "group": group_json(group) })))
}

pub(crate) fn list(ctx: &mut Ctx<'_>) -> Reply {
    let d = &*ctx.d;
    let verbose = verbose(ctx.cmd);
    let groups = page(
        ctx.cmd,
        d.groups.values().map(|g| {
            if verbose {
                group_json(g)
            } else {
                Value::String(g.name.clone())
            }
        }),
    );
    Ok(Some(
        json!({ "totalCount": d.groups.len(), "groups": groups }),
    ))
}

pub(crate) fn modify(ctx: &mut Ctx<'_>) -> Reply {
    let cmd = ctx.cmd;
    let name = required(cmd, "groupname", BAD_GROUPNAME)?;
    if !ctx.d.groups.contains_key(name) {
        return Err(NOT_FOUND);
    }
    let roles = role_links(ctx)?;
    let clients = cmd.get("clients").and_then(Value::as_array).map(|list| {
        let mut members: Vec<Link> = Vec::new();
        for c in list {
            let Some(username) = string(c, "username") else {
                continue;
            };
            // Unknown usernames are skipped, as Mosquitto's add_client fails for them.
            if ctx.d.clients.contains_key(&username) && !members.iter().any(|m| m.name == username)
            {
                members.push(Link {
                    name: username,
                    priority: int(c, "priority", -1),
                });
            }
        }
        members
    });
    let group = group_mut(ctx.d, name)?;
    if let Some(t) = cmd.get("textname").and_then(Value::as_str) {
        group.textname = Some(t.to_owned());
    }
    if let Some(t) = cmd.get("textdescription").and_then(Value::as_str) {
        group.textdescription = Some(t.to_owned());
    }
    if let Some(roles) = roles {
        group.roles = roles;
    }
    if let Some(clients) = clients {
        group.clients = clients;
    }
    Ok(None)
}

/// `username` and `groupname` of the membership commands, both checked to exist.
fn membership<'a>(ctx: &Ctx<'a>) -> Result<(&'a str, &'a str), &'static str> {
    let username = required(ctx.cmd, "username", "Invalid/missing username")?;
    let groupname = required(ctx.cmd, "groupname", BAD_GROUPNAME)?;
    if !ctx.d.clients.contains_key(username) {
        return Err("Client not found");
    }
    if !ctx.d.groups.contains_key(groupname) {
        return Err(NOT_FOUND);
    }
    Ok((username, groupname))
}

pub(crate) fn add_client(ctx: &mut Ctx<'_>) -> Reply {
    let (username, groupname) = membership(ctx)?;
    let priority = int(ctx.cmd, "priority", -1);
    let group = group_mut(ctx.d, groupname)?;
    if group.clients.iter().any(|c| c.name == username) {
        return Err("Client is already in this group");
    }
    group.clients.push(Link {
        name: username.to_owned(),
        priority,
    });
    Ok(None)
}

pub(crate) fn remove_client(ctx: &mut Ctx<'_>) -> Reply {
    let (username, groupname) = membership(ctx)?;
    group_mut(ctx.d, groupname)?
        .clients
        .retain(|c| c.name != username);
    Ok(None)
}

/// `groupname` and `rolename` of the group role commands, both checked to exist.
fn group_role<'a>(ctx: &Ctx<'a>) -> Result<(&'a str, &'a str), &'static str> {
    let groupname = required(ctx.cmd, "groupname", BAD_GROUPNAME)?;
    let rolename = required(ctx.cmd, "rolename", "Invalid/missing rolename")?;
    if !ctx.d.groups.contains_key(groupname) {
        return Err(NOT_FOUND);
    }
    if !ctx.d.roles.contains_key(rolename) {
        return Err("Role not found");
    }
    Ok((groupname, rolename))
}

pub(crate) fn add_role(ctx: &mut Ctx<'_>) -> Reply {
    let (groupname, rolename) = group_role(ctx)?;
    let priority = int(ctx.cmd, "priority", -1);
    let group = group_mut(ctx.d, groupname)?;
    if group.roles.iter().any(|l| l.name == rolename) {
        return Err("Group is already in this role");
    }
    let link = Link {
        name: rolename.to_owned(),
        priority,
    };
    insert_by_priority(&mut group.roles, link, |l| l.priority);
    Ok(None)
}

pub(crate) fn remove_role(ctx: &mut Ctx<'_>) -> Reply {
    let (groupname, rolename) = group_role(ctx)?;
    group_mut(ctx.d, groupname)?
        .roles
        .retain(|l| l.name != rolename);
    Ok(None)
}

pub(crate) fn set_anonymous(ctx: &mut Ctx<'_>) -> Reply {
    let name = required(ctx.cmd, "groupname", BAD_GROUPNAME)?;
    if !ctx.d.groups.contains_key(name) {
        return Err(NOT_FOUND);
    }
    ctx.d.anonymous_group = Some(name.to_owned());
    Ok(None)
}

pub(crate) fn get_anonymous(ctx: &mut Ctx<'_>) -> Reply {
    let name = ctx.d.anonymous_group.as_deref().unwrap_or("");
    Ok(Some(json!({ "group": { "groupname": name } })))
}
