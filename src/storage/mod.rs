//! Persistence for a single node: sessions, their subscriptions, per-session queues of QoS 1/2
//! messages, outbound inflight state, inbound QoS 2 packet ids and retained messages.
//!
//! The broker describes every change as an [`Op`]; a `Vec<Op>` is one atomic batch handed to a
//! [`Store`]. [`StoreWriter`] is the group-commit front end the broker uses: one writer thread,
//! a bounded request queue, one fsync per batch of requests.
//!
//! Implementations: [`MemoryStore`] (tests, and the library's default) and [`FjallStore`]
//! (on disk). Both apply batches through the same planning code (`engine`), so they have the
//! same semantics by construction; the shared behavioural suite in `tests.rs` runs on both.
//!
//! Invariants:
//! - A batch is applied entirely or not at all, also across a crash. `write(.., sync = true)`
//!   returns only after the batch is durable (fdatasync); after a failed write or fsync a
//!   [`FjallStore`] is poisoned and refuses every later write.
//! - A message queued for one session in a batch is stored in its queue entry: enqueueing is
//!   one key write and dequeueing one key delete, with no reads (the writer tracks which
//!   entries it wrote, see `index`). A message queued for several sessions in one batch (a
//!   fan-out) is stored once: `msgs` holds the body under the broker-assigned message id,
//!   `msg_refs` counts the queue entries that point at it, and the body is deleted in the
//!   batch that drops the last reference. Refcounts change only inside batches, so they are
//!   crash-consistent.
//! - Batches are encoded by their submitter ([`Prepared`]), so the writer thread only plans
//!   and commits.
//! - Queue keys end with the big-endian sequence number, so a range scan returns queue order.
//! - Records carry a version byte; a record that does not decode is an error
//!   ([`StoreError::Corrupt`]), never a panic. References that dangle (an inflight record whose
//!   queue entry is gone, a queue entry whose message is gone) are skipped with a warning and
//!   reported by `check`.
//! - Keys are limited to 65,535 bytes (fjall's limit). A batch with a longer key (a huge client
//!   id or topic) is refused whole with [`StoreError::TooLarge`] before anything is written; it
//!   does not poison the store.

mod access;
mod early;
mod encoding;
mod engine;
mod error;
mod fjall_store;
mod index;
mod inspect;
mod memory;
mod prepared;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::codec::{self, Properties, QoS, SubscriptionOptions};

pub use access::Account;
pub use error::{Damage, OpenError, PoisonCause, StoreError, TooLarge};
pub use fjall_store::{FjallOptions, FjallStore};
pub use inspect::CheckReport;
pub use memory::MemoryStore;
pub use prepared::Prepared;
pub use writer::{StoreWriter, SyncMode, Tracked, WriterStats};

/// The on-disk format version this build writes and understands. Stored in the `meta`
/// keyspace; a store with a newer version is refused at open. Version 2 added queue entries
/// that hold their message inline (and the `msg_id_hw` meta record); version 3 in-flight
/// records that hold their message ([`Op::PutOwnedInflight`]). Each reads every record of the
/// versions before it as is, so an older store is upgraded at open by rewriting the version,
/// and a starling that only knows an older version refuses the upgraded store as newer
/// (rather than failing on a record it cannot read).
pub const FORMAT_VERSION: u32 = 3;

/// Longest key a store accepts (fjall's limit). Keys are the client id (plus a two-byte length
/// and a suffix) or the topic.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// An application message as stored: the queue body, a retained message or an inbound QoS 2
/// message awaiting PUBREL.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Only the forwarded subset is stored: payload format indicator, content type, response
    /// topic, correlation data and user properties. Every other field reads back as absent.
    pub properties: Properties,
    /// Wall-clock expiry (Unix milliseconds) from the Message Expiry Interval.
    pub expires_at_unix_ms: Option<u64>,
    /// Client id of the publisher, for No Local.
    pub publisher: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A message in the store's versioned record format, which the cluster also uses on the wire
/// between nodes: one hand-written, reviewed layout for both.
pub fn encode_message_record(m: &StoredMessage) -> Vec<u8> {
    encoding::encode_message(m)
}

/// Reads a record written by [`encode_message_record`]; a truncated or unknown record is an
/// error naming what is wrong, never a panic.
pub fn decode_message_record(buf: &[u8]) -> Result<StoredMessage, String> {
    encoding::decode_message(buf).map_err(|e| e.0)
}

/// The subset of properties a stored message keeps (see [`StoredMessage::properties`]).
pub fn forwarded_properties(p: &Properties) -> Properties {
    Properties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Properties::default()
    }
}

/// A session's Will Message, published when the session's connection ends uncleanly.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The forwarded subset, as for [`StoredMessage::properties`].
    pub properties: Properties,
    /// Message Expiry Interval (seconds), counted from when the will is published.
    pub expiry_interval_secs: Option<u32>,
    /// Will Delay Interval (seconds); 0 = publish at once.
    pub delay_secs: u32,
}

impl StoredWill {
    pub fn from_will(w: &codec::Will) -> StoredWill {
        StoredWill {
            topic: w.topic.clone(),
            payload: w.payload.clone(),
            qos: w.qos,
            retain: w.retain,
            properties: forwarded_properties(&w.properties),
            expiry_interval_secs: w.properties.message_expiry_interval,
            delay_secs: w.properties.will_delay_interval.unwrap_or(0),
        }
    }

    pub fn to_will(&self) -> codec::Will {
        let mut properties = self.properties.clone();
        properties.message_expiry_interval = self.expiry_interval_secs;
        properties.will_delay_interval = (self.delay_secs > 0).then_some(self.delay_secs);
        codec::Will {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties,
        }
    }
}

/// A session's own record. Its subscriptions, queue and inflight state are separate records
/// under the same client id, so a SUBSCRIBE or an ack does not rewrite the session.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSession {
    pub client_id: String,
    /// The user name that created the session, so a takeover by another user can be refused.
    pub owner_username: Option<String>,
    /// 3, 4 or 5.
    pub protocol_level: u8,
    /// Session Expiry Interval in seconds; None = never expires.
    pub expiry_secs: Option<u32>,
    /// When the client disconnected; None while connected (or when the broker stopped while
    /// it was connected: the broker then counts from its own start).
    pub disconnected_at_unix_ms: Option<u64>,
    pub will: Option<StoredWill>,
}

/// One subscription of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSubscription {
    pub filter: String,
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

/// One message queued for one session: the shared body plus what is per subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDelivery {
    /// Broker-assigned id of the body; equal ids mean the same body (see
    /// [`Snapshot::next_msg_id`]).
    pub msg_id: u64,
    pub msg: Arc<StoredMessage>,
    /// min(publish QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// Stage of an outbound QoS 1/2 delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflightStage {
    /// PUBLISH sent, awaiting PUBACK / PUBREC. The queue entry at `seq` is kept until then.
    Publish,
    /// PUBREL sent, awaiting PUBCOMP. The queue entry is no longer needed.
    Released,
}

/// Where an inflight record that holds its own message ([`Op::PutOwnedInflight`]) stands in
/// the session's send order, which queue positions alone cannot say: it was sent before the
/// queue entry `before` (the first one unsent at the time) and after every entry below it, and
/// it is the `nth` such record of its session, so records sent before the same entry keep
/// their order too. Resends after a restart follow this order [MQTT-4.6.0-1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedOrder {
    pub before: u64,
    pub nth: u32,
}

/// One change. A `Vec<Op>` is applied atomically by [`Store::write`].
///
/// Typical batches: QoS 1 publish to an offline session = `[Enqueue]`; sending it =
/// `[PutInflight{Publish}]`; PUBACK = `[DeleteInflight, Dequeue]`; PUBREC =
/// `[PutInflight{Released}, Dequeue]`; PUBCOMP = `[DeleteInflight]`; clean start =
/// `[DeleteSession, PutSession]`; sending a retained message to a new subscription =
/// `[PutOwnedInflight{Some}]`, its PUBREC `[PutOwnedInflight{None}]`.
#[derive(Clone, Debug)]
pub enum Op {
    /// Creates or replaces the session record (not its subscriptions or queue).
    PutSession(StoredSession),
    /// Deletes the session and everything under it: subscriptions, queue (releasing message
    /// bodies), inflight and inbound QoS 2 records.
    DeleteSession {
        client_id: String,
        /// One past the highest queue position the deleted session used (0: none to guard).
        /// An `Enqueue` of a lower position that reaches the store after this delete is that
        /// session's, late (a publisher's batch that waited for room in the writer's queue),
        /// and is skipped: written, it would be an orphan that a restart hands to the next
        /// session under the client id, which numbers its queue from here on
        /// (`Persistence::first_seq`).
        retire_below: u64,
    },
    PutSubscription {
        client_id: String,
        sub: StoredSubscription,
    },
    DeleteSubscription {
        client_id: String,
        filter: String,
    },
    /// Appends (or replaces) the queue entry `seq`. The body is written only if no queue entry
    /// references `delivery.msg_id` yet; otherwise only its refcount grows.
    Enqueue {
        client_id: String,
        seq: u64,
        delivery: StoredDelivery,
    },
    /// Removes the queue entry `seq` (absent is fine) and releases its body reference.
    Dequeue {
        client_id: String,
        seq: u64,
    },
    /// `seq` is the queue entry sent under `packet_id`; it also orders inflight records on load.
    PutInflight {
        client_id: String,
        packet_id: u16,
        seq: u64,
        stage: InflightStage,
    },
    /// An inflight record holding its message instead of naming a queue entry: a retained
    /// message sent to a new subscription, which never had a queue position (it is read from
    /// the retained store as the client takes it). `delivery` is the PUBLISH awaiting PUBACK /
    /// PUBREC; None once PUBREL was sent. Removed by `DeleteInflight`.
    PutOwnedInflight {
        client_id: String,
        packet_id: u16,
        order: OwnedOrder,
        delivery: Option<StoredDelivery>,
    },
    DeleteInflight {
        client_id: String,
        packet_id: u16,
    },
    /// An inbound QoS 2 PUBLISH awaiting PUBREL; the message is kept when the broker delivers
    /// it only on PUBREL.
    PutInboundQos2 {
        client_id: String,
        packet_id: u16,
        msg: Option<StoredMessage>,
    },
    DeleteInboundQos2 {
        client_id: String,
        packet_id: u16,
    },
    PutRetained(StoredMessage),
    DeleteRetained {
        topic: String,
    },
    /// Sets the mark `name`: a small value a component keeps beside the records it describes,
    /// in the same batch, so that both or neither survive a crash (the cluster's last applied
    /// stream sequence, written with the queue entries of that stream message). Read back in
    /// [`Snapshot::marks`].
    PutMark {
        name: String,
        value: Vec<u8>,
    },
}

/// An inflight record as loaded, in the original send order.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadedInflight {
    /// Resend as PUBLISH with DUP=1.
    Publish {
        packet_id: u16,
        seq: u64,
        delivery: StoredDelivery,
    },
    /// Resend PUBREL.
    Released { packet_id: u16, seq: u64 },
    /// A record holding its own message ([`Op::PutOwnedInflight`]): resend `delivery` as
    /// PUBLISH with DUP=1, or PUBREL when it is None.
    Owned {
        packet_id: u16,
        order: OwnedOrder,
        delivery: Option<StoredDelivery>,
    },
}

impl LoadedInflight {
    pub fn packet_id(&self) -> u16 {
        match self {
            LoadedInflight::Publish { packet_id, .. }
            | LoadedInflight::Released { packet_id, .. }
            | LoadedInflight::Owned { packet_id, .. } => *packet_id,
        }
    }

    /// The queue entry the record names; None for one holding its own message.
    pub fn seq(&self) -> Option<u64> {
        match self {
            LoadedInflight::Publish { seq, .. } | LoadedInflight::Released { seq, .. } => {
                Some(*seq)
            }
            LoadedInflight::Owned { .. } => None,
        }
    }

    /// Send order: a record naming queue entry `s` after every record sent before `s`
    /// ([`OwnedOrder`]).
    pub fn send_order(&self) -> (u64, bool, u32) {
        match self {
            LoadedInflight::Owned { order, .. } => (order.before, false, order.nth),
            LoadedInflight::Publish { seq, .. } | LoadedInflight::Released { seq, .. } => {
                (*seq, true, 0)
            }
        }
    }
}

/// A session as loaded at start: everything but its queue, which is streamed with
/// [`Store::queue_range`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedSession {
    pub session: StoredSession,
    /// In filter order.
    pub subscriptions: Vec<StoredSubscription>,
    /// In send order (by seq) [MQTT-4.6.0-1].
    pub inflight: Vec<LoadedInflight>,
    /// Inbound QoS 2 packet ids awaiting PUBREL, ascending.
    pub inbound_qos2: Vec<(u16, Option<StoredMessage>)>,
    /// One more than the highest seq in the queue or in inflight records (and no less than any
    /// [`OwnedOrder::before`]): where new entries continue. Queue entries referenced by
    /// inflight `Publish` records are still in the queue,
    /// so replay with `queue_range(client, replay_from_seq, ..)`.
    pub next_seq: u64,
    /// First seq not referenced by an inflight record: one more than the highest inflight seq
    /// (0 when nothing is inflight). Deliveries are taken from the queue front in seq order, so
    /// every queue entry from here on is unsent.
    pub replay_from_seq: u64,
}

/// What [`Store::load`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Sorted by client id.
    pub sessions: Vec<LoadedSession>,
    /// Sorted by topic.
    pub retained: Vec<StoredMessage>,
    /// One more than the highest stored message id: the broker continues numbering here.
    pub next_msg_id: u64,
    /// Every mark ([`Op::PutMark`]) by name.
    pub marks: BTreeMap<String, Vec<u8>>,
    /// Records skipped because they belong to no session or point at a missing record (see
    /// `check` for details). Zero unless something went wrong before.
    pub skipped: u64,
}

/// A persistence backend. Implementations are internally synchronised; the broker writes only
/// through one [`StoreWriter`], but reads (`queue_range`) may run concurrently with writes.
pub trait Store: Send + Sync + 'static {
    /// Applies `batch` atomically. With `sync`, the batch (and everything written before it)
    /// is durable when this returns; an empty batch with `sync` is a pure fsync.
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError>;
    /// [`Store::write`] of a batch its submitter already encoded: what the [`StoreWriter`]
    /// calls. The default re-plans from the ops (for wrappers in tests).
    fn write_prepared(&self, batch: &Prepared, sync: bool) -> Result<(), StoreError> {
        self.write(batch.ops(), sync)
    }
    /// Sessions (with subscriptions, inflight and inbound QoS 2 state) and retained messages;
    /// queues are not loaded.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Up to `max` queue entries of `client_id` with seq ≥ `from_seq`, in seq order.
    fn queue_range(
        &self,
        client_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredDelivery)>, StoreError>;
    /// Number of queue entries of `client_id` (including those referenced by inflight records).
    fn queue_len(&self, client_id: &str) -> Result<u64, StoreError>;
}
