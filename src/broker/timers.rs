//! Timers the broker arms (session expiry, delayed wills): tasks that hold only a weak
//! reference to the broker and end with its shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::BrokerState;

impl BrokerState {
    /// Runs `task`, tracked in [`Self::tasks`]: for work that needs the broker (and the
    /// store) for a while, such as a hand-over, and ends early at shutdown.
    pub(super) fn spawn_tracked(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// The tracked tasks ([`Self::spawn_tracked`]), for the broker's shutdown to wait for.
    pub fn tasks(&self) -> &tokio_util::task::TaskTracker {
        &self.tasks
    }

    /// Runs `f` once `delay` has passed, unless the broker shuts down first. The timer holds
    /// only a weak reference: a pending session expiry or will must not keep the state (and
    /// with it the store and its lock) alive after the broker has stopped.
    pub fn after<F>(self: &Arc<Self>, delay: Duration, f: F)
    where
        F: FnOnce(&Arc<BrokerState>) + Send + 'static,
    {
        let state = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    if let Some(state) = state.upgrade() {
                        f(&state);
                    }
                }
            }
        });
    }
}
