//! A resumed session delivers its queue whatever the new connection says about expiry
//! ([MQTT-3.1.2-4] in 3.1.1, [MQTT-3.1.2-5] in 5.0): the Session Expiry Interval of the new
//! CONNECT only decides what happens after that connection ends [MQTT-3.1.2-11]. Every
//! persistence mode is run against every resume variant (3.1.1 / 5.0; expiry kept, changed,
//! dropped; a restart of the broker in between or not), and subscription options survive a
//! restart.

#[path = "v5_support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use starling::codec::{Connect, Packet, Properties, ProtocolVersion, Publish, QoS};
use starling::config::Config;
use starling::{Broker, BrokerHandle};
use support::{Client, Recv, WAIT};

const TOPIC: &str = "TopicA/b";

/// How the subscriber comes back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Resume {
    /// 3.1.1, clean session 0 both times.
    V311,
    /// 5.0 with the same Session Expiry Interval again.
    V5Kept,
    /// 5.0 with a different, non-zero interval.
    V5Changed,
    /// 5.0 with no Session Expiry Interval: 0 from now on.
    V5Dropped,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    persistence: bool,
    restart: bool,
    resume: Resume,
}

fn config(store: Option<&std::path::Path>) -> Config {
    let mut cfg = support::config();
    cfg.persistence.enabled = Some(store.is_some());
    if let Some(dir) = store {
        cfg.persistence.dir = dir.to_path_buf();
    }
    cfg
}

async fn start(cfg: &Config) -> (BrokerHandle, SocketAddr) {
    let h = Broker::builder(cfg.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = h.local_addrs()[0];
    (h, addr)
}

async fn stop(h: BrokerHandle) {
    h.shutdown();
    tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .expect("the broker stops within 10 s");
}

fn connect(resume: Resume, client_id: &str, first: bool) -> Connect {
    let mut c = support::connect_packet(client_id);
    c.clean_start = first;
    if resume == Resume::V311 {
        c.protocol = ProtocolVersion::V311;
        c.clean_start = false;
        return c;
    }
    c.properties.session_expiry_interval = match (first, resume) {
        (true, _) | (false, Resume::V5Kept) => Some(99_999),
        (false, Resume::V5Changed) => Some(300),
        _ => None,
    };
    c
}

/// Reads what the resumed session delivers until `want` QoS 1/2 payloads arrived,
/// acknowledging each, and returns every payload (QoS 0 included).
async fn collect(cl: &mut Client, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut reliable = 0;
    while reliable < want {
        let p: Publish = match cl.recv(WAIT).await {
            Recv::Packet(Packet::Publish(p)) => p,
            Recv::Packet(_) => continue,
            other => panic!("{}: after {got:?}, got {other:?}", cl.name),
        };
        if p.qos != QoS::AtMostOnce {
            reliable += 1;
        }
        got.push(support::text(&p));
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                cl.send(&support::puback(
                    p.packet_id,
                    starling::codec::ReasonCode::SUCCESS,
                ))
                .await
            }
            QoS::ExactlyOnce => {
                cl.send(&Packet::PubRec(starling::codec::PubResp::new(p.packet_id)))
                    .await;
                cl.wait_for("PUBREL", |r| match r {
                    Packet::PubRel(r) if r.packet_id == p.packet_id => Some(()),
                    _ => None,
                })
                .await;
                cl.send(&Packet::PubComp(starling::codec::PubResp::new(p.packet_id)))
                    .await;
            }
        }
    }
    got
}

async fn run(case: Case) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = tmp.path().join("store");
    let cfg = config(case.persistence.then_some(store.as_path()));
    let id = format!(
        "resume-{:?}-{}-{}",
        case.resume, case.persistence, case.restart
    );
    let (mut broker, mut addr) = start(&cfg).await;

    let (mut sub, _) = Client::connect_with(addr, connect(case.resume, &id, true)).await;
    sub.subscribe("TopicA/#", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(addr, &format!("{id}-pub")).await;
    for (qos, body) in [
        (QoS::AtMostOnce, "q0"),
        (QoS::AtLeastOnce, "q1"),
        (QoS::ExactlyOnce, "q2"),
    ] {
        publisher.publish(TOPIC, body.as_bytes(), qos).await;
    }
    publisher.disconnect().await;

    if case.restart {
        stop(broker).await;
        (broker, addr) = start(&cfg).await;
    }

    let (mut sub, ack) = Client::connect_with(addr, connect(case.resume, &id, false)).await;
    assert!(
        ack.session_present,
        "{case:?}: the session must be resumed [MQTT-3.2.2-2]"
    );
    let got = collect(&mut sub, 2).await;
    assert!(
        got.contains(&"q1".to_string()) && got.contains(&"q2".to_string()),
        "{case:?}: the queued QoS 1 and 2 messages must be delivered on resume \
         [MQTT-3.1.2-4]/[MQTT-3.1.2-5], got {got:?}"
    );
    assert_eq!(
        got.iter().filter(|g| *g == "q2").count(),
        1,
        "{case:?}: QoS 2 exactly once, got {got:?}"
    );
    sub.disconnect().await;

    // What the new interval decides: a dropped interval ends the session with this connection
    // [MQTT-3.1.2-11], a restart in between included.
    if case.restart {
        stop(broker).await;
        (broker, addr) = start(&cfg).await;
    }
    let mut again = connect(case.resume, &id, false);
    again.properties.session_expiry_interval = Some(60);
    let (again, ack) = Client::connect_with(addr, again).await;
    let should_exist = case.resume != Resume::V5Dropped && (case.persistence || !case.restart);
    assert_eq!(
        ack.session_present, should_exist,
        "{case:?}: session present after the resumed connection ended"
    );
    again.disconnect().await;
    stop(broker).await;
}

async fn run_all(persistence: bool, restart: bool) {
    for resume in [
        Resume::V311,
        Resume::V5Kept,
        Resume::V5Changed,
        Resume::V5Dropped,
    ] {
        run(Case {
            persistence,
            restart,
            resume,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_delivers_the_queue_in_memory() {
    run_all(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_delivers_the_queue_with_persistence() {
    run_all(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_delivers_the_queue_after_a_restart() {
    run_all(true, true).await;
}

/// Every subscription option survives a restart: No Local [MQTT-3.8.3-3], Retain As Published
/// [MQTT-3.3.1-12]/[MQTT-3.3.1-13], Retain Handling [MQTT-3.3.1-10]/[MQTT-3.3.1-11], the
/// Subscription Identifier [MQTT-3.3.4-3], and shared-group membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_options_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = config(Some(&tmp.path().join("store")));
    let (broker, addr) = start(&cfg).await;
    let mut first = connect(Resume::V5Kept, "opts", true);
    first.clean_start = true;
    let (mut c, _) = Client::connect_with(addr, first).await;
    let mut opt = support::opts(QoS::AtLeastOnce);
    opt.no_local = true;
    let ack = c
        .subscribe_with(&[("nl/#", opt)], Properties::default())
        .await;
    assert!(!ack.reasons[0].is_error());
    let mut opt = support::opts(QoS::AtLeastOnce);
    opt.retain_as_published = true;
    let ack = c
        .subscribe_with(&[("rap/#", opt)], support::sub_id(7))
        .await;
    assert!(!ack.reasons[0].is_error());
    let mut opt = support::opts(QoS::AtLeastOnce);
    opt.retain_handling = 1;
    let ack = c
        .subscribe_with(&[("rh1/#", opt)], Properties::default())
        .await;
    assert!(!ack.reasons[0].is_error());
    let ack = c
        .subscribe_with(
            &[("$share/g/sh/#", support::opts(QoS::AtLeastOnce))],
            Properties::default(),
        )
        .await;
    assert!(!ack.reasons[0].is_error());
    c.disconnect().await;
    stop(broker).await;

    let (broker, addr) = start(&cfg).await;
    let (mut c, ack) = Client::connect_with(addr, connect(Resume::V5Kept, "opts", false)).await;
    assert!(ack.session_present);
    let mut p = support::publish("rh1/x", b"retained", QoS::AtLeastOnce, 0);
    p.retain = true;
    c.publish_packet(p).await;
    // Retain Handling 1: an existing subscription made again gets no retained messages.
    let mut opt = support::opts(QoS::AtLeastOnce);
    opt.retain_handling = 1;
    c.subscribe_with(&[("rh1/#", opt)], Properties::default())
        .await;
    // The live copy of the retained publish arrives once (not the retained one again).
    let live = c.next_publish_acked().await;
    assert_eq!(support::text(&live), "retained");
    assert!(
        !live.retain,
        "a live message to a non-RAP subscription has RETAIN 0"
    );
    // No Local: our own message on nl/ is not sent back.
    c.publish("nl/x", b"own", QoS::AtLeastOnce).await;
    // Retain As Published and the subscription identifier.
    let mut p = support::publish("rap/x", b"rap", QoS::AtLeastOnce, 0);
    p.retain = true;
    c.publish_packet(p).await;
    let got = c.next_publish_acked().await;
    assert_eq!(
        support::text(&got),
        "rap",
        "No Local must keep our own nl/x message away [MQTT-3.8.3-3]"
    );
    assert!(got.retain, "Retain As Published survives [MQTT-3.3.1-12]");
    assert_eq!(
        got.properties.subscription_identifiers,
        vec![7],
        "the subscription identifier survives [MQTT-3.3.4-3]"
    );
    // Shared membership: a message on sh/ reaches us as the only member.
    c.publish("sh/x", b"shared", QoS::AtLeastOnce).await;
    let got = c.next_publish_acked().await;
    assert_eq!(support::text(&got), "shared");
    c.expect_nothing("nothing else is delivered").await;
    c.disconnect().await;
    stop(broker).await;
}
