//! Keep-alive for every connection at once: one sweep task for the broker, every
//! [`SWEEP_EVERY`], over the live connections that have a keep-alive, instead of a timer in
//! each connection task (a boxed tokio `Sleep` and its deadline bookkeeping in every idle
//! connection). Mosquitto does the same. A connection marks its session on every read
//! ([`Session::heard`]: no clock reading on the data path); the sweep turns a mark into its
//! own time ([`KeepAlive::now_ms`]), so a session's stamp is the first sweep after its last
//! read, and asks the connections whose stamp is older than their 1.5 x keep-alive
//! [MQTT-3.1.2-24] to close, through the session's control slot
//! ([`crate::session::Control::KeepAliveExpired`]). The connection looks at its mark again
//! before it closes, so a packet read in the meantime wins. A close never comes before the
//! deadline (the stamp is never earlier than the read), and at most two `SWEEP_EVERY` after
//! it (one to stamp, one to find the stamp too old).
//!
//! Locking: `live` (rank `KeepAlive`) is a leaf, held only to add, remove or collect entries;
//! the sweep sends its requests after releasing it. Offline sessions are never in it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::{Control, Session, HEARD};
use crate::sync::{Mutex, Rank};

/// How often the sweep runs: a keep-alive close comes at most twice this late.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// `timeout` in ms, saturating (at most 65,535 s x 1.5: well within a u32).
fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

/// A live connection with a keep-alive.
struct Live {
    session: Arc<Session>,
    generation: u64,
    /// 1.5 x keep-alive, in ms (at most 65,535 s x the factor: well within a u32).
    timeout_ms: u32,
}

/// The broker's keep-alive registry; see the module doc.
pub struct KeepAlive {
    /// Stamps count milliseconds from here (wrapping: a u32 lasts 49 days, and no deadline
    /// is further than ~27 hours).
    epoch: Instant,
    live: Mutex<Vec<Live>>,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            epoch: Instant::now(),
            live: Mutex::new(Rank::KeepAlive, Vec::new()),
        }
    }
}

impl KeepAlive {
    /// The clock of the stamps: ms since the broker started, wrapping, never [`HEARD`].
    pub fn now_ms(&self) -> u32 {
        (self.epoch.elapsed().as_millis() as u32).min(HEARD - 1)
    }

    /// Whether `session`, whose connection must hear from its client every `timeout`, has
    /// been silent that long at `now_ms`: false when it was read from since the last sweep.
    pub fn is_silent(session: &Session, now_ms: u32, timeout: Duration) -> bool {
        Self::silent_ms(session, now_ms, timeout_ms(timeout))
    }

    fn silent_ms(session: &Session, now_ms: u32, timeout_ms: u32) -> bool {
        let stamp = session.last_active();
        stamp != HEARD && now_ms.wrapping_sub(stamp) >= timeout_ms
    }

    /// Watches connection `generation` of `session`, which must hear from its client every
    /// `timeout`; its stamp starts now. Undone by [`Self::remove`].
    pub fn add(&self, session: &Arc<Session>, generation: u64, timeout: Duration) {
        session.stamp(self.now_ms());
        let timeout_ms = timeout_ms(timeout);
        let mut live = self.live.lock();
        session
            .keep_alive_slot
            .store(live.len() as u32, Ordering::Relaxed);
        live.push(Live {
            session: session.clone(),
            generation,
            timeout_ms,
        });
    }

    /// Stops watching connection `generation` of `session` (no-op when it is not watched).
    pub fn remove(&self, session: &Arc<Session>, generation: u64) {
        let mut live = self.live.lock();
        let ours = |l: &Live| Arc::ptr_eq(&l.session, session) && l.generation == generation;
        // The slot is only written under `live`, so it is current here; it names another
        // connection's entry only when two connections of one session overlapped (a takeover
        // that timed out): then look for ours.
        let slot = session.keep_alive_slot.load(Ordering::Relaxed) as usize;
        let slot = if live.get(slot).is_some_and(ours) {
            slot
        } else {
            match live.iter().position(ours) {
                Some(i) => i,
                None => return,
            }
        };
        live.swap_remove(slot);
        // (After an overlap the session's slot is the other connection's: left alone.)
        if session.keep_alive_slot.load(Ordering::Relaxed) as usize == slot {
            session.keep_alive_slot.store(u32::MAX, Ordering::Relaxed);
        }
        if let Some(moved) = live.get(slot) {
            moved
                .session
                .keep_alive_slot
                .store(slot as u32, Ordering::Relaxed);
        }
        // Give memory back after a mass disconnect.
        if live.capacity() > 64 && live.len() < live.capacity() / 4 {
            let keep = live.len() * 2;
            live.shrink_to(keep);
        }
    }

    /// Stamps the sessions read from since the last sweep with `now_ms`, and collects the
    /// connections silent past their deadline, under the lock (the stamps are atomics).
    fn expired(&self, now_ms: u32) -> Vec<(Arc<Session>, u64)> {
        let live = self.live.lock();
        let mut late = Vec::new();
        for l in live.iter() {
            if l.session.stamp_if_heard(now_ms) {
                continue;
            }
            if Self::silent_ms(&l.session, now_ms, l.timeout_ms) {
                late.push((l.session.clone(), l.generation));
            }
        }
        late
    }

    /// How many connections are watched.
    pub fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One sweep: asks every connection silent past its deadline to close. Returns how
    /// many were asked.
    pub fn sweep(&self) -> usize {
        let expired = self.expired(self.now_ms());
        // The lock is released: the requests take session locks and wake tasks.
        for (session, generation) in &expired {
            session.send_control_to(*generation, Control::KeepAliveExpired);
        }
        expired.len()
    }

    /// Sweeps every [`SWEEP_EVERY`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Limits;

    fn session(id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            Arc::from(id),
            Limits {
                max_queued_messages: 10,
                max_queued_bytes: 0,
            },
        ))
    }

    #[test]
    fn only_connections_silent_past_their_deadline_expire() {
        let k = KeepAlive::default();
        let quiet = session("quiet");
        let busy = session("busy");
        k.add(&quiet, 1, Duration::from_millis(1500));
        k.add(&busy, 1, Duration::from_millis(1500));
        let now = k.now_ms();
        assert!(k.expired(now).is_empty(), "nobody is late yet");
        busy.heard();
        let late = k.expired(now + 2000);
        assert_eq!(late.len(), 1);
        assert!(Arc::ptr_eq(&late[0].0, &quiet));
        // That sweep stamped busy's read with its own time: silent from then on, it is late
        // one timeout after that sweep, not before.
        assert_eq!(k.expired(now + 3499).len(), 1, "only quiet");
        assert_eq!(k.expired(now + 3500).len(), 2);
    }

    #[test]
    fn a_read_since_the_sweep_looked_is_never_silent() {
        let k = KeepAlive::default();
        let s = session("s");
        k.add(&s, 1, Duration::from_millis(1500));
        let now = k.now_ms();
        let timeout = Duration::from_millis(1500);
        assert!(KeepAlive::is_silent(&s, now + 1500, timeout));
        s.heard();
        assert!(
            !KeepAlive::is_silent(&s, now + 1500, timeout),
            "a mark wins"
        );
        assert!(s.stamp_if_heard(now + 10));
        assert!(!s.stamp_if_heard(now + 20), "one mark, one stamp");
        assert_eq!(s.last_active(), now + 10);
    }

    #[test]
    fn overlapping_connections_of_one_session_are_each_removed() {
        let k = KeepAlive::default();
        let s = session("twice");
        let other = session("other");
        k.add(&s, 1, Duration::from_secs(1));
        k.add(&other, 1, Duration::from_secs(1));
        // A takeover that timed out: the new connection registers before the old one left.
        k.add(&s, 3, Duration::from_secs(1));
        k.remove(&s, 1);
        assert_eq!(k.len(), 2);
        k.remove(&s, 3);
        k.remove(&other, 1);
        assert!(k.is_empty());
    }

    #[test]
    fn removal_keeps_the_other_slots_right() {
        let k = KeepAlive::default();
        let s: Vec<_> = (0..4).map(|i| session(&i.to_string())).collect();
        for x in &s {
            k.add(x, 7, Duration::from_secs(1));
        }
        k.remove(&s[0], 7);
        k.remove(&s[0], 7);
        k.remove(&s[2], 6);
        assert_eq!(k.len(), 3, "a stale generation removes nothing");
        k.remove(&s[2], 7);
        k.remove(&s[3], 7);
        k.remove(&s[1], 7);
        assert!(k.is_empty());
    }

    /// The sweep's cost at 20,000 live connections (`cargo test --release -- --ignored
    /// --nocapture sweep_cost`): what every `SWEEP_EVERY` costs the broker.
    #[test]
    #[ignore]
    fn sweep_cost_at_20k_connections() {
        let k = KeepAlive::default();
        let s: Vec<_> = (0..20_000).map(|i| session(&i.to_string())).collect();
        for x in &s {
            k.add(x, 1, Duration::from_secs(90));
        }
        let t = std::time::Instant::now();
        let rounds = 100;
        for _ in 0..rounds {
            assert_eq!(k.sweep(), 0);
        }
        println!("sweep over 20,000 connections: {:?}", t.elapsed() / rounds);
    }
}
