//! Starling: an async MQTT 3.1, 3.1.1 and 5.0 broker.
//!
//! Data flows one way: [`transport`] accepts a byte stream, [`connection`] frames it with
//! [`codec`] and hands packets to [`protocol`], which routes through [`broker`] and [`router`]
//! into subscriber [`session`]s, whose connections drain them back out.
//!
//! [`Broker::start`] is what `main`, the tests and embedders call.
#![deny(unsafe_code)]

pub mod broker;
pub mod codec;
pub mod config;
pub mod connection;
pub mod message;
pub mod metrics;
pub mod protocol;
pub mod router;
pub mod session;
pub mod storage;
pub mod sys;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::codec::ReasonCode;
use crate::config::Config;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts brokers.
pub struct Broker;

impl Broker {
    /// Validates the configuration and binds every listener; the broker runs until
    /// [`BrokerHandle::shutdown`].
    pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
        config.validate()?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let global = (config.limits.max_connections > 0)
            .then(|| Arc::new(Semaphore::new(config.limits.max_connections)));
        let mut bound = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| StartError::Bind {
                    addr: l.bind,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                addr: l.bind,
                source,
            })?;
            let mut permits: Vec<Arc<Semaphore>> = global.iter().cloned().collect();
            if let Some(n) = l.max_connections {
                permits.push(Arc::new(Semaphore::new(n)));
            }
            bound.push((listener, addr, permits));
        }
        let state = Arc::new(BrokerState::new(config, shutdown.clone()));
        let mut addrs = Vec::new();
        for (listener, addr, permits) in bound {
            addrs.push(addr);
            tracker.spawn(transport::tcp::accept_loop(
                listener,
                state.clone(),
                tracker.clone(),
                permits,
            ));
        }
        let sys_interval = state.config.sys.interval;
        if !sys_interval.is_zero() {
            tracker.spawn(sys::SysTree::new(state.clone()).run(sys_interval));
        }
        Ok(BrokerHandle {
            addrs,
            shutdown,
            tracker,
            state,
        })
    }
}

/// A running broker.
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    state: Arc<BrokerState>,
}

impl BrokerHandle {
    /// The bound address of each listener, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The broker's shared state, for metrics and tests.
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Begins graceful shutdown: stop accepting, tell v5 clients (0x8B), close connections.
    pub fn shutdown(&self) {
        self.state.disconnect_all(ReasonCode::SERVER_SHUTTING_DOWN);
        self.shutdown.cancel();
    }

    /// Resolves when every task has finished.
    pub async fn wait(self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}
