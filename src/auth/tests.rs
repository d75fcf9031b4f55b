//! Tests of the [`super::AuthConfig`] facade: loading from `[auth]`, the CONNECT matrix and the
//! ACL pass-through.

use std::path::PathBuf;

use super::*;

/// `mosquitto_passwd -c -b f alice 's3cret:with colon'` (Mosquitto 2.0.11).
const ALICE: &str = "alice:$7$101$HCtCbRFe7t3O+ehn$EU9zhUmXciA+DpGk7HOssBqxAugV1XWiZ+9c8dLqqwNp\
                     Wue/A4hvdw6KBx8IvpxL9y0fJ4IOQ6gCAvI/Ahf4nw==\n";
const ALICE_PW: &[u8] = b"s3cret:with colon";

fn with_file(allow_anonymous: bool) -> AuthConfig {
    AuthConfig {
        passwords: Some(Arc::new(PasswordFile::parse(ALICE))),
        acl: None,
        allow_anonymous,
        dynsec: None,
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-auth-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn login_with_password_file() {
    use AuthDecision::*;
    for anon in [false, true] {
        let a = with_file(anon);
        assert_eq!(a.check_login(Some("alice"), Some(ALICE_PW)), Allow);
        assert_eq!(a.check_login(Some("alice"), Some(b"wrong")), BadCredentials);
        assert_eq!(a.check_login(Some("alice"), None), BadCredentials);
        // A zero-length password is refused before the file is consulted, for any user.
        assert_eq!(a.check_login(Some("alice"), Some(b"")), EmptyPassword);
        assert_eq!(a.check_login(Some("alice"), Some(b"\0x")), EmptyPassword);
        assert_eq!(a.check_login(Some("mallory"), Some(b"")), EmptyPassword);
        assert_eq!(
            a.check_login(Some("mallory"), Some(ALICE_PW)),
            BadCredentials
        );
        assert_eq!(a.check_login(Some("mallory"), None), BadCredentials);
        let anonymous = if anon { Allow } else { NotAuthorized };
        assert_eq!(a.check_login(None, None), anonymous);
        // A v5 client may send a password without a username: it is still anonymous.
        assert_eq!(a.check_login(None, Some(ALICE_PW)), anonymous);
    }
}

#[test]
fn login_without_password_file() {
    use AuthDecision::*;
    let open = AuthConfig::default();
    assert_eq!(open.check_login(None, None), Allow);
    assert_eq!(open.check_login(Some("anyone"), Some(b"x")), Allow);
    assert_eq!(open.check_login(Some("anyone"), None), Allow);
    let closed = AuthConfig {
        allow_anonymous: false,
        ..AuthConfig::default()
    };
    assert_eq!(closed.check_login(None, None), NotAuthorized);
    assert_eq!(
        closed.check_login(Some("anyone"), Some(b"x")),
        NotAuthorized
    );
}

#[test]
fn decision_codes_follow_mosquitto() {
    assert!(AuthDecision::Allow.is_allowed());
    assert_eq!(AuthDecision::Allow.v3_return_code(), 0);
    assert_eq!(AuthDecision::Allow.v5_reason_code(), 0);
    for d in [AuthDecision::BadCredentials, AuthDecision::NotAuthorized] {
        assert!(!d.is_allowed());
        assert_eq!(d.v3_return_code(), 5);
        assert_eq!(d.v5_reason_code(), 0x87);
    }
    // Issue 13 item 3: 3.x return code 5, v5 0x86 Bad User Name or Password.
    assert!(!AuthDecision::EmptyPassword.is_allowed());
    assert_eq!(AuthDecision::EmptyPassword.v3_return_code(), 5);
    assert_eq!(AuthDecision::EmptyPassword.v5_reason_code(), 0x86);
}

#[test]
fn acl_pass_through_and_dollar_rules() {
    let open = AuthConfig::default();
    assert!(open.check_acl("c", None, "any/topic", Access::Write));
    assert!(open.check_acl("c", None, "$SYS/broker/uptime", Access::Read));
    assert!(!open.check_acl("c", None, "$SYS/broker/uptime", Access::Write));
    assert!(!open.check_acl("c", None, "$share/g/t", Access::Write));
    assert_eq!(
        open.check_subscribe("c", None, "#"),
        SubscribeVerdict::Granted
    );
    let with_acl = AuthConfig {
        acl: Some(Arc::new(AclFile::parse("topic read a/#\n").unwrap())),
        ..AuthConfig::default()
    };
    assert!(with_acl.check_acl("c", None, "a/b", Access::Read));
    assert!(!with_acl.check_acl("c", None, "a/b", Access::Write));
    assert!(!with_acl.check_acl("c", None, "b", Access::Read));
    assert_eq!(
        with_acl.check_subscribe("c", None, "b/#"),
        SubscribeVerdict::Denied
    );
    assert_eq!(
        with_acl.check_subscribe("c", None, "#"),
        SubscribeVerdict::Granted
    );
}

#[test]
fn load_resolves_files_and_anonymous_default() {
    let dir = scratch("load");
    let pw = dir.join("passwd");
    let acl = dir.join("acl");
    std::fs::write(&pw, ALICE).unwrap();
    std::fs::write(&acl, "user alice\ntopic alice/#\n").unwrap();

    // Nothing configured: anonymous only when every listener is loopback.
    let none = AuthSection::default();
    assert!(AuthConfig::load(&none, true).unwrap().allow_anonymous);
    assert!(!AuthConfig::load(&none, false).unwrap().allow_anonymous);

    // A password file turns the default off even on loopback.
    let section = AuthSection {
        password_file: Some(pw.clone()),
        acl_file: Some(acl.clone()),
        ..AuthSection::default()
    };
    let a = AuthConfig::load(&section, true).unwrap();
    assert!(!a.allow_anonymous);
    assert_eq!(
        a.check_login(Some("alice"), Some(ALICE_PW)),
        AuthDecision::Allow
    );
    assert!(a.check_acl("c", Some("alice"), "alice/x", Access::Write));
    assert!(!a.check_acl("c", Some("bob"), "alice/x", Access::Read));

    // An explicit value always wins.
    let explicit = AuthSection {
        allow_anonymous: Some(true),
        ..section.clone()
    };
    assert!(AuthConfig::load(&explicit, false).unwrap().allow_anonymous);
    let explicit = AuthSection {
        allow_anonymous: Some(false),
        ..AuthSection::default()
    };
    assert!(!AuthConfig::load(&explicit, true).unwrap().allow_anonymous);

    // Errors name the key and the path; ACL errors the line too.
    let missing = AuthSection {
        password_file: Some(dir.join("nope")),
        ..AuthSection::default()
    };
    let e = AuthConfig::load(&missing, true).unwrap_err().to_string();
    assert!(
        e.contains("auth.password_file") && e.contains("nope"),
        "{e}"
    );
    std::fs::write(&acl, "topic a\nbogus\n").unwrap();
    let e = AuthConfig::load(&section, true).unwrap_err().to_string();
    assert!(e.contains("auth.acl_file") && e.contains("line 2"), "{e}");
    let missing = AuthSection {
        acl_file: Some(dir.join("nope")),
        ..AuthSection::default()
    };
    let e = AuthConfig::load(&missing, true).unwrap_err().to_string();
    assert!(e.contains("auth.acl_file") && e.contains("nope"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_output_hides_secrets() {
    let a = with_file(false);
    let dbg = format!("{a:?}");
    assert!(!dbg.contains("HCtCbRFe"), "{dbg}");
    assert!(!dbg.contains("EU9zhUmX"), "{dbg}");
}
