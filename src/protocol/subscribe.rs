//! SUBSCRIBE and UNSUBSCRIBE: filter validation, limits and ACL at subscribe time, the trie and
//! stored-session updates, retained messages for new subscriptions, and the SUBACK/UNSUBACK codes.

use super::{Close, Handler, Outbox};
use crate::auth::SubscribeVerdict;
use crate::codec::{
    self, topic, Packet, Properties, ProtocolVersion, ReasonCode, SubscriptionOptions,
};
use crate::storage::{Op, StoredSubscription};

impl Handler {
    pub(super) fn on_subscribe(
        &mut self,
        sub: codec::Subscribe,
        out: &mut Outbox,
    ) -> Result<(), Close> {
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let limit = self.broker.config.limits.max_subscriptions_per_client;
        let max_qos = self.broker.max_qos();
        let mut codes = Vec::with_capacity(sub.filters.len());
        // Why each refused filter was refused, for the SUBACK's Reason String.
        let mut problems = Vec::new();
        let mut retained = Vec::new();
        let mut stored = Vec::new();
        let broker = self.broker.clone();
        let cfg = &broker.config.mqtt;
        let v5 = self.version.is_v5();
        for (filter, opts) in &sub.filters {
            let shared = topic::parse_shared(filter).is_some();
            if shared && opts.no_local && v5 {
                return Err(Close::Protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.8.3-4] No Local on a shared subscription",
                ));
            }
            let auth = self.auth();
            let denied = auth.acl.is_some()
                && self.version != ProtocolVersion::V31
                && auth.check_subscribe(&self.client_id, self.username.as_deref(), filter)
                    == SubscribeVerdict::Denied;
            let refused = if !topic::valid_topic_filter(filter) || !self.topic_within_limits(filter)
            {
                Some(ReasonCode::TOPIC_FILTER_INVALID)
            } else if denied {
                // Nothing under this filter is readable (beyond Mosquitto, which accepts it).
                Some(ReasonCode::NOT_AUTHORIZED)
            } else if shared && !cfg.shared_subscriptions {
                Some(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
            } else if !cfg.wildcard_subscriptions && filter.contains(['+', '#']) {
                Some(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
            } else if sub_id.is_some() && !cfg.subscription_identifiers {
                Some(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
            } else {
                None
            };
            if let Some(code) = refused {
                crate::refusal!(client_id = %self.client_id, peer = %self.peer, %filter,
                    reason = code.0, "subscription refused");
                problems.push(format!("{filter}: {}", code.name()));
                codes.push(if v5 {
                    code
                } else {
                    ReasonCode::V3_SUBACK_FAILURE
                });
                continue;
            }
            let count = self.session.with_state(|s| s.subscription_count());
            let is_new = !self.session.with_state(|s| s.has_subscription(filter));
            if limit > 0 && is_new && count >= limit && self.version != ProtocolVersion::V31 {
                crate::refusal!(client_id = %self.client_id, peer = %self.peer, %filter,
                    "subscription refused: max_subscriptions_per_client reached");
                problems.push(format!("{filter}: max_subscriptions_per_client reached"));
                codes.push(if self.version.is_v5() {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode::V3_SUBACK_FAILURE
                });
                continue;
            }
            let granted = SubscriptionOptions {
                qos: opts.qos.min(max_qos),
                ..*opts
            };
            let replaced = self
                .broker
                .subscribe(&self.session, filter, granted, sub_id);
            if self.session.is_persistent() {
                stored.push(Op::PutSubscription {
                    client_id: self.client_id.to_string(),
                    sub: StoredSubscription {
                        filter: filter.clone(),
                        options: granted,
                        id: sub_id,
                    },
                });
            }
            codes.push(ReasonCode(granted.qos as u8));
            let wants_retained = match opts.retain_handling {
                0 => true,
                1 => !replaced,
                _ => false,
            };
            // No retained messages for shared subscriptions (§4.8.2).
            if wants_retained && !shared {
                retained.push((filter.clone(), granted));
            }
        }
        // A persistent session's subscriptions are durable before SUBACK.
        self.store_wait(stored, out);
        let ack = Packet::SubAck(codec::SubAck {
            packet_id: sub.packet_id,
            reasons: codes,
            properties: Properties::default(),
        });
        if problems.is_empty() {
            self.send(&ack, out);
        } else {
            self.send_explained(ack, problems.join("; "), out);
        }
        for (filter, granted) in retained {
            self.broker
                .deliver_retained(&self.session, &filter, granted, sub_id);
        }
        Ok(())
    }

    pub(super) fn on_unsubscribe(&mut self, unsub: codec::Unsubscribe, out: &mut Outbox) {
        let mut problems = Vec::new();
        let reasons = unsub
            .filters
            .iter()
            .map(|f| {
                if !topic::valid_topic_filter(f) {
                    problems.push(format!("{f}: Topic Filter invalid"));
                    ReasonCode::TOPIC_FILTER_INVALID
                } else if self.broker.unsubscribe(&self.session, f) {
                    if self.session.is_persistent() {
                        self.store_required(vec![Op::DeleteSubscription {
                            client_id: self.client_id.to_string(),
                            filter: f.clone(),
                        }]);
                    }
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        let ack = Packet::UnsubAck(codec::UnsubAck {
            packet_id: unsub.packet_id,
            reasons,
            properties: Properties::default(),
        });
        if problems.is_empty() {
            self.send(&ack, out);
        } else {
            self.send_explained(ack, problems.join("; "), out);
        }
    }
}
