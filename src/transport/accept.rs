//! The accept loop shared by every listener, TCP or unix socket. It only takes connection
//! permits and spawns: the listener's [`Endpoint`] reads the PROXY header and runs the
//! TLS/WebSocket handshake inside the spawned task, so a slow or hostile handshake never holds
//! up accepting.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::protocol::peer::PeerAddr;
use crate::transport::unix::BoundUnix;
use crate::transport::Endpoint;

/// A bound listener socket.
#[derive(Debug)]
pub enum Bound {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A unix-socket listener and its file.
    Unix(BoundUnix),
}

/// An accepted connection's socket.
enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Bound {
    async fn accept(&self) -> std::io::Result<(Accepted, PeerAddr)> {
        match self {
            Bound::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Accepted::Tcp(s), PeerAddr::Tcp(peer)))
            }
            Bound::Unix(u) => {
                let (s, _) = u.listener.accept().await?;
                // The client's end of a unix socket is unnamed: who connected is its user.
                let uid = s.peer_cred().ok().map(|c| c.uid());
                Ok((Accepted::Unix(s), PeerAddr::unix(&u.path, uid)))
            }
        }
    }
}

/// Accepts until shutdown, then (unix sockets) removes the socket file. `permits` caps live
/// connections (global and per listener): a connection over the cap is closed at once, before
/// any byte is read.
pub async fn accept_loop(
    listener: Bound,
    endpoint: Arc<Endpoint>,
    broker: Arc<BrokerState>,
    tracker: TaskTracker,
    permits: Vec<Arc<Semaphore>>,
) {
    let shutdown = broker.shutdown_token().clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a full descriptor table.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        broker.metrics().connections_accepted.inc();
        let mut held = Vec::with_capacity(permits.len());
        for p in &permits {
            match p.clone().try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        if held.len() < permits.len() {
            broker.metrics().refused_connections.inc();
            crate::refusal!(%peer, "connection refused: max_connections reached");
            drop(stream);
            continue;
        }
        let broker = broker.clone();
        let endpoint = endpoint.clone();
        tracker.spawn(async move {
            let gauge = broker.clone();
            let open = gauge.metrics().listener_connections.get(endpoint.index());
            if let Some(g) = open {
                g.inc();
            }
            match stream {
                Accepted::Tcp(s) => endpoint.serve(s, peer, broker).await,
                Accepted::Unix(s) => endpoint.serve(s, peer, broker).await,
            }
            if let Some(g) = open {
                g.sub(1);
            }
            drop(held);
        });
    }
    if let Bound::Unix(u) = &listener {
        u.remove_file();
    }
}
