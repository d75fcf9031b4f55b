//! Debian's `haproxy` in front of the broker in TCP mode with `send-proxy-v2`: to a plain
//! listener, and TLS passed through to an `mqtts` listener. haproxy connects from 127.0.0.3
//! (`source`), the only address the listeners trust; the clients connect from 127.0.0.1. So a
//! session whose peer is 127.0.0.1, and a login failure counted for 127.0.0.1 and not for
//! 127.0.0.3, show that the broker took the client address from the header.
//! A second test has haproxy check the broker at the MQTT level (CONNECT, expect CONNACK) over
//! `send-proxy-v2`, whose checks start with a LOCAL header.
//!
//! haproxy's frontends listen on sockets this test binds (port 0) and hands over as inherited
//! descriptors (`bind fd@N`): no port is picked and released, and clients can connect before
//! haproxy has even started (the kernel queues them).

use std::net::{IpAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use starling::config::{Config, ListenerConfig, ListenerProtocol};

use crate::common::skip::skip;
use crate::common::*;

/// haproxy's path: on PATH, or Debian's /usr/sbin (not on a normal user's PATH).
fn haproxy_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("haproxy"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|p| p.is_file()))
}

/// A listening socket haproxy inherits: close-on-exec cleared, so the child keeps it.
fn inheritable_listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let fd = l.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `l`, alive for the call; F_SETFD only
    // changes its flags.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    assert_eq!(rc, 0, "clear FD_CLOEXEC");
    l
}

/// Starts haproxy with `config` in the foreground (`-db`); killed when the Proc is dropped.
fn start_haproxy(bin: &Path, dir: &Path, config: &str) -> Proc {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    Proc::spawn("haproxy", Command::new(bin).arg("-f").arg(&cfg).arg("-db"))
}

/// A broker with a plain listener for the test's own use, a proxied plain listener and a
/// proxied `mqtts` listener, both trusting only 127.0.0.3; `alice:right` in a password file,
/// anonymous clients allowed.
fn broker_config(dir: &Path, pki: &crate::tls_pki::Pki) -> Config {
    let mut cfg = test_config();
    let trusted = Some(vec!["127.0.0.3/32".parse().unwrap()]);
    let proxied = ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        proxy_protocol: true,
        proxy_protocol_trusted: trusted.clone(),
        ..ListenerConfig::default()
    };
    cfg.listeners.push(proxied.clone());
    cfg.listeners.push(ListenerConfig {
        protocol: ListenerProtocol::Mqtts,
        cert: Some(pki.cert.clone()),
        key: Some(pki.key.clone()),
        ..proxied
    });
    let passwd = dir.join("passwd");
    let hash = starling::auth::password::hash_password(b"right", 10).expect("hash");
    std::fs::write(&passwd, format!("alice:{hash}\n")).unwrap();
    cfg.auth.password_file = Some(passwd);
    cfg.auth.allow_anonymous = Some(true);
    cfg
}

fn haproxy_config(front: [&TcpListener; 2], back: [u16; 2]) -> String {
    let mut c = String::from(
        "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
         timeout client 60s\n  timeout server 60s\n",
    );
    for (i, (f, port)) in front.iter().zip(back).enumerate() {
        c.push_str(&format!(
            "frontend f{i}\n  bind fd@{}\n  default_backend b{i}\nbackend b{i}\n  \
             server s{i} 127.0.0.1:{port} send-proxy-v2 source 127.0.0.3\n",
            f.as_raw_fd()
        ));
    }
    c
}

/// Subscribes through haproxy as `id`, checks the broker sees 127.0.0.1 (not haproxy's
/// 127.0.0.3), publishes through haproxy and expects the message.
async fn round_trip(broker: &TestBroker, port: u16, tls: &[&str], id: &str) {
    let port = port.to_string();
    let common = ["-h", "127.0.0.1", "-p", &port];
    let topic = format!("haproxy/{id}");
    let mut sub = Proc::spawn(
        "mosquitto_sub",
        crate::mosquitto_sub()
            .args(common)
            .args(tls)
            .args(["-i", id, "-q", "1", "-C", "1", "-d", "-t", &topic]),
    );
    sub.wait_line("SUBACK", |l| l.contains("SUBACK")).await;
    let peer = broker
        .state()
        .session_info(id)
        .and_then(|s| s.peer)
        .expect("the subscriber's session");
    assert!(
        peer.starts_with("127.0.0.1:"),
        "{id}: the broker should see the client (127.0.0.1), not haproxy: {peer}"
    );
    run_ok(
        "mosquitto_pub",
        Command::new("mosquitto_pub").args(common).args(tls).args([
            "-q",
            "1",
            "-t",
            &topic,
            "-m",
            "via-haproxy",
        ]),
    )
    .await;
    sub.wait_line("the message", |l| l == "via-haproxy").await;
    // A failed login through haproxy is counted against the client's address.
    let mut bad = Proc::spawn(
        "mosquitto_pub (wrong password)",
        Command::new("mosquitto_pub")
            .args(common)
            .args(tls)
            .args(["-u", "alice", "-P", "wrong", "-t", "x", "-m", "x"]),
    );
    assert!(!bad.exit_within(WAIT).await.success(), "refused");
}

#[tokio::test]
async fn haproxy_send_proxy_v2_plain_and_tls_passthrough() {
    let Some(bin) = haproxy_binary() else {
        skip("haproxy is not installed");
        return;
    };
    if !have_mosquitto_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::tls_pki::Pki::new(dir.path());
    let broker = start_with(broker_config(dir.path(), &pki)).await;
    let addrs = broker.handle().local_addrs();
    let fronts = [inheritable_listener(), inheritable_listener()];
    let config = haproxy_config([&fronts[0], &fronts[1]], [addrs[1].port(), addrs[2].port()]);
    let haproxy = start_haproxy(&bin, dir.path(), &config);
    let ports = fronts.each_ref().map(|f| f.local_addr().unwrap().port());
    round_trip(&broker, ports[0], &[], "hap-plain").await;
    let ca = pki.ca.to_string_lossy().into_owned();
    round_trip(&broker, ports[1], &["--cafile", &ca], "hap-tls").await;
    let slowdown = broker.state().login_slowdown();
    let now = std::time::Instant::now();
    assert_eq!(
        slowdown.failures(IpAddr::from([127, 0, 0, 1]), now),
        2,
        "both failed logins counted for the client's address"
    );
    assert_eq!(slowdown.failures(IpAddr::from([127, 0, 0, 3]), now), 0);
    drop(haproxy);
}

/// haproxy checks the broker at the MQTT level through a `send-proxy-v2` server line: the
/// check's connection starts with a v2 LOCAL header (the proxy's own connection), then sends a
/// CONNECT and expects an accepting CONNACK. PROXY protocol spec 2.2: for LOCAL "the receiver
/// must accept this connection as valid and must use the real connection endpoints"; a broker
/// that closed it would be marked DOWN and get no traffic.
#[tokio::test]
async fn haproxy_mqtt_health_check_over_send_proxy_v2_passes() {
    let Some(bin) = haproxy_binary() else {
        skip("haproxy is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::tls_pki::Pki::new(dir.path());
    let broker = start_with(broker_config(dir.path(), &pki)).await;
    let port = broker.handle().local_addrs()[1].port();
    let connect: String = ConnectOpts::v311("hap-check")
        .encode()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = format!(
        "global\n  nbthread 1\n  log stdout format raw local0\ndefaults\n  mode tcp\n  log global\n  \
         timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         backend checked\n  option log-health-checks\n  option tcp-check\n  \
         tcp-check connect default\n  tcp-check send-binary {connect}\n  \
         tcp-check expect binary 20020000\n  tcp-check send-binary e000\n  \
         server s 127.0.0.1:{port} send-proxy-v2 source 127.0.0.3 check inter 100ms\n"
    );
    // haproxy will not start without a listener: a frontend nobody uses.
    let front = inheritable_listener();
    let config = format!(
        "{config}frontend f\n  bind fd@{}\n  default_backend checked\n",
        front.as_raw_fd()
    );
    let mut haproxy = start_haproxy(&bin, dir.path(), &config);
    let verdict = haproxy
        .wait_line("with a health check result", |l| {
            l.contains("Health check for server checked/s")
        })
        .await;
    assert!(
        verdict.contains("succeeded"),
        "{verdict}\n{}",
        haproxy.transcript()
    );
}
