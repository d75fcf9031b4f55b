//! Poll-level reads and writes of the connection loop ([`super::Connection`]): one call each,
//! made from `poll_turn` (and after handling a source), that does what the socket allows now
//! and says how much, so the loop keeps no read or write future between turns.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{BUF_KEEP, READ_MAX, READ_MIN};

/// Writes what it can of `wbuf`, then flushes once it is empty. Ready with the bytes written
/// as soon as something was written (a flush still pending is retried next turn, as
/// `needs_flush` stays set), or once a flush of earlier writes completed.
pub(super) fn poll_write_some<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    writer: &mut W,
    wbuf: &mut BytesMut,
    needs_flush: &mut bool,
) -> Poll<std::io::Result<usize>> {
    let mut n = 0;
    if !wbuf.is_empty() {
        n = ready!(Pin::new(&mut *writer).poll_write(cx, wbuf))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        wbuf.advance(n);
        *needs_flush = true;
        if !wbuf.is_empty() {
            return Poll::Ready(Ok(n));
        }
    }
    match Pin::new(writer).poll_flush(cx) {
        Poll::Ready(Ok(())) => {
            *needs_flush = false;
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending if n > 0 => Poll::Ready(Ok(n)),
        Poll::Pending => Poll::Pending,
    }
}

/// Releases an emptied write buffer when the connection has gone quiet, or when it grew past
/// [`BUF_KEEP`] (a large message) and nothing more is ready to send (`more` false): a
/// connection that was once sent a 1 MB message would otherwise hold 1 MB for as long as it
/// lives. While more is ready (a subscriber taking a flood in 64 KiB writes) the buffer is
/// kept: releasing it after every write cost a new allocation and its growth copies each time
/// (fan-in at QoS 0 fell from ~1.5M to ~0.5M deliveries/s). A written buffer has been advanced
/// to its end, so its `capacity()` is only the unused tail; `try_reclaim` asks the allocation
/// itself (and, for a buffer that is kept, moves its start back to the front, which costs
/// nothing when it is empty).
pub(super) fn release_written(wbuf: &mut BytesMut, quiet: bool, more: bool) {
    if wbuf.is_empty() && (quiet || (!more && wbuf.try_reclaim(BUF_KEEP + 1))) {
        *wbuf = BytesMut::new();
    }
}

/// Reads into `rbuf` with room for at least `chunk / 4` bytes (`chunk` when it must grow).
/// Returns the byte count and whether the read filled all the room there was.
///
/// At the smallest size, with no room in `rbuf`, the read goes through a buffer on the stack
/// of `poll` and is copied: nothing is allocated while the connection waits, which is where
/// idle connections spend their life. That buffer is [`STACK_READ`] bytes, larger than
/// `READ_MIN` since it costs nothing while idle: a subscriber's batch of acknowledgements (4
/// bytes each) is read whole, so the window it frees is refilled with one write, not one per
/// `READ_MIN` bytes of PUBACKs.
pub(super) fn poll_read_some<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    reader: &mut R,
    rbuf: &mut BytesMut,
    chunk: usize,
) -> Poll<std::io::Result<(usize, bool)>> {
    if chunk <= READ_MIN && rbuf.capacity() - rbuf.len() < READ_MIN / 4 {
        // Uninitialised: it was zeroed on every poll, most of which read nothing. `ReadBuf`
        // tracks what the read initialised, and `filled` is only that (a stream that wants
        // initialised memory, such as TLS, zeroes it itself through `initialize_unfilled`).
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut buf = tokio::io::ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        rbuf.extend_from_slice(buf.filled());
        return Poll::Ready(Ok((n, n == STACK_READ)));
    }
    if rbuf.capacity() - rbuf.len() < chunk / 4 {
        rbuf.reserve(chunk);
    }
    let room = rbuf.capacity() - rbuf.len();
    // A `read_buf` future holds nothing between polls (the waker is registered with the
    // socket), so one is built per poll and dropped.
    let n = ready!(std::pin::pin!(reader.read_buf(rbuf)).poll(cx))?;
    Poll::Ready(Ok((n, n == room)))
}

/// The size of the read buffer on the stack (see [`poll_read_some`]). 512 acknowledgements.
const STACK_READ: usize = 2048;

/// The next read size after a read of `n` bytes (see [`READ_MIN`]).
pub(super) fn next_read_chunk(chunk: usize, n: usize, filled: bool) -> usize {
    if filled {
        // A filled stack read (`n` above `chunk`) goes on from its size.
        (chunk.max(n) * 2).min(READ_MAX)
    } else if n < READ_MIN {
        READ_MIN
    } else if n < chunk / 4 {
        (chunk / 2).max(READ_MIN)
    } else {
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `poll_read_some` at the smallest read size into an empty buffer: (n, filled, buffer).
    fn read_once(data: &[u8]) -> (usize, bool, BytesMut) {
        let mut reader = data;
        let mut rbuf = BytesMut::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match poll_read_some(&mut cx, &mut reader, &mut rbuf, READ_MIN) {
            Poll::Ready(Ok((n, filled))) => (n, filled, rbuf),
            other => panic!("the read did not complete: {other:?}"),
        }
    }

    /// A subscriber's batch of 100 PUBACKs (400 bytes) is read by one call at the smallest read
    /// size, so the window they free is refilled at once rather than in 256-byte pieces.
    #[test]
    fn a_batch_of_acks_is_read_whole_at_the_smallest_size() {
        let acks: Vec<u8> = (0..100u16)
            .flat_map(|pid| [0x40, 2, (pid >> 8) as u8, pid as u8])
            .collect();
        let (n, filled, rbuf) = read_once(&acks);
        assert_eq!((n, filled), (400, false));
        assert_eq!(&rbuf[..], &acks[..]);
        // Not filled and above READ_MIN: the next read stays at the smallest size.
        assert_eq!(next_read_chunk(READ_MIN, n, filled), READ_MIN);
    }

    /// A buffer that carried a 1 MB message is released once written and nothing more is
    /// ready (h12 MEDIUM-1: it was kept, its `capacity()` after the write being only the unused
    /// tail); a small one is kept for the next batch unless the connection went quiet.
    #[test]
    fn a_written_buffer_is_released_when_large_or_quiet() {
        let written = |size: usize| {
            let mut b = BytesMut::with_capacity(size);
            b.extend_from_slice(&vec![1u8; size]);
            b.advance(size);
            b
        };
        let mut big = written(1 << 20);
        assert!(big.capacity() < BUF_KEEP, "only the unused tail shows");
        release_written(&mut big, false, true);
        assert!(big.try_reclaim(1 << 20), "kept while more is ready to send");
        release_written(&mut big, false, false);
        assert!(!big.try_reclaim(1), "then the 1 MB allocation is gone");

        let mut batch = written(4096);
        release_written(&mut batch, false, false);
        assert!(batch.try_reclaim(4096), "a small buffer is kept");
        release_written(&mut batch, true, false);
        assert!(
            !batch.try_reclaim(1),
            "and released when the connection goes quiet"
        );
    }

    #[test]
    fn a_filled_stack_read_grows_the_next_read_past_it() {
        let (n, filled, _) = read_once(&vec![7u8; 3 * STACK_READ]);
        assert_eq!((n, filled), (STACK_READ, true));
        assert_eq!(next_read_chunk(READ_MIN, n, filled), 2 * STACK_READ);
        assert_eq!(next_read_chunk(READ_MAX, READ_MAX, true), READ_MAX);
    }
}
