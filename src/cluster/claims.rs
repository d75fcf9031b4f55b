//! Session claims, ordered by the messages stream. A CONNECT on a node claims its client id
//! for the whole cluster [MQTT-3.1.4-2]: another node holding a session for that client id
//! closes its connection (DISCONNECT 0x8E Session taken over) and ends the session there.
//!
//! Two claims for one client id (the client moved, came back, or two clients share the id)
//! are ordered by their place in the stream `<prefix>_messages`, which every node reads in
//! the same order, not by clocks: the later claim wins on every node. A node publishes its
//! claims into the stream on its own subject, as it does its messages, and reads them back:
//! - until it has read back its latest claim for a client id, a claim from another node for
//!   that id stands before its own in the stream, and is ignored;
//! - after that, one from another node stands after it, and ends the session here.
//!
//! A node back from a stop or a crash reads the claims made while it was away. Until it has
//! caught up, it only notes the last claim it read for each client id (its own earlier
//! life's included) and acts on those at the end: a session it restored ends only if its
//! client connected on another node after it last connected here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;

use crate::broker::BrokerState;
use crate::codec::ReasonCode;

/// The first byte of a claim batch in the messages stream (a message batch starts with
/// `0xB1`).
pub(super) const CLAIMS_V1: u8 = 0xC1;

/// Claims in one stream message, at most.
const BATCH_CLAIMS: usize = 512;

/// Bytes of one claim batch, about at most (client ids may be long; NATS's `max_payload` is
/// 1 MB by default).
const BATCH_BYTES: usize = 256 * 1024;

/// How long a claim this node published may take to come back through the stream before it
/// counts as lost (NATS took it, the stream did not keep it). Until then a claim from another
/// node for the same client id counts as the earlier one. As long as the stream waits for an
/// acknowledgement, so that a node catching up on a backlog does not give up on its own.
const LOST_AFTER: Duration = Duration::from_secs(120);

/// This node's claims not yet read back from the stream, by client id.
pub(super) struct Claims {
    pending: DashMap<String, Pending>,
    /// The last claim number given. It starts at random, so that the claims of this node's
    /// earlier lives (read back after a restart) never carry a number it gives now.
    numbers: AtomicU64,
}

impl Default for Claims {
    fn default() -> Claims {
        let mut bytes = [0u8; 8];
        // Without randomness, the time still tells this life from the earlier ones.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = crate::storage::unix_ms_now()
                .wrapping_mul(1 << 20)
                .to_be_bytes();
        }
        Claims {
            pending: DashMap::new(),
            // Half the range: the counter never wraps around to an earlier life's numbers.
            numbers: AtomicU64::new(u64::from_be_bytes(bytes) >> 1),
        }
    }
}

/// This node's latest claim for one client id.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Tells it from the node's earlier claims for the same client id.
    number: u64,
    /// When it went to NATS; None while it waits in the queue.
    sent: Option<Instant>,
}

impl Claims {
    /// A CONNECT here claimed `client_id`: the number its claim carries.
    pub(super) fn issue(&self, client_id: &str) -> u64 {
        let number = self.numbers.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let pending = Pending { number, sent: None };
        self.pending.insert(client_id.to_owned(), pending);
        number
    }

    /// Claim `number` for `client_id` went to NATS.
    pub(super) fn sent(&self, client_id: &str, number: u64) {
        if let Some(mut p) = self.pending.get_mut(client_id) {
            if p.number == number {
                p.sent = Some(Instant::now());
            }
        }
    }

    /// Claim `number` for `client_id` came back through the stream, or never went (the
    /// queue to NATS was full, NATS refused it): no later claim of ours waits unless a newer
    /// number does.
    pub(super) fn settled(&self, client_id: &str, number: u64) {
        self.pending.remove_if(client_id, |_, p| p.number == number);
    }

    /// Whether a claim of this node for `client_id` stands later in the stream than the claim
    /// from another node just read: one not read back yet (and not lost).
    pub(super) fn ours_is_later(&self, client_id: &str) -> bool {
        let Some(p) = self.pending.get(client_id).map(|p| *p) else {
            return false;
        };
        if p.sent.is_some_and(|t| t.elapsed() > LOST_AFTER) {
            self.settled(client_id, p.number);
            return false;
        }
        true
    }
}

/// Claims for one stream message: `0xC1`, then per claim its number (u64, big-endian), the
/// client id's length (u16, big-endian) and the client id.
pub(super) struct ClaimBatch {
    body: Vec<u8>,
    claims: Vec<(String, u64)>,
}

impl Default for ClaimBatch {
    fn default() -> ClaimBatch {
        ClaimBatch {
            body: vec![CLAIMS_V1],
            claims: Vec::new(),
        }
    }
}

impl ClaimBatch {
    pub(super) fn push(&mut self, client_id: String, number: u64) {
        // A client id is at most 65535 bytes (an MQTT string).
        let id = &client_id.as_bytes()[..client_id.len().min(usize::from(u16::MAX))];
        self.body.extend_from_slice(&number.to_be_bytes());
        self.body
            .extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.body.extend_from_slice(id);
        self.claims.push((client_id, number));
    }

    pub(super) fn is_full(&self) -> bool {
        self.claims.len() >= BATCH_CLAIMS || self.body.len() >= BATCH_BYTES
    }

    /// The body, and the claims it holds.
    pub(super) fn finish(self) -> (Bytes, Vec<(String, u64)>) {
        (Bytes::from(self.body), self.claims)
    }
}

/// The claims of a claim batch: (number, client id).
pub(super) fn parse(body: &[u8]) -> Result<Vec<(u64, &str)>, String> {
    let Some((&CLAIMS_V1, mut rest)) = body.split_first() else {
        return Err("not a claim batch".into());
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (number, tail) = rest
            .split_first_chunk::<8>()
            .ok_or("truncated claim batch")?;
        let (len, tail) = tail
            .split_first_chunk::<2>()
            .ok_or("truncated claim batch")?;
        let (id, tail) = tail
            .split_at_checked(usize::from(u16::from_be_bytes(*len)))
            .ok_or("truncated claim batch")?;
        let id = std::str::from_utf8(id).map_err(|_| "a claimed client id is not UTF-8")?;
        out.push((u64::from_be_bytes(*number), id));
        rest = tail;
    }
    Ok(out)
}

/// Applies the claims the messages stream brings, in order (see the module doc).
pub(super) struct ClaimReader<'a> {
    pub(super) state: &'a Arc<BrokerState>,
    pub(super) claims: &'a Claims,
    /// While catching up after a start: the last claim read for each client id, Some(node)
    /// when another node made it.
    pub(super) deferred: Option<HashMap<String, Option<Arc<String>>>>,
}

impl ClaimReader<'_> {
    /// A claim batch from `node` (`own`: this node).
    pub(super) fn read(&mut self, body: &[u8], node: &Arc<String>, own: bool) {
        let claims = match parse(body) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(node = %node, error = e, "cluster: a takeover notice did not decode; ignored");
                return;
            }
        };
        for (number, client_id) in claims {
            tracing::debug!(node = %node, own, number, client_id, "cluster: claim read");
            if own {
                self.claims.settled(client_id, number);
            }
            match &mut self.deferred {
                Some(last) => {
                    last.insert(client_id.to_owned(), (!own).then(|| node.clone()));
                }
                None if own => {}
                None => claimed_elsewhere(self.state, self.claims, node, client_id),
            }
        }
    }

    /// Caught up: acts on the last claim read for each client id.
    pub(super) fn caught_up(&mut self) {
        for (client_id, node) in self.deferred.take().unwrap_or_default() {
            if let Some(node) = node {
                claimed_elsewhere(self.state, self.claims, &node, &client_id);
            }
        }
    }
}

/// `client_id` connected on `node`, later than it last connected here unless a claim of ours
/// is still to come back: its session here ends.
fn claimed_elsewhere(state: &Arc<BrokerState>, claims: &Claims, node: &str, client_id: &str) {
    if state.is_bridge_id(client_id) || !state.has_session(client_id) {
        return;
    }
    if claims.ours_is_later(client_id) {
        tracing::info!(client_id = %crate::logging::bounded(client_id), node,
            "cluster: client connected here after it connected on another node; kept");
        return;
    }
    state.metrics().cluster.takeovers.inc();
    tracing::info!(client_id = %crate::logging::bounded(client_id), node,
        "cluster: client connected on another node; its session here ends");
    state.disconnect_client_because(
        client_id,
        ReasonCode::SESSION_TAKEN_OVER,
        true,
        "session taken over on another node",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_batches_round_trip_and_garbage_is_an_error() {
        let mut batch = ClaimBatch::default();
        batch.push("client-é".into(), 7);
        batch.push(String::new(), 8);
        let (body, claims) = batch.finish();
        assert_eq!(claims, vec![("client-é".to_owned(), 7), (String::new(), 8)]);
        assert_eq!(parse(&body), Ok(vec![(7, "client-é"), (8, "")]));
        assert!(parse(&body[..body.len() - 1]).is_err());
        assert!(parse(&[0xB1, 0]).is_err());
        assert!(parse(&[]).is_err());
        let mut bad = vec![CLAIMS_V1];
        bad.extend_from_slice(&1u64.to_be_bytes());
        bad.extend_from_slice(&[0, 1, 0xff]);
        assert!(parse(&bad).is_err());
        // Long client ids end a batch by its size.
        let mut batch = ClaimBatch::default();
        while !batch.is_full() {
            batch.push("x".repeat(60_000), 1);
        }
        let (body, claims) = batch.finish();
        assert!(
            claims.len() < 10 && body.len() < 320 * 1024,
            "{}",
            claims.len()
        );
    }

    /// Back from a stop, a node weighs the claims it reads before catching up by the last one
    /// per client id: a client that moved away and came back here keeps its session; one
    /// that moved on after it connected here does not. Read one by one, the first would lose
    /// its session to a claim older than its own.
    #[tokio::test]
    async fn claims_read_while_catching_up_are_weighed_by_the_last_one() {
        use crate::session::{Login, SessionMeta};
        let config = crate::config::Config::default();
        let state = Arc::new(BrokerState::new(
            config,
            tokio_util::sync::CancellationToken::new(),
        ));
        let meta = || SessionMeta {
            protocol: crate::codec::ProtocolVersion::V5,
            login: Login::Unchecked,
            expiry_secs: None,
            username: None,
            peer: None,
            listener: None,
        };
        let mut held = Vec::new();
        for id in ["came-back", "moved-on"] {
            held.push(state.claim_session(id, false, meta(), None).await.is_ok());
        }
        assert_eq!(held, [true, true]);
        let (here, there) = (Arc::new("a".to_owned()), Arc::new("b".to_owned()));
        let batch = |id: &str, number| {
            let mut b = ClaimBatch::default();
            b.push(id.to_owned(), number);
            b.finish().0
        };
        let takeovers = || state.metrics().cluster.takeovers.get();
        for deferred in [true, false] {
            let claims = Claims::default();
            let mut reader = ClaimReader {
                state: &state,
                claims: &claims,
                deferred: deferred.then(HashMap::new),
            };
            let before = takeovers();
            reader.read(&batch("came-back", 1), &there, false);
            reader.read(&batch("came-back", 2), &here, true);
            reader.read(&batch("moved-on", 3), &here, true);
            reader.read(&batch("moved-on", 4), &there, false);
            reader.caught_up();
            let ended = takeovers() - before;
            // Deferred: only moved-on. One by one: came-back too, wrongly.
            assert_eq!(ended, if deferred { 1 } else { 2 }, "deferred: {deferred}");
        }
    }

    #[test]
    fn our_claim_is_later_until_its_latest_number_comes_back() {
        let claims = Claims::default();
        assert!(!claims.ours_is_later("x"));
        let first = claims.issue("x");
        assert!(claims.ours_is_later("x"), "queued: it goes after");
        let second = claims.issue("x");
        claims.sent("x", second);
        claims.settled("x", first);
        assert!(
            claims.ours_is_later("x"),
            "the newer claim is still to come back"
        );
        claims.settled("x", second);
        assert!(!claims.ours_is_later("x"));
        // A claim that never left is settled too.
        let dropped = claims.issue("y");
        claims.settled("y", dropped);
        assert!(!claims.ours_is_later("y"));
    }
}
