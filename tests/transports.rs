//! End-to-end tests of the TLS and WebSocket listeners: a broker started in-process with one
//! listener of each kind (certificates made by rcgen at run time), exercised by Rust clients
//! (tokio-rustls, tokio-tungstenite) and by real third-party clients: mosquitto_pub/sub, paho-mqtt
//! (Python), MQTT.js (Node) and MQTT.js in headless Chromium. A missing external client is a
//! skip, or a failure under `STARLING_INTEROP=1`.

#[path = "transports/support.rs"]
mod support;

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use starling::config::{ListenerConfig, ListenerProtocol};
use starling::reload::ChangeStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_rustls::client::TlsStream;

use support::*;

#[tokio::test]
async fn tls_publish_and_receive() {
    let pki = Pki::new("tls-rt");
    let (broker, addrs) = start(config(&pki)).await;
    let tls = pki.tls(addrs.mqtts, false).await.unwrap();
    let (mut m, rc) = Mqtt::connect(tls, "tls-rt").await.unwrap();
    assert_eq!(rc, 0);
    m.subscribe("tls/rt").await.unwrap();
    m.publish("tls/rt", b"over tls").await.unwrap();
    let (topic, payload) = m.recv_publish().await.unwrap();
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("tls/rt", &b"over tls"[..])
    );
    // A TLS publisher reaches a plain subscriber, too.
    let mut w = watcher(addrs.mqtt, "tls/cross").await;
    m.publish("tls/cross", b"to plain").await.unwrap();
    expect(&mut w, b"to plain").await;
    stop(broker).await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = Pki::new("mtls");
    let (broker, addrs) = start(config(&pki)).await;
    let tls = pki.tls(addrs.mtls, true).await.unwrap();
    let (_m, rc) = Mqtt::connect(tls, "mtls-ok").await.unwrap();
    assert_eq!(rc, 0);
    // Without a certificate: TLS 1.3 clients finish their side before the server decides, so
    // the refusal shows up as a failed handshake or as an error on the first read.
    let refused = match pki.tls(addrs.mtls, false).await {
        Err(_) => true,
        Ok(tls) => Mqtt::connect(tls, "mtls-no").await.is_err(),
    };
    assert!(refused, "a client without a certificate was let in");
    // The optional-certificate listener takes both.
    let tls = pki.tls(addrs.mqtts, true).await.unwrap();
    assert_eq!(Mqtt::connect(tls, "opt-cert").await.unwrap().1, 0);
    stop(broker).await;
}

#[tokio::test]
async fn untrusted_client_certificate_is_refused() {
    let pki = Pki::new("mtls-untrusted");
    let other = Pki::new("mtls-other");
    let (broker, addrs) = start(config(&pki)).await;
    // `other` trusts its own CA for the server, so give it ours and keep its client cert.
    std::fs::copy(pki.path("ca.pem"), other.path("ca.pem")).unwrap();
    let refused = match other.tls(addrs.mqtts, true).await {
        Err(_) => true,
        Ok(tls) => Mqtt::connect(tls, "untrusted").await.is_err(),
    };
    assert!(refused, "a certificate from an unknown CA was accepted");
    stop(broker).await;
}

#[tokio::test]
async fn websocket_answers_mqtt_subprotocol_and_carries_mqtt() {
    let pki = Pki::new("ws-rt");
    let (broker, addrs) = start(config(&pki)).await;
    let url = format!("ws://{}/mqtt", addrs.ws);
    for offered in ["mqtt", "mqttv3.1"] {
        let tcp = TcpStream::connect(addrs.ws).await.unwrap();
        let (ws, answered) = ws_client(tcp, &url, Some(offered)).await.unwrap();
        assert_eq!(answered.as_deref(), Some(offered));
        let (mut m, rc) = Mqtt::connect(ws, &format!("ws-{offered}")).await.unwrap();
        assert_eq!(rc, 0);
        m.subscribe("ws/rt").await.unwrap();
        m.publish("ws/rt", offered.as_bytes()).await.unwrap();
        assert_eq!(m.recv_publish().await.unwrap().1, offered.as_bytes());
        // A packet larger than one outgoing WebSocket message (64 KiB): it spans several.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        m.publish("ws/rt", &big).await.unwrap();
        assert!(
            m.recv_publish().await.unwrap().1 == big,
            "300 KB over WS intact"
        );
    }
    // Without a `path`, any path is served, as Mosquitto does: MQTT.js and Mosquitto users'
    // `ws://host:port` URLs upgrade on `/`.
    for path in ["/", "/nope"] {
        let tcp = TcpStream::connect(addrs.ws).await.unwrap();
        let url = format!("ws://{}{path}", addrs.ws);
        let (ws, _) = ws_client(tcp, &url, Some("mqtt")).await.unwrap();
        assert_eq!(Mqtt::connect(ws, "ws-any-path").await.unwrap().1, 0);
    }
    stop(broker).await;
    // With a `path`, another path gets 404, and the listener keeps working.
    let mut cfg = config(&pki);
    cfg.listeners[3].path = Some("/mqtt".into());
    let (broker, addrs) = start(cfg).await;
    let tcp = TcpStream::connect(addrs.ws).await.unwrap();
    let bad = format!("ws://{}/nope", addrs.ws);
    match ws_client(tcp, &bad, Some("mqtt")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404)
        }
        Err(e) => panic!("expected 404, got {e}"),
        Ok(_) => panic!("expected 404, got an upgrade"),
    }
    let tcp = TcpStream::connect(addrs.ws).await.unwrap();
    let url = format!("ws://{}/mqtt", addrs.ws);
    let (ws, _) = ws_client(tcp, &url, Some("mqtt")).await.unwrap();
    assert_eq!(Mqtt::connect(ws, "ws-right-path").await.unwrap().1, 0);
    stop(broker).await;
}

#[tokio::test]
async fn secure_websocket_publish_and_receive() {
    let pki = Pki::new("wss-rt");
    let (broker, addrs) = start(config(&pki)).await;
    let tls = pki.tls(addrs.wss, false).await.unwrap();
    let url = format!("wss://127.0.0.1:{}/mqtt", addrs.wss.port());
    let (ws, answered) = ws_client(tls, &url, Some("mqtt")).await.unwrap();
    assert_eq!(answered.as_deref(), Some("mqtt"));
    let (mut m, rc) = Mqtt::connect(ws, "wss-rt").await.unwrap();
    assert_eq!(rc, 0);
    let mut w = watcher(addrs.mqtt, "wss/rt").await;
    m.publish("wss/rt", b"over wss").await.unwrap();
    expect(&mut w, b"over wss").await;
    stop(broker).await;
}

#[tokio::test]
async fn silent_handshake_times_out_without_blocking_accept() {
    let pki = Pki::new("hs-timeout");
    let mut cfg = config(&pki);
    for l in &mut cfg.listeners[1..] {
        l.handshake_timeout = Some(Duration::from_millis(300));
    }
    let (broker, addrs) = start(cfg).await;
    for addr in [addrs.mqtts, addrs.ws, addrs.wss] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Others are served while the silent one holds its handshake open.
        if addr == addrs.ws {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let url = format!("ws://{addr}/mqtt");
            let (ws, _) = ws_client(tcp, &url, Some("mqtt")).await.unwrap();
            assert_eq!(Mqtt::connect(ws, "beside-silent").await.unwrap().1, 0);
        } else {
            let tls = pki.tls(addr, false).await.unwrap();
            drop(tls);
        }
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("the silent connection was not closed by the handshake timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    stop(broker).await;
}

#[tokio::test]
async fn plain_http_on_websocket_listener_gets_400() {
    let pki = Pki::new("ws-400");
    let (broker, addrs) = start(config(&pki)).await;
    let mut tcp = TcpStream::connect(addrs.ws).await.unwrap();
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    stop(broker).await;
}

#[tokio::test]
async fn certificate_is_reloaded_when_the_files_change() {
    let pki = Pki::new("reload");
    let (broker, addrs) = start(config(&pki)).await;
    let leaf = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    let before = leaf(&pki.tls(addrs.mqtts, false).await.unwrap());
    pki.issue_server("server", "Renewed Server");
    // The watcher polls every few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let tls = pki.tls(addrs.mqtts, false).await.unwrap();
        if leaf(&tls) != before {
            assert_eq!(Mqtt::connect(tls, "renewed").await.unwrap().1, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A broken file keeps the renewed certificate in service.
    std::fs::write(pki.path("server.pem"), "broken").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tls = pki.tls(addrs.mqtts, false).await.unwrap();
    assert_eq!(Mqtt::connect(tls, "still-renewed").await.unwrap().1, 0);
    stop(broker).await;
}

/// Whether a mutual-TLS listener refused the client: TLS 1.3 clients finish their side before
/// the server decides, so the refusal shows up as a failed handshake or as an error on the
/// first read.
async fn refused(tls: std::io::Result<TlsStream<TcpStream>>, id: &str) -> bool {
    match tls {
        Err(_) => true,
        Ok(tls) => Mqtt::connect(tls, id).await.is_err(),
    }
}

fn leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn server_der(pki: &Pki) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pki.path("server.pem")).unwrap()
}

/// SIGHUP (`BrokerHandle::reload`) applies a new configuration's certificate, key and CA:
/// new handshakes present the new server certificate and verify clients against the new CA
/// (a client certificate of the old CA is refused), a CA bundle rewritten in place is re-read,
/// connections made before the reload keep working, and a bad certificate or CA is reported
/// Failed while the material in use stays. New paths are used so that only the reload, not the
/// file watcher, can have picked them up.
#[tokio::test]
async fn reload_applies_new_certificate_key_and_ca() {
    let old = Pki::new("reload-old");
    let new = Pki::new("reload-new");
    let mut cfg = config(&old);
    let (broker, addrs) = start(cfg.clone()).await;

    let tls = old.tls(addrs.mtls, true).await.unwrap();
    assert_eq!(leaf(&tls), server_der(&old));
    let (mut before, rc) = Mqtt::connect(tls, "before-reload").await.unwrap();
    assert_eq!(rc, 0);
    before.subscribe("reload/alive").await.unwrap();

    // Listeners 1 (mqtts) and 2 (mutual TLS) move to the new CA's files.
    for l in &mut cfg.listeners[1..=2] {
        l.cert = Some(new.path("server.pem"));
        l.key = Some(new.path("server.key"));
        l.ca = Some(new.path("ca.pem"));
    }
    let report = broker.reload(&cfg);
    let applied: Vec<&str> = report.applied().map(|c| c.key.as_str()).collect();
    assert_eq!(
        applied,
        [
            "listeners[1].ca",
            "listeners[1].cert",
            "listeners[1].key",
            "listeners[2].ca",
            "listeners[2].cert",
            "listeners[2].key",
        ],
        "{report:?}"
    );
    assert_eq!(report.changes.len(), 6, "{report:?}");
    assert!(
        report
            .files
            .iter()
            .all(|f| f.status == ChangeStatus::Applied),
        "{report:?}"
    );

    let tls = new.tls(addrs.mqtts, false).await.unwrap();
    assert_eq!(leaf(&tls), server_der(&new), "the new server certificate");
    let tls = new.tls(addrs.mtls, true).await.unwrap();
    assert_eq!(Mqtt::connect(tls, "new-ca").await.unwrap().1, 0);
    assert!(
        refused(new.tls_as(addrs.mtls, &old.path("client")).await, "old-ca").await,
        "a client certificate of the old CA was accepted after the reload"
    );
    let tls = old.tls(addrs.wss, false).await.unwrap();
    assert_eq!(leaf(&tls), server_der(&old), "listener 4 was not changed");
    before.publish("reload/alive", b"still here").await.unwrap();
    assert_eq!(before.recv_publish().await.unwrap().1, b"still here");

    // A CA bundle rewritten in place (now both CAs) is read again by the reload.
    let bundle = [new.path("ca.pem"), old.path("ca.pem")]
        .map(|p| std::fs::read_to_string(p).unwrap())
        .concat();
    std::fs::write(new.path("ca.pem"), bundle).unwrap();
    let report = broker.reload(&cfg);
    assert!(report.changes.is_empty(), "{report:?}");
    let tls = new.tls_as(addrs.mtls, &old.path("client")).await.unwrap();
    assert_eq!(Mqtt::connect(tls, "old-ca-in-bundle").await.unwrap().1, 0);

    // A bad certificate: Failed, naming the file; the certificate in use stays.
    std::fs::write(new.path("broken.pem"), "not a certificate").unwrap();
    let mut bad = cfg.clone();
    bad.listeners[1].cert = Some(new.path("broken.pem"));
    let report = broker.reload(&bad);
    let failed: Vec<String> = report.failed().map(ToString::to_string).collect();
    assert_eq!(failed.len(), 1, "{report:?}");
    assert!(
        failed[0].starts_with("listeners[1].cert:") && failed[0].contains("broken.pem"),
        "{failed:?}"
    );
    let tls = new.tls(addrs.mqtts, false).await.unwrap();
    assert_eq!(leaf(&tls), server_der(&new));
    assert_eq!(Mqtt::connect(tls, "after-bad-cert").await.unwrap().1, 0);

    // A CA file without certificates: Failed; the bundle in use stays.
    std::fs::write(new.path("empty-ca.pem"), "").unwrap();
    let mut bad = cfg.clone();
    bad.listeners[2].ca = Some(new.path("empty-ca.pem"));
    let report = broker.reload(&bad);
    assert!(
        matches!(
            report.failed().map(|c| c.key.as_str()).collect::<Vec<_>>()[..],
            ["listeners[2].ca"]
        ),
        "{report:?}"
    );
    let tls = new.tls(addrs.mtls, true).await.unwrap();
    assert_eq!(Mqtt::connect(tls, "after-bad-ca").await.unwrap().1, 0);
    let tls = new.tls_as(addrs.mtls, &old.path("client")).await.unwrap();
    assert_eq!(Mqtt::connect(tls, "after-bad-ca-old").await.unwrap().1, 0);

    // The failed reloads left the running configuration as it was.
    let report = broker.reload(&cfg);
    assert!(report.changes.is_empty(), "{report:?}");
    stop(broker).await;
}

/// `use_identity_as_username` makes the client certificate's Common Name the username and
/// `use_subject_as_username` its RFC 2253 subject, replacing any username in CONNECT; the ACL
/// then applies to that name. ACL: `client1` may use `cn/#`, `CN=client1,O=Starling` may use
/// `subject/#`, nobody else anything. Every client sends the username `client1` in CONNECT, so
/// only the certificate can make the difference.
#[tokio::test]
async fn certificate_names_the_user_for_the_acl() {
    let pki = Pki::new("cert-user");
    pki.issue_client("other", "other");
    std::fs::write(
        pki.path("acl"),
        "user client1\ntopic readwrite cn/#\nuser CN=client1,O=Starling\ntopic readwrite subject/#\n",
    )
    .unwrap();
    let mut cfg = config(&pki);
    let mtls = |use_identity, use_subject| ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        protocol: ListenerProtocol::Mqtts,
        cert: Some(pki.path("server.pem")),
        key: Some(pki.path("server.key")),
        ca: Some(pki.path("ca.pem")),
        require_certificate: true,
        use_identity_as_username: use_identity,
        use_subject_as_username: use_subject,
        ..ListenerConfig::default()
    };
    cfg.listeners = vec![mtls(true, false), mtls(false, true)];
    cfg.auth.acl_file = Some(pki.path("acl"));
    let broker = starling::Broker::start(cfg).await.expect("broker starts");
    let [by_cn, by_subject] = broker.local_addrs()[..] else {
        panic!("two listeners")
    };

    // (listener, client certificate, filter, expected SUBACK return code)
    let cases = [
        (by_cn, "client", "cn/x", 0),
        (by_cn, "client", "subject/x", 0x80),
        (by_cn, "other", "cn/x", 0x80),
        (by_subject, "client", "subject/x", 0),
        (by_subject, "client", "cn/x", 0x80),
        (by_subject, "other", "subject/x", 0x80),
    ];
    for (i, (addr, cert, filter, want)) in cases.into_iter().enumerate() {
        let tls = pki.tls_as(addr, &pki.path(cert)).await.unwrap();
        let (mut m, rc) = Mqtt::connect_as(tls, &format!("cert-user-{i}"), Some("client1"))
            .await
            .unwrap();
        assert_eq!(rc, 0, "case {i}");
        let listener = if addr == by_cn { "CN" } else { "subject" };
        assert_eq!(
            m.subscribe_code(filter).await.unwrap(),
            want,
            "case {i}: certificate {cert} on the {listener} listener subscribing to {filter}"
        );
        // Writes follow the same name: a granted client receives its own publish.
        if want == 0 {
            m.publish(filter, b"mine").await.unwrap();
            assert_eq!(
                m.recv_publish().await.unwrap(),
                (filter.to_owned(), b"mine".to_vec())
            );
        }
    }
    stop(broker).await;
}

#[tokio::test]
async fn broker_refuses_to_start_with_a_bad_certificate() {
    let pki = Pki::new("bad-cert");
    let mut cfg = config(&pki);
    cfg.listeners[1].key = Some(pki.path("client.key"));
    match starling::Broker::start(cfg).await {
        Err(e) => assert!(e.to_string().contains("listener 1"), "{e}"),
        Ok(_) => panic!("started with a key that does not match the certificate"),
    }
}

fn mosquitto_available() -> bool {
    available(
        "mosquitto_pub/mosquitto_sub",
        runs("mosquitto_pub", &["--help"]) || which("mosquitto_pub"),
    )
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
}

fn mosquitto(tool: &str, port: u16, pki: &Pki, client_cert: bool) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
        .arg(pki.path("ca.pem"));
    if client_cert {
        cmd.arg("--cert")
            .arg(pki.path("client.pem"))
            .arg("--key")
            .arg(pki.path("client.key"));
    }
    cmd
}

#[tokio::test]
async fn mosquitto_clients_over_tls() {
    if !mosquitto_available() {
        return;
    }
    let pki = Pki::new("mosq-tls");
    let (broker, addrs) = start(config(&pki)).await;
    let port = addrs.mqtts.port();
    let mut sub = mosquitto("mosquitto_sub", port, &pki, false);
    sub.args(["-t", "mosq/tls", "-C", "1", "-W", "15", "-i", "mosq-sub"]);
    let sub = tokio::spawn(async move { run(&mut sub, Duration::from_secs(20)).await });
    // Publish until the subscriber has its message (it may not be subscribed yet).
    let mut w = watcher(addrs.mqtt, "mosq/tls").await;
    let mut done = false;
    for _ in 0..40 {
        let mut publ = mosquitto("mosquitto_pub", port, &pki, false);
        publ.args(["-t", "mosq/tls", "-m", "hello-mosquitto"]);
        let (ok, out) = run(&mut publ, Duration::from_secs(10)).await;
        assert!(ok, "mosquitto_pub over TLS failed: {out}");
        expect(&mut w, b"hello-mosquitto").await;
        if sub.is_finished() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(done, "mosquitto_sub got nothing");
    let (ok, out) = sub.await.unwrap();
    assert!(
        ok && out.contains("hello-mosquitto"),
        "mosquitto_sub: {out}"
    );
    stop(broker).await;
}

#[tokio::test]
async fn mosquitto_clients_mutual_tls() {
    if !mosquitto_available() {
        return;
    }
    let pki = Pki::new("mosq-mtls");
    let (broker, addrs) = start(config(&pki)).await;
    let mut w = watcher(addrs.mqtt, "mosq/mtls").await;
    let mut publ = mosquitto("mosquitto_pub", addrs.mtls.port(), &pki, true);
    publ.args(["-t", "mosq/mtls", "-m", "with-cert"]);
    let (ok, out) = run(&mut publ, Duration::from_secs(10)).await;
    assert!(ok, "mosquitto_pub with a client certificate failed: {out}");
    expect(&mut w, b"with-cert").await;

    let mut publ = mosquitto("mosquitto_pub", addrs.mtls.port(), &pki, false);
    publ.args(["-t", "mosq/mtls", "-m", "without-cert"]);
    let (ok, out) = run(&mut publ, Duration::from_secs(10)).await;
    assert!(
        !ok,
        "mosquitto_pub without a certificate was accepted: {out}"
    );
    // Nothing arrived from the refused client.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(500), w.io.read(&mut buf)).await;
    assert!(r.is_err(), "unexpected data: {r:?}");
    stop(broker).await;
}

const PAHO_SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
mode, host, port, topic, ca = sys.argv[1:6]
got = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + mode,
                transport="websockets" if mode in ("ws", "wss") else "tcp")
if mode in ("ws", "wss"):
    c.ws_set_options(path="/mqtt")
if mode in ("tls", "wss"):
    c.tls_set(ca_certs=ca)
def on_connect(c, u, flags, rc, props):
    if rc != 0:
        print("connect refused", rc); got.set()
    c.subscribe(topic, qos=1)
def on_subscribe(c, u, mid, rcs, props):
    c.publish(topic, b"hello-paho-" + mode.encode(), qos=1)
def on_message(c, u, m):
    if m.payload == b"hello-paho-" + mode.encode():
        print("received"); got.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, int(port), keepalive=30)
c.loop_start()
ok = got.wait(15)
c.disconnect(); c.loop_stop()
sys.exit(0 if ok else 1)
"#;

fn paho_available() -> bool {
    available(
        "python3 with paho-mqtt 2.x",
        runs(
            "python3",
            &[
                "-c",
                "import paho.mqtt, sys; sys.exit(paho.mqtt.__version__.split('.')[0] != '2')",
            ],
        ),
    )
}

#[tokio::test]
async fn paho_python_over_tls_ws_and_wss() {
    if !paho_available() {
        return;
    }
    let pki = Pki::new("paho");
    let (broker, addrs) = start(config(&pki)).await;
    for (mode, addr) in [("tls", addrs.mqtts), ("ws", addrs.ws), ("wss", addrs.wss)] {
        let mut w = watcher(addrs.mqtt, &format!("paho/{mode}")).await;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PAHO_SCRIPT, mode, "127.0.0.1"])
            .arg(addr.port().to_string())
            .arg(format!("paho/{mode}"))
            .arg(pki.path("ca.pem"));
        let (ok, out) = run(&mut cmd, Duration::from_secs(30)).await;
        assert!(ok && out.contains("received"), "paho over {mode}: {out}");
        expect(&mut w, format!("hello-paho-{mode}").as_bytes()).await;
    }
    stop(broker).await;
}

fn mqtt_js_available() -> bool {
    let installed = js_dir().join("node_modules/mqtt/package.json").is_file();
    available(
        "node with MQTT.js in tests/js (npm ci --prefix tests/js)",
        installed && runs("node", &["--version"]),
    )
}

#[tokio::test]
async fn mqtt_js_over_ws_and_wss() {
    if !mqtt_js_available() {
        return;
    }
    let pki = Pki::new("mqttjs");
    let (broker, addrs) = start(config(&pki)).await;
    let cases = [
        ("ws", format!("ws://127.0.0.1:{}/mqtt", addrs.ws.port())),
        ("wss", format!("wss://127.0.0.1:{}/mqtt", addrs.wss.port())),
    ];
    for (mode, url) in cases {
        let mut w = watcher(addrs.mqtt, &format!("js/{mode}")).await;
        let mut cmd = Command::new("node");
        cmd.arg(js_dir().join("pubsub.js"))
            .arg(&url)
            .arg(format!("js/{mode}"))
            .arg(pki.path("ca.pem"));
        let (ok, out) = run(&mut cmd, Duration::from_secs(30)).await;
        assert!(ok && out.contains("received"), "MQTT.js over {mode}: {out}");
        expect(&mut w, b"hello-mqttjs").await;
    }
    stop(broker).await;
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| which(c))
}

/// Serves `/` (the test page) and `/mqtt.min.js` (MQTT.js's browser bundle) over HTTP/1.0.
async fn serve_page(listener: TcpListener, page: String, bundle: Vec<u8>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let (page, bundle) = (page.clone(), bundle.clone());
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, ctype, body) = match path.as_str() {
                "/" => ("200 OK", "text/html", page.into_bytes()),
                "/mqtt.min.js" => ("200 OK", "application/javascript", bundle),
                _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&body).await;
            let _ = tcp.shutdown().await;
        });
    }
}

#[tokio::test]
async fn mqtt_js_in_headless_chromium_over_ws() {
    let bundle = js_dir().join("node_modules/mqtt/dist/mqtt.min.js");
    let browser = chromium();
    if !available("chromium", browser.is_some()) || !mqtt_js_available() {
        return;
    }
    let browser = browser.unwrap_or("chromium");
    let pki = Pki::new("browser");
    let (broker, addrs) = start(config(&pki)).await;
    let mut w = watcher(addrs.mqtt, "browser/result").await;
    let page = std::fs::read_to_string(js_dir().join("browser.html"))
        .unwrap()
        .replace(
            "__WS_URL__",
            &format!("ws://127.0.0.1:{}/mqtt", addrs.ws.port()),
        );
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_port = http.local_addr().unwrap().port();
    let server = tokio::spawn(serve_page(http, page, std::fs::read(bundle).unwrap()));
    let profile = Scratch::new("chromium-profile");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(format!("http://127.0.0.1:{http_port}/"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    // Chromium's first start can be slow; each receive gives up after 10 s, so retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let result = loop {
        match w.recv_publish().await {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if tokio::time::Instant::now() >= deadline {
                    break Err(e);
                }
            }
            other => break other,
        }
    };
    // End the browser and its helper processes (its own process group).
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
    let _ = child.wait().await;
    server.abort();
    let (_, payload) = result.expect("no result from the browser within 60s");
    assert_eq!(String::from_utf8_lossy(&payload), "ok:hello-from-browser");
    stop(broker).await;
}
