//! The lockstep SMTP client that relays one client session to the upstream
//! mail server.
//!
//! It speaks only what the session asks for: it connects, greets, learns the
//! upstream's extensions, sends commands (queued, so MAIL/RCPT can be
//! pipelined when the upstream offers PIPELINING), and streams a message
//! body dot-stuffed in canonical CRLF. Every wait has a timeout after
//! RFC 5321 §4.5.3.2.

use crate::body::Body;
use crate::config::Timeouts;
use crate::proto::{DotStuffer, Reply, ReplyError, ReplyParser};
use crate::stream::BoxStream;
use async_std::io::timeout;
use async_std::net::TcpStream;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use std::fmt;
use std::io;
use std::time::Duration;

/// What the upstream offered in its EHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// It answered EHLO (not only HELO).
    pub esmtp: bool,
    /// PIPELINING (RFC 2920): MAIL/RCPT may be sent in one batch.
    pub pipelining: bool,
    /// SIZE (RFC 1870), with its limit when it gave one (0 = no limit).
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

impl Extensions {
    /// Reads the keywords of an EHLO reply (every line after the first).
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions {
            esmtp: true,
            ..Extensions::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eightbitmime = true,
                "STARTTLS" => ext.starttls = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                _ => {}
            }
        }
        ext
    }
}

/// Why the upstream could not do what was asked.
#[derive(Debug)]
pub enum UpstreamError {
    /// The TCP connection could not be made (refused, unreachable, bad name).
    Connect(io::Error),
    /// The upstream did not answer or accept data in time; names the stage.
    Timeout(&'static str),
    /// The upstream closed the connection.
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// The upstream's reply could not be parsed.
    Protocol(ReplyError),
    /// The upstream refused the session itself (greeting or HELO).
    Refused(Reply),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect failed: {e}"),
            UpstreamError::Timeout(stage) => write!(f, "timed out waiting for {stage}"),
            UpstreamError::Closed => write!(f, "connection closed by upstream"),
            UpstreamError::Io(e) => write!(f, "I/O error: {e}"),
            UpstreamError::Protocol(e) => write!(f, "bad reply: {e}"),
            UpstreamError::Refused(r) => write!(f, "session refused: {r}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Chunk size for streaming a body: large enough for few syscalls, small
/// enough to keep memory per session low.
const BODY_CHUNK: usize = 64 * 1024;

/// One SMTP client connection to the upstream server.
pub struct Upstream {
    /// The connection (plain TCP today; TLS slots in as another `BoxStream`).
    stream: BoxStream,
    /// Bytes read but not yet parsed into a reply.
    rbuf: Vec<u8>,
    /// Commands queued but not yet written (for pipelining).
    wbuf: Vec<u8>,
    /// Parser for the upstream's replies.
    parser: ReplyParser,
    /// What the upstream offered in EHLO.
    pub extensions: Extensions,
    /// The address we connected to, for logs.
    pub peer: String,
    /// Limits for every wait.
    timeouts: Timeouts,
}

impl Upstream {
    /// Connects to `addr` ("host:port", resolved now), reads the greeting
    /// and introduces itself as `helo` (EHLO, falling back to HELO).
    pub async fn connect(
        addr: &str,
        helo: &str,
        timeouts: &Timeouts,
    ) -> Result<Upstream, UpstreamError> {
        let tcp = match timeout(timeouts.upstream_connect(), TcpStream::connect(addr)).await {
            Ok(tcp) => tcp,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(UpstreamError::Timeout("connect"))
            }
            Err(e) => return Err(UpstreamError::Connect(e)),
        };
        let _ = tcp.set_nodelay(true);
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.to_string());
        let mut up = Upstream {
            stream: Box::new(tcp),
            rbuf: Vec::with_capacity(1024),
            wbuf: Vec::with_capacity(1024),
            parser: ReplyParser::new(),
            extensions: Extensions::default(),
            peer,
            timeouts: timeouts.clone(),
        };
        let greeting = up
            .read_reply(timeouts.upstream_greeting(), "greeting")
            .await?;
        if greeting.code != 220 {
            return Err(UpstreamError::Refused(greeting));
        }
        up.greet(helo).await?;
        Ok(up)
    }

    /// Sends EHLO (or HELO when EHLO is refused) and records the extensions.
    async fn greet(&mut self, helo: &str) -> Result<(), UpstreamError> {
        let reply = self.command(&format!("EHLO {helo}"), "EHLO").await?;
        if reply.is_positive() {
            self.extensions = Extensions::from_ehlo(&reply);
            return Ok(());
        }
        let reply = self.command(&format!("HELO {helo}"), "HELO").await?;
        if reply.is_positive() {
            self.extensions = Extensions::default();
            Ok(())
        } else {
            Err(UpstreamError::Refused(reply))
        }
    }

    /// Queues one command line (without CRLF) to be written by [`Upstream::flush`].
    pub fn queue(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), UpstreamError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let result = self
            .write_all(&buf, self.timeouts.upstream_command(), "command write")
            .await;
        self.wbuf = buf;
        self.wbuf.clear();
        result
    }

    /// Sends one command and waits for its reply (`stage` names it in errors).
    pub async fn command(
        &mut self,
        line: &str,
        stage: &'static str,
    ) -> Result<Reply, UpstreamError> {
        self.queue(line);
        self.flush().await?;
        self.read_reply(self.timeouts.upstream_command(), stage)
            .await
    }

    /// Reads the next reply for a queued command (`stage` names it in errors).
    pub async fn reply(&mut self, stage: &'static str) -> Result<Reply, UpstreamError> {
        self.read_reply(self.timeouts.upstream_command(), stage)
            .await
    }

    /// Sends DATA and, when the upstream invites it with 354, streams
    /// `prepend` then `body` dot-stuffed and returns the reply to the final
    /// dot. Any other reply to DATA is returned as it is (it is final).
    pub async fn send_message(
        &mut self,
        prepend: &[u8],
        body: &mut Body,
    ) -> Result<Reply, UpstreamError> {
        self.queue("DATA");
        self.flush().await?;
        let go_ahead = self
            .read_reply(self.timeouts.upstream_data_init(), "DATA reply")
            .await?;
        if go_ahead.code != 354 {
            return Ok(go_ahead);
        }
        let block = self.timeouts.upstream_data_block();
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 8);
        stuffer.encode(prepend, &mut out);
        let mut chunk = Vec::with_capacity(BODY_CHUNK);
        let mut chunks = body.chunks(BODY_CHUNK).map_err(UpstreamError::Io)?;
        while chunks.next_into(&mut chunk).map_err(UpstreamError::Io)? {
            stuffer.encode(&chunk, &mut out);
            if out.len() >= BODY_CHUNK {
                self.write_all(&out, block, "message write").await?;
                out.clear();
            }
        }
        stuffer.finish(&mut out);
        self.write_all(&out, block, "message write").await?;
        self.read_reply(self.timeouts.upstream_data_end(), "reply to end of data")
            .await
    }

    /// Ends the session politely; errors are irrelevant at this point.
    pub async fn quit(mut self) {
        if self.command("QUIT", "QUIT").await.is_ok() {
            let _ = self.stream.close().await;
        }
    }

    async fn write_all(
        &mut self,
        buf: &[u8],
        limit: Duration,
        stage: &'static str,
    ) -> Result<(), UpstreamError> {
        match timeout(limit, async {
            self.stream.write_all(buf).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(UpstreamError::Timeout(stage)),
            Err(e) => Err(UpstreamError::Io(e)),
        }
    }

    async fn read_reply(
        &mut self,
        limit: Duration,
        stage: &'static str,
    ) -> Result<Reply, UpstreamError> {
        loop {
            match self.parser.parse(&self.rbuf) {
                Ok(Some((reply, used))) => {
                    self.rbuf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(UpstreamError::Protocol(e)),
            }
            let mut chunk = [0u8; 4096];
            let n = match timeout(limit, self.stream.read(&mut chunk)).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamError::Timeout(stage))
                }
                Err(e) => return Err(UpstreamError::Io(e)),
            };
            if n == 0 {
                return Err(UpstreamError::Closed);
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}
