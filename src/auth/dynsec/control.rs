//! The `$CONTROL/dynamic-security/v1` API: one request payload in, the new state (when it
//! changed) and the response payload out ([`process`]). Pure: no I/O, no locks; the caller
//! persists the state and publishes the response on [`RESPONSE_TOPIC`].
//!
//! Request and response are Mosquitto 2.0's: `{"commands":[{"command":"createClient", ...,
//! "correlationData":"..."}]}` answered by `{"responses":[{"command":"createClient",
//! "error":"Client already exists","correlationData":"..."}]}` (no `error` on success; `data`
//! for the get and list commands). Command names are matched case-insensitively and every error
//! string is Mosquitto's. Each command is applied whole or not at all.

use serde_json::{json, Map, Value};

use super::DynSec;

/// Where requests are published (by `mosquitto_ctrl`).
pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";

/// Where the broker publishes the responses.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// Who sent a request, for the log lines (Mosquitto logs `dynsec: <id>/<username> | ...`).
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
}

/// What a request did.
#[derive(Debug)]
pub struct Outcome {
    /// The new state, when a command changed something.
    pub changed: Option<DynSec>,
    /// One entry of `responses` per command, and whether that command changed the state.
    responses: Vec<(Value, bool)>,
}

impl Outcome {
    /// The response payload: `{"responses": [...]}`.
    pub fn response(&self) -> Vec<u8> {
        let list: Vec<&Value> = self.responses.iter().map(|(r, _)| r).collect();
        json!({ "responses": list }).to_string().into_bytes()
    }

    /// The change could not be written to the file, so it is not applied: every command that
    /// changed something now answers "Internal error" (Mosquitto's word for it).
    pub fn persist_failed(&mut self) {
        self.changed = None;
        for (r, changed) in &mut self.responses {
            if let (Value::Object(o), true) = (r, *changed) {
                o.insert("error".into(), Value::String("Internal error".into()));
            }
        }
    }
}

/// What one command answered: `Ok(None)` success, `Ok(Some(data))` success with a `data`
/// object, `Err(error)` Mosquitto's error string.
pub(crate) type Reply = Result<Option<Value>, &'static str>;

/// The state and settings a command works on.
pub(crate) struct Ctx<'a> {
    /// A working copy: kept only when the command succeeds.
    pub d: &'a mut DynSec,
    /// The command object.
    pub cmd: &'a Value,
    /// PBKDF2 iterations for new password hashes.
    pub iterations: u32,
}

/// Applies every command of `payload` in order, as `admin`, hashing new passwords with
/// `iterations` PBKDF2 rounds (this costs milliseconds per password: run it off the reactor).
pub fn process(current: &DynSec, payload: &[u8], admin: Admin<'_>, iterations: u32) -> Outcome {
    let mut responses = Vec::new();
    let mut state = current.clone();
    let refusal = |why| (reply("Unknown command", Err(why), None), false);
    match serde_json::from_slice::<Value>(payload) {
        Err(_) => responses.push(refusal("Payload not valid JSON")),
        Ok(tree) => match tree.get("commands").and_then(Value::as_array) {
            None => responses.push(refusal("Invalid/missing commands")),
            Some(commands) => {
                for c in commands {
                    match one_command(&mut state, c, admin, iterations) {
                        Ok(r) => responses.push(r),
                        Err(r) => {
                            // A bad correlationData ends the request, as in Mosquitto.
                            responses.push((r, false));
                            break;
                        }
                    }
                }
            }
        },
    }
    let changed = (state != *current).then_some(state);
    Outcome { changed, responses }
}

/// One command, applied to `state` if it succeeds: its response and whether it changed the
/// state. `Err` only for an invalid correlationData, which stops the processing of the request.
fn one_command(
    state: &mut DynSec,
    c: &Value,
    admin: Admin<'_>,
    iterations: u32,
) -> Result<(Value, bool), Value> {
    if !c.is_object() {
        return Ok((
            reply("Unknown command", Err("Command not an object"), None),
            false,
        ));
    }
    let correlation = match c.get("correlationData") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            let name = c.get("command").and_then(Value::as_str).unwrap_or("");
            return Err(reply(name, Err("Invalid correlationData data type."), None));
        }
    };
    let Some(name) = c.get("command").and_then(Value::as_str) else {
        let r = reply("Unknown command", Err("Missing command"), correlation);
        return Ok((r, false));
    };
    let Some((canonical, handler)) = find_handler(name) else {
        return Ok((reply(name, Err("Unknown command"), correlation), false));
    };
    let mut work = state.clone();
    let result = handler(&mut Ctx {
        d: &mut work,
        cmd: c,
        iterations,
    });
    let mut changed = false;
    if result.is_ok() {
        work.reindex();
        if work != *state {
            log_change(admin, canonical, c);
            *state = work;
            changed = true;
        }
    }
    Ok((reply(canonical, result, correlation), changed))
}

/// Mosquitto's log line for a change; never a password.
fn log_change(admin: Admin<'_>, command: &str, c: &Value) {
    let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    tracing::info!(
        admin_client_id = admin.client_id,
        admin_username = admin.username.unwrap_or(""),
        command,
        username = field("username"),
        groupname = field("groupname"),
        rolename = field("rolename"),
        "dynamic security changed"
    );
}

type Handler = fn(&mut Ctx<'_>) -> Reply;

/// Every command Mosquitto 2.0 documents.
const HANDLERS: &[(&str, Handler)] = &[
    (
        "setDefaultACLAccess",
        super::control_roles::set_default_acl_access,
    ),
    (
        "getDefaultACLAccess",
        super::control_roles::get_default_acl_access,
    ),
    ("createClient", super::control_clients::create),
    ("deleteClient", super::control_clients::delete),
    ("getClient", super::control_clients::get),
    ("listClients", super::control_clients::list),
    ("modifyClient", super::control_clients::modify),
    ("setClientPassword", super::control_clients::set_password),
    ("setClientId", super::control_clients::set_id),
    ("addClientRole", super::control_clients::add_role),
    ("removeClientRole", super::control_clients::remove_role),
    ("enableClient", super::control_clients::enable),
    ("disableClient", super::control_clients::disable),
    ("addGroupClient", super::control_groups::add_client),
    ("createGroup", super::control_groups::create),
    ("deleteGroup", super::control_groups::delete),
    ("getGroup", super::control_groups::get),
    ("listGroups", super::control_groups::list),
    ("modifyGroup", super::control_groups::modify),
    ("removeGroupClient", super::control_groups::remove_client),
    ("addGroupRole", super::control_groups::add_role),
    ("removeGroupRole", super::control_groups::remove_role),
    ("setAnonymousGroup", super::control_groups::set_anonymous),
    ("getAnonymousGroup", super::control_groups::get_anonymous),
    ("createRole", super::control_roles::create),
    ("getRole", super::control_roles::get),
    ("listRoles", super::control_roles::list),
    ("modifyRole", super::control_roles::modify),
    ("deleteRole", super::control_roles::delete),
    ("addRoleACL", super::control_roles::add_acl),
    ("removeRoleACL", super::control_roles::remove_acl),
];

fn find_handler(name: &str) -> Option<(&'static str, Handler)> {
    HANDLERS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .copied()
}

/// One entry of `responses`.
fn reply(command: &str, result: Reply, correlation: Option<&str>) -> Value {
    let mut o = Map::new();
    o.insert("command".into(), Value::String(command.to_owned()));
    match result {
        Ok(Some(data)) => {
            o.insert("data".into(), data);
        }
        Ok(None) => {}
        Err(e) => {
            o.insert("error".into(), Value::String(e.to_owned()));
        }
    }
    if let Some(c) = correlation {
        o.insert("correlationData".into(), Value::String(c.to_owned()));
    }
    Value::Object(o)
}

/// A required string field (Mosquitto's `json_get_string(.., false)`): `Err(why)` when missing
/// or not a string.
pub(crate) fn required<'a>(
    cmd: &'a Value,
    key: &str,
    why: &'static str,
) -> Result<&'a str, &'static str> {
    cmd.get(key).and_then(Value::as_str).ok_or(why)
}

/// An optional string field (`json_get_string(.., true)`): absent is `Ok(None)`, present but not
/// a string is `Err(why)`.
pub(crate) fn optional<'a>(
    cmd: &'a Value,
    key: &str,
    why: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    match cmd.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(why),
    }
}

/// `verbose`, `count` and `offset` of the list commands, applied to `items`.
pub(crate) fn page<T>(cmd: &Value, items: impl Iterator<Item = T>) -> Vec<T> {
    let offset = super::file::int(cmd, "offset", 0).max(0) as usize;
    let count = super::file::int(cmd, "count", -1);
    let items = items.skip(offset);
    if count > 0 {
        items.take(count as usize).collect()
    } else if count == 0 {
        // Mosquitto's loop adds one item before it looks at the count.
        items.take(1).collect()
    } else {
        items.collect()
    }
}

/// Whether the list commands were asked for full objects.
pub(crate) fn verbose(cmd: &Value) -> bool {
    super::file::boolean(cmd, "verbose", false)
}
