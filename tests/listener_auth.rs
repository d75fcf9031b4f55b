//! Per-listener authentication (issue 16, Mosquitto's `per_listener_settings true`), through
//! real clients: mosquitto_pub / mosquitto_sub against a broker with
//!
//! - listener 0: plain, loopback, `allow_anonymous = true`, no files (inherits an empty
//!   `[auth]`);
//! - listener 1: TLS, `password_file` A (alice, bob) and `acl_file` A (alice: `a/#`);
//! - listener 2: plain, `password_file` B (alice) and `acl_file` B (alice: `b/#`);
//!
//! and `[auth] allow_anonymous = false`. A raw 3.1.1 subscriber to `#` on listener 0 (no ACL
//! there) sees what is actually published. Also: a reload that removes alice from file A
//! disconnects her listener-1 client only, `check-config` prints each listener's effective
//! auth, and a listener's unreadable file is an error naming the listener.
//!
//! A missing mosquitto-clients is a skip, or a failure under `STARLING_INTEROP=1`.

// The transport helpers (for their test PKI) include tests/common/skip.rs as `common` does;
// both copies are the same file, on purpose.
#![allow(clippy::duplicate_mod)]

mod common;
#[path = "transports/support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command as StdCommand;

use common::{have_mosquitto_clients, start_with, test_config, Proc, Raw, TestBroker, WAIT};
use starling::config::{Config, ListenerConfig, ListenerProtocol};
use starling::reload::ChangeStatus;
use support::Pki;

fn write_passwords(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    for (user, pw) in users {
        let hash = starling::auth::password::hash_password(pw.as_bytes(), 10).expect("hash");
        text.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(path, text).expect("write the password file");
}

/// The three-listener broker described in the module doc, its certificates and files.
struct Matrix {
    pki: Pki,
    cfg: Config,
    broker: TestBroker,
    addrs: Vec<SocketAddr>,
}

fn plain(allow_anonymous: Option<bool>) -> ListenerConfig {
    ListenerConfig {
        bind: "127.0.0.1:0".parse().expect("address"),
        allow_anonymous,
        ..ListenerConfig::default()
    }
}

async fn matrix(name: &str) -> Matrix {
    let pki = Pki::new(name);
    write_passwords(&pki.path("pw-a"), &[("alice", "apw"), ("bob", "bpw")]);
    write_passwords(&pki.path("pw-b"), &[("alice", "apw")]);
    std::fs::write(pki.path("acl-a"), "user alice\ntopic readwrite a/#\n").expect("acl a");
    std::fs::write(pki.path("acl-b"), "user alice\ntopic readwrite b/#\n").expect("acl b");
    let mut cfg = test_config();
    cfg.auth.allow_anonymous = Some(false);
    let tls = ListenerConfig {
        protocol: ListenerProtocol::Mqtts,
        cert: Some(pki.path("server.pem")),
        key: Some(pki.path("server.key")),
        password_file: Some(pki.path("pw-a")),
        acl_file: Some(pki.path("acl-a")),
        ..plain(None)
    };
    let third = ListenerConfig {
        password_file: Some(pki.path("pw-b")),
        acl_file: Some(pki.path("acl-b")),
        ..plain(None)
    };
    cfg.listeners = vec![plain(Some(true)), tls, third];
    let broker = start_with(cfg.clone()).await;
    let addrs = broker.handle().local_addrs();
    Matrix {
        pki,
        cfg,
        broker,
        addrs,
    }
}

impl Matrix {
    /// mosquitto_pub / mosquitto_sub for listener `index` (with the test CA on the TLS one),
    /// MQTT `version` ("311" or "5"), as `user` when given. Run under `stdbuf -oL`
    /// (coreutils): the debug lines go through stdio, block-buffered into a pipe.
    fn tool(&self, tool: &str, index: usize, version: &str, user: Option<&str>) -> StdCommand {
        let mut cmd = StdCommand::new("stdbuf");
        cmd.args(["-oL", tool, "-h", "127.0.0.1", "-V", version, "-p"])
            .arg(self.addrs[index].port().to_string());
        if index == 1 {
            cmd.arg("--cafile").arg(self.pki.path("ca.pem"));
        }
        match user {
            Some("alice") => cmd.args(["-u", "alice", "-P", "apw"]),
            Some(other) => cmd.args(["-u", other, "-P", "wrong"]),
            None => &mut cmd,
        };
        cmd
    }

    /// One mosquitto_pub at QoS 1: its exit code (the CONNACK code when refused) and output.
    async fn publish(&self, index: usize, version: &str, user: Option<&str>, topic: &str) -> Out {
        let mut cmd = self.tool("mosquitto_pub", index, version, user);
        cmd.args(["-q", "1", "-t", topic, "-m", topic]);
        let out = tokio::time::timeout(WAIT, tokio::process::Command::from(cmd).output())
            .await
            .expect("mosquitto_pub finishes")
            .expect("run mosquitto_pub");
        Out {
            code: out.status.code(),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// A mosquitto_sub (debug output on) that has its SUBACK; returns it and the codes line.
    async fn subscribe(&self, index: usize, version: &str, filters: &[&str]) -> (Proc, String) {
        let mut cmd = self.tool("mosquitto_sub", index, version, Some("alice"));
        cmd.args(["-d", "-v"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut p = Proc::spawn("mosquitto_sub", &mut cmd);
        let codes = p
            .wait_line("with the SUBACK codes", |l| l.starts_with("Subscribed"))
            .await;
        (p, codes)
    }

    /// A raw 3.1.1 subscriber to `#` on the anonymous listener, which has no ACL.
    async fn watcher(&self, id: &str) -> Raw {
        let mut raw = Raw::connect_v311(self.addrs[0], id).await;
        assert_eq!(raw.subscribe(1, "#", 0).await, 0);
        raw
    }
}

struct Out {
    code: Option<i32>,
    text: String,
}

/// The topics `watcher` receives up to and including `marker`.
async fn topics_until(watcher: &mut Raw, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let p = watcher.recv_publish().await;
        let topic = p.topic.to_string();
        seen.push(topic.clone());
        if topic == marker {
            return seen;
        }
    }
}

/// Anonymous clients: accepted on listener 0, refused on listener 1 with 3.1.1 return code 5
/// Not authorized / v5 0x87, after which the server closes the connection [MQTT-3.2.2-5]
/// (3.1.1) [MQTT-3.2.2-7] (v5). mosquitto_pub exits with the CONNACK code.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_only_where_the_listener_allows_it() {
    if !have_mosquitto_clients() {
        return;
    }
    let m = matrix("anon").await;
    let mut w = m.watcher("w-anon").await;
    for v in ["311", "5"] {
        let out = m.publish(0, v, None, "anon/ok").await;
        assert_eq!(
            out.code,
            Some(0),
            "v{v} anonymous on listener 0: {}",
            out.text
        );
        assert_eq!(topics_until(&mut w, "anon/ok").await, ["anon/ok"]);
    }
    let out = m.publish(1, "311", None, "anon/no").await;
    assert_eq!(
        out.code,
        Some(5),
        "3.1.1 anonymous on listener 1: {}",
        out.text
    );
    let out = m.publish(1, "5", None, "anon/no").await;
    assert_eq!(
        out.code,
        Some(0x87),
        "v5 anonymous on listener 1: {}",
        out.text
    );
    // A wrong password on listener 1 is refused the same way.
    let out = m.publish(1, "5", Some("bob"), "anon/no").await;
    assert_eq!(out.code, Some(0x87), "{}", out.text);
    // Nothing of theirs reached anyone.
    let out = m.publish(0, "311", None, "anon/marker").await;
    assert_eq!(out.code, Some(0), "{}", out.text);
    assert_eq!(topics_until(&mut w, "anon/marker").await, ["anon/marker"]);
}

/// The same user on two listeners gets each listener's ACL: on listener 1 (ACL A) alice writes
/// `a/#` only, on listener 2 (ACL B) `b/#` only. A denied v5 QoS 1 PUBLISH is answered with
/// PUBACK 0x87 Not authorized, a 3.1.1 one is acknowledged and dropped (as Mosquitto does); a
/// denied SUBSCRIBE gets SUBACK 0x80 (3.1.1, [MQTT-3.9.3-2]) or 0x87 (v5).
#[tokio::test(flavor = "multi_thread")]
async fn each_listener_applies_its_own_acl_to_the_same_user() {
    if !have_mosquitto_clients() {
        return;
    }
    let m = matrix("acl").await;
    let mut w = m.watcher("w-acl").await;
    for (index, mine, other) in [(1, "a", "b"), (2, "b", "a")] {
        let allowed = format!("{mine}/from-{index}");
        let denied = format!("{other}/from-{index}");
        for v in ["311", "5"] {
            let out = m.publish(index, v, Some("alice"), &allowed).await;
            assert_eq!(out.code, Some(0), "listener {index} v{v}: {}", out.text);
            assert_eq!(topics_until(&mut w, &allowed).await, [allowed.as_str()]);
            let out = m.publish(index, v, Some("alice"), &denied).await;
            assert_eq!(out.code, Some(0), "listener {index} v{v}: {}", out.text);
            if v == "5" {
                assert!(
                    out.text.contains("Not authorized"),
                    "listener {index}: v5 PUBACK 0x87 for {denied}: {}",
                    out.text
                );
            }
        }
        // The denied publishes never reached the watcher: the next thing it sees is a marker.
        let marker = format!("{mine}/marker-{index}");
        let out = m.publish(index, "311", Some("alice"), &marker).await;
        assert_eq!(out.code, Some(0), "{}", out.text);
        assert_eq!(topics_until(&mut w, &marker).await, [marker.as_str()]);

        let mine_filter = format!("{mine}/#");
        let other_filter = format!("{other}/#");
        let filters = [mine_filter.as_str(), other_filter.as_str()];
        let (_p3, codes) = m.subscribe(index, "311", &filters).await;
        assert_eq!(
            codes, "Subscribed (mid: 1): 0, 128",
            "listener {index} 3.1.1"
        );
        let (mut p5, codes) = m.subscribe(index, "5", &filters).await;
        assert_eq!(codes, "Subscribed (mid: 1): 0, 135", "listener {index} v5");
        // The granted one delivers what the listener's ACL lets alice read.
        let topic = format!("{mine}/to-{index}");
        m.publish(0, "311", None, &topic).await;
        p5.wait_line("with the message", |l| l == format!("{topic} {topic}"))
            .await;
        assert_eq!(topics_until(&mut w, &topic).await, [topic.as_str()]);
    }
}

/// Reload per listener: alice is removed from listener 1's password file. Her listener-1
/// client is disconnected with DISCONNECT 0x98 Administrative action; her listener-2 client
/// (another file) stays connected and keeps receiving; she can no longer log in on listener 1
/// and still can on listener 2.
#[tokio::test(flavor = "multi_thread")]
async fn reload_disconnects_only_the_listener_whose_file_changed() {
    if !have_mosquitto_clients() {
        return;
    }
    let m = matrix("reload").await;
    let (mut on1, codes) = m.subscribe(1, "5", &["a/#"]).await;
    assert_eq!(codes, "Subscribed (mid: 1): 0");
    let (mut on2, codes) = m.subscribe(2, "5", &["b/#"]).await;
    assert_eq!(codes, "Subscribed (mid: 1): 0");

    write_passwords(&m.pki.path("pw-a"), &[("bob", "bpw")]);
    let report = m.broker.handle().reload(&m.cfg);
    let listener1 = report
        .files
        .iter()
        .find(|f| f.what.starts_with("listeners[1] auth files"))
        .unwrap_or_else(|| panic!("listener 1's files were re-read: {report:?}"));
    assert_eq!(listener1.status, ChangeStatus::Applied);

    on1.wait_line("with DISCONNECT 0x98", |l| l == "Received DISCONNECT (152)")
        .await;
    m.publish(0, "311", None, "b/after-reload").await;
    on2.wait_line("with the message after the reload", |l| {
        l == "b/after-reload b/after-reload"
    })
    .await;
    assert!(
        !on2.seen.iter().any(|l| l.contains("DISCONNECT")),
        "{}",
        on2.transcript()
    );
    let out = m.publish(1, "5", Some("alice"), "a/x").await;
    assert_eq!(out.code, Some(0x87), "{}", out.text);
    let out = m.publish(2, "5", Some("alice"), "b/x").await;
    assert_eq!(out.code, Some(0), "{}", out.text);
}

/// A listener file that does not load stops the start, naming the listener and its address.
#[tokio::test]
async fn an_unreadable_listener_file_names_the_listener() {
    let mut cfg = test_config();
    let missing = std::env::temp_dir().join("starling-no-such-passwd");
    cfg.listeners.push(ListenerConfig {
        password_file: Some(missing),
        ..plain(None)
    });
    let err = match starling::Broker::start(cfg).await {
        Ok(_) => panic!("a broker whose listener names a missing password file started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("listeners[1].password_file")
            && err.contains("127.0.0.1:0")
            && err.contains("starling-no-such-passwd"),
        "{err}"
    );
}

/// Retained messages are delivered at SUBSCRIBE only where the subscriber's listener's ACL
/// lets it read them: the same `#` subscription by alice gets `a/r` on listener 1 (ACL A) and
/// `b/r` on listener 2 (ACL B). [MQTT-3.3.1-6]: a new subscription receives the matching
/// retained messages; the ACL narrows "matching" to what the client may read.
#[tokio::test(flavor = "multi_thread")]
async fn retained_delivery_follows_the_listeners_acl() {
    if !have_mosquitto_clients() {
        return;
    }
    let m = matrix("retained").await;
    let mut w = m.watcher("w-retained").await;
    for topic in ["a/r", "b/r"] {
        let mut cmd = m.tool("mosquitto_pub", 0, "311", None);
        cmd.args(["-r", "-q", "1", "-t", topic, "-m", topic]);
        let status = tokio::process::Command::from(cmd).status().await;
        assert!(
            status.is_ok_and(|s| s.success()),
            "retained publish {topic}"
        );
        assert_eq!(topics_until(&mut w, topic).await, [topic]);
    }
    for (index, mine, other) in [(1, "a", "b"), (2, "b", "a")] {
        let (mut p, codes) = m.subscribe(index, "5", &["#"]).await;
        assert_eq!(codes, "Subscribed (mid: 1): 0", "listener {index}");
        let marker = format!("{mine}/marker");
        m.publish(0, "311", None, &marker).await;
        p.wait_line("with the marker", |l| l == format!("{marker} {marker}"))
            .await;
        let retained = |t: &str| p.seen.iter().any(|l| l == &format!("{t}/r {t}/r"));
        assert!(retained(mine), "listener {index}\n{}", p.transcript());
        assert!(!retained(other), "listener {index}\n{}", p.transcript());
    }
}

/// A listener whose files fail to load on reload keeps its previous rules (and says why in
/// the report), while the other listeners take their new ones; the failed change is reported
/// again on the next reload.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_whose_files_fail_keeps_its_rules() {
    if !have_mosquitto_clients() {
        return;
    }
    let m = matrix("reload-fail").await;
    write_passwords(&m.pki.path("pw-a"), &[("bob", "bpw")]);
    let mut cfg = m.cfg.clone();
    cfg.listeners[2].password_file = Some(m.pki.path("pw-missing"));
    for _ in 0..2 {
        let report = m.broker.handle().reload(&cfg);
        let status = |what: &str| {
            let f = report.files.iter().find(|f| f.what.starts_with(what));
            f.unwrap_or_else(|| panic!("{what}: {report:?}"))
                .status
                .clone()
        };
        assert_eq!(status("listeners[1] auth files"), ChangeStatus::Applied);
        match status("listeners[2] auth files") {
            ChangeStatus::Failed(why) => assert!(why.contains("pw-missing"), "{why}"),
            other => panic!("listener 2: {other:?}"),
        }
        let change = report
            .changes
            .iter()
            .find(|c| c.key == "listeners[2].password_file")
            .unwrap_or_else(|| panic!("{report:?}"));
        assert!(matches!(change.status, ChangeStatus::Failed(_)), "{change}");
    }
    // Listener 2 still uses file B; listener 1 the new file A, without alice.
    let out = m.publish(2, "5", Some("alice"), "b/x").await;
    assert_eq!(out.code, Some(0), "{}", out.text);
    let out = m.publish(1, "5", Some("alice"), "a/x").await;
    assert_eq!(out.code, Some(0x87), "{}", out.text);
}
