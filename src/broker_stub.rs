//! STUB — NOT THE BROKER. A stand-in for the `Broker` API so the `config` branch compiles and the
//! CLI can be exercised end to end. It binds the configured listeners and closes every accepted
//! connection at once. Replaced on merge by the real broker; delete this file then.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct StartError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Stub of the broker entry point.
pub struct Broker;

impl Broker {
    /// Binds every listener; errors if a bind fails.
    pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| StartError {
                    addr: l.bind,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| StartError {
                addr: l.bind,
                source,
            })?;
            listeners.push((listener, addr));
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut addrs = Vec::new();
        for (listener, addr) in listeners {
            addrs.push(addr);
            let cancel = cancel.clone();
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        accepted = listener.accept() => drop(accepted),
                    }
                }
            });
        }
        tracker.close();
        Ok(BrokerHandle {
            addrs,
            cancel,
            tracker,
        })
    }
}

/// Stub of the running broker's handle.
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl BrokerHandle {
    /// Addresses actually bound, in listener order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Begins graceful shutdown: stop accepting, close connections.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Resolves when every task has finished.
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}
