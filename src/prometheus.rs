//! The operations HTTP endpoint (`[metrics] bind`): Prometheus metrics, health checks, and the
//! admin API with its dashboard.
//!
//! - `GET /metrics`: every counter and gauge behind `$SYS` (the same [`Metrics`] counters and
//!   [`BrokerState`] figures, read at scrape time) in the Prometheus text exposition format
//!   0.0.4, named `starling_*` with `HELP` and `TYPE` lines, plus per-listener connections,
//!   in-flight messages and the store writer's queue (its depth and bound, what waits for room
//!   and what was dropped or queued over the bound; zeros without persistence). `$SYS`'s load
//!   averages are left out: Prometheus derives rates itself with `rate()`.
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 while the broker accepts connections, 503 once shutdown has begun. The
//!   endpoint is started by [`crate::Broker::start`] only after every MQTT listener is bound, so
//!   any answer at all means the listeners were ready.
//!
//! With `[metrics] admin_token_file`, the admin API (`/api/v1/...`) and its dashboard
//! (`/dashboard`) are served here too (see [`api`]).
//!
//! `HEAD` is answered like `GET`; other methods get 405, other paths 404. With `[metrics]
//! bearer_token_file`, `/metrics` wants `Authorization: Bearer <token>` (401 otherwise); health
//! checks never need it, so they work for an orchestrator that knows no secret.
//!
//! It serves HTTP/1.x with hyper. A request's headers must arrive within `header_timeout`, and
//! open connections are bounded overall and per peer address without ever refusing a new one:
//! an older, preferably half-open, connection is closed to make room (see [`conns`]), so idle
//! sockets cannot keep health checks out.
//!
//! [`Metrics`]: crate::metrics::Metrics

mod api;
mod bridges;
mod cluster;
mod conns;

use std::convert::Infallible;
use std::fmt::{Display, Write as _};
use std::net::SocketAddr;

use crate::config::BindAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::metrics::{Counter, Metrics, StoreMetrics};

pub use conns::{Admission, ConnTable};

/// Time open HTTP connections get to finish once the broker shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoint reads: the broker and the bound address of each MQTT listener (the label
/// of its connection gauge).
#[derive(Clone)]
pub struct Exporter {
    broker: Arc<BrokerState>,
    listeners: Arc<[BindAddr]>,
    conns: Arc<ConnTable>,
    header_timeout: Duration,
    /// The token `/metrics` wants, when `bearer_token_file` is set.
    token: Option<Arc<[u8]>>,
    /// The admin API's token, when `admin_token_file` is set (no admin API without).
    admin_token: Option<Arc<[u8]>>,
}

impl Exporter {
    /// The endpoint of `broker`, with the connection limits of its `[metrics]` section and no
    /// token.
    pub fn new(broker: Arc<BrokerState>, listeners: Vec<BindAddr>) -> Exporter {
        let m = &broker.config().metrics;
        let conns = ConnTable::new(m.max_connections, m.max_connections_per_peer);
        let header_timeout = m.header_timeout;
        Exporter {
            broker,
            listeners: listeners.into(),
            conns,
            header_timeout,
            token: None,
            admin_token: None,
        }
    }

    /// Serves the admin API and dashboard, for requests with `Authorization: Bearer <token>`.
    pub fn with_admin_token(mut self, token: &str) -> Exporter {
        self.admin_token = Some(Arc::from(token.as_bytes()));
        self
    }

    /// Requires `Authorization: Bearer <token>` on `/metrics`.
    pub fn with_bearer_token(mut self, token: &str) -> Exporter {
        self.token = Some(Arc::from(token.as_bytes()));
        self
    }

    /// Serves HTTP on `listener` until the broker shuts down. Connections are spawned on
    /// `tracker` and closed gracefully at shutdown.
    pub async fn serve(self, listener: TcpListener, tracker: TaskTracker) {
        let shutdown = self.broker.shutdown_token().clone();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admission = self.conns.admit(peer.ip());
            tracker.spawn(
                self.clone()
                    .connection(stream, peer, admission, shutdown.clone()),
            );
        }
    }

    /// Serves one connection until it ends, is closed to make room for a newer one, or the
    /// broker shuts down.
    async fn connection(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        admission: Admission,
        shutdown: CancellationToken,
    ) {
        let answered = admission.answered.clone();
        let header_timeout = self.header_timeout;
        let this = self.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let (this, answered) = (this.clone(), answered.clone());
            async move {
                let response = this.handle(req).await;
                answered.store(true, Ordering::Relaxed);
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = admission.evict.cancelled() => {
                tracing::debug!(%peer, "metrics endpoint: closed to make room for a newer connection");
                Ok(())
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut())
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "metrics endpoint: connection error");
        }
    }

    /// The response to one request: the admin API's (a publish reads the body), else
    /// [`Self::respond`]'s.
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        let (method, uri) = (req.method(), req.uri());
        if method == Method::POST && uri.path() == api::PUBLISH {
            if let Some(denied) = api::gate(self, auth) {
                return denied;
            }
            return api::publish(&self.broker, req.into_body()).await;
        }
        api::route(self, method, uri.path(), uri.query(), auth)
            .unwrap_or_else(|| self.respond(method, uri.path(), auth))
    }

    /// The response to `method path`, with the request's `Authorization` header if any.
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/metrics" if !self.authorized(authorization) => {
                let mut r = text(StatusCode::UNAUTHORIZED, "bearer token required\n");
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            "/metrics" => {
                let mut body = render(&self.broker, &self.listeners);
                write_http(&mut body, &self.conns);
                let mut r = text(StatusCode::OK, body);
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.broker.shutdown_token().is_cancelled() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }
            "/readyz" => text(StatusCode::OK, "ready\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Whether a `/metrics` request with this `Authorization` header may be answered: always
    /// without a token; with one, only `Bearer <token>` (compared in constant time). The
    /// scheme's name is case-insensitive (RFC 9110 11.1): `bearer` and `BEARER` too.
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| api::bearer_is(authorization, token))
    }
}

/// The endpoint's own connections, appended to the exposition.
fn write_http(body: &mut String, conns: &ConnTable) {
    let mut out = Exposition {
        text: std::mem::take(body),
    };
    let open = "starling_http_connections";
    out.family(open, "gauge", "Connections open on the metrics endpoint.");
    out.sample(open, &[], conns.open());
    let evicted = "starling_http_connections_evicted_total";
    out.family(
        evicted,
        "counter",
        "Metrics endpoint connections closed to make room for a newer one (metrics.\
         max_connections, metrics.max_connections_per_peer).",
    );
    out.sample(evicted, &[], conns.evicted());
    *body = out.text;
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Renders every metric in the text exposition format 0.0.4. `listeners` labels the
/// per-listener gauges, in configuration order.
pub fn render(b: &BrokerState, listeners: &[BindAddr]) -> String {
    let mut out = Exposition::default();
    write_counters(&mut out, b);
    write_gauges(&mut out, b, listeners);
    bridges::write(&mut out, b);
    cluster::write(&mut out, b);
    write_info(&mut out, b);
    out.text
}

/// Every counter: the single ones, then messages dropped by reason.
fn write_counters(out: &mut Exposition, b: &BrokerState) {
    let m = b.metrics();
    for (name, help, value) in connection_counters(m)
        .into_iter()
        .chain(traffic_counters(m))
    {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }
    let log = "starling_log_lines_dropped_total";
    out.family(
        log,
        "counter",
        "Log lines dropped because the log writer's queue was full (its destination stalled) \
         ($SYS log/dropped).",
    );
    out.sample(log, &[], crate::logging::dropped_lines());
    let delayed = "starling_login_refusals_delayed_total";
    out.family(
        delayed,
        "counter",
        "Refused logins whose CONNACK was held back because their address had failed \
         repeatedly (auth.login_failures_before_delay).",
    );
    out.sample(delayed, &[], b.login_slowdown().delayed_total());
    let refused = "starling_retained_refused_total";
    out.family(
        refused,
        "counter",
        "Retained PUBLISH on a new topic delivered but not stored because [retained] \
         max_messages or max_bytes was reached ($SYS retained messages/refused).",
    );
    out.sample(refused, &[], m.retained_refused.get());
    let paced = "starling_publishers_paced_total";
    out.family(
        paced,
        "counter",
        "Times a publisher was not read until a subscriber queue its message left 128 deep \
         had drained to 64 (flow control; at most 500 ms per subscriber until it drains).",
    );
    out.sample(paced, &[], m.publishers_paced.get());
    let blocked = "starling_publishers_blocked_total";
    out.family(
        blocked,
        "counter",
        "Times a QoS 1/2 PUBLISH found a subscriber queue full (max_queued_messages) and its \
         publisher was not read until the queue made room (at most 500 ms; the subscriber is \
         then stuck and what does not fit is dropped).",
    );
    out.sample(blocked, &[], m.publishers_blocked.get());
    let expired = "starling_publisher_pace_expired_total";
    out.family(
        expired,
        "counter",
        "Paced publishers read again because the subscriber queue had not drained within \
         500 ms: a slow consumer, which paces nobody until it drains.",
    );
    out.sample(expired, &[], m.pace_expired.get());
    let handed = "starling_shared_handed_over_total";
    out.family(
        handed,
        "counter",
        "Stored messages of an expiring $share member handed to another member of its group.",
    );
    out.sample(handed, &[], m.shared_handed_over.get());
    let handover_waits = "starling_shared_handover_waits_total";
    out.family(
        handover_waits,
        "counter",
        "Times such a hand-over waited for room in the other members' queues.",
    );
    out.sample(handover_waits, &[], m.shared_handover_waits.get());
    let shed = "starling_queues_shed_total";
    out.family(
        shed,
        "counter",
        "Times a subscriber's queue was shed because it held the saturated global budget \
         (limits.global_queued_bytes_high) without taking anything (reason=\"shed\" below \
         counts the messages).",
    );
    out.sample(shed, &[], m.queues_shed.get());
    let dropped = "starling_publish_messages_dropped_total";
    out.family(
        dropped,
        "counter",
        "Messages not delivered to a subscriber, by reason ($SYS publish/messages/dropped is \
         the sum).",
    );
    for (reason, n) in [
        ("queue_full", m.dropped_queue_full.get()),
        ("offline_qos0", m.dropped_offline_qos0.get()),
        ("expired", m.dropped_expired.get()),
        ("too_large", m.dropped_too_large.get()),
        ("not_authorized", m.dropped_not_authorized.get()),
        ("shed", m.dropped_shed.get()),
        ("payload_too_large", m.dropped_payload_too_large.get()),
        ("quota", m.dropped_quota.get()),
    ] {
        out.sample(dropped, &[("reason", reason)], n);
    }
}

/// Counters of connections and sessions: name, help and value.
fn connection_counters(m: &Metrics) -> [(&'static str, &'static str, u64); 4] {
    [
        (
            "starling_connections_accepted_total",
            "TCP connections accepted, including refused ones ($SYS load/sockets).",
            m.connections_accepted.get(),
        ),
        (
            "starling_connections_refused_total",
            "Connections closed at accept because a max_connections limit was reached.",
            m.refused_connections.get(),
        ),
        (
            "starling_connects_total",
            "CONNECT packets received ($SYS load/connections).",
            m.connects.get(),
        ),
        (
            "starling_clients_expired_total",
            "Persistent sessions discarded because they expired ($SYS clients/expired).",
            m.clients_expired.get(),
        ),
    ]
}

/// Counters of packets, messages and bytes: name, help and value.
fn traffic_counters(m: &Metrics) -> [(&'static str, &'static str, u64); 8] {
    [
        (
            "starling_messages_received_total",
            "MQTT packets of every type received ($SYS messages/received).",
            m.packets_received.get(),
        ),
        (
            "starling_messages_sent_total",
            "MQTT packets of every type sent ($SYS messages/sent).",
            m.packets_sent.get(),
        ),
        (
            "starling_publish_messages_received_total",
            "PUBLISH packets received ($SYS publish/messages/received).",
            m.publish_received.get(),
        ),
        (
            "starling_publish_messages_sent_total",
            "PUBLISH packets sent ($SYS publish/messages/sent).",
            m.publish_sent.get(),
        ),
        (
            "starling_publish_bytes_received_total",
            "PUBLISH payload bytes received ($SYS publish/bytes/received).",
            m.publish_bytes_received.get(),
        ),
        (
            "starling_publish_bytes_sent_total",
            "PUBLISH payload bytes sent ($SYS publish/bytes/sent).",
            m.publish_bytes_sent.get(),
        ),
        (
            "starling_bytes_received_total",
            "Bytes received on MQTT connections ($SYS bytes/received).",
            m.bytes_received.get(),
        ),
        (
            "starling_bytes_sent_total",
            "Bytes sent on MQTT connections ($SYS bytes/sent).",
            m.bytes_sent.get(),
        ),
    ]
}

/// Every gauge: the broker-wide ones, then connections per listener.
fn write_gauges(out: &mut Exposition, b: &BrokerState, listeners: &[BindAddr]) {
    let m = &b.metrics();
    for (name, help, value) in client_gauges(b).into_iter().chain(store_gauges(b)) {
        out.family(name, "gauge", help);
        out.sample(name, &[], value);
    }
    store_queue(b, out);
    let peers = "starling_login_slowdown_peers";
    out.family(
        peers,
        "gauge",
        "Peer addresses with recent failed logins tracked for the login slowdown (at most \
         auth.login_tracked_peers).",
    );
    out.sample(peers, &[], b.login_slowdown().tracked_peers());
    let per_listener = "starling_listener_connections";
    out.family(per_listener, "gauge", "Connections open on each listener.");
    for (i, addr) in listeners.iter().enumerate() {
        let open = m.listener_connections.get(i).map_or(0, |c| c.get());
        out.sample(per_listener, &[("listener", &addr.to_string())], open);
    }
}

/// Gauges of clients and sessions: name, help and value.
fn client_gauges(b: &BrokerState) -> [(&'static str, &'static str, u64); 4] {
    let m = &b.metrics();
    let sessions = b.session_count() as u64;
    let connected = m.clients_connected.get();
    [
        (
            "starling_clients_connected",
            "Clients connected now ($SYS clients/connected).",
            connected,
        ),
        (
            "starling_clients_disconnected",
            "Persistent sessions whose client is not connected ($SYS clients/disconnected).",
            sessions.saturating_sub(connected),
        ),
        (
            "starling_clients_maximum",
            "Most clients (sessions, connected or not) at once since start ($SYS clients/maximum).",
            m.clients_maximum(sessions),
        ),
        (
            "starling_sessions",
            "Sessions, connected or not ($SYS clients/total).",
            sessions,
        ),
    ]
}

/// Gauges of subscriptions, stored messages and the queue budget: name, help and value.
fn store_gauges(b: &BrokerState) -> [(&'static str, &'static str, u64); 8] {
    let retained = b.retained_count() as u64;
    [
        (
            "starling_subscriptions",
            "Subscriptions, shared ones included ($SYS subscriptions/count).",
            b.subscription_count() as u64,
        ),
        (
            "starling_shared_subscriptions",
            "Shared subscriptions ($SYS shared_subscriptions/count).",
            b.shared_subscription_count() as u64,
        ),
        (
            "starling_retained_messages",
            "Retained messages ($SYS retained messages/count).",
            retained,
        ),
        (
            "starling_messages_stored",
            "Retained plus queued and in-flight messages ($SYS messages/stored).",
            retained + b.queued_messages(),
        ),
        (
            "starling_messages_inflight",
            "QoS 1 and 2 messages sent to clients and not yet acknowledged.",
            b.inflight_messages(),
        ),
        (
            "starling_queued_bytes",
            "Bytes queued for delivery over all sessions ($SYS store/messages/bytes, with \
             starling_retained_bytes).",
            b.budget().used(),
        ),
        (
            "starling_retained_bytes",
            "Bytes the retained messages hold, as [retained] max_bytes counts them.",
            b.retained_bytes(),
        ),
        (
            "starling_queue_budget_saturated",
            "1 while limits.global_queued_bytes_high is exceeded and reads from publishers are \
             paused.",
            u64::from(b.budget().is_saturated()),
        ),
    ]
}

/// Uptime and the build's version.
fn write_info(out: &mut Exposition, b: &BrokerState) {
    out.family(
        "starling_uptime_seconds",
        "gauge",
        "Seconds since the broker started ($SYS uptime).",
    );
    out.sample(
        "starling_uptime_seconds",
        &[],
        format_args!("{:.3}", b.uptime().as_secs_f64()),
    );
    out.family(
        "starling_build_info",
        "gauge",
        "Always 1; the version label is the broker's ($SYS version).",
    );
    out.sample(
        "starling_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
}

/// The store writer's queue and its bound (zeros without persistence).
fn store_queue(b: &BrokerState, out: &mut Exposition) {
    let writer = b.persistence().map(|p| &p.writer);
    let m = writer.map(|w| w.metrics());
    let get = |c: fn(&StoreMetrics) -> &Counter| m.map_or(0, |m| c(m).get());
    let families: [(&str, &str, &str, u64); 5] = [
        (
            "starling_store_queue_depth",
            "gauge",
            "Requests waiting in the store writer's queue (at most its capacity, plus writes \
             that must not be lost queued over it).",
            get(|m| &m.store_queue_depth),
        ),
        (
            "starling_store_queue_capacity",
            "gauge",
            "Requests the store writer's queue holds before acknowledged writes wait.",
            writer.map_or(0, |w| w.capacity() as u64),
        ),
        (
            "starling_store_submits_waiting",
            "gauge",
            "Acknowledged writes waiting for room in the full store queue; each pauses the \
             reads of its connection.",
            get(|m| &m.store_submits_waiting),
        ),
        (
            "starling_store_deletes_dropped_total",
            "counter",
            "Deletes after an acknowledgement dropped because the store queue was full (a \
             restart may redeliver those messages with DUP=1).",
            get(|m| &m.store_deletes_dropped),
        ),
        (
            "starling_store_writes_over_bound_total",
            "counter",
            "Writes that must not be lost queued over the store queue's capacity because it \
             was full.",
            get(|m| &m.store_writes_over_bound),
        ),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        out.sample(name, &[], value);
    }
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing into a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tokio_util::sync::CancellationToken;

    fn exporter() -> Exporter {
        let broker = BrokerState::new(Config::default(), CancellationToken::new());
        Exporter::new(Arc::new(broker), vec!["127.0.0.1:1883".parse().unwrap()])
    }

    #[test]
    fn every_sample_has_help_and_type() {
        let e = exporter();
        e.broker.metrics().dropped_expired.add(3);
        e.broker.metrics().listener_connections[0].add(2);
        let text = render(&e.broker, &e.listeners);
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert!(text.contains("starling_publish_messages_dropped_total{reason=\"expired\"} 3\n"));
        assert!(text.contains("starling_listener_connections{listener=\"127.0.0.1:1883\"} 2\n"));
        assert!(text.contains("# TYPE starling_clients_connected gauge\n"));
        assert!(text.contains("starling_build_info{version=\""));
    }

    #[tokio::test]
    async fn the_store_queue_is_exported_with_its_bound() {
        use crate::persistence::Persistence;
        use crate::storage::{MemoryStore, StoreWriter, SyncMode};
        let store = Arc::new(MemoryStore::new());
        let writer = StoreWriter::spawn(store.clone(), SyncMode::Batch, 8);
        writer.metrics().store_deletes_dropped.add(2);
        let p = Persistence::new(store, writer, 1, 10);
        let broker = BrokerState::new(Config::default(), CancellationToken::new())
            .with_persistence(Some(Arc::new(p)));
        let text = render(&broker, &[]);
        assert!(text.contains("# TYPE starling_store_queue_depth gauge\n"));
        assert!(text.contains("starling_store_queue_capacity 8\n"));
        assert!(text.contains("# TYPE starling_store_deletes_dropped_total counter\n"));
        assert!(text.contains("starling_store_deletes_dropped_total 2\n"));
        assert!(text.contains("starling_store_writes_over_bound_total 0\n"));
        // Without persistence: zeros.
        let text = render(&exporter().broker, &[]);
        assert!(text.contains("starling_store_queue_capacity 0\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.sample("x", &[("a", "q\"b\\s\nn")], 1);
        assert_eq!(e.text, "x{a=\"q\\\"b\\\\s\\nn\"} 1\n");
    }

    #[test]
    fn routes_and_readiness() {
        let e = exporter();
        assert_eq!(e.respond(&Method::GET, "/healthz", None).status(), 200);
        assert_eq!(e.respond(&Method::GET, "/readyz", None).status(), 200);
        assert_eq!(e.respond(&Method::HEAD, "/metrics", None).status(), 200);
        assert_eq!(e.respond(&Method::GET, "/nope", None).status(), 404);
        let post = e.respond(&Method::POST, "/metrics", None);
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        e.broker.shutdown_token().cancel();
        assert_eq!(e.respond(&Method::GET, "/readyz", None).status(), 503);
        assert_eq!(e.respond(&Method::GET, "/healthz", None).status(), 200);
    }

    #[test]
    fn a_bearer_token_guards_metrics_but_not_health_checks() {
        let e = exporter().with_bearer_token("s3cret");
        let get = |auth: Option<&[u8]>| e.respond(&Method::GET, "/metrics", auth).status();
        assert_eq!(get(None), 401);
        assert_eq!(get(Some(b"Bearer wrong")), 401);
        assert_eq!(get(Some(b"Bearer s3cre")), 401);
        assert_eq!(get(Some(b"Basic s3cret")), 401);
        assert_eq!(get(Some(b"Bearer s3cret")), 200);
        assert_eq!(get(Some(b"bearer s3cret")), 200, "RFC 9110 11.1");
        assert_eq!(get(Some(b"BEARER s3cret")), 200);
        assert_eq!(get(Some(b"Bearers3cret")), 401);
        let refused = e.respond(&Method::GET, "/metrics", None);
        assert_eq!(refused.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(e.respond(&Method::GET, "/healthz", None).status(), 200);
        assert_eq!(e.respond(&Method::GET, "/readyz", None).status(), 200);
    }
}
