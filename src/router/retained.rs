//! TEMPORARY naive stand-in.
use crate::codec::topic;
use std::collections::HashMap;
use std::sync::Arc;
#[derive(Default)]
pub struct RetainedStore<M> {
    m: HashMap<Arc<str>, M>,
}
#[allow(clippy::new_without_default)]
impl<M: Clone> RetainedStore<M> {
    pub fn new() -> Self {
        RetainedStore { m: HashMap::new() }
    }
    pub fn insert(&mut self, t: &str, msg: M) -> Option<M> {
        self.m.insert(Arc::from(t), msg)
    }
    pub fn remove(&mut self, t: &str) -> Option<M> {
        self.m.remove(t)
    }
    pub fn matches(&self, filter: &str, out: &mut Vec<(Arc<str>, M)>) {
        for (t, m) in &self.m {
            if topic::matches(filter, t) {
                out.push((t.clone(), m.clone()));
            }
        }
    }
    pub fn len(&self) -> usize {
        self.m.len()
    }
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }
}
