//! The application message as the broker routes it: decoded once from a PUBLISH (or a will),
//! shared by every subscriber through an `Arc`, never copied per subscriber.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{BoxedProperties, QoS};
use crate::storage::{forwarded_properties, unix_ms_now, StoredMessage};

/// Where a message entered this broker, so that it is never sent back where it came from (a
/// cluster peer's message is not forwarded to the cluster again; a bridge does not send a
/// message back over the bridge it arrived on). The names sit behind thin pointers so that an
/// origin takes 16 bytes, not 24, in every message record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Published by a client of this node, or by the broker itself (wills, `$SYS`).
    #[default]
    Local,
    /// Routed here by the cluster peer with this node id.
    Peer(Arc<String>),
    /// Received over the bridge with this name.
    Bridge(Arc<String>),
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
    pub properties: BoxedProperties,
    /// From the Message Expiry Interval; the remaining interval is forwarded.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local; None for messages the broker itself publishes.
    pub publisher: Option<Arc<str>>,
    /// Where the message entered this broker.
    pub origin: Origin,
    /// The stored form and its store id, made once when the message is first written to the
    /// store, so every queue it joins shares one stored body.
    pub stored: OnceLock<(u64, Arc<StoredMessage>)>,
    /// Queue entries holding it across all sessions: the global budget counts the message
    /// itself once, while any queue holds it ([`Message::charge`]).
    pub queued: AtomicU32,
}

/// What one queue entry costs besides the message it shares: the delivery record and its share
/// of the queue's buffer.
const ENTRY_COST: usize = 96;

impl Message {
    pub fn new(topic: &str, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties: BoxedProperties::default(),
            expires_at: None,
            publisher: None,
            origin: Origin::Local,
            stored: OnceLock::new(),
            queued: AtomicU32::new(0),
        }
    }

    /// Memory a queued delivery of this message holds as one queue sees it: payload, topic,
    /// the message record and the entry (for a session's own queue accounting and
    /// `max_queued_bytes`; the global budget counts a shared message once, see
    /// [`Message::charge`]).
    pub fn cost(&self) -> usize {
        self.shared_cost() + ENTRY_COST
    }

    /// What a delivery of this message costs when its payload is held elsewhere anyway: a
    /// retained message streamed to a new subscriber shares the retained store's payload
    /// (`Bytes`), so its stream buffer adds only the record and the entry. Counting the payload
    /// per subscriber let a few stuck new subscribers of large retained messages hold the
    /// global budget, where the relief cannot shed them.
    pub fn record_cost(&self) -> usize {
        self.topic.len() + std::mem::size_of::<Message>() + ENTRY_COST
    }

    /// The part of [`Message::cost`] every queue holding this message shares.
    fn shared_cost(&self) -> usize {
        self.payload.len() + self.topic.len() + std::mem::size_of::<Message>()
    }

    /// What one more queue entry holding this message adds to the global budget: the entry,
    /// and for the first entry the message itself. A message fanned out to 10,000 subscribers
    /// holds its payload once, and counting it per queue made a burst of large fan-out
    /// messages saturate the budget at a small fraction of the memory it bounds. Undone by
    /// [`Message::release`], once per charge.
    pub fn charge(&self) -> usize {
        let first = self.queued.fetch_add(1, Ordering::Relaxed) == 0;
        ENTRY_COST + if first { self.shared_cost() } else { 0 }
    }

    /// What a queue entry holding this message gives back to the global budget when it
    /// leaves its queue: the entry, and for the last one the message itself.
    pub fn release(&self) -> usize {
        let last = self.queued.fetch_sub(1, Ordering::Relaxed) == 1;
        ENTRY_COST + if last { self.shared_cost() } else { 0 }
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

/// A message as the retained store keeps it, for as long as it stays retained: what a delivery
/// to a new subscriber needs, without the fields only a routed message uses (where it entered,
/// its store id cache). `Arc<RetainedMessage>` fits a 112-byte malloc chunk where
/// `Arc<Message>` takes 160 (issue 15's retained row).
#[derive(Debug)]
pub struct RetainedMessage {
    pub topic: Arc<str>,
    /// Owns exactly its bytes (see [`RetainedMessage::new`]). An `Arc<[u8]>`, not `Bytes`: its
    /// count sits in the payload's own allocation, where sharing a `Bytes` copied from a slice
    /// would add a 32-byte block per message on its first delivery, kept as long as it is
    /// retained; and the field takes 16 bytes of the record instead of 32.
    pub payload: Arc<[u8]>,
    /// As in [`Message::properties`].
    pub properties: BoxedProperties,
    /// As in [`Message::expires_at`]: the expiry runs on while the message is retained.
    pub expires_at: Option<Instant>,
    /// As in [`Message::publisher`], so a delivery carries the same publisher as the routed one.
    pub publisher: Option<Arc<str>>,
    /// The QoS it was published with (a delivery gets the lower of it and the subscription's).
    pub qos: QoS,
}

impl RetainedMessage {
    /// The record of a retained PUBLISH. The payload is copied: one decoded from a
    /// connection's read buffer is a slice of it, and would keep that whole buffer (up to
    /// 64 KiB) allocated for as long as the message stays retained.
    pub fn new(msg: &Message) -> RetainedMessage {
        RetainedMessage {
            topic: msg.topic.clone(),
            payload: Arc::from(&msg.payload[..]),
            properties: msg.properties.clone(),
            expires_at: msg.expires_at,
            publisher: msg.publisher.clone(),
            qos: msg.qos,
        }
    }

    /// The message delivered to a new subscription: RETAIN set, local origin (it is sent to a
    /// session, never routed again), sharing topic and payload with the record (the `Bytes`
    /// view of the payload is a small block of its own, freed with the delivery).
    pub fn to_message(&self) -> Message {
        Message {
            topic: self.topic.clone(),
            payload: Bytes::from_owner(self.payload.clone()),
            qos: self.qos,
            retain: true,
            properties: self.properties.clone(),
            expires_at: self.expires_at,
            publisher: self.publisher.clone(),
            origin: Origin::Local,
            stored: OnceLock::new(),
            queued: AtomicU32::new(0),
        }
    }
}

// The conversions between the routed and the stored form live here rather than in `storage`,
// so the store does not depend on the broker's message type: `message` sits above `storage`.
impl StoredMessage {
    /// Converts a routed message; its `Instant` expiry becomes wall-clock time.
    pub fn from_message(m: &Message) -> StoredMessage {
        let (now, now_ms) = (Instant::now(), unix_ms_now());
        StoredMessage {
            topic: m.topic.to_string(),
            payload: m.payload.clone(),
            qos: m.qos,
            retain: m.retain,
            properties: forwarded_properties(&m.properties),
            expires_at_unix_ms: m.expires_at.map(|t| {
                let left = t.saturating_duration_since(now).as_millis();
                now_ms.saturating_add(u64::try_from(left).unwrap_or(u64::MAX))
            }),
            publisher: m.publisher.as_deref().map(str::to_owned),
        }
    }

    /// Converts back into a routable message; wall-clock expiry becomes an `Instant` (already
    /// expired messages get an expiry of now, so `is_expired` is true).
    pub fn to_message(&self) -> Message {
        let (now, now_ms) = (Instant::now(), unix_ms_now());
        Message {
            topic: Arc::from(self.topic.as_str()),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone().into(),
            expires_at: self
                .expires_at_unix_ms
                .map(|t| now + Duration::from_millis(t.saturating_sub(now_ms))),
            publisher: self.publisher.as_deref().map(Arc::from),
            // Where it came from is not stored: after a restart it counts as local.
            origin: Origin::Local,
            stored: std::sync::OnceLock::new(),
            queued: AtomicU32::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Properties;

    /// Every retained and queued message is one `Arc<Message>`: with glibc's 16-byte size
    /// classes, a record over 136 bytes (152 with the `Arc` counts) costs a 176-byte chunk
    /// instead of 160 (issue 15's retained-memory row).
    #[test]
    fn the_message_record_fits_its_size_class() {
        assert!(
            std::mem::size_of::<Message>() <= 136,
            "Message grew to {} bytes",
            std::mem::size_of::<Message>()
        );
    }

    /// A retained record takes a 112-byte malloc chunk with its `Arc` counts (glibc: request +
    /// 8, rounded up to 16): over 80 bytes it would take the next class (issue 15's
    /// retained-memory row).
    #[test]
    fn the_retained_record_fits_its_size_class() {
        assert!(
            std::mem::size_of::<RetainedMessage>() <= 80,
            "RetainedMessage grew to {} bytes",
            std::mem::size_of::<RetainedMessage>()
        );
    }

    #[test]
    fn a_retained_record_delivers_what_was_published_mqtt_3_3_1_5() {
        let mut m = Message::new(
            "a/b",
            Bytes::from_static(b"xpayloadx"),
            QoS::ExactlyOnce,
            true,
        );
        m.payload = m.payload.slice(1..8);
        m.properties = full_properties().into();
        m.publisher = Some(Arc::from("pub"));
        m.set_expiry_interval(Some(100), std::time::Instant::now());
        let r = RetainedMessage::new(&m);
        let d = r.to_message();
        assert_eq!((&*d.topic, &d.payload[..]), ("a/b", &b"payload"[..]));
        assert_eq!((d.qos, d.retain), (QoS::ExactlyOnce, true));
        assert_eq!(*d.properties, full_properties());
        assert_eq!(
            (d.expires_at, d.publisher.as_deref()),
            (m.expires_at, Some("pub"))
        );
        assert_eq!(d.origin, Origin::Local);
        // Its own bytes, not a view of the publisher's buffer; shared, not copied, by deliveries.
        assert_ne!(r.payload.as_ptr(), m.payload.as_ptr());
        assert_eq!(d.payload.as_ptr(), r.payload.as_ptr());
    }

    /// Every property a stored message keeps.
    fn full_properties() -> Properties {
        Properties {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
            ..Properties::default()
        }
    }

    #[test]
    fn message_conversion_round_trips() {
        let mut m = Message::new("a/b", Bytes::from_static(b"p"), QoS::AtLeastOnce, true);
        m.properties = full_properties().into();
        m.properties.topic_alias = Some(1);
        m.publisher = Some(Arc::from("pub"));
        m.set_expiry_interval(Some(100), std::time::Instant::now());
        let stored = StoredMessage::from_message(&m);
        let left = stored.expires_at_unix_ms.unwrap() - unix_ms_now();
        assert!((98_000..=100_000).contains(&left), "{left}");
        assert_eq!(stored.properties, full_properties());
        let back = stored.to_message();
        assert_eq!(&*back.topic, "a/b");
        assert_eq!(back.publisher.as_deref(), Some("pub"));
        let secs = back.remaining_expiry(std::time::Instant::now()).unwrap();
        assert!((98..=100).contains(&secs), "{secs}");
        let mut expired = stored.clone();
        expired.expires_at_unix_ms = Some(1);
        assert!(expired.to_message().is_expired(std::time::Instant::now()));
    }
}
