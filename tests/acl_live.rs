//! ACL changes apply to what is already queued: READ is checked when a message is sent to the
//! subscriber, not only when it was routed into the queue. A reload that takes away read access
//! to a topic stops queued, not-yet-sent copies of it (offline queue, the part of an online
//! queue beyond the inflight window), in memory and on disk alike. And credentials: a reload
//! that removes a user, changes its password or ends anonymous access disconnects the clients
//! it would no longer let in.

mod common;

use std::path::Path;

use common::*;
use starling::codec::{Packet, ReasonCode};
use starling::config::Config;

const READ_BOTH: &str = "user alice\ntopic read topic/#\nuser admin\ntopic write #\n";
const READ_ONE: &str = "user alice\ntopic read topic/one\ntopic read topic/marker\n\
                        user admin\ntopic write #\n";

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn write_passwords(path: &Path) {
    let mut text = String::new();
    for (user, pw) in [("alice", "a"), ("admin", "b")] {
        let hash = starling::auth::password::hash_password(pw.as_bytes(), 10).expect("hash");
        text.push_str(&format!("{user}:{hash}\n"));
    }
    write_file(path, &text);
}

fn login(id: &str, user: &str, pw: &[u8], clean: bool) -> ConnectOpts {
    let mut o = ConnectOpts::v311(id).clean(clean);
    o.username = Some(user.to_owned());
    o.password = Some(pw.to_vec());
    o
}

fn config(dir: &Path, persistence: bool) -> Config {
    let mut cfg = test_config();
    cfg.auth.password_file = Some(dir.join("passwd"));
    cfg.auth.acl_file = Some(dir.join("acl"));
    cfg.mqtt.max_inflight = 1;
    cfg.persistence.enabled = Some(persistence);
    cfg.persistence.dir = dir.join("store");
    write_passwords(&dir.join("passwd"));
    write_file(&dir.join("acl"), READ_BOTH);
    cfg
}

/// Topics received (each acknowledged) until `marker`.
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

async fn publish(admin: &mut Raw, topics: &[&str]) {
    for (i, t) in topics.iter().enumerate() {
        let pid = u16::try_from(i + 1).expect("few topics");
        admin.publish(t, t.as_bytes(), 1, false, pid).await;
    }
}

/// Offline queue: messages on topic/two queued while alice is away are not delivered once a
/// reload took away her read access to topic/two.
async fn offline_queue(persistence: bool) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = config(tmp.path(), persistence);
    let b = start_with(cfg.clone()).await;
    let (mut alice, _) = Raw::connect(b.addr, &login("alice", "alice", b"a", false)).await;
    assert_eq!(alice.subscribe(1, "topic/#", 1).await, 1);
    alice.send(&frame(0xE0, &[])).await;
    b.wait_until("alice is offline", |s| {
        s.metrics().clients_connected.get() == 0
    })
    .await;

    let (mut admin, _) = Raw::connect(b.addr, &login("admin", "admin", b"b", true)).await;
    publish(
        &mut admin,
        &["topic/one", "topic/two", "topic/two", "topic/one"],
    )
    .await;

    write_file(&tmp.path().join("acl"), READ_ONE);
    let report = b.handle().reload(&cfg);
    assert!(
        report
            .files
            .iter()
            .all(|f| f.status == starling::reload::ChangeStatus::Applied),
        "reload: {report:?}"
    );
    publish(&mut admin, &["topic/marker"]).await;

    let (mut alice, ack) = Raw::connect(b.addr, &login("alice", "alice", b"a", false)).await;
    assert!(ack.session_present);
    assert_eq!(
        topics_until(&mut alice, "topic/marker").await,
        ["topic/one", "topic/one"],
        "queued topic/two copies must not be delivered after read access was revoked \
         (persistence {persistence})"
    );
    assert_eq!(b.state().metrics().dropped_not_authorized.get(), 2);
}

/// Online queue: with an inflight window of 1, everything behind the first message waits in
/// the queue; a reload in between stops the queued topic/two copies.
async fn online_queue(persistence: bool) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = config(tmp.path(), persistence);
    let b = start_with(cfg.clone()).await;
    let (mut alice, _) = Raw::connect(b.addr, &login("alice", "alice", b"a", false)).await;
    assert_eq!(alice.subscribe(1, "topic/#", 1).await, 1);
    let (mut admin, _) = Raw::connect(b.addr, &login("admin", "admin", b"b", true)).await;
    publish(
        &mut admin,
        &["topic/one", "topic/two", "topic/two", "topic/one"],
    )
    .await;
    // The first message is in flight (unacknowledged), the rest are queued behind it.
    let first = alice.recv_publish().await;
    assert_eq!(first.topic, "topic/one".into());

    write_file(&tmp.path().join("acl"), READ_ONE);
    let report = b.handle().reload(&cfg);
    assert!(
        report
            .files
            .iter()
            .all(|f| f.status == starling::reload::ChangeStatus::Applied),
        "reload: {report:?}"
    );
    publish(&mut admin, &["topic/marker"]).await;

    alice.send(&puback(first.packet_id)).await;
    assert_eq!(
        topics_until(&mut alice, "topic/marker").await,
        ["topic/one"],
        "queued topic/two copies must not be sent after read access was revoked \
         (persistence {persistence})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_read_stops_an_offline_queue_in_memory() {
    offline_queue(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_read_stops_an_offline_queue_on_disk() {
    offline_queue(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_read_stops_an_online_queue_in_memory() {
    online_queue(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_read_stops_an_online_queue_on_disk() {
    online_queue(true).await;
}

// ---------------------------------------------------------------------------------------------
// Credentials that change under connected clients (issue 14 item 10)
// ---------------------------------------------------------------------------------------------

fn write_users(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    for (user, pw) in users {
        let hash = starling::auth::password::hash_password(pw.as_bytes(), 10).expect("hash");
        text.push_str(&format!("{user}:{hash}\n"));
    }
    write_file(path, &text);
}

/// After a reload, a client whose user was removed or whose password changed is disconnected
/// and its will published (a server-side disconnect [MQTT-3.1.2-8]); a client whose entry did
/// not change keeps its connection; the removed user cannot log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_disconnects_clients_whose_credentials_went_away() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pw = tmp.path().join("passwd");
    write_users(&pw, &[("alice", "a"), ("bob", "b"), ("carol", "c")]);
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw.clone());
    let b = start_with(cfg.clone()).await;

    let alice_opts = login("alice", "alice", b"a", true).will("wills/alice", b"gone", 1, false);
    let (_alice, _) = Raw::connect(b.addr, &alice_opts).await;
    let (_bob, _) = Raw::connect(
        b.addr,
        &login("bob", "bob", b"b", true).will("wills/bob", b"gone", 1, false),
    )
    .await;
    let (mut carol, _) = Raw::connect(b.addr, &login("carol", "carol", b"c", true)).await;
    assert_eq!(carol.subscribe(1, "wills/#", 1).await, 1);

    // alice is removed, bob's password changes, carol's entry stays as it was.
    let carol_line = std::fs::read_to_string(&pw)
        .expect("read")
        .lines()
        .find(|l| l.starts_with("carol:"))
        .expect("carol")
        .to_string();
    let bob_hash = starling::auth::password::hash_password(b"new", 10).expect("hash");
    write_file(&pw, &format!("bob:{bob_hash}\n{carol_line}\n"));
    b.handle().reload(&cfg);

    let mut wills = vec![
        carol.recv_and_ack().await.topic.to_string(),
        carol.recv_and_ack().await.topic.to_string(),
    ];
    wills.sort();
    assert_eq!(wills, ["wills/alice", "wills/bob"]);
    b.wait_until("alice and bob are disconnected", |s| {
        s.metrics().clients_connected.get() == 1
    })
    .await;
    // carol is still served.
    carol.publish("wills/probe", b"x", 1, false, 9).await;
    assert_eq!(carol.recv_and_ack().await.topic, "wills/probe".into());
    let (_, ack) = Raw::connect_raw(b.addr, &login("alice2", "alice", b"a", true)).await;
    assert_eq!(ack.code.0, 5, "a removed user is refused");
}

/// A v5 client is told why: DISCONNECT 0x98 Administrative action. Turning anonymous access
/// off disconnects the anonymous clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_ends_anonymous_access_disconnects_anonymous_clients() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pw = tmp.path().join("passwd");
    write_users(&pw, &[("dave", "d")]);
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw.clone());
    cfg.auth.allow_anonymous = Some(true);
    let b = start_with(cfg.clone()).await;
    let (mut anon, ack) = Raw::connect_v5(b.addr, "anon").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    let (mut dave, _) = Raw::connect(b.addr, &login("dave", "dave", b"d", true)).await;

    cfg.auth.allow_anonymous = Some(false);
    b.handle().reload(&cfg);
    match anon.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::ADMINISTRATIVE_ACTION, "{d:?}"),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    anon.expect_closed("after DISCONNECT").await;
    assert_eq!(dave.subscribe(1, "d/#", 1).await, 1, "dave is still served");
}

/// A will is a message published later on the client's behalf: a will topic the ACL does not
/// let the client write is refused at CONNECT (3.x return code 5, as Mosquitto does), and one
/// it may write is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_topic_the_acl_does_not_let_the_client_write_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pw = tmp.path().join("passwd");
    write_users(&pw, &[("erin", "e")]);
    let acl = tmp.path().join("acl");
    write_file(&acl, "user erin\ntopic readwrite erin/#\n");
    let mut cfg = test_config();
    cfg.auth.password_file = Some(pw);
    cfg.auth.acl_file = Some(acl);
    let b = start_with(cfg).await;
    let denied = login("erin-1", "erin", b"e", true).will("elsewhere/will", b"x", 0, false);
    let (mut raw, ack) = Raw::connect_raw(b.addr, &denied).await;
    assert_eq!(ack.code.0, 5, "will topic outside the ACL: not authorized");
    raw.expect_closed("after the refusing CONNACK").await;
    let allowed = login("erin-2", "erin", b"e", true).will("erin/will", b"x", 0, false);
    let (_ok, ack) = Raw::connect(b.addr, &allowed).await;
    assert_eq!(ack.code.0, 0);
}
