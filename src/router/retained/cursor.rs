//! Reading the retained messages a filter matches in a fixed order, a batch at a time, each
//! batch resuming after the last topic of the one before. A subscriber is streamed a large
//! retained set this way: between batches nothing is held but the last topic read.
//!
//! The order is the trie's pre-order with children in key order: topics compare level by level
//! (bytewise within a level), and a topic comes before the topics below it. Resuming costs the
//! depth of the cursor's path plus the batch, however many topics precede it.

use super::{split_level, Level, RNode, RetainedStore, RetainedValue};
use std::cmp::Ordering;
use std::collections::btree_map;
use std::ops::Bound;

/// How the remaining filter treats a node.
#[derive(Clone, Copy)]
enum Pat<'f> {
    /// The node matches, and so does everything below it (a `#` was reached).
    All,
    /// The node matches and nothing below it does (the filter ended on it).
    Leaf,
    /// The node does not match; these filter levels remain for its children.
    Levels(&'f str),
}

fn pattern(rest: Option<&str>) -> Pat<'_> {
    match rest {
        None => Pat::Leaf,
        // `x/#` matches `x` itself and everything below [MQTT-4.7.1-2].
        Some("#") => Pat::All,
        Some(r) => Pat::Levels(r),
    }
}

/// The children of one node still to be visited.
struct Frame<'a, 'f, 'c, M> {
    children: btree_map::Range<'a, Level, RNode<M>>,
    /// How each of these children is matched.
    pat: Pat<'f>,
    /// Depth of these children (the root's children are at 0).
    depth: usize,
    /// When the node is a proper prefix of the cursor: the cursor's level at `depth`. Children
    /// before it were read by earlier batches; that one is on the cursor's path.
    on_path: Option<&'c str>,
    /// The root's children under a filter starting with a wildcard skip `$` [MQTT-4.7.2-1].
    skip_dollar: bool,
}

/// The frame for `node`'s children when `node` is matched with `pat`; None when no child can
/// match.
fn frame<'a, 'f, 'c, M>(
    node: &'a RNode<M>,
    pat: Pat<'f>,
    depth: usize,
    on_path: Option<&'c str>,
    skip_dollar: bool,
) -> Option<Frame<'a, 'f, 'c, M>> {
    let kids = node.children.as_deref().filter(|c| !c.is_empty())?;
    let from = on_path.map_or(Bound::Unbounded, Bound::Included);
    let all = || kids.range::<str, _>((from, Bound::Unbounded));
    let (children, pat) = match pat {
        Pat::Leaf => return None,
        Pat::All => (all(), Pat::All),
        Pat::Levels(r) => match split_level(r) {
            // Only the root gets here (`#` as the whole filter): deeper ones became `All`.
            ("#", _) => (all(), Pat::All),
            ("+", rest) => (all(), pattern(rest)),
            (level, rest) => (
                kids.range::<str, _>((Bound::Included(level), Bound::Included(level))),
                pattern(rest),
            ),
        },
    };
    Some(Frame {
        children,
        pat,
        depth,
        on_path,
        skip_dollar,
    })
}

impl<M: RetainedValue + Clone> RetainedStore<M> {
    /// Appends to `out` up to `max` retained messages whose topic matches `filter` (a plain
    /// filter, `$` rule honoured [MQTT-4.7.2-1]) and comes after the topic `after` in the
    /// store's order (from the first when None). Fewer than `max` means no more match now.
    /// Topics added or removed between batches are seen or skipped as the cursor reaches them;
    /// none is read twice, since the cursor only moves forward.
    pub fn matches_after(&self, filter: &str, after: Option<&str>, max: usize, out: &mut Vec<M>) {
        let cursor: Vec<&str> = after.map(|a| a.split('/').collect()).unwrap_or_default();
        let skip_dollar = filter.starts_with('+') || filter.starts_with('#');
        let start = out.len();
        let mut stack: Vec<Frame<'_, '_, '_, M>> = Vec::new();
        stack.extend(frame(
            &self.root,
            Pat::Levels(filter),
            0,
            cursor.first().copied(),
            skip_dollar,
        ));
        while out.len() - start < max {
            let Some(top) = stack.last_mut() else {
                break;
            };
            let Some((key, child)) = top.children.next() else {
                stack.pop();
                continue;
            };
            let key = key.as_str();
            if top.skip_dollar && key.starts_with('$') {
                continue;
            }
            // On the path: a prefix of the cursor, or the cursor itself; read already.
            let on_path = match top.on_path.map(|k| key.cmp(k)) {
                Some(Ordering::Less) => continue,
                Some(Ordering::Equal) => true,
                _ => false,
            };
            let (pat, depth) = (top.pat, top.depth);
            if !on_path && matches!(pat, Pat::All | Pat::Leaf) {
                out.extend(child.value.clone());
            }
            let next = if on_path {
                cursor.get(depth + 1).copied()
            } else {
                None
            };
            stack.extend(frame(child, pat, depth + 1, next, false));
        }
    }
}
