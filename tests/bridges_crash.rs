//! A bridge across crashes: a site broker (the `starling` binary, with a store) bridges to a
//! central one (the same, with a store too); one of them, or both, is SIGKILLed again and
//! again while QoS 1 and 2 messages cross both ways.
//! Every message a broker acknowledged to its publisher must reach the subscriber on the other
//! side, and every QoS 2 one exactly once [MQTT-4.3.3-2] [MQTT-4.4.0-1]: the bridge keeps no
//! state of its own, both sessions do, and the ids they share make the resends after each
//! restart complete the flows they interrupted.
//!
//! Seeded: `SOAK_SEED` replays a run (the seed is printed); `BRIDGE_CRASH_ROUNDS` sets how many
//! kills (default 5).

#[path = "soak/rng.rs"]
#[allow(dead_code)]
mod rng;
#[path = "persistence/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rng::{seed_from_env, Rng};
use starling::codec::{Packet, ProtocolVersion, PubResp, QoS};
use support::*;

/// Out: `sensors/#` at the site to `site1/sensors/#` centrally; in: `site1/cmd/#` to `cmd/#`.
fn bridge_toml(central: u16) -> String {
    format!(
        "[mqtt]\nmax_queued_messages = 0\n\n\
         [[bridges]]\nname = \"up\"\naddress = \"127.0.0.1:{central}\"\n\
         remote_clientid = \"site1\"\nrestart_timeout = \"50ms\"\nrestart_timeout_max = \"200ms\"\n\
         [[bridges.topics]]\npattern = \"sensors/#\"\nqos = 2\nremote_prefix = \"site1/\"\n\
         [[bridges.topics]]\npattern = \"cmd/#\"\ndirection = \"in\"\nqos = 2\n\
         remote_prefix = \"site1/\"\n"
    )
}

/// What publishers had acknowledged: seq → QoS.
type Acked = Arc<Mutex<BTreeMap<u64, QoS>>>;

/// Publishes seqs from `first` (every third one QoS 1, the others QoS 2) until `stop`, the
/// connection fails, or `max` were sent; records each acknowledged one. A QoS 2 message counts
/// as acknowledged at PUBREC: the broker owns it from then on [MQTT-4.3.3].
async fn publish_until(
    addr: SocketAddr,
    id: &str,
    topic: &str,
    mut seq: u64,
    max: u64,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> u64 {
    let connect = connect_packet(ProtocolVersion::V311, id, true, None);
    let Ok((mut c, _)) = Client::connect(addr, connect).await else {
        return seq;
    };
    let end = seq + max;
    while seq < end && !stop.load(Ordering::Relaxed) {
        let qos = if seq.is_multiple_of(3) {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let pid = (seq % 60_000) as u16 + 1;
        let p = publish_packet(topic, seq_payload(seq, 32), qos, pid, false);
        // A seq is never published twice: one that failed unacknowledged may still have
        // been taken, and publishing it again would be a second message.
        if c.send(&p).await.is_err() {
            return seq + 1;
        }
        match c.recv(Duration::from_secs(10)).await {
            Recv::Packet(Packet::PubAck(a) | Packet::PubRec(a)) if a.packet_id == pid => {
                acked.lock().unwrap().insert(seq, qos);
            }
            _ => return seq + 1,
        }
        if qos == QoS::ExactlyOnce {
            let rel = Packet::PubRel(PubResp::new(pid));
            if c.send(&rel).await.is_err()
                || !matches!(
                    c.recv(Duration::from_secs(10)).await,
                    Recv::Packet(Packet::PubComp(_))
                )
            {
                return seq + 1;
            }
        }
        seq += 1;
        // Spreads a round's messages over its life, so kills land mid-stream.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seq
}

/// Checks that `got` has every acknowledged seq, QoS 2 ones once.
fn check(side: &str, acked: &BTreeMap<u64, QoS>, got: &BTreeMap<u64, u32>, seed: u64) {
    let missing: Vec<_> = acked.keys().filter(|s| !got.contains_key(s)).collect();
    let twice: Vec<_> = acked
        .iter()
        .filter(|(s, q)| **q == QoS::ExactlyOnce && got.get(s).is_some_and(|n| *n > 1))
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{side} (seed {seed}): {} acknowledged, missing {missing:?}, QoS 2 more than once \
         {twice:?}",
        acked.len()
    );
}

/// Drains `sub` at `addr` until it holds every seq of `acked` (bounded).
async fn drain_all(sub: &mut Subscriber, addr: SocketAddr, acked: &Acked, expiry: Option<u32>) {
    let want: Vec<u64> = acked.lock().unwrap().keys().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let counts = sub.counts();
        if want.iter().all(|s| counts.contains_key(s)) {
            return;
        }
        let (mut c, _) = sub.connect(addr, expiry).await;
        sub.drain(
            &mut c,
            Duration::from_millis(500),
            Duration::from_secs(5),
            None,
            None,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_1_and_2_cross_a_bridge_whose_broker_is_killed_again_and_again() {
    let seed = seed_from_env();
    let rounds: u64 = std::env::var("BRIDGE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("bridge crash test: SOAK_SEED={seed} BRIDGE_CRASH_ROUNDS={rounds}");
    let mut rng = Rng::new(seed);
    let tmp = temp_dir("bridge-crash");
    let central_port = free_port();
    let central_cfg = write_config(
        tmp.path(),
        "central.toml",
        central_port,
        &tmp.path().join("central"),
        "[mqtt]\nmax_queued_messages = 0\n",
    );
    let central = BrokerProc::start(&central_cfg, central_port).await;
    let site_port = free_port();
    let site_cfg = write_config(
        tmp.path(),
        "site.toml",
        site_port,
        &tmp.path().join("site"),
        &bridge_toml(central_port),
    );

    // The subscribers' persistent sessions, one on each side.
    let mut at_central = Subscriber::new("c-sub", ProtocolVersion::V311);
    let (mut c, _) = at_central.connect(central.addr, None).await;
    c.subscribe("site1/sensors/#", QoS::ExactlyOnce).await;
    drop(c);
    let mut site = BrokerProc::start(&site_cfg, site_port).await;
    let mut at_site = Subscriber::new("s-sub", ProtocolVersion::V311);
    let (mut c, _) = at_site.connect(site.addr, None).await;
    c.subscribe("cmd/#", QoS::ExactlyOnce).await;
    drop(c);

    // Messages published centrally before the bridge first subscribed there are nobody's:
    // wait for its `1`.
    let state = connect_packet(ProtocolVersion::V311, "watch", true, None);
    let (mut w, _) = Client::connect_ok(central.addr, state).await;
    w.subscribe("$SYS/broker/connection/site1/state", QoS::AtMostOnce)
        .await;
    while !matches!(w.next().await, Packet::Publish(p) if &p.payload[..] == b"1") {}
    drop(w);

    // Each round both sides publish until one of the brokers, or both, is killed.
    let (out_acked, in_acked): (Acked, Acked) = Default::default();
    let mut central = central;
    let (mut out_seq, mut in_seq) = (1, 1_000_000);
    for round in 0..=rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let last = round == rounds;
        let max = if last { 50 } else { 400 };
        let out = tokio::spawn(publish_until(
            site.addr,
            "s-pub",
            "sensors/t",
            out_seq,
            max,
            out_acked.clone(),
            stop.clone(),
        ));
        let inbound = tokio::spawn(publish_until(
            central.addr,
            "c-pub",
            "site1/cmd/x",
            in_seq,
            max,
            in_acked.clone(),
            stop.clone(),
        ));
        if last {
            // A last round without a kill: everything must arrive.
            out_seq = out.await.unwrap();
            in_seq = inbound.await.unwrap();
            break;
        }
        let life = 50 + rng.below(400);
        tokio::time::sleep(Duration::from_millis(life)).await;
        // The site most often, the central broker (the bridge's remote) or both at times.
        let victim = match rng.below(10) {
            0..=5 => "site",
            6..=8 => "central",
            _ => "both",
        };
        if victim != "central" {
            site.kill();
        }
        if victim != "site" {
            central.kill();
        }
        stop.store(true, Ordering::Relaxed);
        out_seq = out.await.unwrap();
        in_seq = inbound.await.unwrap();
        println!("round {round}: killed {victim} after {life} ms, seqs {out_seq} / {in_seq}");
        if victim != "site" {
            central = BrokerProc::start(&central_cfg, central_port).await;
        }
        if victim != "central" {
            site = BrokerProc::start(&site_cfg, site_port).await;
        }
    }
    println!("published up to {out_seq} out and {in_seq} in");

    drain_all(&mut at_central, central.addr, &out_acked, None).await;
    drain_all(&mut at_site, site.addr, &in_acked, None).await;
    let (out_acked, in_acked) = (
        out_acked.lock().unwrap().clone(),
        in_acked.lock().unwrap().clone(),
    );
    println!(
        "out: {} acknowledged, {} delivered; in: {} acknowledged, {} delivered",
        out_acked.len(),
        at_central.delivered.len(),
        in_acked.len(),
        at_site.delivered.len()
    );
    check("site -> central", &out_acked, &at_central.counts(), seed);
    check("central -> site", &in_acked, &at_site.counts(), seed);
    assert!(
        out_acked.len() as u64 >= rounds,
        "too few messages went out to mean anything"
    );
    drop(central);
}
