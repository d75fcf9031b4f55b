//! Issue 13 item 3: a zero-length password never logs in. A password-file user whose stored
//! hash is that of the empty string (as `mosquitto_passwd -b FILE USER ""` writes it) used to
//! get CONNACK 0 with an empty password. Mosquitto refuses zero-length passwords, and so does
//! Starling: 3.1/3.1.1 return code 5 (Not authorized, as Mosquitto) and MQTT 5 reason code 0x86
//! Bad User Name or Password (Mosquitto 2.0.11 answers 0x87; see the README), whoever the user
//! is, so the answer says nothing about which users exist.
//!
//! The password is a C string as verification reads it (`[MQTT-3.1.3-5]` allows any bytes;
//! Mosquitto stops at the first NUL), so a password that starts with NUL is empty too.
//! The warning at load and `starling passwd` are tested in `src/auth/password_tests.rs` and
//! `tests/passwd_interop.rs`.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use starling::auth::password::hash_password;
use starling::codec::{self, Connect, Packet, Properties, ProtocolVersion};

/// A password file with `empty` (hash of "") and `alice` (hash of "alice-pw"), 10 iterations.
fn password_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("passwd");
    let text = format!(
        "empty:{}\nalice:{}\n",
        hash_password(b"", 10).expect("hash"),
        hash_password(b"alice-pw", 10).expect("hash")
    );
    std::fs::write(&path, text).expect("write password file");
    path
}

/// 3.1 / 3.1.1 CONNECT with credentials: the CONNACK return code; after a refusal the broker
/// must close the connection [MQTT-3.2.2-5].
async fn v3_code(b: &TestBroker, mut opts: ConnectOpts, user: &str, pw: &[u8]) -> u8 {
    opts.username = Some(user.to_owned());
    opts.password = Some(pw.to_vec());
    let (mut raw, ack) = Raw::connect_raw(b.addr, &opts).await;
    if ack.code.0 != 0 {
        raw.expect_closed("[MQTT-3.2.2-5] close after a refusing CONNACK")
            .await;
    }
    ack.code.0
}

/// MQTT 5 CONNECT with credentials: the CONNACK reason code; after a refusal the broker must
/// close the connection [MQTT-3.2.2-7].
async fn v5_code(b: &TestBroker, id: &str, user: &str, pw: &[u8]) -> u8 {
    let c = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: id.to_owned(),
        will: None,
        username: Some(user.to_owned()),
        password: Some(Bytes::copy_from_slice(pw)),
        properties: Properties::default(),
        bridge: false,
    };
    let mut bytes = BytesMut::new();
    codec::encode(
        &Packet::Connect(Box::new(c)),
        ProtocolVersion::V5,
        &mut bytes,
    );
    let mut raw = Raw::open(b.addr).await;
    raw.version = ProtocolVersion::V5;
    raw.send(&bytes).await;
    let ack = match raw.recv().await {
        Packet::ConnAck(a) => a,
        other => panic!("{id}: expected CONNACK, got {other:?}"),
    };
    if ack.code.0 >= 0x80 {
        raw.expect_closed("[MQTT-3.2.2-7] close after a refusing CONNACK")
            .await;
    }
    ack.code.0
}

#[tokio::test]
async fn zero_length_password_is_refused_at_connect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config();
    cfg.auth.password_file = Some(password_file(dir.path()));
    let b = start_with(cfg).await;

    // The user whose stored password is empty: refused in every protocol version.
    let v311 = ConnectOpts::v311;
    assert_eq!(v3_code(&b, v311("e1"), "empty", b"").await, 5, "3.1.1");
    assert_eq!(
        v3_code(&b, ConnectOpts::v31("e2"), "empty", b"").await,
        5,
        "3.1"
    );
    assert_eq!(
        v5_code(&b, "e3", "empty", b"").await,
        0x86,
        "v5: 0x86 Bad User Name or Password"
    );
    // A NUL ends the password as Mosquitto reads it: "\0..." is empty too.
    assert_eq!(v3_code(&b, v311("e4"), "empty", b"\0junk").await, 5);
    assert_eq!(v5_code(&b, "e5", "empty", b"\0junk").await, 0x86);

    // The same answer for a user with a real password and for an unknown user.
    assert_eq!(v5_code(&b, "e6", "alice", b"").await, 0x86);
    assert_eq!(v5_code(&b, "e7", "mallory", b"").await, 0x86);
    assert_eq!(v3_code(&b, v311("e8"), "mallory", b"").await, 5);
    // A wrong non-empty password is still 0x87, as Mosquitto.
    assert_eq!(v5_code(&b, "e9", "alice", b"wrong").await, 0x87);
    // And the right one logs in.
    assert_eq!(v3_code(&b, v311("e10"), "alice", b"alice-pw").await, 0);
    assert_eq!(v5_code(&b, "e11", "alice", b"alice-pw").await, 0);
    assert_eq!(
        b.state().metrics().refused_connections.get(),
        9,
        "every refusal is counted"
    );
}
