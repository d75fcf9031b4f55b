//! The semantics shared by every store, written once over a minimal key-value interface
//! ([`Kv`]): turning a batch of [`Op`]s into key writes ([`plan`]), and reading sessions and
//! queues back ([`load`], [`queue_range`], [`queue_len`]).
//!
//! Invariants:
//! - [`plan`] only reads; it returns the complete set of key writes (last write per key wins,
//!   already coalesced), which the backend then commits atomically. Reads inside a plan see the
//!   batch's own earlier ops (an overlay), so `[Enqueue, Dequeue]` or `[Enqueue, DeleteSession]`
//!   in one batch leave refcounts right.
//! - A message body exists in `msgs` iff its `msg_refs` count is ≥ 1, and the count equals the
//!   number of queue entries naming it. Deletes tolerate corrupt or missing records (they are
//!   removed anyway), so a damaged record can always be cleaned up.
//! - Every key is checked against [`MAX_KEY_LEN`] before the plan is returned.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::early::EarlyDequeues;
use super::encoding::{self as enc, DecodeError, InflightRecord};
use super::index::{ClientQueue, QueueIndex, Slot};
use super::prepared::{Item, Prepared, SharedBody};
use super::{
    InflightStage, LoadedInflight, LoadedSession, Op, Snapshot, StoreError, StoredDelivery,
    StoredMessage, TooLarge, MAX_KEY_LEN,
};

/// The keyspaces. Every store has all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Ks {
    Meta,
    Sessions,
    Subs,
    Queue,
    Msgs,
    MsgRefs,
    Inflight,
    Qos2In,
    Retained,
}

impl Ks {
    pub(crate) const ALL: [Ks; 9] = [
        Ks::Meta,
        Ks::Sessions,
        Ks::Subs,
        Ks::Queue,
        Ks::Msgs,
        Ks::MsgRefs,
        Ks::Inflight,
        Ks::Qos2In,
        Ks::Retained,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Ks::Meta => "meta",
            Ks::Sessions => "sessions",
            Ks::Subs => "subs",
            Ks::Queue => "queue",
            Ks::Msgs => "msgs",
            Ks::MsgRefs => "msg_refs",
            Ks::Inflight => "inflight",
            Ks::Qos2In => "qos2_in",
            Ks::Retained => "retained",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Key of the format version in `meta`.
pub(crate) const META_FORMAT_VERSION: &[u8] = b"format_version";

/// Visitor for [`Kv::scan`]: return `Ok(false)` to stop.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// The read side a backend provides.
pub(crate) trait Kv {
    fn get(&self, ks: Ks, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits, in key order, the entries whose key starts with `prefix` and is ≥ `from`.
    fn scan(&self, ks: Ks, prefix: &[u8], from: &[u8], f: &mut Visit) -> Result<(), StoreError>;
    /// The greatest key starting with `prefix`.
    fn last_key(&self, ks: Ks, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The key writes of one batch: `None` deletes.
pub(crate) type Writes = BTreeMap<(Ks, Vec<u8>), Option<Vec<u8>>>;

/// What a plan changes besides keys: the queue index entries it staged and a new message-id
/// high-water mark. Applied with [`QueueIndex::commit`] once the writes are committed.
pub(crate) struct Staged {
    pub clients: HashMap<String, ClientQueue>,
    pub msg_id_hw: Option<u64>,
}

/// Key of the highest message id written so far in `meta`: message ids stay unique across
/// restarts also when every body is inline in its queue entry (not in `msgs`).
pub(crate) const META_MSG_ID_HW: &[u8] = b"msg_id_hw";

struct Planner<'a> {
    kv: &'a dyn Kv,
    writes: Writes,
    early: &'a mut EarlyDequeues,
    index: &'a QueueIndex,
    staged: HashMap<String, ClientQueue>,
    /// The committed high-water mark (read from `meta` at the first enqueue) and this batch's.
    hw: Option<u64>,
    new_hw: Option<u64>,
}

impl Planner<'_> {
    fn get(&self, ks: Ks, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(&(ks, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(ks, key),
        }
    }

    fn put(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        check_key(ks, &key)?;
        if u32::try_from(value.len()).is_err() {
            return Err(StoreError::TooLarge(TooLarge::Record {
                keyspace: ks.name(),
                len: value.len(),
            }));
        }
        self.writes.insert((ks, key), Some(value));
        Ok(())
    }

    fn del(&mut self, ks: Ks, key: Vec<u8>) -> Result<(), StoreError> {
        check_key(ks, &key)?;
        self.writes.insert((ks, key), None);
        Ok(())
    }

    /// Keys under `prefix`, as the batch so far leaves them.
    fn keys_with_prefix(&self, ks: Ks, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = BTreeMap::new();
        self.kv.scan(ks, prefix, prefix, &mut |k, _| {
            keys.insert(k.to_vec(), ());
            Ok(true)
        })?;
        for ((wks, k), v) in self.writes.range((ks, prefix.to_vec())..) {
            if *wks != ks || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(_) => keys.insert(k.clone(), ()),
                None => keys.remove(k),
            };
        }
        Ok(keys.into_keys().collect())
    }

    /// The staged index of `client_id`'s queue; on its first touch in this process, its
    /// floor is read (one `last_key` per client per run).
    fn client(&mut self, client_id: &str) -> Result<&mut ClientQueue, StoreError> {
        if !self.staged.contains_key(client_id) {
            let cq = match self.index.get(client_id) {
                Some(cq) => cq.clone(),
                None => {
                    let prefix = enc::client_prefix(client_id);
                    let floor = match self.kv.last_key(Ks::Queue, &prefix)? {
                        Some(k) => enc::decode_u64_suffix(&k[prefix.len()..])
                            .map_err(corrupt(Ks::Queue, &k))?
                            .saturating_add(1),
                        None => 0,
                    };
                    ClientQueue {
                        floor,
                        ..ClientQueue::default()
                    }
                }
            };
            self.staged.insert(client_id.to_string(), cq);
        }
        // Inserted above when missing.
        self.staged.get_mut(client_id).ok_or(StoreError::Closed)
    }

    fn incref(&mut self, body: &SharedBody) -> Result<(), StoreError> {
        let key = enc::msg_key(body.id);
        let refs = match self.get(Ks::MsgRefs, &key)? {
            Some(v) => enc::decode_refcount(&v).map_err(|e| e.at("msg_refs", &key))?,
            None => 0,
        };
        if refs == 0 {
            self.put(Ks::Msgs, key.clone(), body.record.to_vec())?;
        }
        self.put(
            Ks::MsgRefs,
            key,
            enc::encode_refcount(refs.saturating_add(1)),
        )
    }

    fn decref(&mut self, id: u64) -> Result<(), StoreError> {
        let key = enc::msg_key(id);
        let refs = match self.get(Ks::MsgRefs, &key)? {
            Some(v) => enc::decode_refcount(&v).unwrap_or_else(|e| {
                tracing::warn!("store: dropping message {id} with a corrupt refcount: {e}");
                0
            }),
            None => 0,
        };
        if refs <= 1 {
            self.del(Ks::Msgs, key.clone())?;
            self.del(Ks::MsgRefs, key)
        } else {
            self.put(Ks::MsgRefs, key, enc::encode_refcount(refs - 1))
        }
    }

    /// Deletes a queue entry, releasing its body if it names a shared one. A corrupt entry is
    /// deleted all the same. Returns whether there was one.
    fn remove_queue_entry(&mut self, key: Vec<u8>) -> Result<bool, StoreError> {
        let Some(v) = self.get(Ks::Queue, &key)? else {
            return Ok(false);
        };
        match enc::decode_queue_entry(&v) {
            Ok(q) if q.body.is_none() => self.decref(q.msg_id)?,
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "store: deleting corrupt queue entry {}: {e}",
                enc::key_display(&key)
            ),
        }
        self.del(Ks::Queue, key)?;
        Ok(true)
    }

    fn raise_hw(&mut self, id: u64) -> Result<(), StoreError> {
        if self.hw.is_none() {
            self.hw = Some(match self.index.msg_id_hw {
                Some(hw) => hw,
                None => match self.kv.get(Ks::Meta, META_MSG_ID_HW)? {
                    Some(v) => {
                        enc::decode_refcount(&v).map_err(|e| e.at("meta", META_MSG_ID_HW))?
                    }
                    None => 0,
                },
            });
        }
        if self.hw.is_some_and(|hw| id > hw) && self.new_hw.is_none_or(|n| id > n) {
            self.new_hw = Some(id);
        }
        Ok(())
    }

    fn enqueue(
        &mut self,
        client_id: &str,
        seq: u64,
        msg_id: u64,
        key: &[u8],
        entry: &[u8],
        shared: Option<&SharedBody>,
    ) -> Result<(), StoreError> {
        check_key(Ks::Queue, key)?;
        // Delivered and dequeued before this write of it arrived, or of a session deleted
        // before it arrived (see `early`).
        if self.early.take(client_id, seq) || self.early.is_retired(client_id, seq) {
            return Ok(());
        }
        self.raise_hw(msg_id)?;
        if self.client(client_id)?.slot(seq) == Slot::Unknown {
            // Replacing an entry releases the body it named.
            self.remove_queue_entry(key.to_vec())?;
        }
        if let Some(body) = shared {
            self.incref(body)?;
        }
        self.client(client_id)?.stored(seq, shared.is_none());
        self.put(Ks::Queue, key.to_vec(), entry.to_vec())
    }

    fn dequeue(&mut self, client_id: &str, seq: u64, key: &[u8]) -> Result<(), StoreError> {
        check_key(Ks::Queue, key)?;
        let slot = self.client(client_id)?.slot(seq);
        self.client(client_id)?.removed(seq);
        let found = match slot {
            Slot::Inline => {
                self.del(Ks::Queue, key.to_vec())?;
                true
            }
            Slot::Unknown => self.remove_queue_entry(key.to_vec())?,
            Slot::Empty => false,
        };
        if !found {
            self.early.note(client_id, seq);
        }
        Ok(())
    }

    fn delete_session(&mut self, client_id: &str, retire_below: u64) -> Result<(), StoreError> {
        self.early.forget_client(client_id);
        self.early.retire(client_id, retire_below);
        self.del(Ks::Sessions, client_id.as_bytes().to_vec())?;
        let prefix = enc::client_prefix(client_id);
        check_key(Ks::Subs, &prefix)?;
        for key in self.keys_with_prefix(Ks::Queue, &prefix)? {
            self.remove_queue_entry(key)?;
        }
        for ks in [Ks::Subs, Ks::Inflight, Ks::Qos2In] {
            for key in self.keys_with_prefix(ks, &prefix)? {
                self.del(ks, key)?;
            }
        }
        // Nothing of the session is left.
        self.staged
            .insert(client_id.to_string(), ClientQueue::default());
        Ok(())
    }

    fn apply(&mut self, op: &Op, item: &Item) -> Result<(), StoreError> {
        match (op, item) {
            (_, Item::Key { ks, key, value }) => match value {
                Some(v) => self.put(*ks, key.clone(), v.clone()),
                None => self.del(*ks, key.clone()),
            },
            (
                Op::DeleteSession {
                    client_id,
                    retire_below,
                },
                Item::DeleteSession,
            ) => self.delete_session(client_id, *retire_below),
            (
                Op::Enqueue {
                    client_id,
                    seq,
                    delivery,
                },
                Item::Enqueue { key, entry, shared },
            ) => self.enqueue(
                client_id,
                *seq,
                delivery.msg_id,
                key,
                entry,
                shared.as_ref(),
            ),
            (Op::Dequeue { client_id, seq }, Item::Dequeue { key }) => {
                self.dequeue(client_id, *seq, key)
            }
            // `Prepared` builds items from their ops.
            _ => Err(StoreError::Closed),
        }
    }
}

fn check_key(ks: Ks, key: &[u8]) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::TooLarge(TooLarge::Key {
            keyspace: ks.name(),
            len: key.len(),
        }));
    }
    Ok(())
}

/// The key writes that apply `batch`, reading current state from `kv` only where `index`
/// does not tell (see `index`). `early` carries the dequeues that arrived before their enqueue
/// from one batch to the next; the returned [`Staged`] changes go into `index` once the writes
/// are committed.
pub(crate) fn plan(
    kv: &dyn Kv,
    batch: &Prepared,
    early: &mut EarlyDequeues,
    index: &QueueIndex,
) -> Result<(Writes, Staged), StoreError> {
    let mut p = Planner {
        kv,
        writes: BTreeMap::new(),
        early,
        index,
        staged: HashMap::new(),
        hw: None,
        new_hw: None,
    };
    for (op, item) in batch.ops.iter().zip(&batch.items) {
        p.apply(op, item)?;
    }
    if let Some(hw) = p.new_hw {
        p.writes.insert(
            (Ks::Meta, META_MSG_ID_HW.to_vec()),
            Some(enc::encode_refcount(hw)),
        );
    }
    let staged = Staged {
        clients: p.staged,
        msg_id_hw: p.new_hw.or(p.hw),
    };
    Ok((p.writes, staged))
}

/// Looks up message bodies, sharing one `Arc` per id within a call.
struct Bodies<'a> {
    kv: &'a dyn Kv,
    cache: HashMap<u64, Option<Arc<StoredMessage>>>,
}

impl Bodies<'_> {
    fn get(&mut self, id: u64) -> Result<Option<Arc<StoredMessage>>, StoreError> {
        if let Some(m) = self.cache.get(&id) {
            return Ok(m.clone());
        }
        let key = enc::msg_key(id);
        let m = match self.kv.get(Ks::Msgs, &key)? {
            Some(v) => Some(Arc::new(
                enc::decode_message(&v).map_err(|e| e.at("msgs", &key))?,
            )),
            None => None,
        };
        self.cache.insert(id, m.clone());
        Ok(m)
    }

    /// The delivery for a queue entry, or None (with a warning) when its body is missing.
    fn delivery(&mut self, key: &[u8], raw: &[u8]) -> Result<Option<StoredDelivery>, StoreError> {
        let q = enc::decode_queue_entry(raw).map_err(|e| e.at("queue", key))?;
        let msg = match q.body {
            Some(body) => Arc::new(body),
            None => {
                let Some(msg) = self.get(q.msg_id)? else {
                    tracing::warn!(
                        "store: queue entry {} names missing message {}; skipped",
                        enc::key_display(key),
                        q.msg_id
                    );
                    return Ok(None);
                };
                msg
            }
        };
        Ok(Some(StoredDelivery {
            msg_id: q.msg_id,
            msg,
            qos: q.qos,
            retain: q.retain,
            subscription_ids: q.subscription_ids,
        }))
    }
}

/// Visits every record of `ks` in key order.
pub(crate) fn scan_all(kv: &dyn Kv, ks: Ks, f: &mut Visit) -> Result<(), StoreError> {
    kv.scan(ks, &[], &[], f)
}

/// Splits a per-client key, naming the keyspace on failure.
fn client_key(ks: Ks, key: &[u8]) -> Result<(String, Vec<u8>), StoreError> {
    enc::split_client_key(key)
        .map(|(c, rest)| (c, rest.to_vec()))
        .map_err(|e| e.at(ks.name(), key))
}

fn corrupt(ks: Ks, key: &[u8]) -> impl FnOnce(DecodeError) -> StoreError + '_ {
    move |e| e.at(ks.name(), key)
}

/// Reads everything a broker restores at start: the sessions with their subscriptions,
/// inflight windows and inbound QoS 2 ids, the retained messages and the next message id.
/// Records of unknown sessions and inflight packets naming a missing queue entry are skipped
/// with a warning and counted in [`Snapshot::skipped`].
pub(crate) fn load(kv: &dyn Kv) -> Result<Snapshot, StoreError> {
    let mut sessions = load_sessions(kv)?;
    let mut skipped = load_subscriptions(kv, &mut sessions)?;
    skipped += load_inflight(kv, &mut sessions)?;
    skipped += load_inbound_qos2(kv, &mut sessions)?;
    set_sequences(kv, &mut sessions)?;

    let mut retained = Vec::new();
    scan_all(kv, Ks::Retained, &mut |k, v| {
        retained.push(enc::decode_message(v).map_err(corrupt(Ks::Retained, k))?);
        Ok(true)
    })?;

    Ok(Snapshot {
        sessions: sessions.into_values().collect(),
        retained,
        next_msg_id: next_msg_id(kv)?,
        marks: load_marks(kv)?,
        skipped,
    })
}

/// Every mark, by name.
fn load_marks(kv: &dyn Kv) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let mut marks = BTreeMap::new();
    kv.scan(
        Ks::Meta,
        enc::META_MARK_PREFIX,
        enc::META_MARK_PREFIX,
        &mut |k, v| {
            let name = std::str::from_utf8(&k[enc::META_MARK_PREFIX.len()..])
                .map_err(|_| corrupt(Ks::Meta, k)(DecodeError("mark name is not UTF-8".into())))?;
            marks.insert(name.to_owned(), v.to_vec());
            Ok(true)
        },
    )?;
    Ok(marks)
}

/// Every stored session, with nothing attached yet.
fn load_sessions(kv: &dyn Kv) -> Result<BTreeMap<String, LoadedSession>, StoreError> {
    let mut sessions: BTreeMap<String, LoadedSession> = BTreeMap::new();
    scan_all(kv, Ks::Sessions, &mut |k, v| {
        let id = enc::decode_str_key(k, "client id").map_err(corrupt(Ks::Sessions, k))?;
        let s = enc::decode_session(id.clone(), v).map_err(corrupt(Ks::Sessions, k))?;
        sessions.insert(
            id,
            LoadedSession {
                session: s,
                subscriptions: Vec::new(),
                inflight: Vec::new(),
                inbound_qos2: Vec::new(),
                next_seq: 0,
                replay_from_seq: 0,
            },
        );
        Ok(true)
    })?;
    Ok(sessions)
}

/// Warns about a record whose session is not stored; the caller counts it as skipped.
fn warn_orphan(ks: Ks, client: &str) {
    tracing::warn!(
        "store: `{}` record of unknown session {client:?} skipped",
        ks.name()
    );
}

/// Attaches the subscriptions to their sessions; returns how many were skipped.
fn load_subscriptions(
    kv: &dyn Kv,
    sessions: &mut BTreeMap<String, LoadedSession>,
) -> Result<u64, StoreError> {
    let mut skipped = 0u64;
    scan_all(kv, Ks::Subs, &mut |k, v| {
        let (client, rest) = client_key(Ks::Subs, k)?;
        let filter = enc::decode_str_key(&rest, "filter").map_err(corrupt(Ks::Subs, k))?;
        let sub = enc::decode_subscription(filter, v).map_err(corrupt(Ks::Subs, k))?;
        match sessions.get_mut(&client) {
            Some(s) => s.subscriptions.push(sub),
            None => {
                warn_orphan(Ks::Subs, &client);
                skipped += 1;
            }
        }
        Ok(true)
    })?;
    Ok(skipped)
}

/// Attaches the inflight windows to their sessions, with the delivery of every unacknowledged
/// publish; returns how many records were skipped (unknown session, missing queue entry).
fn load_inflight(
    kv: &dyn Kv,
    sessions: &mut BTreeMap<String, LoadedSession>,
) -> Result<u64, StoreError> {
    let mut bodies = Bodies {
        kv,
        cache: HashMap::new(),
    };
    let mut skipped = 0u64;
    scan_all(kv, Ks::Inflight, &mut |k, v| {
        let (client, rest) = client_key(Ks::Inflight, k)?;
        let packet_id = enc::decode_u16_suffix(&rest).map_err(corrupt(Ks::Inflight, k))?;
        let record = enc::decode_inflight(v).map_err(corrupt(Ks::Inflight, k))?;
        let Some(s) = sessions.get_mut(&client) else {
            warn_orphan(Ks::Inflight, &client);
            skipped += 1;
            return Ok(true);
        };
        let loaded = match record {
            InflightRecord::Queue(InflightStage::Released, seq) => {
                LoadedInflight::Released { packet_id, seq }
            }
            InflightRecord::Owned(order, entry) => LoadedInflight::Owned {
                packet_id,
                order,
                delivery: entry.map(|d| *d),
            },
            InflightRecord::Queue(InflightStage::Publish, seq) => {
                let qkey = enc::seq_key(&client, seq);
                let delivery = match kv.get(Ks::Queue, &qkey)? {
                    Some(raw) => bodies.delivery(&qkey, &raw)?,
                    None => None,
                };
                let Some(delivery) = delivery else {
                    tracing::warn!(
                        "store: inflight packet {packet_id} of {client:?} names missing queue \
                         entry {seq}; skipped"
                    );
                    skipped += 1;
                    return Ok(true);
                };
                LoadedInflight::Publish {
                    packet_id,
                    seq,
                    delivery,
                }
            }
        };
        s.inflight.push(loaded);
        Ok(true)
    })?;
    Ok(skipped)
}

/// Attaches the inbound QoS 2 packet ids to their sessions; returns how many were skipped.
fn load_inbound_qos2(
    kv: &dyn Kv,
    sessions: &mut BTreeMap<String, LoadedSession>,
) -> Result<u64, StoreError> {
    let mut skipped = 0u64;
    scan_all(kv, Ks::Qos2In, &mut |k, v| {
        let (client, rest) = client_key(Ks::Qos2In, k)?;
        let packet_id = enc::decode_u16_suffix(&rest).map_err(corrupt(Ks::Qos2In, k))?;
        let msg = enc::decode_inbound_qos2(v).map_err(corrupt(Ks::Qos2In, k))?;
        match sessions.get_mut(&client) {
            Some(s) => s.inbound_qos2.push((packet_id, msg)),
            None => {
                warn_orphan(Ks::Qos2In, &client);
                skipped += 1;
            }
        }
        Ok(true)
    })?;
    Ok(skipped)
}

/// Orders each session's inflight window and sets where its replay starts and which queue
/// seq it uses next.
fn set_sequences(
    kv: &dyn Kv,
    sessions: &mut BTreeMap<String, LoadedSession>,
) -> Result<(), StoreError> {
    for (client, s) in sessions.iter_mut() {
        s.inflight.sort_by_key(LoadedInflight::send_order);
        let prefix = enc::client_prefix(client);
        let last_queued = match kv.last_key(Ks::Queue, &prefix)? {
            Some(k) => {
                Some(enc::decode_u64_suffix(&k[prefix.len()..]).map_err(corrupt(Ks::Queue, &k))?)
            }
            None => None,
        };
        let last_inflight = s.inflight.iter().filter_map(LoadedInflight::seq).max();
        // A record holding its message was sent before queue entry `before`: new entries are
        // numbered from there at least, so they sort after it.
        let owned_before = s
            .inflight
            .iter()
            .filter_map(|f| match f {
                LoadedInflight::Owned { order, .. } => Some(order.before),
                _ => None,
            })
            .max();
        s.replay_from_seq = last_inflight.map_or(0, |x| x.saturating_add(1));
        s.next_seq = last_queued
            .max(last_inflight)
            .map_or(0, |x| x.saturating_add(1))
            .max(owned_before.unwrap_or(0));
    }
    Ok(())
}

/// The next shared message id: past both the last stored body and the recorded high-water
/// mark.
fn next_msg_id(kv: &dyn Kv) -> Result<u64, StoreError> {
    let last_shared = match kv.last_key(Ks::Msgs, &[])? {
        Some(k) => Some(enc::decode_u64_suffix(&k).map_err(corrupt(Ks::Msgs, &k))?),
        None => None,
    };
    let hw = match kv.get(Ks::Meta, META_MSG_ID_HW)? {
        Some(v) => Some(enc::decode_refcount(&v).map_err(|e| e.at("meta", META_MSG_ID_HW))?),
        None => None,
    };
    Ok(last_shared.max(hw).map_or(0, |x| x.saturating_add(1)))
}

pub(crate) fn queue_range(
    kv: &dyn Kv,
    client_id: &str,
    from_seq: u64,
    max: usize,
) -> Result<Vec<(u64, StoredDelivery)>, StoreError> {
    let prefix = enc::client_prefix(client_id);
    let from = enc::seq_key(client_id, from_seq);
    let mut bodies = Bodies {
        kv,
        cache: HashMap::new(),
    };
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    kv.scan(Ks::Queue, &prefix, &from, &mut |k, v| {
        let seq = enc::decode_u64_suffix(&k[prefix.len()..]).map_err(corrupt(Ks::Queue, k))?;
        if let Some(d) = bodies.delivery(k, v)? {
            out.push((seq, d));
        }
        Ok(out.len() < max)
    })?;
    Ok(out)
}

pub(crate) fn queue_len(kv: &dyn Kv, client_id: &str) -> Result<u64, StoreError> {
    let prefix = enc::client_prefix(client_id);
    let mut n = 0u64;
    kv.scan(Ks::Queue, &prefix, &prefix, &mut |_, _| {
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}
