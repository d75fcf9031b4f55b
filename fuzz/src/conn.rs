//! One or two whole client connections fed arbitrary bytes. Used by the `connection` fuzz target
//! (on a paused clock) and, through `#[path]`, by the main crate's `tests/fuzz_corpus.rs` (on the
//! real clock: the main crate's tokio has no `test-util`).
//!
//! Input layout: `[selector, split_a, split_b, bytes...]`.
//! - `selector & 0b11` chooses what the client sends first: 0 only `bytes` (raw, so the CONNECT
//!   parser and the pre-CONNECT path are fuzzed too); 1 a valid v3.1.1 CONNECT then `bytes`; 2 a
//!   valid minimal v5 CONNECT then `bytes`; 3 a v5 CONNECT with properties (session expiry,
//!   Receive Maximum 2, Topic Alias Maximum 2, Maximum Packet Size 512) then `bytes`.
//! - bit 2: Clean Session / Clean Start.
//! - bit 3: after the first connection ends, a second one sends the same CONNECT and nothing
//!   else, so a kept session is resumed (resends, queued messages, will delay cancelled).
//! - bit 4: a tight broker configuration (small in-flight window, queue, alias, subscription
//!   and topic level limits, max QoS 1, no retain) instead of the default one.
//! - bit 5: the CONNECT carries a will (QoS 1, retained, v5: will delay 5 s).
//! - `split_a`, `split_b`: where the bytes are cut into up to three writes (as a fraction of
//!   the length), so partial packets and packets spanning reads are exercised.
//!
//! The client end writes its chunks, shuts down its write side and keeps draining what the
//! broker sends; `serve` must then return by itself. On a paused clock the harness then lets
//! an hour pass, so delayed wills and session expiry run too. A panic anywhere (the connection
//! task included) is a crash; `serve` not returning within 30 s (virtual time when paused) after
//! the peer closed is reported as a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use starling::broker::BrokerState;
use starling::codec::{self, Connect, Packet, Properties, ProtocolVersion, QoS, Will};
use starling::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Client id used by the generated CONNECTs.
pub const CLIENT_ID: &str = "fuzz-client";

/// The CONNECT that selector `sel` prepends (None for raw mode).
pub fn connect_for(sel: u8) -> Option<Packet> {
    let mode = sel & 0b11;
    if mode == 0 {
        return None;
    }
    let protocol = if mode == 1 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    };
    let mut properties = Properties::default();
    if mode == 3 {
        properties.session_expiry_interval = Some(300);
        properties.receive_maximum = Some(2);
        properties.topic_alias_maximum = Some(2);
        properties.maximum_packet_size = Some(512);
        properties.request_problem_information = Some(1);
    }
    let will = (sel & 0b10_0000 != 0).then(|| {
        let mut properties = Properties::default();
        if protocol.is_v5() {
            properties.will_delay_interval = Some(5);
        }
        Will {
            topic: "fuzz/will".to_owned(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties,
        }
    });
    Some(Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: sel & 0b100 != 0,
        keep_alive: 30,
        client_id: CLIENT_ID.to_owned(),
        will,
        username: None,
        password: None,
        properties,
        bridge: false,
    })))
}

/// The broker configuration for selector `sel`.
pub fn config_for(sel: u8) -> Config {
    let mut config = Config::default();
    config.mqtt.max_packet_size = 64 * 1024;
    if sel & 0b1_0000 != 0 {
        config.mqtt.max_inflight = 2;
        config.mqtt.max_queued_messages = 3;
        config.mqtt.max_queued_bytes = 256;
        config.mqtt.max_topic_alias = 2;
        config.mqtt.max_qos = 1;
        config.mqtt.retain_available = false;
        config.mqtt.max_keepalive = 10;
        config.limits.max_subscriptions_per_client = 3;
        config.limits.max_topic_levels = 4;
    }
    config
}

/// Runs the connection(s) that `data` describes on `rt` (see the module doc). `paused` says
/// the runtime's clock is paused, so waiting an hour afterwards is free.
pub fn run(rt: &Runtime, data: &[u8], paused: bool) {
    let (header, bytes) = data.split_at(data.len().min(3));
    let [sel, split_a, split_b] = match *header {
        [s, a, b] => [s, a, b],
        _ => return,
    };
    let connect = connect_for(sel).map(|c| {
        let mut out = BytesMut::new();
        codec::encode(&c, ProtocolVersion::V5, &mut out);
        out
    });
    let mut first = connect.as_deref().unwrap_or_default().to_vec();
    first.extend_from_slice(bytes);
    let cut = |f: u8| first.len() * usize::from(f) / 256;
    let (a, b) = (cut(split_a.min(split_b)), cut(split_a.max(split_b)));
    let chunks = [&first[..a], &first[a..b], &first[b..]];
    rt.block_on(async {
        let broker = Arc::new(BrokerState::new(config_for(sel), CancellationToken::new()));
        one_connection(&broker, &chunks).await;
        if sel & 0b1000 != 0 {
            if let Some(connect) = &connect {
                one_connection(&broker, &[connect]).await;
            }
        }
        if paused {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

async fn one_connection(broker: &Arc<BrokerState>, chunks: &[&[u8]]) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = ([127, 0, 0, 1], 41883).into();
    let serve = tokio::spawn(starling::connection::serve(
        server,
        starling::protocol::ConnectionInfo::plain(peer, 0),
        broker.clone(),
    ));
    let (mut rd, mut wr) = tokio::io::split(client);
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 16 * 1024];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        if wr.write_all(chunk).await.is_err() {
            break;
        }
        // Let the server read this chunk before the next one arrives.
        tokio::task::yield_now().await;
    }
    let _ = wr.shutdown().await;
    match tokio::time::timeout(Duration::from_secs(30), serve).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("connection task failed: {e}"),
        Err(_) => panic!("serve did not return within 30 s of the peer closing its side"),
    }
    drain.abort();
}
