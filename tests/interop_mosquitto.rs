//! Interop with the Mosquitto command line clients (Debian mosquitto-clients), MQTT 3.1 and
//! 3.1.1: QoS round trips, retained set/replace/clear, and a wildcard matrix including
//! `$`-topics [MQTT-4.7.2-1]. Skipped (or failed with STARLING_INTEROP=1) without the clients.
//!
//! Synchronisation: mosquitto_sub runs with `-d`, and the test publishes only after its
//! "received SUBACK" debug line; messages are printed with `-F` as `MSG|qos|retain|topic|payload`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

const V31: &str = "mqttv31";
const V311: &str = "mqttv311";

#[derive(Debug, PartialEq, Eq)]
struct Msg {
    qos: u8,
    retain: bool,
    topic: String,
    payload: String,
}

fn parse_msg(line: &str) -> Option<Msg> {
    let rest = line.strip_prefix("MSG|")?;
    let mut it = rest.splitn(4, '|');
    let qos = it.next()?.parse().ok()?;
    let retain = it.next()? == "1";
    let topic = it.next()?.to_owned();
    let payload = it.next()?.to_owned();
    Some(Msg {
        qos,
        retain,
        topic,
        payload,
    })
}

/// mosquitto_sub with debug output (for the SUBACK line) and a parseable message format.
/// Runs under `stdbuf -oL` (coreutils): mosquitto_sub's debug lines go through stdio, which is
/// fully buffered on a pipe.
fn sub_cmd(b: &TestBroker, version: &str, id: &str, qos: u8, filters: &[&str]) -> Command {
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub"])
        .args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
        .args(["-V", version, "-i", id, "-q", &qos.to_string(), "-k", "30"])
        .args(["-d", "-W", "10", "-F", "MSG|%q|%r|%t|%p"]);
    for f in filters {
        cmd.args(["-t", f]);
    }
    cmd
}

/// Starts mosquitto_sub and waits until the broker has acknowledged its subscription.
async fn subscriber(
    b: &TestBroker,
    version: &str,
    id: &str,
    qos: u8,
    filters: &[&str],
    count: Option<usize>,
) -> Proc {
    let mut cmd = sub_cmd(b, version, id, qos, filters);
    if let Some(n) = count {
        cmd.args(["-C", &n.to_string()]);
    }
    let mut p = Proc::spawn(&format!("mosquitto_sub {id}"), &mut cmd);
    p.wait_line("'received SUBACK'", |l| l.contains("received SUBACK"))
        .await;
    p
}

/// Reads the next message line (skipping debug lines).
async fn next_msg(p: &mut Proc) -> Msg {
    let line = p.wait_line("MSG|...", |l| l.starts_with("MSG|")).await;
    parse_msg(&line).unwrap_or_else(|| panic!("unparsable line {line:?}"))
}

/// Runs mosquitto_pub to completion (for QoS 1/2 it exits after PUBACK/PUBCOMP).
async fn publish(
    b: &TestBroker,
    version: &str,
    qos: u8,
    topic: &str,
    payload: Option<&str>,
    retain: bool,
) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
        .args(["-V", version, "-q", &qos.to_string(), "-t", topic]);
    match payload {
        Some(m) => cmd.args(["-m", m]),
        None => cmd.arg("-n"),
    };
    if retain {
        cmd.arg("-r");
    }
    run_ok(&format!("mosquitto_pub {topic}"), &mut cmd).await;
}

async fn round_trips(version: &str) {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    for qos in 0..=2u8 {
        let topic = format!("mq/{version}/q{qos}");
        let mut sub = subscriber(
            &b,
            version,
            &format!("sub-{version}-{qos}"),
            qos,
            &[&topic],
            Some(3),
        )
        .await;
        for n in 0..3 {
            publish(
                &b,
                version,
                qos,
                &topic,
                Some(&format!("{version}-q{qos}-{n}")),
                false,
            )
            .await;
        }
        for n in 0..3 {
            let m = next_msg(&mut sub).await;
            assert_eq!(
                m,
                Msg {
                    qos,
                    retain: false,
                    topic: topic.clone(),
                    payload: format!("{version}-q{qos}-{n}")
                },
                "{}",
                sub.transcript()
            );
        }
        // -C 3: the subscriber exits cleanly after exactly three messages.
        sub.success(WAIT).await;
    }
}

/// mosquitto_pub → mosquitto_sub at QoS 0, 1 and 2 over MQTT 3.1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v311_qos_0_1_2_round_trips() {
    round_trips(V311).await;
}

/// mosquitto_pub → mosquitto_sub at QoS 0, 1 and 2 over MQTT 3.1 (`MQIsdp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v31_qos_0_1_2_round_trips() {
    round_trips(V31).await;
}

async fn retained(version: &str) {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let topic = format!("mret/{version}");
    // QoS 1 so mosquitto_pub exits only after the broker has processed the message.
    publish(&b, version, 1, &topic, Some("v1"), true).await;
    let mut s = subscriber(
        &b,
        version,
        &format!("ret1-{version}"),
        1,
        &[&topic],
        Some(1),
    )
    .await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        (m.payload.as_str(), m.retain, m.qos),
        ("v1", true, 1),
        "set [MQTT-3.3.1-6][MQTT-3.3.1-8]"
    );
    s.success(WAIT).await;

    publish(&b, version, 1, &topic, Some("v2"), true).await;
    let mut s = subscriber(
        &b,
        version,
        &format!("ret2-{version}"),
        1,
        &[&topic],
        Some(1),
    )
    .await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        (m.payload.as_str(), m.retain),
        ("v2", true),
        "replace [MQTT-3.3.1-7]"
    );
    s.success(WAIT).await;

    // -r -n: zero-length retained message clears the topic [MQTT-3.3.1-10].
    publish(&b, version, 1, &topic, None, true).await;
    let mut s = subscriber(
        &b,
        version,
        &format!("ret3-{version}"),
        1,
        &[&topic],
        Some(1),
    )
    .await;
    publish(&b, version, 1, &topic, Some("marker"), false).await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        (m.payload.as_str(), m.retain),
        ("marker", false),
        "after clearing, the first message must be the live marker\n{}",
        s.transcript()
    );
    s.success(WAIT).await;
}

/// Retained set / replace / clear seen by new mosquitto_sub subscribers, MQTT 3.1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v311_retained_set_replace_clear() {
    retained(V311).await;
}

/// Retained set / replace / clear seen by new mosquitto_sub subscribers, MQTT 3.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v31_retained_set_replace_clear() {
    retained(V31).await;
}

/// Wildcard matrix: each filter gets exactly the topics it matches. `#` and `+/...` do not match
/// topics starting with `$` [MQTT-4.7.2-1], while `$foo/#` and `$foo/+` do; `sport/#` matches
/// its parent `sport` [4.7.1.2]; `+` matches an empty level [4.7.1.3].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_wildcard_matrix_with_dollar_topics_mqtt_4_7_2_1() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let topics = [
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "/finance",
        "$foo/bar",
        "a/bar",
    ];
    let matrix: &[(&str, &[&str])] = &[
        (
            "#",
            &[
                "sport",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "/finance",
                "a/bar",
            ],
        ),
        ("+", &["sport"]),
        ("+/+", &["sport/tennis", "/finance", "a/bar"]),
        ("+/+/+", &["sport/tennis/player1"]),
        ("/+", &["/finance"]),
        (
            "sport/#",
            &[
                "sport",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
            ],
        ),
        ("sport/+", &["sport/tennis"]),
        ("sport/tennis/+", &["sport/tennis/player1"]),
        (
            "+/tennis/#",
            &[
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
            ],
        ),
        (
            "sport/tennis/player1/#",
            &["sport/tennis/player1", "sport/tennis/player1/ranking"],
        ),
        ("+/bar", &["a/bar"]),
        ("$foo/#", &["$foo/bar"]),
        ("$foo/+", &["$foo/bar"]),
        (
            "+/+/#",
            &[
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "/finance",
                "a/bar",
            ],
        ),
    ];
    let mut subs = Vec::new();
    for (i, (filter, _)) in matrix.iter().enumerate() {
        // Alternate protocol versions across subscribers.
        let version = if i % 2 == 0 { V311 } else { V31 };
        subs.push(
            subscriber(
                &b,
                version,
                &format!("wild-{i}"),
                1,
                &[filter, "ctl/end"],
                None,
            )
            .await,
        );
    }
    for t in topics {
        publish(&b, V311, 1, t, Some(t), false).await;
    }
    publish(&b, V311, 1, "ctl/end", Some("end"), false).await;

    let mut failures = Vec::new();
    for ((filter, want), sub) in matrix.iter().zip(subs.iter_mut()) {
        let mut got = BTreeSet::new();
        loop {
            let m = next_msg(sub).await;
            if m.topic == "ctl/end" {
                break;
            }
            assert_eq!(m.topic, m.payload);
            assert!(
                got.insert(m.topic.clone()),
                "{filter}: duplicate {}",
                m.topic
            );
        }
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("filter {filter:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "wildcard matrix:\n{}",
        failures.join("\n")
    );
}

/// A client cannot publish into `$SYS/...`: the broker drops it, so a `$SYS/#` subscriber
/// receives nothing while a positive control on another `$` topic arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_client_publish_to_sys_is_dropped() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let mut s = subscriber(&b, V311, "sys-watch", 1, &["$SYS/#", "$ctl/end"], None).await;
    publish(&b, V311, 1, "$SYS/broker/fake", Some("fake"), false).await;
    publish(&b, V311, 1, "$ctl/end", Some("end"), false).await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        m.topic,
        "$ctl/end",
        "a client's $SYS publish must be dropped\n{}",
        s.transcript()
    );
}
