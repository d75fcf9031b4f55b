//! Helpers for tests of two or more cluster nodes in this process: waiting until they are
//! linked through NATS, their counters for failure messages, a persistent session's CONNECT.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::support::*;
use starling::codec::{Packet, QoS};

/// Waits until messages published on `from` reach subscribers on `to`: interest between the
/// nodes is set up asynchronously, so the first test message could otherwise be early.
pub async fn linked(from: &TestBroker, to: &TestBroker) {
    let tag = format!("probe/{}", to.addr.port());
    let mut sub = Client::connect(to.addr, &format!("probe-sub-{}", to.addr.port())).await;
    sub.subscribe(&tag, QoS::AtMostOnce).await;
    let mut publ = Client::connect(from.addr, &format!("probe-pub-{}", from.addr.port())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publ.publish(&tag, b"probe", QoS::AtMostOnce).await;
        if let Recv::Packet(Packet::Publish(_)) = sub.recv(Duration::from_millis(100)).await {
            break;
        }
        assert!(Instant::now() < deadline, "nodes never linked through NATS");
    }
    publ.disconnect().await;
    sub.disconnect().await;
}

/// The cluster counters of each node, for a failure message.
pub fn counters(nodes: &[&TestBroker]) -> String {
    nodes
        .iter()
        .map(|n| {
            let m = &n.state().metrics().cluster;
            format!(
                "sent {} received {} dropped {} republished {} groups {} up {}",
                m.sent.get(),
                m.received.get(),
                m.dropped.get(),
                m.republished.get(),
                m.shared_groups.get(),
                m.up.get()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A persistent session's CONNECT: clean start 0, expiry one hour.
pub fn persistent(client_id: &str) -> starling::codec::Connect {
    let mut c = connect_packet(client_id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c
}
