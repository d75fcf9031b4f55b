//! MQTT 5.0 interop with independent clients: paho-mqtt 2.x (Python, `protocol=MQTTv5`, driven
//! by tests/interop/v5_paho.py) and mosquitto_pub / mosquitto_sub `-V 5`. Each test is skipped
//! with a note when its client is missing, and fails instead under STARLING_INTEROP=1.
//!
//! Covered for both: user properties round trip, session expiry resume, shared subscription
//! distribution. paho also covers CONNACK properties, outgoing topic aliases, subscription
//! identifiers, subscription options, session takeover 0x8E, will delay and CONNACK 0x8C;
//! mosquitto covers message expiry, outgoing topic aliases and 0x8C. rumqttc v5 (a
//! dev-dependency, never skipped) covers CONNACK properties, the client's Receive Maximum and
//! server-to-client topic aliases, which it resolves itself.

#[path = "v5_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS as RQoS;
use starling::codec::QoS;
use support::*;

const RUN: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------------------------------------
// paho-mqtt (Python) MQTTv5
// ---------------------------------------------------------------------------------------------

async fn paho(mode: &str, extra: &[&str]) {
    paho_with(config(), mode, extra).await
}

async fn paho_with(cfg: starling::config::Config, mode: &str, extra: &[&str]) {
    if !have_paho() {
        return;
    }
    let b = start_with(cfg).await;
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
        s.metrics().clients_connected.get() == 0
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

// ---------------------------------------------------------------------------------------------
// CONNECT / CONNACK
// ---------------------------------------------------------------------------------------------

/// A broker whose CONNACK has something to say for every property a server sends.
fn restricted() -> starling::config::Config {
    let mut cfg = config();
    cfg.mqtt.receive_maximum = 10;
    cfg.mqtt.max_packet_size = 65_536;
    cfg.mqtt.max_topic_alias = 7;
    cfg.mqtt.max_keepalive = 20;
    cfg.mqtt.max_qos = 1;
    cfg.mqtt.retain_available = false;
    cfg.mqtt.wildcard_subscriptions = false;
    cfg.mqtt.subscription_identifiers = false;
    cfg.mqtt.shared_subscriptions = false;
    cfg
}

/// paho v5, empty client id, Keep Alive 60, Request Response Information 0, against a broker
/// with every limit set: CONNACK carries Receive Maximum 10, Maximum Packet Size 65536, Topic
/// Alias Maximum 7, an Assigned Client Identifier [MQTT-3.2.2-16], Server Keep Alive 20
/// (`max_keepalive`, [MQTT-3.2.2-21]), Maximum QoS 1 [MQTT-3.2.2-9], Retain Available 0 and
/// the Wildcard / Subscription Identifier / Shared Subscription Available flags 0, and no
/// Response Information [MQTT-3.1.2-28].
#[tokio::test]
async fn paho_v5_connack_properties() {
    let expect = [
        "ReceiveMaximum=10",
        "MaximumPacketSize=65536",
        "TopicAliasMaximum=7",
        "ServerKeepAlive=20",
        "MaximumQoS=1",
        "RetainAvailable=0",
        "WildcardSubscriptionAvailable=0",
        "SubscriptionIdentifierAvailable=0",
        "SharedSubscriptionAvailable=0",
    ];
    let mut args = vec!["--client-id", "", "--rri", "0"];
    for e in &expect {
        args.extend(["--expect", e]);
    }
    args.extend(["--absent", "ResponseInformation"]);
    paho_with(restricted(), "connack", &args).await;
    // Defaults: features available (flags absent, which means 1), Request Response
    // Information absent (0): still no Response Information.
    paho(
        "connack",
        &[
            "--expect",
            "TopicAliasMaximum=10",
            "--absent",
            "ResponseInformation",
            "--absent",
            "RetainAvailable",
            "--absent",
            "MaximumQoS",
            "--absent",
            "WildcardSubscriptionAvailable",
            "--absent",
            "ServerKeepAlive",
        ],
    )
    .await;
}

/// The same CONNACK seen by rumqttc v5 (empty client id, Request Response Information 0):
/// [MQTT-3.2.2-16] Assigned Client Identifier, [MQTT-3.2.2-21] Server Keep Alive,
/// [MQTT-3.1.2-28] no Response Information, and the limits and availability flags.
#[tokio::test]
async fn rumqttc_v5_connack_properties() {
    let b = start_with(restricted()).await;
    let mut o = rumq::options(b.addr, "");
    o.set_keep_alive(Duration::from_secs(60));
    o.set_request_response_info(Some(0));
    let mut c = rumq::spawn(o);
    let ack = c.connack().await;
    let p = ack.properties.expect("CONNACK properties");
    assert!(
        p.assigned_client_identifier
            .as_deref()
            .is_some_and(|id| !id.is_empty()),
        "{p:?}"
    );
    assert_eq!(p.receive_max, Some(10));
    assert_eq!(p.max_packet_size, Some(65_536));
    assert_eq!(p.topic_alias_max, Some(7));
    assert_eq!(p.server_keep_alive, Some(20));
    assert_eq!(p.max_qos, Some(1));
    assert_eq!(p.retain_available, Some(0));
    assert_eq!(p.wildcard_subscription_available, Some(0));
    assert_eq!(p.subscription_identifiers_available, Some(0));
    assert_eq!(p.shared_subscription_available, Some(0));
    assert_eq!(p.response_information, None, "[MQTT-3.1.2-28]");
}

// ---------------------------------------------------------------------------------------------
// Flow control
// ---------------------------------------------------------------------------------------------

/// rumqttc v5 with Receive Maximum 2 and manual acknowledgements: of five queued QoS 1
/// messages exactly two are in flight until rumqttc acknowledges one, then one more comes
/// [MQTT-3.3.4-9].
#[tokio::test]
async fn rumqttc_v5_client_receive_maximum_honoured() {
    let b = start().await;
    let mut o = rumq::options(b.addr, "rq5-rm");
    o.set_receive_maximum(Some(2));
    o.set_manual_acks(true);
    let mut sub = rumq::spawn(o);
    sub.connack().await;
    sub.client
        .subscribe("rq5/rm", RQoS::AtLeastOnce)
        .await
        .unwrap();
    sub.suback().await;
    let mut publ = Client::connect(b.addr, "rq5-rm-pub").await;
    for i in 0..5 {
        publ.publish("rq5/rm", format!("m{i}").as_bytes(), QoS::AtLeastOnce)
            .await;
    }
    let first = sub.publish().await;
    let second = sub.publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"m0"[..], &b"m1"[..])
    );
    sub.no_publish("a third PUBLISH beyond Receive Maximum 2")
        .await;
    sub.client.ack(&first).await.unwrap();
    let third = sub.publish().await;
    assert_eq!(&third.payload[..], b"m2");
    sub.no_publish("a fourth PUBLISH beyond Receive Maximum 2")
        .await;
    for p in [second, third] {
        sub.client.ack(&p).await.unwrap();
    }
    for want in ["m3", "m4"] {
        let p = sub.publish().await;
        assert_eq!(&p.payload[..], want.as_bytes());
        sub.client.ack(&p).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// PUBLISH: topic aliases, subscription identifiers, message expiry
// ---------------------------------------------------------------------------------------------

/// paho v5 outgoing topic aliases: set, use with an empty topic, remap, use again; the
/// subscriber (no aliases allowed) gets full topics and no alias [MQTT-3.3.2-12]
/// [MQTT-3.1.2-27]; an alias above the server's maximum gets DISCONNECT 0x94 [MQTT-3.3.2-9].
#[tokio::test]
async fn paho_v5_outgoing_topic_aliases() {
    paho("alias", &["--topic", "paho5/alias"]).await;
}

/// rumqttc v5 with Topic Alias Maximum 5 resolves the aliases the server assigns: every
/// message carries an alias within 1..=5, repeated topics are sent as the alias alone, and each
/// resolves to the right topic
/// [MQTT-3.3.2-11] [MQTT-3.1.2-26]; a rumqttc client that allows none gets none
/// [MQTT-3.1.2-27].
#[tokio::test]
async fn rumqttc_v5_server_to_client_topic_aliases() {
    let b = start().await;
    let mut o = rumq::options(b.addr, "rq5-alias");
    o.set_topic_alias_max(Some(5));
    let mut sub = rumq::spawn(o);
    sub.connack().await;
    sub.client
        .subscribe("rq5/ta/#", RQoS::AtLeastOnce)
        .await
        .unwrap();
    sub.suback().await;
    let mut plain = rumq::spawn(rumq::options(b.addr, "rq5-noalias"));
    plain.connack().await;
    plain
        .client
        .subscribe("rq5/ta/#", RQoS::AtLeastOnce)
        .await
        .unwrap();
    plain.suback().await;

    let mut publ = Client::connect(b.addr, "rq5-alias-pub").await;
    let topics = ["rq5/ta/a", "rq5/ta/a", "rq5/ta/b", "rq5/ta/a", "rq5/ta/b"];
    for (i, t) in topics.iter().enumerate() {
        publ.publish(t, i.to_string().as_bytes(), QoS::AtLeastOnce)
            .await;
    }
    // rumqttc reports each PUBLISH as read (an aliased one with its empty topic) and resolves
    // the alias in its own state, answering an unknown one with DISCONNECT 0x82, which would
    // end the connection and fail `publish()` below. The test resolves what it sees alongside.
    let mut map = std::collections::HashMap::new();
    let mut reused = 0;
    for (i, t) in topics.iter().enumerate() {
        let p = sub.publish().await;
        assert_eq!(&p.payload[..], i.to_string().as_bytes());
        let alias = p.properties.as_ref().and_then(|pp| pp.topic_alias);
        let Some(alias) = alias.filter(|a| (1..=5).contains(a)) else {
            panic!("message {i}: alias {alias:?}, expected one within 1..=5");
        };
        if p.topic.is_empty() {
            reused += 1;
        } else {
            map.insert(alias, p.topic.clone());
        }
        assert_eq!(
            map.get(&alias).map(|x| &x[..]),
            Some(t.as_bytes()),
            "message {i}"
        );
        let q = plain.publish().await;
        assert_eq!(&q.topic[..], t.as_bytes());
        assert_eq!(q.properties.and_then(|pp| pp.topic_alias), None);
    }
    assert_eq!(reused, 3, "repeated topics are sent as alias only");
    // Still connected: rumqttc accepted every alias.
    publ.publish("rq5/ta/a", b"last", QoS::AtLeastOnce).await;
    assert_eq!(&sub.publish().await.payload[..], b"last");
}

/// paho v5 subscriptions with Subscription Identifiers 1 and 2 overlapping a third without
/// one: one copy per message carrying {1, 2} [MQTT-3.3.4-3] [MQTT-3.3.4-4], none on a
/// subscription without an identifier.
#[tokio::test]
async fn paho_v5_subscription_identifiers() {
    paho("subid", &["--topic", "paho5/sid"]).await;
}

/// mosquitto_pub -V 5 -l with `-D publish topic-alias 1`: the first PUBLISH sets the alias,
/// the next ones use it with no topic; the server resolves them [MQTT-3.3.2-12] and
/// subscribers get the topic and no alias of the publisher's [MQTT-3.1.2-27].
#[tokio::test]
async fn mosquitto_v5_outgoing_topic_alias() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let mut raw = Client::connect(b.addr, "m5-ta-raw").await;
    raw.subscribe("m5/ta", QoS::AtLeastOnce).await;
    Proc::spawn(
        "mosquitto_pub -l",
        &mut mosq(
            "mosquitto_pub",
            &b,
            &[
                "-i",
                "m5-ta-pub",
                "-q",
                "1",
                "-t",
                "m5/ta",
                "-l",
                "-D",
                "publish",
                "topic-alias",
                "1",
            ],
        ),
        Some(b"a\nb\nc\n".to_vec()),
    )
    .success(RUN)
    .await;
    for want in ["a", "b", "c"] {
        let p = raw.next_publish_acked().await;
        assert_eq!((&*p.topic, text(&p).as_str()), ("m5/ta", want));
        assert_eq!(p.properties.topic_alias, None);
    }
}

/// mosquitto_pub -V 5 `-D publish message-expiry-interval`: for an offline session, a message
/// with expiry 1 is gone after 1 s [MQTT-3.3.2-5]; one with 60 is delivered with its remaining
/// interval (below 60) [MQTT-3.3.2-6], printed by mosquitto_sub -F %E.
#[tokio::test]
async fn mosquitto_v5_message_expiry() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let common = ["-i", "m5-mx", "-c", "-x", "60", "-q", "1", "-t", "m5/mx"];
    Proc::spawn(
        "mosquitto_sub -E",
        &mut mosq("mosquitto_sub", &b, &[&common[..], &["-E"]].concat()),
        None,
    )
    .success(RUN)
    .await;
    b.wait_until("the subscriber left", |s| {
        s.metrics().clients_connected.get() == 0
    })
    .await;
    for (msg, expiry) in [("short", "1"), ("long", "60")] {
        Proc::spawn(
            "mosquitto_pub",
            &mut mosq(
                "mosquitto_pub",
                &b,
                &[
                    "-i",
                    "m5-mx-pub",
                    "-q",
                    "1",
                    "-t",
                    "m5/mx",
                    "-m",
                    msg,
                    "-D",
                    "publish",
                    "message-expiry-interval",
                    expiry,
                ],
            ),
            None,
        )
        .success(RUN)
        .await;
    }
    // Expiry is measured in time; nothing to wait on but the clock.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut again = Proc::spawn(
        "mosquitto_sub (resume)",
        &mut mosq(
            "mosquitto_sub",
            &b,
            &[&common[..], &["-C", "1", "-F", "%p|%E"]].concat(),
        ),
        None,
    );
    let lines = again.success(RUN).await;
    let (payload, left) = lines[0].split_once('|').unwrap_or_default();
    assert_eq!(
        payload, "long",
        "the expired message was delivered: {lines:?}"
    );
    let left: u32 = left.parse().unwrap_or(0);
    assert!(
        (55..=58).contains(&left),
        "remaining expiry {left}: {lines:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE options, DISCONNECT, will, enhanced authentication
// ---------------------------------------------------------------------------------------------

/// paho v5 SubscribeOptions: No Local [MQTT-3.8.3-3], Retain As Published 1/0
/// [MQTT-3.3.1-12] [MQTT-3.3.1-13], Retain Handling 0 on every subscribe [MQTT-3.3.1-9], 1 only
/// for a new subscription [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11].
#[tokio::test]
async fn paho_v5_subscription_options() {
    paho("subopts", &["--topic", "paho5/so"]).await;
}

/// paho v5: a second connection with the same client id; paho's on_disconnect of the first
/// sees reason 0x8E Session taken over [MQTT-3.1.4-3].
#[tokio::test]
async fn paho_v5_session_taken_over_0x8e() {
    paho("takeover", &[]).await;
}

/// paho v5 will with Will Delay Interval 1 and properties: published only after the delay once
/// the connection drops [MQTT-3.1.2-8], with Content Type and User Properties in order [MQTT-3.1.3-10]; with
/// delay 2 and a reconnect within it, never published [MQTT-3.1.3-9].
#[tokio::test]
async fn paho_v5_will_delay() {
    paho("will", &["--topic", "paho5/will"]).await;
}

/// paho v5 CONNECT with an Authentication Method the server does not support: CONNACK 0x8C
/// Bad authentication method and the connection closed [MQTT-4.12.0-1].
#[tokio::test]
async fn paho_v5_unknown_authentication_method_0x8c() {
    paho("badauth", &[]).await;
}

/// mosquitto_pub -V 5 `-D connect authentication-method`: refused with 0x8C, which
/// mosquitto_pub reports and returns as its exit status [MQTT-4.12.0-1].
#[tokio::test]
async fn mosquitto_v5_unknown_authentication_method_0x8c() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let mut cmd = tokio::process::Command::from(mosq(
        "mosquitto_pub",
        &b,
        &[
            "-i",
            "m5-auth",
            "-t",
            "m5/auth",
            "-m",
            "x",
            "-D",
            "connect",
            "authentication-method",
            "SCRAM-SHA-256",
        ],
    ));
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(RUN, cmd.output())
        .await
        .expect("mosquitto_pub timed out")
        .expect("mosquitto_pub runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0x8C), "{stderr}");
    assert!(stderr.contains("Bad authentication method"), "{stderr}");
}
