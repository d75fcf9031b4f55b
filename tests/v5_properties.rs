//! MQTT 5.0 properties end to end: PUBLISH properties forwarded to subscribers unchanged (user
//! properties in order, payload format, content type, response topic, correlation data), and
//! Request Problem Information deciding whether failure acks carry a Reason String.

#[path = "v5_support.rs"]
mod support;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS as RQoS;
use starling::codec::{BoxedProperties, Packet, Properties, PubResp, QoS, ReasonCode};
use support::*;

fn user_props() -> Vec<(String, String)> {
    [
        ("b", "2"),
        ("a", "1"),
        ("a", "0"),
        ("z", ""),
        ("ünï", "cödé"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// [MQTT-3.3.2-17] [MQTT-3.3.2-18]: the server forwards every User Property unaltered and in
/// order, duplicates included. Publisher and subscriber are rumqttc v5 clients.
#[tokio::test]
async fn mqtt_3_3_2_17_18_user_properties_forwarded_in_order() {
    let b = start().await;
    let mut sub = rumq::spawn(rumq::options(b.addr, "up-sub"));
    sub.connack().await;
    sub.client
        .subscribe("up/t", RQoS::AtLeastOnce)
        .await
        .unwrap();
    sub.suback().await;

    let mut publ = rumq::spawn(rumq::options(b.addr, "up-pub"));
    publ.connack().await;
    for qos in [RQoS::AtMostOnce, RQoS::AtLeastOnce, RQoS::ExactlyOnce] {
        let props = PublishProperties {
            user_properties: user_props(),
            ..Default::default()
        };
        publ.client
            .publish_with_properties("up/t", qos, false, format!("{qos:?}"), props)
            .await
            .unwrap();
        let p = sub.publish().await;
        assert_eq!(&p.payload[..], format!("{qos:?}").as_bytes());
        let got = p.properties.expect("PUBLISH carries properties");
        assert_eq!(
            got.user_properties,
            user_props(),
            "user properties at {qos:?}"
        );
    }
}

/// The same check with the raw client, so the exact wire order of the forwarded User Property
/// list is asserted independently of rumqttc's decoder.
#[tokio::test]
async fn mqtt_3_3_2_18_user_properties_raw_wire_order() {
    let b = start().await;
    let mut sub = Client::connect(b.addr, "upr-sub").await;
    sub.subscribe("upr/t", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "upr-pub").await;
    let mut p = publish("upr/t", b"x", QoS::AtLeastOnce, 0);
    p.properties.user_properties = user_props();
    publ.publish_packet(p).await;
    let got = sub.next_publish_acked().await;
    assert_eq!(got.properties.user_properties, user_props());
}

/// [MQTT-3.3.2-4] Payload Format Indicator, [MQTT-3.3.2-20] Content Type, [MQTT-3.3.2-15]
/// Response Topic and [MQTT-3.3.2-16] Correlation Data are forwarded unaltered.
#[tokio::test]
async fn mqtt_3_3_2_4_15_16_20_message_properties_passed_through() {
    let b = start().await;
    let mut sub = rumq::spawn(rumq::options(b.addr, "mp-sub"));
    sub.connack().await;
    sub.client
        .subscribe("mp/t", RQoS::ExactlyOnce)
        .await
        .unwrap();
    sub.suback().await;

    let mut publ = rumq::spawn(rumq::options(b.addr, "mp-pub"));
    publ.connack().await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json; charset=utf-8".into()),
        response_topic: Some("mp/reply/42".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xff, 0xfe])),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    for qos in [RQoS::AtMostOnce, RQoS::AtLeastOnce, RQoS::ExactlyOnce] {
        publ.client
            .publish_with_properties("mp/t", qos, false, "{\"a\":1}", props.clone())
            .await
            .unwrap();
        let p = sub.publish().await;
        let got = p.properties.expect("PUBLISH carries properties");
        assert_eq!(got.payload_format_indicator, Some(1), "{qos:?}");
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/json; charset=utf-8"),
            "{qos:?}"
        );
        assert_eq!(
            got.response_topic.as_deref(),
            Some("mp/reply/42"),
            "{qos:?}"
        );
        assert_eq!(
            got.correlation_data.as_deref(),
            Some(&[0u8, 1, 2, 0xff, 0xfe][..]),
            "{qos:?}"
        );
        assert_eq!(got.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(got.topic_alias, None, "no alias: the client allows none");
        assert!(got.subscription_identifiers.is_empty());
    }

    // Payload Format Indicator 0 is forwarded as sent, too.
    let props = PublishProperties {
        payload_format_indicator: Some(0),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("mp/t", RQoS::AtLeastOnce, false, vec![0xffu8, 0], props)
        .await
        .unwrap();
    let p = sub.publish().await;
    let got = p.properties.expect("PUBLISH carries properties");
    assert_eq!(got.payload_format_indicator, Some(0));
    assert_eq!(got.content_type, None);
}

/// Properties also pass through a stored (retained) message and a queued one, and are not
/// invented: a PUBLISH without properties arrives with none.
#[tokio::test]
async fn message_properties_kept_on_retained_and_absent_when_not_sent() {
    let b = start().await;
    let mut publ = Client::connect(b.addr, "mpr-pub").await;
    let mut p = publish("mpr/t", b"r", QoS::AtLeastOnce, 0);
    p.retain = true;
    p.properties.content_type = Some("text/plain".into());
    p.properties.response_topic = Some("mpr/resp".into());
    p.properties.correlation_data = Some(Bytes::from_static(b"cid"));
    p.properties.user_properties = vec![("x".into(), "1".into()), ("y".into(), "2".into())];
    publ.publish_packet(p).await;

    let mut sub = Client::connect(b.addr, "mpr-sub").await;
    sub.subscribe("mpr/#", QoS::AtLeastOnce).await;
    let r = sub.next_publish_acked().await;
    assert!(r.retain);
    assert_eq!(r.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(r.properties.response_topic.as_deref(), Some("mpr/resp"));
    assert_eq!(r.properties.correlation_data.as_deref(), Some(&b"cid"[..]));
    assert_eq!(
        r.properties.user_properties,
        vec![("x".into(), "1".into()), ("y".into(), "2".into())]
    );

    publ.publish("mpr/plain", b"p", QoS::AtLeastOnce).await;
    let plain = sub.next_publish_acked().await;
    assert_eq!(
        plain.properties,
        Default::default(),
        "a PUBLISH sent without properties must arrive without any"
    );
}

/// Every ack the server sends in one session: SUBACK (success and 0x8F), inbound QoS 1/2
/// (PUBACK, PUBREC, PUBCOMP), outbound QoS 2 (PUBREL), PUBCOMP 0x92, UNSUBACK (0x00, 0x11,
/// 0x8F) and a PUBACK 0x97; each named, with whether its reason code is a failure.
async fn every_ack(
    request_problem_information: Option<u8>,
) -> Vec<(String, bool, BoxedProperties)> {
    let mut cfg = config();
    // A quota small enough to get a failing PUBACK (0x97) later.
    cfg.limits.max_publish_bandwidth = 64;
    let b = start_with(cfg).await;
    let mut c = connect_packet("rpi");
    c.properties.request_problem_information = request_problem_information;
    let (mut cl, _ack) = Client::connect_with(b.addr, c).await;

    let mut acks: Vec<(String, bool, BoxedProperties)> = Vec::new();

    let sa = cl
        .subscribe_with(
            &[
                ("rpi/t", opts(QoS::ExactlyOnce)),
                ("rpi/#/bad", opts(QoS::AtMostOnce)),
            ],
            Properties::default(),
        )
        .await;
    assert_eq!(
        sa.reasons,
        vec![ReasonCode::GRANTED_QOS_2, ReasonCode::TOPIC_FILTER_INVALID]
    );
    acks.push(("SUBACK 0x02,0x8F".into(), true, sa.properties));

    // Inbound QoS 1 and QoS 2 (and, because it subscribed, outbound QoS 2 with PUBREL).
    let pid = cl.pid();
    cl.send(&Packet::Publish(publish(
        "rpi/t",
        b"1",
        QoS::AtLeastOnce,
        pid,
    )))
    .await;
    let pa = cl
        .wait_for("PUBACK", |p| match p {
            Packet::PubAck(r) if r.packet_id == pid => Some(r.clone()),
            _ => None,
        })
        .await;
    acks.push(("PUBACK".into(), false, pa.properties));

    let pid = cl.pid();
    cl.send(&Packet::Publish(publish(
        "rpi/t",
        b"2",
        QoS::ExactlyOnce,
        pid,
    )))
    .await;
    let rec = cl
        .wait_for("PUBREC", |p| match p {
            Packet::PubRec(r) if r.packet_id == pid => Some(r.clone()),
            _ => None,
        })
        .await;
    acks.push(("PUBREC".into(), false, rec.properties));
    cl.send(&Packet::PubRel(PubResp::new(pid))).await;
    let comp = cl
        .wait_for("PUBCOMP", |p| match p {
            Packet::PubComp(r) if r.packet_id == pid => Some(r.clone()),
            _ => None,
        })
        .await;
    acks.push(("PUBCOMP".into(), false, comp.properties));

    // The two deliveries to itself; the QoS 2 one brings a PUBREL.
    let mut got = 0;
    while got < 2 {
        let p = cl
            .wait_for("PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await;
        got += 1;
        match p.qos {
            QoS::AtLeastOnce => cl.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await,
            QoS::ExactlyOnce => {
                cl.send(&Packet::PubRec(PubResp::new(p.packet_id))).await;
                let rel = cl
                    .wait_for("PUBREL", |x| match x {
                        Packet::PubRel(r) if r.packet_id == p.packet_id => Some(r.clone()),
                        _ => None,
                    })
                    .await;
                acks.push(("PUBREL".into(), false, rel.properties));
                cl.send(&Packet::PubComp(PubResp::new(p.packet_id))).await;
            }
            QoS::AtMostOnce => {}
        }
    }

    // PUBREL for a packet id never received: PUBCOMP 0x92.
    cl.send(&Packet::PubRel(PubResp::new(999))).await;
    let comp = cl
        .wait_for("PUBCOMP 0x92", |p| match p {
            Packet::PubComp(r) if r.packet_id == 999 => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(comp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    acks.push(("PUBCOMP 0x92".into(), true, comp.properties));

    let ua = cl.unsubscribe(&["rpi/t", "rpi/never"]).await;
    assert_eq!(
        ua.reasons,
        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    acks.push(("UNSUBACK 0x00,0x11".into(), false, ua.properties));
    let ua = cl.unsubscribe(&["rpi/#/bad"]).await;
    assert_eq!(ua.reasons, vec![ReasonCode::TOPIC_FILTER_INVALID]);
    acks.push(("UNSUBACK 0x8F".into(), true, ua.properties));

    // Over the byte quota: PUBACK 0x97.
    let pid = cl.pid();
    cl.send(&Packet::Publish(publish(
        "rpi/q",
        &[b'q'; 200],
        QoS::AtLeastOnce,
        pid,
    )))
    .await;
    let q = cl
        .wait_for("PUBACK", |p| match p {
            Packet::PubAck(r) if r.packet_id == pid => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(q.reason, ReasonCode::QUOTA_EXCEEDED);
    acks.push(("PUBACK 0x97".into(), true, q.properties));
    acks
}

/// [MQTT-3.1.2-29]: with Request Problem Information = 0 the server must not send a Reason
/// String or User Properties on any packet other than PUBLISH, CONNACK or DISCONNECT; with 1
/// (here: absent, which means 1) the same failure acks do carry a Reason String, so the
/// absence is the client's choice taking effect, not a server that never explains.
#[tokio::test]
async fn mqtt_3_1_2_29_request_problem_information_gates_reason_strings_on_acks() {
    for (what, failure, props) in every_ack(None).await {
        if failure {
            let why = props.reason_string.clone().unwrap_or_default();
            assert!(!why.is_empty(), "RPI=1: {what} has no Reason String");
        } else {
            assert_eq!(props.reason_string, None, "RPI=1: success {what}");
        }
    }
    for (what, _, props) in every_ack(Some(0)).await {
        assert_eq!(
            props.reason_string, None,
            "RPI=0: {what} carries a Reason String"
        );
        assert!(
            props.user_properties.is_empty(),
            "RPI=0: {what} carries User Properties"
        );
    }
}

/// DISCONNECT is not restricted by Request Problem Information [MQTT-3.1.2-29]: a Protocol
/// Error (second CONNECT [MQTT-3.1.0-2]) is explained even with RPI = 0; a Reason String that
/// would exceed the client's Maximum Packet Size is left out [MQTT-3.14.2-3].
#[tokio::test]
async fn mqtt_3_1_2_29_disconnect_reason_string_not_restricted() {
    let b = start().await;
    let mut c = connect_packet("rpi-d");
    c.properties.request_problem_information = Some(0);
    let (mut cl, _) = Client::connect_with(b.addr, c).await;
    cl.try_send(&Packet::Connect(Box::new(connect_packet("rpi-d"))))
        .await;
    let d = cl
        .expect_disconnect(ReasonCode::PROTOCOL_ERROR, "second CONNECT")
        .await;
    assert!(
        d.properties
            .reason_string
            .as_ref()
            .is_some_and(|s| !s.is_empty()),
        "DISCONNECT without a Reason String"
    );

    let mut c = connect_packet("rpi-small");
    // Room for CONNACK and a bare DISCONNECT, not for the Reason String.
    c.properties.maximum_packet_size = Some(20);
    let (mut cl, _) = Client::connect_with(b.addr, c).await;
    cl.try_send(&Packet::Connect(Box::new(connect_packet("rpi-small"))))
        .await;
    let d = cl
        .expect_disconnect(ReasonCode::PROTOCOL_ERROR, "second CONNECT")
        .await;
    assert_eq!(d.properties.reason_string, None);
}
