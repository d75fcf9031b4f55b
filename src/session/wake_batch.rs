//! Deferred connection wake-ups while one task routes a batch of packets.
//!
//! A publisher's connection handles up to a read's worth of PUBLISH packets in one synchronous
//! pass. Waking each subscriber's connection at its first delivery lets that connection run
//! (on the other worker) while the batch is still being routed, and write one or two
//! messages; the next delivery wakes it again. Opening a [`WakeBatch`] around the pass keeps
//! the wakers instead and wakes every connection once when the batch closes, so each writes
//! what the whole batch queued for it in one go: fewer, larger writes for the broker and for
//! its clients. The delay is the time the pass takes (bounded by the packets per turn).
//!
//! Only a synchronous section may hold a batch (it is per thread): the connection opens it
//! around its decode loop, which never awaits. The pending list holds at most one waker per
//! connection (taking a session's waker leaves nothing for the next delivery to take) and is
//! emptied when the outermost batch closes, also on an early return or a panic.

use std::cell::{Cell, RefCell};
use std::task::Waker;

use futures_util::task::AtomicWaker;

thread_local! {
    /// Open batches on this thread (nested ones defer to the outermost).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Wakers taken while a batch was open, woken when it closes.
    static PENDING: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Capacity kept between batches: enough for a wide fan-out without reallocating, small
/// enough not to matter per worker thread.
const KEEP: usize = 1024;

/// While alive, connection wake-ups on this thread are deferred to its drop.
pub struct WakeBatch(());

impl WakeBatch {
    /// Opens a batch on this thread (or joins the one already open).
    pub fn open() -> WakeBatch {
        DEPTH.with(|d| d.set(d.get() + 1));
        WakeBatch(())
    }
}

impl Drop for WakeBatch {
    fn drop(&mut self) {
        let outermost = DEPTH.with(|d| {
            let left = d.get().saturating_sub(1);
            d.set(left);
            left == 0
        });
        if outermost {
            flush();
        }
    }
}

/// Wakes what the closed batch kept. The list is taken out first: a waker may run code that
/// delivers again (then woken at once, no batch being open).
fn flush() {
    let mut wakers = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for w in wakers.drain(..) {
        w.wake();
    }
    if wakers.capacity() <= KEEP {
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            if p.is_empty() {
                *p = wakers;
            }
        });
    }
}

/// Called by a wake-up: with a batch open on this thread, takes the registered waker (if
/// any: an earlier delivery of the batch may have taken it) to wake it when the batch
/// closes, and returns true; otherwise false and the caller wakes at once.
pub(crate) fn defer(waker: &AtomicWaker) -> bool {
    if DEPTH.with(Cell::get) == 0 {
        return false;
    }
    if let Some(w) = waker.take() {
        PENDING.with(|p| p.borrow_mut().push(w));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn registered() -> (Arc<Count>, AtomicWaker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let slot = AtomicWaker::new();
        slot.register(&Waker::from(count.clone()));
        (count, slot)
    }

    #[test]
    fn without_a_batch_nothing_is_deferred() {
        let (count, slot) = registered();
        assert!(!defer(&slot));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_batch_wakes_each_connection_once_when_it_closes() {
        let (count, slot) = registered();
        {
            let _outer = WakeBatch::open();
            {
                let _inner = WakeBatch::open();
                assert!(defer(&slot));
                assert!(defer(&slot));
            }
            // The inner batch closing leaves the wake with the outer one.
            assert_eq!(count.0.load(Ordering::SeqCst), 0);
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!defer(&slot));
    }

    #[test]
    fn a_batch_left_by_a_panic_still_wakes() {
        let (count, slot) = registered();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _b = WakeBatch::open();
            defer(&slot);
            panic!("handler failed");
        }));
        assert!(r.is_err());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
