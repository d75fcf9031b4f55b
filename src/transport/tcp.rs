//! The TCP accept loop shared by every listener kind. It only takes connection permits and
//! spawns: the listener's [`Endpoint`] runs the TLS/WebSocket handshake inside the spawned
//! task, so a slow or hostile handshake never holds up accepting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::transport::Endpoint;

/// Binds `addr` with a listen queue of `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). Like [`TcpListener::bind`], it sets `SO_REUSEADDR` so a restarted
/// broker can bind while old connections linger in TIME_WAIT.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts until shutdown. `permits` caps live connections (global and per listener): a
/// connection over the cap is closed at once, before any byte is read.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    broker: Arc<BrokerState>,
    tracker: TaskTracker,
    permits: Vec<Arc<Semaphore>>,
) {
    let shutdown = broker.shutdown_token().clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
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
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let endpoint = endpoint.clone();
        let gauge = broker.clone();
        tracker.spawn(async move {
            let open = gauge.metrics().listener_connections.get(endpoint.index());
            if let Some(g) = open {
                g.inc();
            }
            endpoint.serve(stream, peer, broker).await;
            if let Some(g) = open {
                g.sub(1);
            }
            drop(held);
        });
    }
}
