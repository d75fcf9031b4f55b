//! The application message as the broker routes it: decoded once from a PUBLISH (or a will),
//! shared by every subscriber through an `Arc`, never copied per subscriber.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{Properties, QoS};
use crate::storage::StoredMessage;

/// Where a message entered this broker, so that it is never sent back where it came from (a
/// cluster peer's message is not forwarded to the cluster again; a bridge does not send a
/// message back over the bridge it arrived on).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Published by a client of this node, or by the broker itself (wills, `$SYS`).
    #[default]
    Local,
    /// Routed here by the cluster peer with this node id.
    Peer(Arc<str>),
    /// Received over the bridge with this name.
    Bridge(Arc<str>),
}

/// One application message. The payload is the `Bytes` split from the publisher's read buffer.
#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with (for Retain As Published).
    pub retain: bool,
    /// Properties forwarded to subscribers (v5): payload format, content type, response topic,
    /// correlation data, user properties. Message expiry is kept as `expires_at` instead, and
    /// topic alias / subscription identifiers are per connection.
    pub properties: Properties,
    /// From the Message Expiry Interval; the remaining interval is forwarded.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local; None for messages the broker itself publishes.
    pub publisher: Option<Arc<str>>,
    /// Where the message entered this broker.
    pub origin: Origin,
    /// The stored form and its store id, made once when the message is first written to the
    /// store, so every queue it joins shares one stored body.
    pub stored: OnceLock<(u64, Arc<StoredMessage>)>,
}

impl Message {
    pub fn new(topic: &str, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties: Properties::default(),
            expires_at: None,
            publisher: None,
            origin: Origin::Local,
            stored: OnceLock::new(),
        }
    }

    /// Memory a queued delivery of this message holds, for queue budgets: payload, topic and
    /// the message record itself (counted per delivery, which overstates fan-out of a shared
    /// payload: the budget errs on the safe side).
    pub fn cost(&self) -> usize {
        const RECORD: usize = std::mem::size_of::<Message>() + 96;
        self.payload.len() + self.topic.len() + RECORD
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Seconds left of the Message Expiry Interval, rounded up, as forwarded to a subscriber
    /// [MQTT-3.3.2-6]. None when the message does not expire.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }

    /// Sets `expires_at` from a Message Expiry Interval in seconds.
    pub fn set_expiry_interval(&mut self, secs: Option<u32>, now: Instant) {
        self.expires_at = secs.map(|s| now + Duration::from_secs(u64::from(s)));
    }
}
