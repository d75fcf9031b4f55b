//! Broker-wide counters, shared by `$SYS` and Prometheus. Plain relaxed atomics: they are
//! statistics, never used for synchronisation. The counters every packet moves are
//! [`ShardedCounter`]s: one plain atomic shared by every worker thread makes each packet pay for
//! moving its cache line between cores (and the counters next to it, which share the line).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A monotonically increasing or gauge-like counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// For a gauge that is a state rather than a count.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Slots per [`ShardedCounter`]: threads beyond this many share slots (still correct, only
/// contended again).
const SHARDS: usize = 16;

/// One slot on a cache line of its own, so two threads' slots never share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// A counter moved on every packet by every worker thread: each thread adds to a slot of its
/// own and [`Self::get`] sums them, so the hot path never bounces a cache line between cores.
/// Wrapping arithmetic keeps the sum right for gauges too.
#[derive(Debug, Default)]
pub struct ShardedCounter {
    slots: [Slot; SHARDS],
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot index, given out in turn at its first count (`usize::MAX`: not yet).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

impl ShardedCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.slots[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The total over every thread's slot.
    pub fn get(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// Every counter the broker keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_accepted: Counter,
    pub connects: Counter,
    pub clients_connected: Counter,
    pub clients_maximum: Counter,
    pub clients_expired: Counter,
    pub packets_received: ShardedCounter,
    pub packets_sent: ShardedCounter,
    pub bytes_received: ShardedCounter,
    pub bytes_sent: ShardedCounter,
    pub publish_received: ShardedCounter,
    pub publish_sent: ShardedCounter,
    pub publish_bytes_received: ShardedCounter,
    pub publish_bytes_sent: ShardedCounter,
    pub dropped_queue_full: Counter,
    pub dropped_offline_qos0: Counter,
    pub dropped_expired: Counter,
    pub dropped_too_large: Counter,
    /// Inbound PUBLISH refused by `limits.max_publish_bandwidth` (v5 0x97).
    pub dropped_quota: Counter,
    /// Queued deliveries dropped when they were due to be sent because the ACL no longer lets
    /// the subscriber read the topic (changed by a reload since they were queued).
    pub dropped_not_authorized: Counter,
    /// Queued messages dropped from subscribers that held the saturated global budget without
    /// taking anything (`broker::relief`).
    pub dropped_shed: Counter,
    /// Times a subscriber's queue was shed that way.
    pub queues_shed: Counter,
    /// Inbound PUBLISH whose payload exceeds `mqtt.max_payload_size` (v5 QoS 1/2: 0x97; QoS 0
    /// and 3.x: acknowledged and dropped).
    pub dropped_payload_too_large: Counter,
    pub refused_connections: Counter,
    /// Retained PUBLISH on a new topic not stored because `[retained]` bounds were reached.
    pub retained_refused: Counter,
    /// Times a publisher was not read until a subscriber's deep queue drained (flow control,
    /// `broker::PACE_AT`).
    pub publishers_paced: Counter,
    /// Stored messages of expiring `$share` members handed to another member of their group
    /// (`broker::handover`).
    pub shared_handed_over: Counter,
    /// Times such a hand-over waited for room in the members' queues.
    pub shared_handover_waits: Counter,
    /// Times a QoS 1/2 PUBLISH found a subscriber queue full and its publisher waited for room
    /// (overload rule (c), at most `broker::STUCK_AFTER`).
    pub publishers_blocked: Counter,
    /// Paced publishers read again because the subscriber's queue had not drained within
    /// `broker::STUCK_AFTER` (it then paces nobody until it drains): slow consumers.
    pub pace_expired: Counter,
    /// Open connections per listener, indexed like `Config::listeners`.
    pub listener_connections: Vec<Counter>,
    /// Per bridge, indexed like `Config::bridges`.
    pub bridges: Vec<BridgeMetrics>,
    /// The cluster link (`[cluster]`), shared with the task that runs it.
    pub cluster: Arc<ClusterMetrics>,
}

/// What the cluster link (`[cluster]`) reports.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// 1 while connected to NATS, else 0.
    pub up: Counter,
    /// Times the NATS connection was made (the first time and after each loss).
    pub connects: Counter,
    /// Messages sent to the other nodes.
    pub sent: Counter,
    /// Messages received from the other nodes.
    pub received: Counter,
    /// Messages the stream sent again that this node had already applied (after a crash or a
    /// lost NATS connection), skipped rather than delivered twice.
    pub redelivered_skipped: Counter,
    /// Messages published to the other nodes again because NATS did not acknowledge them the
    /// first time (a NATS server died or restarted with them, a stream leader was being
    /// elected).
    pub republished: Counter,
    /// Messages (and takeover notices, retained updates) for the other nodes that were not
    /// sent: the queue to NATS was full, or NATS refused them; or received ones that did not
    /// decode.
    pub dropped: Counter,
    /// Sessions of this node closed because their client connected to another node.
    pub takeovers: Counter,
    /// Retained messages read from the cluster's stream (at start and after a reconnection).
    pub retained_loaded: Counter,
    /// Shared groups of this node served through NATS (their queue subscriptions made).
    pub shared_groups: Counter,
}

/// What one bridge (`[[bridges]]`) reports.
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    /// 1 while both links are up and subscribed, else 0.
    pub up: Counter,
    /// Times both links came up.
    pub connects: Counter,
    /// Connection attempts that failed before both links were up (refused, unreachable,
    /// TLS, login).
    pub failures: Counter,
    /// Messages sent to the remote broker.
    pub sent: Counter,
    /// Messages brought in from the remote broker.
    pub received: Counter,
    /// Messages acknowledged and dropped: no topic line maps them, or the other side does
    /// not take their size.
    pub dropped: Counter,
    /// 1 while this node brings the remote broker's messages in (see
    /// `BridgeConfig::cluster`).
    pub inbound: Counter,
    /// Messages from the remote broker dropped because another node brings them in.
    pub standby: Counter,
}

impl Metrics {
    /// Counters with one per-listener connection gauge for each of `listeners`.
    pub fn with_listeners(listeners: usize) -> Metrics {
        Metrics {
            listener_connections: (0..listeners).map(|_| Counter::default()).collect(),
            ..Metrics::default()
        }
    }

    /// These counters, with one [`BridgeMetrics`] for each of `bridges`.
    pub fn with_bridges(self, bridges: usize) -> Metrics {
        Metrics {
            bridges: (0..bridges).map(|_| BridgeMetrics::default()).collect(),
            ..self
        }
    }

    /// `$SYS/broker/publish/messages/dropped`: messages a limit or a check dropped. A QoS 0
    /// message for an offline session is not among them, as in Mosquitto (which never queues
    /// those unless `queue_qos0_messages`); Prometheus counts it under `offline_qos0`.
    pub fn publish_dropped(&self) -> u64 {
        self.dropped_queue_full.get()
            + self.dropped_expired.get()
            + self.dropped_too_large.get()
            + self.dropped_quota.get()
            + self.dropped_not_authorized.get()
            + self.dropped_shed.get()
            + self.dropped_payload_too_large.get()
    }

    pub fn client_connected(&self) {
        self.clients_connected.inc();
        let now = self.clients_connected.get();
        self.clients_maximum.0.fetch_max(now, Ordering::Relaxed);
    }

    /// `$SYS/broker/clients/maximum` as Mosquitto counts it: the most clients (sessions,
    /// connected or not) at once, `total` being the count now. The connected count's peaks
    /// between two looks are kept by [`Self::client_connected`].
    pub fn clients_maximum(&self, total: u64) -> u64 {
        let before = self.clients_maximum.0.fetch_max(total, Ordering::Relaxed);
        before.max(total)
    }

    pub fn client_disconnected(&self) {
        self.clients_connected.sub(1);
    }
}

/// The store writer's queue (see [`crate::storage::StoreWriter`]): updated by the writer,
/// read by the Prometheus exporter.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Requests in the writer's queue now (a gauge): at most its capacity, plus writes that
    /// must not be lost queued over it while it was full.
    pub store_queue_depth: Counter,
    /// Acknowledged writes waiting for room in the queue now (a gauge); each one pauses the
    /// reads of its connection.
    pub store_submits_waiting: Counter,
    /// Deletes after an acknowledgement dropped because the queue was full. Each may cost a
    /// redelivery (DUP=1) after a restart.
    pub store_deletes_dropped: Counter,
    /// Writes that must not be lost (session records, subscription deletes, deliveries to
    /// offline sessions that nobody acknowledges) queued over the capacity because the queue
    /// was full.
    pub store_writes_over_bound: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_counter_sums_every_threads_counts() {
        let c = std::sync::Arc::new(ShardedCounter::default());
        // More threads than slots: some share one, and nothing is lost either way.
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.add(5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), (SHARDS as u64 + 3) * 1005);
    }

    /// h11 L2: `$SYS` drops leave out QoS 0 messages for offline sessions, as Mosquitto's do.
    #[test]
    fn sys_drops_leave_out_qos0_for_offline_sessions() {
        let m = Metrics::default();
        m.dropped_offline_qos0.inc();
        assert_eq!(m.publish_dropped(), 0);
        m.dropped_queue_full.inc();
        m.dropped_expired.inc();
        assert_eq!(m.publish_dropped(), 2);
    }

    /// `clients/maximum` is the most sessions seen at once, or the connected peak if higher.
    #[test]
    fn clients_maximum_keeps_the_larger_peak() {
        let m = Metrics::default();
        m.client_connected();
        m.client_connected();
        assert_eq!(m.clients_maximum(1), 2, "two connected at once");
        assert_eq!(m.clients_maximum(5), 5);
        assert_eq!(m.clients_maximum(3), 5, "a peak stays");
    }
}
