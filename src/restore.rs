//! Start-up restore: puts what the store kept (sessions, their subscriptions and inflight
//! state, retained messages, pending wills) back into a broker that is not serving yet.
//!
//! It sits above [`crate::broker`] and [`crate::protocol`] (it calls the broker's restore hooks
//! and publishes due wills the way a connection does), so [`crate::persistence`] below the
//! broker keeps only the conversions it uses.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::BrokerState;
use crate::codec::{self, ProtocolVersion};
use crate::persistence::{remaining_expiry, to_delivery, Persistence};
use crate::protocol;
use crate::session::{
    Delivery, Inflight, Login, PendingWill, Persistence as SessionPersistence, Session,
    SessionMeta, Stored,
};
use crate::storage::{unix_ms_now, LoadedInflight, LoadedSession, Op, Snapshot, StoreError};

/// What start-up found in the store.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    /// Sessions put back, offline.
    pub sessions: usize,
    /// Sessions whose expiry passed while the broker was down, deleted.
    pub expired: usize,
    /// Retained messages put back.
    pub retained: usize,
    /// Wills of sessions whose client had not come back, published or scheduled.
    pub wills: usize,
    /// Expired sessions put back only to hand their stored shared-subscription messages to
    /// the other members of their groups ([`BrokerState::expire_restored`]) before serving.
    pub to_hand_over: Vec<Arc<Session>>,
}

/// Puts the stored sessions and retained messages back into a broker that is not serving yet:
/// sessions come back offline with their subscriptions, inflight window and inbound QoS 2 ids;
/// their queues stay on disk and stream back when the client reconnects. Sessions whose expiry
/// passed while the broker was down are deleted, except `$share` members with stored messages:
/// those come back in [`Restored::to_hand_over`], for the caller to expire once their
/// messages went to the other members of their groups.
pub fn restore(
    broker: &Arc<BrokerState>,
    p: &Persistence,
    snapshot: Snapshot,
) -> Result<Restored, StoreError> {
    let mut report = Restored::default();
    for r in snapshot.retained {
        broker.restore_retained(Arc::new(r.to_message()));
        report.retained += 1;
    }
    broker.warn_if_retained_over_bounds();
    // Wills go out once every session is back, so their subscribers receive them.
    let wills = restore_sessions(broker, p, snapshot.sessions, &mut report)?;
    for will in wills {
        report.wills += 1;
        release_will(broker, will);
    }
    Ok(report)
}

/// A stored will to publish or schedule once every session is back: the client id, the will,
/// and for a session still alive the session, when the client went away (unix ms) and the
/// session's remaining expiry.
type RestoredWill = (
    Arc<str>,
    codec::Will,
    Option<(Arc<Session>, u64, Option<Duration>)>,
);

/// Puts back the sessions that have not expired, deletes those that have, and returns their
/// wills.
fn restore_sessions(
    broker: &Arc<BrokerState>,
    p: &Persistence,
    sessions: Vec<LoadedSession>,
    report: &mut Restored,
) -> Result<Vec<RestoredWill>, StoreError> {
    let mut wills = Vec::new();
    for loaded in sessions {
        let record = &loaded.session;
        let remaining = remaining_expiry(record);
        let will = record.will.as_ref().map(|w| {
            let since = record.disconnected_at_unix_ms.unwrap_or_else(unix_ms_now);
            (w.to_will(), since)
        });
        if remaining == Some(Duration::ZERO) && is_share_member(&loaded) {
            let queued = p.store.queue_len(&record.client_id)?;
            if queued > 0 {
                report.expired += 1;
                if let Some((will, _)) = will {
                    wills.push((Arc::from(record.client_id.as_str()), will, None));
                }
                let session = restore_session(broker, p, loaded, queued);
                report.to_hand_over.push(session);
                continue;
            }
        }
        if remaining == Some(Duration::ZERO) {
            // Nothing of an earlier run is still on its way to the store: no position to retire.
            p.submit(vec![Op::DeleteSession {
                client_id: record.client_id.clone(),
                retire_below: 0,
            }]);
            report.expired += 1;
            if let Some((will, _)) = will {
                // The session ended while the broker was down: its will is due now.
                wills.push((Arc::from(record.client_id.as_str()), will, None));
            }
            continue;
        }
        let queued = p.store.queue_len(&record.client_id)?;
        let session = restore_session(broker, p, loaded, queued);
        if let Some(after) = remaining {
            let session = session.clone();
            broker.after(after, move |broker| broker.expire_session(&session, 0));
        }
        if let Some((will, since)) = will {
            wills.push((
                session.client_id.clone(),
                will,
                Some((session, since, remaining)),
            ));
        }
        report.sessions += 1;
    }
    Ok(wills)
}

/// Whether the session holds a shared subscription (whose messages another member may take).
fn is_share_member(loaded: &LoadedSession) -> bool {
    loaded
        .subscriptions
        .iter()
        .any(|s| codec::topic::parse_shared(&s.filter).is_some())
}

/// Publishes the will of a session that expired while the broker was down; schedules the will
/// of a restored session for what is left of its delay.
fn release_will(broker: &Arc<BrokerState>, (client_id, will, live): RestoredWill) {
    let Some((session, since, remaining)) = live else {
        protocol::publish_will(broker, &client_id, will);
        return;
    };
    // A broker that stopped while the client was connected counts from its own start.
    let gone = Duration::from_millis(unix_ms_now().saturating_sub(since));
    let delay = Duration::from_secs(u64::from(will.properties.will_delay_interval.unwrap_or(0)));
    let mut wait = delay.saturating_sub(gone);
    if let Some(r) = remaining {
        wait = wait.min(r);
    }
    // Generation 0 is the restored session's; a reconnect claims a newer one and takes
    // the will (cancelled [MQTT-3.1.3-9], or published if Clean Start 1 ends the session).
    let pending = PendingWill {
        will,
        since_unix_ms: since,
    };
    protocol::schedule_will(broker, &session, 0, pending, wait);
}

fn restore_session(
    broker: &BrokerState,
    p: &Persistence,
    loaded: LoadedSession,
    queued: u64,
) -> Arc<Session> {
    let record = loaded.session;
    let session = Arc::new(Session::new(
        Arc::from(record.client_id.as_str()),
        broker.session_limits(),
    ));
    session.set_meta(SessionMeta {
        // No connection holds a restored session yet.
        login: Login::Unchecked,
        protocol: match record.protocol_level {
            3 => ProtocolVersion::V31,
            5 => ProtocolVersion::V5,
            _ => ProtocolVersion::V311,
        },
        expiry_secs: record.expiry_secs,
        username: record.owner_username.as_deref().map(Arc::from),
        listener: None,
        peer: None,
    });
    session.mark_resumable();
    for sub in &loaded.subscriptions {
        broker.subscribe(&session, &sub.filter, sub.options, sub.id);
    }
    let mut unsent = queued;
    let inflight = loaded
        .inflight
        .into_iter()
        .map(|f| match f {
            LoadedInflight::Publish {
                packet_id,
                seq,
                delivery,
            } => {
                unsent = unsent.saturating_sub(1);
                (packet_id, Inflight::Publish(to_delivery(seq, delivery)))
            }
            LoadedInflight::Released { packet_id, seq } => (
                packet_id,
                Inflight::Released {
                    stored: Some(Stored::Queue(seq)),
                },
            ),
            LoadedInflight::Owned {
                packet_id,
                order,
                delivery,
            } => {
                let stored = Some(Stored::owned(order));
                let f = match delivery {
                    Some(d) => Inflight::Publish(Delivery {
                        stored,
                        ..to_delivery(0, d)
                    }),
                    None => Inflight::Released { stored },
                };
                (packet_id, f)
            }
        })
        .collect();
    let inbound = loaded
        .inbound_qos2
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    session.set_persistence(Some(SessionPersistence {
        memory_cap: p.memory_cap,
        next_seq: loaded.next_seq,
        trusted_until: loaded.next_seq,
        backlog: Some((loaded.replay_from_seq, unsent)),
        next_nth: 0,
    }));
    session.with_state(|s| s.restore(inflight, inbound));
    broker.restore_session(session.clone());
    session
}
