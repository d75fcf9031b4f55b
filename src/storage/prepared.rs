//! [`Prepared`]: a batch of [`Op`]s with every key and record already encoded, made by the
//! submitter (a connection task) so the single writer thread only plans and commits.
//!
//! Also decides how a queued message is stored: a message queued once in the batch goes into
//! its queue entry (one record per queued message, one write to enqueue and one to dequeue); a
//! message queued for several sessions in the same batch (a fan-out) is stored once in `msgs`
//! and refcounted, its entries naming it.
//!
//! Invariant: `items[i]` is the encoding of `ops[i]`, so a group of batches can be split back
//! into its requests by the same ranges.

use std::collections::HashMap;
use std::sync::Arc;

use super::encoding as enc;
use super::engine::Ks;
use super::Op;

/// A message body shared by several queue entries of one batch, encoded once.
#[derive(Clone, Debug)]
pub(crate) struct SharedBody {
    pub id: u64,
    pub record: Arc<Vec<u8>>,
}

/// One op, encoded.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    /// A put (`Some`) or delete (`None`) of one key, whatever is stored: every op but the
    /// queue's and `DeleteSession`.
    Key {
        ks: Ks,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Enqueue {
        key: Vec<u8>,
        entry: Vec<u8>,
        /// None: the body is inline in `entry`.
        shared: Option<SharedBody>,
    },
    Dequeue {
        key: Vec<u8>,
    },
    /// Needs reads (a prefix scan); planned from the op.
    DeleteSession,
}

/// A batch ready for the writer. Build it with [`Prepared::new`].
#[derive(Debug, Default)]
pub struct Prepared {
    pub(crate) ops: Vec<Op>,
    pub(crate) items: Vec<Item>,
}

impl Prepared {
    /// Encodes `ops`.
    pub fn new(ops: Vec<Op>) -> Prepared {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for op in &ops {
            if let Op::Enqueue { delivery, .. } = op {
                *counts.entry(delivery.msg_id).or_default() += 1;
            }
        }
        let mut bodies: HashMap<u64, Arc<Vec<u8>>> = HashMap::new();
        let items = ops
            .iter()
            .map(|op| item(op, &counts, &mut bodies))
            .collect();
        Prepared { ops, items }
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there are no ops (a pure fsync).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends `other`'s ops after this batch's.
    pub(crate) fn append(&mut self, other: &mut Prepared) {
        self.ops.append(&mut other.ops);
        self.items.append(&mut other.items);
    }

    /// Splits off everything from op `at` on.
    pub(crate) fn split_off(&mut self, at: usize) -> Prepared {
        Prepared {
            ops: self.ops.split_off(at),
            items: self.items.split_off(at),
        }
    }
}

fn item(op: &Op, counts: &HashMap<u64, u32>, bodies: &mut HashMap<u64, Arc<Vec<u8>>>) -> Item {
    let key = |ks, key| Item::Key {
        ks,
        key,
        value: None,
    };
    let put = |ks, key, value| Item::Key {
        ks,
        key,
        value: Some(value),
    };
    match op {
        Op::PutSession(s) => put(
            Ks::Sessions,
            s.client_id.as_bytes().to_vec(),
            enc::encode_session(s),
        ),
        Op::DeleteSession { .. } => Item::DeleteSession,
        Op::PutSubscription { client_id, sub } => put(
            Ks::Subs,
            enc::sub_key(client_id, &sub.filter),
            enc::encode_subscription(sub),
        ),
        Op::DeleteSubscription { client_id, filter } => {
            key(Ks::Subs, enc::sub_key(client_id, filter))
        }
        Op::Enqueue {
            client_id,
            seq,
            delivery: d,
        } => {
            let shared = counts.get(&d.msg_id).is_some_and(|&n| n > 1);
            let shared = shared.then(|| SharedBody {
                id: d.msg_id,
                record: bodies
                    .entry(d.msg_id)
                    .or_insert_with(|| Arc::new(enc::encode_message(&d.msg)))
                    .clone(),
            });
            let body = shared.is_none().then_some(&*d.msg);
            Item::Enqueue {
                key: enc::seq_key(client_id, *seq),
                entry: enc::encode_queue_entry_with(
                    d.msg_id,
                    d.qos,
                    d.retain,
                    &d.subscription_ids,
                    body,
                ),
                shared,
            }
        }
        Op::Dequeue { client_id, seq } => Item::Dequeue {
            key: enc::seq_key(client_id, *seq),
        },
        Op::PutInflight {
            client_id,
            packet_id,
            seq,
            stage,
        } => put(
            Ks::Inflight,
            enc::pid_key(client_id, *packet_id),
            enc::encode_inflight(*stage, *seq),
        ),
        Op::PutOwnedInflight {
            client_id,
            packet_id,
            order,
            delivery,
        } => put(
            Ks::Inflight,
            enc::pid_key(client_id, *packet_id),
            enc::encode_owned_inflight(*order, delivery.as_ref()),
        ),
        Op::DeleteInflight {
            client_id,
            packet_id,
        } => key(Ks::Inflight, enc::pid_key(client_id, *packet_id)),
        Op::PutInboundQos2 {
            client_id,
            packet_id,
            msg,
        } => put(
            Ks::Qos2In,
            enc::pid_key(client_id, *packet_id),
            enc::encode_inbound_qos2(msg.as_ref()),
        ),
        Op::DeleteInboundQos2 {
            client_id,
            packet_id,
        } => key(Ks::Qos2In, enc::pid_key(client_id, *packet_id)),
        Op::PutRetained(m) => put(
            Ks::Retained,
            m.topic.as_bytes().to_vec(),
            enc::encode_message(m),
        ),
        Op::DeleteRetained { topic } => key(Ks::Retained, topic.as_bytes().to_vec()),
        Op::PutMark { name, value } => put(Ks::Meta, enc::mark_key(name), value.clone()),
    }
}
