//! Publishing a will message: at once, after its Will Delay Interval, or after a restart for a
//! will the store kept.

use std::sync::Arc;
use std::time::Instant;

use crate::broker::BrokerState;
use crate::codec;
use crate::message::Message;

/// Routes `will` as a message from `client_id`. The Message Expiry Interval counts from now;
/// the Will Delay Interval is not forwarded. A will into `$SYS` is dropped: `$SYS` is the
/// broker's.
pub fn publish_will(broker: &BrokerState, client_id: &Arc<str>, will: codec::Will) {
    if super::is_sys_topic(&will.topic) {
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
        properties: props,
        expires_at: None,
        publisher: Some(client_id.clone()),
        origin: crate::message::Origin::Local,
        stored: std::sync::OnceLock::new(),
    };
    msg.set_expiry_interval(expiry, Instant::now());
    tracing::debug!(%client_id, topic = %msg.topic, "publishing will");
    broker.publish_unacknowledged(Arc::new(msg));
}
