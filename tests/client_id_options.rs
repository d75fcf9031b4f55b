//! `mqtt.allow_zero_length_clientid` and `mqtt.auto_id_prefix` (issue 16), as Mosquitto has
//! them: an empty client id is given a made-up one starting with the prefix (a v5 client gets it
//! back as Assigned Client Identifier [MQTT-3.1.3-7], [MQTT-3.2.2-16]); when empty ids are not
//! allowed they are refused with return code 2 (3.1.1) or 0x85 (v5) and the connection closed.
//! Raw packets.

mod common;

use common::*;
use starling::codec::{Packet, ReasonCode};

fn config(allow: bool, prefix: &str) -> starling::config::Config {
    let mut cfg = test_config();
    cfg.mqtt.allow_zero_length_clientid = allow;
    cfg.mqtt.auto_id_prefix = prefix.to_owned();
    cfg
}

#[test]
fn defaults_are_mosquittos() {
    let m = starling::config::MqttConfig::default();
    assert!(m.allow_zero_length_clientid);
    assert_eq!(m.auto_id_prefix, "auto-");
}

/// v5: the made-up id starts with the prefix and comes back as Assigned Client Identifier; a
/// client that named itself gets none.
#[tokio::test]
async fn v5_empty_id_gets_prefixed_assigned_identifier() {
    let b = start_with(config(true, "fleet-")).await;
    let (mut raw, ack) = Raw::connect_v5(b.addr, "").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{ack:?}");
    let id = ack.properties.assigned_client_identifier.clone();
    let id = id.expect("CONNACK Assigned Client Identifier [MQTT-3.2.2-16]");
    assert!(id.starts_with("fleet-") && id.len() > 6, "{id}");
    assert_eq!(raw.ping().await, Vec::<Packet>::new());
    let (_named, ack) = Raw::connect_v5(b.addr, "named").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.assigned_client_identifier, None);
}

/// The default prefix is Mosquitto's `auto-`.
#[tokio::test]
async fn v5_default_prefix_is_auto() {
    let b = start().await;
    let (_raw, ack) = Raw::connect_v5(b.addr, "").await;
    let id = ack
        .properties
        .assigned_client_identifier
        .clone()
        .unwrap_or_default();
    assert!(id.starts_with("auto-"), "{id}");
}

/// v5, not allowed: CONNACK 0x85 Client Identifier not valid, then closed; named ids still work.
#[tokio::test]
async fn v5_empty_id_refused_when_not_allowed() {
    let b = start_with(config(false, "auto-")).await;
    let (mut raw, ack) = Raw::connect_v5(b.addr, "").await;
    assert_eq!(ack.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "{ack:?}");
    assert_eq!(ack.properties.assigned_client_identifier, None);
    raw.expect_closed("v5 empty id refused").await;
    let (mut ok, ack) = Raw::connect_v5(b.addr, "named-v5").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{ack:?}");
    assert_eq!(ok.ping().await, Vec::<Packet>::new());
}

/// 3.1.1, not allowed: return code 2 identifier rejected even with clean session, then closed.
#[tokio::test]
async fn v311_empty_id_refused_when_not_allowed() {
    let b = start_with(config(false, "auto-")).await;
    let (mut raw, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("")).await;
    assert_eq!(ack.code.0, 2, "{ack:?}");
    raw.expect_closed("3.1.1 empty id refused").await;
    let (mut ok, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("named-311")).await;
    assert_eq!(ack.code.0, 0, "{ack:?}");
    assert_eq!(ok.ping().await, Vec::<Packet>::new());
}

/// 3.1.1, allowed (the default): an empty id with clean session connects and works.
#[tokio::test]
async fn v311_empty_id_accepted_when_allowed() {
    let b = start_with(config(true, "x-")).await;
    let (mut raw, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("")).await;
    assert_eq!(ack.code.0, 0, "{ack:?}");
    assert_eq!(raw.ping().await, Vec::<Packet>::new());
}
