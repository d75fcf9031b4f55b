//! Unit tests of the dynsec model against Mosquitto 2.0's documented and coded behaviour.

use serde_json::{json, Value};

use super::acl::sub_acl_check;
use super::control::{process, Admin};
use super::*;

/// What `mosquitto_ctrl dynsec init FILE admin` (Mosquitto 2.0.11) wrote, password "adminpw".
const MOSQUITTO_INIT: &str = r##"{
	"clients":	[{
			"username":	"admin",
			"textName":	"Dynsec admin user",
			"password":	"HrrG52I2nqxqKOy+vgsrhJFzYngVrqNGLjg6iqMnQwmWx2KxeDdsnTA8LhIRiWZ6Z3KTyiD+x1OsAYOFwaNYUA==",
			"salt":	"zduKBiPoo0WrIgOk",
			"iterations":	101,
			"roles":	[{"rolename":	"admin"}]
		}],
	"roles":	[{
			"rolename":	"admin",
			"acls":	[
				{"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "allow": true},
				{"acltype": "publishClientReceive", "topic": "$CONTROL/dynamic-security/#", "allow": true},
				{"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "allow": true},
				{"acltype": "publishClientReceive", "topic": "$SYS/#", "allow": true},
				{"acltype": "subscribePattern", "topic": "$SYS/#", "allow": true},
				{"acltype": "publishClientReceive", "topic": "#", "allow": true},
				{"acltype": "subscribePattern", "topic": "#", "allow": true},
				{"acltype": "unsubscribePattern", "topic": "#", "allow": true}]
		}],
	"defaultACLAccess":	{
		"publishClientSend":	false,
		"publishClientReceive":	true,
		"subscribe":	false,
		"unsubscribe":	true
	}
}"##;

const ADMIN: Admin<'static> = Admin {
    client_id: "ctrl",
    username: Some("admin"),
};

/// Runs one request against `d`, keeps the change, returns the responses.
fn run(d: &mut DynSec, commands: Value) -> Vec<Value> {
    let payload = json!({ "commands": commands }).to_string();
    let out = process(d, payload.as_bytes(), ADMIN, 10);
    let v: Value = serde_json::from_slice(&out.response()).unwrap();
    if let Some(new) = out.changed {
        *d = new;
    }
    v["responses"].as_array().unwrap().clone()
}

/// Runs one command that must succeed; returns its response.
fn ok(d: &mut DynSec, cmd: Value) -> Value {
    let r = run(d, json!([cmd])).remove(0);
    assert!(r.get("error").is_none(), "{cmd} failed: {r}");
    r
}

fn error(d: &mut DynSec, cmd: Value) -> String {
    let r = run(d, json!([cmd])).remove(0);
    r["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn mosquitto_init_file_loads_and_its_admin_logs_in() {
    let d = DynSec::parse(MOSQUITTO_INIT.as_bytes()).unwrap();
    assert_eq!(d.counts(), (1, 0, 1));
    assert_eq!(
        d.check_login("any", "admin", Some(b"adminpw")),
        LoginVerdict::Allowed
    );
    assert_eq!(
        d.check_login("any", "admin", Some(b"wrong")),
        LoginVerdict::Refused
    );
    assert_eq!(
        d.check_login("any", "nobody", Some(b"adminpw")),
        LoginVerdict::Unknown
    );
    assert_eq!(d.check_login("any", "admin", None), LoginVerdict::Unknown);
    // The admin role: control topics yes, normal topics only to receive and subscribe.
    let admin = Some("admin");
    assert_eq!(
        d.check(admin, "$CONTROL/dynamic-security/v1", Action::Send),
        Some(true)
    );
    assert_eq!(d.check(admin, "a/b", Action::Send), None);
    assert_eq!(d.check(admin, "a/b", Action::Receive), Some(true));
    assert_eq!(d.check(admin, "$SYS/#", Action::Subscribe), Some(true));
    assert_eq!(
        d.clients["admin"].textname.as_deref(),
        Some("Dynsec admin user")
    );
}

#[test]
fn save_then_parse_gives_the_same_state() {
    let mut d = DynSec::parse(MOSQUITTO_INIT.as_bytes()).unwrap();
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "r", "acls": [
        {"acltype": "subscribeLiteral", "topic": "x/+", "priority": 3, "allow": false}]}),
    );
    ok(
        &mut d,
        json!({"command": "createGroup", "groupname": "g", "textname": "G"}),
    );
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u", "password": "p",
        "clientid": "cid", "roles": [{"rolename": "r", "priority": 5}],
        "groups": [{"groupname": "g", "priority": 2}]}),
    );
    ok(
        &mut d,
        json!({"command": "setAnonymousGroup", "groupname": "g"}),
    );
    ok(&mut d, json!({"command": "disableClient", "username": "u"}));
    let text = serde_json::to_vec(&d.to_json()).unwrap();
    assert_eq!(DynSec::parse(&text).unwrap(), d);
}

#[test]
fn client_roles_come_before_group_roles_whatever_the_priorities() {
    let mut d = DynSec::default();
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "deny", "acls": [
        {"acltype": "publishClientSend", "topic": "t/#", "allow": false}]}),
    );
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "allow", "acls": [
        {"acltype": "publishClientSend", "topic": "t/#", "priority": 100, "allow": true}]}),
    );
    ok(
        &mut d,
        json!({"command": "createGroup", "groupname": "g",
        "roles": [{"rolename": "allow", "priority": 100}]}),
    );
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u",
        "roles": [{"rolename": "deny", "priority": -5}],
        "groups": [{"groupname": "g", "priority": 100}]}),
    );
    assert_eq!(d.check(Some("u"), "t/1", Action::Send), Some(false));
    ok(
        &mut d,
        json!({"command": "removeClientRole", "username": "u", "rolename": "deny"}),
    );
    assert_eq!(d.check(Some("u"), "t/1", Action::Send), Some(true));
}

#[test]
fn higher_priority_roles_and_acls_decide_first() {
    let mut d = DynSec::default();
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "a", "acls": [
        {"acltype": "publishClientSend", "topic": "t/#", "priority": 1, "allow": true},
        {"acltype": "publishClientSend", "topic": "t/secret", "priority": 2, "allow": false}]}),
    );
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "b", "acls": [
        {"acltype": "publishClientSend", "topic": "x", "allow": true}]}),
    );
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "c", "acls": [
        {"acltype": "publishClientSend", "topic": "x", "allow": false}]}),
    );
    ok(&mut d, json!({"command": "createClient", "username": "u"}));
    // Within a role the higher-priority ACL wins even though it was listed second.
    ok(
        &mut d,
        json!({"command": "addClientRole", "username": "u", "rolename": "a"}),
    );
    assert_eq!(d.check(Some("u"), "t/secret", Action::Send), Some(false));
    assert_eq!(d.check(Some("u"), "t/other", Action::Send), Some(true));
    // Between roles, the higher priority wins whatever the order they were added in.
    ok(
        &mut d,
        json!({"command": "addClientRole", "username": "u", "rolename": "b", "priority": 1}),
    );
    ok(
        &mut d,
        json!({"command": "addClientRole", "username": "u", "rolename": "c", "priority": 7}),
    );
    assert_eq!(d.check(Some("u"), "x", Action::Send), Some(false));
    ok(
        &mut d,
        json!({"command": "removeClientRole", "username": "u", "rolename": "c"}),
    );
    assert_eq!(d.check(Some("u"), "x", Action::Send), Some(true));
}

#[test]
fn group_priorities_order_the_groups() {
    let mut d = DynSec::default();
    for (role, allow) in [("yes", true), ("no", false)] {
        ok(
            &mut d,
            json!({"command": "createRole", "rolename": role, "acls": [
            {"acltype": "publishClientReceive", "topic": "#", "allow": allow}]}),
        );
        ok(
            &mut d,
            json!({"command": "createGroup", "groupname": role,
            "roles": [{"rolename": role}]}),
        );
    }
    ok(&mut d, json!({"command": "createClient", "username": "u"}));
    ok(
        &mut d,
        json!({"command": "addGroupClient", "groupname": "yes", "username": "u", "priority": 1}),
    );
    ok(
        &mut d,
        json!({"command": "addGroupClient", "groupname": "no", "username": "u", "priority": 2}),
    );
    assert_eq!(d.check(Some("u"), "a", Action::Receive), Some(false));
    ok(
        &mut d,
        json!({"command": "removeGroupClient", "groupname": "no", "username": "u"}),
    );
    assert_eq!(d.check(Some("u"), "a", Action::Receive), Some(true));
}

#[test]
fn literal_subscribe_acls_are_exact_and_looked_at_before_patterns() {
    let mut d = DynSec::default();
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "r", "acls": [
        {"acltype": "subscribePattern", "topic": "a/#", "priority": 10, "allow": true},
        {"acltype": "subscribeLiteral", "topic": "a/+", "priority": 0, "allow": false}]}),
    );
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u", "roles": [{"rolename": "r"}]}),
    );
    let sub = |d: &DynSec, f| d.check(Some("u"), f, Action::Subscribe);
    assert_eq!(
        sub(&d, "a/+"),
        Some(false),
        "the literal wins over a higher pattern"
    );
    assert_eq!(sub(&d, "a/b"), Some(true));
    assert_eq!(sub(&d, "a/#"), Some(true));
    assert_eq!(
        sub(&d, "#"),
        None,
        "a/# does not cover #; default subscribe is deny"
    );
    // unsubscribe has its own ACLs and default (allow).
    assert_eq!(d.check(Some("u"), "a/+", Action::Unsubscribe), Some(true));
}

#[test]
fn defaults_apply_when_nothing_matches_but_never_to_control_topics() {
    let mut d = DynSec::default();
    ok(&mut d, json!({"command": "createClient", "username": "u"}));
    assert_eq!(d.check(Some("u"), "a", Action::Send), None);
    assert_eq!(d.check(Some("u"), "a", Action::Receive), Some(true));
    assert_eq!(d.check(Some("u"), "a", Action::Subscribe), None);
    assert_eq!(d.check(Some("u"), "a", Action::Unsubscribe), Some(true));
    ok(
        &mut d,
        json!({"command": "setDefaultACLAccess", "acls": [
        {"acltype": "publishClientSend", "allow": true},
        {"acltype": "publishClientReceive", "allow": false}]}),
    );
    assert_eq!(d.check(Some("u"), "a", Action::Send), Some(true));
    assert_eq!(d.check(Some("u"), "a", Action::Receive), None);
    assert_eq!(
        d.check(Some("u"), "$CONTROL/dynamic-security/v1", Action::Send),
        None
    );
    // A username dynsec does not know gets no answer at all.
    assert_eq!(d.check(Some("stranger"), "a", Action::Send), None);
    let r = ok(&mut d, json!({"command": "getDefaultACLAccess"}));
    assert_eq!(
        r["data"]["acls"][0],
        json!({"acltype": "publishClientSend", "allow": true})
    );
}

#[test]
fn anonymous_clients_use_the_anonymous_group() {
    let mut d = DynSec::default();
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "r", "acls": [
        {"acltype": "publishClientSend", "topic": "pub/#", "allow": true}]}),
    );
    ok(
        &mut d,
        json!({"command": "createGroup", "groupname": "anon", "roles": [{"rolename": "r"}]}),
    );
    assert_eq!(d.check(None, "pub/x", Action::Send), None);
    ok(
        &mut d,
        json!({"command": "setAnonymousGroup", "groupname": "anon"}),
    );
    assert_eq!(d.check(None, "pub/x", Action::Send), Some(true));
    let r = ok(&mut d, json!({"command": "getAnonymousGroup"}));
    assert_eq!(r["data"], json!({"group": {"groupname": "anon"}}));
    assert_eq!(
        error(
            &mut d,
            json!({"command": "deleteGroup", "groupname": "anon"})
        ),
        "Deleting the anonymous group is forbidden"
    );
}

/// Mosquitto's own test table for `sub_acl_check` (plugins/dynamic-security/sub_matches_sub.c).
#[test]
fn sub_acl_check_matches_mosquitto() {
    let cases = [
        ("foo/+/bar", "foo/#", false),
        ("foo/+/ba℞/#", "foo/baz/ba℞", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/+", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/#", true),
        ("foo/+/ba℞/#", "foo/baz/+/#", false),
        ("/+//#", "/foo///#", true),
        ("#", "#", true),
        ("#", "+", true),
        ("/#", "+", false),
        ("/#", "/+", true),
        ("/+", "#", false),
        ("/+", "+", false),
        ("+/+", "topic/topic", true),
        ("+/+", "topic/topic/", false),
        ("+", "#", false),
        ("+", "+", true),
        ("a/b/c/d/e", "a/b/c/d/e", true),
        ("a/b/ /d/e", "a/b/c/d/e", false),
    ];
    for (acl, sub, want) in cases {
        assert_eq!(sub_acl_check(acl, sub), want, "acl {acl} sub {sub}");
    }
}

#[test]
fn login_honours_disabled_and_client_id() {
    let mut d = DynSec::default();
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u", "password": "pw", "clientid": "dev1"}),
    );
    assert_eq!(
        d.check_login("dev1", "u", Some(b"pw")),
        LoginVerdict::Allowed
    );
    assert_eq!(
        d.check_login("dev2", "u", Some(b"pw")),
        LoginVerdict::Refused
    );
    ok(&mut d, json!({"command": "setClientId", "username": "u"}));
    assert_eq!(
        d.check_login("dev2", "u", Some(b"pw")),
        LoginVerdict::Allowed
    );
    ok(&mut d, json!({"command": "disableClient", "username": "u"}));
    assert_eq!(
        d.check_login("dev2", "u", Some(b"pw")),
        LoginVerdict::Refused
    );
    ok(&mut d, json!({"command": "enableClient", "username": "u"}));
    ok(
        &mut d,
        json!({"command": "setClientPassword", "username": "u", "password": "new"}),
    );
    assert_eq!(d.check_login("x", "u", Some(b"pw")), LoginVerdict::Refused);
    assert_eq!(d.check_login("x", "u", Some(b"new")), LoginVerdict::Allowed);
    // A client created without a password is left to the other checks.
    ok(
        &mut d,
        json!({"command": "createClient", "username": "nopw"}),
    );
    assert_eq!(
        d.check_login("x", "nopw", Some(b"a")),
        LoginVerdict::Unknown
    );
}

#[test]
fn same_identity_notices_what_changes_a_clients_rights() {
    let mut d = DynSec::default();
    ok(&mut d, json!({"command": "createRole", "rolename": "r"}));
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u", "password": "p", "roles": [{"rolename": "r"}]}),
    );
    ok(
        &mut d,
        json!({"command": "createClient", "username": "other", "password": "p"}),
    );
    let before = d.clone();
    ok(
        &mut d,
        json!({"command": "addRoleACL", "rolename": "r", "acltype": "publishClientSend", "topic": "t", "allow": true}),
    );
    assert!(
        !before.same_identity(&d, Some("u")),
        "an ACL of its role changed"
    );
    assert!(
        before.same_identity(&d, Some("other")),
        "nothing of other's changed"
    );
    let before = d.clone();
    ok(
        &mut d,
        json!({"command": "setClientPassword", "username": "other", "password": "q"}),
    );
    assert!(!before.same_identity(&d, Some("other")));
    assert!(before.same_identity(&d, Some("u")));
}

#[test]
fn control_responses_have_mosquittos_shapes_and_errors() {
    let mut d = DynSec::default();
    let r = run(
        &mut d,
        json!([
            {"command": "createClient", "username": "u", "correlationData": "c1"},
            {"command": "createclient", "username": "u"},
            {"command": "nope"},
            {"command": "getClient", "username": "u"},
            {"command": "listClients"},
            {"command": "addRoleACL", "rolename": "missing", "acltype": "x", "topic": "t"},
        ]),
    );
    assert_eq!(
        r[0],
        json!({"command": "createClient", "correlationData": "c1"})
    );
    assert_eq!(
        r[1],
        json!({"command": "createClient", "error": "Client already exists"})
    );
    assert_eq!(r[2], json!({"command": "nope", "error": "Unknown command"}));
    assert_eq!(
        r[3]["data"]["client"],
        json!({"username": "u", "roles": [], "groups": []})
    );
    assert_eq!(r[4]["data"], json!({"totalCount": 1, "clients": ["u"]}));
    assert_eq!(r[5]["error"], "Role not found");
    let out = process(&d, b"{not json", ADMIN, 10);
    assert!(out.changed.is_none());
    let v: Value = serde_json::from_slice(&out.response()).unwrap();
    assert_eq!(
        v,
        json!({"responses": [{"command": "Unknown command", "error": "Payload not valid JSON"}]})
    );
}

#[test]
fn a_failing_command_changes_nothing() {
    let mut d = DynSec::default();
    let before = d.clone();
    assert_eq!(
        error(
            &mut d,
            json!({"command": "createClient", "username": "u",
            "groups": [{"groupname": "missing"}]})
        ),
        "Group not found"
    );
    assert_eq!(d, before, "the client must not be half-created");
    ok(&mut d, json!({"command": "createRole", "rolename": "r"}));
    ok(
        &mut d,
        json!({"command": "addRoleACL", "rolename": "r", "acltype": "subscribePattern", "topic": "a/#"}),
    );
    assert_eq!(
        error(
            &mut d,
            json!({"command": "addRoleACL", "rolename": "r", "acltype": "subscribepattern", "topic": "a/#"})
        ),
        "ACL with this topic already exists"
    );
    assert_eq!(
        error(
            &mut d,
            json!({"command": "addRoleACL", "rolename": "r", "acltype": "other", "topic": "a"})
        ),
        "Unknown acltype"
    );
    assert_eq!(
        error(
            &mut d,
            json!({"command": "removeRoleACL", "rolename": "r", "acltype": "subscribePattern", "topic": "b"})
        ),
        "ACL not found"
    );
    assert_eq!(
        error(
            &mut d,
            json!({"command": "setClientPassword", "username": "u", "password": ""})
        ),
        "Empty password is not allowed"
    );
}

#[test]
fn deleting_a_role_or_client_removes_every_reference() {
    let mut d = DynSec::default();
    ok(&mut d, json!({"command": "createRole", "rolename": "r"}));
    ok(
        &mut d,
        json!({"command": "createGroup", "groupname": "g", "roles": [{"rolename": "r"}]}),
    );
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u", "roles": [{"rolename": "r"}],
        "groups": [{"groupname": "g"}]}),
    );
    ok(&mut d, json!({"command": "deleteRole", "rolename": "r"}));
    assert!(d.clients["u"].roles.is_empty() && d.groups["g"].roles.is_empty());
    ok(&mut d, json!({"command": "deleteClient", "username": "u"}));
    assert!(d.groups["g"].clients.is_empty());
    assert!(d.groups_of("u").is_empty());
}

#[test]
fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
    let dir = std::env::temp_dir().join(format!("starling-dynsec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dynamic-security.json");
    std::fs::write(&path, b"old").unwrap();
    let d = DynSec::parse(MOSQUITTO_INIT.as_bytes()).unwrap();
    d.save(&path).unwrap();
    assert_eq!(DynSec::load(&path).unwrap(), d);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_files_are_refused_and_bad_entries_skipped() {
    assert!(DynSec::parse(b"[]").is_err());
    assert!(DynSec::parse(b"{\"clients\": 3}").is_err());
    let d = DynSec::parse(
        br#"{"clients": [{"username": ""}, {"username": "x", "password": "AAAA", "salt": "AAAA", "iterations": 5},
             {"username": "ok", "roles": [{"rolename": "missing"}]}],
            "groups": [{"groupname": "g", "clients": [{"username": "ghost"}]}]}"#,
    )
    .unwrap();
    assert_eq!(d.clients.keys().collect::<Vec<_>>(), ["ok"]);
    assert!(d.clients["ok"].roles.is_empty());
    assert!(d.groups["g"].clients.is_empty());
}

/// The precedence `AuthConfig` applies: dynsec first for the usernames it knows, then the
/// password and ACL files; no answer from any of them means refused.
#[test]
fn auth_config_consults_dynsec_then_the_files() {
    use crate::auth::{Access, AclFile, AuthConfig, AuthDecision, PasswordFile};
    let mut d = DynSec::default();
    ok(
        &mut d,
        json!({"command": "createRole", "rolename": "r", "acls": [
        {"acltype": "publishClientSend", "topic": "a/#", "allow": true}]}),
    );
    ok(
        &mut d,
        json!({"command": "createClient", "username": "u", "password": "p",
        "roles": [{"rolename": "r"}]}),
    );
    let bob = crate::auth::password::hash_password(b"bobpw", 10).unwrap();
    let mut auth = AuthConfig {
        passwords: Some(std::sync::Arc::new(PasswordFile::parse(&format!(
            "bob:{bob}\n"
        )))),
        acl: Some(std::sync::Arc::new(
            AclFile::parse("user bob\ntopic b/#\n").unwrap(),
        )),
        allow_anonymous: false,
        dynsec: Some(std::sync::Arc::new(d)),
    };
    assert_eq!(
        auth.check_connect("c", Some("u"), Some(b"p")),
        AuthDecision::Allow
    );
    assert_eq!(
        auth.check_connect("c", Some("u"), Some(b"x")),
        AuthDecision::BadCredentials
    );
    assert_eq!(
        auth.check_connect("c", Some("bob"), Some(b"bobpw")),
        AuthDecision::Allow
    );
    assert_eq!(
        auth.check_connect("c", Some("u"), Some(b"")),
        AuthDecision::EmptyPassword
    );
    assert_eq!(
        auth.check_connect("c", None, None),
        AuthDecision::NotAuthorized
    );
    assert!(auth.check_acl("c", Some("u"), "a/x", Access::Write));
    assert!(
        !auth.check_acl("c", Some("u"), "b/x", Access::Write),
        "the ACL file has no rule for u"
    );
    assert!(
        auth.check_acl("c", Some("bob"), "b/x", Access::Write),
        "dynsec does not know bob"
    );
    assert!(!auth.check_acl("c", Some("u"), "$SYS/x", Access::Write));
    assert!(auth.check_unsubscribe(Some("u"), "a/#"));
    // Without the files, a username dynsec does not know is refused and gets nothing.
    auth.passwords = None;
    auth.acl = None;
    assert_eq!(
        auth.check_connect("c", Some("bob"), Some(b"bobpw")),
        AuthDecision::BadCredentials
    );
    assert!(!auth.check_acl("c", Some("bob"), "b/x", Access::Write));
    assert_eq!(
        auth.check_subscribe("c", Some("u"), "a/#"),
        crate::auth::SubscribeVerdict::Denied,
        "subscribe defaults to deny"
    );
}

#[test]
fn a_change_that_cannot_be_saved_answers_internal_error() {
    let d = DynSec::default();
    let payload = json!({"commands": [
        {"command": "listClients"},
        {"command": "createRole", "rolename": "r"}]})
    .to_string();
    let mut out = process(&d, payload.as_bytes(), ADMIN, 10);
    assert!(out.changed.is_some());
    out.persist_failed();
    assert!(out.changed.is_none());
    let v: Value = serde_json::from_slice(&out.response()).unwrap();
    assert!(v["responses"][0].get("error").is_none());
    assert_eq!(v["responses"][1]["error"], "Internal error");
}
