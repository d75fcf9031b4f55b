//! Unit tests for [`RetainedStore`](super::RetainedStore).

use super::*;
use crate::codec::topic;

/// A test value: a number, with the topic it is retained on (as the broker's record carries
/// its own).
#[derive(Clone, Debug)]
struct V {
    topic: Arc<str>,
    n: u32,
}

impl RetainedValue for V {
    fn topic(&self) -> &Arc<str> {
        &self.topic
    }
}

/// Retains `n` on `topic`; the number it replaced.
fn put(s: &mut RetainedStore<V>, topic: impl AsRef<str>, n: u32) -> Option<u32> {
    let topic: Arc<str> = Arc::from(topic.as_ref());
    s.insert(V { topic, n }).map(|old| old.n)
}

/// Clears `topic`; the number it held.
fn del(s: &mut RetainedStore<V>, topic: &str) -> Option<u32> {
    s.remove(topic).map(|old| old.n)
}

/// The number retained on exactly `topic`.
fn get(s: &RetainedStore<V>, topic: &str) -> Option<u32> {
    s.get(topic).map(|v| v.n)
}

fn found(s: &RetainedStore<V>, filter: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    s.matches(filter, &mut out);
    let mut v: Vec<_> = out
        .into_iter()
        .map(|v| (v.topic.to_string(), v.n))
        .collect();
    v.sort();
    v
}

fn topics(s: &RetainedStore<V>, filter: &str) -> Vec<String> {
    found(s, filter).into_iter().map(|(t, _)| t).collect()
}

/// Number of nodes below the root, counted iteratively.
fn node_count<M>(s: &RetainedStore<M>) -> usize {
    let mut stack = vec![&s.root];
    let mut n = 0;
    while let Some(node) = stack.pop() {
        stack.extend(node.nodes());
        n += 1;
    }
    n - 1
}

const TOPICS: &[&str] = &[
    "a",
    "a/",
    "a/b",
    "a/b/c",
    "a//c",
    "a/x/c",
    "b",
    "/",
    "/a",
    "//",
    "$SYS",
    "$SYS/x",
    "$SYS/x/y",
    "$",
    "a/$b",
    "c/b",
    "a/b/c/d",
    "sensors/1/temp",
    "sensors/2/temp",
    "sensors/2/hum",
];

const FILTERS: &[&str] = &[
    "#",
    "+",
    "+/+",
    "+/#",
    "/",
    "/+",
    "/#",
    "a",
    "a/",
    "a/b",
    "a/+",
    "a/#",
    "a/+/c",
    "a/b/c",
    "a/b/#",
    "a//c",
    "a/+/#",
    "$SYS/#",
    "$SYS/+",
    "$SYS/x",
    "+/b",
    "+/+/+",
    "a/$b",
    "b",
    "nope",
    "sensors/+/temp",
    "sensors/#",
    "$SYS",
    "+/x/#",
];

#[test]
fn matches_agree_with_topic_matches_mqtt_4_7() {
    let mut s = RetainedStore::new();
    for (i, t) in TOPICS.iter().enumerate() {
        assert_eq!(put(&mut s, *t, i as u32), None);
    }
    assert_eq!(s.len(), TOPICS.len());
    for filter in FILTERS {
        let mut want: Vec<String> = TOPICS
            .iter()
            .filter(|t| topic::matches(filter, t))
            .map(|t| t.to_string())
            .collect();
        want.sort();
        assert_eq!(topics(&s, filter), want, "filter {filter:?}");
    }
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcards_mqtt_4_7_2_1() {
    let mut s = RetainedStore::new();
    put(&mut s, "$SYS/broker/uptime", 1);
    put(&mut s, "$SYS/broker/clients", 2);
    put(&mut s, "home/temp", 3);
    assert_eq!(topics(&s, "#"), ["home/temp"]);
    assert_eq!(topics(&s, "+/broker/uptime"), Vec::<String>::new());
    assert_eq!(topics(&s, "+/#"), ["home/temp"]);
    assert_eq!(
        topics(&s, "$SYS/#"),
        ["$SYS/broker/clients", "$SYS/broker/uptime"]
    );
    assert_eq!(
        topics(&s, "$SYS/broker/+"),
        ["$SYS/broker/clients", "$SYS/broker/uptime"]
    );
    assert_eq!(topics(&s, "$SYS/+/uptime"), ["$SYS/broker/uptime"]);
}

#[test]
fn plus_levels_visit_matching_branches_only() {
    let mut s = RetainedStore::new();
    for room in 0..50 {
        put(&mut s, format!("sensors/{room}/temp"), room);
        put(&mut s, format!("sensors/{room}/hum"), 1000 + room);
    }
    put(&mut s, "sensors//temp", 7777);
    let got = found(&s, "sensors/+/temp");
    assert_eq!(got.len(), 51);
    assert!(got
        .iter()
        .all(|(t, v)| t.ends_with("/temp") && (*v < 1000 || *v == 7777)));
    assert_eq!(
        found(&s, "sensors/7/+"),
        [("sensors/7/hum".into(), 1007), ("sensors/7/temp".into(), 7)]
    );
    assert_eq!(topics(&s, "sensors/+").len(), 0);
    assert_eq!(topics(&s, "sensors/#").len(), 101);
}

#[test]
fn hash_includes_parent_mqtt_4_7_1_2() {
    let mut s = RetainedStore::new();
    put(&mut s, "a", 1);
    put(&mut s, "a/b", 2);
    put(&mut s, "ab", 3);
    assert_eq!(topics(&s, "a/#"), ["a", "a/b"]);
    assert_eq!(topics(&s, "a/b/#"), ["a/b"]);
}

#[test]
fn replace_returns_previous_mqtt_3_3_1_5() {
    let mut s = RetainedStore::new();
    assert_eq!(put(&mut s, "a/b", 1), None);
    assert_eq!(put(&mut s, "a/b", 2), Some(1));
    assert_eq!(s.len(), 1);
    assert_eq!(get(&s, "a/b"), Some(2));
    assert_eq!(found(&s, "a/b"), [("a/b".to_string(), 2)]);
}

#[test]
fn clear_removes_and_prunes_v311_mqtt_3_3_1_10_and_11() {
    let mut s = RetainedStore::new();
    put(&mut s, "a/b/c", 1);
    put(&mut s, "a", 2);
    put(&mut s, "a/x", 3);
    assert_eq!(node_count(&s), 4); // a, b, c, x
    assert_eq!(del(&mut s, "a/b/c"), Some(1));
    assert_eq!(del(&mut s, "a/b/c"), None);
    assert_eq!(del(&mut s, "a/b"), None); // an interior node holds nothing
    assert_eq!(node_count(&s), 2); // a, x
    assert_eq!(get(&s, "a"), Some(2));
    assert_eq!(del(&mut s, "a"), Some(2));
    assert_eq!(node_count(&s), 2); // `a` still leads to `a/x`
    assert_eq!(topics(&s, "#"), ["a/x"]);
    assert_eq!(del(&mut s, "a/x"), Some(3));
    assert!(s.is_empty());
    assert_eq!(node_count(&s), 0);
    assert_eq!(del(&mut s, "zzz"), None);
}

#[test]
fn remove_everything_leaves_empty_tree() {
    let mut s = RetainedStore::new();
    for (i, t) in TOPICS.iter().enumerate() {
        put(&mut s, *t, i as u32);
    }
    for t in TOPICS.iter().rev() {
        assert!(del(&mut s, t).is_some(), "{t}");
    }
    assert_eq!(s.len(), 0);
    assert_eq!(node_count(&s), 0);
    assert!(!s.root.has_children() && s.root.value.is_none());
}

#[test]
fn iter_yields_every_message_once() {
    let mut s = RetainedStore::new();
    assert_eq!(s.iter().count(), 0);
    for (i, t) in TOPICS.iter().enumerate() {
        put(&mut s, *t, i as u32);
    }
    let mut got: Vec<(String, u32)> = s.iter().map(|(t, m)| (t.to_string(), m.n)).collect();
    got.sort();
    let mut want: Vec<(String, u32)> = TOPICS
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn hundred_thousand_retained_sanity() {
    let mut s: RetainedStore<V> = RetainedStore::default();
    for i in 0..100_000u32 {
        put(&mut s, format!("site/{}/dev/{}", i % 1000, i), i);
    }
    assert_eq!(s.len(), 100_000);
    assert_eq!(found(&s, "site/17/dev/+").len(), 100);
    assert_eq!(
        found(&s, "site/+/dev/4242"),
        [("site/242/dev/4242".into(), 4242)]
    );
    assert_eq!(found(&s, "#").len(), 100_000);
    for i in 0..100_000u32 {
        assert_eq!(
            del(&mut s, &format!("site/{}/dev/{}", i % 1000, i)),
            Some(i)
        );
    }
    assert!(s.is_empty());
    assert_eq!(node_count(&s), 0);
}

#[test]
fn deep_topics_do_not_overflow_the_stack() {
    let deep = "x/".repeat(30_000) + "y";
    let mut s = RetainedStore::new();
    put(&mut s, deep.as_str(), 1);
    put(&mut s, "x", 2);
    assert_eq!(topics(&s, "#").len(), 2);
    assert_eq!(found(&s, &deep), [(deep.clone(), 1)]);
    assert_eq!(s.iter().count(), 2);
    assert_eq!(del(&mut s, &deep), Some(1));
    assert_eq!(node_count(&s), 1);
    put(&mut s, deep.as_str(), 3);
    drop(s);
}

/// Every match of `filter`, read `batch` at a time with `matches_after`.
fn in_batches(s: &RetainedStore<V>, filter: &str, batch: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut out = Vec::new();
        s.matches_after(filter, all.last().map(|t| t.as_str()), batch, &mut out);
        let n = out.len();
        all.extend(out.into_iter().map(|v| v.topic.to_string()));
        if n < batch {
            return all;
        }
    }
}

/// The store's order: level by level, a topic before the topics below it.
fn level_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

#[test]
fn matches_after_reads_every_match_once_in_order_in_any_batch_size() {
    let mut s = RetainedStore::new();
    for (i, t) in TOPICS.iter().enumerate() {
        put(&mut s, *t, i as u32);
    }
    for filter in FILTERS {
        let mut want: Vec<String> = TOPICS
            .iter()
            .filter(|t| topic::matches(filter, t))
            .map(|t| t.to_string())
            .collect();
        want.sort_by(|a, b| level_order(a, b));
        for batch in [1, 2, 3, 100] {
            assert_eq!(
                in_batches(&s, filter, batch),
                want,
                "filter {filter:?}, batch {batch}"
            );
        }
    }
}

#[test]
fn matches_after_sees_changes_ahead_of_the_cursor_and_skips_removed_ones() {
    let mut s = RetainedStore::new();
    for i in 0..10u32 {
        put(&mut s, format!("r/{i}"), i);
    }
    let mut out = Vec::new();
    s.matches_after("r/#", None, 3, &mut out);
    let got: Vec<&str> = out.iter().map(|v| &*v.topic).collect();
    assert_eq!(got, ["r/0", "r/1", "r/2"]);
    // The cursor's own topic goes, one behind it and one ahead change.
    del(&mut s, "r/2");
    del(&mut s, "r/5");
    put(&mut s, "r/0", 100);
    put(&mut s, "r/25", 25);
    let mut rest = Vec::new();
    s.matches_after("r/#", Some("r/2"), 100, &mut rest);
    let got: Vec<&str> = rest.iter().map(|v| &*v.topic).collect();
    assert_eq!(got, ["r/25", "r/3", "r/4", "r/6", "r/7", "r/8", "r/9"]);
}

#[test]
fn matches_after_resumes_in_a_large_flat_level() {
    let mut s = RetainedStore::new();
    for i in 0..20_000u32 {
        put(&mut s, format!("ret/{i}"), i);
    }
    let all = in_batches(&s, "ret/#", 64);
    assert_eq!(all.len(), 20_000);
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 20_000);
    assert_eq!(in_batches(&s, "ret/+", 1000).len(), 20_000);
}

#[test]
fn matches_after_on_deep_topics_does_not_overflow_the_stack() {
    let deep = "x/".repeat(30_000) + "y";
    let mut s = RetainedStore::new();
    put(&mut s, deep.as_str(), 1);
    put(&mut s, "x", 2);
    assert_eq!(in_batches(&s, "#", 1), ["x".to_string(), deep]);
}

/// A trie slot is a level key (a topic `Arc` and a byte range) and a node (boxed children, the
/// value); with the topic in the value, not beside it, a slot is 40 bytes instead of 56, once
/// per retained message (issue 15's retained-memory row).
#[test]
fn a_trie_slot_holds_no_topic_of_its_own() {
    assert_eq!(std::mem::size_of::<Level>(), 24);
    assert_eq!(std::mem::size_of::<RNode<Arc<V>>>(), 16);
}

#[test]
fn the_topic_handed_out_is_the_values_own_mqtt_3_3_1_5() {
    let mut s = RetainedStore::new();
    put(&mut s, "a/b", 1);
    let newer: Arc<str> = Arc::from("a/b");
    let old = s.insert(V {
        topic: newer.clone(),
        n: 2,
    });
    assert_eq!(old.map(|v| v.n), Some(1));
    let mut out = Vec::new();
    s.matches("a/+", &mut out);
    assert_eq!(out.len(), 1);
    assert!(Arc::ptr_eq(&out[0].topic, &newer) && out[0].n == 2);
    let listed: Vec<(&str, u32)> = s.iter().map(|(t, v)| (t, v.n)).collect();
    assert_eq!(listed, [("a/b", 2)]);
}
