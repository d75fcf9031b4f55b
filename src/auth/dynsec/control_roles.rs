//! The role and default-access commands of the control API (createRole, deleteRole, getRole,
//! listRoles, modifyRole, addRoleACL, removeRoleACL, setDefaultACLAccess,
//! getDefaultACLAccess), with Mosquitto 2.0's checks and error strings.
//!
//! Beyond Mosquitto 2.0, an ACL topic must be a valid MQTT topic filter ("Invalid ACL topic"):
//! an invalid one could never match anything and only hides a typo.

use serde_json::{json, Value};

use super::control::{optional, page, required, verbose, Ctx, Reply};
use super::file::{default_access_json, int, parse_acl, role_json};
use super::{insert_acl, Acl, AclType, DynSec, Role};
use crate::codec::topic::valid_topic_filter;

const BAD_ROLENAME: &str = "Invalid/missing rolename";
const NOT_FOUND: &str = "Role not found";

/// The `acls` of createRole/modifyRole, sorted by priority; None when there is no array.
fn acls(cmd: &Value) -> Result<Option<Vec<Acl>>, &'static str> {
    let Some(list) = cmd.get("acls").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut out: Vec<Acl> = Vec::new();
    for acl in list.iter().filter_map(parse_acl) {
        if !valid_topic_filter(&acl.topic) {
            return Err("Invalid ACL topic");
        }
        // Mosquitto keeps one ACL per type and topic.
        if !out
            .iter()
            .any(|a| a.acltype == acl.acltype && a.topic == acl.topic)
        {
            insert_acl(&mut out, acl);
        }
    }
    Ok(Some(out))
}

pub(crate) fn create(ctx: &mut Ctx<'_>) -> Reply {
    let cmd = ctx.cmd;
    let name = required(cmd, "rolename", BAD_ROLENAME)?;
    let textname = optional(cmd, "textname", "Invalid/missing textname")?;
    let textdescription = optional(cmd, "textdescription", "Invalid/missing textdescription")?;
    if ctx.d.roles.contains_key(name) {
        return Err("Role already exists");
    }
    let role = Role {
        name: name.to_owned(),
        textname: textname.map(str::to_owned),
        textdescription: textdescription.map(str::to_owned),
        acls: acls(cmd)?.unwrap_or_default(),
    };
    ctx.d.roles.insert(name.to_owned(), role);
    Ok(None)
}

pub(crate) fn delete(ctx: &mut Ctx<'_>) -> Reply {
    let name = required(ctx.cmd, "rolename", BAD_ROLENAME)?;
    if ctx.d.roles.remove(name).is_none() {
        return Err(NOT_FOUND);
    }
    // Clients and groups that had it lose it.
    let d: &mut DynSec = ctx.d;
    for c in d.clients.values_mut() {
        c.roles.retain(|l| l.name != name);
    }
    for g in d.groups.values_mut() {
        g.roles.retain(|l| l.name != name);
    }
    Ok(None)
}

pub(crate) fn get(ctx: &mut Ctx<'_>) -> Reply {
    let name = required(ctx.cmd, "rolename", BAD_ROLENAME)?;
    let role = ctx.d.roles.get(name).ok_or(NOT_FOUND)?;
    Ok(Some(json!({ "role": role_json(role) })))
}

pub(crate) fn list(ctx: &mut Ctx<'_>) -> Reply {
    let d = &*ctx.d;
    let verbose = verbose(ctx.cmd);
    let roles = page(
        ctx.cmd,
        d.roles.values().map(|r| {
            if verbose {
                role_json(r)
            } else {
                Value::String(r.name.clone())
            }
        }),
    );
    Ok(Some(json!({ "totalCount": d.roles.len(), "roles": roles })))
}

pub(crate) fn modify(ctx: &mut Ctx<'_>) -> Reply {
    let cmd = ctx.cmd;
    let name = required(cmd, "rolename", BAD_ROLENAME)?;
    let new_acls = acls(cmd)?;
    let role = ctx.d.roles.get_mut(name).ok_or("Role does not exist")?;
    if let Some(t) = cmd.get("textname").and_then(Value::as_str) {
        role.textname = Some(t.to_owned());
    }
    if let Some(t) = cmd.get("textdescription").and_then(Value::as_str) {
        role.textdescription = Some(t.to_owned());
    }
    if let Some(acls) = new_acls {
        role.acls = acls;
    }
    Ok(None)
}

/// The role, ACL type and topic of addRoleACL / removeRoleACL, checked in Mosquitto's order.
fn acl_target<'a>(ctx: &'a mut Ctx<'_>) -> Result<(&'a mut Role, AclType, String), &'static str> {
    let cmd = ctx.cmd;
    let name = required(cmd, "rolename", BAD_ROLENAME)?;
    let role = ctx.d.roles.get_mut(name).ok_or(NOT_FOUND)?;
    let acltype = required(cmd, "acltype", "Invalid/missing acltype")?;
    let acltype = AclType::parse(acltype).ok_or("Unknown acltype")?;
    let topic = required(cmd, "topic", "Invalid/missing topic")?;
    Ok((role, acltype, topic.to_owned()))
}

pub(crate) fn add_acl(ctx: &mut Ctx<'_>) -> Reply {
    let priority = int(ctx.cmd, "priority", 0);
    let allow = super::file::boolean(ctx.cmd, "allow", false);
    let (role, acltype, topic) = acl_target(ctx)?;
    if !valid_topic_filter(&topic) {
        return Err("Invalid ACL topic");
    }
    if role
        .acls
        .iter()
        .any(|a| a.acltype == acltype && a.topic == topic)
    {
        return Err("ACL with this topic already exists");
    }
    let acl = Acl {
        acltype,
        topic,
        priority,
        allow,
    };
    insert_acl(&mut role.acls, acl);
    Ok(None)
}

pub(crate) fn remove_acl(ctx: &mut Ctx<'_>) -> Reply {
    let (role, acltype, topic) = acl_target(ctx)?;
    let before = role.acls.len();
    role.acls
        .retain(|a| !(a.acltype == acltype && a.topic == topic));
    if role.acls.len() == before {
        return Err("ACL not found");
    }
    Ok(None)
}

pub(crate) fn set_default_acl_access(ctx: &mut Ctx<'_>) -> Reply {
    let list = ctx
        .cmd
        .get("acls")
        .and_then(Value::as_array)
        .ok_or("Missing/invalid actions array")?;
    let d = &mut ctx.d.default_access;
    for item in list {
        let (Some(acltype), Some(allow)) = (
            item.get("acltype").and_then(Value::as_str),
            item.get("allow").and_then(Value::as_bool),
        ) else {
            continue;
        };
        match acltype {
            "publishClientSend" => d.publish_client_send = allow,
            "publishClientReceive" => d.publish_client_receive = allow,
            "subscribe" => d.subscribe = allow,
            "unsubscribe" => d.unsubscribe = allow,
            _ => {}
        }
    }
    Ok(None)
}

pub(crate) fn get_default_acl_access(ctx: &mut Ctx<'_>) -> Reply {
    let d = default_access_json(&ctx.d.default_access);
    let acls: Vec<Value> = [
        "publishClientSend",
        "publishClientReceive",
        "subscribe",
        "unsubscribe",
    ]
    .iter()
    .map(|t| json!({ "acltype": t, "allow": d.get(*t).cloned().unwrap_or(Value::Bool(false)) }))
    .collect();
    Ok(Some(json!({ "acls": acls })))
}
