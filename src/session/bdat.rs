//! BDAT (RFC 3030 CHUNKING): receive a message in counted chunks up to
//! `LAST`, then check and deliver it exactly as a DATA message.
//!
//! Every chunk's octets are read off the connection whatever the answer
//! to its command: left in the input they would be read as commands, a
//! way to smuggle a second message. The message is relayed upstream as
//! DATA with dot-stuffing, so whatever the chunks hold, the upstream sees
//! one message ending where the gateway ends it.

use super::data::Problem;
use super::protect::DataDeadline;
use super::{link, replies, Flow, Session};
use crate::body::Body;
use crate::proto::BdatReceiver;
use crate::stream::Stream;
use async_std::io::timeout;
use log::warn;
use std::io;

/// A BDAT message between its first chunk and `LAST`.
pub(super) struct Chunks {
    /// Line-ending policy and line limit across chunk boundaries.
    receiver: BdatReceiver,
    /// The message so far.
    body: Body,
    /// The first problem found (size, buffering); reported after `LAST`.
    problem: Option<Problem>,
}

/// Whether a chunk's octets could be read.
enum Read {
    /// All of them.
    Done,
    /// The client vanished or timed out; the session is over.
    Lost(&'static str),
}

impl<S: Stream> Session<S> {
    /// Answers `BDAT size [LAST]`: reads the chunk, and at `LAST` checks
    /// and delivers the message.
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let refusal = match self.tx.as_ref() {
            None => Some(replies::bad_sequence("Error: need MAIL command")),
            Some(_) if self.ctx.rcpts.is_empty() => Some(replies::no_valid_recipients()),
            Some(tx) if tx.upstream_failed => Some(link::transaction_lost()),
            Some(_) => None,
        };
        let no_transaction = self.tx.is_none();
        if let Some(reply) = refusal {
            // The octets are not the message of any transaction: drop them.
            let mut sink = None;
            if let Read::Lost(why) = self.read_chunk(size, &mut sink).await {
                warn!("session {} lost during BDAT: {why}", self.id);
                return Flow::Stop;
            }
            self.chunks = None;
            if self.tx.as_ref().is_some_and(|tx| tx.upstream_failed) {
                self.abandon_transaction();
            }
            return if no_transaction {
                self.no_transaction()
            } else if reply.code == 503 {
                self.client_error(reply)
            } else {
                self.reply(reply)
            };
        }
        let mut chunks = self.chunks.take().unwrap_or_else(|| {
            let limits = &self.shared.config.limits;
            Box::new(Chunks {
                receiver: BdatReceiver::new(
                    self.shared.config.message.bare_line_endings.into(),
                    limits.max_text_line,
                ),
                body: Body::received(limits.spill_threshold_bytes),
                problem: None,
            })
        });
        let mut slot = Some(chunks);
        let read = self.read_chunk(size, &mut slot).await;
        chunks = slot.expect("read_chunk keeps the message");
        if let Read::Lost(why) = read {
            warn!("session {} lost during BDAT: {why}", self.id);
            self.abandon_transaction();
            return Flow::Stop;
        }
        if !last {
            self.chunks = Some(chunks);
            return self.reply(replies::chunk_received(size));
        }
        let mut out = Vec::new();
        chunks.receiver.finish(&mut out);
        self.append(&mut chunks, &out);
        self.conn.shrink();
        // As for DATA, a bad line ending is the problem the client must fix first.
        let problem = match chunks.receiver.error() {
            Some(e) => Some(Problem::Data(e)),
            None => chunks.problem,
        };
        // Boxed: DATA's large future need not be in every session's task twice.
        Box::pin(self.finish_message(chunks.body, problem)).await
    }

    /// Reads `size` octets of chunk into the message in `chunks`, or drops
    /// them when there is none.
    async fn read_chunk(&mut self, size: u64, chunks: &mut Option<Box<Chunks>>) -> Read {
        let block = self.shared.config.timeouts.data_block();
        let per_line = self.shared.config.protection.per_line_deadline;
        let mut deadline = DataDeadline::new(block, per_line);
        let mut remaining = size;
        let mut out = Vec::new();
        loop {
            let input = self.conn.input();
            let take = input
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            if let Some(c) = chunks.as_mut() {
                c.receiver.feed(&input[..take], &mut out);
            }
            self.conn.consume(take);
            remaining -= take as u64;
            if let Some(c) = chunks.as_mut() {
                self.append(c, &out);
                out.clear();
            }
            if remaining == 0 {
                return Read::Done;
            }
            // A client may wait for earlier replies before sending more.
            if self.flush().await.is_err() {
                return Read::Lost("write failed");
            }
            match timeout(deadline.wait(), self.conn.fill(true)).await {
                Ok(0) => return Read::Lost("client closed"),
                Ok(n) => {
                    let input = self.conn.input();
                    deadline.read(&input[input.len() - n..]);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    let host = self.shared.config.hostname.clone();
                    self.conn.push(&replies::timeout(&host));
                    return Read::Lost("timeout");
                }
                Err(_) => return Read::Lost("read failed"),
            }
        }
    }

    /// Adds message bytes under the size limit; past it, or after a
    /// buffering failure, they are dropped and the problem kept.
    fn append(&self, chunks: &mut Chunks, out: &[u8]) {
        if chunks.problem.is_some() {
            return;
        }
        if chunks.body.len() + out.len() as u64 > self.shared.config.limits.max_message_bytes {
            chunks.problem = Some(Problem::TooBig);
        } else if let Err(e) = chunks.body.append(out) {
            chunks.problem = Some(Problem::Local(e));
        }
    }
}
