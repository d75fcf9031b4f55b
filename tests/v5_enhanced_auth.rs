//! MQTT 5 behaviour driven with raw packets where clients cannot express it: enhanced
//! authentication (section 4.12) through the `Authenticator` trait — a toy challenge/response
//! method, an unknown method, a refusal, re-authentication.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use starling::auth::enhanced::{AuthExchange, AuthStep, Authenticator};
use starling::codec::{self, Auth, Connect, Packet, Properties, ProtocolVersion, ReasonCode};
use starling::config::Config;
use starling::{Broker, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Challenge "nonce", expects "secret:nonce" back.
struct Toy;

struct ToyExchange {
    challenged: bool,
}

impl Authenticator for Toy {
    fn method(&self) -> &str {
        "TOY"
    }
    fn begin(&self, _client_id: &str, _username: Option<&str>) -> Box<dyn AuthExchange> {
        Box::new(ToyExchange { challenged: false })
    }
}

impl AuthExchange for ToyExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        if !self.challenged {
            self.challenged = true;
            return AuthStep::Continue(Some(Bytes::from_static(b"nonce")));
        }
        if data == Some(&b"secret:nonce"[..]) {
            AuthStep::Success(Some(Bytes::from_static(b"welcome")))
        } else {
            AuthStep::Failure
        }
    }
}

async fn start() -> BrokerHandle {
    let mut cfg = Config::default();
    cfg.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    cfg.mqtt.connect_timeout = Duration::from_secs(2);
    Broker::builder(cfg)
        .authenticator(Arc::new(Toy))
        .start()
        .await
        .unwrap()
}

struct Client {
    s: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn open(b: &BrokerHandle) -> Client {
        Client {
            s: TcpStream::connect(b.local_addrs()[0]).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(p, ProtocolVersion::V5, &mut out);
        self.s.write_all(&out).await.unwrap();
    }

    /// The next packet, or None when the broker closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        let fut = async {
            loop {
                if let Some(p) = codec::decode(&mut self.buf, ProtocolVersion::V5, 1 << 20).unwrap()
                {
                    return Some(p);
                }
                if self.s.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("no packet within 5 s")
    }
}

fn connect(method: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "auth-client".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            authentication_method: Some(method.into()),
            ..Default::default()
        },
        bridge: false,
    }))
}

fn auth(reason: ReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some("TOY".into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..Default::default()
        }
        .into(),
    })
}

fn expect_challenge(p: Option<Packet>) {
    match p {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(a.properties.authentication_method.as_deref(), Some("TOY"));
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"nonce"[..])
            );
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

/// [MQTT-4.12.0-1] an Authentication Method the server does not support gets CONNACK 0x8C.
#[tokio::test]
async fn unknown_method_gets_bad_authentication_method() {
    let b = start().await;
    let mut c = Client::open(&b).await;
    c.send(&connect("NOPE")).await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ReasonCode::BAD_AUTHENTICATION_METHOD),
        other => panic!("expected CONNACK 0x8C, got {other:?}"),
    }
    assert!(c.recv().await.is_none(), "closed after the refusal");
}

/// [MQTT-4.12.0-2] AUTH 0x18 carries the challenge; [MQTT-4.12.0-4] CONNACK 0x00 carries the
/// method and the final data.
#[tokio::test]
async fn challenge_response_then_connack_success() {
    let b = start().await;
    let mut c = Client::open(&b).await;
    c.send(&connect("TOY")).await;
    expect_challenge(c.recv().await);
    c.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, b"secret:nonce"))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.code, ReasonCode::SUCCESS);
            assert_eq!(a.properties.authentication_method.as_deref(), Some("TOY"));
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"welcome"[..])
            );
        }
        other => panic!("expected CONNACK 0x00, got {other:?}"),
    }
    // Re-authentication [MQTT-4.12.1-1]: AUTH 0x19, a new challenge, AUTH 0x00 on success.
    c.send(&auth(ReasonCode::REAUTHENTICATE, b"")).await;
    expect_challenge(c.recv().await);
    c.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, b"secret:nonce"))
        .await;
    match c.recv().await {
        Some(Packet::Auth(a)) => assert_eq!(a.reason, ReasonCode::SUCCESS),
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    // A failed re-authentication ends the connection with DISCONNECT 0x87.
    c.send(&auth(ReasonCode::REAUTHENTICATE, b"")).await;
    expect_challenge(c.recv().await);
    c.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, b"wrong"))
        .await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
}

/// A wrong response to the challenge is refused with CONNACK 0x87.
#[tokio::test]
async fn wrong_response_is_not_authorized() {
    let b = start().await;
    let mut c = Client::open(&b).await;
    c.send(&connect("TOY")).await;
    expect_challenge(c.recv().await);
    c.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, b"guess"))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
    assert!(c.recv().await.is_none());
}
