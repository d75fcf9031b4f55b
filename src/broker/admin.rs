//! What an operator (the admin API, `$SYS` tools) asks of the registry: the sessions it holds,
//! and disconnecting one of them, optionally discarding its session.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::codec::{ProtocolVersion, ReasonCode};
use crate::session::{Control, Session};

use super::BrokerState;

/// One session as the session list shows it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    /// Address of the connection that last claimed it (None when restored from the store).
    pub peer: Option<Arc<str>>,
    pub protocol: ProtocolVersion,
    pub connected: bool,
    /// When the current connection claimed it; None while offline.
    pub connected_since: Option<SystemTime>,
    /// How long it outlives its connection: None = never expires, zero = ends with it.
    pub expiry: Option<Duration>,
    /// Its subscription filters, as subscribed.
    pub subscriptions: Vec<String>,
    /// Deliveries waiting to be sent: the memory queue plus, for a persistent session, the
    /// backlog waiting on disk.
    pub queued: u64,
    /// QoS 1/2 deliveries sent and not yet acknowledged.
    pub inflight: usize,
}

/// What [`BrokerState::disconnect_client`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kicked {
    /// No session has that client id.
    NotFound,
    /// Its connection was asked to close; the session stays (unless `discard` was asked, in
    /// which case it ends with the connection).
    Disconnected,
    /// It had no connection and was discarded.
    Discarded,
    /// It had no connection and nothing was asked of it.
    Offline,
}

impl BrokerState {
    /// Every session, connected or not, sorted by client id.
    pub fn list_sessions(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self.all_sessions().iter().map(|s| info(s)).collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// A page of the session list: the number of sessions, up to `limit` of them (sorted by
    /// client id) after client id `after`, and whether more follow. Only the page's sessions
    /// are described (their subscriptions listed), so a dashboard that polls costs little
    /// with many sessions.
    pub fn list_sessions_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (usize, Vec<SessionInfo>, bool) {
        let mut all = self.all_sessions();
        all.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        let start = after.map_or(0, |a| all.partition_point(|s| &*s.client_id <= a));
        let page: Vec<SessionInfo> = all[start..].iter().take(limit).map(|s| info(s)).collect();
        let more = start + page.len() < all.len();
        (all.len(), page, more)
    }

    /// Whether the registry holds a session for `client_id` (without describing it).
    pub fn has_session(&self, client_id: &str) -> bool {
        self.sessions.contains_key(client_id)
    }

    /// One session, if the registry holds it.
    pub fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        let session = self.sessions.get(client_id).map(|e| e.value().clone())?;
        Some(info(&session))
    }

    /// Closes the client's connection with `reason` (MQTT 5 DISCONNECT; 3.x just closes).
    /// With `discard`, its session (subscriptions, queued messages, stored state) ends too,
    /// whether or not it is connected.
    pub fn disconnect_client(
        self: &Arc<Self>,
        client_id: &str,
        reason: ReasonCode,
        discard: bool,
    ) -> Kicked {
        self.disconnect_client_because(
            client_id,
            reason,
            discard,
            "disconnected by an administrator",
        )
    }

    /// [`Self::disconnect_client`], with `why` in the log line the connection writes.
    pub fn disconnect_client_because(
        self: &Arc<Self>,
        client_id: &str,
        reason: ReasonCode,
        discard: bool,
        why: &'static str,
    ) -> Kicked {
        let Some(session) = self.sessions.get(client_id).map(|e| e.value().clone()) else {
            return Kicked::NotFound;
        };
        if discard {
            // The connection's end discards a session whose expiry is zero.
            session.set_expiry(Some(Duration::ZERO));
        }
        if session.is_connected() {
            session.send_control(Control::Disconnect(reason, why));
            return Kicked::Disconnected;
        }
        if !discard {
            return Kicked::Offline;
        }
        // Offline: end it as an expiry would. A CONNECT that claims it wins: while it holds
        // the claim, the session has no owner but must not be ended under it (a clean start
        // may be handing its stored messages over).
        let Some(_claim) = session.try_lock_connect() else {
            return Kicked::Disconnected;
        };
        let generation = session.generation();
        if session.is_connected() || !session.release(generation, true) {
            return Kicked::Disconnected;
        }
        self.end_session(&session, generation);
        tracing::info!(client_id, why, "session discarded");
        Kicked::Discarded
    }
}

fn info(s: &Session) -> SessionInfo {
    let meta = s.meta();
    let (subscriptions, queued, inflight) = s.with_state(|st| {
        (
            st.subscription_filters(),
            st.queued_len() as u64 + st.backlog_len(),
            st.inflight_len(),
        )
    });
    let expiry = meta.expiry();
    SessionInfo {
        client_id: s.client_id.clone(),
        username: meta.username,
        peer: meta.peer.map(|p| Arc::from(p.to_string())),
        protocol: meta.protocol,
        connected: s.is_connected(),
        connected_since: s.connected_since(),
        expiry,
        subscriptions,
        queued,
        inflight,
    }
}
