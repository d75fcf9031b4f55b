//! [`MemoryStore`]: every keyspace a `BTreeMap` of encoded keys and records behind one mutex.
//!
//! It stores exactly the bytes [`FjallStore`](super::FjallStore) would and applies batches
//! through the same planner, so tests written against it hold for the disk store too. Nothing
//! survives the process; `sync` is accepted and means nothing.
//!
//! Invariant: a batch is planned and applied under one lock acquisition, so readers never see
//! half a batch.

use std::collections::BTreeMap;
use std::io::Write;

use parking_lot::Mutex;

use super::early::EarlyDequeues;
use super::engine::{self, Ks, Kv, Visit, Writes};
use super::index::QueueIndex;
use super::inspect::{self, CheckReport};
use super::prepared::Prepared;
use super::{Op, Snapshot, Store, StoreError, StoredDelivery};

#[derive(Default)]
struct Maps([BTreeMap<Vec<u8>, Vec<u8>>; 9]);

impl Maps {
    fn map(&self, ks: Ks) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.0[ks.index()]
    }

    fn commit(&mut self, writes: Writes) {
        for ((ks, key), value) in writes {
            let map = &mut self.0[ks.index()];
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
    }
}

impl Kv for Maps {
    fn get(&self, ks: Ks, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map(ks).get(key).cloned())
    }

    fn scan(&self, ks: Ks, prefix: &[u8], from: &[u8], f: &mut Visit) -> Result<(), StoreError> {
        for (k, v) in self.map(ks).range(from.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn last_key(&self, ks: Ks, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let map = self.map(ks);
        let last = match prefix_end(prefix) {
            Some(end) => map.range(prefix.to_vec()..end).next_back(),
            None => map.range(prefix.to_vec()..).next_back(),
        };
        Ok(last.map(|(k, _)| k.clone()))
    }
}

/// The smallest key greater than every key starting with `prefix`; None when there is none
/// (empty prefix or all 0xFF).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
    /// Taken inside `maps`, by writes only (see [`EarlyDequeues`], [`QueueIndex`]).
    early: Mutex<(EarlyDequeues, QueueIndex)>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Decodes every record and checks references and refcounts (see [`CheckReport`]).
    pub fn check(&self) -> CheckReport {
        inspect::check(&*self.maps.lock())
    }

    /// Prints every record, human-readably, to `out`.
    pub fn dump(&self, out: &mut dyn Write) -> std::io::Result<()> {
        inspect::dump(&*self.maps.lock(), out)
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError> {
        self.write_prepared(&Prepared::new(batch.to_vec()), sync)
    }

    fn write_prepared(&self, batch: &Prepared, _sync: bool) -> Result<(), StoreError> {
        let mut maps = self.maps.lock();
        let mut state = self.early.lock();
        let (early, index) = &mut *state;
        let (writes, staged) = engine::plan(&*maps, batch, early, index)?;
        maps.commit(writes);
        index.commit(staged.clients, staged.msg_id_hw);
        Ok(())
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        engine::load(&*self.maps.lock())
    }

    fn queue_range(
        &self,
        client_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredDelivery)>, StoreError> {
        engine::queue_range(&*self.maps.lock(), client_id, from_seq, max)
    }

    fn queue_len(&self, client_id: &str) -> Result<u64, StoreError> {
        engine::queue_len(&*self.maps.lock(), client_id)
    }
}

#[cfg(test)]
impl MemoryStore {
    /// Writes raw bytes, bypassing the planner, to plant corrupt records in tests.
    pub(crate) fn put_raw(&self, ks: Ks, key: &[u8], value: &[u8]) {
        self.maps.lock().0[ks.index()].insert(key.to_vec(), value.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
