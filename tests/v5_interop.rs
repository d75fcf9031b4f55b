//! MQTT 5.0 interop with independent clients: paho-mqtt 2.x (Python, `protocol=MQTTv5`, driven
//! by tests/interop/v5_paho.py) and mosquitto_pub / mosquitto_sub `-V 5`. Each test is skipped
//! with a note when its client is missing, and fails instead under STARLING_INTEROP=1.
//!
//! Covered for both: user properties round trip, session expiry resume, shared subscription
//! distribution.

#[path = "v5_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use starling::codec::QoS;
use support::*;

const RUN: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------------------------------------
// paho-mqtt (Python) MQTTv5
// ---------------------------------------------------------------------------------------------

async fn paho(mode: &str, extra: &[&str]) {
    if !have_paho() {
        return;
    }
    let b = start().await;
    let port = b.addr.port().to_string();
    let mut cmd = Command::new("python3");
    cmd.arg(tests_path("interop/v5_paho.py"))
        .arg(mode)
        .args(["--host", "127.0.0.1", "--port", &port])
        .args(extra);
    let mut p = Proc::spawn(&format!("v5_paho.py {mode}"), &mut cmd, None);
    let lines = p.success(RUN).await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("OK"),
        "{}",
        p.transcript()
    );
}

/// paho v5 publisher → paho v5 subscriber: User Properties (duplicate keys, non-ASCII) in
/// order, Content Type, Response Topic, Correlation Data, Payload Format Indicator, at QoS 0/1/2
/// [MQTT-3.3.2-17/18].
#[tokio::test]
async fn paho_v5_user_properties_round_trip() {
    paho("userprops", &["--topic", "paho5/up"]).await;
}

/// paho v5 Session Expiry Interval 30: reconnect with clean_start=False gets session present and
/// the QoS 1 messages queued meanwhile [MQTT-3.1.2-23].
#[tokio::test]
async fn paho_v5_session_expiry_resume() {
    paho("session", &["--topic", "paho5/se", "--count", "5"]).await;
}

/// Two paho v5 members of `$share/g/...`: each of 10 messages reaches exactly one, 5 each.
#[tokio::test]
async fn paho_v5_shared_subscription_distribution() {
    paho("shared", &["--topic", "paho5/sh", "--count", "10"]).await;
}

// ---------------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub -V 5
// ---------------------------------------------------------------------------------------------

fn mosq(tool: &str, b: &TestBroker, args: &[&str]) -> Command {
    let mut c = Command::new(tool);
    c.args(["-V", "5", "-h", "127.0.0.1", "-p"])
        .arg(b.addr.port().to_string())
        .args(args);
    c
}

/// mosquitto_pub -V 5 with `-D publish user-property` (a duplicate key included), content type,
/// response topic and message expiry → mosquitto_sub -V 5 prints them, and a raw subscriber
/// sees the user properties in the order sent [MQTT-3.3.2-17/18].
#[tokio::test]
async fn mosquitto_v5_user_properties_round_trip() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let mut raw = Client::connect(b.addr, "m5-up-raw").await;
    raw.subscribe("m5/up", QoS::AtLeastOnce).await;
    let mut sub = Proc::spawn(
        "mosquitto_sub",
        &mut mosq(
            "mosquitto_sub",
            &b,
            &[
                "-i",
                "m5-up-sub",
                "-t",
                "m5/up",
                "-q",
                "1",
                "-C",
                "1",
                "-F",
                "%P|%C|%R|%E|%p",
            ],
        ),
        None,
    );
    b.wait_until("mosquitto_sub subscribed", |s| s.subscription_count() == 2)
        .await;
    let mut publ = Proc::spawn(
        "mosquitto_pub",
        &mut mosq(
            "mosquitto_pub",
            &b,
            &[
                "-i",
                "m5-up-pub",
                "-t",
                "m5/up",
                "-q",
                "1",
                "-m",
                "hello",
                "-D",
                "publish",
                "user-property",
                "k1",
                "v1",
                "-D",
                "publish",
                "user-property",
                "k2",
                "v2",
                "-D",
                "publish",
                "user-property",
                "k1",
                "v3",
                "-D",
                "publish",
                "content-type",
                "text/plain",
                "-D",
                "publish",
                "response-topic",
                "m5/resp",
                "-D",
                "publish",
                "message-expiry-interval",
                "60",
            ],
        ),
        None,
    );
    publ.success(RUN).await;

    let p = raw.next_publish_acked().await;
    assert_eq!(text(&p), "hello");
    assert_eq!(
        p.properties.user_properties,
        vec![
            ("k1".to_string(), "v1".to_string()),
            ("k2".into(), "v2".into()),
            ("k1".into(), "v3".into())
        ]
    );
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.response_topic.as_deref(), Some("m5/resp"));

    let lines = sub.success(RUN).await;
    let line = lines.first().cloned().unwrap_or_default();
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields.len(), 5, "{}", sub.transcript());
    let props = fields[0];
    for kv in ["k1:v1", "k2:v2", "k1:v3"] {
        assert!(props.contains(kv), "user property {kv} missing: {line:?}");
    }
    let (i1, i2, i3) = (
        props.find("k1:v1").unwrap(),
        props.find("k2:v2").unwrap(),
        props.find("k1:v3").unwrap(),
    );
    assert!(i1 < i2 && i2 < i3, "user properties out of order: {line:?}");
    assert_eq!(fields[1], "text/plain", "{line:?}");
    assert_eq!(fields[2], "m5/resp", "{line:?}");
    let expiry: u32 = fields[3].parse().unwrap_or(0);
    assert!((58..=60).contains(&expiry), "{line:?}");
    assert_eq!(fields[4], "hello", "{line:?}");
}

/// mosquitto_sub -V 5 -c -x 60: the session outlives the client; QoS 1 messages published
/// while it is away are delivered when it comes back [MQTT-3.1.2-23].
#[tokio::test]
async fn mosquitto_v5_session_expiry_resume() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let common = ["-i", "m5-se", "-c", "-x", "60", "-q", "1", "-t", "m5/se"];
    let mut first = Proc::spawn(
        "mosquitto_sub -E",
        &mut mosq("mosquitto_sub", &b, &[&common[..], &["-E"]].concat()),
        None,
    );
    first.success(RUN).await;
    b.wait_until("the subscriber left", |s| {
        s.metrics.clients_connected.get() == 0
    })
    .await;
    assert_eq!(b.state().session_count(), 1, "session kept (expiry 60)");

    for i in 0..3 {
        let msg = format!("queued-{i}");
        Proc::spawn(
            "mosquitto_pub",
            &mut mosq(
                "mosquitto_pub",
                &b,
                &["-i", "m5-se-pub", "-q", "1", "-t", "m5/se", "-m", &msg],
            ),
            None,
        )
        .success(RUN)
        .await;
    }
    let mut again = Proc::spawn(
        "mosquitto_sub (resume)",
        &mut mosq(
            "mosquitto_sub",
            &b,
            &[&common[..], &["-C", "3", "-F", "%p"]].concat(),
        ),
        None,
    );
    let lines = again.success(RUN).await;
    assert_eq!(lines, ["queued-0", "queued-1", "queued-2"]);
}

/// Two mosquitto_sub -V 5 members of `$share/g/m5/sh`; mosquitto_pub -l sends 10 lines at QoS 1:
/// each message reaches exactly one member, 5 each (round robin).
#[tokio::test]
async fn mosquitto_v5_shared_subscription_distribution() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let mut members: Vec<Proc> = (0..2)
        .map(|i| {
            Proc::spawn(
                &format!("mosquitto_sub member {i}"),
                &mut mosq(
                    "mosquitto_sub",
                    &b,
                    &[
                        "-i",
                        &format!("m5-sh-{i}"),
                        "-q",
                        "1",
                        "-t",
                        "$share/g/m5/sh",
                        "-C",
                        "5",
                        "-F",
                        "%p",
                    ],
                ),
                None,
            )
        })
        .collect();
    b.wait_until("both members subscribed", |s| {
        s.shared_subscription_count() == 2
    })
    .await;
    let input: String = (0..10).map(|i| format!("s{i}\n")).collect();
    Proc::spawn(
        "mosquitto_pub -l",
        &mut mosq(
            "mosquitto_pub",
            &b,
            &["-i", "m5-sh-pub", "-q", "1", "-t", "m5/sh", "-l"],
        ),
        Some(input.into_bytes()),
    )
    .success(RUN)
    .await;
    let mut all = Vec::new();
    for m in &mut members {
        // -C 5: each member exits after exactly its five messages.
        let got = m.success(RUN).await;
        assert_eq!(got.len(), 5, "{}", m.transcript());
        all.extend(got);
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    let expected: BTreeSet<_> = (0..10).map(|i| format!("s{i}")).collect();
    assert_eq!(unique, expected, "each message exactly once: {all:?}");
    assert_eq!(all.len(), 10);
}
