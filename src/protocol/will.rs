//! Publishing a will message: at once, after its Will Delay Interval, or after a restart for a
//! will the store kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::BrokerState;
use crate::codec;
use crate::message::Message;
use crate::session::{PendingWill, Session};

/// How long a will waits once its connection ended: its Will Delay Interval, or the session's
/// expiry if that comes first [MQTT-3.1.2-8].
pub(super) fn wait_before(will: &codec::Will, expiry: Option<Duration>) -> Duration {
    let delay = will.properties.will_delay_interval.unwrap_or(0);
    let wait = Duration::from_secs(u64::from(delay));
    expiry.map_or(wait, |e| wait.min(e))
}

/// Keeps `will` with the session as connection `generation` left it, and publishes it after
/// `wait` (its delay, or the session's end if that comes first), unless a CONNECT claims the
/// session before then: one continuing the session cancels it [MQTT-3.1.3-9], one with Clean
/// Start 1 ends the session and publishes it at once [MQTT-3.1.2-8].
pub fn schedule_will(
    broker: &Arc<BrokerState>,
    session: &Arc<Session>,
    generation: u64,
    will: PendingWill,
    wait: Duration,
) {
    session.set_pending_will(generation, will);
    let session = session.clone();
    broker.after(wait, move |broker| {
        if let Some(due) = session.due_will(generation) {
            broker.will_published(&session, due.since_unix_ms);
            publish_will(broker, &session.client_id, due.will);
        }
    });
}

/// Routes `will` as a message from `client_id`. The Message Expiry Interval counts from now;
/// the Will Delay Interval is not forwarded. A will into `$SYS` is dropped, `$SYS` being the
/// broker's, except a bridge's on `$SYS/broker/connection/<client id>/state`.
pub fn publish_will(broker: &BrokerState, client_id: &Arc<str>, will: codec::Will) {
    // The one `$SYS` will CONNECT lets in: a bridge's on its own connection state.
    if super::is_sys_topic(&will.topic) && !super::bridge::is_own_state(&will.topic, client_id) {
        return;
    }
    let mut props = will.properties;
    let expiry = props.message_expiry_interval.take();
    props.will_delay_interval = None;
    let mut msg = Message {
        topic: Arc::from(will.topic.as_str()),
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties: props.into(),
        expires_at: None,
        publisher: Some(client_id.clone()),
        origin: crate::message::Origin::Local,
        stored: std::sync::OnceLock::new(),
        queued: std::sync::atomic::AtomicU32::new(0),
    };
    msg.set_expiry_interval(expiry, Instant::now());
    tracing::debug!(%client_id, topic = %msg.topic, "publishing will");
    broker.publish_unacknowledged(Arc::new(msg));
}
