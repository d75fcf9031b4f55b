//! Dynamic security driven the way operators drive Mosquitto's: Debian's `mosquitto_ctrl`
//! against Starling (`$CONTROL/dynamic-security/v1`), outcomes checked with real MQTT clients
//! (`mosquitto_pub` and the raw client of tests/common); files exchanged with Debian's
//! `mosquitto` 2.0 and its `mosquitto_dynamic_security.so` both ways; and a `kill -9` during a
//! burst of changes leaving a file that loads.
//!
//! The Mosquitto tools come from the `mosquitto` and `mosquitto-clients` packages; without them
//! the tests are skipped with a message, unless `STARLING_INTEROP=1` makes that a failure.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use starling::auth::dynsec::DynSec;
use starling::codec::{Packet, ProtocolVersion, ReasonCode};

const PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";

fn have(tool: &str) -> bool {
    require(tool, Path::new(tool).is_file())
}

/// `mosquitto_ctrl -h 127.0.0.1 -p PORT -u admin -P adminpw dynsec ARGS`: its output (stdout and
/// stderr), asserting it succeeded and printed no error.
async fn ctrl(port: u16, args: &[&str]) -> String {
    let out = ctrl_raw(port, args).await;
    assert!(
        !out.contains("Error"),
        "mosquitto_ctrl dynsec {args:?}: {out}"
    );
    out
}

async fn ctrl_raw(port: u16, args: &[&str]) -> String {
    let o = tokio::process::Command::new("/usr/bin/mosquitto_ctrl")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", "admin", "-P", "adminpw", "dynsec"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run mosquitto_ctrl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "mosquitto_ctrl dynsec {args:?}: {text}");
    text
}

/// Runs `mosquitto_pub` once; whether the broker accepted its connection.
async fn mosquitto_pub(port: u16, user: &str, password: &str, topic: &str, msg: &str) -> bool {
    tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", user, "-P", password, "-t", topic, "-m", msg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("run mosquitto_pub")
        .success()
}

fn login(id: &str, user: &str, pw: &str, clean: bool) -> ConnectOpts {
    let mut o = ConnectOpts::v311(id).clean(clean);
    o.username = Some(user.to_owned());
    o.password = Some(pw.as_bytes().to_vec());
    o
}

/// The client id of a one-off login probe for `user`. One per user: the broker may still hold
/// the previous probe's connection when the next one arrives, and a login that would take over
/// another user's session is refused (`auth.session_owner_check`), which is not what the probe
/// asks about.
fn probe_id(user: &str) -> String {
    format!("probe-{user}")
}

/// The CONNACK return code a 3.1.1 CONNECT with these credentials gets.
async fn connack(b: &TestBroker, user: &str, pw: &str) -> u8 {
    Raw::connect_raw(b.addr, &login(&probe_id(user), user, pw, true))
        .await
        .1
        .code
        .0
}

/// `starling dynsec init FILE admin` with the password on standard input.
fn starling_init(file: &Path) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["dynsec", "init"])
        .arg(file)
        .arg("admin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starling dynsec init");
    use std::io::Write;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"adminpw\n").expect("write password");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn start_dynsec(file: &Path) -> TestBroker {
    let mut cfg = test_config();
    cfg.auth.dynamic_security = Some(file.to_owned());
    cfg.auth.allow_anonymous = Some(false);
    start_with(cfg).await
}

/// init, createClient, createRole, addRoleACL, addClientRole, setClientPassword,
/// disable/enableClient, list/get, removeRoleACL; each outcome seen by real clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_ctrl_manages_starling() {
    if !have("/usr/bin/mosquitto_ctrl") || !have_mosquitto_clients() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("dynamic-security.json");
    starling_init(&file);
    let b = start_dynsec(&file).await;
    let port = b.port();
    assert!(ctrl(port, &["listClients"]).await.contains("admin"));

    ctrl(port, &["createClient", "alice", "-p", "alicepw"]).await;
    ctrl(port, &["createRole", "writer"]).await;
    ctrl(
        port,
        &["addRoleACL", "writer", "publishClientSend", "t/#", "allow"],
    )
    .await;
    ctrl(
        port,
        &["addRoleACL", "writer", "subscribePattern", "t/#", "allow"],
    )
    .await;
    ctrl(port, &["addClientRole", "alice", "writer"]).await;
    let dup = ctrl_raw(port, &["createClient", "alice", "-p", "x"]).await;
    assert!(dup.contains("Client already exists"), "{dup}");
    assert!(ctrl(port, &["getClient", "alice"]).await.contains("writer"));
    assert!(ctrl(port, &["listRoles"]).await.contains("writer"));
    // Every change is in the file at once.
    assert!(DynSec::load(&file).expect("file loads").knows("alice"));

    // The admin (whose role reads everything) watches what alice manages to publish.
    let (mut admin, _) = Raw::connect(b.addr, &login("watcher", "admin", "adminpw", true)).await;
    assert_eq!(admin.subscribe(1, "#", 0).await, 0);
    assert!(mosquitto_pub(port, "alice", "alicepw", "x/denied", "no").await);
    assert!(mosquitto_pub(port, "alice", "alicepw", "t/allowed", "yes").await);
    assert_publish(&admin.recv_publish().await, "t/allowed", b"yes");
    assert!(!mosquitto_pub(port, "alice", "wrong", "t/x", "m").await);

    // The control API is for clients granted publishClientSend there: alice's request is
    // refused, and requests are consumed, never routed; only the response is delivered.
    let (mut spy, _) = Raw::connect(b.addr, &login("spy", "admin", "adminpw", true)).await;
    assert_eq!(spy.subscribe(1, "$CONTROL/#", 0).await, 0);
    let evil = r#"{"commands":[{"command":"createClient","username":"mallory","password":"m"}]}"#;
    assert!(
        mosquitto_pub(
            port,
            "alice",
            "alicepw",
            "$CONTROL/dynamic-security/v1",
            evil
        )
        .await
    );
    let missing = ctrl_raw(port, &["getClient", "mallory"]).await;
    assert!(missing.contains("Client not found"), "{missing}");
    let seen = spy.recv_publish().await;
    assert_eq!(
        seen.topic,
        "$CONTROL/dynamic-security/v1/response".into(),
        "{seen:?}"
    );
    assert!(String::from_utf8_lossy(&seen.payload).contains("Client not found"));

    // A subscription the new rules deny is removed, and its client disconnected.
    let (mut alice, _) = Raw::connect(b.addr, &login("alice-1", "alice", "alicepw", false)).await;
    assert_eq!(alice.subscribe(1, "t/#", 1).await, 1);
    ctrl(
        port,
        &["removeRoleACL", "writer", "subscribePattern", "t/#"],
    )
    .await;
    alice
        .closed_within(Duration::from_secs(5))
        .await
        .expect("alice kicked");
    // Left: the watcher's # and the spy's $CONTROL/#.
    b.wait_until("alice's t/# subscription is removed", |s| {
        s.subscription_count() == 2
    })
    .await;
    let (mut alice, _) = Raw::connect(b.addr, &login("alice-1", "alice", "alicepw", false)).await;
    assert_eq!(
        alice.subscribe(2, "t/#", 1).await,
        0x80,
        "[MQTT-3.9.3-2] refused"
    );

    // A new password disconnects her and the old one stops working.
    ctrl(port, &["setClientPassword", "alice", "newpw"]).await;
    alice
        .closed_within(Duration::from_secs(5))
        .await
        .expect("alice kicked");
    assert_eq!(connack(&b, "alice", "alicepw").await, 5);
    assert_eq!(connack(&b, "alice", "newpw").await, 0);

    ctrl(port, &["disableClient", "alice"]).await;
    assert_eq!(connack(&b, "alice", "newpw").await, 5);
    ctrl(port, &["enableClient", "alice"]).await;
    assert_eq!(connack(&b, "alice", "newpw").await, 0);
    ctrl(port, &["deleteClient", "alice"]).await;
    assert_eq!(connack(&b, "alice", "newpw").await, 5);
    // The admin's own rights did not change: it was never disconnected.
    admin.send(&frame(0xC0, &[])).await;
    assert!(matches!(admin.recv().await, Packet::PingResp));
}

/// A v5 client whose role loses an ACL is told why: DISCONNECT 0x98 Administrative action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_role_disconnects_v5_clients_with_administrative_action() {
    if !have("/usr/bin/mosquitto_ctrl") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("dynamic-security.json");
    starling_init(&file);
    let b = start_dynsec(&file).await;
    let connect = starling::codec::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "v5".into(),
        will: None,
        username: Some("admin".into()),
        password: Some(bytes::Bytes::from_static(b"adminpw")),
        properties: starling::codec::Properties::default(),
        bridge: false,
    };
    let mut bytes = bytes::BytesMut::new();
    let packet = Packet::Connect(Box::new(connect));
    starling::codec::encode(&packet, ProtocolVersion::V5, &mut bytes);
    let mut raw = Raw::open(b.addr).await;
    raw.version = ProtocolVersion::V5;
    raw.send(&bytes).await;
    assert!(matches!(raw.recv().await, Packet::ConnAck(a) if a.code.0 == 0));
    ctrl(
        b.port(),
        &["addRoleACL", "admin", "publishClientSend", "a/#", "allow"],
    )
    .await;
    let (seen, _) = raw
        .closed_within(Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(
        seen.iter().any(|p| matches!(p, Packet::Disconnect(d)
            if d.reason == ReasonCode::ADMINISTRATIVE_ACTION)),
        "{seen:?}"
    );
}

/// An UNSUBSCRIBE the unsubscribe ACLs deny leaves the subscription in place, as in Mosquitto
/// (a 3.1.1 UNSUBACK cannot say so [MQTT-3.11.2-1]; messages keep coming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_unsubscribe_keeps_the_subscription() {
    if !have("/usr/bin/mosquitto_ctrl") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("dynamic-security.json");
    starling_init(&file);
    let b = start_dynsec(&file).await;
    let port = b.port();
    ctrl(port, &["createClient", "bob", "-p", "bobpw"]).await;
    ctrl(port, &["createRole", "sticky"]).await;
    ctrl(
        port,
        &["addRoleACL", "sticky", "subscribePattern", "t/#", "allow"],
    )
    .await;
    ctrl(
        port,
        &["addRoleACL", "sticky", "unsubscribeLiteral", "t/#", "deny"],
    )
    .await;
    ctrl(port, &["addClientRole", "bob", "sticky"]).await;
    let (mut bob, _) = Raw::connect(b.addr, &login("bob", "bob", "bobpw", true)).await;
    assert_eq!(bob.subscribe(1, "t/#", 0).await, 0);
    bob.send(&unsubscribe_packet(2, &["t/#"])).await;
    assert!(matches!(bob.recv().await, Packet::UnsubAck(_)));
    assert_eq!(b.state().subscription_count(), 1, "t/# must stay");
    ctrl(
        port,
        &["removeRoleACL", "sticky", "unsubscribeLiteral", "t/#"],
    )
    .await;
    let (mut bob, _) = Raw::connect(b.addr, &login("bob", "bob", "bobpw", true)).await;
    assert_eq!(bob.subscribe(1, "t/#", 0).await, 0);
    bob.send(&unsubscribe_packet(2, &["t/#"])).await;
    assert!(matches!(bob.recv().await, Packet::UnsubAck(_)));
    b.wait_until("t/# is gone", |s| s.subscription_count() == 0)
        .await;
}

/// A SIGHUP reload re-reads the password and ACL files but keeps the running dynamic-security
/// state: it cannot undo a change made through the control API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_dynamic_security_state() {
    if !have("/usr/bin/mosquitto_ctrl") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("dynamic-security.json");
    starling_init(&file);
    let mut cfg = test_config();
    cfg.auth.dynamic_security = Some(file.clone());
    cfg.auth.allow_anonymous = Some(false);
    let b = start_with(cfg.clone()).await;
    ctrl(b.port(), &["createClient", "dave", "-p", "davepw"]).await;
    // Even a file edited behind the broker's back is not read by a reload.
    starling_init(&tmp.path().join("other.json"));
    std::fs::rename(tmp.path().join("other.json"), &file).expect("replace the file");
    let report = b.handle().reload(&cfg);
    assert!(report.restart_required().next().is_none(), "{report:?}");
    assert_eq!(connack(&b, "dave", "davepw").await, 0);
}

/// Dynamic security is one state for every listener: a client created through `$CONTROL` on
/// one listener logs in on another that has a password file of its own, that listener's file
/// still admits its own users after dynsec (the precedence of the README), a listener without
/// one refuses them, and a change made on one listener disconnects the client on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynsec_applies_on_every_listener() {
    if !have("/usr/bin/mosquitto_ctrl") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("dynamic-security.json");
    starling_init(&file);
    let bob = starling::auth::password::hash_password(b"bobpw", 10).expect("hash");
    let passwd = tmp.path().join("passwd");
    std::fs::write(&passwd, format!("bob:{bob}\n")).expect("write the password file");
    let mut cfg = test_config();
    cfg.auth.dynamic_security = Some(file.clone());
    cfg.auth.allow_anonymous = Some(false);
    let mut second = cfg.listeners[0].clone();
    second.password_file = Some(passwd);
    cfg.listeners.push(second);
    let b = start_with(cfg.clone()).await;
    let addrs = b.handle().local_addrs();
    let code = |i: usize, user: &'static str, pw: &'static str| {
        let addr = addrs[i];
        async move {
            Raw::connect_raw(addr, &login(&probe_id(user), user, pw, true))
                .await
                .1
                .code
                .0
        }
    };
    ctrl(addrs[0].port(), &["createClient", "alice", "-p", "alicepw"]).await;
    assert_eq!(code(0, "alice", "alicepw").await, 0);
    assert_eq!(code(1, "alice", "alicepw").await, 0);
    assert_eq!(code(1, "alice", "wrong").await, 5);
    // bob is in listener 1's password file only.
    assert_eq!(code(1, "bob", "bobpw").await, 0);
    assert_eq!(code(0, "bob", "bobpw").await, 5);

    let (mut alice, _) = Raw::connect(addrs[1], &login("alice-1", "alice", "alicepw", true)).await;
    ctrl(addrs[0].port(), &["disableClient", "alice"]).await;
    alice
        .closed_within(Duration::from_secs(5))
        .await
        .expect("alice kicked on the other listener");
    assert_eq!(code(1, "alice", "alicepw").await, 5);

    // A reload re-reads listener 1's own file but keeps dynsec on both listeners.
    ctrl(addrs[1].port(), &["enableClient", "alice"]).await;
    let report = b.handle().reload(&cfg);
    assert!(report.restart_required().next().is_none(), "{report:?}");
    for i in 0..2 {
        assert_eq!(code(i, "alice", "alicepw").await, 0, "listener {i}");
    }
    assert_eq!(code(1, "bob", "bobpw").await, 0);
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Debian's `mosquitto` with the dynamic-security plugin on `file`; killed on drop.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto(dir: &Path, file: &Path) -> Mosquitto {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    // `user root` keeps a root-run broker from switching to the `mosquitto` user, which could
    // not read our 0600 file.
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\nuser root\n\
         plugin {PLUGIN}\nplugin_opt_config_file {}\n",
        file.display()
    );
    std::fs::write(&conf, text).expect("write mosquitto.conf");
    let child = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto { child, port }
}

/// A file Mosquitto 2.0's plugin wrote (after mosquitto_ctrl changes) works in Starling with
/// the same users and rights, and a file Starling wrote works in Mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_between_mosquitto_and_starling() {
    if !have("/usr/bin/mosquitto_ctrl")
        || !have("/usr/sbin/mosquitto")
        || !have(PLUGIN)
        || !have_mosquitto_clients()
    {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("from-mosquitto.json");
    let init = std::process::Command::new("/usr/bin/mosquitto_ctrl")
        .args(["dynsec", "init"])
        .arg(&file)
        .args(["admin", "adminpw"])
        .output()
        .expect("mosquitto_ctrl init");
    assert!(init.status.success());
    {
        let m = start_mosquitto(tmp.path(), &file);
        ctrl(m.port, &["createClient", "bob", "-p", "bobpw"]).await;
        ctrl(m.port, &["createRole", "r"]).await;
        ctrl(
            m.port,
            &["addRoleACL", "r", "publishClientSend", "bob/#", "allow"],
        )
        .await;
        ctrl(m.port, &["createGroup", "g"]).await;
        ctrl(m.port, &["addGroupRole", "g", "r"]).await;
        ctrl(m.port, &["addGroupClient", "g", "bob"]).await;
        ctrl(m.port, &["disableClient", "bob"]).await;
        ctrl(m.port, &["enableClient", "bob"]).await;
    }
    let d = DynSec::load(&file).expect("Mosquitto's file loads");
    assert!(d.knows("bob"));
    let b = start_dynsec(&file).await;
    assert_eq!(connack(&b, "bob", "bobpw").await, 0);
    assert_eq!(connack(&b, "bob", "wrong").await, 5);
    let auth = b.state().auth(None).0;
    let may = |t| auth.check_acl("c", Some("bob"), t, starling::auth::Access::Write);
    assert!(
        may("bob/x") && !may("other"),
        "bob's group role must carry over"
    );

    // And back: Starling writes the file (a client made through its control API)...
    ctrl(b.port(), &["createClient", "carol", "-p", "carolpw"]).await;
    drop(b);
    // ...that Mosquitto's plugin reads.
    let m = start_mosquitto(tmp.path(), &file);
    assert!(mosquitto_pub(m.port, "carol", "carolpw", "t", "m").await);
    assert!(!mosquitto_pub(m.port, "carol", "wrong", "t", "m").await);
    assert!(mosquitto_pub(m.port, "bob", "bobpw", "bob/x", "m").await);
}

/// A child process killed when dropped (a failing test must not leave a broker running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kill -9` in the middle of a burst of changes leaves a file that loads: the old state or a
/// newer one, never a torn one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_burst_of_changes_leaves_a_file_that_loads() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("dynamic-security.json");
    DynSec::with_admin("admin", b"adminpw", 10)
        .expect("hash")
        .save(&file)
        .expect("save");
    let port = free_port();
    let conf = tmp.path().join("starling.toml");
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\n[auth]\ndynamic_security = \"{}\"\n\
         [persistence]\nenabled = false\n",
        file.display()
    );
    std::fs::write(&conf, toml).expect("write config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("-c")
        .arg(&conf)
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start starling");
    // Killed however the test ends.
    let mut child = KillOnDrop(child);
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "starling did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut admin, _) = Raw::connect(addr, &login("burst", "admin", "adminpw", true)).await;
    assert_eq!(
        admin
            .subscribe(1, "$CONTROL/dynamic-security/v1/response", 0)
            .await,
        0
    );
    for i in 0..200 {
        let cmd = format!(
            r#"{{"commands":[{{"command":"createClient","username":"u{i}","password":"p"}}]}}"#
        );
        admin
            .publish("$CONTROL/dynamic-security/v1", cmd.as_bytes(), 0, false, 0)
            .await;
    }
    // Kill it once some changes are answered (so written) and more are still coming.
    for _ in 0..20 {
        admin.recv_publish().await;
    }
    // SIGKILL, like kill -9: no shutdown path runs.
    child.0.kill().expect("kill -9");
    child.0.wait().expect("wait");
    let d = DynSec::load(&file).expect("the file loads after kill -9");
    let made = (0..200).filter(|i| d.knows(&format!("u{i}"))).count();
    assert!(made >= 20, "answered changes are on disk: {made}");
    assert!(
        (0..made).all(|i| d.knows(&format!("u{i}"))),
        "changes land in order"
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    // A temporary file may survive the kill; it is never the file itself.
    assert!(leftovers.len() <= 1, "{leftovers:?}");
}
