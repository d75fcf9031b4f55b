//! CONNECT: validation, client id assignment, session claiming (takeover), CONNACK, and the
//! resend of unacknowledged messages when a session resumes [MQTT-4.4.0-1].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::Handler;
use crate::auth::{AuthConfig, AuthDecision};
use crate::broker::BrokerState;
use crate::codec::{self, ConnAck, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::session::{Control, SessionMeta};

/// What the transport knows about a connection when MQTT starts on it. The transport fills it
/// in; it lives here, with its reader (CONNECT checks the listener and the TLS identity), so
/// the protocol does not depend on the transport above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener that accepted it, as an index into `Config::listeners`.
    pub listener_index: usize,
    /// The verified client certificate's (Common Name, RFC 2253 subject), see
    /// [`peer_identity`](crate::transport::tls::peer_identity); `None` on plain listeners and
    /// when the client sent no certificate.
    pub tls_identity: Option<(Option<String>, Option<String>)>,
}

impl ConnectionInfo {
    /// A connection with no transport identity (plain TCP, tests).
    pub fn plain(peer: SocketAddr, listener_index: usize) -> ConnectionInfo {
        ConnectionInfo {
            peer,
            listener_index,
            tls_identity: None,
        }
    }
}

/// The result of a CONNECT.
pub enum ConnectOutcome {
    /// CONNACK with a failure code is in the write buffer; close after writing it.
    Refused,
    /// CONNACK (and any resends) are in the write buffer.
    Accepted(Box<Handler>, oneshot::Receiver<Control>),
}

/// Session expiry from a v5 Session Expiry Interval: 0xFFFFFFFF never expires.
pub(super) fn expiry_from_secs(secs: u32) -> Option<Duration> {
    (secs != u32::MAX).then(|| Duration::from_secs(u64::from(secs)))
}

/// The password check. PBKDF2 costs milliseconds, so with a password file it runs on a
/// blocking thread, never on the reactor.
async fn check_login(
    auth: &Arc<AuthConfig>,
    username: Option<&str>,
    password: Option<&bytes::Bytes>,
) -> AuthDecision {
    if auth.passwords.is_none() || username.is_none() {
        return auth.check_login(username, password.map(|p| &p[..]));
    }
    let auth = auth.clone();
    let username = username.map(str::to_owned);
    let password = password.cloned();
    tokio::task::spawn_blocking(move || {
        auth.check_login(username.as_deref(), password.as_ref().map(|p| &p[..]))
    })
    .await
    .unwrap_or(AuthDecision::NotAuthorized)
}

fn rate_bucket(rate: u64) -> Option<crate::ratelimit::TokenBucket> {
    (rate > 0).then(|| crate::ratelimit::TokenBucket::new(rate, std::time::Instant::now()))
}

/// A client id for a client that sent none: unique for this process and unlikely to collide
/// with ids of earlier runs.
fn assign_client_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("starling-{t:x}-{n}")
}

fn refuse(
    out: &mut super::Outbox,
    version: ProtocolVersion,
    v3: ReasonCode,
    v5: ReasonCode,
) -> ConnectOutcome {
    let code = if version.is_v5() { v5 } else { v3 };
    codec::encode(
        &Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        }),
        version,
        out.buf(),
    );
    ConnectOutcome::Refused
}

impl Handler {
    /// Validates a CONNECT, claims the session and writes CONNACK into `out`.
    pub async fn connect(
        broker: &Arc<BrokerState>,
        c: Box<codec::Connect>,
        auth: Option<super::AuthOutcome>,
        info: &ConnectionInfo,
        out: &mut super::Outbox,
    ) -> ConnectOutcome {
        let peer = info.peer;
        let mut c = *c;
        // use_identity_as_username / use_subject_as_username: the client certificate names the
        // user, and no password is checked (as Mosquitto).
        let mut cert_user = false;
        if let Some(l) = broker.config.listeners.get(info.listener_index) {
            if l.use_identity_as_username || l.use_subject_as_username {
                let identity = info.tls_identity.as_ref();
                let name = if l.use_identity_as_username {
                    identity.and_then(|(cn, _)| cn.clone())
                } else {
                    identity.and_then(|(_, subject)| subject.clone())
                };
                let Some(name) = name else {
                    crate::refusal!(%peer, client_id = %c.client_id,
                        "refused: no client certificate identity to use as the username");
                    return refuse(
                        out,
                        c.protocol,
                        ReasonCode::V3_NOT_AUTHORIZED,
                        ReasonCode::NOT_AUTHORIZED,
                    );
                };
                c.username = Some(name);
                c.password = None;
                cert_user = true;
            }
        }
        let version = c.protocol;
        let cfg = &broker.config.mqtt;
        let mut assigned = None;
        let client_id = if c.client_id.is_empty() {
            // 3.1 has no empty ids; 3.1.1 allows one only with clean session [MQTT-3.1.3-8].
            if version == ProtocolVersion::V31
                || (version == ProtocolVersion::V311 && !c.clean_start)
            {
                crate::refusal!(%peer, protocol = %version, "refused: empty client id");
                return refuse(
                    out,
                    version,
                    ReasonCode::V3_IDENTIFIER_REJECTED,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                );
            }
            let id = assign_client_id();
            assigned = Some(id.clone());
            id
        } else {
            c.client_id.clone()
        };
        let mut keep_alive = c.keep_alive;
        let mut server_keep_alive = None;
        if keep_alive > cfg.max_keepalive || (keep_alive == 0 && cfg.max_keepalive < u16::MAX) {
            if version.is_v5() {
                keep_alive = cfg.max_keepalive;
                server_keep_alive = Some(keep_alive);
            } else if keep_alive > cfg.max_keepalive {
                // A 3.x client cannot be told a lower value.
                crate::refusal!(%client_id, %peer, keep_alive, max = cfg.max_keepalive,
                    "refused: keep-alive above max_keepalive");
                return refuse(
                    out,
                    version,
                    ReasonCode::V3_IDENTIFIER_REJECTED,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                );
            }
        }
        if let (Some(method), None) = (&c.properties.authentication_method, &auth) {
            crate::refusal!(%client_id, %peer, %method, "refused: unknown authentication method");
            return refuse(
                out,
                version,
                ReasonCode::V3_NOT_AUTHORIZED,
                ReasonCode::BAD_AUTHENTICATION_METHOD,
            );
        }
        if let Some(will) = &c.will {
            if will.qos > broker.max_qos() {
                return refuse(
                    out,
                    version,
                    ReasonCode::V3_NOT_AUTHORIZED,
                    ReasonCode::QOS_NOT_SUPPORTED,
                );
            }
            if will.retain && !cfg.retain_available {
                return refuse(
                    out,
                    version,
                    ReasonCode::V3_NOT_AUTHORIZED,
                    ReasonCode::RETAIN_NOT_SUPPORTED,
                );
            }
            if super::is_sys_topic(&will.topic) {
                return refuse(
                    out,
                    version,
                    ReasonCode::V3_NOT_AUTHORIZED,
                    ReasonCode::TOPIC_NAME_INVALID,
                );
            }
        }

        let (expiry, expiry_secs) = if version.is_v5() {
            let secs = c.properties.session_expiry_interval.unwrap_or(0);
            (expiry_from_secs(secs), secs)
        } else if c.clean_start {
            (Some(Duration::ZERO), 0)
        } else {
            (cfg.persistent_client_expiration, 1)
        };
        let (auth_cfg, auth_generation) = broker.auth();
        if auth.is_none() && !cert_user {
            let decision = check_login(&auth_cfg, c.username.as_deref(), c.password.as_ref()).await;
            if !decision.is_allowed() {
                // Never the password.
                crate::refusal!(%client_id, %peer, username = c.username.as_deref().unwrap_or(""),
                    ?decision, "refused: login failed");
                broker.metrics.refused_connections.inc();
                return refuse(
                    out,
                    version,
                    ReasonCode::V3_NOT_AUTHORIZED,
                    ReasonCode::NOT_AUTHORIZED,
                );
            }
        }
        let username: Option<Arc<str>> = c.username.as_deref().map(Arc::from);
        let meta = SessionMeta {
            protocol: version,
            expiry,
            username: username.clone(),
            peer: Some(Arc::from(peer.to_string())),
        };
        let Ok(claimed) = broker
            .claim_session(&client_id, c.clean_start, meta, c.will.as_ref())
            .await
        else {
            crate::refusal!(%client_id, %peer, username = c.username.as_deref().unwrap_or(""),
                "refused: the session belongs to another user (auth.session_owner_check)");
            broker.metrics.refused_connections.inc();
            return refuse(
                out,
                version,
                ReasonCode::V3_NOT_AUTHORIZED,
                ReasonCode::NOT_AUTHORIZED,
            );
        };
        let session = claimed.session;
        broker.metrics.client_connected();

        // A persistent session's record is durable before CONNACK.
        if let (Some(p), false) = (broker.persistence(), claimed.store_ops.is_empty()) {
            out.wait_for(p.receipt(claimed.store_ops));
        }
        let mut props = Properties::default();
        if version.is_v5() {
            props.assigned_client_identifier = assigned;
            props.server_keep_alive = server_keep_alive;
            props.topic_alias_maximum = (cfg.max_topic_alias > 0).then_some(cfg.max_topic_alias);
            props.maximum_packet_size = Some(cfg.max_packet_size);
            if cfg.receive_maximum < u16::MAX {
                props.receive_maximum = Some(cfg.receive_maximum.max(1));
            }
            if cfg.max_qos < 2 {
                props.maximum_qos = Some(cfg.max_qos);
            }
            if !cfg.retain_available {
                props.retain_available = Some(0);
            }
            if !cfg.shared_subscriptions {
                props.shared_subscription_available = Some(0);
            }
            if !cfg.wildcard_subscriptions {
                props.wildcard_subscription_available = Some(0);
            }
            if !cfg.subscription_identifiers {
                props.subscription_identifier_available = Some(0);
            }
            if let Some(a) = &auth {
                props.authentication_method = Some(a.authenticator.method().to_string());
                props.authentication_data = a.data.clone();
            }
        }
        codec::encode(
            &Packet::ConnAck(ConnAck {
                session_present: claimed.session_present,
                code: ReasonCode::SUCCESS,
                properties: props,
            }),
            version,
            out.buf(),
        );
        tracing::info!(%client_id, %peer, protocol = %version, clean_start = c.clean_start,
            keep_alive, session_present = claimed.session_present, "client connected");

        // Never more unacknowledged QoS 1/2 PUBLISH than the client's Receive Maximum
        // [MQTT-3.3.4-9], nor than our own `max_inflight`.
        let max_inflight = usize::from(cfg.max_inflight.max(1));
        let send_window = match c.properties.receive_maximum {
            Some(rm) if version.is_v5() => usize::from(rm).min(max_inflight),
            _ => max_inflight,
        };
        let handler = Handler {
            broker: broker.clone(),
            client_id: session.client_id.clone(),
            session,
            generation: claimed.ownership.generation,
            closed: Some(claimed.ownership.closed),
            peer,
            version,
            keep_alive,
            will: c.will.map(Box::new),
            send_window,
            client_max_packet: c.properties.maximum_packet_size.unwrap_or(u32::MAX),
            // Absent means 1 [MQTT-3.1.2-29].
            problem_info: c.properties.request_problem_information != Some(0),
            aliases_out: super::outbound::TopicAliases::new(if version.is_v5() {
                c.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            }),
            aliases_in: vec![
                None;
                usize::from(if version.is_v5() {
                    cfg.max_topic_alias
                } else {
                    0
                })
            ],
            receive_maximum: usize::from(cfg.receive_maximum.max(1)),
            expiry_was_zero: expiry_secs == 0,
            published: false,
            authenticator: auth.map(|a| a.authenticator),
            reauth: None,
            username,
            auth: auth_cfg,
            auth_generation,
            msg_rate: rate_bucket(broker.config.limits.max_publish_rate),
            byte_rate: rate_bucket(broker.config.limits.max_publish_bandwidth),
            listener_rates: broker
                .listener_rates
                .get(info.listener_index)
                .cloned()
                .flatten(),
            throttled_until: None,
            blocked: None,
            scratch: Vec::new(),
        };
        let mut handler = handler;
        if claimed.session_present {
            handler.resend(out);
        }
        ConnectOutcome::Accepted(Box::new(handler), claimed.ownership.control)
    }
}
