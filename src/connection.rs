//! One task per client connection: reads CONNECT under the connect timeout (on plain listeners,
//! by the listener's handshake deadline: [`ConnectionInfo::connect_deadline`]), then runs one
//! loop over the socket (reads and writes as separate sources), the session's delivery queue
//! (gated by the inflight window), control requests (takeover, shutdown, keep-alive expiry
//! from the broker-wide sweep in [`crate::broker::keepalive`]) and a rarely armed timer,
//! polled by hand so an idle connection's task holds no per-source futures. Protocol
//! decisions live in [`crate::protocol`]; this file owns I/O and framing.
//!
//! Backpressure: the write buffer is filled from the session queue only while it is below
//! `WRITE_HIGH`, so a client that does not read leaves its messages in its own bounded queue;
//! reads pause while the broker's global queue budget is saturated (for connections that publish).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

// tokio's clock, so keep-alive deadlines and the timers that wait for them agree (also under a
// paused test clock).
use tokio::time::Instant;

use bytes::BytesMut;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::broker::BrokerState;
use crate::codec::{self, Packet, ReasonCode};
use crate::protocol::{Close, ConnectOutcome, ConnectionInfo, Handler, Outbox};
use crate::session::wake_batch::WakeBatch;
use crate::session::{Control, Delivery};
use crate::storage::StoreError;

use handshake::{authenticate, first_connect};
use poll_io::{next_read_chunk, poll_read_some, poll_write_some, release_written};

mod handshake;
mod poll_io;

/// Fill the write buffer from the session queue only below this many bytes.
const WRITE_HIGH: usize = 64 * 1024;
/// The read size adapts to the traffic: a read that fills the buffer doubles the next one (up
/// to `READ_MAX`), a small one shrinks it, down to `READ_MIN`. Idle connections, the common
/// case by far, then hold a few hundred bytes instead of a full-size buffer.
const READ_MIN: usize = 256;
const READ_MAX: usize = 64 * 1024;
/// An emptied buffer (read or write) larger than this is released when traffic is light.
const BUF_KEEP: usize = 16 * 1024;
/// An emptied read buffer this small is kept at the smallest read size. Only acknowledgements
/// leave one: they are read in place (see `codec::decode`), while any other packet takes the
/// whole small buffer as its frame. So a subscriber acknowledging QoS 1 deliveries reads each
/// PUBACK without allocating (it was a malloc/free pair per message), and an idle connection,
/// whose PINGREQ takes the buffer, still holds none.
const ACK_BUF_KEEP: usize = 64;
/// How often a PUBLISH blocked on full queues retries subscribers that did not signal room.
const BLOCKED_POLL: Duration = Duration::from_millis(20);
/// When a refill found nothing yet (a write still on its way), try again after this.
const REFILL_RETRY: Duration = Duration::from_millis(20);
/// Stop reading while this many acknowledgements wait for the store (bounds what one connection
/// holds back; the writer's queue has its own bound, see `storage::writer`).
const MAX_PENDING_RECEIPTS: usize = 1024;
/// Packets handled per turn of the task before it yields to the others. One read can hold
/// thousands of small QoS 0 PUBLISH; without a bound a flooding publisher keeps a worker for
/// all of them while the subscribers it feeds wait for a turn to write, and their queues
/// overflow. With it, a subscriber's turn comes every few hundred packets of any publisher.
const PACKETS_PER_TURN: usize = 128;

/// Serves one client connection until it ends. Never panics on peer input; every close is
/// logged with its reason.
pub fn serve<S>(
    stream: S,
    info: ConnectionInfo,
    broker: Arc<BrokerState>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    serve_holding(stream, info, broker, ())
}

/// [`serve`], keeping `held` (the accept loop's connection permits) until the connection ends
/// or its future is dropped. The accept loop spawns this future as the task itself, so `held`
/// lives here rather than in a wrapper future: wrapping it in another `async` block would store
/// the connection's future twice (the captured one and the one being awaited).
pub fn serve_holding<S, H>(
    stream: S,
    info: ConnectionInfo,
    broker: Arc<BrokerState>,
    held: H,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Send + 'static,
{
    // The handshake runs in an allocation of its own, freed once it is done: a task keeps its
    // future's largest state for as long as it lives, and only the loop's state should be what
    // an idle connection costs. Built here, outside the async block: an async fn keeps its
    // arguments in its state for its whole life, so the stream and `info` would stay there,
    // beside the `Connection` that took them over.
    let accept = Box::pin(accept(stream, info, broker));
    async move {
        let Some(mut conn) = accept.await else {
            drop(held);
            return;
        };
        // Run by reference: the connection is stored once, in this future.
        let close = conn.run().await;
        // Boxed: closing is rare and its timeouts would otherwise enlarge every idle task.
        Box::pin(conn.finish(close)).await;
        // Used by value only here, so it is captured once (not copied into a local).
        drop(held);
    }
}

/// Reads CONNECT under the connect timeout, runs enhanced authentication and the session
/// claim; the connection to serve, or `None` when it was refused or closed (logged).
async fn accept<S>(
    stream: S,
    info: ConnectionInfo,
    broker: Arc<BrokerState>,
) -> Option<Connection<S>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // One stream, read and written by the same task: no split halves (an Arc and a lock).
    let mut io = stream;
    let mut rbuf = BytesMut::new();
    let connect = first_connect(&mut io, &mut rbuf, &broker, &info).await?;
    broker.metrics().connects.inc();
    let mut out = Outbox::default();
    let auth = authenticate(&mut io, &mut rbuf, &broker, &connect, &info.peer)
        .await
        .ok()?;
    let outcome = Handler::connect(&broker, connect, auth, &info, &mut out).await;
    let handler = match outcome {
        ConnectOutcome::Refused => {
            if io.write_all(&out.ready).await.is_ok() {
                broker.metrics().bytes_sent.add(out.ready.len() as u64);
            }
            let _ = io.shutdown().await;
            return None;
        }
        ConnectOutcome::Accepted(h) => h,
    };
    // The CONNACK waits for the session's record (or the old one's delete) to be durable.
    let connack_held = out.ready.is_empty() && !out.is_empty();
    let pipelined = !rbuf.is_empty();
    if !pipelined {
        // See `decode_all`: an idle connection holds no read buffer.
        rbuf = BytesMut::new();
    }
    Some(Connection {
        broker,
        // Stays boxed: moving it out would keep the emptied box allocated anyway.
        handler,
        io,
        rbuf,
        read_chunk: READ_MIN as u32,
        out,
        needs_flush: false,
        want_pump: true,
        deferred: None,
        // Packets a client sent right behind its CONNECT, without waiting for CONNACK (spec
        // 3.1.4 allows it), may already be in the buffer: no read would come for them.
        more_buffered: pipelined,
        control_seen: false,
        // The CONNACK (and a resumed session's resends) is what is queued.
        quiet: true,
        connack_held,
    })
}

struct Connection<S> {
    broker: Arc<BrokerState>,
    handler: Box<Handler>,
    /// The client's stream, read and written by this task only.
    io: S,
    rbuf: BytesMut,
    /// How much the next read asks for; see [`READ_MIN`]. At most [`READ_MAX`]: a u32 packs
    /// with the flags below.
    read_chunk: u32,
    /// Outgoing bytes; some may wait for the store to make something durable.
    out: Outbox,
    /// A write completed since the last flush (TLS and WebSocket buffer inside the stream).
    needs_flush: bool,
    /// The session queue may hold something this connection can send now.
    want_pump: bool,
    /// The rare sources (a disk backlog read, the loop's timer), allocated while one is in
    /// use: idle connections have none, and every idle connection's task holds this field.
    deferred: Option<Box<Deferred>>,
    /// `decode_all` stopped at `PACKETS_PER_TURN` with whole packets still buffered.
    more_buffered: bool,
    /// The control slot was looked at in this poll of the task (see `poll_turn`).
    control_seen: bool,
    /// What was queued last answers a CONNECT, SUBSCRIBE, UNSUBSCRIBE or PINGREQ, after which
    /// a connection usually goes quiet, and no delivery since: the write buffer is released
    /// once it is written, so an idle connection holds none. A connection receiving
    /// deliveries keeps its buffer (a malloc/free pair per write otherwise).
    quiet: bool,
    /// The CONNACK is still held behind a store receipt: nothing may be written before it
    /// [MQTT-3.2.0-1], not even the DISCONNECT of a takeover that came first.
    connack_held: bool,
}

/// A connection's rarely used sources (see [`Connection`]'s `deferred`); `turn` frees them
/// once none is in use.
#[derive(Default)]
struct Deferred {
    /// A read of the session's disk backlog in progress.
    refill: Option<Refill>,
    /// After a refill found nothing yet (a write still on its way), try again at this time.
    refill_after: Option<Instant>,
    /// The loop's one timer (see `turn`), for the rare deadlines: the end of a throttle, the
    /// retry of an empty refill, the poll of a blocked PUBLISH. Allocated while one is set;
    /// keep-alive has no timer here (see [`crate::broker::keepalive`]).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Deferred {
    fn is_idle(&self) -> bool {
        self.refill.is_none() && self.refill_after.is_none() && self.timer.is_none()
    }
}

/// The rarely enabled sources a turn of the `run` loop waits on (global pause, a blocked
/// PUBLISH), built and boxed only for a turn that waits on one: such a future waits on a
/// `Notified` (~100 bytes), which every idle connection task would otherwise carry. They own
/// what they wait on (an `Arc`), so the turn holds them without borrowing the connection.
struct Arms {
    relieved: Option<ArmFuture>,
    room: Option<ArmFuture>,
}

/// The source a turn of the `run` loop found ready, with what it yielded.
enum Woke {
    Control(Control),
    Written(std::io::Result<usize>),
    Settled(Result<BytesMut, StoreError>),
    Yielded,
    Read(std::io::Result<(usize, bool)>),
    Delivery,
    Relieved,
    Refill(Result<Vec<Delivery>, StoreError>),
    Room,
    Timer,
}

/// What one turn of the `run` loop waits for: the guards of its `select!` and the deadlines of
/// its timer, computed once per turn.
struct Turn {
    /// Too much unsent or unsettled output: stop reading.
    backed_up: bool,
    /// The broker's global queue budget is saturated and this connection publishes.
    paused: bool,
    /// A 3.x client over its publish rate is not read until its bucket refills.
    throttled: bool,
    /// The subscriber a blocked PUBLISH waits for.
    blocked_on: Option<Arc<crate::session::Session>>,
    writing: bool,
    settling: bool,
    /// An empty refill is to be retried (at `refill_after`).
    refill_due: bool,
    /// The task woke itself to let others run before handling more buffered packets.
    yielded: bool,
    /// What this turn waits on besides the connection's own sources; `None` in most turns.
    arms: Option<Box<Arms>>,
}

impl Turn {
    /// The socket is read only when nothing holds reading back.
    fn may_read(&self) -> bool {
        !self.paused && !self.backed_up && !self.throttled && self.blocked_on.is_none()
    }

    /// Reading is held back by the broker's choice, not because the client does not read
    /// what it is sent (`backed_up`).
    fn holds_reading(&self) -> bool {
        self.paused || self.throttled || self.blocked_on.is_some()
    }
}

/// The close a control request asks for.
fn control_close(ctl: Control) -> Close {
    match ctl {
        Control::TakenOver { session_ends } => Close::TakenOver { session_ends },
        Control::Disconnect(rc, why) => Close::Server(rc, why),
        Control::Shutdown => Close::ServerShutdown,
        Control::KeepAliveExpired => Close::KeepAliveTimeout,
    }
}

type Refill =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Delivery>, StoreError>> + Send>>;

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Connection<S> {
    async fn run(&mut self) -> Close {
        // Shutdown arrives as a control request ([`Control::Shutdown`]); one that began
        // before this connection claimed its session is seen here.
        if self.broker.is_stopping() {
            return Close::ServerShutdown;
        }
        loop {
            self.pump();
            // One local for the turn: the poll closure below captures it (and `self`) by one
            // reference each, and the task keeps the closure between polls.
            let mut turn = self.turn();
            // Every source yields Err(close) to end the connection, Ok(()) to go round again.
            let step = std::future::poll_fn(|cx| {
                let woke = ready!(self.poll_turn(cx, &mut turn));
                let queued = !matches!(woke, Woke::Written(_) | Woke::Control(_));
                Poll::Ready(
                    self.on_woke(woke, &turn)
                        .and_then(|()| self.write_now(cx, queued)),
                )
            })
            .await;
            if let Err(close) = step {
                return close;
            }
        }
    }

    /// Polls what `turn` waits for, in priority order, and says which source is ready. The
    /// loop is written against poll functions rather than `select!`: a `select!` keeps every
    /// arm's future in the task between turns, several hundred bytes in every idle
    /// connection; polling the sources directly keeps nothing but the socket's own waker
    /// registrations. Every source here is cancellation-safe: a `Pending` source loses
    /// nothing (a write or read advances its buffer only by what it did, a receipt or refill
    /// stays stored until it resolves, the session's doorbell keeps its wake).
    fn poll_turn(&mut self, cx: &mut Context<'_>, turn: &mut Turn) -> Poll<Woke> {
        // A request ends the loop: it is taken once. Looked at once per poll of the task: its
        // waker stays registered until that poll ends, and a request posted meanwhile wakes
        // the task again, whose next poll looks first.
        let first = !self.control_seen;
        if first {
            if let Poll::Ready(ctl) = self.handler.poll_control(cx) {
                return Poll::Ready(Woke::Control(ctl));
            }
            self.control_seen = true;
        }
        if turn.writing {
            let r = poll_write_some(cx, &mut self.io, &mut self.out.ready, &mut self.needs_flush);
            if let Poll::Ready(r) = r {
                return Poll::Ready(Woke::Written(r));
            }
        }
        if turn.settling {
            if let Poll::Ready(r) = self.out.poll_settle(cx) {
                return Poll::Ready(Woke::Settled(r));
            }
        }
        // The rest of a large read, after letting the other tasks have a turn: the first poll
        // wakes the task again at the back of the run queue, the second goes on.
        if self.more_buffered && !turn.paused && !turn.backed_up {
            if turn.yielded {
                return Poll::Ready(Woke::Yielded);
            }
            turn.yielded = true;
            cx.waker().wake_by_ref();
        }
        // The first turn of a poll looks at the doorbell before the socket, whose waker is
        // still registered when the doorbell woke the task; later turns read first, so a
        // doorbell rung over and over cannot hold the reads back.
        if first && self.rung(cx) {
            return Poll::Ready(Woke::Delivery);
        }
        if !self.more_buffered && turn.may_read() {
            let r = poll_read_some(cx, &mut self.io, &mut self.rbuf, self.read_chunk as usize);
            if let Poll::Ready(r) = r {
                return Poll::Ready(Woke::Read(r));
            }
        }
        if !first && self.rung(cx) {
            return Poll::Ready(Woke::Delivery);
        }
        if let Some(arms) = turn.arms.as_mut() {
            if poll_arm(cx, &mut arms.relieved) {
                return Poll::Ready(Woke::Relieved);
            }
        }
        if let Some(refill) = self.deferred.as_mut().and_then(|d| d.refill.as_mut()) {
            if let Poll::Ready(r) = refill.as_mut().poll(cx) {
                return Poll::Ready(Woke::Refill(r));
            }
        }
        // A PUBLISH waits for room in a full subscriber queue: retry when that subscriber
        // drains (the timer polls for the others).
        if let Some(arms) = turn.arms.as_mut() {
            if poll_arm(cx, &mut arms.room) {
                return Poll::Ready(Woke::Room);
            }
        }
        // `turn` dropped the timer when it has no deadline.
        if self
            .deferred
            .as_mut()
            .and_then(|d| d.timer.as_mut())
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready(Woke::Timer);
        }
        self.control_seen = false;
        Poll::Pending
    }

    /// The session's doorbell rang since the last look (only looked at while no pump is due).
    fn rung(&mut self, cx: &mut Context<'_>) -> bool {
        !self.want_pump && self.handler.session().poll_notified(cx).is_ready()
    }

    /// Acts on the source `poll_turn` found ready: Err(close) ends the connection.
    fn on_woke(&mut self, woke: Woke, turn: &Turn) -> Result<(), Close> {
        match woke {
            // A packet read since the sweep looked keeps the connection open.
            Woke::Control(Control::KeepAliveExpired) if !self.handler.keep_alive_expired() => {
                Ok(())
            }
            // So does silence of the broker's own making: while it holds reading back (the
            // global budget's pause, a publish-rate throttle, a PUBLISH waiting for room) the
            // client's packets, PINGREQ included, wait unread in the socket. The clock starts
            // again; a client that is really gone is found once reading resumes.
            Woke::Control(Control::KeepAliveExpired) if turn.holds_reading() => {
                self.handler.session().heard();
                Ok(())
            }
            Woke::Control(ctl) => Err(control_close(ctl)),
            Woke::Written(r) => self.on_written(r),
            Woke::Settled(r) => self.on_settled(r),
            Woke::Yielded => {
                self.more_buffered = false;
                self.decode_all()
            }
            Woke::Read(r) => self.on_read(r),
            Woke::Delivery => {
                self.want_pump = true;
                Ok(())
            }
            Woke::Relieved => Ok(()),
            Woke::Refill(r) => self.on_refill(r),
            // Then carry on with what is buffered.
            Woke::Room => self.retry_blocked(),
            Woke::Timer => self.on_timer(turn),
        }
    }

    /// Writes what handling a source just queued (an acknowledgement, deliveries) in the same
    /// turn, so the task does not go round every source once more only to find the socket
    /// writable. `queued` is false after a write (a partial one found the socket full) and a
    /// control request. A `Pending` write keeps the waker registered; the next turn's
    /// `writing` polls it again.
    fn write_now(&mut self, cx: &mut Context<'_>, queued: bool) -> Result<(), Close> {
        if !queued {
            return Ok(());
        }
        self.pump();
        if self.out.ready.is_empty() {
            return Ok(());
        }
        match poll_write_some(cx, &mut self.io, &mut self.out.ready, &mut self.needs_flush) {
            Poll::Ready(r) => self.on_written(r),
            Poll::Pending => Ok(()),
        }
    }

    /// Fills the write buffer from the session queue while it is below `WRITE_HIGH`; when the
    /// memory queue has run dry, starts reading the disk backlog.
    fn pump(&mut self) {
        if self.want_pump && self.out.len() < WRITE_HIGH && !self.out.parked() {
            let before = self.out.len();
            self.want_pump = self.handler.pump(&mut self.out, WRITE_HIGH);
            if self.out.len() != before {
                self.quiet = false;
            }
            if !self.want_pump {
                self.start_refill();
            }
        }
    }

    /// What this turn of the loop waits for, and the timer armed for the earliest deadline.
    fn turn(&mut self) -> Turn {
        // A client that does not read its acks stops being read (TCP backpressure), so its
        // write buffer stays bounded; so does one whose write waits for room in the full
        // store queue (the `settle` branch waits for that room).
        let backed_up = self.out.len() >= WRITE_HIGH * 2
            || self.out.pending() >= MAX_PENDING_RECEIPTS
            || self.out.parked();
        let paused = self.broker.budget().is_saturated() && self.handler.should_pause_reads();
        let throttled = self.handler.throttled_until().map(Instant::from_std);
        let blocked_on = self.handler.blocked_on();
        let writing = !self.out.ready.is_empty() || self.needs_flush;
        let settling = self.out.pending() > 0;
        // One timer serves every deadline: the end of a throttle, the retry of an empty
        // refill, and the poll of a blocked PUBLISH. Idle connections have none, and no timer.
        let refill_due = self
            .deferred
            .as_ref()
            .and_then(|d| d.refill_after.filter(|_| d.refill.is_none()));
        let blocked_poll = blocked_on.as_ref().map(|_| Instant::now() + BLOCKED_POLL);
        let next = [throttled, refill_due, blocked_poll]
            .into_iter()
            .flatten()
            .min();
        match next {
            None => {
                if let Some(d) = self.deferred.as_mut() {
                    d.timer = None;
                    if d.is_idle() {
                        self.deferred = None;
                    }
                }
            }
            Some(at) => {
                let d = self.deferred.get_or_insert_with(Box::default);
                match d.timer.as_mut() {
                    Some(t) if t.deadline() != at => t.as_mut().reset(at),
                    Some(_) => {}
                    None => d.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
        }
        let arms = (paused || blocked_on.is_some()).then(|| {
            // Handles of their own, taken only for such a turn: the arms live while the turn's
            // poll borrows `self`.
            let broker = paused.then(|| self.broker.clone());
            Box::new(Arms {
                relieved: broker
                    .map(|b| Box::pin(async move { b.budget().relieved().await }) as ArmFuture),
                room: blocked_on
                    .clone()
                    .map(|s| Box::pin(async move { s.room_made().await }) as ArmFuture),
            })
        });
        Turn {
            backed_up,
            paused,
            throttled: throttled.is_some(),
            blocked_on,
            writing,
            settling,
            refill_due: refill_due.is_some(),
            yielded: false,
            arms,
        }
    }

    /// A write went out (or failed).
    fn on_written(&mut self, r: std::io::Result<usize>) -> Result<(), Close> {
        match r {
            Ok(n) => self.broker.metrics().bytes_sent.add(n as u64),
            Err(e) => return Err(Close::Io(e)),
        }
        release_written(&mut self.out.ready, self.quiet, self.want_pump);
        // No pump for the write's sake: `want_pump` is still true when the last pump stopped
        // at `WRITE_HIGH` with more to send, and false only when the queue had nothing the
        // window allowed; the doorbell or an acknowledgement says when that changes.
        Ok(())
    }

    /// The store made something durable: the bytes that waited for it can go out.
    fn on_settled(&mut self, r: Result<BytesMut, StoreError>) -> Result<(), Close> {
        match r {
            Ok(released) => {
                self.connack_held &= released.is_empty();
                self.out.ready.extend_from_slice(&released);
                Ok(())
            }
            Err(e) => {
                tracing::error!(client_id = %self.handler.client_id(), error = %e,
                    "storage failed: closing without acknowledging");
                Err(Close::Server(
                    ReasonCode::UNSPECIFIED_ERROR,
                    "storage failure",
                ))
            }
        }
    }

    /// A read came in: handles the whole packets it completed.
    fn on_read(&mut self, r: std::io::Result<(usize, bool)>) -> Result<(), Close> {
        match r {
            Ok((0, _)) => Err(Close::PeerClosed),
            Ok((n, filled)) => {
                self.read_chunk = next_read_chunk(self.read_chunk as usize, n, filled) as u32;
                self.broker.metrics().bytes_received.add(n as u64);
                self.handler.touch();
                self.decode_all()
            }
            Err(e) => Err(Close::Io(e)),
        }
    }

    /// A read of the session's disk backlog finished.
    fn on_refill(&mut self, r: Result<Vec<Delivery>, StoreError>) -> Result<(), Close> {
        if let Some(d) = self.deferred.as_mut() {
            d.refill = None;
        }
        match r {
            Ok(entries) => {
                if self.handler.apply_refill(entries) == 0 {
                    let d = self.deferred.get_or_insert_with(Box::default);
                    d.refill_after = Some(Instant::now() + REFILL_RETRY);
                }
                self.want_pump = true;
                Ok(())
            }
            Err(e) => {
                tracing::error!(client_id = %self.handler.client_id(), error = %e,
                    "cannot read the session's stored queue");
                Err(Close::Server(
                    ReasonCode::UNSPECIFIED_ERROR,
                    "storage failure",
                ))
            }
        }
    }

    /// The loop's timer fired: acts on every deadline of `turn` that has passed.
    fn on_timer(&mut self, turn: &Turn) -> Result<(), Close> {
        let now = Instant::now();
        let refill_after = self.deferred.as_ref().and_then(|d| d.refill_after);
        if turn.refill_due && refill_after.is_some_and(|at| now >= at) {
            if let Some(d) = self.deferred.as_mut() {
                d.refill_after = None;
            }
            self.start_refill();
        }
        // A 3.x client over its publish rate: resume once the bucket has refilled, and handle
        // what is already buffered first.
        let throttled = self.handler.throttled_until().map(Instant::from_std);
        if turn.throttled && throttled.is_some_and(|at| now >= at) {
            self.handler.clear_throttle();
            self.decode_all()?;
        }
        if turn.blocked_on.is_some() {
            self.retry_blocked()?;
        }
        Ok(())
    }

    /// Retries a PUBLISH blocked on full subscriber queues; once it is through, handles what
    /// is buffered behind it.
    fn retry_blocked(&mut self) -> Result<(), Close> {
        self.handler.retry_blocked(&mut self.out);
        if self.handler.blocked_on().is_none() {
            self.decode_all()?;
        }
        Ok(())
    }

    /// Starts reading the session's disk backlog when its memory queue ran low.
    fn start_refill(&mut self) {
        if let Some(d) = &self.deferred {
            if d.refill.is_some() || d.refill_after.is_some() {
                return;
            }
        }
        let Some(p) = self.broker.persistence().cloned() else {
            return;
        };
        if let Some((client_id, from, max)) = self.handler.refill_request() {
            let refill = Box::pin(p.read_queue(client_id, from, max));
            self.deferred.get_or_insert_with(Box::default).refill = Some(refill);
        }
    }

    /// Handles every whole packet in the read buffer.
    fn decode_all(&mut self) -> Result<(), Close> {
        let max_in = self.broker.config().mqtt.max_packet_size;
        // Subscribers' connections are woken once, when the pass ends (see `wake_batch`).
        let _wakes = WakeBatch::open();
        // Packet ids of PUBACKs read back to back, completed together.
        let mut acks: SmallVec<[u16; PACKETS_PER_TURN]> = SmallVec::new();
        // Stop at a throttle or a blocked PUBLISH: the rest stays buffered until then.
        let mut handled = 0;
        while self.handler.throttled_until().is_none() && self.handler.blocked_on().is_none() {
            // A write waiting for room in the store's queue stops handling too; the rest is
            // handled once it is queued.
            if handled == PACKETS_PER_TURN || self.out.parked() {
                self.take_acks(&mut acks);
                self.more_buffered = true;
                return Ok(());
            }
            handled += 1;
            match codec::decode(&mut self.rbuf, self.handler.version(), max_in) {
                Ok(Some(Packet::PubAck(r))) => {
                    self.broker.metrics().packets_received.inc();
                    self.quiet = false;
                    acks.push(r.packet_id);
                }
                Ok(Some(packet)) => {
                    // Acknowledgements read before this packet are handled before it.
                    self.take_acks(&mut acks);
                    self.broker.metrics().packets_received.inc();
                    self.quiet = matches!(
                        packet,
                        Packet::PingReq | Packet::Subscribe(_) | Packet::Unsubscribe(_)
                    );
                    if self.handler.handle(packet, &mut self.out)? {
                        self.want_pump = true;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.take_acks(&mut acks);
                    return Err(Close::Decode(e));
                }
            }
        }
        self.take_acks(&mut acks);
        // A connection with light traffic (most of them: idle ones send a PINGREQ now and
        // then) holds no read buffer between reads, only a tiny one acknowledgements left; a
        // busy one keeps a buffer that fits.
        let chunk = self.read_chunk as usize;
        let keep = if chunk == READ_MIN {
            ACK_BUF_KEEP
        } else {
            (4 * chunk).min(BUF_KEEP)
        };
        if self.rbuf.is_empty() && self.rbuf.capacity() > keep {
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Completes the PUBACKs `decode_all` collected.
    fn take_acks(&mut self, acks: &mut SmallVec<[u16; PACKETS_PER_TURN]>) {
        if !acks.is_empty() {
            if self.handler.on_pubacks(acks) {
                self.want_pump = true;
            }
            acks.clear();
        }
    }

    /// Sends what the close requires (v5 DISCONNECT), flushes, and ends the session's
    /// connection (will, session end) through the handler.
    async fn finish(mut self, close: Close) {
        // Acknowledgements still waiting for the store are not sent: the client resends. Their
        // writes still reach the store, before those the end of the connection causes.
        self.out.queue_parked();
        if self.connack_held && !self.release_connack().await {
            // No CONNACK: nothing else either [MQTT-3.2.0-1].
            let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
            self.handler.finish(close);
            return;
        }
        self.handler.closing(&close, &mut self.out.ready);
        if !self.out.ready.is_empty() && close.can_write() {
            let flush = async {
                self.io.write_all(&self.out.ready).await?;
                self.io.flush().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
        self.handler.finish(close);
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Connection<S> {
    /// Waits (bounded) for the receipt the CONNACK is held behind, for a connection that
    /// closes before it was sent (taken over at once): the CONNACK then goes before the
    /// DISCONNECT. False when the store did not answer in time or failed.
    async fn release_connack(&mut self) -> bool {
        let settle = std::future::poll_fn(|cx| self.out.poll_settle(cx));
        match tokio::time::timeout(Duration::from_secs(1), settle).await {
            Ok(Ok(released)) if !released.is_empty() => {
                self.out.ready.extend_from_slice(&released);
                true
            }
            _ => false,
        }
    }
}

/// A rarely enabled source's future (see [`Arms`]).
type ArmFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls a rarely enabled source, if it is enabled this turn; true once it is ready.
fn poll_arm(cx: &mut Context<'_>, arm: &mut Option<ArmFuture>) -> bool {
    arm.as_mut().is_some_and(|f| f.as_mut().poll(cx).is_ready())
}
