//! A table of malformed or illegal MQTT 3.1.1 packets, as literal bytes. For each entry a raw
//! connection (CONNECTed first unless the case is about CONNECT) sends the bad bytes, and the
//! broker must close the connection within 2 s without answering (a CONNACK with a non-zero
//! return code is allowed before the close for CONNECT-level errors). After every entry a
//! separate client must still be able to connect, subscribe and receive a publish.
//!
//! Every case runs even when an earlier one fails; the test fails at the end with the list.

mod common;

use common::*;
use starling::codec::Packet;

/// A valid 3.1.1 CONNECT: clean session, keep-alive 60, client id "m".
const CONNECT_OK: &[u8] = &[
    0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'm',
];

struct Case {
    name: &'static str,
    /// Send a valid CONNECT (and read CONNACK 0) before the bad bytes.
    connect_first: bool,
    bytes: &'static [u8],
}

const fn pre(name: &'static str, bytes: &'static [u8]) -> Case {
    Case {
        name,
        connect_first: true,
        bytes,
    }
}

const fn first(name: &'static str, bytes: &'static [u8]) -> Case {
    Case {
        name,
        connect_first: false,
        bytes,
    }
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // --- the first packet -------------------------------------------------------------------
    first("[MQTT-3.1.0-1] first packet is PUBLISH, not CONNECT",
        &[0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i']),
    first("[MQTT-3.1.0-1] first packet is PINGREQ",
        &[0xC0, 0x00]),
    first("[MQTT-3.1.0-1] first packet is SUBSCRIBE",
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
    pre("[MQTT-3.1.0-2] second CONNECT on a connection",
        &[0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, b'm', b'2']),
    // --- CONNECT ----------------------------------------------------------------------------
    first("[MQTT-3.1.2-1] bad protocol name 'MQTX'",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.2-1] protocol name of length 0",
        &[0x10, 0x09, 0x00, 0x00, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.2-3] CONNECT reserved flag (bit 0) set",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-2.2.2-2] CONNECT fixed header flags 0x1 (must be 0)",
        &[0x11, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.2-14] will QoS 3",
        &[0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x3C, 0x00, 0x01, b'm',
          0x00, 0x01, b'w', 0x00, 0x01, b'x']),
    first("[MQTT-3.1.2-13] will flag 0 with will QoS 1",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x0A, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.2-15] will flag 0 with will retain 1",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x22, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.2-22] password flag without user name flag (3.1.1)",
        &[0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x3C, 0x00, 0x01, b'm',
          0x00, 0x02, b'p', b'w']),
    first("[MQTT-1.5.3-1] invalid UTF-8 (0xC3 0x28) in client id",
        &[0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, 0xC3, 0x28]),
    first("[MQTT-1.5.3-2] U+0000 in client id",
        &[0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, b'a', 0x00]),
    first("[MQTT-1.5.3] client id length (10) points past the end of the packet",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x0A, b'm']),
    first("[MQTT-3.1.3-1] will flag set but will topic and message missing",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.2-19] user name flag set but user name missing",
        &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x82, 0x00, 0x3C, 0x00, 0x01, b'm']),
    first("[MQTT-3.1.3] trailing garbage after the CONNECT payload, inside the remaining length",
        &[0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'm', 0xFF]),
    first("[MQTT-4.7.3-2] will topic contains U+0000",
        &[0x10, 0x14, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, b'm',
          0x00, 0x02, b'w', 0x00, 0x00, 0x01, b'x']),
    // --- PUBLISH ----------------------------------------------------------------------------
    pre("[MQTT-3.3.1-4] PUBLISH with QoS 3",
        &[0x36, 0x07, 0x00, 0x01, b'a', 0x00, 0x01, b'h', b'i']),
    pre("[MQTT-3.3.1-2] PUBLISH DUP=1 with QoS 0",
        &[0x38, 0x05, 0x00, 0x01, b'a', b'h', b'i']),
    pre("[MQTT-3.3.2-2] '+' wildcard in PUBLISH topic",
        &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'+', b'h', b'i']),
    pre("[MQTT-3.3.2-2] '#' wildcard in QoS 1 PUBLISH topic",
        &[0x32, 0x09, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x01, b'h', b'i']),
    pre("[MQTT-4.7.3-1] empty PUBLISH topic",
        &[0x30, 0x04, 0x00, 0x00, b'h', b'i']),
    pre("[MQTT-1.5.3-2][MQTT-4.7.3-2] U+0000 in PUBLISH topic",
        &[0x30, 0x07, 0x00, 0x03, b'a', 0x00, b'b', b'h', b'i']),
    pre("[MQTT-1.5.3-1] invalid UTF-8 in PUBLISH topic",
        &[0x30, 0x06, 0x00, 0x02, 0xC3, 0x28, b'h', b'i']),
    pre("[MQTT-1.5.3-1] UTF-16 surrogate (ED A0 80) in PUBLISH topic",
        &[0x30, 0x07, 0x00, 0x03, 0xED, 0xA0, 0x80, b'h', b'i']),
    pre("[MQTT-2.3.1-1] packet id 0 on a QoS 1 PUBLISH",
        &[0x32, 0x07, 0x00, 0x01, b'a', 0x00, 0x00, b'h', b'i']),
    pre("[MQTT-2.3.1-1] packet id 0 on a QoS 2 PUBLISH",
        &[0x34, 0x07, 0x00, 0x01, b'a', 0x00, 0x00, b'h', b'i']),
    pre("[MQTT-1.5.3] PUBLISH topic length (5) points past the remaining length",
        &[0x30, 0x03, 0x00, 0x05, b'a']),
    pre("[MQTT-1.5.3] remaining length shorter than the content: topic 'abc' cut after 'a'",
        &[0x30, 0x03, 0x00, 0x03, b'a', b'b', b'c']),
    pre("[MQTT-2.3.1-1] QoS 1 PUBLISH too short to hold its packet id",
        &[0x32, 0x04, 0x00, 0x01, b'a', 0x00]),
    // --- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------------------
    pre("[MQTT-3.8.1-1] SUBSCRIBE with fixed header flags 0 instead of 2",
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
    pre("[MQTT-3.8.3-3] SUBSCRIBE without topic filters",
        &[0x82, 0x02, 0x00, 0x01]),
    pre("[MQTT-3.8.3-4] SUBSCRIBE requested QoS 3",
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
    pre("[MQTT-3.8.3-4] SUBSCRIBE reserved bits of the QoS byte set (0x04)",
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04]),
    pre("[MQTT-4.7.1-2] SUBSCRIBE filter 'a/#/b' ('#' not last)",
        &[0x82, 0x0A, 0x00, 0x01, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00]),
    pre("[MQTT-4.7.1-3] SUBSCRIBE filter 'a+' ('+' not a whole level)",
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'+', 0x00]),
    pre("[MQTT-4.7.1-2] SUBSCRIBE filter 'a/b#' ('#' not a whole level)",
        &[0x82, 0x09, 0x00, 0x01, 0x00, 0x04, b'a', b'/', b'b', b'#', 0x00]),
    pre("[MQTT-4.7.3-1] SUBSCRIBE with an empty filter",
        &[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]),
    pre("[MQTT-2.3.1-1] SUBSCRIBE with packet id 0",
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
    pre("[MQTT-1.5.3] SUBSCRIBE filter length (5) points past the end",
        &[0x82, 0x04, 0x00, 0x01, 0x00, 0x05]),
    pre("[3.8.3] SUBSCRIBE filter without its QoS byte",
        &[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
    pre("[MQTT-3.10.1-1] UNSUBSCRIBE with fixed header flags 0 instead of 2",
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
    pre("[MQTT-3.10.3-2] UNSUBSCRIBE without topic filters",
        &[0xA2, 0x02, 0x00, 0x01]),
    pre("[MQTT-4.7.1-3] UNSUBSCRIBE filter 'a+'",
        &[0xA2, 0x06, 0x00, 0x01, 0x00, 0x02, b'a', b'+']),
    // --- acknowledgements and other fixed-header rules ---------------------------------------
    pre("[MQTT-3.6.1-1] PUBREL with fixed header flags 0 instead of 2",
        &[0x60, 0x02, 0x00, 0x01]),
    pre("[MQTT-2.2.2-2] PUBACK with fixed header flags 1",
        &[0x41, 0x02, 0x00, 0x01]),
    pre("[MQTT-2.2.2-2] PUBREC with fixed header flags 2",
        &[0x52, 0x02, 0x00, 0x01]),
    pre("[3.6.1] PUBREL with trailing garbage inside the remaining length (3.1.1 length is 2)",
        &[0x62, 0x03, 0x00, 0x01, 0x00]),
    pre("[3.4.1] PUBACK with remaining length 1",
        &[0x40, 0x01, 0x00]),
    pre("[MQTT-2.2.2-2] PINGREQ with fixed header flags 1",
        &[0xC1, 0x00]),
    pre("[3.12.1] PINGREQ with remaining length 1",
        &[0xC0, 0x01, 0x00]),
    pre("[MQTT-2.2.2-2] DISCONNECT with fixed header flags 1",
        &[0xE1, 0x00]),
    pre("[2.2.1] reserved packet type 0",
        &[0x00, 0x00]),
    pre("[2.2.1] reserved packet type 15",
        &[0xF0, 0x00]),
    pre("[2.2.1][4.8] AUTH (type 15, reason 0x18) in MQTT 3.1.1",
        &[0xF0, 0x02, 0x18, 0x00]),
    pre("[2.2.3] remaining length encoded in 5 bytes",
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    first("[2.2.3] remaining length encoded in 5 bytes, as the first packet",
        &[0x10, 0x80, 0x80, 0x80, 0x80, 0x01]),
    // --- server-to-client packets from a client [4.8] ------------------------------------------
    pre("[4.8] CONNACK sent by a client", &[0x20, 0x02, 0x00, 0x00]),
    pre("[4.8] SUBACK sent by a client", &[0x90, 0x03, 0x00, 0x01, 0x00]),
    pre("[4.8] UNSUBACK sent by a client", &[0xB0, 0x02, 0x00, 0x01]),
    pre("[4.8] PINGRESP sent by a client", &[0xD0, 0x00]),
];

/// Opens a connection, optionally CONNECTs, sends the case's bytes and checks the close.
async fn run_case(addr: std::net::SocketAddr, case: &Case) -> Result<(), String> {
    let mut c = Raw::open(addr).await;
    if case.connect_first {
        c.send(CONNECT_OK).await;
        match c.recv_timeout(WAIT).await {
            Recv::Packet(Packet::ConnAck(a)) if a.code.0 == 0 => {}
            other => return Err(format!("valid CONNECT not accepted: {other:?}")),
        }
    }
    // The broker may close while we are still writing; that is fine.
    let _ = c.try_send(case.bytes).await;
    expect_close(&mut c, !case.connect_first).await
}

async fn expect_close(c: &mut Raw, connack_allowed: bool) -> Result<(), String> {
    match c.closed_within(CLOSE_WAIT).await {
        Ok((seen, _how)) => {
            let bad: Vec<_> = seen
                .iter()
                .filter(|p| !(connack_allowed && matches!(p, Packet::ConnAck(a) if a.code.0 != 0)))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!("broker answered {bad:?} before closing"))
            }
        }
        Err(seen) => Err(format!(
            "connection still open after {CLOSE_WAIT:?} (broker sent {seen:?})"
        )),
    }
}

/// A separate client can still connect, subscribe and receive a publish.
async fn broker_still_serves(addr: std::net::SocketAddr, n: usize) -> Result<(), String> {
    let id = format!("alive-{n}");
    let topic = format!("alive/{n}");
    let fut = async move {
        let mut c = Raw::connect_v311(addr, &id).await;
        assert_eq!(c.subscribe(1, &topic, 1).await, 1);
        c.publish(&topic, b"still-here", 1, false, 2).await;
        let p = c.recv_and_ack().await;
        assert_publish(&p, &topic, b"still-here");
        c.send(&DISCONNECT).await;
    };
    // A panic inside (e.g. a refused CONNECT) is reported as this case's failure.
    match tokio::time::timeout(WAIT * 2, tokio::spawn(fut)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("liveness check failed: {e}")),
        Err(_) => Err("liveness check timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packet_table_closes_connection_and_broker_keeps_serving() {
    let mut cfg = test_config();
    cfg.mqtt.max_packet_size = 1024;
    let b = start_with(cfg).await;
    assert!(CASES.len() >= 30, "table has {} cases", CASES.len());

    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        println!("case {i:2}: {}", case.name);
        let addr = b.addr;
        let r = match tokio::spawn(async move { run_case(addr, &CASES[i]).await }).await {
            Ok(r) => r,
            Err(e) => Err(format!("panicked: {e}")),
        };
        if let Err(e) = r {
            println!("   FAIL: {e}");
            failures.push(format!("{} [{}]: {e}", case.name, hex(case.bytes)));
        }
        if let Err(e) = broker_still_serves(b.addr, i).await {
            println!("   FAIL (broker): {e}");
            failures.push(format!("after {}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed-packet cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// A PUBLISH announcing 1 MB against `max_packet_size = 1024` must be refused from the fixed
/// header alone: the connection closes although the body is never sent (the broker must not
/// wait for, or buffer, the announced bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_closed_from_the_header_alone() {
    let mut cfg = test_config();
    cfg.mqtt.max_packet_size = 1024;
    let b = start_with(cfg).await;

    let mut c = Raw::open(b.addr).await;
    c.send(CONNECT_OK).await;
    assert!(matches!(c.recv().await, Packet::ConnAck(a) if a.code.0 == 0));
    // 0x30, remaining length 1,048,576 (0x80 0x80 0x40), then nothing more.
    c.send(&[0x30, 0x80, 0x80, 0x40]).await;
    if let Err(e) = expect_close(&mut c, false).await {
        panic!("oversized PUBLISH header: {e}");
    }

    // The same as the first packet: a CONNECT announcing 1 MB.
    let mut c = Raw::open(b.addr).await;
    c.send(&[0x10, 0x80, 0x80, 0x40]).await;
    if let Err(e) = expect_close(&mut c, true).await {
        panic!("oversized CONNECT header: {e}");
    }

    // A packet just under the limit is fine; one just over closes.
    let mut c = Raw::connect_v311(b.addr, "size-ok").await;
    assert_eq!(c.subscribe(1, "size/t", 0).await, 0);
    let payload = vec![b'x'; 1000];
    c.publish("size/t", &payload, 0, false, 0).await;
    let got = c.recv_publish().await;
    assert_eq!(got.payload.len(), 1000);
    let too_big = vec![b'y'; 1100];
    c.send(&publish_packet("size/t", &too_big, 0, false, false, 0))
        .await;
    if let Err(e) = expect_close(&mut c, false).await {
        panic!("PUBLISH of ~1.1 KB over max_packet_size 1024: {e}");
    }
    broker_still_serves(b.addr, 9999).await.unwrap();
}
