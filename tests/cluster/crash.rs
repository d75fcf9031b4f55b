//! What the cluster crash tests share: two `starling` binaries with stores, named `a` and `b`,
//! on one nats-server; the kill count from the environment; and a bounded wait on what a
//! subscriber recorded.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::nats::Nats;
use crate::support::{free_port, temp_dir, write_config, BrokerProc};

/// The configuration of node `name` on the NATS server at `nats`: no queue limit (so what the
/// tests count is never dropped), a named node (so its consumer resumes after a restart).
fn node_toml(nats: &str, name: &str) -> String {
    format!(
        "[mqtt]\nmax_queued_messages = 0\n\n\
         [cluster]\nservers = [\"{nats}\"]\nnode = \"{name}\"\nconnect_timeout = \"5s\"\n"
    )
}

/// Config files and ports of nodes `a` and `b`, in a temporary directory that lives as long as
/// this does.
pub struct TwoNodes {
    _dir: tempfile::TempDir,
    a: (PathBuf, u16),
    b: (PathBuf, u16),
}

impl TwoNodes {
    pub fn new(nats: &Nats, tag: &str) -> TwoNodes {
        let dir = temp_dir(tag);
        let node = |name: &str| {
            let port = free_port();
            let cfg = write_config(
                dir.path(),
                &format!("{name}.toml"),
                port,
                &dir.path().join(name),
                &node_toml(&nats.url(), name),
            );
            (cfg, port)
        };
        let (a, b) = (node("a"), node("b"));
        TwoNodes { _dir: dir, a, b }
    }

    /// Starts node `a` (again, after a kill: same port, same store).
    pub async fn start_a(&self) -> BrokerProc {
        BrokerProc::start(&self.a.0, self.a.1).await
    }

    /// Starts node `b` (again, after a kill: same port, same store).
    pub async fn start_b(&self) -> BrokerProc {
        BrokerProc::start(&self.b.0, self.b.1).await
    }
}

/// How many kills: `CLUSTER_CRASH_ROUNDS`, or `default`.
pub fn rounds(default: u64) -> u64 {
    std::env::var("CLUSTER_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Waits (bounded by `limit`) until `done` holds of what a subscriber recorded in `log`; each
/// record bumps `seen`. False on timeout.
pub async fn wait_for<T>(
    log: &Mutex<T>,
    seen: &mut watch::Receiver<u64>,
    limit: Duration,
    done: impl Fn(&T) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        seen.borrow_and_update();
        if done(&log.lock().unwrap()) {
            return true;
        }
        if tokio::time::timeout_at(deadline, seen.changed())
            .await
            .is_err()
        {
            return false;
        }
    }
}
