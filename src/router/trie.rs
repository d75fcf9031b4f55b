//! The subscription trie: which subscriptions a PUBLISH topic reaches.
//!
//! Owns: every subscription of every session, keyed by filter level, including `$share` groups.
//! It is generic over the subscriber handle `S` so the broker decides what a "client" is (a
//! channel sender, a session index, ...).
//!
//! Invariants:
//! - One node per filter level. Literal levels live in a `HashMap`, `+` in the `plus` slot and a
//!   trailing `#` in the `hash` leaf of the node of its parent level; so `a/#` is stored on `a`.
//! - Within one leaf a client id appears at most once among the non-shared subscriptions and at
//!   most once per shared group [MQTT-3.8.4-3]. `len`/`shared_len` count exactly those entries.
//! - No empty node survives an unsubscribe: a node without subscriptions, `#` leaf or children
//!   is removed, up to (not including) the root. Empty shared groups are removed too. Maps and
//!   lists that emptied out to a quarter of their capacity are shrunk, so the memory of a large
//!   session is given back to the allocator when it ends ([`SubscriptionTrie::node_count`]).
//! - The `$` rule [MQTT-4.7.2-1] is applied only at the root: `+` and `#` children of the root
//!   are skipped for topics starting with `$`.
//! - Matching allocates nothing beyond pushing into the caller's `Vec`: branches wait on a small
//!   inline stack (spilling to the heap only for pathological fan-out), never on the call stack.
//!   Subscribing, unsubscribing and dropping are iterative too, so a 32k-level filter cannot
//!   overflow the stack.
//! - Filters are expected to have passed [`valid_topic_filter`](crate::codec::topic::valid_topic_filter);
//!   anything else is stored without panicking (a `#` that is not last is a literal level).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::codec::topic::parse_shared;
use crate::codec::SubscriptionOptions;

/// The level maps' hasher: every PUBLISH hashes each level of its topic once, and std's
/// SipHash-1-3 cost ~100 instructions per short level, a fifth of the whole trie match.
/// foldhash's is keyed too (a per-process random seed enters every multiply), so clients
/// cannot compute colliding level names offline; it is not a MAC, which a map's hash of
/// short client-chosen strings does not need.
type LevelHash = foldhash::fast::RandomState;

/// One subscription as stored.
#[derive(Clone, Debug)]
pub struct Subscription<S> {
    /// The owning session; the key for replace and unsubscribe [MQTT-3.8.4-3].
    pub client_id: Arc<str>,
    /// Whatever the broker needs to deliver to this session.
    pub handle: S,
    /// QoS, No Local, Retain As Published, Retain Handling, applied by the caller on delivery.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier, echoed in matching PUBLISHes [MQTT-3.3.4-3].
    pub id: Option<u32>,
}

/// What a topic matched: a non-shared subscription, or the member chosen from a shared group.
/// Borrowed from the trie so producing one costs nothing.
pub struct Match<'a, S> {
    /// The subscription to deliver to.
    pub sub: &'a Subscription<S>,
    /// The share name when `sub` was picked from a `$share` group; the caller needs it because a
    /// shared delivery ignores No Local differently and is never merged with the client's other
    /// subscriptions.
    pub shared_group: Option<&'a str>,
}

impl<S> Clone for Match<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Match<'_, S> {}

impl<S: std::fmt::Debug> std::fmt::Debug for Match<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Match")
            .field("sub", self.sub)
            .field("shared_group", &self.shared_group)
            .finish()
    }
}

/// How a shared group picks the one member that receives a message; spec 4.8.2 leaves the
/// choice to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SharedStrategy {
    /// Members in turn, per group: even load when messages are alike.
    #[default]
    RoundRobin,
    /// A uniformly random member: no correlation between a group's turn and a publisher's rhythm.
    Random,
}

/// Subscriptions of one filter, keyed by client id. A `Vec` keeps matching a linear scan; a hash
/// index is added once the list is long enough that finding a client for replace/unsubscribe
/// would be slow (100k clients on `broadcast/#`).
struct SubList<S> {
    items: Vec<Subscription<S>>,
    /// `client_id -> position in items`, present iff `items.len() > INDEX_THRESHOLD` was ever
    /// reached and the list is not empty since.
    index: Option<HashMap<Arc<str>, usize>>,
}

const INDEX_THRESHOLD: usize = 16;

impl<S> SubList<S> {
    const fn new() -> Self {
        SubList {
            items: Vec::new(),
            index: None,
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, client_id: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(client_id).copied(),
            None => self.items.iter().position(|s| &*s.client_id == client_id),
        }
    }

    /// Inserts or replaces by client id; true when replaced.
    fn upsert(&mut self, sub: Subscription<S>) -> bool {
        if let Some(slot) = self
            .position(&sub.client_id)
            .and_then(|i| self.items.get_mut(i))
        {
            *slot = sub;
            return true;
        }
        if let Some(ix) = &mut self.index {
            ix.insert(sub.client_id.clone(), self.items.len());
        }
        self.items.push(sub);
        if self.index.is_none() && self.items.len() > INDEX_THRESHOLD {
            let ix = self.items.iter().enumerate();
            self.index = Some(ix.map(|(i, s)| (s.client_id.clone(), i)).collect());
        }
        false
    }

    /// Removes by client id; true when it was there. Order is not kept (swap-remove).
    fn remove(&mut self, client_id: &str) -> bool {
        let Some(i) = self.position(client_id).filter(|&i| i < self.items.len()) else {
            return false;
        };
        self.items.swap_remove(i);
        if let Some(ix) = &mut self.index {
            ix.remove(client_id);
            if let Some(moved) = self.items.get(i) {
                ix.insert(moved.client_id.clone(), i);
            }
        }
        if self.items.is_empty() {
            *self = SubList::new();
        } else if self.items.len() < self.items.capacity() / 4 {
            self.items.shrink_to(self.items.len() * 2);
            if let Some(ix) = &mut self.index {
                shrink_map(ix);
            }
        }
        true
    }
}

/// Gives memory back once a map is at most a quarter full, keeping room to double, so a
/// level that once had 250k children does not keep their table after they are gone;
/// alternating insert and remove at the boundary costs amortised O(1).
fn shrink_map<K: Eq + Hash, V, H: BuildHasher + Default>(m: &mut HashMap<K, V, H>) {
    if m.is_empty() {
        *m = HashMap::default();
    } else if m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

/// A `$share/{name}/{filter}` group: members subscribed to that same name and filter.
struct SharedGroup<S> {
    name: Box<str>,
    members: SubList<S>,
    /// Round-robin cursor; atomic so matching works through `&self`.
    next: AtomicUsize,
}

/// The subscriptions that end at one filter.
struct Leaf<S> {
    subs: SubList<S>,
    shared: Vec<SharedGroup<S>>,
}

impl<S> Leaf<S> {
    const fn new() -> Self {
        Leaf {
            subs: SubList::new(),
            shared: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.shared.is_empty()
    }
}

/// One filter level. See the module invariants.
struct Node<S> {
    /// Keyed by the level; hashed with [`LevelHash`], once per level of every PUBLISH.
    children: HashMap<Box<str>, Node<S>, LevelHash>,
    plus: Option<Box<Node<S>>>,
    /// Subscriptions on `<this level>/#`.
    hash: Option<Box<Leaf<S>>>,
    /// Subscriptions whose filter ends at this level.
    leaf: Leaf<S>,
}

impl<S> Node<S> {
    fn new() -> Self {
        Node {
            children: HashMap::default(),
            plus: None,
            hash: None,
            leaf: Leaf::new(),
        }
    }

    /// Number of child nodes (literal and `+`).
    fn fanout(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// Nothing stored here except possibly children.
    fn holds_nothing(&self) -> bool {
        self.leaf.is_empty() && self.hash.is_none()
    }

    fn step(&self, level: &str) -> Option<&Node<S>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn step_mut(&mut self, level: &str) -> Option<&mut Node<S>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn step_or_insert(&mut self, level: &str) -> &mut Node<S> {
        if level == "+" {
            self.plus.get_or_insert_with(|| Box::new(Node::new()))
        } else {
            self.children.entry(level.into()).or_insert_with(Node::new)
        }
    }
}

impl<S> Drop for Node<S> {
    /// Iterative, so dropping a very deep chain cannot overflow the stack.
    fn drop(&mut self) {
        if self.fanout() == 0 {
            return;
        }
        let mut stack: Vec<Node<S>> = self.children.drain().map(|(_, n)| n).collect();
        stack.extend(self.plus.take().map(|b| *b));
        while let Some(mut n) = stack.pop() {
            stack.extend(n.children.drain().map(|(_, c)| c));
            stack.extend(n.plus.take().map(|b| *b));
        }
    }
}

/// A parsed filter: optional share name, the levels before a trailing `#` (`None`: the root)
/// and whether there is such a `#`.
struct FilterPath<'f> {
    group: Option<&'f str>,
    path: Option<&'f str>,
    hash: bool,
}

impl<'f> FilterPath<'f> {
    fn parse(filter: &'f str) -> Self {
        let (group, plain) = match parse_shared(filter) {
            Some((g, f)) => (Some(g), f),
            None => (None, filter),
        };
        let (path, hash) = if plain == "#" {
            (None, true)
        } else if let Some(p) = plain.strip_suffix("/#") {
            (Some(p), true)
        } else {
            (Some(plain), false)
        };
        FilterPath { group, path, hash }
    }

    fn levels(&self) -> impl Iterator<Item = &'f str> {
        self.path.into_iter().flat_map(|p| p.split('/'))
    }
}

/// Splits off the first level; `None` rest means it was the last one.
/// A plain byte scan: levels are short, where `split_once`'s searcher and `memchr` cost more to
/// set up than the scan itself (they were ~2% of the broker's instructions per message).
fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.bytes().position(|b| b == b'/') {
        // `/` is ASCII, so both sides of it are character boundaries.
        Some(i) => (s.get(..i).unwrap_or(s), s.get(i + 1..)),
        None => (s, None),
    }
}

/// Branches still to visit while matching: inline first, so common fan-out does not allocate.
struct Pending<T: Copy> {
    inline: [Option<T>; PENDING_INLINE],
    len: usize,
    spill: Vec<T>,
}

const PENDING_INLINE: usize = 32;

impl<T: Copy> Pending<T> {
    fn new() -> Self {
        Pending {
            inline: [None; PENDING_INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, t: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(t);
                self.len += 1;
            }
            None => self.spill.push(t),
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(t) = self.spill.pop() {
            return Some(t);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get_mut(self.len).and_then(Option::take)
    }
}

/// Every subscription of the broker, for routing PUBLISH topics to sessions.
pub struct SubscriptionTrie<S> {
    root: Node<S>,
    len: usize,
    shared_len: usize,
    strategy: SharedStrategy,
    /// SplitMix64 state for [`SharedStrategy::Random`]; advanced with `fetch_add`, so concurrent
    /// matchers never see the same number.
    rng: AtomicU64,
    /// The shared groups that have members, as `$share/<group>/<filter>`: a cluster node tells
    /// the others which groups it serves. Only groups are listed, not members.
    groups: std::collections::BTreeSet<Box<str>>,
    /// Moves on each change of `groups`.
    groups_version: u64,
}

impl<S> Default for SubscriptionTrie<S> {
    fn default() -> Self {
        Self::new()
    }
}

const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl<S> SubscriptionTrie<S> {
    /// An empty trie whose shared groups pick members round robin.
    pub fn new() -> Self {
        Self::new_with_strategy(SharedStrategy::RoundRobin)
    }

    /// An empty trie whose shared groups pick members with `strategy`.
    pub fn new_with_strategy(strategy: SharedStrategy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(SPLITMIX_GAMMA);
        SubscriptionTrie {
            root: Node::new(),
            len: 0,
            shared_len: 0,
            strategy,
            rng: AtomicU64::new(seed),
            groups: std::collections::BTreeSet::new(),
            groups_version: 0,
        }
    }

    /// The shared groups with at least one member (`$share/<group>/<filter>`), and a version
    /// that changes whenever that list does.
    pub fn shared_groups(&self) -> (u64, Vec<String>) {
        (
            self.groups_version,
            self.groups.iter().map(|g| g.to_string()).collect(),
        )
    }

    /// The shared-group member selection in force.
    pub fn strategy(&self) -> SharedStrategy {
        self.strategy
    }

    /// Changes the shared-group member selection, e.g. after a config reload.
    pub fn set_strategy(&mut self, strategy: SharedStrategy) {
        self.strategy = strategy;
    }

    /// Adds or replaces (same client id + same filter string => replace) [MQTT-3.8.4-3].
    /// `filter` may be `$share/g/f`: then it is a member of group g on filter f. Returns true when
    /// it replaced an existing one, so the caller can apply Retain Handling 1 (5.0 [MQTT-3.3.1-10]).
    pub fn subscribe(&mut self, filter: &str, sub: Subscription<S>) -> bool {
        let fp = FilterPath::parse(filter);
        let mut node = &mut self.root;
        for level in fp.levels() {
            node = node.step_or_insert(level);
        }
        let leaf = if fp.hash {
            node.hash.get_or_insert_with(|| Box::new(Leaf::new()))
        } else {
            &mut node.leaf
        };
        let replaced = match fp.group {
            None => leaf.subs.upsert(sub),
            Some(name) => {
                let pos = leaf.shared.iter().position(|g| &*g.name == name);
                let group = match pos.and_then(|i| leaf.shared.get_mut(i)) {
                    Some(g) => g,
                    None => {
                        leaf.shared.push(SharedGroup {
                            name: name.into(),
                            members: SubList::new(),
                            next: AtomicUsize::new(0),
                        });
                        self.groups.insert(filter.into());
                        self.groups_version += 1;
                        let last = leaf.shared.len() - 1;
                        &mut leaf.shared[last]
                    }
                };
                group.members.upsert(sub)
            }
        };
        if !replaced {
            self.len += 1;
            self.shared_len += usize::from(fp.group.is_some());
        }
        replaced
    }

    /// Removes the client's subscription on exactly this filter string (shared included), and
    /// any nodes left empty. Returns whether one existed (UNSUBACK 0x11 otherwise).
    pub fn unsubscribe(&mut self, filter: &str, client_id: &str) -> bool {
        let fp = FilterPath::parse(filter);
        let mut node = &mut self.root;
        for level in fp.levels() {
            match node.step_mut(level) {
                Some(n) => node = n,
                None => return false,
            }
        }
        let removed = {
            let leaf = if fp.hash {
                match node.hash.as_deref_mut() {
                    Some(l) => l,
                    None => return false,
                }
            } else {
                &mut node.leaf
            };
            let removed = match fp.group {
                None => leaf.subs.remove(client_id),
                Some(name) => match leaf.shared.iter().position(|g| &*g.name == name) {
                    Some(i) => {
                        let removed = leaf.shared[i].members.remove(client_id);
                        if leaf.shared[i].members.is_empty() {
                            leaf.shared.swap_remove(i);
                            self.groups.remove(filter);
                            self.groups_version += 1;
                            if leaf.shared.len() < leaf.shared.capacity() / 4 {
                                leaf.shared.shrink_to(leaf.shared.len() * 2);
                            }
                        }
                        removed
                    }
                    None => false,
                },
            };
            removed
        };
        if !removed {
            return false;
        }
        if fp.hash && node.hash.as_ref().is_some_and(|l| l.is_empty()) {
            node.hash = None;
        }
        self.len -= 1;
        self.shared_len -= usize::from(fp.group.is_some());
        self.prune(fp.path);
        true
    }

    /// Removes the empty tail of `path`: the topmost node from which everything down to the end
    /// of the path holds nothing but the next node on the path.
    fn prune(&mut self, path: Option<&str>) {
        let Some(path) = path else { return };
        // Pass 1 (shared borrow): find the depth where the removable run starts.
        let mut node = &self.root;
        let mut cut: Option<usize> = None;
        for (depth, level) in path.split('/').enumerate() {
            let Some(child) = node.step(level) else {
                return;
            };
            if child.holds_nothing() && child.fanout() <= 1 {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        // The last node must be completely empty for anything to go.
        let Some(cut) = cut.filter(|_| node.fanout() == 0) else {
            return;
        };
        // Pass 2: detach the run from its parent; `Drop` frees it iteratively.
        let mut parent = &mut self.root;
        let mut levels = path.split('/');
        for level in levels.by_ref().take(cut) {
            match parent.step_mut(level) {
                Some(n) => parent = n,
                None => return,
            }
        }
        match levels.next() {
            Some("+") => parent.plus = None,
            Some(level) => {
                parent.children.remove(level);
                shrink_map(&mut parent.children);
            }
            None => {}
        }
    }

    /// Removes the client's subscriptions on each of `filters` (e.g. every filter its session
    /// holds, when the session ends). Returns how many existed.
    pub fn remove_client<'f>(
        &mut self,
        client_id: &str,
        filters: impl IntoIterator<Item = &'f str>,
    ) -> usize {
        filters
            .into_iter()
            .filter(|f| self.unsubscribe(f, client_id))
            .count()
    }

    /// Every subscription matching `topic`: all non-shared subscriptions (one client's
    /// overlapping subscriptions are all returned; the caller merges them), plus for each
    /// matching shared group exactly one member chosen by the [`SharedStrategy`]. Pushes into
    /// `out`, which the caller reuses; nothing else is allocated.
    pub fn matches<'a>(&'a self, topic: &str, out: &mut Vec<Match<'a, S>>) {
        let _ = self.matches_with(topic, out, &|_| true);
    }

    /// As [`Self::matches`], but a shared group skips members for which `available` is false
    /// (e.g. disconnected clients) when any member is available, so messages go to members that
    /// can take them now rather than piling up in an offline member's queue.
    /// `out` is any collection: the broker's routing collects into a small vector on the stack.
    ///
    /// Returns how many filters contributed non-shared subscriptions. A client has at most one
    /// subscription per filter, so with one (or none) no client appears twice among them and
    /// the caller has nothing to merge.
    pub fn matches_with<'a>(
        &'a self,
        topic: &str,
        out: &mut impl Extend<Match<'a, S>>,
        available: &dyn Fn(&S) -> bool,
    ) -> usize {
        let mut filters = 0;
        let root = &self.root;
        let dollar = topic.starts_with('$');
        let (level, rest) = split_level(topic);
        let mut pending: Pending<(&'a Node<S>, Option<&str>)> = Pending::new();
        if !dollar {
            // [MQTT-4.7.2-1]: wildcards in the first level do not match `$` topics.
            if let Some(h) = root.hash.as_deref() {
                filters += self.emit(h, out, available);
            }
            if let Some(p) = root.plus.as_deref() {
                pending.push((p, rest));
            }
        }
        if let Some(c) = root.children.get(level) {
            pending.push((c, rest));
        }
        while let Some((mut node, mut rest)) = pending.pop() {
            loop {
                // `x/#` matches `x` itself and everything below [MQTT-4.7.1-2].
                if let Some(h) = node.hash.as_deref() {
                    filters += self.emit(h, out, available);
                }
                let Some(r) = rest else {
                    filters += self.emit(&node.leaf, out, available);
                    break;
                };
                let (level, next) = split_level(r);
                match (node.children.get(level), node.plus.as_deref()) {
                    (Some(lit), Some(plus)) => {
                        pending.push((plus, next));
                        node = lit;
                    }
                    (Some(n), None) | (None, Some(n)) => node = n,
                    (None, None) => break,
                }
                rest = next;
            }
        }
        filters
    }

    /// Emits `leaf`'s matches; 1 when it has non-shared subscriptions, else 0.
    fn emit<'a>(
        &'a self,
        leaf: &'a Leaf<S>,
        out: &mut impl Extend<Match<'a, S>>,
        available: &dyn Fn(&S) -> bool,
    ) -> usize {
        out.extend(leaf.subs.items.iter().map(|sub| Match {
            sub,
            shared_group: None,
        }));
        for g in &leaf.shared {
            if let Some(sub) = self.pick(g, |s| available(&s.handle)) {
                out.extend(std::iter::once(Match {
                    sub,
                    shared_group: Some(&g.name),
                }));
            }
        }
        usize::from(!leaf.subs.items.is_empty())
    }

    /// The member of `g` that gets this message: the strategy's choice, or the next member
    /// after it that `accept`s; the strategy's choice when none does.
    fn pick<'a>(
        &self,
        g: &'a SharedGroup<S>,
        accept: impl Fn(&Subscription<S>) -> bool,
    ) -> Option<&'a Subscription<S>> {
        let n = g.members.len();
        if n == 0 {
            return None;
        }
        let i = match self.strategy {
            SharedStrategy::RoundRobin => g.next.fetch_add(1, Ordering::Relaxed) % n,
            // Multiply-shift maps the 64-bit number onto 0..n without a division.
            SharedStrategy::Random => ((u128::from(self.next_random()) * n as u128) >> 64) as usize,
        };
        (0..n)
            .filter_map(|k| g.members.items.get((i + k) % n))
            .find(|s| accept(s))
            .or_else(|| g.members.items.get(i))
    }

    /// A member of the shared subscription `share_filter` (`$share/g/f`) that `accept`s, chosen
    /// by the strategy; None when there is none. Used to hand a departing member's
    /// unacknowledged messages to another member (MQTT 5.0 4.8.2, non-normative).
    pub fn pick_shared(
        &self,
        share_filter: &str,
        accept: impl Fn(&Subscription<S>) -> bool,
    ) -> Option<&Subscription<S>> {
        let fp = FilterPath::parse(share_filter);
        let name = fp.group?;
        let mut node = &self.root;
        for level in fp.levels() {
            node = node.step(level)?;
        }
        let leaf = if fp.hash {
            node.hash.as_deref()?
        } else {
            &node.leaf
        };
        let g = leaf.shared.iter().find(|g| &*g.name == name)?;
        self.pick(g, &accept).filter(|s| accept(s))
    }

    /// SplitMix64: one `fetch_add` per number, good enough spread for load balancing.
    fn next_random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(SPLITMIX_GAMMA, Ordering::Relaxed)
            .wrapping_add(SPLITMIX_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Number of subscriptions, shared ones included (for `$SYS` and limits).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of shared subscriptions (group memberships).
    pub fn shared_len(&self) -> usize {
        self.shared_len
    }

    /// Number of filter-level nodes below the root (literal and `+` levels; a `#` leaf and
    /// shared groups live in their parent's node). Zero once every subscription is gone, since
    /// empty branches are pruned. Walks the whole trie, O(nodes): for tests and diagnostics,
    /// not for a hot path.
    pub fn node_count(&self) -> usize {
        let mut stack: Vec<&Node<S>> = vec![&self.root];
        let mut n = 0usize;
        while let Some(node) = stack.pop() {
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
            n += 1;
        }
        n - 1
    }

    /// Whether there are no subscriptions at all; a PUBLISH can then skip matching.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests;
