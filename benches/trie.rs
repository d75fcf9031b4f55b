//! `SubscriptionTrie::matches` with 10k and 100k subscriptions shaped like a fleet of devices:
//! `site/<i>/dev/<j>/temp`, 100 devices per site (100 sites for 10k, 1,000 for 100k), one
//! subscriber per filter.
//!
//! - `exact_hit`: only the exact filters; a topic that matches one of them (1 match).
//! - `exact_miss`: same trie; a topic of an unknown device (0 matches).
//! - `plus`: the exact filters plus, per site, `site/<i>/dev/+/temp` and, per device number,
//!   `site/+/dev/<j>/temp`; a device topic matches 3 (every level explores both the literal
//!   child and the `+` child).
//! - `hash`: the exact filters plus, per site, `site/<i>/#`, and `site/#` and `#`; a device
//!   topic matches 4.
//!
//! The output `Vec` is reused, as the broker does. Run: `cargo bench --bench trie`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use starling::codec::{QoS, SubscriptionOptions};
use starling::router::{Match, Subscription, SubscriptionTrie};

const DEVICES_PER_SITE: usize = 100;

fn sub(n: u32) -> Subscription<u32> {
    Subscription {
        client_id: Arc::from(format!("client-{n}")),
        handle: n,
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
        id: None,
    }
}

/// `subs` exact device filters, plus the wildcard filters of `shape`.
fn build(subs: usize, shape: &str) -> SubscriptionTrie<u32> {
    let sites = subs / DEVICES_PER_SITE;
    let mut trie = SubscriptionTrie::new();
    let mut n = 0u32;
    let mut add = |trie: &mut SubscriptionTrie<u32>, f: String| {
        trie.subscribe(&f, sub(n));
        n += 1;
    };
    for i in 0..sites {
        for j in 0..DEVICES_PER_SITE {
            add(&mut trie, format!("site/{i}/dev/{j}/temp"));
        }
    }
    match shape {
        "exact" => {}
        "plus" => {
            for i in 0..sites {
                add(&mut trie, format!("site/{i}/dev/+/temp"));
            }
            for j in 0..DEVICES_PER_SITE {
                add(&mut trie, format!("site/+/dev/{j}/temp"));
            }
        }
        "hash" => {
            for i in 0..sites {
                add(&mut trie, format!("site/{i}/#"));
            }
            add(&mut trie, "site/#".to_string());
            add(&mut trie, "#".to_string());
        }
        other => panic!("unknown shape {other}"),
    }
    trie
}

fn bench_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("trie/match");
    for (sname, subs) in [("10k", 10_000usize), ("100k", 100_000)] {
        let sites = subs / DEVICES_PER_SITE;
        let hit = format!("site/{}/dev/57/temp", sites / 2);
        let miss = format!("site/{}/dev/{}/temp", sites / 2, DEVICES_PER_SITE + 7);
        for (case, shape, topic, expect) in [
            ("exact_hit", "exact", &hit, 1usize),
            ("exact_miss", "exact", &miss, 0),
            ("plus", "plus", &hit, 3),
            ("hash", "hash", &hit, 4),
        ] {
            let trie = build(subs, shape);
            let mut out: Vec<Match<'_, u32>> = Vec::with_capacity(16);
            trie.matches(topic, &mut out);
            assert_eq!(out.len(), expect, "{case} {sname}: matches of {topic}");
            g.bench_function(format!("{case}/{sname}"), |b| {
                b.iter(|| {
                    out.clear();
                    trie.matches(black_box(topic), &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_match);
criterion_main!(benches);
