//! CONNECT: validation, client id assignment, session claiming (takeover), CONNACK, and the
//! resend of unacknowledged messages when a session resumes [MQTT-4.4.0-1].

use std::net::SocketAddr;

use crate::protocol::peer::PeerAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Handler;
use crate::auth::listeners::BRIDGE_LISTENER;
use crate::auth::{Access, AuthConfig, AuthDecision};
use crate::broker::{BrokerState, Claimed};
use crate::codec::{self, ConnAck, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::config::MqttConfig;
use crate::session::{Login, SessionMeta};

/// What the transport knows about a connection when MQTT starts on it. The transport fills it
/// in; it lives here, with its reader (CONNECT checks the listener and the TLS identity), so
/// the protocol does not depend on the transport above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client: its address (from a PROXY header on proxied listeners) or unix-socket peer.
    pub peer: PeerAddr,
    /// The listener that accepted it, as an index into `Config::listeners`.
    pub listener_index: usize,
    /// The verified client certificate's (Common Name, RFC 2253 subject), see
    /// [`peer_identity`](crate::transport::tls::peer_identity); `None` on plain listeners and
    /// when the client sent no certificate.
    pub tls_identity: Option<(Option<String>, Option<String>)>,
    /// When CONNECT must be complete, if the listener sets it (plain `mqtt` listeners: accept
    /// time + `handshake_timeout`); `None` means `mqtt.connect_timeout` from the first read.
    pub connect_deadline: Option<tokio::time::Instant>,
}

impl ConnectionInfo {
    /// A connection with no transport identity (plain TCP, tests).
    pub fn plain(peer: SocketAddr, listener_index: usize) -> ConnectionInfo {
        ConnectionInfo {
            peer: PeerAddr::Tcp(peer),
            listener_index,
            tls_identity: None,
            connect_deadline: None,
        }
    }
}

/// The result of a CONNECT.
pub enum ConnectOutcome {
    /// CONNACK with a failure code is in the write buffer; close after writing it.
    Refused,
    /// CONNACK (and any resends) are in the write buffer.
    Accepted(Box<Handler>),
}

/// Session expiry from a v5 Session Expiry Interval: 0xFFFFFFFF never expires.
pub(super) fn expiry_from_secs(secs: u32) -> Option<Duration> {
    (secs != u32::MAX).then(|| Duration::from_secs(u64::from(secs)))
}

/// The password check (dynamic security, then the password file). PBKDF2 costs
/// milliseconds, so when a username is checked it runs on a blocking thread, never on the
/// reactor.
async fn check_login(
    auth: &Arc<AuthConfig>,
    client_id: &str,
    username: Option<&str>,
    password: Option<&bytes::Bytes>,
) -> AuthDecision {
    if !auth.checks_passwords() || username.is_none() {
        return auth.check_connect(client_id, username, password.map(|p| &p[..]));
    }
    let auth = auth.clone();
    let client_id = client_id.to_owned();
    let username = username.map(str::to_owned);
    let password = password.cloned();
    tokio::task::spawn_blocking(move || {
        auth.check_connect(
            &client_id,
            username.as_deref(),
            password.as_ref().map(|p| &p[..]),
        )
    })
    .await
    .unwrap_or(AuthDecision::NotAuthorized)
}

fn rate_bucket(rate: u64) -> Option<crate::ratelimit::TokenBucket> {
    (rate > 0).then(|| crate::ratelimit::TokenBucket::new(rate, std::time::Instant::now()))
}

/// The publish rate limits of a connection on listener `listener`; `None` when none applies.
/// A bridge's local end has none: it carries what many clients published at the remote broker
/// (each held to its own limits there), and a bridge disconnected for its rate would only
/// come back and resend.
fn rates(broker: &BrokerState, listener: usize) -> Option<Box<super::Rates>> {
    if listener == BRIDGE_LISTENER {
        return None;
    }
    let limits = &broker.config().limits;
    let msg = rate_bucket(limits.max_publish_rate);
    let bytes = rate_bucket(limits.max_publish_bandwidth);
    let listener = broker.listener_rates(listener).cloned();
    (msg.is_some() || bytes.is_some() || listener.is_some()).then(|| {
        Box::new(super::Rates {
            msg,
            bytes,
            listener,
            throttled_until: None,
        })
    })
}

/// A client id for a client that sent none: `mqtt.auto_id_prefix` followed by a part unique
/// for this process and unlikely to collide with ids of earlier runs.
fn assign_client_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{prefix}{t:x}-{n}")
}

/// The client's Maximum Packet Size: what the server may send it [MQTT-3.1.2-24]. Only v5
/// clients have one.
fn client_max_packet(c: &codec::Connect) -> u32 {
    match c.properties.maximum_packet_size {
        Some(max) if c.protocol.is_v5() => max,
        _ => u32::MAX,
    }
}

/// Writes `ack` into `out` within the client's Maximum Packet Size, leaving out its Reason
/// String and User Properties if that makes it fit ([MQTT-3.2.2-19], [MQTT-3.2.2-20]). False,
/// with nothing written, when it does not fit even so: the connection is then closed without a
/// CONNACK [MQTT-3.1.2-24].
fn write_connack(
    out: &mut super::Outbox,
    version: ProtocolVersion,
    ack: ConnAck,
    client_max: u32,
) -> bool {
    let mut packet = Packet::ConnAck(ack);
    if !codec::fit_within(&mut packet, version, client_max as usize) {
        return false;
    }
    codec::encode(&packet, version, out.buf());
    true
}

/// Answers a refused CONNECT with a CONNACK carrying the refusal's code (and, for v5, why as
/// the Reason String), or, when `refusal` is `None` or even the shortest CONNACK exceeds the
/// client's Maximum Packet Size, with nothing.
fn refuse(
    out: &mut super::Outbox,
    version: ProtocolVersion,
    refusal: Option<Refusal>,
    client_max: u32,
    peer: &PeerAddr,
) -> ConnectOutcome {
    let Some(r) = refusal else {
        return ConnectOutcome::Refused;
    };
    let ack = ConnAck {
        session_present: false,
        code: if version.is_v5() { r.v5 } else { r.v3 },
        properties: Properties {
            reason_string: version.is_v5().then(|| r.why.to_owned()),
            ..Properties::default()
        }
        .into(),
    };
    if !write_connack(out, version, ack, client_max) {
        crate::refusal!(%peer, max = client_max,
            "closing without CONNACK: the refusal does not fit the client's Maximum Packet Size \
             [MQTT-3.1.2-24]");
    }
    ConnectOutcome::Refused
}

/// Why a CONNECT is refused: the CONNACK code for 3.x and the one for v5, and the Reason
/// String a v5 CONNACK carries (left out when it would not fit [MQTT-3.2.2-19]).
struct Refusal {
    v3: ReasonCode,
    v5: ReasonCode,
    why: &'static str,
}

const NOT_AUTHORIZED: Refusal = Refusal {
    v3: ReasonCode::V3_NOT_AUTHORIZED,
    v5: ReasonCode::NOT_AUTHORIZED,
    why: "not authorized",
};

const IDENTIFIER_REJECTED: Refusal = Refusal {
    v3: ReasonCode::V3_IDENTIFIER_REJECTED,
    v5: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
    why: "client identifier not valid",
};

/// What the checks before authentication settled for this connection.
struct Terms {
    client_id: String,
    /// The id the server made up for a client that sent none (v5 Assigned Client Identifier).
    assigned: Option<String>,
    keep_alive: u16,
    /// The keep-alive the server imposes on a v5 client (Server Keep Alive).
    server_keep_alive: Option<u16>,
    /// The client certificate named the user: no password is checked.
    cert_user: bool,
    expiry: Option<Duration>,
    /// The Session Expiry Interval as CONNECT gave it (a 3.x persistent session counts as 1).
    expiry_secs: u32,
    username: Option<Arc<str>>,
    /// The listener that accepted the connection, whose auth snapshot applies to it.
    listener: usize,
    /// That listener's auth snapshot: the login is checked against it and the connection
    /// keeps it.
    auth: Arc<AuthConfig>,
    auth_generation: u64,
}

/// use_identity_as_username / use_subject_as_username: the client certificate names the user,
/// and no password is checked (as Mosquitto). Ok(true) when the certificate named the user.
fn cert_username(
    broker: &BrokerState,
    info: &ConnectionInfo,
    c: &mut codec::Connect,
) -> Result<bool, Refusal> {
    let peer = &info.peer;
    let Some(l) = broker.config().listeners.get(info.listener_index) else {
        return Ok(false);
    };
    if !(l.use_identity_as_username || l.use_subject_as_username) {
        return Ok(false);
    }
    let identity = info.tls_identity.as_ref();
    let name = if l.use_identity_as_username {
        identity.and_then(|(cn, _)| cn.clone())
    } else {
        identity.and_then(|(_, subject)| subject.clone())
    };
    let Some(name) = name else {
        crate::refusal!(%peer, client_id = %c.client_id,
            "refused: no client certificate identity to use as the username");
        return Err(NOT_AUTHORIZED);
    };
    c.username = Some(name);
    c.password = None;
    Ok(true)
}

/// The client id, and whether the server assigned it because the client sent none. An id
/// longer than `mqtt.max_client_id_length` bytes is refused (the log line bounds the id).
fn client_id(
    c: &codec::Connect,
    cfg: &MqttConfig,
    peer: &PeerAddr,
) -> Result<(String, Option<String>), Refusal> {
    let len = c.client_id.len();
    if len > cfg.max_client_id_length {
        crate::refusal!(%peer, client_id = %c.client_id, len, max = cfg.max_client_id_length,
            "refused: client id longer than mqtt.max_client_id_length");
        return Err(IDENTIFIER_REJECTED);
    }
    if len > 0 {
        return Ok((c.client_id.clone(), None));
    }
    let version = c.protocol;
    // 3.1 has no empty ids; 3.1.1 allows one only with clean session [MQTT-3.1.3-8].
    if version == ProtocolVersion::V31 || (version == ProtocolVersion::V311 && !c.clean_start) {
        crate::refusal!(%peer, protocol = %version, "refused: empty client id");
        return Err(IDENTIFIER_REJECTED);
    }
    if !cfg.allow_zero_length_clientid {
        crate::refusal!(%peer, protocol = %version,
            "refused: empty client id and mqtt.allow_zero_length_clientid is false");
        return Err(IDENTIFIER_REJECTED);
    }
    let id = assign_client_id(&cfg.auto_id_prefix);
    Ok((id.clone(), Some(id)))
}

/// The keep-alive within `max_keepalive`, and the Server Keep Alive telling a v5 client so.
fn keep_alive(
    c: &codec::Connect,
    cfg: &MqttConfig,
    client_id: &str,
    peer: &PeerAddr,
) -> Result<(u16, Option<u16>), Refusal> {
    let mut keep_alive = c.keep_alive;
    let mut server_keep_alive = None;
    if keep_alive > cfg.max_keepalive || (keep_alive == 0 && cfg.max_keepalive < u16::MAX) {
        if c.protocol.is_v5() {
            keep_alive = cfg.max_keepalive;
            server_keep_alive = Some(keep_alive);
        } else if keep_alive > cfg.max_keepalive {
            // A 3.x client cannot be told a lower value.
            crate::refusal!(%client_id, %peer, keep_alive, max = cfg.max_keepalive,
                "refused: keep-alive above max_keepalive");
            return Err(IDENTIFIER_REJECTED);
        }
    }
    Ok((keep_alive, server_keep_alive))
}

/// A will the broker could not publish as asked is refused at CONNECT, and so is one whose
/// payload is above `mqtt.max_payload_size`.
fn check_will(
    broker: &BrokerState,
    c: &codec::Connect,
    client_id: &str,
    auth: &AuthConfig,
) -> Result<(), Refusal> {
    let Some(will) = &c.will else {
        return Ok(());
    };
    let limit = broker.config().mqtt.max_payload_size;
    let (v5, why) = if limit > 0 && will.payload.len() > limit as usize {
        // As Mosquitto's message_size_limit: v5 0x95, 3.x return code 5.
        (
            ReasonCode::PACKET_TOO_LARGE,
            "will payload above mqtt.max_payload_size",
        )
    } else if will.qos > broker.max_qos() {
        (
            ReasonCode::QOS_NOT_SUPPORTED,
            "will QoS above the Maximum QoS",
        )
    } else if will.retain && !broker.config().mqtt.retain_available {
        (
            ReasonCode::RETAIN_NOT_SUPPORTED,
            "retained will while retain is not available",
        )
    } else if super::is_sys_topic(&will.topic) && !state_will(c, &will.topic, client_id, auth) {
        (ReasonCode::TOPIC_NAME_INVALID, "will topic in $SYS")
    } else if will.topic.starts_with("$CONTROL/") {
        // `$CONTROL` is the broker's request space: a PUBLISH there is consumed, never
        // routed, but a will is published later, outside that path, and would carry a
        // command (passwords and all) to `$CONTROL` subscribers. Refused, as in Mosquitto.
        (
            ReasonCode::NOT_AUTHORIZED,
            "will topic in $CONTROL (the broker's request space)",
        )
    } else if !super::is_sys_topic(&will.topic)
        && auth.restricts()
        && !auth.check_acl(client_id, c.username.as_deref(), &will.topic, Access::Write)
    {
        // A will is a PUBLISH made later on the client's behalf: WRITE applies at CONNECT,
        // as in Mosquitto, or a will would publish where the client may not.
        (
            ReasonCode::NOT_AUTHORIZED,
            "the ACL does not let this client publish to its will topic",
        )
    } else {
        return Ok(());
    };
    Err(Refusal {
        v3: ReasonCode::V3_NOT_AUTHORIZED,
        v5,
        why,
    })
}

/// The one `$SYS` will accepted: on the client's own connection state, where a Mosquitto
/// bridge's notifications go, when the ACL (if there is one) lets it write there. Mosquitto
/// accepts it from any client: its MQTT 5 bridges, and 3.1.1 ones with `try_private false`,
/// carry no bridge bit and would otherwise never connect.
fn state_will(c: &codec::Connect, topic: &str, client_id: &str, auth: &AuthConfig) -> bool {
    super::bridge::is_own_state(topic, client_id)
        && (!auth.restricts()
            || auth.check_acl(client_id, c.username.as_deref(), topic, Access::Write))
}

/// The session's expiry and the interval in seconds CONNECT asked for. A 3.x session without
/// clean session lasts `persistent_client_expiration`.
fn session_expiry(c: &codec::Connect, cfg: &MqttConfig) -> (Option<Duration>, u32) {
    if c.protocol.is_v5() {
        let secs = c.properties.session_expiry_interval.unwrap_or(0);
        (expiry_from_secs(secs), secs)
    } else if c.clean_start {
        (Some(Duration::ZERO), 0)
    } else {
        (cfg.persistent_client_expiration, 1)
    }
}

/// Every check that needs no password nor session, in the order the refusals are reported.
fn validate(
    broker: &BrokerState,
    c: &mut codec::Connect,
    enhanced_auth: bool,
    info: &ConnectionInfo,
) -> Result<Terms, Refusal> {
    let peer = &info.peer;
    let cert_user = cert_username(broker, info, c)?;
    let cfg = &broker.config().mqtt;
    let (client_id, assigned) = client_id(c, cfg, peer)?;
    if info.listener_index != BRIDGE_LISTENER && broker.is_bridge_id(&client_id) {
        crate::refusal!(%client_id, %peer,
            "refused: the client id is a bridge's (bridges.local_clientid)");
        return Err(IDENTIFIER_REJECTED);
    }
    let (keep_alive, server_keep_alive) = keep_alive(c, cfg, &client_id, peer)?;
    // An Authentication Method no authenticator answers to (an exchange would have run).
    if let (Some(method), false) = (&c.properties.authentication_method, enhanced_auth) {
        crate::refusal!(%client_id, %peer, %method, "refused: unknown authentication method");
        return Err(Refusal {
            v3: ReasonCode::V3_NOT_AUTHORIZED,
            v5: ReasonCode::BAD_AUTHENTICATION_METHOD,
            why: "unknown authentication method",
        });
    }
    let (auth, auth_generation) = broker.auth(Some(info.listener_index));
    if let Err(r) = check_will(broker, c, &client_id, &auth) {
        crate::refusal!(%client_id, %peer, reason = r.why, bridge = c.bridge,
            "refused: will not acceptable");
        return Err(r);
    }
    let (expiry, expiry_secs) = session_expiry(c, cfg);
    Ok(Terms {
        client_id,
        assigned,
        keep_alive,
        server_keep_alive,
        cert_user,
        expiry,
        expiry_secs,
        username: c.username.as_deref().map(Arc::from),
        listener: info.listener_index,
        auth,
        auth_generation,
    })
}

/// The username and password check (counted as a refused connection when it fails).
async fn login(
    broker: &BrokerState,
    c: &codec::Connect,
    terms: &Terms,
    peer: &PeerAddr,
) -> Result<(), Refusal> {
    let decision = check_login(
        &terms.auth,
        &terms.client_id,
        c.username.as_deref(),
        c.password.as_ref(),
    )
    .await;
    if decision.is_allowed() {
        return Ok(());
    }
    let client_id = &terms.client_id;
    let delay = match peer.slowdown_key() {
        Some(key) => broker
            .login_slowdown()
            .record_failure(key, std::time::Instant::now()),
        None => Duration::ZERO,
    }
    .min(broker.config().mqtt.connect_timeout);
    // Never the password.
    crate::refusal!(%client_id, %peer, username = c.username.as_deref().unwrap_or(""),
        ?decision, ?delay, "refused: login failed");
    broker.metrics().refused_connections.inc();
    hold_refusal(broker, delay).await;
    Err(Refusal {
        v3: ReasonCode(decision.v3_return_code()),
        v5: ReasonCode(decision.v5_reason_code()),
        why: match decision {
            AuthDecision::EmptyPassword => "zero-length password",
            _ => "not authorized",
        },
    })
}

/// How this connection was let in (see [`Login`]).
fn login_kind(c: &codec::Connect, terms: &Terms, enhanced_auth: bool) -> Login {
    if enhanced_auth || terms.cert_user {
        Login::External
    } else if terms.auth.checks_passwords() && c.username.is_some() {
        Login::Password
    } else {
        Login::Unchecked
    }
}

/// Holds back a refused login's CONNACK for `delay` (repeated failures from its address, see
/// [`crate::auth::slowdown`]): an async sleep in this connection's task only, cut short by
/// shutdown.
async fn hold_refusal(broker: &BrokerState, delay: Duration) {
    if delay.is_zero() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = broker.shutdown_token().cancelled() => {}
    }
}

/// Claims the session for this connection, taking it over from any other.
async fn claim(
    broker: &BrokerState,
    c: &codec::Connect,
    terms: &Terms,
    peer: &PeerAddr,
    login: Login,
) -> Result<Claimed, Refusal> {
    let meta = SessionMeta {
        protocol: c.protocol,
        login,
        expiry_secs: terms.expiry.map(crate::session::expiry_secs),
        username: terms.username.clone(),
        peer: Some(peer.clone()),
        listener: u16::try_from(terms.listener).ok(),
    };
    let client_id = &terms.client_id;
    let claimed = broker
        .claim_session(client_id, c.clean_start, meta, c.will.as_ref())
        .await;
    claimed.map_err(|_| {
        crate::refusal!(%client_id, %peer, username = c.username.as_deref().unwrap_or(""),
            "refused: the session belongs to another user (auth.session_owner_check)");
        broker.metrics().refused_connections.inc();
        NOT_AUTHORIZED
    })
}

/// The v5 CONNACK properties: what the client asked that the server changed, and the limits
/// and features it must know about.
fn connack_properties(
    cfg: &MqttConfig,
    terms: &Terms,
    auth: Option<&super::AuthOutcome>,
) -> Properties {
    let mut props = Properties {
        assigned_client_identifier: terms.assigned.clone(),
        server_keep_alive: terms.server_keep_alive,
        topic_alias_maximum: (cfg.max_topic_alias > 0).then_some(cfg.max_topic_alias),
        maximum_packet_size: Some(cfg.max_packet_size),
        ..Properties::default()
    };
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
    if let Some(a) = auth {
        props.authentication_method = Some(a.authenticator.method().to_string());
        props.authentication_data = a.data.clone();
    }
    props
}

/// The CONNACK accepting `c`, within the client's Maximum Packet Size: only its Reason String
/// and User Properties may be left out to make it fit ([MQTT-3.2.2-19], [MQTT-3.2.2-20]); when
/// it does not fit even so, the connection is closed without a CONNACK [MQTT-3.1.2-24]
/// (`Err(None)`, counted as a refused connection).
fn success_connack(
    broker: &BrokerState,
    c: &codec::Connect,
    terms: &Terms,
    auth: Option<&super::AuthOutcome>,
    peer: &PeerAddr,
) -> Result<ConnAck, Option<Refusal>> {
    let properties = if c.protocol.is_v5() {
        connack_properties(&broker.config().mqtt, terms, auth)
    } else {
        Properties::default()
    };
    let mut packet = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: properties.into(),
    });
    let max = client_max_packet(c);
    let fits = codec::fit_within(&mut packet, c.protocol, max as usize);
    match packet {
        Packet::ConnAck(ack) if fits => Ok(ack),
        _ => {
            let client_id = &terms.client_id;
            let len = codec::encoded_len(&packet, c.protocol);
            crate::refusal!(%client_id, %peer, len, max,
                "closing without CONNACK: it does not fit the client's Maximum Packet Size \
                 [MQTT-3.2.2-19]");
            broker.metrics().refused_connections.inc();
            Err(None)
        }
    }
}

/// Never more unacknowledged QoS 1/2 PUBLISH than the client's Receive Maximum
/// [MQTT-3.3.4-9], nor than our own `max_inflight`.
fn send_window(c: &codec::Connect, cfg: &MqttConfig) -> u16 {
    let max_inflight = cfg.max_inflight.max(1);
    match c.properties.receive_maximum {
        Some(rm) if c.protocol.is_v5() => rm.min(max_inflight),
        _ => max_inflight,
    }
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
        let version = c.protocol;
        let client_max = client_max_packet(&c);
        match Self::admit(broker, *c, auth, info, out).await {
            Ok(handler) => ConnectOutcome::Accepted(handler),
            Err(r) => {
                let outcome = refuse(out, version, r, client_max, &info.peer);
                if !out.is_empty() {
                    broker.metrics().packets_sent.inc();
                }
                outcome
            }
        }
    }

    /// [`Handler::connect`] up to the refusal: on success CONNACK (and any resends) are in
    /// `out`; on refusal nothing is. `Err(None)`: close without any CONNACK.
    async fn admit(
        broker: &Arc<BrokerState>,
        mut c: codec::Connect,
        auth: Option<super::AuthOutcome>,
        info: &ConnectionInfo,
        out: &mut super::Outbox,
    ) -> Result<Box<Handler>, Option<Refusal>> {
        let peer = &info.peer;
        let terms = validate(broker, &mut c, auth.is_some(), info)?;
        if auth.is_none() && !terms.cert_user {
            login(broker, &c, &terms, peer).await?;
        }
        // Settled before the session is claimed: a CONNACK that cannot be sent takes nothing
        // over.
        let mut connack = success_connack(broker, &c, &terms, auth.as_ref(), peer)?;
        let login = login_kind(&c, &terms, auth.is_some());
        let mut claimed = claim(broker, &c, &terms, peer, login).await?;
        broker.metrics().client_connected();
        if let Some(will) = claimed.ended_will.take() {
            super::will::publish_will(broker, &claimed.session.client_id, will);
        }

        // A persistent session's record is durable before CONNACK.
        let store_ops = std::mem::take(&mut claimed.store_ops);
        if let (Some(p), false) = (broker.persistence(), store_ops.is_empty()) {
            out.wait_for(p.receipt(store_ops));
        }
        // And in a cluster, once the other nodes will see the claim in its place.
        if let Some(receipt) = claimed.cluster_receipt.take() {
            out.wait_for(receipt);
        }
        let version = c.protocol;
        let session_present = claimed.session_present;
        connack.session_present = session_present;
        // Fitted already; the flag does not change the size.
        codec::encode(&Packet::ConnAck(connack), version, out.buf());
        broker.metrics().packets_sent.inc();
        tracing::info!(client_id = %terms.client_id, %peer, protocol = %version,
            clean_start = c.clean_start, keep_alive = terms.keep_alive, session_present,
            bridge = c.bridge, "client connected");

        let mut handler = Handler::new(broker, c, terms, claimed, auth, info);
        // The keep-alive clock starts at CONNECT; dropping the handler stops it.
        if let Some(timeout) = handler.keep_alive_timeout() {
            broker
                .keep_alive()
                .add(&handler.session, handler.generation, timeout);
        }
        if session_present {
            handler.resend(out);
        }
        Ok(Box::new(handler))
    }

    /// The connection's protocol state once CONNECT is accepted.
    fn new(
        broker: &Arc<BrokerState>,
        c: codec::Connect,
        terms: Terms,
        claimed: Claimed,
        auth: Option<super::AuthOutcome>,
        info: &ConnectionInfo,
    ) -> Handler {
        let cfg = &broker.config().mqtt;
        let v5 = c.protocol.is_v5();
        let ownership = claimed.ownership;
        let send_window = send_window(&c, cfg);
        let rare = (c.will.is_some() || auth.is_some()).then(|| {
            Box::new(super::Rare {
                will: c.will,
                enhanced: auth.map(|a| super::Enhanced {
                    authenticator: a.authenticator,
                    reauth: None,
                }),
                aliases_in: Vec::new(),
            })
        });
        Handler {
            broker: broker.clone(),
            session: claimed.session,
            generation: ownership.generation,
            peer: info.peer.clone(),
            version: c.protocol,
            bridge: c.bridge,
            keep_alive: terms.keep_alive,
            send_window,
            client_max_packet: c.properties.maximum_packet_size.unwrap_or(u32::MAX),
            // Absent means 1 [MQTT-3.1.2-29].
            problem_info: c.properties.request_problem_information != Some(0),
            aliases_out: super::outbound::TopicAliases::new(if v5 {
                c.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            }),
            alias_in_max: if v5 { cfg.max_topic_alias } else { 0 },
            receive_maximum: cfg.receive_maximum.max(1),
            expiry_was_zero: terms.expiry_secs == 0,
            published: false,
            rare,
            username: terms.username,
            listener: terms.listener,
            auth: terms.auth,
            auth_generation: terms.auth_generation,
            rates: rates(broker, info.listener_index),
            blocked: None,
            scratch: Vec::new(),
        }
    }
}
