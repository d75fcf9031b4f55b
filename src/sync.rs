//! The broker's locks, each with a fixed place in one lock hierarchy, checked at run time in
//! debug and test builds.
//!
//! Every lock shared between connections is created with a [`Rank`]. A thread may only take a
//! lock whose rank is *higher* than every rank it already holds; taking one at the same or a
//! lower rank is a lock-order inversion, which could deadlock against a thread taking the two in
//! the documented order. Debug builds check this on every acquisition, before blocking, so an
//! inversion is reported the first time the code path runs, whether or not another thread
//! happens to hold the other lock at that moment. The report is a panic naming both locks and
//! the hierarchy, and [`inversions`] counts every report so tests can assert none happened even
//! where a panic would only end one connection task. Release builds keep plain `parking_lot`
//! locks: the rank is not stored and nothing is checked.
//!
//! DashMap's shard locks are not ranked: code holds no other lock while it holds a DashMap
//! guard (it collects what it needs and drops the guard first), and takes no DashMap guard
//! while holding a ranked lock.

use std::ops::{Deref, DerefMut};

/// A lock's place in the hierarchy: locks are taken in increasing rank, never the other way.
/// The order is written down once, in the `broker` module doc, and mirrored here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// `Session::link`: which connection owns a session.
    SessionLink = 10,
    /// The subscription trie.
    Trie = 20,
    /// The retained-message store.
    Retained = 30,
    /// The auth snapshot (password file, ACL).
    Auth = 40,
    /// `Session::meta`: protocol, expiry, username.
    SessionMeta = 50,
    /// `Session::state`: queue, inflight, subscriptions.
    SessionState = 60,
    /// The failed-login table ([`crate::auth::slowdown`]): a leaf, taken with no broker lock
    /// held and held for a map lookup only.
    LoginSlowdown = 70,
    /// The metrics endpoint's table of open HTTP connections ([`crate::prometheus`]): a leaf,
    /// taken with no other lock held.
    HttpConnections = 80,
    /// The live connections the keep-alive sweep watches ([`crate::broker::keepalive`]): a
    /// leaf, taken with no other lock held.
    KeepAlive = 90,
    /// Ranks above every broker lock, for the checker's own tests.
    #[cfg(test)]
    TestOuter = 100,
    /// See [`Rank::TestOuter`].
    #[cfg(test)]
    TestInner = 110,
}

#[cfg(debug_assertions)]
mod check {
    use super::Rank;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    thread_local! {
        static HELD: RefCell<Vec<Rank>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) static INVERSIONS: AtomicUsize = AtomicUsize::new(0);

    /// Proof that a ranked lock is held by this thread; forgets it on drop.
    pub(super) struct Held(Rank);

    impl Held {
        pub(super) fn acquire(rank: Rank) -> Held {
            let worst = HELD.with(|h| h.borrow().iter().copied().filter(|&r| r >= rank).max());
            if let Some(held) = worst {
                INVERSIONS.fetch_add(1, Ordering::Relaxed);
                panic!(
                    "lock-order inversion: taking {rank:?} while holding {held:?}; locks must be \
                     taken in increasing rank (see `starling::sync::Rank` and the broker's \
                     module doc)"
                );
            }
            HELD.with(|h| h.borrow_mut().push(rank));
            Held(rank)
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            // Guards may be dropped in any order: forget the newest entry of this rank.
            let _ = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().rposition(|&r| r == self.0) {
                    h.remove(i);
                }
            });
        }
    }
}

#[cfg(not(debug_assertions))]
mod check {
    use super::Rank;

    pub(super) struct Held;

    impl Held {
        #[inline(always)]
        pub(super) fn acquire(_rank: Rank) -> Held {
            Held
        }
    }
}

/// How many lock-order inversions this process has reported (always 0 in release builds,
/// which do not check). Tests assert it stays 0.
pub fn inversions() -> usize {
    #[cfg(debug_assertions)]
    {
        check::INVERSIONS.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(debug_assertions))]
    {
        0
    }
}

/// A mutex with a place in the lock hierarchy.
#[derive(Debug)]
pub struct Mutex<T> {
    #[cfg(debug_assertions)]
    rank: Rank,
    inner: parking_lot::Mutex<T>,
}

impl<T> Mutex<T> {
    /// A mutex at `rank`.
    pub fn new(rank: Rank, value: T) -> Mutex<T> {
        #[cfg(not(debug_assertions))]
        let _ = rank;
        Mutex {
            #[cfg(debug_assertions)]
            rank,
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// Locks it; in debug builds, first checks the hierarchy.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let held = check::Held::acquire(self.rank());
        MutexGuard {
            guard: self.inner.lock(),
            _held: held,
        }
    }

    #[cfg(debug_assertions)]
    fn rank(&self) -> Rank {
        self.rank
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    fn rank(&self) -> Rank {
        Rank::SessionState
    }
}

/// A held [`Mutex`].
pub struct MutexGuard<'a, T> {
    guard: parking_lot::MutexGuard<'a, T>,
    _held: check::Held,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A reader-writer lock with a place in the lock hierarchy. Taking it for reading twice on one
/// thread is an inversion too: with a writer waiting in between, the second read would block.
#[derive(Debug)]
pub struct RwLock<T> {
    #[cfg(debug_assertions)]
    rank: Rank,
    inner: parking_lot::RwLock<T>,
}

impl<T> RwLock<T> {
    /// A lock at `rank`.
    pub fn new(rank: Rank, value: T) -> RwLock<T> {
        #[cfg(not(debug_assertions))]
        let _ = rank;
        RwLock {
            #[cfg(debug_assertions)]
            rank,
            inner: parking_lot::RwLock::new(value),
        }
    }

    /// Shared access; in debug builds, first checks the hierarchy.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        let held = check::Held::acquire(self.rank());
        RwLockReadGuard {
            guard: self.inner.read(),
            _held: held,
        }
    }

    /// Exclusive access; in debug builds, first checks the hierarchy.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        let held = check::Held::acquire(self.rank());
        RwLockWriteGuard {
            guard: self.inner.write(),
            _held: held,
        }
    }

    #[cfg(debug_assertions)]
    fn rank(&self) -> Rank {
        self.rank
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    fn rank(&self) -> Rank {
        Rank::SessionState
    }
}

/// A [`RwLock`] held for reading.
pub struct RwLockReadGuard<'a, T> {
    guard: parking_lot::RwLockReadGuard<'a, T>,
    _held: check::Held,
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

/// A [`RwLock`] held for writing.
pub struct RwLockWriteGuard<'a, T> {
    guard: parking_lot::RwLockWriteGuard<'a, T>,
    _held: check::Held,
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn increasing_order_is_allowed_and_released_locks_are_forgotten() {
        let outer = Mutex::new(Rank::TestOuter, 1);
        let inner = RwLock::new(Rank::TestInner, 2);
        for _ in 0..2 {
            let a = outer.lock();
            let b = inner.read();
            assert_eq!(*a + *b, 3);
        }
        // Dropped out of order, then taken alone in the other order: nothing is nested.
        let a = outer.lock();
        let b = inner.write();
        drop(a);
        drop(b);
        let _b = inner.read();
    }

    /// Proves the checker works: a deliberately inverted pair is reported on its first run,
    /// with no second thread and no deadlock needed.
    #[test]
    fn an_inverted_pair_is_caught() {
        let outer = Mutex::new(Rank::TestOuter, ());
        let inner = Mutex::new(Rank::TestInner, ());
        {
            let _a = outer.lock();
            let _b = inner.lock();
        }
        let before = inversions();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _b = inner.lock();
            let _a = outer.lock();
        }));
        let message = caught.expect_err("the inversion must be reported");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("lock-order inversion"), "{text}");
        assert!(
            text.contains("TestOuter") && text.contains("TestInner"),
            "{text}"
        );
        assert!(inversions() > before);
        // The unwound guards were forgotten: the right order works again on this thread.
        let _a = outer.lock();
        let _b = inner.lock();
    }

    #[test]
    fn a_second_read_of_the_same_lock_is_caught() {
        let lock = RwLock::new(Rank::TestOuter, ());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _r1 = lock.read();
            let _r2 = lock.read();
        }));
        assert!(caught.is_err());
    }
}
