//! `BrokerState::publish`: routing one PUBLISH (16-byte payload) to 1, 100 and 10,000
//! connected subscribers of its topic, at QoS 0 and QoS 1: the trie lookup, one `Delivery` per
//! subscriber pushed into its session queue (and the wake-up of its connection), no sockets.
//!
//! Setup (untimed): a `BrokerState` with the default configuration (max_queued_messages 1000,
//! no persistence), N sessions claimed through `claim_session` (clean session, MQTT 3.1.1, as a
//! CONNECT would; on a tokio runtime since it is async), each subscribed with `subscribe` to the
//! topic at the bench's QoS.
//!
//! Timing: `iter_custom` times batches of publishes and, between batches and outside the timed
//! part, empties every queue with `session.with_state(|s| s.clear())` (returning the freed bytes
//! to the global budget), so no queue ever reaches its 1000-message limit and nothing is
//! dropped or blocked. A batch is at most 500 publishes and at most 100,000 deliveries, which
//! keeps memory bounded at 10k subscribers. The timed part therefore includes queue pushes into
//! queues holding up to 500 entries, as on a busy broker. Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use starling::broker::{BrokerState, Claimed};
use starling::codec::{ProtocolVersion, QoS, SubscriptionOptions};
use starling::config::Config;
use starling::message::Message;
use starling::session::{Login, SessionMeta};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "bench/route/topic";

struct Setup {
    state: BrokerState,
    /// Keeps every session attached (the `Ownership` is what a connection task holds).
    claimed: Vec<Claimed>,
}

fn setup(rt: &tokio::runtime::Runtime, subscribers: usize, qos: QoS) -> Setup {
    let state = BrokerState::new(Config::default(), CancellationToken::new());
    let claimed = rt.block_on(async {
        let mut claimed = Vec::with_capacity(subscribers);
        for i in 0..subscribers {
            let meta = SessionMeta {
                protocol: ProtocolVersion::V311,
                login: Login::Unchecked,
                expiry_secs: Some(0),
                username: None,
                peer: None,
                listener: Some(0),
            };
            let c = state
                .claim_session(&format!("sub-{i}"), true, meta, None)
                .await
                .unwrap_or_else(|_| panic!("claim sub-{i}"));
            state.subscribe(&c.session, TOPIC, SubscriptionOptions::new(qos), None);
            claimed.push(c);
        }
        claimed
    });
    Setup { state, claimed }
}

/// Empties every subscriber's queue and gives the bytes back to the global budget.
fn drain(s: &Setup) {
    for c in &s.claimed {
        let freed = c.session.with_state(|st| st.clear());
        s.state.budget().sub(freed);
    }
}

fn bench_publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let payload = Bytes::from_static(&[7u8; 16]);
    let mut g = c.benchmark_group("routing/publish");
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for subscribers in [1usize, 100, 10_000] {
            let s = setup(&rt, subscribers, qos);
            let msg = Arc::new(Message::new(TOPIC, payload.clone(), qos, false));
            // Sanity: every subscriber gets exactly one copy, nothing blocked.
            let p = s.state.publish(msg.clone());
            assert!(p.blocked.is_empty() && p.ops.is_empty());
            let queued: usize = s
                .claimed
                .iter()
                .map(|c| c.session.with_state(|st| st.queued_len()))
                .sum();
            assert_eq!(queued, subscribers);
            drain(&s);

            let batch = (100_000 / subscribers).clamp(1, 500) as u64;
            g.throughput(Throughput::Elements(subscribers as u64));
            g.bench_function(format!("qos{}/{subscribers}_subs", qos as u8), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(batch);
                        let t = Instant::now();
                        for _ in 0..n {
                            black_box(s.state.publish(msg.clone()));
                        }
                        timed += t.elapsed();
                        drain(&s);
                        left -= n;
                    }
                    timed
                })
            });
            assert_eq!(
                s.state.budget().used(),
                0,
                "budget balanced after the bench"
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench_publish);
criterion_main!(benches);
