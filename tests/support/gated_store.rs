//! A memory store whose writes can be held at a gate, for tests that need the store writer
//! stalled at a known point: which writes are held is the test's choice (`holds`), and the test
//! sees how many wait and how large each write that went through was. Each test uses part of it.
#![allow(dead_code)]

use parking_lot::{Condvar, Mutex};
use starling::storage::{MemoryStore, Op, Snapshot, Store, StoreError, StoredDelivery};

/// Holds every non-empty write `holds` picks while the gate is closed.
pub struct GatedStore {
    inner: MemoryStore,
    holds: fn(&[Op]) -> bool,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    /// Writes waiting at the closed gate.
    blocked: usize,
    /// Ops of each held-kind write that went through, in order.
    groups: Vec<usize>,
}

impl GatedStore {
    /// A store whose gate starts `closed`, holding the writes `holds` picks.
    pub fn new(closed: bool, holds: fn(&[Op]) -> bool) -> GatedStore {
        GatedStore {
            inner: MemoryStore::new(),
            holds,
            state: Mutex::new(GateState {
                closed,
                ..GateState::default()
            }),
            changed: Condvar::new(),
        }
    }

    pub fn close(&self) {
        self.state.lock().closed = true;
    }

    /// Opens the gate and waits until every held write went through, so closing it again
    /// cannot catch a write of the previous step.
    pub fn open(&self) {
        let mut st = self.state.lock();
        st.closed = false;
        self.changed.notify_all();
        while st.blocked > 0 {
            self.changed.wait(&mut st);
        }
    }

    /// Writes waiting at the gate now.
    pub fn blocked(&self) -> usize {
        self.state.lock().blocked
    }

    /// Ops of each held-kind write that went through, in order.
    pub fn groups(&self) -> Vec<usize> {
        self.state.lock().groups.clone()
    }
}

impl Store for GatedStore {
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError> {
        if !batch.is_empty() && (self.holds)(batch) {
            let mut st = self.state.lock();
            st.blocked += 1;
            while st.closed {
                self.changed.wait(&mut st);
            }
            st.blocked -= 1;
            st.groups.push(batch.len());
            self.changed.notify_all();
        }
        self.inner.write(batch, sync)
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn queue_range(
        &self,
        client_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredDelivery)>, StoreError> {
        self.inner.queue_range(client_id, from_seq, max)
    }
    fn queue_len(&self, client_id: &str) -> Result<u64, StoreError> {
        self.inner.queue_len(client_id)
    }
}
