//! An in-process broker on a runtime of its own, so that a broker whose worker threads are
//! stuck in a lock (issue 12) fails the test instead of hanging it.
//!
//! The broker's locks are `parking_lot` locks: a deadlock blocks OS threads, not tasks. With the
//! broker on the test's runtime the blocked workers would also stop the test's clients and
//! timers. Here the clients and every timeout run on the test runtime; anything that reads broker
//! state runs on a helper thread with a bound ([`IsolatedBroker::query`]); and a broker that did
//! not stop cleanly is leaked on drop (its runtime is shut down in the background, nothing
//! waits for its threads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use starling::broker::BrokerState;
use starling::config::Config;
use starling::{Broker, BrokerHandle};

/// Worker threads of the broker's runtime. More than one, so that a publisher and a
/// disconnecting client can hold the broker's locks at the same time, as in production.
const BROKER_WORKERS: usize = 4;
/// Bound for one read of broker state (a few atomic loads and map walks).
const QUERY_WAIT: Duration = Duration::from_secs(5);

pub struct IsolatedBroker {
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<BrokerHandle>,
    state: Arc<BrokerState>,
    pub addr: SocketAddr,
    /// `starling::sync::inversions()` when the broker started (the count is per process).
    inversions: usize,
}

impl IsolatedBroker {
    pub async fn start(cfg: Config) -> IsolatedBroker {
        crate::common::init_tracing();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(BROKER_WORKERS)
            .thread_name("soak-broker")
            .enable_all()
            .build()
            .expect("build the broker runtime");
        let started = tokio::time::timeout(Duration::from_secs(10), rt.spawn(Broker::start(cfg)))
            .await
            .expect("the broker starts within 10 s")
            .expect("the broker start task does not panic")
            .expect("the broker starts");
        IsolatedBroker {
            inversions: starling::sync::inversions(),
            addr: started.local_addrs()[0],
            state: started.state().clone(),
            handle: Some(started),
            rt: Some(rt),
        }
    }

    /// Runs `f` on the broker state on a helper thread; Err when it does not return within
    /// [`QUERY_WAIT`] (the helper thread is then left blocked).
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BrokerState) -> T + Send + 'static,
    ) -> Result<T, String> {
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f(&state));
        });
        match tokio::time::timeout(QUERY_WAIT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("reading broker state panicked".into()),
            Err(_) => Err(format!(
                "reading broker state blocked for {QUERY_WAIT:?}: the broker is stuck in a lock"
            )),
        }
    }

    /// Polls `cond` on the broker state until it holds; Err with the last observed value
    /// (`show`) after `limit`.
    pub async fn wait_until<V: std::fmt::Debug + Send + 'static>(
        &self,
        what: &str,
        limit: Duration,
        read: impl Fn(&BrokerState) -> V + Send + Sync + Clone + 'static,
        ok: impl Fn(&V) -> bool,
    ) -> Result<V, String> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.query(read.clone()).await?;
            if ok(&v) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(format!("{what}: still {v:?} after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// For a failure message: whether the subscription trie's lock can still be taken (a
    /// deadlocked broker blocks the read behind a waiting writer).
    pub async fn diagnose(&self) -> String {
        match self.query(|s| s.subscription_count()).await {
            Ok(n) => format!("the subscription trie can still be read ({n} subscriptions)"),
            Err(e) => format!("reading the subscription count: {e}"),
        }
    }

    /// Graceful shutdown; Ok(how long it took) when every broker task ended within `limit` and
    /// no lock-order inversion was reported meanwhile.
    pub async fn stop_within(mut self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let handle = self.handle.take().expect("not stopped yet");
        // `shutdown()` takes each session's link lock to tell its connection: run it where a
        // stuck broker cannot block the test runtime.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            handle.shutdown();
            let _ = tx.send(handle);
        });
        let handle = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(h)) => h,
            _ => {
                return Err(format!(
                    "BrokerHandle::shutdown() did not return within {limit:?}"
                ))
            }
        };
        let left = limit.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, handle.wait()).await.is_err() {
            return Err(format!(
                "broker tasks still running {limit:?} after shutdown"
            ));
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        // Debug builds check the lock hierarchy on every acquisition; an inversion panics (and
        // ends) only the connection task that made it, so it is counted, and checked here.
        let inversions = starling::sync::inversions() - self.inversions;
        if inversions > 0 {
            return Err(format!(
                "the broker reported {inversions} lock-order inversions (starling::sync)"
            ));
        }
        Ok(started.elapsed())
    }
}

impl Drop for IsolatedBroker {
    fn drop(&mut self) {
        // Not stopped cleanly (a failed test): never block on it.
        if let Some(h) = self.handle.take() {
            std::mem::forget(h);
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
