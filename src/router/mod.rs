//! Routing state of the broker: which sessions a PUBLISH reaches and which retained messages a
//! new subscription receives.
//!
//! Owns two plain data structures, both level tries with no I/O, no locking and no knowledge of
//! sessions beyond a client id and an opaque handle:
//! - [`SubscriptionTrie`]: every subscription, shared (`$share/{group}/{filter}`) ones included.
//! - [`RetainedStore`]: the last retained message of each topic.
//!
//! Invariants: both expect filters and topic names already checked with
//! [`crate::codec::topic`]; neither panics on anything else. Matching never recurses, so depth is
//! bounded only by the 65535-byte topic limit. Callers wrap them in whatever lock they choose;
//! matching takes `&self` (shared groups advance an atomic counter).

pub mod retained;
pub mod trie;

pub use retained::{RetainedStore, RetainedValue};
pub use trie::{Match, SharedStrategy, Subscription, SubscriptionTrie};
