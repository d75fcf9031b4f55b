//! `mqtt.max_client_id_length` (issue 14 item 2): a client id longer than the limit, in bytes
//! of UTF-8, is refused with CONNACK 0x85 Client Identifier not valid (MQTT 5) or return code 2,
//! identifier rejected (3.1.1), and the connection closed; an id of exactly the limit connects.
//! Raw packets, default configuration (limit 256).

mod common;

use common::*;
use starling::codec::{ConnAck, Packet, ReasonCode};

/// The default `mqtt.max_client_id_length`.
const LIMIT: usize = 256;

/// Accepted: CONNACK 0, and the connection answers a PINGREQ.
async fn assert_accepted(mut raw: Raw, ack: ConnAck, what: &str) {
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{what}: {ack:?}");
    assert_eq!(raw.ping().await, Vec::<Packet>::new(), "{what}");
}

/// Refused with `code`, then closed.
async fn assert_refused(mut raw: Raw, ack: ConnAck, code: ReasonCode, what: &str) {
    assert_eq!(ack.code, code, "{what}: {ack:?}");
    raw.expect_closed(what).await;
}

#[tokio::test]
async fn v311_id_over_the_limit_is_identifier_rejected() {
    let b = start().await;
    let at = "a".repeat(LIMIT);
    let (raw, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311(&at)).await;
    assert_accepted(raw, ack, "3.1.1 id of exactly 256 bytes").await;

    let over = "b".repeat(LIMIT + 1);
    let (raw, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311(&over)).await;
    let what = "3.1.1 id of 257 bytes";
    assert_refused(raw, ack, ReasonCode::V3_IDENTIFIER_REJECTED, what).await;

    // The longest id the wire format can carry, as in the 982 MiB log.
    let huge = "c".repeat(65535);
    let (raw, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311(&huge)).await;
    let what = "3.1.1 id of 65535 bytes";
    assert_refused(raw, ack, ReasonCode::V3_IDENTIFIER_REJECTED, what).await;
}

#[tokio::test]
async fn v5_id_over_the_limit_is_client_identifier_not_valid() {
    let b = start().await;
    let (raw, ack) = Raw::connect_v5(b.addr, &"a".repeat(LIMIT)).await;
    assert_accepted(raw, ack, "v5 id of exactly 256 bytes").await;

    let (raw, ack) = Raw::connect_v5(b.addr, &"b".repeat(LIMIT + 1)).await;
    let what = "v5 id of 257 bytes";
    assert_refused(raw, ack, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, what).await;

    // The limit counts bytes, not characters: 128 × 'é' is 256 bytes, 129 × 'é' is 258.
    let (raw, ack) = Raw::connect_v5(b.addr, &"é".repeat(LIMIT / 2)).await;
    assert_accepted(raw, ack, "v5 id of 128 two-byte characters").await;
    let (raw, ack) = Raw::connect_v5(b.addr, &"é".repeat(LIMIT / 2 + 1)).await;
    let what = "v5 id of 129 two-byte characters";
    assert_refused(raw, ack, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, what).await;
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let mut cfg = test_config();
    cfg.mqtt.max_client_id_length = 23;
    let b = start_with(cfg).await;
    let (raw, ack) = Raw::connect_v5(b.addr, &"x".repeat(23)).await;
    assert_accepted(raw, ack, "id of 23 bytes with a limit of 23").await;
    let (raw, ack) = Raw::connect_v5(b.addr, &"x".repeat(24)).await;
    let what = "id of 24 bytes with a limit of 23";
    assert_refused(raw, ack, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, what).await;
}
