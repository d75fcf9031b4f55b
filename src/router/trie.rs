//! TEMPORARY naive stand-in.
use crate::codec::{topic, SubscriptionOptions};
use std::sync::Arc;
#[derive(Clone, Copy, Debug, Default)]
pub enum Strategy {
    #[default]
    RoundRobin,
    Random,
}
impl From<crate::config::SharedStrategy> for Strategy {
    fn from(_: crate::config::SharedStrategy) -> Self {
        Strategy::RoundRobin
    }
}
#[derive(Clone, Debug)]
pub struct Subscription<S> {
    pub client_id: Arc<str>,
    pub handle: S,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}
pub struct Match<'a, S> {
    pub sub: &'a Subscription<S>,
    pub shared_group: Option<&'a str>,
}
pub struct SubscriptionTrie<S> {
    subs: Vec<(String, Subscription<S>)>,
}
impl<S: Clone> SubscriptionTrie<S> {
    pub fn with_strategy(_s: Strategy) -> Self {
        SubscriptionTrie { subs: Vec::new() }
    }
    pub fn subscribe(&mut self, filter: &str, sub: Subscription<S>) -> bool {
        if let Some(e) = self
            .subs
            .iter_mut()
            .find(|(f, s)| f == filter && s.client_id == sub.client_id)
        {
            e.1 = sub;
            return true;
        }
        self.subs.push((filter.to_string(), sub));
        false
    }
    pub fn unsubscribe(&mut self, filter: &str, client_id: &str) -> bool {
        let n = self.subs.len();
        self.subs
            .retain(|(f, s)| !(f == filter && &*s.client_id == client_id));
        n != self.subs.len()
    }
    pub fn matches<'a>(&'a self, t: &str, out: &mut Vec<Match<'a, S>>) {
        for (f, s) in &self.subs {
            if topic::matches(f, t) {
                out.push(Match {
                    sub: s,
                    shared_group: None,
                });
            }
        }
    }
    pub fn len(&self) -> usize {
        self.subs.len()
    }
    pub fn shared_len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
}
