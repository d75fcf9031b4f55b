//! Authentication and authorisation end to end: the password file and the ACL file with
//! Mosquitto 2.0 semantics (brief `mosquitto-compat.md` §3.1 and §3.2), Starling's
//! subscribe-time denial, the re-check of subscriptions when the files are reloaded, and the
//! session owner check (`auth.session_owner_check`).
//!
//! Password files are written with `starling::auth::password::hash_password` at 10 iterations
//! so that debug builds stay fast. Every negative check ("X is not delivered") is followed by a
//! marker message the client may read, sent after the denied one by the same publisher, so the
//! test synchronises on an event instead of sleeping.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use starling::codec::{
    self, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use starling::config::Config;
use starling::reload::{ChangeStatus, ReloadReport};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "starling-auth-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A Mosquitto password file (`user:$7$10$salt$hash` lines).
fn write_passwords(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    for (user, pw) in users {
        let hash = starling::auth::password::hash_password(pw.as_bytes(), 10).expect("hash");
        text.push_str(&format!("{user}:{hash}\n"));
    }
    write_file(path, &text);
}

/// Changes one user's entry in a password file, leaving the other lines as they are (as
/// `mosquitto_passwd -b` does): a rewritten entry, even for the same password, has a new salt,
/// and a reload disconnects that user's clients.
fn set_password(path: &Path, user: &str, pw: &str) {
    let text = std::fs::read_to_string(path).expect("read the password file");
    let hash = starling::auth::password::hash_password(pw.as_bytes(), 10).expect("hash");
    let prefix = format!("{user}:");
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{user}:{hash}")
            } else {
                l.to_string()
            }
        })
        .collect();
    write_file(path, &(lines.join("\n") + "\n"));
}

/// A 3.1.1 clean-session CONNECT with optional credentials.
fn creds(id: &str, username: Option<&str>, password: Option<&[u8]>) -> ConnectOpts {
    let mut o = ConnectOpts::v311(id);
    o.username = username.map(str::to_owned);
    o.password = password.map(<[u8]>::to_vec);
    o
}

/// Connects as `username` (no password) and asserts acceptance.
async fn connect_as(addr: std::net::SocketAddr, id: &str, username: Option<&str>) -> Raw {
    Raw::connect(addr, &creds(id, username, None)).await.0
}

/// CONNECT (3.1/3.1.1) and the CONNACK return code; on refusal also asserts that the broker
/// then closes the connection.
async fn v3_login(addr: std::net::SocketAddr, opts: &ConnectOpts) -> u8 {
    let (mut raw, ack) = Raw::connect_raw(addr, opts).await;
    if ack.code.0 != 0 {
        assert!(
            raw.closed_within(CLOSE_WAIT).await.is_ok(),
            "connection still open after CONNACK {}",
            ack.code.0
        );
    }
    ack.code.0
}

fn v5_bytes(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(p, ProtocolVersion::V5, &mut b);
    b.to_vec()
}

/// An MQTT 5 CONNECT (no properties, keep alive 0); returns the client and its CONNACK.
async fn v5_connect(
    addr: std::net::SocketAddr,
    id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
    clean_start: bool,
) -> (Raw, ConnAck) {
    let c = Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive: 0,
        client_id: id.to_owned(),
        will: None,
        username: username.map(str::to_owned),
        password: password.map(Bytes::copy_from_slice),
        properties: Properties::default(),
        bridge: false,
    };
    let mut raw = Raw::open(addr).await;
    raw.version = ProtocolVersion::V5;
    raw.send(&v5_bytes(&Packet::Connect(Box::new(c)))).await;
    match raw.recv().await {
        Packet::ConnAck(a) => (raw, a),
        other => panic!("expected CONNACK for {id:?}, got {other:?}"),
    }
}

/// v5 CONNACK reason code; on refusal also asserts the close.
async fn v5_login(
    addr: std::net::SocketAddr,
    id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> u8 {
    let (mut raw, ack) = v5_connect(addr, id, username, password, true).await;
    if ack.code.0 >= 0x80 {
        assert!(
            raw.closed_within(CLOSE_WAIT).await.is_ok(),
            "v5 connection still open after CONNACK 0x{:02x}",
            ack.code.0
        );
    }
    ack.code.0
}

/// SUBSCRIBE with several filters at QoS 1 (3.x wire format); returns the SUBACK codes.
async fn subscribe_v3(raw: &mut Raw, pid: u16, filters: &[&str]) -> Vec<u8> {
    let f: Vec<(&str, u8)> = filters.iter().map(|f| (*f, 1)).collect();
    raw.send(&subscribe_packet(pid, &f)).await;
    suback_codes(raw, pid).await
}

/// SUBSCRIBE with several filters at QoS 1 (v5); returns the SUBACK reason codes.
async fn subscribe_v5(raw: &mut Raw, pid: u16, filters: &[&str]) -> Vec<u8> {
    let s = Subscribe {
        packet_id: pid,
        filters: filters
            .iter()
            .map(|f| (f.to_string(), SubscriptionOptions::new(QoS::AtLeastOnce)))
            .collect(),
        properties: Default::default(),
    };
    raw.send(&v5_bytes(&Packet::Subscribe(s))).await;
    suback_codes(raw, pid).await
}

async fn suback_codes(raw: &mut Raw, pid: u16) -> Vec<u8> {
    match raw.recv().await {
        Packet::SubAck(s) => {
            assert_eq!(s.packet_id, pid, "SUBACK packet id");
            s.reasons.iter().map(|r| r.0).collect()
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// v5 PUBLISH at QoS 1 or 2; returns the reason code of the PUBACK / PUBREC.
async fn publish_v5(raw: &mut Raw, topic: &str, qos: QoS, pid: u16) -> u8 {
    let p = Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned().into(),
        packet_id: pid,
        properties: Default::default(),
        payload: Bytes::from_static(b"v5"),
    };
    raw.send(&v5_bytes(&Packet::Publish(p))).await;
    let ack = raw
        .recv_ack("PUBACK/PUBREC", |p| match p {
            Packet::PubAck(a) | Packet::PubRec(a) => a.packet_id == pid,
            _ => false,
        })
        .await;
    match (qos, ack) {
        (QoS::AtLeastOnce, Packet::PubAck(a)) | (QoS::ExactlyOnce, Packet::PubRec(a)) => a.reason.0,
        (q, other) => panic!("wrong acknowledgement for a QoS {q:?} PUBLISH: {other:?}"),
    }
}

/// Receives (and acknowledges) publishes until one on `marker`; returns the topics before it.
async fn topics_until(raw: &mut Raw, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let p = raw.recv_and_ack().await;
        if &*p.topic == marker {
            return seen;
        }
        seen.push(p.topic.to_string());
    }
}

/// Publishes each topic at QoS 1 (waiting for its PUBACK, so every delivery is queued before the
/// next one), then the marker.
async fn publish_all(publisher: &mut Raw, topics: &[&str], marker: &str) {
    let mut pid = 100;
    for t in topics.iter().chain([&marker]) {
        pid += 1;
        publisher.publish(t, t.as_bytes(), 1, false, pid).await;
    }
}

/// What the reload report says about re-reading the auth files.
fn auth_change(report: &ReloadReport) -> &ChangeStatus {
    let c = report
        .files
        .iter()
        .find(|c| c.what.contains("acl_file") && c.what.contains("password_file"))
        .unwrap_or_else(|| panic!("no auth files entry in the reload report {report:?}"));
    &c.status
}

/// The status of the changed setting `key` in the reload report.
fn change_status<'a>(report: &'a ReloadReport, key: &str) -> &'a ChangeStatus {
    &report
        .changes
        .iter()
        .find(|c| c.key == key)
        .unwrap_or_else(|| panic!("no change of {key} in the reload report {report:?}"))
        .status
}

// ---------------------------------------------------------------------------------------------
// 1. Login (§3.1 "Auth decision")
// ---------------------------------------------------------------------------------------------

/// §3.1: with a password file a username must be in it with the right password; every refusal
/// is "not authorized" (3.1.1 CONNACK 5, v5 0x87, never 0x86): wrong password, unknown user,
/// username without password. The password is compared up to its first NUL (C string).
#[tokio::test]
async fn login_password_file() {
    let dir = TempDir::new("login");
    let pw = dir.path("passwd");
    write_passwords(&pw, &[("alice", "alice-pw"), ("bob", "bob pw:with colon")]);
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw);
    let b = start_with(cfg).await;
    let a = b.addr;

    // Correct passwords.
    assert_eq!(
        v3_login(a, &creds("l1", Some("alice"), Some(b"alice-pw"))).await,
        0
    );
    assert_eq!(
        v3_login(a, &creds("l2", Some("bob"), Some(b"bob pw:with colon"))).await,
        0
    );
    assert_eq!(
        v5_login(a, "l3", Some("alice"), Some(b"alice-pw")).await,
        0x00
    );
    // MQTT 3.1 too.
    let mut o31 = ConnectOpts::v31("l4");
    o31.username = Some("alice".into());
    o31.password = Some(b"alice-pw".to_vec());
    assert_eq!(v3_login(a, &o31).await, 0);
    // Verification stops at the first NUL, as Mosquitto's strlen does.
    assert_eq!(
        v3_login(a, &creds("l5", Some("alice"), Some(b"alice-pw\0junk"))).await,
        0,
        "§3.1: the password is treated as a C string"
    );

    // Wrong password.
    assert_eq!(
        v3_login(a, &creds("l6", Some("alice"), Some(b"alice-PW"))).await,
        5
    );
    assert_eq!(v5_login(a, "l7", Some("alice"), Some(b"wrong")).await, 0x87);
    // Another user's password.
    assert_eq!(
        v3_login(a, &creds("l8", Some("alice"), Some(b"bob pw:with colon"))).await,
        5
    );
    // Unknown user.
    assert_eq!(
        v3_login(a, &creds("l9", Some("mallory"), Some(b"alice-pw"))).await,
        5
    );
    assert_eq!(v5_login(a, "l10", Some("mallory"), Some(b"x")).await, 0x87);
    // Username without password.
    assert_eq!(v3_login(a, &creds("l11", Some("alice"), None)).await, 5);
    assert_eq!(v5_login(a, "l12", Some("alice"), None).await, 0x87);
    // Empty password.
    assert_eq!(
        v3_login(a, &creds("l13", Some("alice"), Some(b""))).await,
        5
    );
    // §3.1 default: a password file is configured, so allow_anonymous defaults to false.
    assert_eq!(v3_login(a, &creds("l14", None, None)).await, 5);
    assert_eq!(v5_login(a, "l15", None, None).await, 0x87);

    assert_eq!(
        b.state().metrics().refused_connections.get(),
        10,
        "refused_connections counts the ten refusals"
    );
}

/// §3.1: a client without username is accepted only with `allow_anonymous`; the setting does
/// not relax the check of clients that do send a username.
#[tokio::test]
async fn login_allow_anonymous_explicit() {
    let dir = TempDir::new("anon");
    let pw = dir.path("passwd");
    write_passwords(&pw, &[("alice", "alice-pw")]);

    // Some(false) with a password file.
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw.clone());
    cfg.auth.allow_anonymous = Some(false);
    let b = start_with(cfg).await;
    assert_eq!(v3_login(b.addr, &creds("n1", None, None)).await, 5);
    assert_eq!(v5_login(b.addr, "n2", None, None).await, 0x87);
    assert_eq!(
        v3_login(b.addr, &creds("n3", Some("alice"), Some(b"alice-pw"))).await,
        0
    );
    drop(b);

    // Some(true) with a password file: anonymous accepted, bad credentials still refused.
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw);
    cfg.auth.allow_anonymous = Some(true);
    let b = start_with(cfg).await;
    assert_eq!(v3_login(b.addr, &creds("y1", None, None)).await, 0);
    assert_eq!(v5_login(b.addr, "y2", None, None).await, 0x00);
    assert_eq!(
        v3_login(b.addr, &creds("y3", Some("alice"), Some(b"nope"))).await,
        5,
        "allow_anonymous does not excuse a wrong password"
    );
    assert_eq!(
        v3_login(b.addr, &creds("y4", Some("mallory"), Some(b"x"))).await,
        5
    );
    drop(b);

    // Some(false) without a password file: every client is refused, usernames included.
    let mut cfg = test_config();
    cfg.auth.allow_anonymous = Some(false);
    let b = start_with(cfg).await;
    assert_eq!(v3_login(b.addr, &creds("z1", None, None)).await, 5);
    assert_eq!(
        v3_login(b.addr, &creds("z2", Some("alice"), Some(b"alice-pw"))).await,
        5
    );
    assert_eq!(v5_login(b.addr, "z3", Some("x"), Some(b"y")).await, 0x87);
}

/// Default `allow_anonymous` (None): true when there is no password file and every listener is
/// on loopback (Mosquitto 2.0's local-only mode; the test config binds 127.0.0.1:0), and then
/// any username/password is accepted since nothing checks it.
#[tokio::test]
async fn login_default_local_only_mode() {
    let cfg = test_config();
    assert_eq!(cfg.auth.allow_anonymous, None);
    assert!(cfg.auth.password_file.is_none());
    let b = start_with(cfg).await;
    assert_eq!(v3_login(b.addr, &creds("d1", None, None)).await, 0);
    assert_eq!(v5_login(b.addr, "d2", None, None).await, 0x00);
    assert_eq!(
        v3_login(b.addr, &creds("d3", Some("anyone"), Some(b"anything"))).await,
        0
    );
    assert_eq!(
        v3_login(b.addr, &creds("d4", Some("anyone"), None)).await,
        0
    );
}

// ---------------------------------------------------------------------------------------------
// 2. ACL matrix (§3.2)
// ---------------------------------------------------------------------------------------------

/// The ACL used by the matrix tests. No password file: usernames are taken as given
/// (allow_anonymous defaults to true on loopback), which is all the ACL needs.
const MATRIX_ACL: &str = "\
# Lines before the first `user` line apply to anonymous clients.
topic read public/#

user admin
topic write #
topic write $app/#

user alice
topic read #
topic readwrite alice/#
# A deny listed after a broader grant still wins within the list.
topic deny secret/#

user bob
topic write sensors/#

user carol
topic read #

user dave
topic readwrite $SYS/#
topic read $app/#

# Patterns apply to every client, whatever `user` line precedes them.
pattern readwrite clients/%c/#
pattern deny clients/%c/private
pattern read users/%u/#
";

async fn matrix_broker(dir: &TempDir) -> TestBroker {
    let acl = dir.path("acl");
    write_file(&acl, MATRIX_ACL);
    let mut cfg = test_config();
    cfg.auth.acl_file = Some(acl);
    start_with(cfg).await
}

/// §3.2: `topic` lines before the first `user` apply to anonymous clients; `pattern %c` applies
/// to them; a `%u` pattern is skipped for a client without username (it would otherwise match
/// the literal topic `users/%u/...`); user rules do not apply to anonymous clients. Anonymous
/// clients may only write what the patterns allow.
#[tokio::test]
async fn acl_anonymous_rules_and_patterns() {
    let dir = TempDir::new("acl-anon");
    let b = matrix_broker(&dir).await;
    let mut anon = connect_as(b.addr, "anon-1", None).await;
    assert_eq!(anon.subscribe(1, "#", 1).await, 1, "# is partly readable");
    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;
    publish_all(
        &mut admin,
        &[
            "public/a",
            "alice/a",
            "clients/anon-1/a",
            "clients/anon-1/private",
            "clients/other/a",
            "users/%u/a",
            "secret/a",
        ],
        "public/marker",
    )
    .await;
    assert_eq!(
        topics_until(&mut anon, "public/marker").await,
        ["public/a", "clients/anon-1/a"],
        "anonymous client: anonymous list + %c pattern only (no %u pattern, no pattern deny)"
    );

    // WRITE: `public/#` is read-only for anonymous clients; `clients/anon-1/#` is readwrite.
    let mut carol = connect_as(b.addr, "carol-1", Some("carol")).await;
    assert_eq!(carol.subscribe(1, "#", 1).await, 1);
    anon.publish("public/w", b"x", 1, false, 7).await;
    anon.publish("clients/anon-1/w", b"x", 1, false, 8).await;
    admin.publish("public/end", b"x", 1, false, 9).await;
    assert_eq!(
        topics_until(&mut carol, "public/end").await,
        ["clients/anon-1/w"]
    );
}

/// §3.2: a user's `topic` lines grant to that username; `deny` wins within the list whatever
/// its position; READ is checked per message for a subscriber to `#`.
#[tokio::test]
async fn acl_user_rules_and_deny_precedence() {
    let dir = TempDir::new("acl-user");
    let b = matrix_broker(&dir).await;
    let mut alice = connect_as(b.addr, "alice-1", Some("alice")).await;
    assert_eq!(alice.subscribe(1, "#", 1).await, 1);
    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;
    publish_all(
        &mut admin,
        &[
            "alice/a",
            "secret/a",
            "secret/deep/b",
            "secret",
            "public/a",
            "other/a",
        ],
        "other/marker",
    )
    .await;
    assert_eq!(
        topics_until(&mut alice, "other/marker").await,
        ["alice/a", "public/a", "other/a"],
        "`topic deny secret/#` after `topic read #` must still deny secret/a, secret/deep/b \
         and secret (`#` includes the parent level)"
    );
}

/// §3.2: patterns with `%c` and `%u` for a user without read rules of its own, including a
/// pattern deny listed after the grant; a user's `write` line does not grant read; anonymous
/// rules do not apply to users.
#[tokio::test]
async fn acl_patterns_for_a_user() {
    let dir = TempDir::new("acl-pattern");
    let b = matrix_broker(&dir).await;
    let mut bob = connect_as(b.addr, "bob-dev", Some("bob")).await;
    assert_eq!(bob.subscribe(1, "#", 1).await, 1);
    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;
    publish_all(
        &mut admin,
        &[
            "clients/bob-dev/a",
            "clients/bob-dev/private",
            "clients/alice-1/a",
            "users/bob/a",
            "users/alice/a",
            "users/bob-dev/a",
            "clients/bob/a",
            "sensors/t",
            "public/a",
            "alice/a",
        ],
        "users/bob/marker",
    )
    .await;
    assert_eq!(
        topics_until(&mut bob, "users/bob/marker").await,
        ["clients/bob-dev/a", "users/bob/a"],
        "%c is the client id and %u the username; the pattern deny wins"
    );
}

/// §3.2 WRITE: a denied publish is dropped. A 3.1.1 client still gets its PUBACK (it cannot be
/// told); a v5 client gets PUBACK / PUBREC 0x87 Not authorized.
#[tokio::test]
async fn acl_write_denied() {
    let dir = TempDir::new("acl-write");
    let b = matrix_broker(&dir).await;
    let mut carol = connect_as(b.addr, "carol-1", Some("carol")).await;
    assert_eq!(carol.subscribe(1, "#", 1).await, 1);
    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;

    // 3.1.1: alice may write alice/#, not other/# (read only) nor sensors/#.
    let mut alice = connect_as(b.addr, "alice-1", Some("alice")).await;
    alice.publish("other/w", b"x", 1, false, 1).await; // PUBACK awaited by the helper
    assert_eq!(
        &alice.last_frame[..],
        &[0x40, 0x02, 0x00, 0x01],
        "v3 PUBACK for the denied publish"
    );
    alice.publish("sensors/w", b"x", 1, false, 2).await;
    alice.publish("alice/w", b"x", 1, false, 3).await;
    alice.publish("other/w0", b"x", 0, false, 0).await;
    // Bob: write-only sensors/#, and the readwrite %c pattern.
    let mut bob = connect_as(b.addr, "bob-dev", Some("bob")).await;
    bob.publish("sensors/t", b"x", 1, false, 1).await;
    bob.publish("alice/b", b"x", 1, false, 2).await;
    bob.publish("clients/bob-dev/w", b"x", 1, false, 3).await;
    bob.publish("clients/bob-dev/private", b"x", 1, false, 4)
        .await;
    bob.publish("users/bob/w", b"x", 1, false, 5).await; // %u pattern is read-only
    bob.publish("sensors/t", b"x", 2, false, 6).await; // QoS 2 granted
    bob.publish("alice/b2", b"x", 2, false, 7).await; // QoS 2 denied: normal PUBREC/PUBCOMP
    admin.publish("m/1", b"x", 1, false, 1).await;
    assert_eq!(
        topics_until(&mut carol, "m/1").await,
        ["alice/w", "sensors/t", "clients/bob-dev/w", "sensors/t"],
        "only the permitted publishes reach a subscriber that may read everything"
    );

    // v5: the PUBACK tells.
    let (mut alice5, ack) = v5_connect(b.addr, "alice-5", Some("alice"), None, true).await;
    assert_eq!(ack.code.0, 0);
    assert_eq!(
        publish_v5(&mut alice5, "other/v5", QoS::AtLeastOnce, 1).await,
        0x87,
        "v5 QoS 1 PUBLISH denied by the ACL: PUBACK 0x87"
    );
    assert_eq!(
        publish_v5(&mut alice5, "other/v5q2", QoS::ExactlyOnce, 2).await,
        0x87,
        "v5 QoS 2 PUBLISH denied by the ACL: PUBREC 0x87"
    );
    let ok = publish_v5(&mut alice5, "alice/v5", QoS::AtLeastOnce, 3).await;
    assert!(
        ok < 0x80,
        "permitted v5 publish acknowledged with 0x{ok:02x}"
    );
    // The packet id of the refused QoS 2 publish is free again.
    assert_eq!(
        publish_v5(&mut alice5, "other/v5q2", QoS::ExactlyOnce, 2).await,
        0x87
    );
    admin.publish("m/2", b"x", 1, false, 2).await;
    assert_eq!(topics_until(&mut carol, "m/2").await, ["alice/v5"]);
}

/// §3.2 / §2: an ACL topic must itself start with `$` to match a `$` topic, so `topic read #`
/// does not grant `$app/...` or `$SYS/...`; `topic read $app/#` does. Checked per message (an
/// MQTT 3.1 subscriber, whose subscriptions are not refused) and for retained `$SYS` messages
/// sent on subscribe. For 3.1.1 the subscription is refused outright (0x80).
#[tokio::test]
async fn acl_hash_does_not_grant_dollar_topics() {
    let dir = TempDir::new("acl-dollar");
    let acl = dir.path("acl");
    write_file(&acl, MATRIX_ACL);
    let mut cfg = test_config();
    cfg.auth.acl_file = Some(acl);
    // The $SYS publisher runs, so `$SYS/broker/version` is retained at start.
    cfg.sys.interval = Duration::from_secs(3600);
    let b = start_with(cfg).await;
    b.wait_until("the $SYS tree is retained", |s| s.retained_count() > 0)
        .await;

    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;
    let mut o = ConnectOpts::v31("carol-31");
    o.username = Some("carol".into());
    let (mut carol31, _) = Raw::connect(b.addr, &o).await;
    assert_eq!(
        subscribe_v3(&mut carol31, 1, &["$app/#", "$SYS/#", "m/#"]).await,
        [1, 1, 1],
        "MQTT 3.1 has no SUBACK failure code: the filters are granted"
    );
    let mut carol = connect_as(b.addr, "carol-1", Some("carol")).await;
    assert_eq!(
        subscribe_v3(&mut carol, 1, &["$app/#", "$SYS/#", "#"]).await,
        [0x80, 0x80, 1],
        "3.1.1: `topic read #` makes nothing under `$app/#` or `$SYS/#` readable"
    );
    let mut dave = connect_as(b.addr, "dave-1", Some("dave")).await;
    assert_eq!(
        subscribe_v3(&mut dave, 1, &["$app/#", "$SYS/#"]).await,
        [1, 1]
    );

    admin.publish("$app/x", b"x", 1, false, 1).await;
    admin.publish("m/marker", b"x", 1, false, 2).await;
    assert_eq!(
        topics_until(&mut carol31, "m/marker").await,
        Vec::<String>::new(),
        "`topic read #` grants neither $app/x nor the retained $SYS tree"
    );
    assert_eq!(
        topics_until(&mut carol, "m/marker").await,
        Vec::<String>::new()
    );
    // Dave: the retained $SYS messages (sent on subscribe) and $app/x.
    let mut dave_topics = Vec::new();
    loop {
        let p = dave.recv_and_ack().await;
        if &*p.topic == "$app/x" {
            break;
        }
        dave_topics.push(p.topic.to_string());
    }
    assert!(
        dave_topics.iter().any(|t| t == "$SYS/broker/version"),
        "`topic read $SYS/#` grants the retained $SYS/broker/version: got {dave_topics:?}"
    );
}

/// §2 / `dollar_check`: clients never publish into `$SYS`, even with `topic readwrite $SYS/#`:
/// the message is dropped (3.1.1 PUBACK as usual, v5 PUBACK 0x87).
#[tokio::test]
async fn acl_sys_publish_always_dropped() {
    let dir = TempDir::new("acl-sys");
    let b = matrix_broker(&dir).await;
    let mut dave = connect_as(b.addr, "dave-1", Some("dave")).await;
    assert_eq!(
        subscribe_v3(&mut dave, 1, &["$SYS/#", "$app/#"]).await,
        [1, 1]
    );
    let mut dave_pub = connect_as(b.addr, "dave-2", Some("dave")).await;
    dave_pub.publish("$SYS/broker/x", b"x", 1, false, 1).await;
    dave_pub.publish("$SYS/broker/y", b"x", 0, false, 0).await;
    dave_pub.publish("$SYS", b"x", 1, false, 2).await;
    let (mut dave5, ack) = v5_connect(b.addr, "dave-5", Some("dave"), None, true).await;
    assert_eq!(ack.code.0, 0);
    assert_eq!(
        publish_v5(&mut dave5, "$SYS/broker/x", QoS::AtLeastOnce, 1).await,
        0x87,
        "v5 PUBLISH into $SYS: PUBACK 0x87"
    );
    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;
    admin.publish("$app/marker", b"x", 1, false, 1).await;
    let got = topics_until(&mut dave, "$app/marker").await;
    assert!(
        got.is_empty(),
        "client publishes into $SYS must be dropped, got {got:?}"
    );

    // Also without any ACL file.
    let b = start().await;
    let mut sub = connect_as(b.addr, "s", None).await;
    assert_eq!(subscribe_v3(&mut sub, 1, &["$SYS/#", "m"]).await, [1, 1]);
    let mut p = connect_as(b.addr, "p", None).await;
    p.publish("$SYS/broker/x", b"x", 1, false, 1).await;
    p.publish("m", b"x", 1, false, 2).await;
    assert!(topics_until(&mut sub, "m").await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. Subscribe-time denial (beyond Mosquitto)
// ---------------------------------------------------------------------------------------------

const SUBSCRIBE_ACL: &str = "\
user alice
topic readwrite alice/#
topic read shared/#
topic deny shared/secret/#

user admin
topic write #

pattern read clients/%c/#
";

/// Starling refuses a filter under which provably nothing is readable (3.1.1 SUBACK 0x80, v5
/// 0x87) and grants a partly readable one, READ then being checked per message. MQTT 3.1 has
/// no failure code: its subscriptions are granted and READ still filters every message.
#[tokio::test]
async fn subscribe_time_denial() {
    let dir = TempDir::new("sub");
    let acl = dir.path("acl");
    write_file(&acl, SUBSCRIBE_ACL);
    let mut cfg = test_config();
    cfg.auth.acl_file = Some(acl);
    let b = start_with(cfg).await;

    let filters = [
        "bob/#",            // nothing readable
        "alice/#",          // readable
        "#",                // partly readable
        "+/x",              // partly readable (alice/x)
        "clients/al-311/#", // %c pattern (the 3.1.1 client's id)
        "clients/other/#",  // someone else's
        "shared/secret/#",  // covered by a deny
        "shared/+/#",       // partly readable
        "$share/g/bob/#",   // judged by its filter
        "$share/g/alice/#", // readable
        "$SYS/#",           // `#`-style grants never reach `$` topics
    ];
    let mut v3 = connect_as(b.addr, "al-311", Some("alice")).await;
    assert_eq!(
        subscribe_v3(&mut v3, 1, &filters).await,
        [0x80, 1, 1, 1, 1, 0x80, 0x80, 1, 0x80, 1, 0x80],
        "3.1.1 SUBACK codes for {filters:?}"
    );

    let (mut v5, ack) = v5_connect(b.addr, "al-5", Some("alice"), None, true).await;
    assert_eq!(ack.code.0, 0);
    let mut filters5 = filters;
    filters5[4] = "clients/al-5/#";
    assert_eq!(
        subscribe_v5(&mut v5, 1, &filters5).await,
        [0x87, 1, 1, 1, 1, 0x87, 0x87, 1, 0x87, 1, 0x87],
        "v5 SUBACK reason codes for {filters5:?}"
    );
    drop(v5);

    // Per-message READ under the granted `#`.
    let mut sub = connect_as(b.addr, "al-hash", Some("alice")).await;
    assert_eq!(sub.subscribe(1, "#", 1).await, 1);
    let mut o = ConnectOpts::v31("al-31");
    o.username = Some("alice".into());
    let (mut v31, _) = Raw::connect(b.addr, &o).await;
    assert_eq!(
        subscribe_v3(&mut v31, 1, &["bob/#", "shared/secret/#", "alice/#"]).await,
        [1, 1, 1],
        "MQTT 3.1: denied filters are granted (no failure code in 3.1)"
    );
    let mut admin = connect_as(b.addr, "admin-1", Some("admin")).await;
    publish_all(
        &mut admin,
        &[
            "bob/x",
            "shared/secret/x",
            "shared/open/x",
            "clients/al-hash/x",
            "clients/al-31/x",
        ],
        "alice/marker",
    )
    .await;
    assert_eq!(
        topics_until(&mut sub, "alice/marker").await,
        ["shared/open/x", "clients/al-hash/x"],
        "a granted `#` delivers only readable topics"
    );
    assert_eq!(
        topics_until(&mut v31, "alice/marker").await,
        Vec::<String>::new(),
        "MQTT 3.1 subscriber to bob/# and shared/secret/# receives nothing unreadable"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Reload
// ---------------------------------------------------------------------------------------------

/// §3.2 "ACLs are reloaded on SIGHUP and existing subscriptions are re-evaluated": a reload
/// re-reads both files (same config), drops subscriptions the new ACL refuses outright and
/// applies the new rules to READ, WRITE and logins; a bad file on reload is reported Failed
/// and the previous rules stay in force.
#[tokio::test]
async fn reload_rechecks_subscriptions_and_keeps_old_rules_on_error() {
    let dir = TempDir::new("reload");
    let pw = dir.path("passwd");
    let acl = dir.path("acl");
    write_passwords(&pw, &[("alice", "pw1"), ("admin", "adm")]);
    let acl_v1 = "user alice\ntopic readwrite alice/#\nuser admin\ntopic write #\n";
    write_file(&acl, acl_v1);
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw.clone());
    cfg.auth.acl_file = Some(acl.clone());
    let b = start_with(cfg.clone()).await;

    let (mut alice, _) = Raw::connect(b.addr, &creds("alice-1", Some("alice"), Some(b"pw1"))).await;
    assert_eq!(alice.subscribe(1, "alice/#", 1).await, 1);
    let (mut admin, _) = Raw::connect(b.addr, &creds("admin-1", Some("admin"), Some(b"adm"))).await;
    publish_all(&mut admin, &["alice/1"], "alice/2").await;
    assert_eq!(topics_until(&mut alice, "alice/2").await, ["alice/1"]);
    let subs_before = b.state().subscription_count();

    // New rules: alice loses alice/#, gains other/#.
    write_file(
        &acl,
        "user alice\ntopic readwrite other/#\nuser admin\ntopic write #\n",
    );
    let report = b.handle().reload(&cfg);
    assert_eq!(
        auth_change(&report),
        &ChangeStatus::Applied,
        "report: {report:?}"
    );
    assert!(
        report.changes.is_empty(),
        "same config: no setting changed, only the files were re-read: {report:?}"
    );
    assert_eq!(
        b.state().subscription_count(),
        subs_before - 1,
        "the reload dropped alice's alice/# subscription"
    );
    assert_eq!(alice.subscribe(2, "other/#", 1).await, 1);
    assert_eq!(alice.subscribe(3, "alice/#", 1).await, 0x80);
    admin.publish("alice/3", b"x", 1, false, 1).await;
    admin.publish("other/m1", b"x", 1, false, 2).await;
    assert_eq!(
        topics_until(&mut alice, "other/m1").await,
        Vec::<String>::new(),
        "after the reload alice receives nothing on alice/#"
    );
    // WRITE follows the new rules on the existing connection (watched by another alice
    // connection subscribed to `#`).
    let (mut watcher, _) =
        Raw::connect(b.addr, &creds("alice-w", Some("alice"), Some(b"pw1"))).await;
    assert_eq!(watcher.subscribe(1, "#", 1).await, 1);
    alice.publish("alice/w", b"x", 1, false, 4).await;
    alice.publish("other/w", b"x", 1, false, 5).await;
    admin.publish("other/end", b"x", 1, false, 3).await;
    assert_eq!(topics_until(&mut watcher, "other/end").await, ["other/w"]);
    drop(watcher);
    // Alice is subscribed to other/# herself.
    assert_eq!(topics_until(&mut alice, "other/end").await, ["other/w"]);
    // Restoring alice/# does not resurrect the dropped subscription: it was removed, not just
    // filtered.
    write_file(
        &acl,
        "user alice\ntopic readwrite other/#\ntopic readwrite alice/#\nuser admin\ntopic write #\n",
    );
    let report = b.handle().reload(&cfg);
    assert_eq!(auth_change(&report), &ChangeStatus::Applied);
    admin.publish("alice/4", b"x", 1, false, 4).await;
    admin.publish("other/m2", b"x", 1, false, 5).await;
    assert_eq!(
        topics_until(&mut alice, "other/m2").await,
        Vec::<String>::new(),
        "the alice/# subscription was dropped at the previous reload"
    );
    assert_eq!(alice.subscribe(4, "alice/#", 1).await, 1);

    // Her password changes (admin's entry is left as it was): her live connection is closed,
    // since its credentials went away (see tests/acl_live.rs), and logins follow the new
    // password file.
    set_password(&pw, "alice", "pw2");
    let report = b.handle().reload(&cfg);
    assert_eq!(auth_change(&report), &ChangeStatus::Applied);
    alice.expect_closed("alice's password changed").await;
    assert_eq!(
        v3_login(b.addr, &creds("alice-2", Some("alice"), Some(b"pw1"))).await,
        5,
        "old password refused after reload"
    );
    assert_eq!(
        v3_login(b.addr, &creds("alice-3", Some("alice"), Some(b"pw2"))).await,
        0,
        "new password accepted after reload"
    );
    let (mut alice, _) = Raw::connect(b.addr, &creds("alice-1", Some("alice"), Some(b"pw2"))).await;
    assert_eq!(alice.subscribe(1, "alice/#", 1).await, 1);
    assert_eq!(alice.subscribe(2, "other/#", 1).await, 1);

    // A bad ACL file: Failed, and the previous rules (and password file) stay.
    write_file(&acl, "user alice\ntopic readwrite #\nbogus line\n");
    set_password(&pw, "alice", "pw3");
    let report = b.handle().reload(&cfg);
    match auth_change(&report) {
        ChangeStatus::Failed(why) => assert!(
            why.contains("line 3"),
            "the failure names the bad line: {why}"
        ),
        other => panic!("a bad ACL file must be reported Failed, got {other:?}"),
    }
    admin.publish("alice/5", b"x", 1, false, 6).await;
    admin.publish("bob/5", b"x", 1, false, 7).await;
    admin.publish("other/m3", b"x", 1, false, 8).await;
    assert_eq!(
        topics_until(&mut alice, "other/m3").await,
        ["alice/5"],
        "the previous ACL still applies"
    );
    assert_eq!(
        alice.subscribe(5, "bob/#", 1).await,
        0x80,
        "the rejected file's `topic readwrite #` is not in force"
    );
    assert_eq!(
        v3_login(b.addr, &creds("alice-4", Some("alice"), Some(b"pw2"))).await,
        0,
        "the password file is not swapped when the ACL file fails"
    );
    assert_eq!(
        v3_login(b.addr, &creds("alice-5", Some("alice"), Some(b"pw3"))).await,
        5
    );

    // A missing password file is a failure too.
    std::fs::remove_file(&pw).unwrap();
    write_file(&acl, acl_v1);
    let report = b.handle().reload(&cfg);
    assert!(
        matches!(auth_change(&report), ChangeStatus::Failed(_)),
        "missing password file: {report:?}"
    );
    assert_eq!(
        v3_login(b.addr, &creds("alice-6", Some("alice"), Some(b"pw2"))).await,
        0
    );
}

/// SIGHUP takes the *new* configuration's `[auth]` paths and `allow_anonymous`, not just the
/// old files' new contents: a changed `acl_file` path, an added `password_file` and an
/// explicit `allow_anonymous` are applied and reported as such; a path that does not load is
/// reported Failed and everything stays as it was; a reload of what is already running reports
/// no changes.
#[tokio::test]
async fn reload_takes_new_auth_paths_and_allow_anonymous() {
    let dir = TempDir::new("reload-paths");
    let (acl1, acl2, pw) = (dir.path("acl1"), dir.path("acl2"), dir.path("passwd"));
    write_file(&acl1, "topic readwrite one/#\n");
    write_file(
        &acl2,
        "topic readwrite two/#\nuser alice\ntopic readwrite alice/#\n",
    );
    write_passwords(&pw, &[("alice", "apw")]);
    let mut cfg = test_config();
    cfg.auth.acl_file = Some(acl1.clone());
    let b = start_with(cfg.clone()).await;

    let mut anon = connect_as(b.addr, "anon-1", None).await;
    assert_eq!(
        subscribe_v3(&mut anon, 1, &["one/#", "two/#"]).await,
        [1, 0x80]
    );

    // Another ACL file: the running subscription it denies goes, the new rules apply.
    cfg.auth.acl_file = Some(acl2.clone());
    let report = b.handle().reload(&cfg);
    assert_eq!(
        change_status(&report, "auth.acl_file"),
        &ChangeStatus::Applied,
        "{report:?}"
    );
    assert_eq!(auth_change(&report), &ChangeStatus::Applied);
    assert_eq!(report.changes.len(), 1, "{report:?}");
    assert_eq!(
        subscribe_v3(&mut anon, 2, &["one/#", "two/#"]).await,
        [0x80, 1]
    );
    let mut admin = connect_as(b.addr, "anon-pub", None).await;
    publish_all(&mut admin, &["one/x"], "two/marker").await;
    assert_eq!(
        topics_until(&mut anon, "two/marker").await,
        Vec::<String>::new(),
        "the one/# subscription was dropped by the new ACL file"
    );

    // A password file is added and anonymous access switched off explicitly.
    cfg.auth.password_file = Some(pw.clone());
    cfg.auth.allow_anonymous = Some(false);
    let report = b.handle().reload(&cfg);
    for key in ["auth.password_file", "auth.allow_anonymous"] {
        assert_eq!(
            change_status(&report, key),
            &ChangeStatus::Applied,
            "{report:?}"
        );
    }
    assert_eq!(v3_login(b.addr, &creds("anon-2", None, None)).await, 5);
    assert_eq!(
        v3_login(b.addr, &creds("alice-1", Some("alice"), Some(b"apw"))).await,
        0
    );
    let (mut alice, _) = Raw::connect(b.addr, &creds("alice-2", Some("alice"), Some(b"apw"))).await;
    assert_eq!(
        subscribe_v3(&mut alice, 1, &["alice/#", "one/#"]).await,
        [1, 0x80]
    );

    // Reloading what runs: nothing to report but the re-read files.
    let report = b.handle().reload(&cfg);
    assert!(report.changes.is_empty(), "{report:?}");
    assert_eq!(auth_change(&report), &ChangeStatus::Applied);

    // A path that does not exist: Failed, and the running files and settings stay.
    let mut bad = cfg.clone();
    bad.auth.acl_file = Some(dir.path("missing-acl"));
    bad.auth.allow_anonymous = Some(true);
    let report = b.handle().reload(&bad);
    for key in ["auth.acl_file", "auth.allow_anonymous"] {
        match change_status(&report, key) {
            ChangeStatus::Failed(why) => assert!(why.contains("missing-acl"), "{why}"),
            other => panic!("{key}: expected Failed, got {other:?}"),
        }
    }
    assert!(matches!(auth_change(&report), ChangeStatus::Failed(_)));
    assert_eq!(v3_login(b.addr, &creds("anon-3", None, None)).await, 5);
    let (mut alice, _) = Raw::connect(b.addr, &creds("alice-3", Some("alice"), Some(b"apw"))).await;
    assert_eq!(
        subscribe_v3(&mut alice, 1, &["alice/#", "one/#"]).await,
        [1, 0x80]
    );
    // The failed change is still pending: the next reload reports it again.
    let report = b.handle().reload(&bad);
    assert!(matches!(
        change_status(&report, "auth.acl_file"),
        ChangeStatus::Failed(_)
    ));
}

/// A bad ACL file at start-up: the broker refuses to start, naming the file and the line.
#[tokio::test]
async fn bad_acl_file_refuses_start() {
    let dir = TempDir::new("badacl");
    let acl = dir.path("acl");
    write_file(&acl, "topic read a/#\ntopic sometimes b\n");
    let mut cfg = test_config();
    cfg.auth.acl_file = Some(acl);
    let err = match starling::Broker::start(cfg).await {
        Ok(_) => panic!("a broker with an invalid ACL file started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("acl") && err.contains("line 2"),
        "error names the ACL file and the line: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Session owner check
// ---------------------------------------------------------------------------------------------

fn owner_config(dir: &TempDir, owner_check: bool) -> Config {
    let pw = dir.path("passwd");
    write_passwords(&pw, &[("alice", "apw"), ("bob", "bpw"), ("pub", "ppw")]);
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw);
    cfg.auth.allow_anonymous = Some(true);
    cfg.auth.session_owner_check = owner_check;
    cfg
}

/// `session_owner_check` (default true): a persistent session is taken over or resumed only by
/// its owner's username. Bob (or an anonymous client) using alice's client id is refused with
/// CONNACK 5 / 0x87, alice's connection stays up and keeps receiving, and her session survives
/// for her own reconnect.
#[tokio::test]
async fn takeover_by_another_user_refused() {
    let dir = TempDir::new("owner");
    let cfg = owner_config(&dir, true);
    assert!(cfg.auth.session_owner_check);
    let b = start_with(cfg).await;
    let alice_opts = creds("dev1", Some("alice"), Some(b"apw")).clean(false);
    let (mut alice, ack) = Raw::connect(b.addr, &alice_opts).await;
    assert!(!ack.session_present);
    assert_eq!(alice.subscribe(1, "t/#", 1).await, 1);
    let (mut publ, _) = Raw::connect(b.addr, &creds("pub-1", Some("pub"), Some(b"ppw"))).await;

    // Bob, with valid credentials of his own.
    assert_eq!(
        v3_login(
            b.addr,
            &creds("dev1", Some("bob"), Some(b"bpw")).clean(false)
        )
        .await,
        5
    );
    assert_eq!(
        v3_login(b.addr, &creds("dev1", Some("bob"), Some(b"bpw"))).await,
        5,
        "clean session does not help either: it would discard alice's session"
    );
    let (mut bob5, ack) = v5_connect(b.addr, "dev1", Some("bob"), Some(b"bpw"), false).await;
    assert_eq!(ack.code.0, 0x87, "v5 takeover by another user");
    assert!(bob5.closed_within(CLOSE_WAIT).await.is_ok());
    assert_eq!(
        v3_login(b.addr, &creds("dev1", None, None)).await,
        5,
        "an anonymous client is another user too"
    );

    // Alice is still connected and still receives.
    let stray = alice.ping().await;
    assert!(stray.is_empty(), "alice got {stray:?}");
    publ.publish("t/1", b"one", 1, false, 1).await;
    assert_publish(&alice.recv_and_ack().await, "t/1", b"one");

    // Offline, the session is still alice's.
    alice.send(&DISCONNECT).await;
    assert!(alice.closed_within(CLOSE_WAIT).await.is_ok());
    b.wait_until("alice is disconnected", |s| {
        s.metrics().clients_connected.get() == 1
    })
    .await;
    publ.publish("t/2", b"two", 1, false, 2).await;
    assert_eq!(
        v3_login(
            b.addr,
            &creds("dev1", Some("bob"), Some(b"bpw")).clean(false)
        )
        .await,
        5,
        "bob cannot resume alice's offline session"
    );
    let (mut alice, ack) = Raw::connect(b.addr, &alice_opts).await;
    assert!(ack.session_present, "alice's session survived");
    assert_publish(&alice.recv_and_ack().await, "t/2", b"two");
    publ.publish("t/3", b"three", 1, false, 3).await;
    assert_publish(&alice.recv_and_ack().await, "t/3", b"three");
}

/// With `session_owner_check = false`, Mosquitto's behaviour: any authenticated client with the
/// id takes the session over, subscriptions included.
#[tokio::test]
async fn takeover_by_another_user_allowed_without_owner_check() {
    let dir = TempDir::new("noowner");
    let b = start_with(owner_config(&dir, false)).await;
    let (mut alice, _) = Raw::connect(
        b.addr,
        &creds("dev1", Some("alice"), Some(b"apw")).clean(false),
    )
    .await;
    assert_eq!(alice.subscribe(1, "t/#", 1).await, 1);
    let (mut bob, ack) = Raw::connect(
        b.addr,
        &creds("dev1", Some("bob"), Some(b"bpw")).clean(false),
    )
    .await;
    assert!(ack.session_present, "bob resumes alice's session");
    assert!(
        alice.closed_within(CLOSE_WAIT).await.is_ok(),
        "alice's connection is taken over"
    );
    let (mut publ, _) = Raw::connect(b.addr, &creds("pub-1", Some("pub"), Some(b"ppw"))).await;
    publ.publish("t/1", b"one", 1, false, 1).await;
    assert_publish(&bob.recv_and_ack().await, "t/1", b"one");
}

// ---------------------------------------------------------------------------------------------
// 6. Logging
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// §3.1 / `auth` module docs: failed logins are logged (peer address, client id, username,
/// decision) but never with the password; the start-up log says whether anonymous clients are
/// let in and why. The test runs on a current-thread runtime, so the broker's tasks log to
/// this thread's scoped subscriber.
#[tokio::test(flavor = "current_thread")]
async fn failed_login_logged_without_password() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // With a single registered dispatcher, tracing-core computes a callsite's cached interest
    // from whichever thread registers it first; another test thread (no subscriber) would then
    // disable the broker's callsites for this one too. A second live dispatcher makes it ask
    // every registered dispatcher instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

    let dir = TempDir::new("log");
    let pw = dir.path("passwd");
    write_passwords(&pw, &[("alice", "Correct-Horse-42")]);
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw);
    let b = start_with(cfg).await;
    let opts = creds("logme-1", Some("alice"), Some(b"Wrong-Secret-17"));
    let (raw, ack) = Raw::connect_raw(b.addr, &opts).await;
    assert_eq!(ack.code.0, 5);
    let alice_peer = raw.stream.local_addr().unwrap();
    let (raw, ack) = v5_connect(
        b.addr,
        "logme-2",
        Some("mallory"),
        Some(b"Other-Secret-23"),
        true,
    )
    .await;
    assert_eq!(ack.code.0, 0x87);
    let mallory_peer = raw.stream.local_addr().unwrap();
    assert_eq!(
        v3_login(
            b.addr,
            &creds("logme-3", Some("alice"), Some(b"Correct-Horse-42"))
        )
        .await,
        0
    );
    drop(b);

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login failed"))
        .collect();
    let alice_peer = format!("peer={alice_peer}");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("logme-1") && l.contains("alice") && l.contains(&alice_peer)),
        "the failed login of alice is logged with {alice_peer}, client id and username:\n{text}"
    );
    let mallory_peer = format!("peer={mallory_peer}");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("logme-2") && l.contains("mallory") && l.contains(&mallory_peer)),
        "the unknown user is logged with {mallory_peer}:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("anonymous clients are refused")
                && l.contains("a password file is configured")),
        "the start-up log says anonymous clients are refused, and why:\n{text}"
    );
    for secret in [
        "Wrong-Secret-17",
        "Other-Secret-23",
        "Correct-Horse-42",
        "$7$",
    ] {
        assert!(
            !text.contains(secret),
            "the log contains {secret:?}:\n{text}"
        );
    }
}
