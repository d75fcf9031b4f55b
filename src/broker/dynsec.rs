//! The dynamic-security control task: requests published on `$CONTROL/dynamic-security/v1`
//! (handed over by the connection that received them, never routed) are applied one at a time,
//! persisted, installed and answered on `$CONTROL/dynamic-security/v1/response`.
//!
//! One task serialises every change, so two admins cannot lose each other's updates, and the
//! connection that received a request never waits for it. For each request the task:
//!
//! 1. takes the current dynsec state from the auth snapshot and applies the request to a copy
//!    ([`control::process`]) on a blocking thread, since new passwords cost a PBKDF2 each;
//! 2. writes the file atomically when something changed (same blocking thread): a request whose
//!    change cannot be written is not applied, and its changing commands answer "Internal
//!    error";
//! 3. installs the new state ([`BrokerState::replace_dynsec`]): clients whose record, groups or
//!    roles changed are disconnected (0x98 Administrative action) and judged afresh when they
//!    reconnect; subscriptions the new rules deny are removed;
//! 4. publishes the response (QoS 0, not retained), as Mosquitto's plugin does.
//!
//! The queue between connections and the task is bounded ([`QUEUE`]); a request that finds it
//! full is dropped with a warning (the admin tool times out and can retry).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::BrokerState;
use crate::auth::dynsec::control::{self, Admin, RESPONSE_TOPIC};
use crate::auth::password::DEFAULT_ITERATIONS;
use crate::codec::QoS;
use crate::message::Message;

/// Requests waiting for the task at most; admin traffic is light, this only bounds memory.
pub const QUEUE: usize = 64;

/// One request on `$CONTROL/dynamic-security/v1`.
#[derive(Debug)]
pub struct ControlRequest {
    /// The PUBLISH payload (the JSON commands).
    pub payload: Bytes,
    /// Who sent it (for the log).
    pub client_id: String,
    pub username: Option<String>,
}

impl BrokerState {
    /// Hands a control request to the task. False when dynamic security is off or the queue is
    /// full (the request is dropped).
    pub fn submit_dynsec(&self, req: ControlRequest) -> bool {
        match self.dynsec_control.get() {
            Some(tx) => tx.try_send(req).is_ok(),
            None => false,
        }
    }
}

/// Sets up the control task when `auth.dynamic_security` is set; returns it, to be spawned.
pub fn start(state: &Arc<BrokerState>) -> Option<impl std::future::Future<Output = ()>> {
    let path = state.config().auth.dynamic_security.clone()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    state.dynsec_control.set(tx).ok()?;
    Some(run(state.clone(), rx, path))
}

async fn run(state: Arc<BrokerState>, mut rx: mpsc::Receiver<ControlRequest>, path: PathBuf) {
    loop {
        let req = tokio::select! {
            r = rx.recv() => r,
            _ = state.shutdown_token().cancelled() => None,
        };
        let Some(req) = req else {
            return;
        };
        handle(&state, req, &path).await;
    }
}

/// Steps 1 to 4 of the module doc for one request.
async fn handle(state: &BrokerState, req: ControlRequest, path: &std::path::Path) {
    let Some(current) = state.auth_set().dynsec().cloned() else {
        return;
    };
    let path = path.to_owned();
    let work = tokio::task::spawn_blocking(move || {
        let admin = Admin {
            client_id: &req.client_id,
            username: req.username.as_deref(),
        };
        let mut outcome = control::process(&current, &req.payload, admin, DEFAULT_ITERATIONS);
        if let Some(new) = &outcome.changed {
            if let Err(e) = new.save(&path) {
                tracing::error!(error = %e,
                    "dynamic security: the change could not be written, so it is not applied");
                outcome.persist_failed();
            }
        }
        outcome
    });
    let outcome = match work.await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "dynamic security: the request failed");
            return;
        }
    };
    let response = outcome.response();
    if let Some(new) = outcome.changed {
        let dropped = state.replace_dynsec(Arc::new(new));
        if dropped > 0 {
            tracing::info!(
                subscriptions_removed = dropped,
                "dynamic security: subscriptions the new rules deny were removed"
            );
        }
    }
    let msg = Message::new(
        RESPONSE_TOPIC,
        Bytes::from(response),
        QoS::AtMostOnce,
        false,
    );
    state.publish_unacknowledged(Arc::new(msg));
}
