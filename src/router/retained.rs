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
//!   value carries that topic as an `Arc<str>` so matches hand it out without building strings.
//! - No node survives that has neither a value nor children (up to, not including, the root).
//! - `len` is the number of stored values.
//! - Filters whose first level is `+` or `#` skip root children starting with `$` [MQTT-4.7.2-1].
//! - Insert, remove, match, iteration and drop are iterative: a topic with 30k levels cannot
//!   overflow the stack.

use std::collections::BTreeMap;
use std::sync::Arc;

/// One topic level.
struct RNode<M> {
    children: BTreeMap<Box<str>, RNode<M>>,
    value: Option<(Arc<str>, M)>,
}

impl<M> RNode<M> {
    fn new() -> Self {
        RNode {
            children: BTreeMap::new(),
            value: None,
        }
    }
}

impl<M> Drop for RNode<M> {
    /// Iterative, so dropping a very deep chain cannot overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<RNode<M>> = std::mem::take(&mut self.children).into_values().collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(std::mem::take(&mut n.children).into_values());
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
/// representation (typically a cheaply clonable `Publish` with `Bytes` payload).
pub struct RetainedStore<M> {
    root: RNode<M>,
    len: usize,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> RetainedStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        RetainedStore {
            root: RNode::new(),
            len: 0,
        }
    }

    /// Store or replace the retained message of `topic` [MQTT-3.3.1-5]; returns the previous
    /// value. Replacing an existing topic allocates nothing.
    pub fn insert(&mut self, topic: &str, msg: M) -> Option<M> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), RNode::new());
            }
            // Present: inserted just above. `?` only keeps this panic-free.
            node = node.children.get_mut(level)?;
        }
        match &mut node.value {
            Some((_, old)) => Some(std::mem::replace(old, msg)),
            None => {
                node.value = Some((topic.into(), msg));
                self.len += 1;
                None
            }
        }
    }

    /// Clear the retained message of `topic` (a retained PUBLISH with an empty payload)
    /// (3.1.1 [MQTT-3.3.1-10] [MQTT-3.3.1-11], 5.0 [MQTT-3.3.1-6] [MQTT-3.3.1-7]); returns the
    /// removed value and prunes empty nodes.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let (_, msg) = node.value.take()?;
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
            let Some(child) = node.children.get(level) else {
                return;
            };
            if child.value.is_none() && child.children.len() <= 1 {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let Some(cut) = cut.filter(|_| node.children.is_empty()) else {
            return;
        };
        let mut parent = &mut self.root;
        let mut levels = topic.split('/');
        for level in levels.by_ref().take(cut) {
            match parent.children.get_mut(level) {
                Some(n) => parent = n,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            // Dropped iteratively by `RNode::drop`.
            parent.children.remove(level);
        }
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref().map(|(_, m)| m)
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
                stack.extend(node.children.values());
                if let Some((topic, m)) = &node.value {
                    return Some((&**topic, m));
                }
            }
            current = Some(stack.pop()?);
        })
    }
}

impl<M: Clone> RetainedStore<M> {
    /// Every retained message whose topic matches `filter` (a plain filter; the caller strips
    /// `$share`), honouring the `$` rule [MQTT-4.7.2-1]. Pushes `(topic, message)` pairs; only
    /// branches the filter can match are visited.
    pub fn matches(&self, filter: &str, out: &mut Vec<(Arc<str>, M)>) {
        let skip_dollar = filter.starts_with('+') || filter.starts_with('#');
        let mut work: Vec<Work<'_, '_, M>> = Vec::new();
        // The root is handled here so the `$` rule needs no flag on every work item.
        let (level, rest) = split_level(filter);
        match level {
            "#" => {
                // The root itself never holds a value: every topic has at least one level.
                for (k, child) in &self.root.children {
                    if !k.starts_with('$') {
                        work.push(Work::All(child));
                    }
                }
            }
            "+" => {
                for (k, child) in &self.root.children {
                    if !(skip_dollar && k.starts_with('$')) {
                        work.push(Work::Filter(child, rest));
                    }
                }
            }
            _ => {
                if let Some(child) = self.root.children.get(level) {
                    work.push(Work::Filter(child, rest));
                }
            }
        }
        while let Some(item) = work.pop() {
            match item {
                Work::All(node) => {
                    if let Some((t, m)) = &node.value {
                        out.push((t.clone(), m.clone()));
                    }
                    work.extend(node.children.values().map(Work::All));
                }
                Work::Filter(node, None) => {
                    if let Some((t, m)) = &node.value {
                        out.push((t.clone(), m.clone()));
                    }
                }
                Work::Filter(node, Some(r)) => {
                    let (level, rest) = split_level(r);
                    match level {
                        // `x/#` matches `x` itself and everything below [MQTT-4.7.1-2].
                        "#" => work.push(Work::All(node)),
                        "+" => work.extend(node.children.values().map(|c| Work::Filter(c, rest))),
                        _ => {
                            if let Some(child) = node.children.get(level) {
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
