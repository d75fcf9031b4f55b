//! Readying a bridge's session here at start, before clients are served and whether or not
//! the remote broker can be reached: its subscriptions are made to match the `out` lines, so
//! that what is published from the first moment waits for the bridge (with `cleansession =
//! false`), and a line removed from the configuration stops catching messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::link::{self, Names};
use super::{BridgeError, TopicMap};
use crate::broker::BrokerState;
use crate::codec::{self, Disconnect, Packet, ReasonCode, Subscribe, Unsubscribe};
use crate::config::{BridgeConfig, MQTT_MAX_PACKET_SIZE};

/// How long the session has to answer.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// Readies the sessions of the bridges that keep one (`cleansession = false`); a failure is
/// logged and the bridge still starts (its first connection subscribes).
pub async fn prepare_sessions(broker: &Arc<BrokerState>) {
    for cfg in &broker.config().bridges {
        if cfg.cleansession {
            continue;
        }
        let names = Names::of(cfg, broker.config().cluster_node());
        let map = TopicMap::new(&cfg.topics);
        let done = tokio::time::timeout(PREPARE_TIMEOUT, prepare(broker, cfg, &names, &map));
        let result = done
            .await
            .unwrap_or(Err(BridgeError::Timeout("readying the bridge's session")));
        if let Err(e) = result {
            tracing::warn!(bridge = %cfg.name, error = %e,
                "bridge: could not ready its session here before the first connection");
        }
    }
}

/// Connects the session, subscribes to the `out` filters, unsubscribes from any other, and
/// disconnects, leaving the session (and what is in flight in it) as it was.
async fn prepare(
    broker: &Arc<BrokerState>,
    cfg: &BridgeConfig,
    names: &Names,
    map: &TopicMap,
) -> Result<(), BridgeError> {
    // A window of one: what the session resends on connecting is not read, only waits.
    let mut local = link::connect_local(broker, cfg, names, 1, MQTT_MAX_PACKET_SIZE).await?;
    let wanted = map.local_subscriptions();
    let stale: Vec<String> = broker
        .session_info(&names.local_id)
        .map(|i| i.subscriptions)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !wanted.iter().any(|(w, _)| w == f))
        .collect();
    let mut out = BytesMut::new();
    let mut waiting = Vec::new();
    if !wanted.is_empty() {
        let s = Subscribe {
            packet_id: 1,
            filters: wanted,
            properties: Default::default(),
        };
        codec::encode(&Packet::Subscribe(s), local.version, &mut out);
        waiting.push(1);
    }
    if !stale.is_empty() {
        tracing::info!(bridge = %cfg.name, filters = ?stale,
            "bridge: unsubscribing its session from filters no topic line has any more");
        let u = Unsubscribe {
            packet_id: 2,
            filters: stale,
            properties: Default::default(),
        };
        codec::encode(&Packet::Unsubscribe(u), local.version, &mut out);
        waiting.push(2);
    }
    local.io.write_all(&out).await?;
    while !waiting.is_empty() {
        match codec::decode(&mut local.rbuf, local.version, MQTT_MAX_PACKET_SIZE)? {
            Some(Packet::SubAck(a)) => waiting.retain(|&id| id != a.packet_id),
            Some(Packet::UnsubAck(a)) => waiting.retain(|&id| id != a.packet_id),
            Some(Packet::Disconnect(d)) => return Err(BridgeError::LocalDisconnected(d.reason.0)),
            // Resends of what is in flight: left for the bridge's first connection.
            Some(_) => {}
            None => {
                if local.io.read_buf(&mut local.rbuf).await? == 0 {
                    return Err(BridgeError::Closed("by this broker"));
                }
            }
        }
    }
    out.clear();
    let bye = Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    codec::encode(&bye, local.version, &mut out);
    local.io.write_all(&out).await?;
    local.io.shutdown().await?;
    Ok(())
}
