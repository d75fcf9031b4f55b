//! Sessions: the shared handle the router delivers into and the connection task drains, and the
//! link that says which connection (if any) currently owns the session.
//!
//! Locking (ranks in [`crate::sync::Rank`]): `link` (rank `SessionLink`) may be held while
//! taking `state`; `meta` and `state` are leaves. All three are held only for short,
//! synchronous sections (an enqueue, a batch dequeue, an ack); never across `.await` or a
//! socket write, and no method here calls out of the session while holding one. Whether the
//! session is connected or removed is mirrored in atomics, so routing asks without a lock.
//! [`Session::lock_connect`] (async) serialises CONNECTs for one client id so two connections
//! never own one session.

pub mod state;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod wake_batch;

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::task::AtomicWaker;
use once_cell::race::OnceBox;

use tokio::sync::Notify;

use crate::codec::{ProtocolVersion, ReasonCode};
use crate::peer::PeerAddr;
use crate::sync::{Mutex, Rank};
pub use state::{
    Delivery, DropReason, Enqueued, Inflight, Limits, Persistence, Resend, SessionState, Shed,
    Stored,
};
pub use stream::StreamRequest;

/// A request from the broker to the connection that owns a session.
#[derive(Debug)]
pub enum Control {
    /// Another connection with the same client id arrived [MQTT-3.1.4-2]; close now and do not
    /// touch the session afterwards. The will is published only when `session_ends` (the new
    /// connection has Clean Start 1, or the session was to end with this connection):
    /// a new connection to a continuing session cancels it [MQTT-3.1.3-9].
    TakenOver {
        /// The taken-over connection's session ends with it.
        session_ends: bool,
    },
    /// Close with this reason (v5 DISCONNECT) and this explanation for the log.
    Disconnect(ReasonCode, &'static str),
    /// The broker is shutting down (v5 DISCONNECT 0x8B). Connections learn of shutdown only
    /// this way (and by [`crate::broker::BrokerState::is_stopping`] as their loop starts), so
    /// no connection task keeps a cancellation future.
    Shutdown,
    /// The keep-alive sweep found no read within 1.5 x keep-alive ([`crate::broker::keepalive`]):
    /// close, unless a packet arrived since (the connection checks its stamp again). Any other
    /// request replaces it in the slot.
    KeepAliveExpired,
}

/// The connection currently attached to a session.
#[derive(Debug)]
struct Attached {
    /// When the connection claimed the session, in microseconds since the Unix epoch (at least
    /// 1). Not a `SystemTime`: a `NonZeroU64` makes `Option<Attached>` one word, and every
    /// session holds a `Link`. Microseconds, not milliseconds: a cluster node compares it with
    /// the time of a claim on another node, and a client can move back within a millisecond.
    since_unix_us: NonZeroU64,
}

/// A session's way out of the registry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Live: a CONNECT may claim it.
    #[default]
    Live,
    /// Its last owner released it for good and the broker is dropping its subscriptions and
    /// queue (outside any session lock).
    Discarding,
    /// Gone from the registry.
    Removed,
}

#[derive(Debug, Default)]
struct Link {
    attached: Option<Attached>,
    /// Bumped by every CONNECT that claims the session, so a connection that ends after it was
    /// superseded knows it no longer owns the session.
    generation: u64,
    /// Where the session is on its way out; a CONNECT that races with a discard waits for it
    /// to finish, then looks the client id up again.
    end: End,
    /// Whether any connection ever owned it: a resumed session is "present" [MQTT-3.2.2-2].
    ever_attached: bool,
    /// The will of the connection that left (generation), waiting out its Will Delay Interval.
    /// Boxed: a will is ~400 bytes and rare, and every session holds a `Link`.
    pending_will: Option<Box<(u64, PendingWill)>>,
    /// A request for connection `.0` (its generation) until that connection takes it
    /// ([`Session::poll_control`]). One request ends a connection, so one slot does: the first
    /// request for a generation wins. It replaced two oneshot channels per connection (an
    /// allocation each), woken by the waker the connection already registers for deliveries.
    /// Boxed: requests are rare, and every session holds a `Link`.
    control: Option<Box<(u64, Control)>>,
}

/// A will waiting out its Will Delay Interval after its connection ended [MQTT-3.1.3-9]:
/// published when the delay passes or the session ends, dropped when a new connection
/// continues the session.
#[derive(Debug)]
pub struct PendingWill {
    pub will: crate::codec::Will,
    /// When its connection ended (Unix ms), for the store's record.
    pub since_unix_ms: u64,
}

/// The session is being discarded or was; wait for [`Session::discarded`], then look the
/// client id up again.
#[derive(Debug)]
pub struct Removed;

/// The connection a CONNECT takes the session from: ask it to close with
/// [`Session::send_control_to`], wait for it with [`Session::closed`].
#[derive(Debug)]
pub struct Previous {
    pub generation: u64,
}

/// What the connection task keeps to prove ownership; it reports its end with
/// [`Session::connection_finished`] and takes requests with [`Session::poll_control`].
#[derive(Debug)]
pub struct Ownership {
    pub generation: u64,
}

/// [`Session::last_active`] when the client was read from since the keep-alive sweep last
/// looked (see [`Session::heard`]); the keep-alive clock skips this value.
pub const HEARD: u32 = u32::MAX;

/// Everything the broker knows about one client id, connected or not.
#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    state: Mutex<SessionState>,
    /// Set when deliveries arrived for the connection; `waker` wakes it. One connection owns
    /// a session at a time, so a flag and one waker do what a `Notify` (and the `Notified`
    /// future every connection task would keep) did, in a fraction of the bytes.
    rung: AtomicBool,
    waker: AtomicWaker,
    /// Mirrors the generation `link.control` is for (0: none; its low 32 bits: a hint, the
    /// slot under the lock has the whole generation), so the connection looks for a request
    /// every turn without a lock.
    control_for: AtomicU32,
    /// When the attached connection last read from its client (see
    /// [`crate::broker::keepalive::KeepAlive::now_ms`]), or [`HEARD`]: read from since the
    /// keep-alive sweep last looked.
    last_active: AtomicU32,
    /// Its place in the keep-alive sweep's list; written only under that list's lock.
    pub(crate) keep_alive_slot: AtomicU32,
    link: Mutex<Link>,
    meta: Mutex<SessionMeta>,
    /// Held by the CONNECT claiming the session ([`Session::lock_connect`]): a flag rather
    /// than an async mutex (~40 B in every session, connected or not).
    connecting: AtomicBool,
    /// How publishers treat this subscriber while it lags: [`PROMPT`], [`LAGGING`] or
    /// [`STUCK`]; back to [`PROMPT`] whenever it takes deliveries out of its queue.
    lag: AtomicU8,
    /// Mirrors whether the state has persistence, so routing can ask without the lock.
    persistent: AtomicBool,
    /// Mirrors `link.attached.is_some()`, so routing (and the trie's shared-group pick) can
    /// ask without a lock.
    connected: AtomicBool,
    /// Mirrors `link.end != End::Live`.
    ending: AtomicBool,
    /// Mirrors `link.end == End::Removed`; read by the registry under its map guard, where no
    /// session lock may be taken.
    gone: AtomicBool,
    /// Allocated by the first wait on it: most sessions are never waited on. A `OnceBox` (one
    /// pointer; racing first waits may each allocate, one keeps its box) rather than a
    /// `OnceLock` (two words): every session holds this.
    waits: OnceBox<Waits>,
}

/// Woken when any session's discard finishes ([`Session::finish_discard`]). One for the
/// process rather than one per session: discards that race with a CONNECT are rare, and a
/// waiter woken by another session's discard only looks its client id up again.
static DISCARDS: Notify = Notify::const_new();

/// [`Session::lag`]: the subscriber keeps up (publishers may be paced by its queue depth).
const PROMPT: u8 = 0;
/// [`Session::lag`]: a publisher waited for its deep queue in vain; no more pacing on it.
const LAGGING: u8 = 1;
/// [`Session::lag`]: its queue stayed full while a publisher waited; deliveries are dropped.
const STUCK: u8 = 2;

/// Woken when any session's CONNECT serialisation is released ([`ConnectGuard`]). One for the
/// process, like [`DISCARDS`]: two CONNECTs for one client id at once are rare, and a waiter
/// woken by another session's release only tries again.
static CONNECT_RELEASED: Notify = Notify::const_new();
/// CONNECTs waiting in [`Session::lock_connect`]: a release notifies only when there are any.
static CONNECT_WAITERS: AtomicUsize = AtomicUsize::new(0);

/// Proof that a CONNECT holds its session's claim ([`Session::lock_connect`]); released on
/// drop, also when the CONNECT is dropped halfway.
#[derive(Debug)]
pub struct ConnectGuard<'a>(&'a Session);

impl Drop for ConnectGuard<'_> {
    fn drop(&mut self) {
        // SeqCst with the waiter's count and check: either it sees the flag clear, or this
        // sees it waiting (and it was listening before it checked).
        self.0.connecting.store(false, Ordering::SeqCst);
        if CONNECT_WAITERS.load(Ordering::SeqCst) > 0 {
            CONNECT_RELEASED.notify_waiters();
        }
    }
}

/// What a session's rare waiters wait on.
#[derive(Debug, Default)]
struct Waits {
    /// Publishers waiting for room in this session's queue.
    room: Notify,
    room_waiters: AtomicUsize,
    /// A takeover waiting for the previous connection to finish ([`Session::closed`]).
    closed: Notify,
    /// The newest generation whose connection task finished since a takeover first waited
    /// here: recorded only once `Waits` exists, which [`Session::detach_current`] ensures
    /// before the connection it detaches can finish.
    finished: AtomicU64,
}

/// Facts about the session set at CONNECT time.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    pub protocol: ProtocolVersion,
    /// How the connection holding the session was let in, so a change of credentials (a
    /// reload of the password file) can tell whether it would still be.
    pub login: Login,
    /// In seconds (the protocol's unit; see [`SessionMeta::expiry`]): None = the session
    /// never expires (3.1.1 persistent session without `persistent_client_expiration`);
    /// Some(0) = ends with the connection. A u32, not a `Duration`: every session holds
    /// this, and it keeps the record in a smaller malloc class.
    pub expiry_secs: Option<u32>,
    pub username: Option<Arc<str>>,
    /// The address of the connection that last claimed the session (None once restored from
    /// the store), for the session list. Kept as the address, formatted only when listed: a
    /// string here cost every connection an allocation.
    pub peer: Option<PeerAddr>,
    /// The listener (index into `Config::listeners`) of the connection that last claimed the
    /// session, whose auth snapshot checks its deliveries; None once restored from the store
    /// (`[auth]` then answers until the client reconnects). A u16 (see
    /// [`SessionMeta::listener_index`]): it packs with the small fields, and every session
    /// holds this.
    pub listener: Option<u16>,
}

impl SessionMeta {
    /// How long the session outlives its connection; None = never.
    pub fn expiry(&self) -> Option<Duration> {
        self.expiry_secs.map(|s| Duration::from_secs(u64::from(s)))
    }

    /// Sets [`Self::expiry`], in whole seconds rounded up (a configured 500 ms outlives the
    /// connection by a second rather than not at all; ~136 years at most).
    pub fn set_expiry(&mut self, expiry: Option<Duration>) {
        self.expiry_secs = expiry.map(expiry_secs);
    }

    /// The session ends with its connection (expiry 0).
    pub fn ends_with_connection(&self) -> bool {
        self.expiry_secs == Some(0)
    }

    /// [`Self::listener`] as an index into `Config::listeners`.
    pub fn listener_index(&self) -> Option<usize> {
        self.listener.map(usize::from)
    }
}

/// `d` in whole seconds, rounded up, saturating (see [`SessionMeta::set_expiry`]).
pub fn expiry_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// How a connection was admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// Its username and password were checked against the password file or dynamic security.
    Password,
    /// Nothing was checked: no username, or no password file (anonymous access).
    Unchecked,
    /// A client certificate or an enhanced-authentication method vouched for it; the password
    /// file has no say.
    External,
}

/// The lock-free mirror of a control request's generation (see `Session::control_for`):
/// never 0 for a real generation (they start at 1), so 0 means "none".
fn hint(generation: u64) -> u32 {
    (generation as u32).max(1)
}

impl Session {
    pub fn new(client_id: Arc<str>, limits: Limits) -> Session {
        Session {
            client_id,
            state: Mutex::new(Rank::SessionState, SessionState::new(limits)),
            rung: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            control_for: AtomicU32::new(0),
            last_active: AtomicU32::new(0),
            keep_alive_slot: AtomicU32::new(u32::MAX),
            link: Mutex::new(Rank::SessionLink, Link::default()),
            meta: Mutex::new(
                Rank::SessionMeta,
                SessionMeta {
                    protocol: ProtocolVersion::V311,
                    login: Login::Unchecked,
                    expiry_secs: Some(0),
                    username: None,
                    peer: None,
                    listener: None,
                },
            ),
            connecting: AtomicBool::new(false),
            lag: AtomicU8::new(PROMPT),
            persistent: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            waits: OnceBox::new(),
        }
    }

    /// Serialises CONNECTs for this client id (held across a takeover's wait), so two
    /// connections never own one session. Cancellation-safe. Not first-come-first-served: a
    /// CONNECT that arrives while another waits may go first, which only matters for clients
    /// racing each other with one client id.
    pub async fn lock_connect(&self) -> ConnectGuard<'_> {
        if let Some(guard) = self.try_lock_connect() {
            return guard;
        }
        struct Waiting;
        impl Drop for Waiting {
            fn drop(&mut self) {
                CONNECT_WAITERS.fetch_sub(1, Ordering::SeqCst);
            }
        }
        CONNECT_WAITERS.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting;
        loop {
            let notified = CONNECT_RELEASED.notified();
            let mut notified = std::pin::pin!(notified);
            // Listening before looking: a release after the look wakes this.
            notified.as_mut().enable();
            if let Some(guard) = self.try_lock_connect() {
                return guard;
            }
            notified.await;
        }
    }

    /// The CONNECT claim of [`Self::lock_connect`] if nobody holds it now: for an operator's
    /// discard, which must not end a session that a CONNECT is claiming.
    pub fn try_lock_connect(&self) -> Option<ConnectGuard<'_>> {
        // Built only when taken: a guard dropped unused would release a claim held elsewhere.
        (!self.connecting.swap(true, Ordering::SeqCst)).then(|| ConnectGuard(self))
    }

    /// Runs `f` with the state locked. Keep `f` short and synchronous.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SessionState) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// Queues a delivery for a subscription taken from the trie when the session's state was
    /// at `epoch` (see [`SessionState::epoch`]) and wakes the connection; a refused delivery is
    /// handed back. The caller accounts the returned cost. A session cleared since then (clean
    /// start, or discarded) refuses it with [`DropReason::Unsubscribed`].
    pub fn try_deliver(&self, d: Delivery, epoch: u64) -> Result<Enqueued, (DropReason, Delivery)> {
        let stuck = self.is_stuck();
        let e = self.state.lock().try_enqueue_at(epoch, d, stuck)?;
        if e.cost > 0 {
            self.wake();
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
        self.lag.load(Ordering::Relaxed) == STUCK
    }

    /// Marks the subscriber stuck (or, with false, prompt again).
    pub fn set_stuck(&self, stuck: bool) {
        self.lag
            .store(if stuck { STUCK } else { PROMPT }, Ordering::Relaxed);
    }

    /// Empties the memory queue (see [`SessionState::shed`]) and marks the subscriber stuck,
    /// so it holds at most [`state::STUCK_QUEUE_BYTES`] until it takes messages again. For a
    /// subscriber that holds the saturated global budget and took nothing while publishers
    /// waited.
    pub fn shed(&self) -> Shed {
        let shed = self.state.lock().shed();
        self.set_stuck(true);
        shed
    }

    /// Whether publishers may be paced by this subscriber's queue depth: not when a publisher
    /// already waited for it in vain ([`Self::set_lagging`]) or it is stuck, until it drains.
    pub fn is_prompt(&self) -> bool {
        self.lag.load(Ordering::Relaxed) == PROMPT
    }

    /// A publisher paced by this subscriber's deep queue waited the whole grace without the
    /// queue draining: publishers stop pacing on it until it takes deliveries again. Unlike
    /// [`Self::set_stuck`] nothing is dropped because of it.
    pub fn set_lagging(&self) {
        let _ = self
            .lag
            .compare_exchange(PROMPT, LAGGING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Messages waiting in the queue (memory and stored backlog), not counting those in flight.
    pub fn queue_depth(&self) -> usize {
        self.with_state(|s| s.queue_depth())
    }

    /// Called after the connection took deliveries out of the queue: wakes publishers waiting
    /// for room and clears the lagging and stuck marks.
    pub fn made_room(&self) {
        if !self.is_prompt() {
            self.lag.store(PROMPT, Ordering::Relaxed);
        }
        if let Some(w) = self.waits.get() {
            if w.room_waiters.load(Ordering::Relaxed) > 0 {
                w.room.notify_waiters();
            }
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
        let w = self.waits();
        w.room_waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&w.room_waiters);
        w.room.notified().await;
    }

    /// Wakes the connection task (new deliveries). A wake with no connection waiting is kept
    /// until the next [`Self::poll_notified`], like a `Notify` permit.
    pub fn wake(&self) {
        // Rung and not yet looked at: the wake that rang it reaches the connection (or found
        // it polling, and it looks again after registering). A fan-out rings each subscriber
        // once per message; only the first of a run costs more than this load.
        if self.rung.load(Ordering::Acquire) {
            return;
        }
        self.rung.store(true, Ordering::Release);
        if !wake_batch::defer(&self.waker) {
            self.waker.wake();
        }
    }

    /// Ready once [`Self::wake`] was called since the last time this was ready; otherwise the
    /// task of `cx` is woken by the next one. Only the connection that owns the session polls.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A wake between the check and the registration found no waker: look again.
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    pub fn meta(&self) -> SessionMeta {
        self.meta.lock().clone()
    }

    pub fn set_meta(&self, meta: SessionMeta) {
        *self.meta.lock() = meta;
    }

    /// Whether the session is being discarded or was: a CONNECT must not resume it.
    pub fn is_removed(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Whether a connection owns the session now. Lock-free: routing asks it for every match.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Resolves once a discard that was under way when `notified` was created has finished.
    /// Create the future before [`Self::detach_current`] so its wake-up cannot be missed.
    /// May also resolve when another session's discard finishes: callers look again.
    pub fn discarded(&self) -> tokio::sync::futures::Notified<'static> {
        DISCARDS.notified()
    }

    fn waits(&self) -> &Waits {
        self.waits.get_or_init(Box::default)
    }

    /// Whether the discard of this session has finished (it is gone from the registry).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Takes the session from whichever connection has it; returns that connection's
    /// generation so the caller can kick it and wait. Err when the session was discarded
    /// meanwhile. Must be called with the CONNECT claim held ([`Self::lock_connect`]).
    pub fn detach_current(&self) -> Result<Option<Previous>, Removed> {
        let mut link = self.link.lock();
        if link.end != End::Live {
            return Err(Removed);
        }
        let previous = link.generation;
        link.generation += 1;
        self.connected.store(false, Ordering::Release);
        let attached = link.attached.take();
        if attached.is_some() {
            // Where that connection reports its end (`connection_finished`, after its
            // `release`, which takes this lock: so it sees `waits`). Takeovers are rare: most
            // sessions never allocate it.
            self.waits();
        }
        Ok(attached.map(|_| Previous {
            generation: previous,
        }))
    }

    /// Keeps the will of connection `generation`, which ended, until [`Self::due_will`] or
    /// [`Self::take_pending_will`]. Dropped when another connection owns the session since.
    pub fn set_pending_will(&self, generation: u64, will: PendingWill) {
        let mut link = self.link.lock();
        if link.generation == generation {
            link.pending_will = Some(Box::new((generation, will)));
        }
    }

    /// The pending will of connection `generation`, when its delay (or the session) ends and
    /// no connection claimed the session since.
    pub fn due_will(&self, generation: u64) -> Option<PendingWill> {
        let mut link = self.link.lock();
        match link.pending_will.as_deref() {
            Some((g, _)) if *g == generation && link.generation == generation => {
                link.pending_will.take().map(|b| b.1)
            }
            _ => None,
        }
    }

    /// Takes the pending will away for a CONNECT claiming the session (after
    /// [`Self::detach_current`], so a timer can no longer find it): the claim publishes it if
    /// the session ends, and drops it if the session continues [MQTT-3.1.3-9].
    pub fn take_pending_will(&self) -> Option<PendingWill> {
        self.link.lock().pending_will.take().map(|b| b.1)
    }

    /// Records a read from the client: a mark, not a clock reading (there are two reads per
    /// delivered QoS 1 message), which the keep-alive sweep turns into its own time (see
    /// [`crate::broker::keepalive`]). Written only when not marked yet.
    pub fn heard(&self) {
        if self.last_active.load(Ordering::Relaxed) != HEARD {
            self.last_active.store(HEARD, Ordering::Relaxed);
        }
    }

    /// Stamps the session with `now_ms` (keep-alive clock, never [`HEARD`]).
    pub fn stamp(&self, now_ms: u32) {
        self.last_active.store(now_ms, Ordering::Relaxed);
    }

    /// Turns a [`HEARD`] mark into `now_ms`; true when there was one. A mark made meanwhile
    /// is kept for the next sweep.
    pub fn stamp_if_heard(&self, now_ms: u32) -> bool {
        self.last_active
            .compare_exchange(HEARD, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// When the attached connection last read from its client (keep-alive clock), or
    /// [`HEARD`] when it has read since the sweep last looked.
    pub fn last_active(&self) -> u32 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Whether a connection ever owned this session.
    pub fn was_attached(&self) -> bool {
        self.link.lock().ever_attached
    }

    /// Sends a request to the attached connection, if any; never waits.
    pub fn send_control(&self, c: Control) {
        let mut link = self.link.lock();
        let posted = link.attached.is_some() && {
            let generation = link.generation;
            self.post_control(&mut link, generation, c)
        };
        drop(link);
        if posted {
            self.waker.wake();
        }
    }

    /// Sends a request to connection `generation` (one a takeover detached); never waits.
    pub fn send_control_to(&self, generation: u64, c: Control) {
        let posted = self.post_control(&mut self.link.lock(), generation, c);
        if posted {
            self.waker.wake();
        }
    }

    /// Puts `c` in the control slot for `generation` unless a request for it is already
    /// there (the first one wins). True when posted: the caller wakes the connection, once
    /// the link lock is released.
    fn post_control(&self, link: &mut Link, generation: u64, c: Control) -> bool {
        // A keep-alive request may turn out moot (a packet came in meanwhile): any other
        // request for the same connection takes its place.
        let replaceable = |old: &Control| {
            matches!(old, Control::KeepAliveExpired) && !matches!(c, Control::KeepAliveExpired)
        };
        let keep = match link.control.as_deref() {
            None => false,
            Some((g, old)) if *g == generation => !replaceable(old),
            // Another connection's request is kept while that connection owns the session
            // (a late request for a superseded connection must not hide it).
            Some((g, _)) => link.attached.is_some() && *g == link.generation,
        };
        if keep {
            return false;
        }
        link.control = Some(Box::new((generation, c)));
        self.control_for.store(hint(generation), Ordering::Release);
        true
    }

    /// The request for connection `generation`, once there is one; until then the task of
    /// `cx` is woken by the next request (or delivery: the same waker serves both). Only
    /// the connection of `generation` polls this.
    pub fn poll_control(&self, generation: u64, cx: &mut Context<'_>) -> Poll<Control> {
        if self.control_for.load(Ordering::Acquire) != hint(generation) {
            self.waker.register(cx.waker());
            // A request posted between the check and the registration found no waker.
            if self.control_for.load(Ordering::Acquire) != hint(generation) {
                return Poll::Pending;
            }
        }
        let mut link = self.link.lock();
        match link.control.take() {
            Some(b) if b.0 == generation => {
                self.control_for.store(0, Ordering::Release);
                Poll::Ready(b.1)
            }
            other => {
                // Only after 2^32 generations can the hint match another's request.
                link.control = other;
                self.waker.register(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Connection `generation`'s task has finished (will and session end included): wakes a
    /// takeover waiting in [`Self::closed`].
    pub fn connection_finished(&self, generation: u64) {
        // Orders this after a `detach_current` of this generation, which made `waits`.
        drop(self.link.lock());
        if let Some(w) = self.waits.get() {
            w.finished.fetch_max(generation, Ordering::AcqRel);
            w.closed.notify_waiters();
        }
    }

    /// Resolves once connection `generation` has finished ([`Self::connection_finished`]).
    /// Bound it with a timeout: a connection stuck in a write may take a while.
    pub async fn closed(&self, generation: u64) {
        let w = self.waits();
        loop {
            let notified = w.closed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if w.finished.load(Ordering::Acquire) >= generation {
                return;
            }
            notified.await;
        }
    }

    /// Makes a new connection the owner. Must be called with the CONNECT claim held ([`Self::lock_connect`]). A connection
    /// still attached (no [`Self::detach_current`] before) is told it was taken over.
    pub fn attach(&self) -> Ownership {
        let mut link = self.link.lock();
        let displaced = link.attached.is_some().then_some(link.generation);
        link.generation += 1;
        let generation = link.generation;
        link.ever_attached = true;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        link.attached = Some(Attached {
            since_unix_us: NonZeroU64::new(since).unwrap_or(NonZeroU64::MIN),
        });
        let posted = displaced.is_some_and(|g| {
            self.post_control(&mut link, g, Control::TakenOver { session_ends: true })
        });
        self.connected.store(true, Ordering::Release);
        self.state.lock().set_online(true);
        drop(link);
        if posted {
            self.waker.wake();
        }
        Ownership { generation }
    }

    /// Called by a connection as it ends, or by expiry. Returns true when `generation` still
    /// owned the session (it was not taken over), in which case the session is now offline.
    /// With `discard`, the session is marked as being discarded: from here a racing CONNECT
    /// waits (see [`Self::discarded`]) and then looks the client id up again, so it never
    /// attaches to a half-discarded session. The caller then drops the session's subscriptions
    /// and queue, with no session lock held, and calls [`Self::finish_discard`].
    pub fn release(&self, generation: u64, discard: bool) -> bool {
        let mut link = self.link.lock();
        if link.generation != generation || link.end != End::Live {
            return false;
        }
        link.attached = None;
        self.connected.store(false, Ordering::Release);
        if discard {
            link.end = End::Discarding;
            self.ending.store(true, Ordering::Release);
        }
        self.state.lock().set_online(false);
        true
    }

    /// Ends a discard begun by [`Self::release`] and wakes CONNECTs waiting for it.
    pub fn finish_discard(&self) {
        self.link.lock().end = End::Removed;
        self.gone.store(true, Ordering::Release);
        DISCARDS.notify_waiters();
    }

    /// When the connection that owns the session now claimed it; None while offline.
    pub fn connected_since(&self) -> Option<SystemTime> {
        let us = self.link.lock().attached.as_ref()?.since_unix_us.get();
        Some(SystemTime::UNIX_EPOCH + Duration::from_micros(us))
    }

    /// The generation of the connection that owns (or last owned) the session: what
    /// [`Self::release`] needs to end it from outside (an administrator's discard).
    pub fn generation(&self) -> u64 {
        self.link.lock().generation
    }

    /// Changes how long the session outlives its connection (an administrator's "discard
    /// on disconnect" sets zero).
    pub fn set_expiry(&self, expiry: Option<Duration>) {
        self.meta.lock().set_expiry(expiry);
    }

    /// Whether `generation` still owns the session.
    pub fn owned_by(&self, generation: u64) -> bool {
        self.link.lock().generation == generation
    }
}
