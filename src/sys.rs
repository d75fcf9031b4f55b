//! The `$SYS/broker/...` tree, named and published as Mosquitto does so existing dashboards keep
//! working: every `[sys] interval`, retained, QoS 2, each value only when it changed (uptime every
//! time; load averages when they move by 0.01 or more), and the version once at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::broker::BrokerState;
use crate::codec::QoS;
use crate::message::Message;

/// Windows of the damped load averages, in seconds, and their topic suffixes.
const LOAD_WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// Counters whose per-minute rates are published under `$SYS/broker/load/...`.
const LOAD_TOPICS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// Exponentially damped per-minute rate, like Unix loadavg.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    last_count: u64,
    values: [f64; 3],
}

impl Load {
    /// `new = rate + exp(-dt/W) * (old - rate)`, with `rate` in events per minute.
    fn update(&mut self, count: u64, dt: f64) {
        let delta = count.saturating_sub(self.last_count) as f64;
        self.last_count = count;
        if dt <= 0.0 {
            return;
        }
        let rate = delta * 60.0 / dt;
        for (i, (window, _)) in LOAD_WINDOWS.iter().enumerate() {
            let decay = (-dt / window).exp();
            self.values[i] = rate + decay * (self.values[i] - rate);
        }
    }
}

/// The publisher's memory of what it last sent, to publish only changes.
pub struct SysTree {
    broker: Arc<BrokerState>,
    last: HashMap<String, String>,
    loads: [Load; LOAD_TOPICS.len()],
    last_update: Instant,
}

impl SysTree {
    pub fn new(broker: Arc<BrokerState>) -> SysTree {
        SysTree {
            broker,
            last: HashMap::new(),
            loads: [Load::default(); LOAD_TOPICS.len()],
            last_update: Instant::now(),
        }
    }

    /// Publishes the static topics, then updates every `interval` until shutdown. A reload may
    /// change the interval; 0 pauses the tree (nothing is published until it is set).
    pub async fn run(mut self, mut interval: watch::Receiver<Duration>) {
        let shutdown = self.broker.shutdown_token().clone();
        let mut started = false;
        // False once the broker's handle (the sender) is gone: the interval stays as it is.
        let mut watching = true;
        loop {
            let every = *interval.borrow_and_update();
            // A ticker only while the tree is on; a changed interval (a reload) starts again.
            let mut ticker = (!every.is_zero()).then(|| tokio::time::interval(every));
            if ticker.is_some() && !started {
                started = true;
                self.publish(
                    "$SYS/broker/version",
                    format!("starling version {}", env!("CARGO_PKG_VERSION")),
                );
            }
            loop {
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let changed = async {
                    if watching {
                        interval.changed().await.is_ok()
                    } else {
                        std::future::pending().await
                    }
                };
                let step = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick => None,
                    alive = changed => Some(alive),
                };
                match step {
                    None => self.update(),
                    Some(true) => break,
                    Some(false) => watching = false,
                }
            }
        }
    }

    fn publish(&self, topic: &str, value: String) {
        let msg = Message::new(topic, Bytes::from(value), QoS::ExactlyOnce, true);
        self.broker.publish_unacknowledged(Arc::new(msg));
    }

    /// Publishes `value` on `topic` if it differs from what was last published there.
    fn changed(&mut self, topic: &str, value: String) {
        if self.last.get(topic) == Some(&value) {
            return;
        }
        self.publish(topic, value.clone());
        self.last.insert(topic.to_string(), value);
    }

    /// One round of the tree.
    pub fn update(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_update).as_secs_f64();
        self.last_update = now;

        self.publish(
            "$SYS/broker/uptime",
            format!("{} seconds", self.broker.uptime().as_secs()),
        );
        self.update_values();
        self.update_loads(dt);
    }

    /// The counts and sizes, each published when it changed.
    fn update_values(&mut self) {
        let b = self.broker.clone();
        let m = &b.metrics();
        let total = b.session_count() as u64;
        let connected = m.clients_connected.get();
        let disconnected = total.saturating_sub(connected);
        let stored = b.retained_count() as u64 + b.queued_messages();
        let values: [(&str, u64); 26] = [
            ("clients/total", total),
            ("clients/maximum", m.clients_maximum(total)),
            ("clients/connected", connected),
            ("clients/active", connected),
            ("clients/disconnected", disconnected),
            ("clients/inactive", disconnected),
            ("clients/expired", m.clients_expired.get()),
            ("messages/received", m.packets_received.get()),
            ("messages/sent", m.packets_sent.get()),
            ("messages/stored", stored),
            ("store/messages/count", stored),
            // What store/messages/count counts: queued and retained messages.
            (
                "store/messages/bytes",
                b.budget().used() + b.retained_bytes(),
            ),
            ("publish/messages/received", m.publish_received.get()),
            ("publish/messages/sent", m.publish_sent.get()),
            ("publish/messages/dropped", m.publish_dropped()),
            ("publish/bytes/received", m.publish_bytes_received.get()),
            ("publish/bytes/sent", m.publish_bytes_sent.get()),
            ("bytes/received", m.bytes_received.get()),
            ("bytes/sent", m.bytes_sent.get()),
            ("subscriptions/count", b.subscription_count() as u64),
            (
                "shared_subscriptions/count",
                b.shared_subscription_count() as u64,
            ),
            ("retained messages/count", b.retained_count() as u64),
            // Not a Mosquitto name: new retained topics not stored, `[retained]` bounds reached.
            ("retained messages/refused", m.retained_refused.get()),
            // Not a Mosquitto name: log lines dropped because the log writer fell behind.
            ("log/dropped", crate::logging::dropped_lines()),
            ("heap/current", 0),
            ("heap/maximum", 0),
        ];
        for (name, value) in values {
            // Mosquitto publishes heap figures only when built with memory tracking.
            if name.starts_with("heap/") {
                continue;
            }
            self.changed(&format!("$SYS/broker/{name}"), value.to_string());
        }
    }

    /// The load averages, `dt` seconds after the last round, each published when it moved.
    fn update_loads(&mut self, dt: f64) {
        let m = &self.broker.metrics();
        let counts = [
            m.packets_received.get(),
            m.packets_sent.get(),
            m.publish_received.get(),
            m.publish_sent.get(),
            m.publish_dropped(),
            m.bytes_received.get(),
            m.bytes_sent.get(),
            m.connections_accepted.get(),
            m.connects.get(),
        ];
        for (i, count) in counts.into_iter().enumerate() {
            self.loads[i].update(count, dt);
            for (w, (_, suffix)) in LOAD_WINDOWS.iter().enumerate() {
                let topic = format!("$SYS/broker/load/{}/{suffix}", LOAD_TOPICS[i]);
                let value = self.loads[i].values[w];
                let previous = self.last.get(&topic).and_then(|v| v.parse::<f64>().ok());
                // Loads are republished when they move by 0.01 or more.
                if previous.is_some_and(|p| (p - value).abs() < 0.01) {
                    continue;
                }
                let text = format!("{value:.2}");
                self.publish(&topic, text.clone());
                self.last.insert(topic, text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_converges_to_the_per_minute_rate() {
        let mut l = Load::default();
        // 10 events per second for an hour: 600 per minute.
        for i in 1..=360 {
            l.update(i * 100, 10.0);
        }
        assert!((l.values[0] - 600.0).abs() < 1.0, "{:?}", l.values);
        assert!((l.values[2] - 600.0).abs() < 60.0, "{:?}", l.values);
    }

    #[test]
    fn load_decays_when_idle() {
        let mut l = Load {
            last_count: 0,
            values: [600.0; 3],
        };
        l.update(0, 60.0);
        assert!(l.values[0] < 230.0 && l.values[0] > 210.0, "{:?}", l.values);
        assert!(l.values[2] > l.values[0]);
    }
}
