//! Interop with paho-mqtt 2.x (Python) over MQTT 3.1 and 3.1.1. The client logic lives in
//! tests/interop/paho_client.py; these tests start a broker, run the script against it and
//! check its transcript. Skipped (or failed with STARLING_INTEROP=1) without python3 + paho.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn paho(b: &TestBroker, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(tests_path("interop/paho_client.py"))
        .args(args)
        .args(["--host", "127.0.0.1", "--port", &b.port().to_string()]);
    cmd
}

async fn run_paho(name: &str, cmd: &mut Command) -> Vec<String> {
    let mut p = Proc::spawn(name, cmd);
    let lines = p.success(Duration::from_secs(25)).await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("OK"),
        "{}",
        p.transcript()
    );
    lines
}

async fn roundtrips(protocol: &str) {
    if !have_paho() {
        return;
    }
    let b = start().await;
    for qos in 0..=2 {
        let topic = format!("paho/{protocol}/q{qos}");
        let q = qos.to_string();
        let lines = run_paho(
            &format!("paho roundtrip v{protocol} qos{qos}"),
            &mut paho(
                &b,
                &[
                    "roundtrip",
                    "--protocol",
                    protocol,
                    "--qos",
                    &q,
                    "--count",
                    "3",
                    "--topic",
                    &topic,
                ],
            ),
        )
        .await;
        let recv: Vec<_> = lines.iter().filter(|l| l.starts_with("RECV ")).collect();
        assert_eq!(recv.len(), 4, "3 messages and the marker: {lines:?}");
    }
}

/// QoS 0/1/2 round trips between two paho MQTTv311 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v311_qos_0_1_2_round_trips() {
    roundtrips("311").await;
}

/// QoS 0/1/2 round trips between two paho MQTTv31 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v31_qos_0_1_2_round_trips() {
    roundtrips("31").await;
}

async fn persistent(protocol: &str, resume_present: &str) {
    if !have_paho() {
        return;
    }
    let b = start().await;
    let topic = format!("paho/persist/{protocol}");
    let lines = run_paho(
        &format!("paho persistent v{protocol}"),
        &mut paho(
            &b,
            &[
                "persistent",
                "--protocol",
                protocol,
                "--count",
                "5",
                "--topic",
                &topic,
                "--resume-present",
                resume_present,
            ],
        ),
    )
    .await;
    let connacks: Vec<_> = lines.iter().filter(|l| l.starts_with("CONNACK")).collect();
    assert_eq!(
        connacks,
        [
            "CONNACK session_present=0".to_string(),
            format!("CONNACK session_present={resume_present}")
        ]
        .iter()
        .collect::<Vec<_>>(),
        "{lines:?}"
    );
    let recv: Vec<_> = lines.iter().filter(|l| l.starts_with("RECV ")).collect();
    let want: Vec<String> = (0..5)
        .map(|i| format!("RECV {topic} 1 queued-{i}"))
        .collect();
    assert_eq!(recv, want.iter().collect::<Vec<_>>(), "{lines:?}");
}

/// A clean_session=False paho client (3.1.1) gets the QoS 1 messages queued while it was
/// offline, in order, with session present = 1 [MQTT-3.2.2-2][MQTT-4.6.0-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v311_persistent_session_gets_offline_messages() {
    persistent("311", "1").await;
}

/// The same for MQTT 3.1. A 3.1 CONNACK has no session present flag: its first byte is
/// reserved ("Topic Name Compression Response", unused), so the broker must send 0 there and
/// paho reports session present = 0; the queued messages must still all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v31_persistent_session_gets_offline_messages() {
    persistent("31", "0").await;
}
