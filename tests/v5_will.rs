//! MQTT 5.0 Will: Will Delay Interval (published after the delay, not published on a reconnect
//! within it, published at session end if that comes first), will properties, DISCONNECT 0x00 /
//! 0x04; and session expiry for MQTT 3.1.1 persistent sessions (`persistent_client_expiration`).

#[path = "v5_support.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use starling::codec::{Connect, Disconnect, Properties, ProtocolVersion, QoS, ReasonCode};
use support::*;

fn with_will(id: &str, topic: &str, delay: Option<u32>, expiry: u32) -> Connect {
    let mut c = connect_packet(id);
    c.properties.session_expiry_interval = Some(expiry);
    let props = Properties {
        will_delay_interval: delay,
        ..Default::default()
    };
    c.will = Some(will(topic, b"gone", QoS::AtLeastOnce, props));
    c
}

async fn watcher(b: &TestBroker, filter: &str) -> Client {
    let mut w = Client::connect(b.addr, &format!("watch-{filter}")).await;
    w.subscribe(filter, QoS::AtLeastOnce).await;
    w
}

/// Drops the TCP connection without DISCONNECT and waits until the broker has noticed.
async fn vanish(b: &TestBroker, c: Client, connected_after: u64) {
    drop(c);
    b.wait_until("the broker noticed the dropped connection", |s| {
        s.metrics().clients_connected.get() == connected_after
    })
    .await;
}

/// [MQTT-3.1.2-8]: the will is published once the Will Delay Interval has passed, not before.
#[tokio::test]
async fn mqtt_3_1_2_8_will_published_after_delay() {
    let b = start().await;
    let mut w = watcher(&b, "wd/t").await;
    let (c, _) = Client::connect_with(b.addr, with_will("wd", "wd/t", Some(1), 10)).await;
    vanish(&b, c, 1).await;
    let t0 = Instant::now();
    w.expect_nothing("will before its 1 s delay").await;
    let p = w.next_publish_acked().await;
    let waited = t0.elapsed();
    assert_eq!((&*p.topic, text(&p).as_str()), ("wd/t", "gone"));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "will published {waited:?} after the connection dropped; delay is 1 s"
    );
}

/// [MQTT-3.1.3-9]: a reconnect to the session within the Will Delay Interval cancels the will.
#[tokio::test]
async fn mqtt_3_1_3_9_will_not_published_on_reconnect_within_delay() {
    let b = start().await;
    let mut w = watcher(&b, "wr/#").await;
    let (c, _) = Client::connect_with(b.addr, with_will("wr", "wr/will", Some(1), 60)).await;
    vanish(&b, c, 1).await;
    let mut again = with_will("wr", "wr/will2", None, 60);
    again.clean_start = false;
    again.will = None;
    let (mut c, ack) = Client::connect_with(b.addr, again).await;
    assert!(ack.session_present);
    // Wait past the delay: nothing.
    match w.recv(Duration::from_millis(1600)).await {
        Recv::Timeout => {}
        other => panic!("will published although the client came back: {other:?}"),
    }
    c.publish("wr/marker", b"marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&w.next_publish_acked().await), "marker");
}

/// [MQTT-3.1.2-8] (§3.1.3.2.2): the will is published when the Will Delay Interval passes or
/// the session ends, whichever is first: delay 10 s, session expiry 1 s → published after
/// about 1 s.
#[tokio::test]
async fn mqtt_3_1_2_8_will_published_at_session_end_if_first() {
    let b = start().await;
    let mut w = watcher(&b, "we/t").await;
    let (c, _) = Client::connect_with(b.addr, with_will("we", "we/t", Some(10), 1)).await;
    vanish(&b, c, 1).await;
    let t0 = Instant::now();
    let p = w.next_publish_acked().await;
    let waited = t0.elapsed();
    assert_eq!(text(&p), "gone");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "will published {waited:?} after the drop; the session (1 s) ends before the delay (10 s)"
    );
}

/// With Session Expiry 0 the session ends with the connection, so a delayed will goes at once.
#[tokio::test]
async fn will_delay_with_session_expiry_0_published_immediately() {
    let b = start().await;
    let mut w = watcher(&b, "w0/t").await;
    let (c, _) = Client::connect_with(b.addr, with_will("w0", "w0/t", Some(30), 0)).await;
    vanish(&b, c, 1).await;
    let p = w.next_publish_acked().await;
    assert_eq!(text(&p), "gone");
}

/// Will properties are forwarded like PUBLISH properties (spec 3.1.3.2: Payload Format
/// Indicator, Message Expiry, Content Type, Response Topic, Correlation Data, User Properties);
/// the Will Delay Interval is not a PUBLISH property and is not forwarded.
#[tokio::test]
async fn will_properties_forwarded() {
    let b = start().await;
    let mut w = watcher(&b, "wp/t").await;
    let mut c = connect_packet("wp");
    let props = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        content_type: Some("text/plain".into()),
        response_topic: Some("wp/resp".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        will_delay_interval: Some(0),
        ..Default::default()
    };
    c.will = Some(will("wp/t", b"bye", QoS::AtLeastOnce, props));
    let (c, _) = Client::connect_with(b.addr, c).await;
    vanish(&b, c, 1).await;
    let p = w.next_publish_acked().await;
    assert_eq!(text(&p), "bye");
    let got = &p.properties;
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.response_topic.as_deref(), Some("wp/resp"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"\x00corr"[..]));
    assert_eq!(
        got.user_properties,
        vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into())
        ]
    );
    let left = got
        .message_expiry_interval
        .expect("message expiry forwarded");
    assert!((118..=120).contains(&left), "{left}");
    assert_eq!(got.will_delay_interval, None);
}

/// [MQTT-3.1.2-8]/[MQTT-3.14.4-3]: DISCONNECT 0x00 discards the will; DISCONNECT 0x04
/// (Disconnect with Will Message) publishes it.
#[tokio::test]
async fn mqtt_3_14_4_3_disconnect_0x00_discards_will_0x04_publishes_it() {
    let b = start().await;
    let mut w = watcher(&b, "wdc/#").await;
    let (mut c, _) = Client::connect_with(b.addr, with_will("wdc-0", "wdc/0", None, 0)).await;
    c.disconnect_with(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION))
        .await;
    c.expect_closed("after DISCONNECT 0x00").await;
    let (mut c, _) = Client::connect_with(b.addr, with_will("wdc-4", "wdc/4", None, 0)).await;
    c.disconnect_with(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL))
        .await;
    c.expect_closed("after DISCONNECT 0x04").await;
    let p = w.next_publish_acked().await;
    assert_eq!(p.topic, "wdc/4".into(), "only the 0x04 will is published");
}

/// A will is published when the server closes the connection for a protocol error
/// [MQTT-3.1.2-8], e.g. keep-alive timeout.
#[tokio::test]
async fn will_published_on_keep_alive_timeout() {
    let b = start().await;
    let mut w = watcher(&b, "wka/t").await;
    let mut c = with_will("wka", "wka/t", None, 0);
    c.keep_alive = 1;
    let (mut c, _) = Client::connect_with(b.addr, c).await;
    c.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, "silent")
        .await;
    assert_eq!(text(&w.next_publish_acked().await), "gone");
}

/// `$CONTROL/...` is the broker's request space, where a PUBLISH is consumed and never routed;
/// a will there would be routed when it fires (a dynamic-security command, password included,
/// reaching `$CONTROL` subscribers), so the CONNECT is refused as not authorized (0x87, 3.1.1
/// return code 5), as Mosquitto refuses it. The Server MAY refuse a CONNECT [MQTT-3.1.4-2].
#[tokio::test]
async fn will_on_control_topic_is_refused() {
    let b = start().await;
    let mut w = watcher(&b, "$CONTROL/#").await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut c = with_will("ctl-will", "$CONTROL/dynamic-security/v1", None, 0);
        c.protocol = version;
        let (mut cl, ack) = Client::connect_raw(b.addr, c).await;
        let want = if version == ProtocolVersion::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode(5)
        };
        assert_eq!(ack.code, want, "{version:?}: CONNACK {ack:?}");
        cl.expect_closed("refused CONNECT").await;
    }
    // A will elsewhere is accepted, and the refused ones never fire.
    let (c, _) = Client::connect_with(b.addr, with_will("ok-will", "ctl/t", None, 0)).await;
    drop(c);
    w.expect_nothing("a refused will published").await;
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1 persistent sessions
// ---------------------------------------------------------------------------------------------

fn v311(id: &str, clean: bool) -> Connect {
    let mut c = connect_packet(id);
    c.protocol = ProtocolVersion::V311;
    c.clean_start = clean;
    c
}

/// An MQTT 3.1.1 persistent session (clean session 0) does not expire by default: after a
/// disconnect longer than the expiry used elsewhere, it is still present with its queued
/// message.
#[tokio::test]
async fn v311_persistent_session_never_expires_by_default() {
    let b = start().await;
    let (mut s, _) = Client::connect_with(b.addr, v311("p311", false)).await;
    s.subscribe("p311/t", QoS::AtLeastOnce).await;
    s.send_bytes(&[0xE0, 0x00]).await;
    s.expect_closed("after DISCONNECT").await;
    let mut publ = Client::connect(b.addr, "p311-pub").await;
    publ.publish("p311/t", b"queued", QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.state().session_count(), 2, "persistent session discarded");
    let (mut s, ack) = Client::connect_with(b.addr, v311("p311", false)).await;
    assert!(ack.session_present);
    assert_eq!(text(&s.next_publish_acked().await), "queued");
}

/// `mqtt.persistent_client_expiration` = 1 s: an MQTT 3.1.1 persistent session is discarded
/// after one second offline; the next connection gets session present 0 and no messages.
#[tokio::test]
async fn v311_persistent_client_expiration_expires_session() {
    let mut cfg = config();
    cfg.mqtt.persistent_client_expiration = Some(Duration::from_secs(1));
    let b = start_with(cfg).await;
    let (mut s, _) = Client::connect_with(b.addr, v311("pce", false)).await;
    s.subscribe("pce/t", QoS::AtLeastOnce).await;
    s.send_bytes(&[0xE0, 0x00]).await;
    s.expect_closed("after DISCONNECT").await;
    let t0 = Instant::now();
    let mut publ = Client::connect(b.addr, "pce-pub").await;
    publ.publish("pce/t", b"dropped with the session", QoS::AtLeastOnce)
        .await;
    b.wait_until("the 3.1.1 session expired", |st| st.session_count() == 1)
        .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "expired after {:?}",
        t0.elapsed()
    );
    let (mut s, ack) = Client::connect_with(b.addr, v311("pce", false)).await;
    assert!(!ack.session_present);
    s.subscribe("pce/m", QoS::AtLeastOnce).await;
    publ.publish("pce/m", b"marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&s.next_publish_acked().await), "marker");
}

/// `persistent_client_expiration` applies to MQTT 3.1.1 sessions only: a v5 client's own
/// Session Expiry Interval (here 60 s) wins.
#[tokio::test]
async fn persistent_client_expiration_does_not_shorten_v5_expiry() {
    let mut cfg = config();
    cfg.mqtt.persistent_client_expiration = Some(Duration::from_secs(1));
    let b = start_with(cfg).await;
    let mut c = connect_packet("pce5");
    c.properties.session_expiry_interval = Some(60);
    let (s, _) = Client::connect_with(b.addr, c.clone()).await;
    s.disconnect().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.clean_start = false;
    let (_s, ack) = Client::connect_with(b.addr, c).await;
    assert!(
        ack.session_present,
        "v5 session with expiry 60 s discarded after 1.5 s"
    );
}

// ---------------------------------------------------------------------------------------------
// Takeover: the old connection's will (issue 13, item 5)
// ---------------------------------------------------------------------------------------------

/// Connects `id` with a will on `topic` (Session Expiry `expiry`, Will Delay `delay`), then
/// takes the still-open connection over with a CONNECT without a will (`clean_start`,
/// Session Expiry 60). The old connection gets DISCONNECT 0x8E; once the new CONNACK is in,
/// the old connection's end (will included) is complete [MQTT-3.1.4-2].
async fn take_over(
    b: &TestBroker,
    id: &str,
    topic: &str,
    (expiry, delay): (u32, Option<u32>),
    clean_start: bool,
) -> Client {
    let (mut old, _) = Client::connect_with(b.addr, with_will(id, topic, delay, expiry)).await;
    let mut again = with_will(id, topic, None, 60);
    again.clean_start = clean_start;
    again.will = None;
    let (new, ack) = Client::connect_with(b.addr, again).await;
    assert_eq!(ack.session_present, !clean_start && expiry > 0, "{id}");
    old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER, "taken over")
        .await;
    new
}

/// The first message `w` gets after `marker` was published by `new` on `marker_topic`.
async fn first_after_marker(w: &mut Client, new: &mut Client, marker_topic: &str) -> String {
    new.publish(marker_topic, b"marker", QoS::AtLeastOnce).await;
    let p = w.next_publish_acked().await;
    format!("{}={}", p.topic, text(&p))
}

/// [MQTT-3.1.2-8], [MQTT-3.1.3-9]: a new connection to the session (Clean Start 0, the old
/// Session Expiry > 0) is made before the Will Delay Interval has passed, so the will of the
/// connection it takes over is not published, with a Will Delay of 0 and of 30 s alike.
#[tokio::test]
async fn mqtt_3_1_3_9_takeover_of_continuing_session_cancels_will() {
    let b = start().await;
    let mut w = watcher(&b, "tk/#").await;
    for (id, delay) in [("tk-d0", None), ("tk-d30", Some(30))] {
        let topic = format!("tk/{id}/will");
        let mut new = take_over(&b, id, &topic, (60, delay), false).await;
        let marker = format!("tk/{id}/marker");
        assert_eq!(
            first_after_marker(&mut w, &mut new, &marker).await,
            format!("{marker}=marker"),
            "{id}: the will of the taken-over connection was published although the session \
             continues [MQTT-3.1.3-9]"
        );
    }
    w.expect_nothing("no will later either").await;
}

/// [MQTT-3.1.2-8]: the will goes when the Will Delay Interval passes or the session ends,
/// whichever is first. A takeover with Clean Start 1 ends the old session [MQTT-3.1.2-4], and
/// so does a takeover of a session with Session Expiry 0 [MQTT-3.1.2-10]: the old
/// connection's will is published at once, before the new CONNACK, even with a 30 s delay.
#[tokio::test]
async fn mqtt_3_1_2_8_takeover_that_ends_the_session_publishes_will() {
    let b = start().await;
    let mut w = watcher(&b, "te/#").await;
    let cases = [
        ("te-clean-d0", (60, None), true),
        ("te-clean-d30", (60, Some(30)), true),
        ("te-exp0-d0", (0, None), false),
        ("te-exp0-d30", (0, Some(30)), false),
    ];
    for (id, terms, clean_start) in cases {
        let topic = format!("te/{id}/will");
        let mut new = take_over(&b, id, &topic, terms, clean_start).await;
        let marker = format!("te/{id}/marker");
        assert_eq!(
            first_after_marker(&mut w, &mut new, &marker).await,
            format!("{topic}=gone"),
            "{id}: the session ended with the takeover, its will is due [MQTT-3.1.2-8]"
        );
        assert_eq!(text(&w.next_publish_acked().await), "marker", "{id}");
    }
    w.expect_nothing("one will per ended session").await;
}

/// A will waiting out its Will Delay Interval is cancelled by a new connection to this session
/// [MQTT-3.1.3-9] (Clean Start 0: see above). A reconnect with Clean Start 1 does not continue
/// the session but ends it [MQTT-3.1.2-4], and a will is published when its delay passes or
/// the session ends, whichever is first [MQTT-3.1.2-8]: at the reconnect, not 30 s later.
#[tokio::test]
async fn mqtt_3_1_2_8_clean_start_reconnect_publishes_the_pending_will() {
    let b = start().await;
    let mut w = watcher(&b, "tp/#").await;
    let (c, _) = Client::connect_with(b.addr, with_will("tp", "tp/will", Some(30), 60)).await;
    vanish(&b, c, 1).await;
    let mut again = with_will("tp", "tp/will", None, 60);
    again.will = None;
    let (mut new, ack) = Client::connect_with(b.addr, again).await;
    assert!(!ack.session_present);
    assert_eq!(
        first_after_marker(&mut w, &mut new, "tp/marker").await,
        "tp/will=gone",
        "the pending will of the session that Clean Start 1 ended [MQTT-3.1.2-8]"
    );
    assert_eq!(text(&w.next_publish_acked().await), "marker");
    w.expect_nothing("the will once only").await;
}
