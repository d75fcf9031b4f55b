//! The retained message store: the last retained PUBLISH per topic [MQTT-3.3.1-5], delivered to
//! new subscriptions whose filter matches.
//!
//! Owns: one message of type `M` per topic name, in a trie keyed by topic level, so a filter
//! like `sensors/+/temp` visits only the branches it can match even with 100k+ topics. Children
//! are kept in order, so the matches of a filter can also be read in a fixed order a batch at a
//! time, resuming after the last topic read ([`RetainedStore::matches_after`]): a subscriber is
//! streamed a large retained set without a copy of it.
//!
//! Invariants:
//! - A node holds a value iff a message is retained on exactly the topic spelled by its path; the
//!   value carries that topic ([`RetainedValue`]), so a node needs no field of its own for it
//!   and matches hand it out without building strings.
//! - No node survives that has neither a value nor children (up to, not including, the root).
//! - `len` is the number of stored values.
//! - Filters whose first level is `+` or `#` skip root children starting with `$` [MQTT-4.7.2-1].
//! - Insert, remove, match, iteration and drop are iterative: a topic with 30k levels cannot
//!   overflow the stack.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A child's key: one topic level, as a byte range of a topic string that a retained message
/// brought. Levels share that string, so a level costs no allocation of its own (a retained
/// message used to pay one boxed string per level besides its topic).
#[derive(Clone)]
struct Level {
    topic: Arc<str>,
    start: u32,
    end: u32,
}

impl Level {
    fn as_str(&self) -> &str {
        // The range was cut at `/` boundaries of this very string; `get` only keeps this
        // panic-free.
        self.topic
            .get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }
}

impl Borrow<str> for Level {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Level {}

impl PartialOrd for Level {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Level {
    /// The same order as the level strings, as `Borrow<str>` requires.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// The levels of `topic` as byte ranges. Topic names are at most 65,535 bytes [MQTT-1.5.4-1],
/// so the offsets fit in `u32`.
fn level_ranges(topic: &str) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut start = 0usize;
    topic.split('/').map(move |level| {
        let range = (start as u32, (start + level.len()) as u32);
        start += level.len() + 1;
        range
    })
}

/// A value the store can hold: it carries the topic it is retained on, so the trie's slots do
/// not pay for a second pointer to it (16 of a slot's 56 bytes, once per retained message).
pub trait RetainedValue {
    /// The topic name this value is retained on.
    fn topic(&self) -> &Arc<str>;
}

type Children<M> = BTreeMap<Level, RNode<M>>;

/// One topic level. Most nodes are leaves, so the child map is boxed only when there is one.
struct RNode<M> {
    children: Option<Box<Children<M>>>,
    value: Option<M>,
}

impl<M> RNode<M> {
    fn new() -> Self {
        RNode {
            children: None,
            value: None,
        }
    }

    fn child(&self, level: &str) -> Option<&RNode<M>> {
        self.children.as_ref()?.get(level)
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut RNode<M>> {
        self.children.as_mut()?.get_mut(level)
    }

    fn has_children(&self) -> bool {
        self.children.as_ref().is_some_and(|c| !c.is_empty())
    }

    fn child_count(&self) -> usize {
        self.children.as_ref().map_or(0, |c| c.len())
    }

    /// The children with their keys, in key order.
    fn entries(&self) -> impl Iterator<Item = (&str, &RNode<M>)> {
        self.children
            .iter()
            .flat_map(|c| c.iter().map(|(k, n)| (k.as_str(), n)))
    }

    /// The children, in key order.
    fn nodes(&self) -> impl Iterator<Item = &RNode<M>> {
        self.children.iter().flat_map(|c| c.values())
    }
}

impl<M> Drop for RNode<M> {
    /// Iterative, so dropping a very deep chain cannot overflow the stack.
    fn drop(&mut self) {
        let Some(children) = self.children.take() else {
            return;
        };
        let mut stack: Vec<Box<Children<M>>> = vec![children];
        while let Some(map) = stack.pop() {
            for (_, mut n) in *map {
                stack.extend(n.children.take());
            }
        }
    }
}

/// Splits off the first level; `None` rest means it was the last one.
fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (s, None),
    }
}

/// Work items of [`RetainedStore::matches`].
enum Work<'a, 'f, M> {
    /// Match the remaining filter levels (`None`: none left) below this node.
    Filter(&'a RNode<M>, Option<&'f str>),
    /// Everything at and below this node (a `#` was reached).
    All(&'a RNode<M>),
}

/// Retained messages by topic name. Generic over the message so the broker chooses its
/// representation (a cheaply clonable record that carries its topic, see [`RetainedValue`]).
pub struct RetainedStore<M> {
    root: RNode<M>,
    len: usize,
}

impl<M: RetainedValue> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: RetainedValue> RetainedStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        RetainedStore {
            root: RNode::new(),
            len: 0,
        }
    }

    /// Store or replace the retained message of its topic [MQTT-3.3.1-5]; returns the previous
    /// value. New levels' keys are cut from the message's own topic, not copied. Replacing an
    /// existing topic allocates nothing.
    pub fn insert(&mut self, msg: M) -> Option<M> {
        let topic = msg.topic().clone();
        let mut node = &mut self.root;
        for (start, end) in level_ranges(&topic) {
            let key = Level {
                topic: topic.clone(),
                start,
                end,
            };
            let children = node.children.get_or_insert_with(Box::default);
            node = children.entry(key).or_insert_with(RNode::new);
        }
        let old = node.value.replace(msg);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Clear the retained message of `topic` (a retained PUBLISH with an empty payload)
    /// (3.1.1 [MQTT-3.3.1-10] [MQTT-3.3.1-11], 5.0 [MQTT-3.3.1-6] [MQTT-3.3.1-7]); returns the
    /// removed value and prunes empty nodes.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.child_mut(level)?;
        }
        let msg = node.value.take()?;
        self.len -= 1;
        self.prune(topic);
        Some(msg)
    }

    /// Removes the empty tail of `topic`'s path: the topmost node from which everything down to
    /// the end holds no value and no child other than the next one on the path.
    fn prune(&mut self, topic: &str) {
        let mut node = &self.root;
        let mut cut: Option<usize> = None;
        for (depth, level) in topic.split('/').enumerate() {
            let Some(child) = node.child(level) else {
                return;
            };
            if child.value.is_none() && child.child_count() <= 1 {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let Some(cut) = cut.filter(|_| !node.has_children()) else {
            return;
        };
        let mut parent = &mut self.root;
        let mut levels = topic.split('/');
        for level in levels.by_ref().take(cut) {
            match parent.child_mut(level) {
                Some(n) => parent = n,
                None => return,
            }
        }
        if let (Some(level), Some(children)) = (levels.next(), parent.children.as_mut()) {
            // Dropped iteratively by `RNode::drop`.
            children.remove(level);
            if children.is_empty() {
                parent.children = None;
            }
        }
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.child(level)?;
        }
        node.value.as_ref()
    }

    /// Number of retained messages (for `$SYS` and limits).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is retained; a new subscription can then skip the lookup.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every retained message with its topic, in no particular order (for persistence and
    /// `$SYS` byte counts).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &M)> {
        let mut stack = vec![&self.root];
        let mut current: Option<&RNode<M>> = None;
        std::iter::from_fn(move || loop {
            if let Some(node) = current.take() {
                stack.extend(node.nodes());
                if let Some(m) = &node.value {
                    return Some((&**m.topic(), m));
                }
            }
            current = Some(stack.pop()?);
        })
    }
}

impl<M: RetainedValue + Clone> RetainedStore<M> {
    /// Every retained message whose topic matches `filter` (a plain filter; the caller strips
    /// `$share`), honouring the `$` rule [MQTT-4.7.2-1]. Pushes the messages (each carries its
    /// topic); only branches the filter can match are visited.
    pub fn matches(&self, filter: &str, out: &mut Vec<M>) {
        let skip_dollar = filter.starts_with('+') || filter.starts_with('#');
        let mut work: Vec<Work<'_, '_, M>> = Vec::new();
        // The root is handled here so the `$` rule needs no flag on every work item.
        let (level, rest) = split_level(filter);
        match level {
            "#" => {
                // The root itself never holds a value: every topic has at least one level.
                for (k, child) in self.root.entries() {
                    if !k.starts_with('$') {
                        work.push(Work::All(child));
                    }
                }
            }
            "+" => {
                for (k, child) in self.root.entries() {
                    if !(skip_dollar && k.starts_with('$')) {
                        work.push(Work::Filter(child, rest));
                    }
                }
            }
            _ => {
                if let Some(child) = self.root.child(level) {
                    work.push(Work::Filter(child, rest));
                }
            }
        }
        while let Some(item) = work.pop() {
            match item {
                Work::All(node) => {
                    out.extend(node.value.clone());
                    work.extend(node.nodes().map(Work::All));
                }
                Work::Filter(node, None) => {
                    out.extend(node.value.clone());
                }
                Work::Filter(node, Some(r)) => {
                    let (level, rest) = split_level(r);
                    match level {
                        // `x/#` matches `x` itself and everything below [MQTT-4.7.1-2].
                        "#" => work.push(Work::All(node)),
                        "+" => work.extend(node.nodes().map(|c| Work::Filter(c, rest))),
                        _ => {
                            if let Some(child) = node.child(level) {
                                work.push(Work::Filter(child, rest));
                            }
                        }
                    }
                }
            }
        }
    }
}

mod cursor;
#[cfg(test)]
mod tests;
