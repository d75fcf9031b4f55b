//! Tests of the WebSocket upgrade and the byte-stream adapter, against tokio-tungstenite's
//! client over an in-memory duplex pipe.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsProtoError, Message};
use tokio_tungstenite::WebSocketStream;

use super::*;

/// A CONNECT for MQTT 3.1.1, client id "c1", clean session, keep alive 60.
const CONNECT: &[u8] = &[
    0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'c', b'1',
];
/// PINGREQ.
const PINGREQ: &[u8] = &[0xc0, 0x00];

type Client = WebSocketStream<DuplexStream>;

async fn pair_with(
    path: &str,
    protocols: Option<&str>,
) -> (WsStream<DuplexStream>, Client, Option<String>) {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let settings = WsSettings::new(Some("/mqtt"), 1024);
    let server = tokio::spawn(async move { accept(server_io, &settings).await });
    let mut req = format!("ws://localhost{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).unwrap(),
        );
    }
    let (client, resp) = tokio_tungstenite::client_async(req, client_io)
        .await
        .unwrap();
    let answered = resp
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|v| v.to_str().unwrap().to_owned());
    let server = server.await.unwrap().unwrap();
    (server, client, answered)
}

async fn pair() -> (WsStream<DuplexStream>, Client) {
    let (s, c, _) = pair_with("/mqtt", Some("mqtt")).await;
    (s, c)
}

async fn read_n(s: &mut WsStream<DuplexStream>, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

#[tokio::test]
async fn packet_split_across_two_messages() {
    let (mut server, mut client) = pair().await;
    client
        .send(Message::Binary(Bytes::from_static(&CONNECT[..5])))
        .await
        .unwrap();
    client
        .send(Message::Binary(Bytes::from_static(&CONNECT[5..])))
        .await
        .unwrap();
    assert_eq!(read_n(&mut server, CONNECT.len()).await, CONNECT);
}

#[tokio::test]
async fn two_packets_in_one_message() {
    let (mut server, mut client) = pair().await;
    let both = [CONNECT, PINGREQ].concat();
    client.send(Message::Binary(both.into())).await.unwrap();
    assert_eq!(read_n(&mut server, CONNECT.len()).await, CONNECT);
    assert_eq!(read_n(&mut server, PINGREQ.len()).await, PINGREQ);
}

#[tokio::test]
async fn small_reads_drain_a_message_in_pieces() {
    let (mut server, mut client) = pair().await;
    client
        .send(Message::Binary(Bytes::from_static(CONNECT)))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 3];
    while got.len() < CONNECT.len() {
        let n = server.read(&mut byte).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&byte[..n]);
    }
    assert_eq!(got, CONNECT);
}

#[tokio::test]
async fn each_write_is_one_binary_message() {
    let (mut server, mut client) = pair().await;
    server.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
    server.flush().await.unwrap();
    let msg = client.next().await.unwrap().unwrap();
    assert_eq!(
        msg,
        Message::Binary(Bytes::from_static(&[0x20, 0x02, 0x00, 0x00]))
    );
}

#[tokio::test]
async fn ping_is_answered_while_reading() {
    let (mut server, mut client) = pair().await;
    client
        .send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    client
        .send(Message::Binary(Bytes::from_static(PINGREQ)))
        .await
        .unwrap();
    assert_eq!(read_n(&mut server, PINGREQ.len()).await, PINGREQ);
    let msg = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::Pong(Bytes::from_static(b"hi")));
}

#[tokio::test]
async fn text_message_is_an_error_and_closes_with_1003() {
    let (mut server, mut client) = pair().await;
    client.send(Message::text("hello")).await.unwrap();
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // Later reads see the end of the stream rather than more data.
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame with 1003, got {other:?}"),
    }
}

/// A frame that breaks the WebSocket protocol (RSV1 set, no extension negotiated) is a read
/// error, and shutdown answers it with close code 1002 (RFC 6455 7.1.7, 7.4.1).
#[tokio::test]
async fn protocol_error_is_an_error_and_closes_with_1002() {
    let (mut server, mut client) = pair().await;
    // FIN + RSV1 + binary, masked, 2 bytes (a PINGREQ) under the all-zero mask.
    client
        .get_mut()
        .write_all(&[0xc2, 0x82, 0, 0, 0, 0, 0xc0, 0x00])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Protocol),
        other => panic!("expected a close frame with 1002, got {other:?}"),
    }
}

#[tokio::test]
async fn client_close_is_end_of_stream() {
    let (mut server, mut client) = pair().await;
    client
        .send(Message::Binary(Bytes::from_static(PINGREQ)))
        .await
        .unwrap();
    client.close(None).await.unwrap();
    assert_eq!(read_n(&mut server, PINGREQ.len()).await, PINGREQ);
    let mut buf = [0u8; 4];
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_message_is_an_error() {
    let (mut server, mut client) = pair().await;
    // Settings allow 1024 + MESSAGE_SLACK bytes.
    let big = vec![0u8; 1024 + MESSAGE_SLACK + 1];
    // Sent from its own task: the pipe holds less than the message.
    let sender = tokio::spawn(async move {
        let _ = client.send(Message::Binary(big.into())).await;
        client
    });
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf))
        .await
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    drop(server);
    let _ = sender.await;
}

#[tokio::test]
async fn subprotocol_mqtt_is_answered() {
    let (_, _, answered) = pair_with("/mqtt", Some("mqtt")).await;
    assert_eq!(answered.as_deref(), Some("mqtt"));
    let (_, _, answered) = pair_with("/mqtt", Some("mqttv3.1")).await;
    assert_eq!(answered.as_deref(), Some("mqttv3.1"));
    let (_, _, answered) = pair_with("/mqtt", Some("wamp, mqtt")).await;
    assert_eq!(answered.as_deref(), Some("mqtt"));
    let (_, _, answered) = pair_with("/mqtt", None).await;
    assert_eq!(answered, None);
}

#[tokio::test]
async fn wrong_path_gets_404() {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let settings = WsSettings::new(Some("/mqtt"), 1024);
    let server = tokio::spawn(async move { accept(server_io, &settings).await });
    let err = tokio_tungstenite::client_async("ws://localhost/other", client_io)
        .await
        .unwrap_err();
    match err {
        WsProtoError::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::NOT_FOUND);
            let body = resp.body().as_deref().unwrap_or_default();
            assert_eq!(body, b"no MQTT endpoint here\n");
            assert_eq!(
                resp.headers()[header::CONTENT_LENGTH],
                body.len().to_string()
            );
        }
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    match server.await.unwrap() {
        Err(WsError::Refused { status, .. }) => assert_eq!(status, StatusCode::NOT_FOUND),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_request_gets_400() {
    let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
    let settings = WsSettings::new(Some("/mqtt"), 1024);
    let server = tokio::spawn(async move { accept(server_io, &settings).await });
    client_io
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    client_io.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    match server.await.unwrap() {
        Err(WsError::Refused { status, .. }) => assert_eq!(status, StatusCode::BAD_REQUEST),
        other => panic!("expected Refused, got {other:?}"),
    }
}
