//! Publishing a will message (now, or from a delayed task after the Will Delay Interval).

use std::sync::Arc;
use std::time::Instant;

use crate::broker::BrokerState;
use crate::codec;
use crate::message::Message;

/// Publishes a will message, now or from a delayed task.
pub(super) struct WillPublisher {
    pub(super) broker: Arc<BrokerState>,
    pub(super) client_id: Arc<str>,
}

impl WillPublisher {
    pub(super) fn publish(&self, will: codec::Will) {
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
            publisher: Some(self.client_id.clone()),
            stored: std::sync::OnceLock::new(),
        };
        msg.set_expiry_interval(expiry, Instant::now());
        tracing::debug!(client_id = %self.client_id, topic = %msg.topic, "publishing will");
        self.broker.publish_unacknowledged(Arc::new(msg));
    }
}
