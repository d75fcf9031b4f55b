//! What a connection has to send, in order. Bytes normally go straight to the write buffer; an
//! acknowledgement that may only be sent once something is durable (PUBACK after the message is
//! on disk, PUBLISH after its packet id is) is queued behind a [`Receipt`], and everything
//! appended after it waits too, so the client sees packets in the order the protocol produced
//! them [MQTT-4.6.0-2].
//!
//! A receipt may still wait for room in the store's queue (the queue is full): the outbox is
//! then [`Outbox::parked`], and the connection neither reads nor handles packets nor pumps
//! deliveries until it is queued; [`Outbox::poll_settle`] drives that wait.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;

use crate::storage::StoreError;

use crate::persistence::Receipt;

/// The connection's outgoing bytes: `ready` to write now, then chunks each waiting for a
/// receipt. The two halves are separate fields so the connection can write `ready` while a
/// receipt is awaited.
#[derive(Default)]
pub struct Outbox {
    pub ready: BytesMut,
    /// Allocated by the first receipt and kept: most connections (no store, or QoS 0 only)
    /// never wait for one, and every idle connection task holds an `Outbox`.
    waiting: Option<Box<Waiting>>,
}

/// Chunks of bytes, each released when its receipt resolves, oldest first.
#[derive(Default)]
struct Waiting {
    chunks: VecDeque<(Receipt, BytesMut)>,
    /// Bytes in every chunk but the last (which is still growing).
    sealed_bytes: usize,
    /// Receipts still waiting for room in the store's queue.
    parked: usize,
    /// A receipt that failed while bytes released before it were returned: reported next.
    failed: Option<StoreError>,
}

impl Outbox {
    /// Where bytes appended now belong: after the last receipt, if any.
    pub fn buf(&mut self) -> &mut BytesMut {
        match self.waiting.as_mut().and_then(|w| w.chunks.back_mut()) {
            Some((_, chunk)) => chunk,
            None => &mut self.ready,
        }
    }

    /// Everything appended from now on is sent only after `receipt` resolves.
    pub fn wait_for(&mut self, receipt: Receipt) {
        let waiting = self.waiting.get_or_insert_with(Box::default);
        if let Some((_, chunk)) = waiting.chunks.back() {
            waiting.sealed_bytes += chunk.len();
        }
        if receipt.is_waiting() {
            waiting.parked += 1;
        }
        waiting.chunks.push_back((receipt, BytesMut::new()));
    }

    /// True while a receipt waits for room in the store's queue. The connection then stops
    /// reading and handling packets, and a new receipt must wait its turn behind it
    /// (`Persistence::receipt_after`) so that writes reach the store in order.
    pub fn parked(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| w.parked > 0)
    }

    /// Bytes held in total, ready or waiting (for backpressure).
    pub fn len(&self) -> usize {
        self.ready.len() + self.waiting.as_ref().map_or(0, |w| w.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Receipts not yet resolved.
    pub fn pending(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.chunks.len())
    }

    /// Waits for the oldest receipt and returns the bytes it released; see
    /// [`Self::poll_settle`]. Pending forever when nothing waits.
    pub async fn settle(&mut self) -> Result<BytesMut, StoreError> {
        std::future::poll_fn(|cx| self.poll_settle(cx)).await
    }

    /// Polls the oldest receipt for the bytes it released; or, first, the wait for room in
    /// the store's queue of the oldest receipt still waiting for it, ready with nothing once
    /// that receipt is queued (the connection may read again). Cancellation-safe: receipts
    /// stay here until they resolve. Pending when nothing waits.
    pub fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<Result<BytesMut, StoreError>> {
        match self.waiting.as_mut() {
            Some(w) => w.poll_settle(cx),
            None => Poll::Pending,
        }
    }

    /// Queues every receipt still waiting for room at once, over the store's bound if need be,
    /// in order: for a connection that closes, so its writes reach the store before those its
    /// end causes (the session's disconnect record).
    pub fn queue_parked(&mut self) {
        if let Some(w) = self.waiting.as_mut() {
            w.queue_parked();
        }
    }
}

impl Waiting {
    fn len(&self) -> usize {
        self.sealed_bytes + self.chunks.back().map_or(0, |(_, c)| c.len())
    }

    /// [`Outbox::poll_settle`].
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<Result<BytesMut, StoreError>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if self.parked > 0 {
            let next = self.chunks.iter_mut().find(|(r, _)| r.is_waiting());
            if let Some((receipt, _)) = next {
                if receipt.poll_queued(cx).is_ready() {
                    self.parked -= 1;
                    return Poll::Ready(Ok(BytesMut::new()));
                }
            }
        }
        let Some((receipt, _)) = self.chunks.front_mut() else {
            return Poll::Pending;
        };
        if receipt.is_waiting() {
            // Its wait for room was polled above and wakes this task.
            return Poll::Pending;
        }
        ready!(Pin::new(receipt).poll(cx))?;
        let mut released = self.pop_front();
        // Receipts answered together (one group commit of the store, one acknowledgement of
        // the cluster's stream) release their bytes together: one socket write for all their
        // acknowledgements rather than one each.
        while let Some((receipt, _)) = self.chunks.front_mut() {
            if receipt.is_waiting() {
                break;
            }
            match Pin::new(receipt).poll(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) => released.extend_from_slice(&self.pop_front()),
                Poll::Ready(Err(e)) => {
                    // Nothing after it goes out; the connection closes on the error.
                    self.failed = Some(e);
                    break;
                }
            }
        }
        Poll::Ready(Ok(released))
    }

    /// Removes the oldest chunk (its receipt resolved) and returns its bytes.
    fn pop_front(&mut self) -> BytesMut {
        let Some((_, chunk)) = self.chunks.pop_front() else {
            return BytesMut::new();
        };
        if !self.chunks.is_empty() {
            self.sealed_bytes -= chunk.len();
        }
        chunk
    }

    /// [`Outbox::queue_parked`].
    fn queue_parked(&mut self) {
        for (receipt, _) in self.chunks.iter_mut() {
            receipt.queue_now();
        }
        self.parked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

    fn receipt() -> (Answer, Receipt) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (tx, crate::storage::Tracked::answered_by(rx))
    }

    #[tokio::test]
    async fn bytes_after_a_receipt_wait_for_it_in_order() {
        let mut o = Outbox::default();
        o.buf().extend_from_slice(b"a");
        let (tx1, r1) = receipt();
        o.wait_for(r1);
        o.buf().extend_from_slice(b"b");
        let (tx2, r2) = receipt();
        o.wait_for(r2);
        o.buf().extend_from_slice(b"c");
        assert_eq!(&o.ready[..], b"a");
        assert_eq!(o.len(), 3);
        assert_eq!(o.pending(), 2);
        tx1.send(Ok(())).unwrap();
        let released = o.settle().await.unwrap();
        o.ready.extend_from_slice(&released);
        assert_eq!(&o.ready[..], b"ab");
        tx2.send(Ok(())).unwrap();
        let released = o.settle().await.unwrap();
        o.ready.extend_from_slice(&released);
        assert_eq!(&o.ready[..], b"abc");
        assert_eq!(o.pending(), 0);
        assert_eq!(o.len(), 3);
    }

    #[tokio::test]
    async fn receipts_answered_together_release_their_bytes_together() {
        let mut o = Outbox::default();
        let mut answers = Vec::new();
        for b in [b"a", b"b", b"c"] {
            let (tx, r) = receipt();
            o.wait_for(r);
            o.buf().extend_from_slice(b);
            answers.push(tx);
        }
        let last = answers.pop().unwrap();
        for tx in answers {
            tx.send(Ok(())).unwrap();
        }
        assert_eq!(&o.settle().await.unwrap()[..], b"ab");
        assert_eq!(o.pending(), 1);
        assert_eq!(o.len(), 1);
        last.send(Ok(())).unwrap();
        assert_eq!(&o.settle().await.unwrap()[..], b"c");
        assert_eq!(o.len(), 0);
    }

    #[tokio::test]
    async fn a_failure_behind_released_bytes_is_reported_next() {
        let mut o = Outbox::default();
        let (tx1, r1) = receipt();
        o.wait_for(r1);
        o.buf().extend_from_slice(b"a");
        let (tx2, r2) = receipt();
        o.wait_for(r2);
        o.buf().extend_from_slice(b"b");
        tx1.send(Ok(())).unwrap();
        drop(tx2);
        assert_eq!(&o.settle().await.unwrap()[..], b"a");
        assert!(o.settle().await.is_err());
    }

    #[tokio::test]
    async fn a_failed_receipt_reports_its_error() {
        let mut o = Outbox::default();
        let (tx, r) = receipt();
        o.wait_for(r);
        drop(tx);
        assert!(o.settle().await.is_err());
    }

    #[tokio::test]
    async fn a_receipt_waiting_for_room_parks_the_outbox_until_queued() {
        use crate::storage::{MemoryStore, Op, StoreWriter, SyncMode};
        let writer = StoreWriter::spawn(
            std::sync::Arc::new(MemoryStore::default()),
            SyncMode::Batch,
            1,
        );
        let mut o = Outbox::default();
        let ops = vec![Op::DeleteRetained { topic: "t".into() }];
        o.wait_for(writer.submit_tracked_later(ops));
        o.buf().extend_from_slice(b"a");
        assert!(o.parked());
        assert_eq!(o.pending(), 1);
        // The wait for room ends first and releases nothing...
        assert!(o.settle().await.unwrap().is_empty());
        assert!(!o.parked());
        // ...then the write does.
        assert_eq!(&o.settle().await.unwrap()[..], b"a");
        assert_eq!(o.pending(), 0);
    }
}
