//! Sessions: the shared handle the router delivers into and the connection task drains, and the
//! link that says which connection (if any) currently owns the session.
//!
//! Locking: `state` is a `parking_lot::Mutex` held only for short, synchronous sections (an
//! enqueue, a batch dequeue, an ack); never across `.await` or a socket write. `connect_lock`
//! (async) serialises CONNECTs for one client id so two connections never own one session.

pub mod state;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::codec::{ProtocolVersion, ReasonCode};
pub use state::{
    Delivery, DropReason, Enqueued, Inflight, Limits, Persistence, Resend, SessionState,
};

/// A request from the broker to the connection that owns a session.
#[derive(Debug)]
pub enum Control {
    /// Another connection with the same client id arrived [MQTT-3.1.4-2]; close now, publish the
    /// will, and do not touch the session afterwards.
    TakenOver,
    /// Close with this reason (v5 DISCONNECT) and this explanation for the log.
    Disconnect(ReasonCode, &'static str),
}

/// The connection currently attached to a session.
#[derive(Debug)]
struct Attached {
    /// One request ends a connection, so a oneshot is enough (and an mpsc channel's first
    /// block would cost every connection close to a kilobyte). Taken by the first request.
    control: Option<oneshot::Sender<Control>>,
    /// Completes (with an error) when the connection task has finished, will included.
    closed: oneshot::Receiver<()>,
}

#[derive(Debug, Default)]
struct Link {
    attached: Option<Attached>,
    /// Bumped by every CONNECT that claims the session, so a connection that ends after it was
    /// superseded knows it no longer owns the session.
    generation: u64,
    /// Set when the session has been discarded and removed from the registry; a CONNECT that
    /// raced with the removal must look the client id up again.
    removed: bool,
    /// Whether any connection ever owned it: a resumed session is "present" [MQTT-3.2.2-2].
    ever_attached: bool,
}

/// The session was discarded; look the client id up again.
#[derive(Debug)]
pub struct Removed;

/// The connection a CONNECT takes the session from.
#[derive(Debug)]
pub struct Previous {
    pub control: Option<oneshot::Sender<Control>>,
    /// Completes when that connection has finished (will included).
    pub closed: oneshot::Receiver<()>,
}

/// What the connection task keeps to prove ownership and to report its end.
#[derive(Debug)]
pub struct Ownership {
    pub generation: u64,
    pub control: oneshot::Receiver<Control>,
    /// Dropped when the connection task ends; the next CONNECT waits for it.
    pub closed: oneshot::Sender<()>,
}

/// Everything the broker knows about one client id, connected or not.
#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    /// A unique id for this session object, for log lines and tie-breaking.
    pub uid: u64,
    state: Mutex<SessionState>,
    notify: Notify,
    link: Mutex<Link>,
    meta: Mutex<SessionMeta>,
    pub connect_lock: tokio::sync::Mutex<()>,
    stuck: AtomicBool,
    /// Mirrors whether the state has persistence, so routing can ask without the lock.
    persistent: AtomicBool,
    /// Publishers waiting for room in this session's queue.
    room: Notify,
    room_waiters: AtomicUsize,
}

/// Facts about the session set at CONNECT time.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub protocol: ProtocolVersion,
    /// None = the session never expires (3.1.1 persistent session without
    /// `persistent_client_expiration`); Some(0) = ends with the connection.
    pub expiry: Option<Duration>,
    pub username: Option<Arc<str>>,
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

impl Session {
    pub fn new(client_id: Arc<str>, limits: Limits) -> Session {
        Session {
            client_id,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(SessionState::new(limits)),
            notify: Notify::new(),
            link: Mutex::new(Link::default()),
            meta: Mutex::new(SessionMeta {
                protocol: ProtocolVersion::V311,
                expiry: Some(Duration::ZERO),
                username: None,
            }),
            connect_lock: tokio::sync::Mutex::new(()),
            stuck: AtomicBool::new(false),
            persistent: AtomicBool::new(false),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
        }
    }

    /// Runs `f` with the state locked. Keep `f` short and synchronous.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SessionState) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// Queues a delivery and wakes the connection. The caller accounts the returned cost.
    pub fn deliver(&self, d: Delivery) -> Result<Enqueued, DropReason> {
        let e = self.state.lock().enqueue(d)?;
        if e.cost > 0 {
            self.notify.notify_one();
        }
        Ok(e)
    }

    /// As [`Self::deliver`], handing a refused delivery back.
    pub fn try_deliver(&self, d: Delivery) -> Result<Enqueued, (DropReason, Delivery)> {
        let e = self.state.lock().try_enqueue(d)?;
        if e.cost > 0 {
            self.notify.notify_one();
        }
        Ok(e)
    }

    /// Whether QoS 1/2 deliveries are stored (a persistent session with a store).
    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    pub fn set_persistence(&self, p: Option<Persistence>) {
        let mut state = self.state.lock();
        state.set_persistence(p);
        self.persistent.store(p.is_some(), Ordering::Relaxed);
    }

    /// A session restored from the store resumes with Session Present = 1.
    pub fn mark_resumable(&self) {
        self.link.lock().ever_attached = true;
    }

    /// A subscriber whose queue stayed full while a publisher waited: deliveries to it are
    /// dropped at once instead of holding publishers back, until it drains.
    pub fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    pub fn set_stuck(&self, stuck: bool) {
        self.stuck.store(stuck, Ordering::Relaxed);
    }

    /// Called after the connection took deliveries out of the queue: wakes publishers waiting
    /// for room and clears the stuck mark.
    pub fn made_room(&self) {
        if self.is_stuck() {
            self.set_stuck(false);
        }
        if self.room_waiters.load(Ordering::Relaxed) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Waits (bounded by the caller) until this session's queue had room made.
    /// Cancellation-safe: the waiter count is restored when the future is dropped.
    pub async fn room_made(&self) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.room_waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.room_waiters);
        self.room.notified().await;
    }

    /// Wakes the connection task (e.g. after a resume).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// The notification a connection task waits on for new deliveries.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    pub fn meta(&self) -> SessionMeta {
        self.meta.lock().clone()
    }

    pub fn set_meta(&self, meta: SessionMeta) {
        *self.meta.lock() = meta;
    }

    pub fn is_removed(&self) -> bool {
        self.link.lock().removed
    }

    pub fn is_connected(&self) -> bool {
        self.link.lock().attached.is_some()
    }

    /// Takes the session from whichever connection has it; returns that connection's control
    /// sender and close signal so the caller can kick it and wait. Err when the session was
    /// discarded meanwhile. Must be called with `connect_lock` held.
    pub fn detach_current(&self) -> Result<Option<Previous>, Removed> {
        let mut link = self.link.lock();
        if link.removed {
            return Err(Removed);
        }
        link.generation += 1;
        Ok(link.attached.take().map(|a| Previous {
            control: a.control,
            closed: a.closed,
        }))
    }

    /// Whether a connection ever owned this session.
    pub fn was_attached(&self) -> bool {
        self.link.lock().ever_attached
    }

    /// Sends a request to the attached connection, if any; never waits.
    pub fn send_control(&self, c: Control) {
        if let Some(tx) = self
            .link
            .lock()
            .attached
            .as_mut()
            .and_then(|a| a.control.take())
        {
            let _ = tx.send(c);
        }
    }

    /// Makes a new connection the owner. Must be called with `connect_lock` held.
    pub fn attach(&self) -> Ownership {
        let (ctl_tx, ctl_rx) = oneshot::channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        let mut link = self.link.lock();
        link.generation += 1;
        let generation = link.generation;
        link.ever_attached = true;
        link.attached = Some(Attached {
            control: Some(ctl_tx),
            closed: closed_rx,
        });
        self.state.lock().set_online(true);
        Ownership {
            generation,
            control: ctl_rx,
            closed: closed_tx,
        }
    }

    /// Called by a connection as it ends. Returns true when it still owned the session (it was
    /// not taken over), in which case the session is now offline. With `discard`, the session is
    /// marked removed and `cleanup` runs while the link is locked, so a racing CONNECT cannot
    /// attach to it half-discarded; it will look the client id up again.
    pub fn release(&self, generation: u64, discard: bool, cleanup: impl FnOnce()) -> bool {
        let mut link = self.link.lock();
        if link.generation != generation {
            return false;
        }
        link.attached = None;
        self.state.lock().set_online(false);
        if discard {
            link.removed = true;
            cleanup();
        }
        true
    }

    /// Whether `generation` still owns the session.
    pub fn owned_by(&self, generation: u64) -> bool {
        self.link.lock().generation == generation
    }
}
