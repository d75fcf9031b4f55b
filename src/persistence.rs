//! The broker's side of persistence: turns live state changes into store [`Op`]s, hands them to
//! the group-commit writer (with a [`Receipt`] when an acknowledgement must wait for the disk),
//! reads a session's disk backlog back, and converts stored records into live ones (the
//! start-up restore that uses them is `crate::restore`, above the broker).
//!
//! What waits for durability (see `architecture.md`): PUBACK/PUBREC of an inbound QoS 1/2
//! message queued for a persistent session or retained; CONNACK of a persistent session;
//! SUBACK; an outbound PUBLISH until its packet id is recorded; PUBREL until the PUBREL-sent
//! stage is; PUBCOMP until the inbound QoS 2 record is deleted (otherwise, after a crash, the
//! client's next message under the same packet id would be taken for a duplicate and lost).
//! What does not: deletes of outbound records after the client's acknowledgement (a lost
//! delete only means a redelivery with DUP=1), QoS 0, metrics.
//!
//! The writer's queue is bounded (see `storage::writer`): a [`Receipt`] may first wait for room,
//! pausing its connection's reads ([`Persistence::receipt`]); a delete after an acknowledgement
//! is dropped and counted when the queue is full ([`Persistence::submit_delete`]); what must
//! not be lost and cannot wait is queued over the bound, counted ([`Persistence::submit`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::codec;
use crate::message::Message;
use crate::session::{Delivery, SessionMeta, Stored};
use crate::storage::{
    unix_ms_now, Op, OwnedOrder, Store, StoreError, StoreWriter, StoredDelivery, StoredMessage,
    StoredSession, StoredWill,
};

/// Resolves once the store has made a batch durable, or with the reason it could not.
/// [`Persistence::receipt`] makes them; a connection's outbox holds bytes back until they
/// resolve.
pub type Receipt = crate::storage::Tracked;

/// The store, its writer and the message-id counter, shared by every connection.
pub struct Persistence {
    /// The store, for reads (`queue_range` and the like); every write goes through `writer`.
    pub store: Arc<dyn Store>,
    /// The group-commit writer, with its bounded queue.
    pub writer: StoreWriter,
    next_msg_id: AtomicU64,
    /// One more than the highest queue position of any session deleted in this run (see
    /// [`Persistence::first_seq`]).
    retired_seqs: AtomicU64,
    /// QoS 1/2 deliveries a persistent session keeps in memory; the rest wait on disk.
    pub memory_cap: usize,
    /// The store's marks as loaded at start ([`crate::storage::Op::PutMark`]).
    marks: BTreeMap<String, Vec<u8>>,
}

impl Persistence {
    /// Wraps an opened store and its writer; message ids continue from `next_msg_id`.
    pub fn new(
        store: Arc<dyn Store>,
        writer: StoreWriter,
        next_msg_id: u64,
        memory_cap: usize,
    ) -> Persistence {
        Persistence {
            store,
            writer,
            next_msg_id: AtomicU64::new(next_msg_id.max(1)),
            retired_seqs: AtomicU64::new(0),
            memory_cap: memory_cap.max(1),
            marks: BTreeMap::new(),
        }
    }

    /// The marks the store held at start ([`crate::storage::Snapshot::marks`]).
    pub fn with_marks(mut self, marks: BTreeMap<String, Vec<u8>>) -> Persistence {
        self.marks = marks;
        self
    }

    /// The mark `name` as it was when the store was loaded: what a component wrote beside its
    /// records in the previous run.
    pub fn mark_at_start(&self, name: &str) -> Option<&[u8]> {
        self.marks.get(name).map(Vec::as_slice)
    }

    /// Where a new persistent session numbers its stored queue from: past every position a
    /// session deleted in this run used, under any client id.
    ///
    /// The store matches a `Dequeue` that arrives before its `Enqueue` by (client id, seq)
    /// (`storage::early`), and a deleted session's `Dequeue` can reach it after the
    /// `DeleteSession` (an ack, an expiry's hand-over racing a reconnect): had the next
    /// session under that client id started at 0 again, the late `Dequeue` would cancel that
    /// session's `Enqueue` of the same seq, and an acknowledged message would never be written.
    /// Nothing needs to survive a restart: the writes of one run are all applied before the
    /// next run starts, and a restored session continues from its stored positions.
    pub fn first_seq(&self) -> u64 {
        self.retired_seqs.load(Ordering::Acquire)
    }

    /// Records that a session whose next queue position is `next_seq` is being deleted: no
    /// later session starts below it ([`Persistence::first_seq`]). Called before its
    /// `DeleteSession` is submitted.
    pub fn retire_seqs(&self, next_seq: u64) {
        self.retired_seqs.fetch_max(next_seq, Ordering::AcqRel);
    }

    /// The stored form of `msg` and its id, made once per message.
    pub fn stored(&self, msg: &Message) -> (u64, Arc<StoredMessage>) {
        msg.stored
            .get_or_init(|| {
                let id = self.next_msg_id.fetch_add(1, Ordering::Relaxed);
                (id, Arc::new(StoredMessage::from_message(msg)))
            })
            .clone()
    }

    /// The stored form of `msg` without caching it in the message: for a retained message, which
    /// lives on in the retained store, a cached stored form would keep a second copy of its
    /// topic, publisher and properties in memory for as long as it is retained.
    pub fn stored_copy(&self, msg: &Message) -> StoredMessage {
        match msg.stored.get() {
            Some((_, stored)) => stored.as_ref().clone(),
            None => StoredMessage::from_message(msg),
        }
    }

    /// The queue entry for a delivery that got stored position `seq`.
    pub fn enqueue_op(&self, client_id: &str, seq: u64, d: &Delivery) -> Op {
        let (msg_id, msg) = self.stored(&d.msg);
        Op::Enqueue {
            client_id: client_id.to_string(),
            seq,
            delivery: StoredDelivery {
                msg_id,
                msg,
                qos: d.qos,
                retain: d.retain,
                subscription_ids: d.subscription_ids.clone(),
            },
        }
    }

    /// The inflight record of a delivery stored in it alone ([`Stored::Inflight`]): `d` is
    /// the PUBLISH sent, None once PUBREL was sent in its place.
    pub fn owned_inflight_op(
        &self,
        client_id: &str,
        packet_id: u16,
        order: OwnedOrder,
        d: Option<&Delivery>,
    ) -> Op {
        Op::PutOwnedInflight {
            client_id: client_id.to_string(),
            packet_id,
            order,
            delivery: d.map(|d| StoredDelivery {
                msg_id: 0,
                // A retained message: its stored form is not cached in it (see `stored_copy`).
                msg: Arc::new(self.stored_copy(&d.msg)),
                qos: d.qos,
                retain: d.retain,
                subscription_ids: d.subscription_ids.clone(),
            }),
        }
    }

    /// Submits `ops`; the receipt resolves once they are durable. When the store's queue is
    /// full, the receipt first waits for room ([`Receipt::is_waiting`]); the connection holding
    /// it stops reading until then.
    pub fn receipt(&self, ops: Vec<Op>) -> Receipt {
        self.writer.submit_tracked(ops)
    }

    /// Like [`Persistence::receipt`], but queued only when polled: for a connection with a
    /// receipt still waiting for room, so the new one does not overtake it.
    pub fn receipt_after(&self, ops: Vec<Op>) -> Receipt {
        self.writer.submit_tracked_later(ops)
    }

    /// Submits `ops` that nothing waits for and that must not be lost (session records,
    /// subscription deletes, deliveries nobody acknowledges, QoS 1 in-flight records). Never
    /// waits: a full queue takes them over its bound (`store_writes_over_bound`; see `storage::writer`). A failure is logged: the writer has failed and every later
    /// acknowledgement that needs the disk will fail too.
    pub fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if let Err(e) = self.writer.submit_required(ops) {
            tracing::error!(error = %e, "store write refused");
        }
    }

    /// Submits deletes after an acknowledgement (`DeleteInflight`, `Dequeue`). Never waits: when
    /// the queue is full they are dropped (counted in `store_deletes_dropped`), which costs at
    /// most a redelivery with DUP=1 after a restart.
    pub fn submit_delete(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        match self.writer.submit_nowait(ops) {
            Ok(true) => {}
            Ok(false) => tracing::debug!("store queue full: a delete after an ack was dropped"),
            Err(e) => tracing::error!(error = %e, "store write refused"),
        }
    }

    /// Reads up to `max` entries of a session's stored queue from `from`, after every write
    /// submitted so far has been applied (so a spilled entry is never missed).
    pub async fn read_queue(
        self: Arc<Self>,
        client_id: Arc<str>,
        from: u64,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.writer.submit(Vec::new()).await?;
        let store = self.store.clone();
        let entries = tokio::task::spawn_blocking(move || store.queue_range(&client_id, from, max))
            .await
            .map_err(|e| StoreError::ReadTask(Arc::new(e)))??;
        Ok(entries
            .into_iter()
            .map(|(seq, d)| to_delivery(seq, d))
            .collect())
    }
}

/// A live delivery from a stored queue entry.
pub fn to_delivery(seq: u64, d: StoredDelivery) -> Delivery {
    Delivery {
        msg: Arc::new(d.msg.to_message()),
        qos: d.qos,
        retain: d.retain,
        subscription_ids: d.subscription_ids,
        shared: None,
        stored: Some(Stored::Queue(seq)),
    }
}

/// The session record for `client_id`; `disconnected_at_unix_ms` is None while connected.
/// `will` is a will that has not been published yet (its delay has not passed).
pub fn session_record(
    client_id: &str,
    meta: &SessionMeta,
    disconnected_at_unix_ms: Option<u64>,
    will: Option<&codec::Will>,
) -> StoredSession {
    StoredSession {
        client_id: client_id.to_string(),
        owner_username: meta.username.as_deref().map(str::to_string),
        protocol_level: meta.protocol.level(),
        expiry_secs: meta.expiry_secs.map(|s| s.min(u32::MAX - 1)),
        disconnected_at_unix_ms,
        will: will.map(StoredWill::from_will),
    }
}

/// How long a stored session has left before it expires, from its record (None: never).
pub fn remaining_expiry(s: &StoredSession) -> Option<Duration> {
    let expiry = Duration::from_secs(u64::from(s.expiry_secs?));
    let gone = s
        .disconnected_at_unix_ms
        .map(|t| Duration::from_millis(unix_ms_now().saturating_sub(t)))
        .unwrap_or_default();
    Some(expiry.saturating_sub(gone))
}
