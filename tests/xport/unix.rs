//! Unix-socket listeners: Debian's mosquitto clients with `--unix`, WebSocket over a unix socket,
//! the socket file's mode, a stale file replaced, a live socket refused, the file removed at
//! shutdown, failed logins tracked by the client's uid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use starling::auth::slowdown::SlowdownKey;
use starling::config::{BindAddr, Config, ListenerConfig, ListenerProtocol};
use starling::transport::ws::WsStream;
use starling::{Broker, StartError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::common::*;

/// A broker config with the usual ephemeral TCP listener plus a unix socket at `path`.
fn with_socket(path: &Path, mode: Option<&str>) -> Config {
    let mut cfg = test_config();
    cfg.listeners.push(ListenerConfig {
        bind: BindAddr::Unix(path.to_path_buf()),
        mode: mode.map(str::to_owned),
        ..ListenerConfig::default()
    });
    cfg
}

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("starling.sock")
}

fn mosquitto(tool: &str, socket: &Path) -> Command {
    let mut c = match tool {
        "mosquitto_sub" => crate::mosquitto_sub(),
        _ => Command::new(tool),
    };
    c.arg("--unix").arg(socket);
    c
}

#[tokio::test]
async fn mosquitto_clients_over_a_unix_socket() {
    if !have_mosquitto_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let broker = start_with(with_socket(&path, Some("0660"))).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "mode applied to the socket file");
    for qos in ["0", "1"] {
        let topic = format!("unix/qos{qos}");
        let mut sub = Proc::spawn(
            "mosquitto_sub",
            mosquitto("mosquitto_sub", &path)
                .args(["-i", "unix-sub", "-q", qos, "-C", "1", "-t", &topic, "-v"])
                .arg("-d"),
        );
        sub.wait_line("SUBACK", |l| l.contains("SUBACK")).await;
        // The broker shows the peer as the socket path and the client's uid.
        let peer = broker
            .state()
            .session_info("unix-sub")
            .and_then(|s| s.peer)
            .expect("the subscriber's session");
        let uid = std::fs::metadata("/proc/self").unwrap();
        let uid = std::os::unix::fs::MetadataExt::uid(&uid);
        assert_eq!(
            &*peer,
            format!("unix:{},uid={uid}", path.display()),
            "peer of a unix client"
        );
        run_ok(
            "mosquitto_pub",
            mosquitto("mosquitto_pub", &path).args(["-q", qos, "-t", &topic, "-m", "hello"]),
        )
        .await;
        sub.wait_line("the message", |l| l == format!("{topic} hello"))
            .await;
        sub.success(WAIT).await;
    }
    assert!(broker.stop_within(WAIT).await, "clean shutdown");
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn stale_socket_replaced_live_socket_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    // A crashed broker leaves its socket file with nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let broker = start_with(with_socket(&path, None)).await;
    std::os::unix::net::UnixStream::connect(&path).expect("the new socket answers");
    // A second broker on the same path: refused, and the live socket is left alone.
    let second = Broker::start(with_socket(&path, None)).await;
    match second {
        Err(StartError::Unix(e)) => {
            assert!(
                e.to_string().contains("another process is listening"),
                "{e}"
            )
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second broker took over a live socket"),
    }
    std::os::unix::net::UnixStream::connect(&path).expect("the first broker still answers");
    // Something that is not a socket is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = Broker::start(with_socket(&file, None)).await.err();
    assert!(
        err.is_some_and(|e| e.to_string().contains("not a socket")),
        "a regular file is refused"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(broker.stop_within(WAIT).await);
    assert!(!path.exists(), "removed at shutdown");
}

#[tokio::test]
async fn unknown_owner_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let mut cfg = with_socket(&path, None);
    cfg.listeners[1].owner = Some("no-such-user-starling".into());
    let err = Broker::start(cfg).await.err().expect("refused");
    assert!(
        err.to_string().contains("no-such-user-starling"),
        "names the user: {err}"
    );
    assert!(!path.exists(), "nothing left behind");
    // Numeric ids work (our own, which needs no privilege).
    let meta = std::fs::metadata(dir.path()).unwrap();
    let gid = std::os::unix::fs::MetadataExt::gid(&meta);
    let mut cfg = with_socket(&path, None);
    cfg.listeners[1].group = Some(gid.to_string());
    let broker = start_with(cfg).await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    drop(broker);
}

/// Sends `connect` over `stream` and returns the CONNACK's bytes.
async fn connack<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, connect: &[u8]) -> [u8; 4] {
    stream.write_all(connect).await.unwrap();
    // A WebSocket stream sends its message on flush.
    stream.flush().await.unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    ack
}

#[tokio::test]
async fn websocket_over_a_unix_socket_and_slowdown_by_uid() {
    let dir = tempfile::tempdir().unwrap();
    let ws_path = dir.path().join("ws.sock");
    let mqtt_path = socket_path(&dir);
    let passwd = dir.path().join("passwd");
    let hash = starling::auth::password::hash_password(b"right", 10).expect("hash");
    std::fs::write(&passwd, format!("alice:{hash}\n")).unwrap();
    let mut cfg = with_socket(&mqtt_path, None);
    cfg.listeners.push(ListenerConfig {
        bind: BindAddr::Unix(ws_path.clone()),
        protocol: ListenerProtocol::Ws,
        ..ListenerConfig::default()
    });
    cfg.auth.password_file = Some(passwd);
    cfg.auth.allow_anonymous = Some(true);
    let broker = start_with(cfg).await;
    // MQTT over WebSocket over the unix socket.
    let stream = UnixStream::connect(&ws_path).await.unwrap();
    let mut req = "ws://localhost/mqtt".into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("WebSocket upgrade over the unix socket");
    let mut ws = WsStream::new(ws);
    let ack = connack(&mut ws, &ConnectOpts::v311("ws-unix").encode()).await;
    assert_eq!(ack, [0x20, 2, 0, 0], "accepted");
    // A failed login over a unix socket is tracked by the client's uid, not by an address.
    let mut bad = ConnectOpts::v311("guess");
    bad.username = Some("alice".into());
    bad.password = Some(b"wrong".to_vec());
    let mut raw = UnixStream::connect(&mqtt_path).await.unwrap();
    let ack = connack(&mut raw, &bad.encode()).await;
    assert_eq!(ack[..2], [0x20, 2]);
    assert_ne!(ack[3], 0, "refused");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    let slowdown = broker.state().login_slowdown();
    let now = std::time::Instant::now();
    assert_eq!(slowdown.failures(SlowdownKey::Uid(uid), now), 1);
    assert_eq!(slowdown.tracked_peers(), 1, "nothing else tracked");
}
