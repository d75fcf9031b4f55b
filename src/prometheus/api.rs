//! The admin API and its dashboard, on the operations endpoint, with `[metrics]
//! admin_token_file` set (without it these paths answer 404: the API can end sessions, so it
//! is never open). Every `/api/` request needs `Authorization: Bearer <token>` (401 without);
//! the dashboard page itself is static and asks for the token, which it then sends.
//!
//! - `GET /api/v1/broker`: version, node, uptime, clients and sessions, message counters,
//!   retained messages, the cluster's link and each bridge's state.
//! - `GET /api/v1/clients?limit=N&after=ID`: sessions sorted by client id, `limit` (default
//!   100, at most 1000) after client id `ID`; `next` names the `after` of the next page.
//! - `GET /api/v1/clients/<id>`: one session, with its subscriptions (the id percent-encoded).
//! - `DELETE /api/v1/clients/<id>[?discard=true]`: closes its connection (MQTT 5 DISCONNECT
//!   0x98 Administrative action); with `discard`, its session ends too.
//! - `POST /api/v1/publish` with `{"topic", "payload" (text) or "payload_base64", "qos",
//!   "retain"}`: publishes as the broker (outside the ACL; not to `$` topics), answered once
//!   the message is acknowledged everywhere (queued, stored, with the cluster).
//! - `GET /dashboard`: an HTML page that shows the above and refreshes every 2 s.
//!
//! Answers are JSON (`application/json`), errors `{"error": "..."}`.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::Exporter;
use crate::broker::{BrokerState, Kicked, SessionInfo};
use crate::codec::topic::valid_topic_name;
use crate::codec::{QoS, ReasonCode};
use crate::message::Message;

/// The publish path, the one that takes a body.
pub(super) const PUBLISH: &str = "/api/v1/publish";

/// The largest request body taken (a publish).
const BODY_MAX: usize = 2 << 20;

/// Sessions per page, by default and at most.
const PAGE: usize = 100;
const PAGE_MAX: usize = 1000;

/// The dashboard: one static page, its script calling the API.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The answer to an admin API or dashboard request; None for any other path.
pub(super) fn route(
    exporter: &Exporter,
    method: &Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Option<Response<Full<Bytes>>> {
    if path != "/dashboard" && !path.starts_with("/api/") {
        return None;
    }
    if path == "/dashboard" && exporter.admin_token.is_some() {
        return Some(match *method {
            Method::GET | Method::HEAD => page(),
            _ => not_allowed("GET, HEAD"),
        });
    }
    if let Some(denied) = gate(exporter, authorization) {
        return Some(denied);
    }
    let broker = &exporter.broker;
    Some(match (path, path.strip_prefix("/api/v1/clients/")) {
        ("/api/v1/broker", _) if is_get(method) => ok(summary(broker)),
        ("/api/v1/broker", _) => not_allowed("GET, HEAD"),
        ("/api/v1/clients", _) if is_get(method) => ok(clients(broker, query)),
        ("/api/v1/clients", _) => not_allowed("GET, HEAD"),
        (PUBLISH, _) => not_allowed("POST"),
        (_, Some(id)) => match percent_decode(id) {
            None => error(StatusCode::BAD_REQUEST, "the client id is not valid UTF-8"),
            Some(id) if is_get(method) => match broker.session_info(&id) {
                Some(info) => ok(session(&info, true)),
                None => error(StatusCode::NOT_FOUND, "no such session"),
            },
            Some(id) if method == Method::DELETE => disconnect(broker, &id, query),
            Some(_) => not_allowed("GET, HEAD, DELETE"),
        },
        _ => error(StatusCode::NOT_FOUND, "not found"),
    })
}

/// The refusal of an admin API request: 404 without `admin_token_file` (no admin API), 401
/// without its token; None when it may be answered.
pub(super) fn gate(
    exporter: &Exporter,
    authorization: Option<&[u8]>,
) -> Option<Response<Full<Bytes>>> {
    let Some(token) = &exporter.admin_token else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "the admin API is off: set [metrics] admin_token_file",
        ));
    };
    if bearer_is(authorization, token) {
        return None;
    }
    let mut r = error(StatusCode::UNAUTHORIZED, "bearer token required");
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// What `POST /api/v1/publish` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    /// The payload as text (UTF-8)...
    #[serde(default)]
    payload: Option<String>,
    /// ... or in base64, for bytes that are not text.
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

/// `POST /api/v1/publish`: routes the message as the broker's own (no client id, outside the
/// ACL) and answers once it is acknowledged everywhere: queued for every subscriber, on disk
/// where the store must hold it, and with the other nodes of a cluster.
pub(super) async fn publish(broker: &Arc<BrokerState>, body: Incoming) -> Response<Full<Bytes>> {
    let body = match Limited::new(body, BODY_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is over 2 MiB or broken",
            )
        }
    };
    let req: PublishRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body: {e}")),
    };
    let msg = match message(broker, req) {
        Ok(m) => m,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (topic, qos, retain) = (msg.topic.clone(), msg.qos as u8, msg.retain);
    match broker.publish_acknowledged(Arc::new(msg)).await {
        Ok(()) => {
            tracing::info!(topic = %crate::logging::bounded(&topic), qos, retain,
                "admin API: published");
            ok(json!({ "topic": &*topic, "result": "published" }))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The message a publish request asks for, checked as a client's PUBLISH would be.
fn message(broker: &BrokerState, req: PublishRequest) -> Result<Message, &'static str> {
    if !valid_topic_name(&req.topic) || req.topic.starts_with('$') {
        return Err("`topic` must be a topic name: not empty, no wildcards, not starting with $");
    }
    let payload = match (req.payload, req.payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "`payload_base64` is not base64")?;
            Bytes::from(bytes)
        }
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => return Err("give `payload` or `payload_base64`, not both"),
    };
    let max = broker.config().mqtt.max_payload_size;
    if max != 0 && payload.len() > max as usize {
        return Err("the payload is larger than mqtt.max_payload_size");
    }
    let qos = QoS::from_u8(req.qos)
        .filter(|q| *q <= broker.max_qos())
        .ok_or("`qos` must be 0, 1 or 2, at most mqtt.max_qos")?;
    Ok(Message::new(&req.topic, payload, qos, req.retain))
}

fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Whether `authorization` is `Bearer <token>` (the scheme's case ignored, RFC 9110 11.1),
/// compared in constant time.
pub(super) fn bearer_is(authorization: Option<&[u8]>, token: &[u8]) -> bool {
    let presented = authorization
        .and_then(|h| {
            let (scheme, rest) = h.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"Bearer ").then_some(rest)
        })
        .map(<[u8]>::trim_ascii);
    presented.is_some_and(|p| bool::from(p.ct_eq(token)))
}

/// The broker at a glance.
fn summary(b: &BrokerState) -> Value {
    let m = b.metrics();
    let config = b.config();
    let cluster = config.cluster.as_ref().map(|c| {
        json!({
            "node": c.node,
            "up": m.cluster.up.get() == 1,
            "messages_sent": m.cluster.sent.get(),
            "messages_received": m.cluster.received.get(),
            "messages_dropped": m.cluster.dropped.get(),
            "takeovers": m.cluster.takeovers.get(),
        })
    });
    let bridges: Vec<Value> = config
        .bridges
        .iter()
        .zip(&m.bridges)
        .map(|(cfg, bm)| {
            json!({
                "name": cfg.name,
                "address": cfg.address,
                "up": bm.up.get() == 1,
                "inbound": bm.inbound.get() == 1,
                "messages_sent": bm.sent.get(),
                "messages_received": bm.received.get(),
                "messages_dropped": bm.dropped.get(),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": b.uptime().as_secs(),
        "clients_connected": m.clients_connected.get(),
        "clients_maximum": m.clients_maximum.get(),
        "sessions": b.session_count(),
        "subscriptions": b.subscription_count(),
        "retained_messages": b.retained_count(),
        "retained_bytes": b.retained_bytes(),
        "messages_received": m.publish_received.get(),
        "messages_sent": m.publish_sent.get(),
        "messages_dropped_queue_full": m.dropped_queue_full.get(),
        "cluster": cluster,
        "bridges": bridges,
    })
}

/// One page of the session list (see the module doc).
fn clients(b: &BrokerState, query: Option<&str>) -> Value {
    let limit = param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(PAGE)
        .clamp(1, PAGE_MAX);
    let after = param(query, "after");
    let (total, page, more) = b.list_sessions_page(after.as_deref(), limit);
    let next = more
        .then(|| page.last().map(|s| s.client_id.to_string()))
        .flatten();
    let clients: Vec<Value> = page.iter().map(|s| session(s, false)).collect();
    json!({ "total": total, "clients": clients, "next": next })
}

/// A session's fields; its subscriptions only when asked (`detail`), their count always.
fn session(s: &SessionInfo, detail: bool) -> Value {
    let since = s
        .connected_since
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let mut v = json!({
        "client_id": &*s.client_id,
        "username": s.username.as_deref(),
        "peer": s.peer.as_deref(),
        "protocol": s.protocol.to_string(),
        "connected": s.connected,
        "connected_since_unix": since,
        "expiry_seconds": s.expiry.map(|e| e.as_secs()),
        "subscription_count": s.subscriptions.len(),
        "queued": s.queued,
        "inflight": s.inflight,
    });
    if detail {
        v["subscriptions"] = json!(s.subscriptions);
    }
    v
}

/// `DELETE /api/v1/clients/<id>`.
fn disconnect(
    b: &std::sync::Arc<BrokerState>,
    id: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let discard = param(query, "discard").is_some_and(|d| d == "true" || d == "1");
    let result = match b.disconnect_client(id, ReasonCode::ADMINISTRATIVE_ACTION, discard) {
        Kicked::NotFound => return error(StatusCode::NOT_FOUND, "no such session"),
        Kicked::Disconnected => "disconnected",
        Kicked::Discarded => "discarded",
        Kicked::Offline => "offline",
    };
    tracing::info!(client_id = %crate::logging::bounded(id), discard, result,
        "admin API: disconnect");
    ok(json!({ "client_id": id, "result": result }))
}

/// The value of `name` in a query string, percent-decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name)
            .then(|| percent_decode(&v.replace('+', " ")))
            .flatten()
    })
}

/// `%XX` escapes decoded; None when the result is not UTF-8 or an escape is broken.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn ok(v: Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &v)
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = v.to_string();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn page() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_ids_decode() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        let q = Some("limit=5&after=x%2Fy&discard=true");
        assert_eq!(param(q, "limit").as_deref(), Some("5"));
        assert_eq!(param(q, "after").as_deref(), Some("x/y"));
        assert_eq!(param(q, "nope"), None);
        assert_eq!(param(None, "limit"), None);
        assert!(bearer_is(Some(b"bearer  t0k "), b"t0k"));
        assert!(!bearer_is(Some(b"Basic t0k"), b"t0k"));
        assert!(!bearer_is(None, b"t0k"));
    }
}
