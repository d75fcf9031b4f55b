//! Relief for a saturated global budget (overload rule (b)) that waiting alone cannot bring.
//!
//! Above `limits.global_queued_bytes_high` the broker stops reading publishers until the
//! queues drain. That only helps when the queues do drain: one connected subscriber that stops
//! reading large messages (its queue is below `max_queued_messages`, so rule (c) never calls
//! it stuck), or an offline session kept in memory, can hold the whole budget, and every
//! publisher on the broker would then wait until that client leaves, which with keep-alive off
//! is never. So while the budget stays saturated, this task marks every subscriber holding
//! queued bytes, waits [`SHED_AFTER`], and sheds the queues of those that took nothing in that
//! time: unsent shared-subscription messages go to another member of their group, what else is
//! only in memory is dropped, and a persistent session's stored messages move back to its disk
//! backlog. A shed subscriber is marked stuck: it holds at most `STUCK_QUEUE_BYTES` until it
//! takes messages again. The drops are counted and logged; the budget falls and publishers are
//! read again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BrokerState, STUCK_AFTER};
use crate::session::Session;

/// How long a subscriber marked while the budget is saturated has to take a message before its
/// queue is shed. Longer than [`STUCK_AFTER`]: shedding drops messages, where rule (c) only
/// stops waiting.
pub const SHED_AFTER: Duration = Duration::from_secs(1);

/// Shed queues named one by one in the log per round; the rest are only counted.
const LOGGED_PER_ROUND: usize = 10;

impl BrokerState {
    /// Runs until `shutdown`: each time the budget stays saturated for [`STUCK_AFTER`], marks
    /// the subscribers holding queued bytes and, if it is still saturated [`SHED_AFTER`]
    /// later, sheds the queues of those that took nothing meanwhile.
    pub async fn relieve_budget(self: Arc<Self>, shutdown: CancellationToken) {
        // Whether this saturation already said that nothing could be shed (said once).
        let mut said = false;
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.budget.exceeded() => {}
            }
            if !self.saturated_after(STUCK_AFTER, &shutdown).await {
                said = false;
                continue;
            }
            let marked = self.mark_holders();
            if !self.saturated_after(SHED_AFTER, &shutdown).await {
                said = false;
            } else if self.shed_idle(marked) == 0 && !said {
                said = true;
                tracing::warn!(
                    queued_bytes = self.budget.used(),
                    "global queue budget still exceeded with nothing to shed: the queued \
                     messages belong to subscribers that are taking them; publishers wait"
                );
            }
        }
    }

    /// Waits `d`; true when the budget is still saturated then (false once relieved earlier
    /// or at shutdown).
    async fn saturated_after(&self, d: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = self.budget.relieved() => false,
            _ = tokio::time::sleep(d) => self.budget.is_saturated(),
        }
    }

    /// The sessions holding queued bytes, each marked lagging: a connection that takes a
    /// delivery clears the mark (`Session::made_room`), so a mark still there later means
    /// the subscriber took nothing since.
    fn mark_holders(&self) -> Vec<Arc<Session>> {
        let mut marked = self.all_sessions();
        marked.retain(|s| s.with_state(|st| st.queued_bytes()) > 0);
        for s in &marked {
            s.set_lagging();
        }
        marked
    }

    /// Sheds the queues of the `marked` sessions whose mark is still there; returns how many
    /// queues it shed.
    fn shed_idle(&self, marked: Vec<Arc<Session>>) -> usize {
        let (mut queues, mut messages, mut spilled, mut bytes) = (0usize, 0usize, 0usize, 0usize);
        for session in marked.iter().filter(|s| !s.is_prompt()) {
            // Its unsent shared-subscription messages are owed to the group, not to this
            // member: they go to another member now, stored ones included (on disk they would
            // wait for this member alone, and go with its session if it expires).
            let handed_over = self.redistribute_unsent(session);
            let shed = session.shed();
            self.budget.sub(shed.freed);
            if shed.dropped.is_empty() && shed.spilled == 0 && handed_over == 0 {
                continue;
            }
            if queues < LOGGED_PER_ROUND {
                let peer = session.meta().peer.map(|p| p.to_string());
                tracing::warn!(client_id = %session.client_id, peer = peer.as_deref().unwrap_or("-"),
                    handed_over, dropped = shed.dropped.len(), moved_to_disk = shed.spilled,
                    queued_bytes = shed.freed, online = session.is_connected(),
                    "slow consumer: took nothing while its queue held the saturated global \
                     budget; shedding its queue (shared-subscription messages go to other \
                     members, others only in memory are dropped, stored ones wait on disk)");
            }
            queues += 1;
            messages += shed.dropped.len();
            spilled += shed.spilled;
            bytes += shed.freed;
            self.metrics.queues_shed.inc();
            self.hand_over_or_drop(session, shed.dropped);
        }
        if queues > 0 {
            tracing::warn!(
                queues,
                dropped = messages,
                moved_to_disk = spilled,
                bytes,
                queued_bytes = self.budget.used(),
                "global queue budget: shed the queues of subscribers that took nothing"
            );
        }
        queues
    }

    /// Shared-subscription messages among `shed` go to another member of their group when
    /// one can take them (they are owed to the group, not to this member); the rest are
    /// dropped and counted.
    fn hand_over_or_drop(&self, session: &Arc<Session>, shed: Vec<crate::session::Delivery>) {
        let mut ops = Vec::new();
        for d in shed {
            if d.shared.is_none() || self.hand_over(session, d, &mut ops).is_some() {
                self.metrics.dropped_shed.inc();
            }
        }
        self.submit(ops);
    }
}
