//! PUBLISHes to `$CONTROL/...` while dynamic security is on: consumed by the broker, never
//! routed (as in Mosquitto, where `$CONTROL` is the plugins' request space). A request on
//! `$CONTROL/dynamic-security/v1` goes to the control task ([`crate::broker::dynsec`]);
//! the WRITE check has already run, so only clients whose ACLs grant `publishClientSend` there
//! (dynsec's defaults never grant a `$CONTROL` topic) get this far.

use super::Handler;
use crate::auth::dynsec::control::REQUEST_TOPIC;
use crate::broker::dynsec::ControlRequest;
use crate::codec;

impl Handler {
    /// Whether the PUBLISH to `topic` is for the broker itself (then it is acknowledged but not
    /// routed). Call only for a publish the client may make.
    pub(super) fn consume_control(&mut self, topic: &str, p: &codec::Publish) -> bool {
        if !topic.starts_with("$CONTROL/") || self.auth().dynsec.is_none() {
            return false;
        }
        if topic != REQUEST_TOPIC {
            tracing::debug!(client_id = %self.session.client_id, %topic,
                "PUBLISH to a $CONTROL topic nothing serves: dropped");
            return true;
        }
        let req = ControlRequest {
            payload: p.payload.clone(),
            client_id: self.session.client_id.to_string(),
            username: self.username.as_deref().map(str::to_owned),
        };
        if !self.broker.submit_dynsec(req) {
            tracing::warn!(client_id = %self.session.client_id, peer = %self.peer,
                "dynamic security request dropped: the control queue is full");
        }
        true
    }
}
