//! What a connection has to send, in order. Bytes normally go straight to the write buffer; an
//! acknowledgement that may only be sent once something is durable (PUBACK after the message is
//! on disk, PUBLISH after its packet id is) is queued behind a [`Receipt`], and everything
//! appended after it waits too, so the client sees packets in the order the protocol produced
//! them [MQTT-4.6.0-2].

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::persistence::Receipt;

/// The connection's outgoing bytes: `ready` to write now, then chunks each waiting for a
/// receipt. The two halves are separate fields so the connection can write `ready` and await
/// `waiting` in one `select!`.
#[derive(Default)]
pub struct Outbox {
    pub ready: BytesMut,
    pub waiting: Waiting,
}

/// Chunks of bytes, each released when its receipt resolves, oldest first.
#[derive(Default)]
pub struct Waiting {
    chunks: VecDeque<(Receipt, BytesMut)>,
    /// Bytes in every chunk but the last (which is still growing).
    sealed_bytes: usize,
}

impl Outbox {
    /// Where bytes appended now belong: after the last receipt, if any.
    pub fn buf(&mut self) -> &mut BytesMut {
        match self.waiting.chunks.back_mut() {
            Some((_, chunk)) => chunk,
            None => &mut self.ready,
        }
    }

    /// Everything appended from now on is sent only after `receipt` resolves.
    pub fn wait_for(&mut self, receipt: Receipt) {
        if let Some((_, chunk)) = self.waiting.chunks.back() {
            self.waiting.sealed_bytes += chunk.len();
        }
        self.waiting.chunks.push_back((receipt, BytesMut::new()));
    }

    /// Bytes held in total, ready or waiting (for backpressure).
    pub fn len(&self) -> usize {
        self.ready.len() + self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Receipts not yet resolved.
    pub fn pending(&self) -> usize {
        self.waiting.chunks.len()
    }
}

impl Waiting {
    fn len(&self) -> usize {
        self.sealed_bytes + self.chunks.back().map_or(0, |(_, c)| c.len())
    }

    /// Waits for the oldest receipt and returns the bytes it released. Cancellation-safe: the
    /// receipt stays queued until it has resolved. Pending forever when nothing waits.
    pub async fn settle(&mut self) -> Result<BytesMut, String> {
        let Some((receipt, _)) = self.chunks.front_mut() else {
            return std::future::pending().await;
        };
        receipt.await?;
        let Some((_, chunk)) = self.chunks.pop_front() else {
            return Ok(BytesMut::new());
        };
        if !self.chunks.is_empty() {
            self.sealed_bytes -= chunk.len();
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(rx: tokio::sync::oneshot::Receiver<()>) -> Receipt {
        Box::pin(async move { rx.await.map_err(|_| "dropped".to_string()) })
    }

    #[tokio::test]
    async fn bytes_after_a_receipt_wait_for_it_in_order() {
        let mut o = Outbox::default();
        o.buf().extend_from_slice(b"a");
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        o.wait_for(receipt(rx1));
        o.buf().extend_from_slice(b"b");
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        o.wait_for(receipt(rx2));
        o.buf().extend_from_slice(b"c");
        assert_eq!(&o.ready[..], b"a");
        assert_eq!(o.len(), 3);
        assert_eq!(o.pending(), 2);
        tx1.send(()).unwrap();
        let released = o.waiting.settle().await.unwrap();
        o.ready.extend_from_slice(&released);
        assert_eq!(&o.ready[..], b"ab");
        tx2.send(()).unwrap();
        let released = o.waiting.settle().await.unwrap();
        o.ready.extend_from_slice(&released);
        assert_eq!(&o.ready[..], b"abc");
        assert_eq!(o.pending(), 0);
        assert_eq!(o.len(), 3);
    }

    #[tokio::test]
    async fn a_failed_receipt_reports_its_error() {
        let mut o = Outbox::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        o.wait_for(receipt(rx));
        drop(tx);
        assert!(o.waiting.settle().await.is_err());
    }
}
