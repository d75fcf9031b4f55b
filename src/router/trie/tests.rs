//! Unit tests for [`SubscriptionTrie`](super::SubscriptionTrie).

use super::*;
use crate::codec::topic;
use crate::codec::QoS;

fn sub(client: &str, handle: u32) -> Subscription<u32> {
    Subscription {
        client_id: client.into(),
        handle,
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
        id: None,
    }
}

/// `(client_id, shared_group)` of every match, sorted.
fn hits(t: &SubscriptionTrie<u32>, topic: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    t.matches(topic, &mut out);
    let mut v: Vec<_> = out
        .iter()
        .map(|m| {
            (
                m.sub.client_id.to_string(),
                m.shared_group.map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

fn clients(t: &SubscriptionTrie<u32>, topic: &str) -> Vec<String> {
    hits(t, topic).into_iter().map(|(c, _)| c).collect()
}

fn node_count<S>(t: &SubscriptionTrie<S>) -> usize {
    t.node_count()
}

fn assert_pristine<S>(t: &SubscriptionTrie<S>) {
    assert_eq!(t.len(), 0);
    assert_eq!(t.shared_len(), 0);
    assert!(t.is_empty());
    assert_eq!(node_count(t), 0);
    assert!(t.root.holds_nothing());
    assert_eq!(t.root.fanout(), 0);
}

const FILTERS: &[&str] = &[
    "#", "+", "+/+", "+/#", "/", "/+", "/#", "a", "a/", "a/b", "a/+", "a/#", "a/+/c", "a/b/c",
    "a/b/#", "a//c", "a/+/#", "$SYS/#", "$SYS/+", "$SYS/x", "+/b", "+/+/+", "a/$b", "b",
];

const TOPICS: &[&str] = &[
    "a", "a/", "a/b", "a/b/c", "a//c", "a/x/c", "b", "/", "/a", "//", "$SYS", "$SYS/x", "$SYS/x/y",
    "$", "a/$b", "c/b", "a/b/c/d", "x/y/z",
];

#[test]
fn matches_agree_with_topic_matches_mqtt_4_7() {
    // Every filter/topic pair gives the same answer as the single-filter reference matcher.
    let mut t = SubscriptionTrie::new();
    for (i, f) in FILTERS.iter().enumerate() {
        t.subscribe(f, sub(f, i as u32));
    }
    assert_eq!(t.len(), FILTERS.len());
    for topic_name in TOPICS {
        let mut want: Vec<String> = FILTERS
            .iter()
            .filter(|f| topic::matches(f, topic_name))
            .map(|f| f.to_string())
            .collect();
        want.sort();
        assert_eq!(clients(&t, topic_name), want, "topic {topic_name:?}");
    }
}

#[test]
fn exact_plus_and_hash() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("sport/tennis/player1", sub("exact", 0));
    t.subscribe("sport/tennis/+", sub("plus", 0));
    t.subscribe("sport/#", sub("hash", 0));
    assert_eq!(
        clients(&t, "sport/tennis/player1"),
        ["exact", "hash", "plus"]
    );
    assert_eq!(clients(&t, "sport/tennis/player2"), ["hash", "plus"]);
    assert_eq!(clients(&t, "sport/tennis"), ["hash"]);
    // [MQTT-4.7.1-2] `#` includes the parent level.
    assert_eq!(clients(&t, "sport"), ["hash"]);
    assert!(clients(&t, "sports").is_empty());
    assert!(clients(&t, "sport/tennis/player1/ranking").contains(&"hash".to_string()));
}

#[test]
fn dollar_topics_mqtt_4_7_2_1() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("#", sub("all", 0));
    t.subscribe("+/monitor/Clients", sub("plus", 0));
    t.subscribe("$SYS/#", sub("sys", 0));
    t.subscribe("$SYS/monitor/+", sub("sysplus", 0));
    t.subscribe("+", sub("one", 0));
    assert_eq!(clients(&t, "$SYS/monitor/Clients"), ["sys", "sysplus"]);
    assert_eq!(clients(&t, "$SYS"), ["sys"]);
    assert_eq!(clients(&t, "x/monitor/Clients"), ["all", "plus"]);
    assert_eq!(clients(&t, "x"), ["all", "one"]);
    // The rule is about the first level only.
    t.subscribe("a/+", sub("deep", 0));
    assert_eq!(clients(&t, "a/$x"), ["all", "deep"]);
}

#[test]
fn overlapping_filters_of_one_client_all_returned() {
    // The caller merges one client's overlapping matches (spec 3.3.4); the trie returns each.
    let mut t = SubscriptionTrie::new();
    for f in ["a/b", "a/+", "a/#", "#", "+/b"] {
        t.subscribe(f, sub("c1", 0));
    }
    assert_eq!(t.len(), 5);
    assert_eq!(clients(&t, "a/b"), ["c1"; 5]);
}

#[test]
fn empty_levels_are_levels() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("+", sub("plus", 0));
    t.subscribe("+/+", sub("plus2", 0));
    t.subscribe("/", sub("slash", 0));
    t.subscribe("a//b", sub("gap", 0));
    assert_eq!(clients(&t, "/"), ["plus2", "slash"]);
    assert_eq!(clients(&t, "a//b"), ["gap"]);
    assert_eq!(clients(&t, "a/b"), ["plus2"]);
    assert!(clients(&t, "a/b/c").is_empty());
}

#[test]
fn replace_same_client_same_filter_mqtt_3_8_4_3() {
    let mut t = SubscriptionTrie::new();
    assert!(!t.subscribe("a/+", sub("c1", 1)));
    let mut s = sub("c1", 2);
    s.options.qos = QoS::ExactlyOnce;
    s.id = Some(7);
    assert!(t.subscribe("a/+", s));
    assert_eq!(t.len(), 1);
    let mut out = Vec::new();
    t.matches("a/x", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].sub.handle, 2);
    assert_eq!(out[0].sub.options.qos, QoS::ExactlyOnce);
    assert_eq!(out[0].sub.id, Some(7));
    // Another client, or another filter string, is a new subscription.
    assert!(!t.subscribe("a/+", sub("c2", 3)));
    assert!(!t.subscribe("a/#", sub("c1", 4)));
    assert_eq!(t.len(), 3);
}

#[test]
fn replace_works_past_the_index_threshold() {
    let mut t = SubscriptionTrie::new();
    for i in 0..100 {
        assert!(!t.subscribe("big", sub(&format!("c{i}"), i)));
    }
    for i in 0..100 {
        assert!(t.subscribe("big", sub(&format!("c{i}"), i + 1000)));
    }
    assert_eq!(t.len(), 100);
    for i in (0..100).step_by(2) {
        assert!(t.unsubscribe("big", &format!("c{i}")));
        assert!(!t.unsubscribe("big", &format!("c{i}")));
    }
    let mut out = Vec::new();
    t.matches("big", &mut out);
    let mut got: Vec<u32> = out.iter().map(|m| m.sub.handle).collect();
    got.sort_unstable();
    let want: Vec<u32> = (0..100).filter(|i| i % 2 == 1).map(|i| i + 1000).collect();
    assert_eq!(got, want);
    // The index survives swap-removes: replace still finds every remaining client.
    for i in (1..100).step_by(2) {
        assert!(t.subscribe("big", sub(&format!("c{i}"), i)));
    }
    assert_eq!(t.len(), 50);
}

#[test]
fn unsubscribe_prunes_to_empty() {
    let mut t = SubscriptionTrie::new();
    let filters = [
        "a/b/c",
        "a/b",
        "a/+/c",
        "a/#",
        "#",
        "+",
        "+/+/+/#",
        "x/y/z/w",
        "a//",
        "/",
        "$share/g/a/b",
        "$share/g/#",
        "$share/h/a/b",
    ];
    for (i, f) in filters.iter().enumerate() {
        t.subscribe(f, sub("c1", i as u32));
        t.subscribe(f, sub("c2", i as u32));
    }
    assert_eq!(t.len(), filters.len() * 2);
    assert_eq!(t.shared_len(), 6);
    assert!(node_count(&t) > 0);
    for f in filters {
        assert!(t.unsubscribe(f, "c1"), "{f}");
        assert!(!t.unsubscribe(f, "c1"), "{f}");
    }
    assert_eq!(t.len(), filters.len());
    assert!(clients(&t, "a/b/c").iter().all(|c| c == "c2"));
    // Reverse order so parents go both before and after their children.
    for f in filters.iter().rev() {
        assert!(t.unsubscribe(f, "c2"), "{f}");
    }
    assert_pristine(&t);
}

#[test]
fn prune_keeps_nodes_still_in_use() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("a/b/c/d", sub("c1", 0));
    t.subscribe("a/b", sub("c1", 0));
    t.subscribe("a/+/x", sub("c1", 0));
    assert_eq!(node_count(&t), 6); // a, b, c, d, +, x
    assert!(t.unsubscribe("a/b/c/d", "c1"));
    assert_eq!(node_count(&t), 4); // a, b, +, x
    assert_eq!(clients(&t, "a/b"), ["c1"]);
    assert!(t.unsubscribe("a/b", "c1"));
    assert_eq!(node_count(&t), 3);
    assert_eq!(clients(&t, "a/q/x"), ["c1"]);
    assert!(t.unsubscribe("a/+/x", "c1"));
    assert_pristine(&t);
}

#[test]
fn unsubscribe_unknown_is_false_and_harmless() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("a/b", sub("c1", 0));
    assert!(!t.unsubscribe("a/b", "c2"));
    assert!(!t.unsubscribe("a/b/c", "c1"));
    assert!(!t.unsubscribe("a", "c1"));
    assert!(!t.unsubscribe("a/#", "c1"));
    assert!(!t.unsubscribe("$share/g/a/b", "c1"));
    assert!(!t.unsubscribe("#", "c1"));
    assert_eq!(t.len(), 1);
    assert_eq!(clients(&t, "a/b"), ["c1"]);
}

#[test]
fn remove_client_removes_only_that_client() {
    let mut t = SubscriptionTrie::new();
    let filters = ["a", "b/+", "$share/g/c", "#"];
    for f in filters {
        t.subscribe(f, sub("c1", 0));
        t.subscribe(f, sub("c2", 0));
    }
    assert_eq!(
        t.remove_client("c1", filters.iter().copied().chain(["nope"])),
        4
    );
    assert_eq!(t.len(), 4);
    assert_eq!(t.shared_len(), 1);
    assert_eq!(clients(&t, "b/x"), ["c2", "c2"]); // `b/+` and `#`
    assert_eq!(t.remove_client("c2", filters), 4);
    assert_pristine(&t);
}

#[test]
fn shared_round_robin_distributes_evenly_mqtt_4_8_2() {
    let mut t = SubscriptionTrie::new();
    for i in 0..4 {
        t.subscribe("$share/workers/jobs/+", sub(&format!("w{i}"), i));
    }
    t.subscribe("jobs/#", sub("observer", 99));
    assert_eq!(t.len(), 5);
    assert_eq!(t.shared_len(), 4);
    let mut counts = [0usize; 4];
    let mut out = Vec::new();
    for _ in 0..400 {
        out.clear();
        t.matches("jobs/1", &mut out);
        // Exactly one member of the group plus the non-shared subscription.
        assert_eq!(out.len(), 2);
        let shared: Vec<_> = out.iter().filter(|m| m.shared_group.is_some()).collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].shared_group, Some("workers"));
        counts[shared[0].sub.handle as usize] += 1;
    }
    assert_eq!(counts, [100; 4]);
}

#[test]
fn shared_random_strategy_uses_every_member() {
    let mut t = SubscriptionTrie::new_with_strategy(SharedStrategy::Random);
    assert_eq!(t.strategy(), SharedStrategy::Random);
    for i in 0..4 {
        t.subscribe("$share/g/t", sub(&format!("w{i}"), i));
    }
    let mut counts = [0usize; 4];
    let mut out = Vec::new();
    for _ in 0..4000 {
        out.clear();
        t.matches("t", &mut out);
        assert_eq!(out.len(), 1);
        counts[out[0].sub.handle as usize] += 1;
    }
    // Expected 1000 each; 700 is > 10 standard deviations away.
    assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    t.set_strategy(SharedStrategy::RoundRobin);
    assert_eq!(t.strategy(), SharedStrategy::RoundRobin);
}

#[test]
fn shared_groups_are_isolated_by_name_and_filter() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("$share/g/a", sub("g-a-1", 0));
    t.subscribe("$share/g/a", sub("g-a-2", 0));
    t.subscribe("$share/h/a", sub("h-a", 0));
    // Same name on another filter that also matches `a`: a different group.
    t.subscribe("$share/g/+", sub("g-plus", 0));
    t.subscribe("$share/g/#", sub("g-hash", 0));
    let mut seen_ga = Vec::new();
    for _ in 0..4 {
        let h = hits(&t, "a");
        assert_eq!(h.len(), 4, "{h:?}");
        let ga: Vec<_> = h.iter().filter(|(c, _)| c.starts_with("g-a")).collect();
        assert_eq!(ga.len(), 1);
        seen_ga.push(ga[0].0.clone());
        assert!(h.contains(&("h-a".into(), Some("h".into()))));
        assert!(h.contains(&("g-plus".into(), Some("g".into()))));
        assert!(h.contains(&("g-hash".into(), Some("g".into()))));
    }
    seen_ga.sort();
    seen_ga.dedup();
    assert_eq!(seen_ga, ["g-a-1", "g-a-2"]);
    // Only `g` on `#` matches a deeper topic.
    assert_eq!(
        hits(&t, "a/b"),
        [("g-hash".to_string(), Some("g".to_string()))]
    );
}

#[test]
fn shared_and_plain_subscriptions_of_one_client_coexist() {
    let mut t = SubscriptionTrie::new();
    assert!(!t.subscribe("a", sub("c1", 1)));
    assert!(!t.subscribe("$share/g/a", sub("c1", 2)));
    assert!(t.subscribe("$share/g/a", sub("c1", 3)));
    assert_eq!((t.len(), t.shared_len()), (2, 1));
    assert_eq!(
        hits(&t, "a"),
        [
            ("c1".to_string(), None),
            ("c1".to_string(), Some("g".to_string()))
        ]
    );
    assert!(t.unsubscribe("a", "c1"));
    assert_eq!(hits(&t, "a"), [("c1".to_string(), Some("g".to_string()))]);
    assert!(t.unsubscribe("$share/g/a", "c1"));
    assert_pristine(&t);
}

#[test]
fn shared_dollar_rule_applies_to_the_inner_filter() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("$share/g/#", sub("wild", 0));
    t.subscribe("$share/g/$SYS/#", sub("sys", 0));
    assert_eq!(clients(&t, "$SYS/x"), ["sys"]);
    assert_eq!(clients(&t, "x"), ["wild"]);
}

#[test]
fn ten_thousand_subscriptions_sanity() {
    let mut t = SubscriptionTrie::new();
    for i in 0..10_000u32 {
        let f = format!("dev/{}/sensor/{}", i % 100, i);
        assert!(!t.subscribe(&f, sub(&format!("c{i}"), i)));
    }
    for i in 0..100u32 {
        t.subscribe(&format!("dev/{i}/#"), sub(&format!("room{i}"), i));
    }
    t.subscribe("dev/+/sensor/+", sub("all", 0));
    t.subscribe("$share/g/dev/+/sensor/+", sub("worker", 0));
    assert_eq!(t.len(), 10_102);
    let mut out = Vec::new();
    t.matches("dev/42/sensor/1242", &mut out);
    let mut got: Vec<_> = out.iter().map(|m| m.sub.client_id.to_string()).collect();
    got.sort();
    assert_eq!(got, ["all", "c1242", "room42", "worker"]);
    out.clear();
    t.matches("dev/42/sensor/1243", &mut out);
    assert_eq!(out.len(), 3);
    for i in 0..10_000u32 {
        let f = format!("dev/{}/sensor/{}", i % 100, i);
        assert!(t.unsubscribe(&f, &format!("c{i}")));
    }
    for i in 0..100u32 {
        assert!(t.unsubscribe(&format!("dev/{i}/#"), &format!("room{i}")));
    }
    assert!(t.unsubscribe("dev/+/sensor/+", "all"));
    assert!(t.unsubscribe("$share/g/dev/+/sensor/+", "worker"));
    assert_pristine(&t);
}

#[test]
fn deep_filters_do_not_overflow_the_stack() {
    // 30k levels: recursion anywhere (match, prune, drop) would blow a 2 MiB test thread stack.
    let deep_lit = "a/".repeat(30_000) + "a";
    let deep_plus = "+/".repeat(30_000) + "#";
    let mut t = SubscriptionTrie::new();
    t.subscribe(&deep_lit, sub("lit", 0));
    t.subscribe(&deep_plus, sub("plus", 0));
    // Fan-out at every level: a literal and a `+` branch, forcing the pending stack to spill.
    for k in 0..50 {
        t.subscribe(&("a/".repeat(k) + "+/z"), sub("fan", k as u32));
    }
    assert_eq!(clients(&t, &deep_lit), ["lit", "plus"]);
    let mut out = Vec::new();
    t.matches(&("a/".repeat(40) + "z"), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].sub.handle, 39); // `+` stands for the 40th `a`
    assert!(t.unsubscribe(&deep_lit, "lit"));
    assert_eq!(clients(&t, &deep_lit), ["plus"]);
    drop(t);
}

#[test]
fn pending_stack_spills_and_drains_in_order() {
    let mut p: Pending<usize> = Pending::new();
    for i in 0..100 {
        p.push(i);
    }
    let popped: Vec<usize> = std::iter::from_fn(|| p.pop()).collect();
    assert_eq!(popped, (0..100).rev().collect::<Vec<_>>());
    assert_eq!(p.pop(), None);
}

#[test]
fn handles_are_cloned_out_of_matches() {
    let mut t: SubscriptionTrie<Arc<str>> = SubscriptionTrie::default();
    t.subscribe(
        "a",
        Subscription {
            client_id: "c".into(),
            handle: "tx".into(),
            options: SubscriptionOptions::new(QoS::AtMostOnce),
            id: Some(1),
        },
    );
    let mut out = Vec::new();
    t.matches("a", &mut out);
    let owned: Vec<Subscription<Arc<str>>> = out.iter().map(|m| m.sub.clone()).collect();
    assert_eq!(&*owned[0].handle, "tx");
    assert!(format!("{:?}", out[0]).contains("shared_group: None"));
}

/// The filters one large session might hold: literal, `+`, `#`, `$share`, root-level fan-out.
fn session_filters(i: u32) -> [String; 6] {
    [
        format!("{i}"),
        format!("dev/{i}/temp"),
        format!("dev/{i}/+/x"),
        format!("site/{}/dev/{i}/#", i % 50),
        format!("$share/g{}/jobs/{i}/+", i % 3),
        format!("$share/all/+/{i}/#"),
    ]
}

#[test]
fn a_large_session_ending_leaves_zero_nodes_and_no_big_tables() {
    let mut t = SubscriptionTrie::new();
    t.subscribe("keep/+", sub("other", 0));
    let baseline = t.node_count();
    assert_eq!(baseline, 2);
    let filters: Vec<String> = (0..5_000).flat_map(session_filters).collect();
    for f in &filters {
        assert!(!t.subscribe(f, sub("big", 0)), "{f}");
        t.subscribe(f, sub("small", 1));
    }
    assert_eq!(t.len(), 2 * filters.len() + 1);
    assert!(t.node_count() > 30_000);
    // One session ends (remove_client is what the broker does), then the other unsubscribes.
    let n = t.remove_client("big", filters.iter().map(String::as_str));
    assert_eq!(n, filters.len());
    assert!(t.node_count() > 30_000, "nodes still used by `small`");
    for f in filters.iter().filter(|f| !f.starts_with("dev/")) {
        assert!(t.unsubscribe(f, "small"), "{f}");
    }
    // `dev` lost all its children but one level is still used: its table must have shrunk.
    assert!(t.unsubscribe("dev/7/temp", "small"));
    for i in (0..5_000).filter(|&i| i != 7) {
        assert!(t.unsubscribe(&format!("dev/{i}/temp"), "small"));
        assert!(t.unsubscribe(&format!("dev/{i}/+/x"), "small"));
    }
    let dev = t.root.children.get("dev").map(|n| n.children.capacity());
    assert!(dev.is_some_and(|c| c < 16), "dev keeps capacity {dev:?}");
    assert!(
        t.root.children.capacity() < 16,
        "root keeps capacity {} for {} children",
        t.root.children.capacity(),
        t.root.children.len()
    );
    assert!(t.unsubscribe("dev/7/+/x", "small"));
    assert_eq!(t.node_count(), baseline);
    assert_eq!(t.len(), 1);
    assert!(t.unsubscribe("keep/+", "other"));
    assert_pristine(&t);
    assert_eq!(t.root.children.capacity(), 0);
}

#[test]
fn a_shrinking_subscriber_list_gives_its_index_back() {
    let mut t = SubscriptionTrie::new();
    for i in 0..10_000u32 {
        t.subscribe("news/#", sub(&format!("c{i}"), i));
    }
    for i in 1..10_000u32 {
        assert!(t.unsubscribe("news/#", &format!("c{i}")));
    }
    let leaf = t.root.children.get("news").and_then(|n| n.hash.as_deref());
    let subs = &leaf.expect("news/# still held by c0").subs;
    assert!(
        subs.items.capacity() < 16,
        "items {}",
        subs.items.capacity()
    );
    let ix = subs.index.as_ref().map_or(0, HashMap::capacity);
    assert!(ix < 16, "index keeps capacity {ix}");
    assert_eq!(clients(&t, "news/x"), ["c0"]);
}

/// Routing merges one client's overlapping subscriptions [MQTT-3.3.4-2]; it needs to look only
/// when more than one filter contributed non-shared matches, which `matches_with` counts.
#[test]
fn matches_with_counts_the_filters_that_gave_plain_matches() {
    let mut t = SubscriptionTrie::new();
    let count = |t: &SubscriptionTrie<u32>, topic: &str| {
        let mut out = Vec::new();
        t.matches_with(topic, &mut out, &|_| true)
    };
    t.subscribe("a/b", sub("c1", 1));
    t.subscribe("a/b", sub("c2", 2));
    assert_eq!(count(&t, "a/b"), 1, "two clients, one filter");
    t.subscribe("$share/g/a/b", sub("c3", 3));
    assert_eq!(count(&t, "a/b"), 1, "a shared group is never merged");
    t.subscribe("a/+", sub("c1", 1));
    assert_eq!(count(&t, "a/b"), 2);
    t.subscribe("#", sub("c4", 4));
    t.subscribe("a/#", sub("c5", 5));
    assert_eq!(count(&t, "a/b"), 4);
    assert_eq!(count(&t, "x"), 1);
    let mut s = SubscriptionTrie::new();
    s.subscribe("$share/g/q", sub("c1", 1));
    assert_eq!(count(&s, "q"), 0);
}

#[test]
fn shared_groups_are_listed_while_they_have_members() {
    let mut t = SubscriptionTrie::new();
    let (v0, none) = t.shared_groups();
    assert!(none.is_empty());
    t.subscribe("$share/g/a/#", sub("m1", 1));
    t.subscribe("$share/g/a/#", sub("m2", 2));
    t.subscribe("$share/h/a/#", sub("m1", 3));
    t.subscribe("a/#", sub("plain", 4));
    let (v1, groups) = t.shared_groups();
    assert_eq!(groups, ["$share/g/a/#", "$share/h/a/#"]);
    assert_ne!(v0, v1);
    // A second member changes nothing; the last one leaving removes the group.
    t.unsubscribe("$share/g/a/#", "m1");
    assert_eq!(t.shared_groups(), (v1, groups.clone()));
    t.unsubscribe("$share/g/a/#", "m2");
    let (v2, groups) = t.shared_groups();
    assert_eq!(groups, ["$share/h/a/#"]);
    assert_ne!(v1, v2);
}
