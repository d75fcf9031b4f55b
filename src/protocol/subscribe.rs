//! SUBSCRIBE and UNSUBSCRIBE: filter validation, limits and ACL at subscribe time, the trie and
//! stored-session updates, retained messages for new subscriptions, and the SUBACK/UNSUBACK codes.

use super::{Close, Handler, Outbox};
use crate::auth::SubscribeVerdict;
use crate::codec::{self, topic, Packet, ProtocolVersion, ReasonCode, SubscriptionOptions};
// A Reason String names the filter it refuses, cut as log fields are: echoing a 64 KB
// filter back would cost a 64 KB SUBACK.
use crate::logging::bounded;
use crate::storage::{Op, StoredSubscription};

/// What the filters of one SUBSCRIBE came to.
#[derive(Default)]
struct SubscribeOutcome {
    /// The SUBACK's reason codes, one per filter in order.
    codes: Vec<ReasonCode>,
    /// Why each refused filter was refused, for the SUBACK's Reason String.
    problems: Vec<String>,
    /// Filters whose retained messages are sent once SUBACK is.
    retained: Vec<(String, SubscriptionOptions)>,
    /// Store writes SUBACK waits for.
    stored: Vec<Op>,
}

impl SubscribeOutcome {
    /// A refused filter: `code` for v5, the one failure code 3.x has otherwise.
    fn refuse(&mut self, v5: bool, code: ReasonCode, problem: String) {
        self.problems.push(problem);
        self.codes.push(if v5 {
            code
        } else {
            ReasonCode::V3_SUBACK_FAILURE
        });
    }
}

impl Handler {
    pub(super) fn on_subscribe(
        &mut self,
        sub: codec::Subscribe,
        out: &mut Outbox,
    ) -> Result<(), Close> {
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        self.check_features(&sub, sub_id)?;
        let mut outcome = SubscribeOutcome {
            codes: Vec::with_capacity(sub.filters.len()),
            ..SubscribeOutcome::default()
        };
        for (filter, opts) in &sub.filters {
            self.subscribe_filter(filter, opts, sub_id, &mut outcome)?;
        }
        // A persistent session's subscriptions are durable before SUBACK.
        self.store_wait(outcome.stored, out);
        let ack = Packet::SubAck(codec::SubAck {
            packet_id: sub.packet_id,
            reasons: outcome.codes,
            properties: Default::default(),
        });
        if outcome.problems.is_empty() {
            self.send(&ack, out);
        } else {
            self.send_explained(ack, outcome.problems.join("; "), out);
        }
        // Streamed by the pump as the client takes them (never dropped for a queue limit).
        if !outcome.retained.is_empty() {
            self.session.with_state(|s| {
                for (filter, granted) in &outcome.retained {
                    s.start_retained(filter, *granted, sub_id);
                }
            });
        }
        Ok(())
    }

    /// A v5 SUBSCRIBE using a feature CONNACK said this server does not offer is a Protocol
    /// Error answered with DISCONNECT 0x9E, 0xA2 or 0xA1 (§3.2.2.3.11-13), checked before any
    /// filter is applied. A SUBACK code is only for refusing one subscription of a feature the
    /// server does offer. 3.x has no such codes: its filters are refused one by one (0x80).
    fn check_features(&self, sub: &codec::Subscribe, sub_id: Option<u32>) -> Result<(), Close> {
        if !self.version.is_v5() {
            return Ok(());
        }
        let cfg = &self.broker.config().mqtt;
        let valid = || {
            sub.filters
                .iter()
                .filter(|(f, _)| topic::valid_topic_filter(f))
        };
        if !cfg.shared_subscriptions && valid().any(|(f, _)| topic::parse_shared(f).is_some()) {
            return Err(Close::Protocol(
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                "[MQTT 5.0 §3.2.2.3.13] shared subscription, Shared Subscription Available 0",
            ));
        }
        if !cfg.wildcard_subscriptions && valid().any(|(f, _)| f.contains(['+', '#'])) {
            return Err(Close::Protocol(
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
                "[MQTT 5.0 §3.2.2.3.11] wildcard, Wildcard Subscription Available 0",
            ));
        }
        if !cfg.subscription_identifiers && sub_id.is_some() {
            return Err(Close::Protocol(
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                "[MQTT 5.0 §3.2.2.3.12] Subscription Identifier, Identifiers Available 0",
            ));
        }
        Ok(())
    }

    /// One filter of a SUBSCRIBE: refused (with its reason logged and noted) or subscribed.
    /// Err for a protocol error, or a 3.1 client over its subscription limit (3.1 cannot be
    /// refused in SUBACK): either closes the connection.
    fn subscribe_filter(
        &mut self,
        filter: &str,
        opts: &SubscriptionOptions,
        sub_id: Option<u32>,
        outcome: &mut SubscribeOutcome,
    ) -> Result<(), Close> {
        let v5 = self.version.is_v5();
        let shared = topic::parse_shared(filter).is_some();
        if shared && opts.no_local && v5 {
            return Err(Close::Protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.8.3-4] No Local on a shared subscription",
            ));
        }
        if let Some(code) = self.filter_refusal(filter, shared, sub_id) {
            crate::refusal!(client_id = %self.session.client_id, peer = %self.peer, %filter,
                reason = code.0, "subscription refused");
            outcome.refuse(v5, code, format!("{}: {}", bounded(filter), code.name()));
            return Ok(());
        }
        if self.over_subscription_limit(filter) {
            crate::refusal!(client_id = %self.session.client_id, peer = %self.peer, %filter,
                "subscription refused: max_subscriptions_per_client reached");
            if self.version == ProtocolVersion::V31 {
                // 3.1's SUBACK cannot refuse; granting without subscribing would lie, and
                // letting it through would make the limit optional. Close instead.
                return Err(Close::Server(
                    ReasonCode::QUOTA_EXCEEDED,
                    "max_subscriptions_per_client reached (MQTT 3.1 cannot refuse a subscription)",
                ));
            }
            outcome.refuse(
                v5,
                ReasonCode::QUOTA_EXCEEDED,
                format!("{}: max_subscriptions_per_client reached", bounded(filter)),
            );
            return Ok(());
        }
        self.add_subscription(filter, opts, sub_id, shared, outcome);
        Ok(())
    }

    /// Why `filter` cannot be subscribed to (its validity, the ACL, the features this broker
    /// offers), the first reason found; None when it can.
    fn filter_refusal(
        &mut self,
        filter: &str,
        shared: bool,
        sub_id: Option<u32>,
    ) -> Option<ReasonCode> {
        let auth = self.auth();
        let denied = auth.restricts()
            && self.version != ProtocolVersion::V31
            && auth.check_subscribe(&self.session.client_id, self.username.as_deref(), filter)
                == SubscribeVerdict::Denied;
        let cfg = &self.broker.config().mqtt;
        if !topic::valid_topic_filter(filter) || !self.topic_within_limits(filter) {
            Some(ReasonCode::TOPIC_FILTER_INVALID)
        } else if denied {
            // Nothing under this filter is readable (beyond Mosquitto, which accepts it).
            Some(ReasonCode::NOT_AUTHORIZED)
        } else if shared && !cfg.shared_subscriptions {
            // Only 3.x gets here: check_features closed a v5 connection already.
            Some(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
        } else if !cfg.wildcard_subscriptions && filter.contains(['+', '#']) {
            Some(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
        } else if sub_id.is_some() && !cfg.subscription_identifiers {
            Some(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        } else {
            None
        }
    }

    /// `limits.max_subscriptions_per_client` reached, and `filter` would be one more (a
    /// filter already subscribed is replaced, not added).
    fn over_subscription_limit(&self, filter: &str) -> bool {
        let limit = self.broker.config().limits.max_subscriptions_per_client;
        let count = self.session.with_state(|s| s.subscription_count());
        let is_new = !self.session.with_state(|s| s.has_subscription(filter));
        limit > 0 && is_new && count >= limit
    }

    /// Subscribes `filter` at the QoS granted, records it for a persistent session, and notes
    /// whether its retained messages are wanted.
    fn add_subscription(
        &mut self,
        filter: &str,
        opts: &SubscriptionOptions,
        sub_id: Option<u32>,
        shared: bool,
        outcome: &mut SubscribeOutcome,
    ) {
        let mut granted = SubscriptionOptions {
            qos: opts.qos.min(self.broker.max_qos()),
            ..*opts
        };
        if self.bridge {
            super::bridge::bridge_options(&mut granted, shared);
        }
        if let crate::peer::PeerAddr::Bridge(name) = &self.peer {
            granted.local_origin =
                self.broker.config().bridges.iter().any(|b| {
                    b.name == **name && b.cluster == crate::config::BridgeCluster::EachNode
                });
        }
        let replaced = self
            .broker
            .subscribe(&self.session, filter, granted, sub_id);
        if self.session.is_persistent() {
            outcome.stored.push(Op::PutSubscription {
                client_id: self.session.client_id.to_string(),
                sub: StoredSubscription {
                    filter: filter.to_owned(),
                    options: granted,
                    id: sub_id,
                },
            });
        }
        outcome.codes.push(ReasonCode(granted.qos as u8));
        let wants_retained = match opts.retain_handling {
            0 => true,
            1 => !replaced,
            _ => false,
        };
        // No retained messages for shared subscriptions (§4.8.2).
        if wants_retained && !shared {
            outcome.retained.push((filter.to_owned(), granted));
        }
    }

    pub(super) fn on_unsubscribe(&mut self, unsub: codec::Unsubscribe, out: &mut Outbox) {
        let mut problems = Vec::new();
        let mut deletes = Vec::new();
        let auth = self.auth();
        let reasons = unsub
            .filters
            .iter()
            .map(|f| {
                if !topic::valid_topic_filter(f) {
                    problems.push(format!("{}: Topic Filter invalid", bounded(f)));
                    ReasonCode::TOPIC_FILTER_INVALID
                } else if !auth.check_unsubscribe(self.username.as_deref(), f) {
                    // Dynamic security's unsubscribe ACLs: the subscription stays, as in
                    // Mosquitto (a 3.x UNSUBACK has no way to say so).
                    crate::refusal!(client_id = %self.session.client_id, peer = %self.peer, filter = %f,
                        "unsubscribe denied by dynamic security");
                    problems.push(format!("{}: not authorized to unsubscribe", bounded(f)));
                    ReasonCode::NOT_AUTHORIZED
                } else if self.broker.unsubscribe(&self.session, f) {
                    if self.session.is_persistent() {
                        deletes.push(Op::DeleteSubscription {
                            client_id: self.session.client_id.to_string(),
                            filter: f.clone(),
                        });
                    }
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        // The UNSUBACK waits for the stored subscriptions' deletes, as the SUBACK waits for
        // their records: a crash after it must not bring an unsubscribed filter back.
        self.store_wait(deletes, out);
        let ack = Packet::UnsubAck(codec::UnsubAck {
            packet_id: unsub.packet_id,
            reasons,
            properties: Default::default(),
        });
        if problems.is_empty() {
            self.send(&ack, out);
        } else {
            self.send_explained(ack, problems.join("; "), out);
        }
    }
}
