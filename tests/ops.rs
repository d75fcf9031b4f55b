//! Operations tests: the Prometheus and health endpoint, the `$SYS` tree as `mosquitto_sub`
//! sees it, systemd notifications and SIGHUP reload of the real binary, and the shipped Docker
//! configuration. (`config/starling.toml` passing `check-config` is tested in `tests/cli.rs`.)
//!
//! The `$SYS` test needs `mosquitto_sub` (Debian `mosquitto-clients`) and one scrape test needs
//! Python's `prometheus_client`; without them those tests are skipped with a message, unless
//! `STARLING_INTEROP=1` makes that a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use starling::config::Config;
use starling::{Broker, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc as tmpsc;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn start(toml: &str) -> BrokerHandle {
    let config = Config::from_toml_str(toml).expect("test configuration");
    Broker::start(config).await.expect("broker starts")
}

/// A broker with one MQTT listener and the metrics endpoint, no `$SYS` rounds: the handle,
/// the MQTT address and the HTTP one.
async fn start_with_metrics() -> (BrokerHandle, SocketAddr, SocketAddr) {
    let handle = start(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[metrics]\nbind = \"127.0.0.1:0\"\n\
         [sys]\ninterval = \"0s\"\n",
    )
    .await;
    let mqtt = handle.local_addrs()[0];
    let http = handle.metrics_addr().expect("metrics endpoint configured");
    (handle, mqtt, http)
}

/// A connected rumqttc client whose event loop runs in a task; received PUBLISH packets come
/// out of the returned channel as (topic, payload).
async fn client(
    addr: SocketAddr,
    id: &str,
) -> (AsyncClient, tmpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (tx, rx) = tmpsc::unbounded_channel();
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut conn_tx = Some(conn_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(t) = conn_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), conn_rx)
        .await
        .expect("CONNACK in time")
        .expect("event loop alive");
    (client, rx)
}

async fn recv_n(
    rx: &mut tmpsc::UnboundedReceiver<(String, Vec<u8>)>,
    n: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => panic!("received {} of {n} messages: {got:?}", got.len()),
        }
    }
    got
}

/// `GET path` over a plain HTTP/1.0 connection: (status, headers, body).
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_owned(), body.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// A strict parser for the Prometheus text exposition format 0.0.4 (the subset Starling emits:
// counters and gauges, no timestamps).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<(BTreeMap<String, String>, f64)>,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest
            .split_once("=\"")
            .ok_or(format!("bad label in {s:?}"))?;
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {s:?}")),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name:?}"));
        }
        rest = &r[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} in {s:?}"));
        }
    }
}

fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("exposition does not end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
            let f = families.entry(name.to_owned()).or_default();
            if !f.help.is_empty() || !f.samples.is_empty() {
                return Err(format!("HELP for {name} repeated or after samples"));
            }
            f.help = help.to_owned();
            current = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !["counter", "gauge", "untyped", "summary", "histogram"].contains(&kind) {
                return Err(format!("unknown type {kind}"));
            }
            let f = families.entry(name.to_owned()).or_default();
            if !f.kind.is_empty() || !f.samples.is_empty() {
                return Err(format!("TYPE for {name} repeated or after samples"));
            }
            f.kind = kind.to_owned();
            current = Some(name.to_owned());
        } else if line.starts_with('#') {
            continue;
        } else if line.trim().is_empty() {
            return Err("empty line".into());
        } else {
            let end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
            let name = &line[..end];
            if !valid_name(name) {
                return Err(format!("bad metric name {name:?}"));
            }
            let (labels, rest) = match line[end..].strip_prefix('{') {
                Some(r) => parse_labels(r)?,
                None => (BTreeMap::new(), &line[end..]),
            };
            let value = rest
                .strip_prefix(' ')
                .ok_or(format!("no space before value: {line}"))?;
            if value.contains(' ') {
                return Err(format!("unexpected timestamp or junk: {line}"));
            }
            let value: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
            if current.as_deref() != Some(name) {
                return Err(format!("sample {name} outside its family block"));
            }
            let f = families.get_mut(name).ok_or("undeclared family")?;
            if f.kind.is_empty() || f.help.is_empty() {
                return Err(format!("{name} has no TYPE or HELP"));
            }
            if f.samples.iter().any(|(l, _)| *l == labels) {
                return Err(format!("duplicate series {line}"));
            }
            f.samples.push((labels, value));
        }
    }
    Ok(families)
}

fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = families
        .get(name)
        .unwrap_or_else(|| panic!("no family {name}"));
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.samples
        .iter()
        .find(|(l, _)| *l == want)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[test]
fn parser_is_strict() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 2\n";
    let f = parse_exposition(ok).unwrap();
    assert_eq!(value(&f, "a_total", &[("x", "1\"")]), 2.0);
    for bad in [
        "a 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1",
        "# HELP a A.\n# TYPE a gauge\na 1 2 3\n",
        "# HELP a A.\n# TYPE a gauge\na{x=\"1} 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a A.\n# TYPE a wat\na 1\n",
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?} should not parse");
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Prometheus endpoint
// ---------------------------------------------------------------------------------------------

/// `$SYS/broker/clients/maximum` (and its gauge) counts sessions, connected or not, as
/// Mosquitto's does: two persistent clients that left and one connected make three, though
/// never more than two were connected at once (h11 M3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_maximum_counts_sessions_as_mosquitto_does() {
    let (_handle, mqtt, http) = start_with_metrics().await;
    let scrape = |name: &'static str| async move {
        let (_, _, body) = http_get(http, "/metrics").await.unwrap();
        let f = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        value(&f, name, &[])
    };
    for id in ["ops-max-a", "ops-max-b"] {
        let mut opts = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
        opts.set_clean_session(false);
        let (c, mut eventloop) = AsyncClient::new(opts, 10);
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.unwrap() {
                break;
            }
        }
        c.disconnect().await.unwrap();
        while eventloop.poll().await.is_ok() {}
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while scrape("starling_clients_connected").await != 0.0 {
        assert!(Instant::now() < deadline, "the two clients never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_c, _) = client(mqtt, "ops-max-c").await;
    assert_eq!(scrape("starling_sessions").await, 3.0);
    assert_eq!(scrape("starling_clients_maximum").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_reflects_traffic() {
    let (handle, mqtt, http) = start_with_metrics().await;

    let (sub, mut inbox) = client(mqtt, "ops-sub").await;
    sub.subscribe("t/#", QoS::AtLeastOnce).await.unwrap();
    let (publ, _) = client(mqtt, "ops-pub").await;
    // Let the SUBACK arrive before publishing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5 {
        publ.publish("t/a", QoS::AtLeastOnce, false, format!("payload-{i:02}"))
            .await
            .unwrap();
    }
    publ.publish("t/r", QoS::AtLeastOnce, true, "retained-1")
        .await
        .unwrap();
    recv_n(&mut inbox, 6).await;

    // Deliveries are acknowledged asynchronously: scrape until the figures settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let families = loop {
        let (status, head, body) = http_get(http, "/metrics").await.unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let f = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let settled = value(&f, "starling_publish_messages_sent_total", &[]) == 6.0
            && value(&f, "starling_messages_inflight", &[]) == 0.0;
        if settled || Instant::now() > deadline {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    for (name, f) in &families {
        assert!(name.starts_with("starling_"), "{name}");
        assert!(!f.help.is_empty(), "{name}");
        assert_eq!(f.kind == "counter", name.ends_with("_total"), "{name}");
    }
    let v = |name: &str| value(&families, name, &[]);
    assert_eq!(v("starling_publish_messages_received_total"), 6.0);
    assert_eq!(v("starling_publish_messages_sent_total"), 6.0);
    assert_eq!(v("starling_publish_bytes_received_total"), 60.0);
    assert_eq!(v("starling_publish_bytes_sent_total"), 60.0);
    assert_eq!(v("starling_clients_connected"), 2.0);
    assert_eq!(v("starling_clients_maximum"), 2.0);
    assert_eq!(v("starling_sessions"), 2.0);
    assert_eq!(v("starling_connects_total"), 2.0);
    assert_eq!(v("starling_connections_accepted_total"), 2.0);
    assert_eq!(v("starling_connections_refused_total"), 0.0);
    assert_eq!(v("starling_subscriptions"), 1.0);
    assert_eq!(v("starling_shared_subscriptions"), 0.0);
    assert_eq!(v("starling_retained_messages"), 1.0);
    assert_eq!(v("starling_messages_inflight"), 0.0);
    assert_eq!(v("starling_messages_stored"), 1.0);
    assert_eq!(v("starling_queued_bytes"), 0.0);
    assert!(
        v("starling_retained_bytes") >= 10.0,
        "t/r holds a 10-byte payload"
    );
    // In: 2 CONNECT + 1 SUBSCRIBE + 6 PUBLISH + 6 PUBACK from the subscriber. Out: 2 CONNACK
    // + 1 SUBACK + 6 PUBACK to the publisher + 6 PUBLISH to the subscriber. CONNECT and
    // CONNACK count, as in Mosquitto's $SYS messages/received|sent.
    assert_eq!(v("starling_messages_received_total"), 15.0);
    assert_eq!(v("starling_messages_sent_total"), 15.0);
    assert!(v("starling_bytes_received_total") > 60.0);
    assert!(v("starling_bytes_sent_total") > 60.0);
    assert!(v("starling_uptime_seconds") > 0.0);
    for reason in ["queue_full", "offline_qos0", "expired", "too_large"] {
        let d = value(
            &families,
            "starling_publish_messages_dropped_total",
            &[("reason", reason)],
        );
        assert_eq!(d, 0.0, "{reason}");
    }
    let listener = mqtt.to_string();
    let per_listener = value(
        &families,
        "starling_listener_connections",
        &[("listener", &listener)],
    );
    assert_eq!(per_listener, 2.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&families, "starling_build_info", &[("version", version)]),
        1.0
    );
    // The same counters as $SYS.
    let m = &handle.state().metrics();
    assert_eq!(
        v("starling_publish_messages_received_total"),
        m.publish_received.get() as f64
    );

    let (status, _, body) = http_get(http, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = http_get(http, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = http_get(http, "/nope").await.unwrap();
    assert_eq!(status, 404);

    publ.disconnect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = http_get(http, "/metrics").await.unwrap();
        let f = parse_exposition(&body).unwrap();
        let open = value(
            &f,
            "starling_listener_connections",
            &[("listener", &listener)],
        );
        if open == 1.0 && value(&f, "starling_clients_connected", &[]) == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges did not drop to 1:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    handle.shutdown();
    // Once shutdown has begun the endpoint is either gone or not ready.
    if let Ok((status, _, _)) = http_get(http, "/readyz").await {
        assert!(
            status == 503 || status == 0,
            "readyz after shutdown: {status}"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("broker and metrics endpoint stop");
}

#[path = "common/skip.rs"]
mod skip;

/// What Python's `prometheus_client` parser made of an exposition (see
/// tests/interop/prometheus_parse.py): family name → type, and (sample name, labels) → value.
struct PyParsed {
    families: BTreeMap<String, String>,
    samples: BTreeMap<(String, String), f64>,
}

/// Labels as the Python script prints them: `k=v` sorted by key, comma-separated.
fn label_key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the `prometheus_client` parser on `text`; `None` (after a printed SKIP) when python3 or
/// the module is missing, which is a failure under `STARLING_INTEROP=1`.
fn python_parse(text: &str) -> Option<PyParsed> {
    use std::io::Write;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/prometheus_parse.py");
    let child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            skip::skip(&format!("python3 cannot run: {e}"));
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        skip::skip(&format!(
            "Python's prometheus_client is not installed: {}",
            stderr.trim()
        ));
        return None;
    }
    assert!(
        out.status.success() && stdout.ends_with("OK\n"),
        "prometheus_client could not parse the exposition:\n{stderr}\n{stdout}\n{text}"
    );
    let mut parsed = PyParsed {
        families: BTreeMap::new(),
        samples: BTreeMap::new(),
    };
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["FAMILY", name, kind] => {
                parsed.families.insert(name.to_owned(), kind.to_owned());
            }
            ["SAMPLE", _, name, labels, value] => {
                let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
                let key = (name.to_owned(), labels.to_owned());
                assert!(parsed.samples.insert(key, v).is_none(), "repeated: {line}");
            }
            ["OK"] => {}
            _ => panic!("unexpected line from the parser script: {line}"),
        }
    }
    Some(parsed)
}

/// Issue 7 acceptance 2 with a third-party parser: Python's `prometheus_client` reads the
/// scrape, finds exactly the series the strict parser above finds (same values), types the
/// `_total` families as counters, and the counters reflect the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_client_parses_the_scrape() {
    let (handle, mqtt, http) = start_with_metrics().await;
    let (sub, mut inbox) = client(mqtt, "py-sub").await;
    sub.subscribe("py/#", QoS::AtLeastOnce).await.unwrap();
    let (publ, _) = client(mqtt, "py-pub").await;
    // Publish until the subscription is in place, then three more that must all arrive.
    loop {
        publ.publish("py/probe", QoS::AtLeastOnce, false, "probe")
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), inbox.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    let m = &handle.state().metrics();
    let (recv_before, sent_before) = (m.publish_received.get() as f64, m.publish_sent.get() as f64);
    let bytes_before = m.publish_bytes_received.get() as f64;
    for i in 0..3 {
        publ.publish("py/a", QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .unwrap();
    }
    let mut seen = 0;
    while seen < 3 {
        let (topic, _) = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("py/a delivered in time")
            .expect("event loop alive");
        seen += usize::from(topic == "py/a");
    }

    let settled = |f: &BTreeMap<String, Family>| {
        value(f, "starling_publish_messages_received_total", &[]) >= recv_before + 3.0
            && value(f, "starling_publish_messages_sent_total", &[]) >= sent_before + 3.0
            && value(f, "starling_messages_inflight", &[]) == 0.0
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (status, _, body) = http_get(http, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        let f = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        if settled(&f) || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some(py) = python_parse(&body) else {
        handle.shutdown();
        handle.wait().await;
        return;
    };

    // Both parsers agree on every series.
    let ours = parse_exposition(&body).unwrap();
    let mut expected = BTreeMap::new();
    for (name, family) in &ours {
        let py_name = match family.kind.as_str() {
            "counter" => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        assert_eq!(
            py.families.get(py_name).map(String::as_str),
            Some(family.kind.as_str()),
            "family {name} as prometheus_client types it"
        );
        for (labels, v) in &family.samples {
            expected.insert((name.clone(), label_key(labels)), *v);
        }
    }
    assert_eq!(
        py.samples, expected,
        "prometheus_client and the strict parser differ"
    );

    let v = |name: &str| py.samples[&(name.to_owned(), String::new())];
    let received = v("starling_publish_messages_received_total");
    assert!(
        received >= recv_before + 3.0,
        "{received} < {recv_before} + 3"
    );
    let sent = v("starling_publish_messages_sent_total");
    assert!(sent >= sent_before + 3.0, "{sent} < {sent_before} + 3");
    assert_eq!(v("starling_clients_connected"), 2.0);
    assert_eq!(v("starling_connections_accepted_total"), 2.0);
    assert_eq!(v("starling_subscriptions"), 1.0);
    // Payload bytes: three of "m0".."m2".
    let bytes = v("starling_publish_bytes_received_total");
    assert!(bytes >= bytes_before + 6.0, "{bytes} < {bytes_before} + 6");
    let listener = (
        "starling_listener_connections".to_owned(),
        format!("listener={mqtt}"),
    );
    assert_eq!(py.samples.get(&listener), Some(&2.0));

    handle.shutdown();
    handle.wait().await;
}

// ---------------------------------------------------------------------------------------------
// (b) $SYS through mosquitto_sub
// ---------------------------------------------------------------------------------------------

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `sys.interval` applies on reload, as Mosquitto's `sys_interval` does on SIGHUP (h11 L3): a
/// broker started with `$SYS` off publishes the tree once a reload turns it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sets_the_sys_interval() {
    let toml = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval = \"0s\"\n";
    let handle = start(toml).await;
    let addr = handle.local_addrs()[0];
    let (c, mut inbox) = client(addr, "ops-sys-reload").await;
    c.subscribe("$SYS/broker/uptime", QoS::AtMostOnce)
        .await
        .unwrap();
    // The SUBACK is in once a message on an ordinary topic comes back.
    c.subscribe("probe", QoS::AtMostOnce).await.unwrap();
    c.publish("probe", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(
        recv_n(&mut inbox, 1).await[0].0,
        "probe",
        "no $SYS while it is off"
    );

    let mut on = Config::from_toml_str(toml).unwrap();
    on.sys.interval = Duration::from_millis(100);
    let report = handle.reload(&on);
    let applied: Vec<&str> = report.applied().map(|c| c.key.as_str()).collect();
    assert!(applied.contains(&"sys.interval"), "{report:?}");
    let (topic, _) = recv_n(&mut inbox, 1).await.remove(0);
    assert_eq!(topic, "$SYS/broker/uptime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_tree_has_mosquitto_names() {
    if !have("mosquitto_sub") {
        skip::skip("mosquitto_sub is not installed (Debian package mosquitto-clients)");
        return;
    }
    let handle =
        start("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval = \"200ms\"\n").await;
    let addr = handle.local_addrs()[0];

    let (c, mut inbox) = client(addr, "ops-sys").await;
    c.subscribe("x/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        c.publish("x/y", QoS::AtLeastOnce, false, "hello")
            .await
            .unwrap();
    }
    c.publish("x/kept", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    // Clients cannot publish into $SYS: this is acknowledged and dropped.
    c.publish("$SYS/broker/version", QoS::AtLeastOnce, true, "hacked")
        .await
        .unwrap();
    recv_n(&mut inbox, 4).await;
    // Two $SYS rounds after the traffic.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Every $SYS topic is retained, so a new subscriber gets the whole tree at once: read
    // until each Mosquitto name below has been seen (more topics may come and are ignored),
    // with -W bounding the wait should one never arrive.
    let mut expected: Vec<String> = [
        "version",
        "uptime",
        "clients/total",
        "clients/maximum",
        "clients/connected",
        "clients/active",
        "clients/disconnected",
        "clients/inactive",
        "clients/expired",
        "messages/received",
        "messages/sent",
        "messages/stored",
        "store/messages/count",
        "store/messages/bytes",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "publish/bytes/received",
        "publish/bytes/sent",
        "bytes/received",
        "bytes/sent",
        "subscriptions/count",
        "shared_subscriptions/count",
        "retained messages/count",
    ]
    .iter()
    .map(|t| format!("$SYS/broker/{t}"))
    .collect();
    for load in [
        "messages/received",
        "messages/sent",
        "publish/received",
        "publish/sent",
        "publish/dropped",
        "bytes/received",
        "bytes/sent",
        "sockets",
        "connections",
    ] {
        for window in ["1min", "5min", "15min"] {
            expected.push(format!("$SYS/broker/load/{load}/{window}"));
        }
    }
    let port = addr.port().to_string();
    let wanted = expected.clone();
    let (lines, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-t", "$SYS/#", "-v"])
            .args(["-W", "10", "-i", "ops-mosquitto-sub"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto_sub");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut missing = wanted;
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            missing.retain(|t| !line.starts_with(&format!("{t} ")));
            lines.push(line);
            if missing.is_empty() {
                break;
            }
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait for mosquitto_sub");
        (lines, String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .unwrap();
    let text = lines.join("\n");
    let get = |topic: &str| -> String {
        let prefix = format!("{topic} ");
        let mut values = lines.iter().filter_map(|l| l.strip_prefix(prefix.as_str()));
        match values.next() {
            Some(v) => v.to_owned(),
            None => panic!("{topic} missing from mosquitto_sub output (stderr {stderr}):\n{text}"),
        }
    };
    for topic in &expected {
        get(topic);
    }
    let num = |topic: &str| -> f64 {
        let v = get(topic);
        v.parse()
            .unwrap_or_else(|_| panic!("{topic} is not a number: {v:?}"))
    };

    assert_eq!(
        get("$SYS/broker/version"),
        format!("starling version {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = get("$SYS/broker/uptime");
    assert!(uptime.ends_with(" seconds"), "{uptime}");
    assert!(
        uptime.trim_end_matches(" seconds").parse::<u64>().is_ok(),
        "{uptime}"
    );
    assert!(num("$SYS/broker/clients/connected") >= 1.0);
    assert!(num("$SYS/broker/clients/total") >= 1.0);
    assert!(num("$SYS/broker/clients/maximum") >= 1.0);
    // 3 + 1 + the dropped $SYS one: every PUBLISH received counts.
    assert!(num("$SYS/broker/publish/messages/received") >= 4.0);
    assert!(num("$SYS/broker/publish/messages/sent") >= 4.0);
    assert!(num("$SYS/broker/messages/received") >= 5.0);
    assert!(num("$SYS/broker/bytes/received") > 0.0);
    // x/kept plus the retained $SYS topics themselves, as in Mosquitto.
    assert!(num("$SYS/broker/retained messages/count") >= 2.0);
    // The bytes of what store/messages/count counts, retained messages included (h11 L1:
    // it said 0 for 54 messages).
    assert!(num("$SYS/broker/store/messages/count") >= 2.0);
    assert!(num("$SYS/broker/store/messages/bytes") > 0.0);
    assert_eq!(num("$SYS/broker/subscriptions/count"), 1.0);
    assert_eq!(num("$SYS/broker/publish/messages/dropped"), 0.0);
    for load in [
        "messages/received",
        "publish/received",
        "bytes/sent",
        "connections",
    ] {
        for window in ["1min", "5min", "15min"] {
            let v = num(&format!("$SYS/broker/load/{load}/{window}"));
            assert!(v >= 0.0, "{load}/{window} = {v}");
        }
    }
    assert!(num("$SYS/broker/load/publish/received/1min") > 0.0);
    handle.shutdown();
    handle.wait().await;
}

// ---------------------------------------------------------------------------------------------
// (c) systemd notifications and SIGHUP reload of the real binary
// ---------------------------------------------------------------------------------------------

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-ops-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits for a notification datagram containing `want`; returns every datagram seen.
fn await_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return;
            }
        }
    }
    panic!("no {want} notification; got {seen:?}");
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

#[test]
fn systemd_notify_ready_reload_stopping() {
    let dir = scratch("notify");
    let socket_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.join("starling.toml");
    let base = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n";
    std::fs::write(&config, base).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(&dir)
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.to_owned());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    let mut seen = Vec::new();
    await_notify(&sock, "READY=1", &mut seen);
    assert!(seen.iter().any(|m| m.contains("STATUS=")), "{seen:?}");
    // READY=1 is sent after the listener is bound and logged.
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("'listening on' logged before READY=1")
        .parse()
        .expect("address in log line");
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("listener accepts once READY=1 was sent");

    // SIGHUP: the file is re-read and the change reported as needing a restart.
    std::fs::write(&config, format!("{base}[mqtt]\nmax_inflight = 5\n")).unwrap();
    seen.clear();
    kill(child.id(), "-HUP");
    await_notify(&sock, "RELOADING=1", &mut seen);
    await_notify(&sock, "READY=1", &mut seen);

    seen.clear();
    kill(child.id(), "-TERM");
    await_notify(&sock, "STOPPING=1", &mut seen);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for starling") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("starling did not exit within 20s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("reload requested"), "{log}");
    assert!(
        log.contains("mqtt.max_inflight: 20 -> 5 (needs a restart)"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// (d) shipped configuration files
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_config_is_valid_and_enables_metrics() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/starling.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run starling check-config");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let c = Config::load(&path).unwrap();
    assert_eq!(c.listeners[0].bind, "0.0.0.0:1883".parse().unwrap());
    assert_eq!(
        c.listeners.len(),
        1,
        "the image ships no certificate for TLS"
    );
    assert_eq!(c.metrics.bind, Some("0.0.0.0:9183".parse().unwrap()));
}

/// The listener and auth examples commented out in docker/starling.toml are valid once
/// uncommented, and bind the ports docker/Dockerfile exposes for them.
#[test]
fn docker_config_commented_examples_are_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/starling.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // A commented TOML line: a table header or `key = value`; prose is left alone.
    let is_toml = |s: &str| {
        s.starts_with("[[")
            || s.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    };
    let mut uncommented = 0;
    let full: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_toml(rest) => {
                uncommented += 1;
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(
        uncommented >= 10,
        "{uncommented} lines uncommented:\n{full}"
    );
    let c = Config::from_toml_str(&full).unwrap_or_else(|e| panic!("{e}\n{full}"));
    let listeners: Vec<(String, &str)> = c
        .listeners
        .iter()
        .map(|l| (l.bind.to_string(), l.protocol.as_str()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("0.0.0.0:1883".to_owned(), "mqtt"),
            ("0.0.0.0:8883".to_owned(), "mqtts"),
            ("0.0.0.0:8080".to_owned(), "ws"),
        ]
    );
    assert!(c.listeners[1].require_certificate && c.listeners[1].cert.is_some());
    assert!(c.auth.password_file.is_some());
    let dockerfile = std::fs::read_to_string(path.with_file_name("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("EXPOSE 1883 8883 8080 9183"),
        "the Dockerfile exposes every port the configuration can use"
    );
}
