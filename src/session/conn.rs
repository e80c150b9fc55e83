//! The client connection's buffers: bytes read but not yet parsed, and
//! replies queued but not yet written.
//!
//! Replies are queued and written only when the session is about to wait for
//! the client, which is what PIPELINING (RFC 2920) asks of a server: a batch
//! of commands gets its replies in one write.
//!
//! A session waiting for its client holds no buffer at all: both are given
//! back when everything read was used and everything queued was written,
//! and the wait itself reads one byte into the future; the buffer is taken
//! again when that byte arrives. Most connections of a busy MX are idle, so
//! this is most of their memory.

use crate::metrics::ReplyCounters;
use crate::proto::Reply;
use crate::stream::Stream;
use crate::tls::MaybeTls;
use async_std::io::timeout;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt as _;
use futures_rustls::TlsAcceptor;
use std::io;
use std::time::Duration;

/// Read size while reading commands: small, so idle sessions stay small.
const COMMAND_READ: usize = 4 * 1024;
/// Read size while receiving a message body: large, for fewer syscalls.
const DATA_READ: usize = 64 * 1024;
/// Queued reply bytes at which the session writes before parsing more
/// input, so a client that never reads cannot make replies pile up.
pub(crate) const OUTPUT_HIGH_WATER: usize = 16 * 1024;

/// A client stream with its read and write buffers.
pub(crate) struct Conn<S> {
    /// The client's stream (TCP or an in-memory pipe), plain or under TLS.
    pub(crate) stream: MaybeTls<S>,
    /// Read buffer; the unparsed input is `rbuf[start..end]`. Bytes past
    /// `end` are scratch space, so a cancelled read leaves no garbage.
    rbuf: Vec<u8>,
    /// Start of the unparsed input.
    start: usize,
    /// End of the unparsed input.
    end: usize,
    /// Replies waiting for the next flush.
    wbuf: Vec<u8>,
    /// A write failed or timed out: the client is not reading, and the
    /// session's closing flush must not wait a whole timeout again.
    broken: bool,
    /// Counts every reply by class, for `/metrics`.
    counters: ReplyCounters,
}

impl<S: Stream> Conn<S> {
    /// Wraps a plain stream with empty buffers; replies count into `counters`.
    pub(crate) fn new(stream: S, counters: ReplyCounters) -> Self {
        Conn {
            stream: MaybeTls::Plain(stream),
            rbuf: Vec::new(),
            start: 0,
            end: 0,
            wbuf: Vec::new(),
            broken: false,
            counters,
        }
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn input(&self) -> &[u8] {
        &self.rbuf[self.start..self.end]
    }

    /// Marks `n` input bytes as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reply bytes queued and not yet written.
    pub(crate) fn output_len(&self) -> usize {
        self.wbuf.len()
    }

    /// Queues a reply for the next flush.
    pub(crate) fn push(&mut self, reply: &Reply) {
        self.counters.count(reply.code);
        reply.write_to(&mut self.wbuf);
    }

    /// Queues raw reply bytes (the `334 ` SASL challenges, whose trailing
    /// space [`Reply`] does not write for an empty text).
    pub(crate) fn push_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Starts TLS: throws away every byte read but not yet used — in plain
    /// text, it may have been injected before the handshake (CVE-2011-0411)
    /// — and runs the handshake within `limit`. Queued replies must have
    /// been flushed. On failure the connection is unusable.
    pub(crate) async fn start_tls(
        &mut self,
        acceptor: TlsAcceptor,
        limit: Duration,
    ) -> io::Result<()> {
        self.start = 0;
        self.end = 0;
        self.rbuf = Vec::new();
        self.wbuf.clear();
        // Boxed: the handshake is a large future, and it would otherwise be
        // part of every session's task, idle or not.
        timeout(limit, Box::pin(self.stream.upgrade(acceptor))).await
    }

    /// Writes the queued replies.
    pub(crate) async fn flush(&mut self, limit: Duration) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write failed",
            ));
        }
        let written = timeout(limit, async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        })
        .await;
        if written.is_err() {
            self.broken = true;
        }
        written?;
        self.wbuf.clear();
        if self.wbuf.capacity() > 16 * 1024 {
            self.wbuf.shrink_to(1024);
        }
        Ok(())
    }

    /// Reads more input; `Ok(0)` is the end of the stream. `body` selects
    /// the larger read size used while a message is being received.
    pub(crate) async fn fill(&mut self, body: bool) -> io::Result<usize> {
        if !body && self.start == self.end && self.wbuf.is_empty() {
            return self.fill_idle().await;
        }
        let want = if body { DATA_READ } else { COMMAND_READ };
        if self.start > 0 {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.rbuf.len() < self.end + want {
            self.rbuf.resize(self.end + want, 0);
        }
        let n = self.stream.read(&mut self.rbuf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Waits for the client with no buffer held: gives both back, reads the
    /// first byte into the future, then takes a buffer and reads whatever
    /// else has arrived without waiting.
    async fn fill_idle(&mut self) -> io::Result<usize> {
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
        self.start = 0;
        self.end = 0;
        let mut first = [0u8; 1];
        if self.stream.read(&mut first).await? == 0 {
            return Ok(0);
        }
        self.rbuf.resize(COMMAND_READ, 0);
        self.rbuf[0] = first[0];
        self.end = 1;
        // An error or the end of the stream shows at the next read; the
        // byte we have is input all the same.
        if let Some(Ok(n)) = self.stream.read(&mut self.rbuf[1..]).now_or_never() {
            self.end += n;
        }
        Ok(self.end)
    }

    /// Gives back the large DATA read buffer once its input is drained, so
    /// a session idling between messages stays small.
    pub(crate) fn shrink(&mut self) {
        if self.start == self.end && self.rbuf.len() > COMMAND_READ {
            self.rbuf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }
}
