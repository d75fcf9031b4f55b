//! Replays the fuzz corpus and the fuzz regressions in a plain `cargo test`, through the same
//! checks the fuzz targets run (`fuzz/src/check.rs` and `fuzz/src/conn.rs`, included here with
//! `#[path]`, so the harness has one source and stays out of the library's API). Also the
//! generator of the seed corpus: `STARLING_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_corpus`
//! (re)writes `fuzz/corpus/<target>/seed-*`.

#[path = "../fuzz/src/check.rs"]
mod check;
#[path = "../fuzz/src/conn.rs"]
mod conn;

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use starling::codec::{
    self, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn real_time_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Every file of `dir` (not recursive), sorted; none when `dir` does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// What the decode targets run, for both versions.
fn check_decode(data: &[u8]) {
    check::decode_stream(data, ProtocolVersion::V311);
    check::decode_stream(data, ProtocolVersion::V5);
}

/// What the connection target runs, on the real clock.
fn check_connection(data: &[u8]) {
    conn::run(&real_time_runtime(), data, false);
}

fn replay(path: &Path, connection: bool) {
    let data = std::fs::read(path).unwrap();
    let result = std::panic::catch_unwind(|| {
        check_decode(&data);
        if connection {
            check_connection(&data);
        }
    });
    if let Err(e) = result {
        eprintln!(
            "fuzz input {} failed: {}",
            path.display(),
            check::hex(&data)
        );
        std::panic::resume_unwind(e);
    }
}

#[test]
fn replay_fuzz_corpus() {
    let corpus = fuzz_dir().join("corpus");
    let mut targets = files_and_dirs(&corpus);
    targets.sort();
    let mut n = 0;
    for target in targets {
        let connection = target.file_name().is_some_and(|n| n == "connection");
        for path in files(&target) {
            replay(&path, connection);
            n += 1;
        }
    }
    assert!(n > 0, "no corpus under {}", corpus.display());
}

#[test]
fn replay_fuzz_regressions() {
    for path in files(&fuzz_dir().join("regressions")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            continue;
        }
        replay(&path, name.starts_with("connection-"));
    }
}

fn files_and_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Seed corpus: one valid packet of every type, for v3.1.1 and for v5 with properties.

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(p, v, &mut out);
    out.to_vec()
}

fn user(props: &mut Properties) {
    props.user_properties.push(("k".to_owned(), "v".to_owned()));
}

fn reason_props() -> Properties {
    let mut p = Properties {
        reason_string: Some("why".to_owned()),
        ..Properties::default()
    };
    user(&mut p);
    p
}

fn connect(protocol: ProtocolVersion) -> Connect {
    let v5 = protocol.is_v5();
    let mut properties = Properties::default();
    let mut will_props = Properties::default();
    if v5 {
        properties.session_expiry_interval = Some(60);
        properties.receive_maximum = Some(10);
        properties.maximum_packet_size = Some(4096);
        properties.topic_alias_maximum = Some(5);
        properties.request_response_information = Some(1);
        properties.request_problem_information = Some(0);
        user(&mut properties);
        will_props.will_delay_interval = Some(2);
        will_props.payload_format_indicator = Some(1);
        will_props.message_expiry_interval = Some(30);
        will_props.content_type = Some("text/plain".to_owned());
        will_props.response_topic = Some("r/t".to_owned());
        will_props.correlation_data = Some(Bytes::from_static(b"cd"));
        user(&mut will_props);
    }
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "seed".to_owned(),
        will: Some(Will {
            topic: "w/t".to_owned(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: will_props,
        }),
        username: Some("u".to_owned()),
        password: Some(Bytes::from_static(b"p")),
        properties,
        bridge: false,
    }
}

/// `(name, packet)` for every packet type of `v`; v5 ones carry properties.
fn seed_packets(v: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = v.is_v5();
    let props = |f: fn(&mut Properties)| {
        let mut p = Properties::default();
        if v5 {
            f(&mut p);
        }
        p
    };
    let resp = |id: u16, code: u8| PubResp {
        packet_id: id,
        reason: ReasonCode(if v5 { code } else { 0 }),
        properties: props(|p| *p = reason_props()).into(),
    };
    let mut out = vec![
        ("connect", Packet::Connect(Box::new(connect(v)))),
        (
            "connack",
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: ReasonCode::SUCCESS,
                properties: props(|p| {
                    p.session_expiry_interval = Some(60);
                    p.assigned_client_identifier = Some("auto-1".to_owned());
                    p.server_keep_alive = Some(30);
                    p.receive_maximum = Some(20);
                    p.topic_alias_maximum = Some(10);
                    p.maximum_qos = Some(1);
                    p.retain_available = Some(1);
                    p.maximum_packet_size = Some(1 << 20);
                    p.wildcard_subscription_available = Some(1);
                    p.subscription_identifier_available = Some(1);
                    p.shared_subscription_available = Some(0);
                    p.response_information = Some("ri".to_owned());
                    p.server_reference = Some("other:1883".to_owned());
                    p.reason_string = Some("ok".to_owned());
                    p.authentication_method = Some("m".to_owned());
                    p.authentication_data = Some(Bytes::from_static(b"d"));
                    user(p);
                })
                .into(),
            }),
        ),
        (
            "publish-qos0",
            Packet::Publish(codec::Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: "a/b".to_owned().into(),
                packet_id: 0,
                properties: Default::default(),
                payload: Bytes::from_static(b"hello"),
            }),
        ),
        (
            "publish-qos2",
            Packet::Publish(codec::Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "a/b/c".to_owned().into(),
                packet_id: 7,
                properties: props(|p| {
                    p.payload_format_indicator = Some(1);
                    p.message_expiry_interval = Some(10);
                    p.content_type = Some("ct".to_owned());
                    p.response_topic = Some("resp/t".to_owned());
                    p.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
                    p.subscription_identifiers = vec![1, 300, 268_435_455];
                    p.topic_alias = Some(3);
                    user(p);
                })
                .into(),
                payload: Bytes::from_static(b"\x00\xffpayload"),
            }),
        ),
        ("puback", Packet::PubAck(resp(1, 0x10))),
        ("pubrec", Packet::PubRec(resp(2, 0x80))),
        ("pubrel", Packet::PubRel(resp(3, 0x92))),
        ("pubcomp", Packet::PubComp(resp(4, 0x00))),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: 5,
                filters: vec![
                    (
                        "a/+/c".to_owned(),
                        SubscriptionOptions::new(QoS::AtLeastOnce),
                    ),
                    (
                        "$share/g/x/#".to_owned(),
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            // No Local on a shared subscription is a protocol error
                            // [MQTT-3.8.3-4]; the seed stays valid.
                            no_local: false,
                            retain_as_published: v5,
                            retain_handling: if v5 { 2 } else { 0 },
                            local_origin: false,
                        },
                    ),
                ],
                properties: props(|p| {
                    p.subscription_identifiers = vec![42];
                    user(p);
                })
                .into(),
            }),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: 5,
                reasons: vec![ReasonCode(1), ReasonCode(0x80)],
                properties: props(|p| *p = reason_props()).into(),
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 6,
                filters: vec!["a/+/c".to_owned(), "#".to_owned()],
                properties: props(user).into(),
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: 6,
                reasons: if v5 {
                    vec![ReasonCode(0), ReasonCode(0x11)]
                } else {
                    Vec::new()
                },
                properties: props(|p| *p = reason_props()).into(),
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        (
            "disconnect",
            Packet::Disconnect(Disconnect {
                reason: ReasonCode(if v5 { 0x04 } else { 0 }),
                properties: props(|p| {
                    p.session_expiry_interval = Some(0);
                    p.server_reference = Some("s".to_owned());
                    p.reason_string = Some("r".to_owned());
                    user(p);
                })
                .into(),
            }),
        ),
    ];
    if v5 {
        out.push((
            "auth",
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: {
                    let mut p = reason_props();
                    p.authentication_method = Some("SCRAM".to_owned());
                    p.authentication_data = Some(Bytes::from_static(b"data"));
                    p.into()
                },
            }),
        ));
    } else {
        // The other CONNECT forms a v3.1.1 connection can receive first.
        out.push((
            "connect-v31",
            Packet::Connect(Box::new(connect(ProtocolVersion::V31))),
        ));
    }
    out
}

/// A client's side of a session for the connection target: everything a client sends after
/// CONNECT, in a plausible order.
fn client_session(v: ProtocolVersion) -> Vec<u8> {
    let v5 = v.is_v5();
    let opts = |qos| SubscriptionOptions::new(qos);
    let publish = |qos, id, topic: &str, properties: Properties, retain| {
        Packet::Publish(codec::Publish {
            dup: false,
            qos,
            retain,
            topic: topic.to_owned().into(),
            packet_id: id,
            properties: properties.into(),
            payload: Bytes::from_static(b"m"),
        })
    };
    let mut alias = Properties::default();
    let mut expiring = Properties::default();
    if v5 {
        alias.topic_alias = Some(1);
        expiring.message_expiry_interval = Some(1);
        user(&mut expiring);
    }
    let mut packets = vec![
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![
                ("fuzz/#".to_owned(), opts(QoS::ExactlyOnce)),
                ("+/x".to_owned(), opts(QoS::AtLeastOnce)),
                ("$share/g/fuzz/s".to_owned(), opts(QoS::AtMostOnce)),
            ],
            properties: {
                let mut p = Properties::default();
                if v5 {
                    p.subscription_identifiers = vec![9];
                }
                p.into()
            },
        }),
        publish(QoS::AtMostOnce, 0, "fuzz/a", Properties::default(), true),
        publish(QoS::AtLeastOnce, 1, "fuzz/b", expiring, false),
        publish(QoS::ExactlyOnce, 2, "fuzz/s", alias.clone(), false),
        Packet::PubRel(PubResp::new(2)),
        Packet::PubAck(PubResp::new(1)),
        Packet::PubRec(PubResp::new(2)),
        Packet::PubComp(PubResp::new(2)),
        Packet::PingReq,
    ];
    if v5 {
        // The alias set above stands in for the topic.
        packets.push(publish(QoS::AtLeastOnce, 3, "", alias, true));
    }
    packets.push(Packet::Unsubscribe(Unsubscribe {
        packet_id: 4,
        filters: vec!["+/x".to_owned()],
        properties: Default::default(),
    }));
    packets.push(Packet::Disconnect(Disconnect::new(ReasonCode(0))));
    packets.iter().flat_map(|p| encode(p, v)).collect()
}

/// `(name, input)` seeds for the connection target (layout: see `fuzz/src/conn.rs`).
fn connection_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // Selector: mode (bits 0-1), clean start (2), reconnect (3), tight config (4), will (5).
    for sel in [0x01u8, 0x05, 0x02, 0x03, 0x0B, 0x19, 0x2B, 0x3E, 0x21] {
        let v = if sel & 0b11 == 1 {
            ProtocolVersion::V311
        } else {
            ProtocolVersion::V5
        };
        let mut input = vec![sel, 0x40, 0xC0];
        input.extend(client_session(v));
        out.push((format!("seed-sel{sel:02x}"), input));
    }
    // Raw mode: the input carries its own CONNECT.
    for (name, v) in [
        ("v311", ProtocolVersion::V311),
        ("v5", ProtocolVersion::V5),
        ("v31", ProtocolVersion::V31),
    ] {
        let mut c = connect(v);
        c.clean_start = false;
        let mut input = vec![0x00, 0x10, 0x80];
        input.extend(encode(&Packet::Connect(Box::new(c)), v));
        input.extend(client_session(v));
        out.push((format!("seed-raw-{name}"), input));
    }
    out
}

fn write_seeds(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn seed_corpus_round_trips() {
    let mut decode_seeds = Vec::new();
    for (target, v) in [
        ("decode_v311", ProtocolVersion::V311),
        ("decode_v5", ProtocolVersion::V5),
    ] {
        let mut seeds = Vec::new();
        let mut all = Vec::new();
        for (name, packet) in seed_packets(v) {
            check::round_trip(&packet, v, &[]);
            let bytes = encode(&packet, v);
            assert_eq!(check::decode_stream(&bytes, v), 1, "{target} {name}");
            all.extend_from_slice(&bytes);
            seeds.push((format!("seed-{name}"), bytes));
        }
        // And all of them back to back, as one read buffer.
        assert_eq!(check::decode_stream(&all, v), seeds.len(), "{target} all");
        seeds.push(("seed-all".to_owned(), all));
        decode_seeds.push((target, seeds));
    }
    let conn_seeds = connection_seeds();
    for (name, input) in &conn_seeds {
        let result = std::panic::catch_unwind(|| check_connection(input));
        assert!(result.is_ok(), "connection seed {name} failed");
    }
    if std::env::var_os("STARLING_WRITE_FUZZ_SEEDS").is_some() {
        for (target, seeds) in &decode_seeds {
            write_seeds(target, seeds);
        }
        write_seeds("connection", &conn_seeds);
    }
}
