//! Relaying a message as BDAT chunks (RFC 3030) to an upstream that offers
//! CHUNKING: no dot-stuffing, and one chunk per read of the body.
//!
//! The message is canonical CRLF whichever way the client sent it, so the
//! upstream gets the same bytes it would after undoing DATA's stuffing.
//! Each chunk waits for its reply before the next one is written: a
//! refused chunk ends the transaction there, with that reply.

use super::{Upstream, UpstreamError, BODY_CHUNK};
use crate::body::Body;
use crate::proto::Reply;

impl Upstream {
    /// Sends `prepend` then `body` as BDAT chunks, the last one marked
    /// `LAST`; returns the reply to the last chunk, or the first refusal.
    pub(super) async fn send_chunked(
        &mut self,
        prepend: &[u8],
        body: &mut Body,
    ) -> Result<Reply, UpstreamError> {
        // Anything queued (pipelined MAIL/RCPT) goes first, in order.
        self.flush().await?;
        let block = self.timeouts.upstream_data_block();
        let mut content = prepend.to_vec();
        let mut read = Vec::new();
        let mut pieces = body.chunks(BODY_CHUNK).map_err(UpstreamError::Io)?;
        let mut wire = Vec::with_capacity(BODY_CHUNK + 32);
        loop {
            let piece = pieces.next_slice(&mut read).map_err(UpstreamError::Io)?;
            let more = piece.is_some();
            content.extend_from_slice(piece.unwrap_or_default());
            if more && content.len() < BODY_CHUNK {
                continue;
            }
            let last = if more { "" } else { " LAST" };
            wire.clear();
            wire.extend_from_slice(format!("BDAT {}{last}\r\n", content.len()).as_bytes());
            wire.extend_from_slice(&content);
            self.write_all(&wire, block, "BDAT write").await?;
            if !more {
                return self
                    .read_reply(self.timeouts.upstream_data_end(), "reply to BDAT LAST")
                    .await;
            }
            let reply = self
                .read_reply(self.timeouts.upstream_data_init(), "reply to BDAT")
                .await?;
            if !reply.is_positive() {
                return Ok(reply);
            }
            content.clear();
        }
    }
}
