//! Replies on their way to a RESP client: encoded into one buffer that is
//! written out whenever it passes [`FLUSH_BYTES`], and shrunk back after a
//! burst. A pipelined read of many large values (or an `MGET` of many) then
//! holds about one value beyond the buffer, never the whole answer: before,
//! 1,350 bytes of pipelined `GET big` built 1.3 GiB of replies before the
//! first write. While a reply is being written the connection reads nothing
//! more, so a client that does not read its answers stops being served
//! instead of growing the proxy's memory.
//!
//! Small replies are still written with one `write` per read of requests:
//! the buffer is flushed early only when it is large.

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::codec::{Protocol, Reply};

/// Buffered reply bytes past which the buffer is written out at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Capacity the buffer starts with, and shrinks back to after a burst.
const START_CAPACITY: usize = 16 * 1024;

/// Capacity above which the buffer is given back after a write.
const SHRINK_ABOVE: usize = 256 * 1024;

/// The reply buffer of one connection.
#[derive(Debug)]
pub struct Output {
    buf: BytesMut,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(START_CAPACITY),
        }
    }
}

impl Output {
    /// Encodes `reply` in `proto`, writing the buffer to `stream` as it
    /// passes [`FLUSH_BYTES`] (between the elements of an array, so a long
    /// array of large values is never all in memory at once).
    pub async fn put<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        reply: &Reply,
        proto: Protocol,
    ) -> std::io::Result<()> {
        match reply {
            Reply::Array(Some(items)) if items.len() > 1 => {
                Reply::encode_array_header(items.len(), &mut self.buf);
                for item in items {
                    item.encode(proto, &mut self.buf);
                    self.flush_if_large(stream).await?;
                }
            }
            _ => {
                reply.encode(proto, &mut self.buf);
                self.flush_if_large(stream).await?;
            }
        }
        Ok(())
    }

    async fn flush_if_large<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<()> {
        if self.buf.len() >= FLUSH_BYTES {
            self.flush(stream).await?;
        }
        Ok(())
    }

    /// Writes what is buffered, and gives back a buffer a burst made large.
    pub async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            stream.write_all(&self.buf).await?;
            self.buf.clear();
        }
        if self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::with_capacity(START_CAPACITY);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that keeps what it is given and the largest single buffer
    /// it was handed.
    #[derive(Default)]
    struct Sink {
        written: Vec<u8>,
        largest_write: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.largest_write = self.largest_write.max(buf.len());
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn encoded(r: &Reply, proto: Protocol) -> Vec<u8> {
        let mut b = BytesMut::new();
        r.encode(proto, &mut b);
        b.to_vec()
    }

    #[tokio::test]
    async fn a_long_array_of_large_values_is_written_piece_by_piece_and_byte_for_byte() {
        let value = Bytes::from(vec![b'x'; 300 * 1024]);
        let reply = Reply::Array(Some(
            (0..40)
                .map(|i| match i % 3 {
                    0 => Reply::Bulk(Some(value.clone())),
                    1 => Reply::Bulk(None),
                    _ => Reply::Integer(i),
                })
                .collect(),
        ));
        for proto in [Protocol::Resp2, Protocol::Resp3] {
            let (mut out, mut sink) = (Output::default(), Sink::default());
            out.put(&mut sink, &reply, proto).await.unwrap();
            out.flush(&mut sink).await.unwrap();
            assert_eq!(sink.written, encoded(&reply, proto), "{proto:?}");
            // Never more than one value beyond the flush threshold at once.
            assert!(sink.largest_write < FLUSH_BYTES + value.len() + 64);
            assert!(out.buf.capacity() <= SHRINK_ABOVE, "the buffer shrank back");
        }
    }

    #[tokio::test]
    async fn small_replies_wait_for_the_flush_at_the_end_of_a_read() {
        let (mut out, mut sink) = (Output::default(), Sink::default());
        for _ in 0..16 {
            out.put(&mut sink, &Reply::OK, Protocol::Resp2)
                .await
                .unwrap();
        }
        assert!(sink.written.is_empty());
        assert_eq!(out.buf.len(), 16 * 5);
        out.flush(&mut sink).await.unwrap();
        assert_eq!(sink.written, b"+OK\r\n".repeat(16));
    }
}
