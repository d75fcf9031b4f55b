//! The accept loop shared by every listener, TCP or unix socket. It only takes connection
//! permits and spawns: the listener's [`Endpoint`] reads the PROXY header and runs the
//! TLS/WebSocket handshake inside the spawned task, so a slow or hostile handshake never holds
//! up accepting. On a plain listener the spawned future is the connection's own (no wrapper
//! around it), since the task cell, sized to its future, is paid by every idle connection.

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
        let Some(held) = Held::acquire(&permits, &broker, endpoint.index()) else {
            broker.metrics().refused_connections.inc();
            crate::refusal!(%peer, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let broker = broker.clone();
        match stream {
            // The connection's own future is the task's: no wrapper around it in the cell.
            Accepted::Tcp(s) if endpoint.is_plain() => {
                let serve = endpoint.serve_plain(s, peer, broker, held);
                check_task_size(&serve);
                tracker.spawn(serve);
            }
            Accepted::Unix(s) if endpoint.is_plain() => {
                tracker.spawn(endpoint.serve_plain(s, peer, broker, held));
            }
            // `held` is used by value only at the end, so each block captures it once.
            Accepted::Tcp(s) => {
                let endpoint = endpoint.clone();
                tracker.spawn(async move {
                    endpoint.serve(s, peer, broker).await;
                    drop(held);
                });
            }
            Accepted::Unix(s) => {
                let endpoint = endpoint.clone();
                tracker.spawn(async move {
                    endpoint.serve(s, peer, broker).await;
                    drop(held);
                });
            }
        }
    }
    if let Bound::Unix(u) = &listener {
        u.remove_file();
    }
}

/// What a connection holds for its whole life: its connection permits (global and per
/// listener, at most two: see `Starling::start`) and its place in the listener's open
/// connections gauge. Released on drop, however the task ends. Kept inline, without the `Vec`
/// and the `OwnedSemaphorePermit`s the accept loop used to box per connection.
struct Held {
    broker: Arc<BrokerState>,
    listener: usize,
    permits: [Option<Arc<Semaphore>>; 2],
}

impl Held {
    /// Takes one permit from each of `permits` and counts the connection as open; `None`
    /// (nothing taken) when any is exhausted.
    fn acquire(
        permits: &[Arc<Semaphore>],
        broker: &Arc<BrokerState>,
        listener: usize,
    ) -> Option<Held> {
        if let Some(g) = broker.metrics().listener_connections.get(listener) {
            g.inc();
        }
        // From here, dropping `held` gives back what was taken.
        let mut held = Held {
            broker: broker.clone(),
            listener,
            permits: [None, None],
        };
        if permits.len() > held.permits.len() {
            tracing::error!(
                n = permits.len(),
                "more connection limits than a connection can hold"
            );
            return None;
        }
        for (slot, p) in held.permits.iter_mut().zip(permits) {
            p.try_acquire().ok()?.forget();
            *slot = Some(p.clone());
        }
        Some(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for p in self.permits.iter().flatten() {
            p.add_permits(1);
        }
        if let Some(g) = self
            .broker
            .metrics()
            .listener_connections
            .get(self.listener)
        {
            g.sub(1);
        }
    }
}

/// The most a plain connection's future may take for its task cell to stay at
/// [`TASK_CELL_BYTES`]: tokio's cell (aligned to 128 bytes) adds about 110 bytes of header,
/// trailer and `TaskTracker` token. Every idle connection pays the cell, in 128-byte steps; a
/// change that crosses a step shows up in [`check_task_size`] (logged) and its test.
pub const TASK_FUTURE_BUDGET: usize = 272;
/// The task cell of a plain connection that [`TASK_FUTURE_BUDGET`] aims at.
pub const TASK_CELL_BYTES: usize = 384;

/// Logs (once) when a plain connection's future outgrew [`TASK_FUTURE_BUDGET`].
fn check_task_size<F>(serve: &F) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let size = std::mem::size_of_val(serve);
    if size > TASK_FUTURE_BUDGET {
        WARNED.call_once(|| {
            tracing::warn!(
                size,
                budget = TASK_FUTURE_BUDGET,
                "a connection's future outgrew its budget: each idle connection costs more"
            );
        });
    }
}

/// The size of a plain TCP connection's future, as [`accept_loop`] spawns it.
pub fn plain_task_future_size() -> usize {
    fn returned<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    returned(crate::connection::serve_holding::<TcpStream, Held>)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain connection's future must leave its task cell at [`TASK_CELL_BYTES`]: tokio
    /// cells grow in 128-byte steps, and every idle connection pays the step.
    #[test]
    fn plain_connection_future_stays_within_its_budget() {
        let size = plain_task_future_size();
        println!("plain connection future: {size} bytes");
        assert!(
            size <= TASK_FUTURE_BUDGET,
            "connection::serve's future is {size} bytes, over {TASK_FUTURE_BUDGET}"
        );
    }

    #[test]
    fn held_permits_come_back_when_dropped_and_refusals_take_none() {
        let broker = Arc::new(BrokerState::new(
            crate::config::Config::default(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let global = Arc::new(Semaphore::new(1));
        let listener = Arc::new(Semaphore::new(2));
        let permits = vec![global.clone(), listener.clone()];
        let first = Held::acquire(&permits, &broker, 0).expect("room for one");
        assert_eq!(
            (global.available_permits(), listener.available_permits()),
            (0, 1)
        );
        assert!(
            Held::acquire(&permits, &broker, 0).is_none(),
            "global cap reached"
        );
        assert_eq!(listener.available_permits(), 1, "a refusal keeps nothing");
        drop(first);
        assert_eq!(
            (global.available_permits(), listener.available_permits()),
            (1, 2)
        );
    }
}
