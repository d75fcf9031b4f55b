//! [`FjallStore`]: the on-disk store, one fjall database with one keyspace per record kind.
//!
//! Layout (all keys big-endian, see `encoding`):
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `meta` | `format_version` | u32 [`FORMAT_VERSION`] |
//! | `sessions` | client id | session record |
//! | `subs` | len‖client‖filter | options, subscription id |
//! | `meta` | `msg_id_hw` | u64 highest message id written |
//! | `meta` | `mark/<name>` | a component's mark, opaque here ([`Op::PutMark`](super::Op::PutMark)) |
//! | `queue` | len‖client‖seq u64 | message id, QoS, retain, subscription ids, inline message |
//! | `msgs` | message id u64 | shared message (topic, payload, properties, expiry, publisher) |
//! | `msg_refs` | message id u64 | number of queue entries naming it |
//! | `inflight` | len‖client‖packet id u16 | stage, seq; or (format 3) stage, send order, the message |
//! | `qos2_in` | len‖client‖packet id u16 | optional message |
//! | `retained` | topic | message |
//!
//! Invariants:
//! - Writes are serialised by `write_lock`; a batch is planned (reads) and committed as one
//!   fjall `OwnedWriteBatch` under it, so it is atomic across keyspaces and across a crash.
//! - `queue_range` and `queue_len`, which run while the writer commits, read through one fjall
//!   snapshot (`SnapshotKv`): they see each batch whole or not at all.
//! - Every commit is flushed to the OS (fjall's default), so a process crash loses nothing that
//!   `write` returned for; `sync` adds an fdatasync of the journal (`PersistMode::SyncData`).
//! - After a failed commit or fsync the store is poisoned: every later `write` fails with
//!   [`StoreError::Poisoned`]. Reads keep working.
//! - Memory and descriptors are bounded: block cache `cache_size`, at most `max_open_files`
//!   cached table files, 8 MiB of memtable per keyspace.
//! - What a restart replays is bounded by one journal: fjall reads every journal still on
//!   disk at open (about 30 ms per MB here) and seals the active one only past 64 MB; a write
//!   that finds a newly sealed journal flushes every memtable, so the journal is deleted
//!   rather than kept by a rarely written keyspace (`release_sealed_journals`).

use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fjall::{Database, Iter, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::Mutex;

use super::early::EarlyDequeues;
use super::encoding as enc;
use super::engine::{self, Ks, Kv, Visit, META_FORMAT_VERSION};
use super::index::QueueIndex;
use super::inspect::{self, CheckReport};
use super::memory::prefix_end;
use super::prepared::Prepared;
use super::{
    Damage, Op, OpenError, PoisonCause, Snapshot, Store, StoreError, StoredDelivery, FORMAT_VERSION,
};

/// Sealed journals kept at most before fjall itself flushes the keyspaces that keep them:
/// fjall's minimum, behind `release_sealed_journals`. Every journal left on disk is replayed at
/// the next start; at 128 MiB a busy queue kept two or three sealed journals of 64 MB beside
/// the active one, and a SIGKILL restart took 4 to 8 s instead of 2.
const MAX_JOURNALING: u64 = 64 * 1024 * 1024;

/// Tuning of a [`FjallStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FjallOptions {
    /// Block cache in bytes. Default 32 MiB.
    pub cache_size: u64,
    /// Table files kept open at most (at least 10). Default 256, a small share of the process's
    /// descriptors, which belong to connections.
    pub max_open_files: usize,
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            cache_size: 32 * 1024 * 1024,
            max_open_files: 256,
        }
    }
}

/// The on-disk store.
pub struct FjallStore {
    db: Database,
    /// Indexed by [`Ks::index`].
    keyspaces: Vec<Keyspace>,
    dir: PathBuf,
    /// Serialises writes; holds the dequeues that arrived before their enqueue
    /// ([`EarlyDequeues`]) and what is known of the queues ([`QueueIndex`]), which only
    /// writes use.
    write_lock: Mutex<(EarlyDequeues, QueueIndex)>,
    /// The failure that poisoned the store, if any.
    poisoned: Mutex<Option<Arc<StoreError>>>,
    /// fjall's journal count when a write last looked (see `release_sealed_journals`).
    journals_seen: AtomicUsize,
}

/// The path a store error names.
fn path(dir: &Path) -> PathBuf {
    dir.to_path_buf()
}

impl FjallStore {
    /// Opens (creating if needed) the store in `dir`. Errors say what is wrong and how to move
    /// the store aside.
    pub fn open(dir: &Path, opts: &FjallOptions) -> Result<FjallStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return super::access::not_writable(dir, e.to_string());
            }
            OpenError::CreateDir {
                dir: path(dir),
                cause: Arc::new(e),
            }
        })?;
        Self::open_dir(dir, opts)
    }

    /// Opens an existing store only (for `starling store check|dump`): a missing or empty
    /// directory is an error rather than a new store.
    pub fn open_existing(dir: &Path, opts: &FjallOptions) -> Result<FjallStore, StoreError> {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| OpenError::Missing {
                dir: path(dir),
                cause: Arc::new(e),
            })?
            .next()
            .is_none();
        if empty {
            return Err(OpenError::Empty { dir: path(dir) }.into());
        }
        Self::open_dir(dir, opts)
    }

    fn open_dir(dir: &Path, opts: &FjallOptions) -> Result<FjallStore, StoreError> {
        let fail = |problem: Damage| -> StoreError {
            let denied = match &problem {
                Damage::Engine(e) | Damage::Keyspace { cause: e, .. } => {
                    super::access::permission_error(&**e)
                }
                _ => None,
            };
            if let Some(cause) = denied {
                return super::access::not_writable(dir, cause).into();
            }
            OpenError::Damaged {
                dir: path(dir),
                problem,
            }
            .into()
        };
        let builder = Database::builder(dir)
            .cache_size(opts.cache_size)
            .max_cached_files(Some(opts.max_open_files.max(10)))
            .max_journaling_size(MAX_JOURNALING);
        let started = std::time::Instant::now();
        // fjall asserts on some malformed metadata; a damaged store must yield an error, not
        // take the broker down.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.open()));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(fjall::Error::Locked)) => return Err(OpenError::InUse { dir: path(dir) }.into()),
            Ok(Err(e)) => return Err(fail(e.into())),
            Err(_) => return Err(fail(Damage::Recovery)),
        };
        let mut keyspaces = Vec::with_capacity(Ks::ALL.len());
        for ks in Ks::ALL {
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                db.keyspace(ks.name(), || {
                    KeyspaceCreateOptions::default().max_memtable_size(8 * 1024 * 1024)
                })
            }));
            match opened {
                Ok(Ok(k)) => keyspaces.push(k),
                Ok(Err(e)) => {
                    return Err(fail(Damage::Keyspace {
                        keyspace: ks.name(),
                        cause: Arc::new(e),
                    }))
                }
                Err(_) => {
                    return Err(fail(Damage::KeyspaceRecovery {
                        keyspace: ks.name(),
                    }))
                }
            }
        }
        // What the open replayed: journals still on disk after it (all of them, after a crash).
        let journals = db.journal_count();
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            journals,
            journal_bytes = db.journal_disk_space().unwrap_or(0),
            "store: fjall opened"
        );
        let store = FjallStore {
            db,
            keyspaces,
            dir: dir.to_path_buf(),
            write_lock: Mutex::new((EarlyDequeues::default(), QueueIndex::default())),
            poisoned: Mutex::new(None),
            journals_seen: AtomicUsize::new(journals),
        };
        store.check_format_version(&fail)?;
        Ok(store)
    }

    fn check_format_version(&self, fail: &dyn Fn(Damage) -> StoreError) -> Result<(), StoreError> {
        let meta = self.ks(Ks::Meta);
        match meta.get(META_FORMAT_VERSION).map_err(|e| fail(e.into()))? {
            Some(v) => {
                let v = enc::decode_format_version(&v).map_err(|e| {
                    fail(Damage::UnreadableVersion {
                        reason: e.to_string(),
                    })
                })?;
                if v > FORMAT_VERSION {
                    return Err(OpenError::Newer {
                        dir: self.dir.clone(),
                        version: v,
                    }
                    .into());
                }
                if (1..FORMAT_VERSION).contains(&v) {
                    // This version reads every record of the older ones; only the marker
                    // changes, so an older starling refuses the store once it may hold
                    // records that starling cannot read.
                    return meta
                        .insert(
                            META_FORMAT_VERSION,
                            enc::encode_format_version(FORMAT_VERSION),
                        )
                        .and_then(|()| self.db.persist(PersistMode::SyncAll))
                        .map(|()| {
                            tracing::info!(
                                "store {}: format upgraded from version {v} to {FORMAT_VERSION}",
                                self.dir.display()
                            )
                        })
                        .map_err(|e| fail(Damage::RecordVersion(Arc::new(e))));
                }
                if v != FORMAT_VERSION {
                    return Err(fail(Damage::UnknownVersion(v)));
                }
                Ok(())
            }
            None => {
                for ks in Ks::ALL {
                    if !self.ks(ks).is_empty().map_err(|e| fail(e.into()))? {
                        return Err(fail(Damage::Unversioned {
                            keyspace: ks.name(),
                        }));
                    }
                }
                meta.insert(
                    META_FORMAT_VERSION,
                    enc::encode_format_version(FORMAT_VERSION),
                )
                .and_then(|()| self.db.persist(PersistMode::SyncAll))
                .map_err(|e| fail(Damage::RecordVersion(Arc::new(e))))
            }
        }
    }

    /// Moves the store in `dir` aside to `DIR.broken-<unix seconds>` (with a `-N` suffix if
    /// that exists) and returns the new path. Nothing is deleted. Refused while a process holds
    /// the store open.
    pub fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
        let meta = std::fs::metadata(dir).map_err(|e| OpenError::Missing {
            dir: path(dir),
            cause: Arc::new(e),
        })?;
        if !meta.is_dir() {
            return Err(OpenError::NotADirectory { dir: path(dir) }.into());
        }
        let name = dir
            .file_name()
            .ok_or_else(|| OpenError::Unnamed { dir: path(dir) })?;
        // fjall holds an exclusive lock on `lock` while the store is open.
        let lock = dir.join("lock");
        if lock.exists() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&lock)
                .map_err(|e| OpenError::LockFile {
                    path: lock.clone(),
                    cause: Arc::new(e),
                })?;
            match file.try_lock() {
                Ok(()) => drop(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(OpenError::Running { dir: path(dir) }.into())
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(OpenError::Lock {
                        path: lock,
                        cause: Arc::new(e),
                    }
                    .into())
                }
            }
        }
        let secs = super::unix_ms_now() / 1000;
        let base = format!("{}.broken-{secs}", name.to_string_lossy());
        let parent = dir.parent().unwrap_or(Path::new(""));
        let mut target = parent.join(&base);
        let mut n = 1;
        while target.exists() {
            target = parent.join(format!("{base}-{n}"));
            n += 1;
        }
        std::fs::rename(dir, &target).map_err(|e| OpenError::Rename {
            from: path(dir),
            to: target.clone(),
            cause: Arc::new(e),
        })?;
        Ok(target)
    }

    /// A consistent view for reads outside the writer (see [`SnapshotKv`]).
    fn snapshot(&self) -> SnapshotKv<'_> {
        SnapshotKv {
            store: self,
            snapshot: self.db.snapshot(),
        }
    }

    fn ks(&self, ks: Ks) -> &Keyspace {
        &self.keyspaces[ks.index()]
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the failure and returns the error to report.
    fn poison(&self, e: fjall::Error) -> StoreError {
        let err = StoreError::from(e);
        let mut p = self.poisoned.lock();
        if p.is_none() {
            tracing::error!("store: write failed, refusing further writes: {err}");
            *p = Some(Arc::new(err.clone()));
        }
        err
    }

    /// Flushes every keyspace's memtable when fjall sealed a journal since the last look, so
    /// the sealed journal is deleted instead of being replayed at the next start.
    ///
    /// fjall deletes a sealed journal once every keyspace written in it has flushed, and
    /// flushes a keyspace when its 8 MiB memtable is full or when the sealed journals pass
    /// [`MAX_JOURNALING`]. `sessions`, `subs` and `meta` get a few records per journal (a
    /// client connects, subscribes) and fill their memtables in hours: each kept sealed
    /// journals of 64 MB on disk beside the active one, and a journal that a restart truncated
    /// is sealed below 64 MiB, so even [`MAX_JOURNALING`] at fjall's minimum let two pile up.
    /// Their memtables are small: flushing them once per 64 MB of journal is cheap.
    fn release_sealed_journals(&self) {
        let journals = self.db.journal_count();
        let seen = self.journals_seen.swap(journals, Ordering::Relaxed);
        if journals <= 1 || journals <= seen {
            return;
        }
        for ks in Ks::ALL {
            // Sealing a memtable queues its flush on fjall's workers; an empty one is left
            // alone. `rotate_memtable` is public but missing from fjall's docs: the only way to
            // flush one keyspace early (Cargo.lock pins the fjall it was checked against).
            if let Err(e) = self.ks(ks).rotate_memtable() {
                // Not a lost write: the journal stays until fjall flushes the keyspace itself.
                tracing::warn!(
                    "store: cannot flush `{}` to release a sealed journal: {e}",
                    ks.name()
                );
            }
        }
    }

    /// Journals on disk and their bytes: what the next open replays.
    #[cfg(test)]
    pub(crate) fn journals(&self) -> (usize, u64) {
        let bytes = self.db.journal_disk_space().unwrap_or(0);
        (self.db.journal_count(), bytes)
    }

    /// Decodes every record and checks references and refcounts.
    pub fn check(&self) -> CheckReport {
        inspect::check(self)
    }

    /// Prints every record, human-readably, to `out`.
    pub fn dump(&self, out: &mut dyn Write) -> std::io::Result<()> {
        inspect::dump(self, out)
    }

    #[cfg(test)]
    pub(crate) fn put_raw(&self, ks: Ks, key: &[u8], value: &[u8]) {
        self.ks(ks).insert(key, value).expect("test write");
    }
}

/// The keys from `from` on that may start with `prefix`.
fn scan_range(prefix: &[u8], from: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    (Bound::Included(from.to_vec()), end)
}

/// Visits the entries of `iter` while they start with `prefix` and `f` asks for more.
fn visit(iter: Iter, prefix: &[u8], f: &mut Visit) -> Result<(), StoreError> {
    for guard in iter {
        let (k, v) = guard.into_inner().map_err(StoreError::from)?;
        if !k.starts_with(prefix) || !f(&k, &v)? {
            break;
        }
    }
    Ok(())
}

/// The key of the last entry of `iter`.
fn last(mut iter: Iter) -> Result<Option<Vec<u8>>, StoreError> {
    match iter.next_back() {
        Some(guard) => Ok(Some(guard.key().map_err(StoreError::from)?.to_vec())),
        None => Ok(None),
    }
}

/// Reads of the latest data, batches still being applied included: for the writer, which
/// applies them itself (under `write_lock`), and for `check` and `dump`.
impl Kv for FjallStore {
    fn get(&self, ks: Ks, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .ks(ks)
            .get(key)
            .map_err(StoreError::from)?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, ks: Ks, prefix: &[u8], from: &[u8], f: &mut Visit) -> Result<(), StoreError> {
        visit(self.ks(ks).range(scan_range(prefix, from)), prefix, f)
    }

    fn last_key(&self, ks: Ks, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        last(self.ks(ks).prefix(prefix))
    }
}

/// Reads through one fjall snapshot, for readers that run while the writer commits. fjall
/// applies a committed batch to its keyspaces key by key, and a plain read sees every key
/// applied so far: a queue entry could be read before the body it names (the batch writes
/// `queue` before `msgs`), and was then skipped as naming a missing message. A snapshot sees
/// only batches that were applied whole.
struct SnapshotKv<'a> {
    store: &'a FjallStore,
    snapshot: fjall::Snapshot,
}

impl Kv for SnapshotKv<'_> {
    fn get(&self, ks: Ks, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .snapshot
            .get(self.store.ks(ks), key)
            .map_err(StoreError::from)?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, ks: Ks, prefix: &[u8], from: &[u8], f: &mut Visit) -> Result<(), StoreError> {
        let iter = self
            .snapshot
            .range(self.store.ks(ks), scan_range(prefix, from));
        visit(iter, prefix, f)
    }

    fn last_key(&self, ks: Ks, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        last(self.snapshot.prefix(self.store.ks(ks), prefix))
    }
}

impl Store for FjallStore {
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError> {
        self.write_prepared(&Prepared::new(batch.to_vec()), sync)
    }

    fn write_prepared(&self, batch: &Prepared, sync: bool) -> Result<(), StoreError> {
        let mut state = self.write_lock.lock();
        let (early, index) = &mut *state;
        if let Some(cause) = self.poisoned.lock().clone() {
            return Err(StoreError::Poisoned(PoisonCause::Earlier(cause)));
        }
        let (writes, staged) = engine::plan(self, batch, early, index)?;
        if !writes.is_empty() {
            let mut b = self.db.batch();
            for ((ks, key), value) in writes {
                match value {
                    Some(v) => b.insert(self.ks(ks), key, v),
                    None => b.remove(self.ks(ks), key),
                }
            }
            b.commit().map_err(|e| self.poison(e))?;
        }
        index.commit(staged.clients, staged.msg_id_hw);
        if sync {
            self.db
                .persist(PersistMode::SyncData)
                .map_err(|e| self.poison(e))?;
        }
        self.release_sealed_journals();
        Ok(())
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        engine::load(self).map_err(|e| match e {
            StoreError::Corrupt { .. } => OpenError::Unloadable {
                dir: self.dir.clone(),
                cause: Box::new(e),
            }
            .into(),
            e => e,
        })
    }

    fn queue_range(
        &self,
        client_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredDelivery)>, StoreError> {
        engine::queue_range(&self.snapshot(), client_id, from_seq, max)
    }

    fn queue_len(&self, client_id: &str) -> Result<u64, StoreError> {
        engine::queue_len(&self.snapshot(), client_id)
    }
}
