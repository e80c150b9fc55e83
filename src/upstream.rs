//! The lockstep SMTP client that relays one client session to the upstream
//! mail server.
//!
//! It speaks only what the session asks for: it connects, greets, learns the
//! upstream's extensions, sends commands (queued, so MAIL/RCPT can be
//! pipelined when the upstream offers PIPELINING), and streams a message
//! body dot-stuffed in canonical CRLF. Every wait has a timeout after
//! RFC 5321 §4.5.3.2.
//!
//! Opening a session ([`Upstream::open`]) also does TLS — implicit, or
//! STARTTLS when the policy asks — and AUTH at a smarthost. Choosing
//! which upstream server to open, with failover, is [`pool`]'s job;
//! telling it who the real client is (XFORWARD, XCLIENT) is [`forward`]'s;
//! keeping idle connections for later client sessions is [`idle`]'s;
//! learning what the upstream offers before any client needs it is
//! [`probe`]'s.

mod chunked;
pub mod forward;
pub mod idle;
pub mod pool;
mod probe;

pub use pool::UpstreamPool;

use crate::body::Body;
use crate::config::Timeouts;
use crate::filter::TlsInfo;
use crate::proto::{DotStuffer, Reply, ReplyError, ReplyParser};
use crate::stream::BoxStream;
use async_std::io::timeout;
use async_std::net::TcpStream;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt as _;
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::rustls::ClientConfig;
use futures_rustls::TlsConnector;
use log::{debug, info};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

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
    /// CHUNKING (RFC 3030): the message may go as BDAT chunks.
    pub chunking: bool,
    /// DSN (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT.
    pub dsn: bool,
    /// AUTH (RFC 4954): the SASL mechanisms offered, uppercased.
    pub auth: Vec<String>,
    /// XFORWARD (Postfix): the attribute names it takes, uppercased;
    /// `None` when not offered.
    pub xforward: Option<Vec<String>>,
    /// XCLIENT (Postfix): the attribute names it takes, uppercased; `None`
    /// when not offered.
    pub xclient: Option<Vec<String>>,
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
                "CHUNKING" => ext.chunking = true,
                "DSN" => ext.dsn = true,
                "AUTH" => ext.auth.extend(words.map(str::to_ascii_uppercase)),
                "XFORWARD" => ext.xforward = Some(words.map(str::to_ascii_uppercase).collect()),
                "XCLIENT" => ext.xclient = Some(words.map(str::to_ascii_uppercase).collect()),
                // The pre-RFC form some servers still send next to AUTH.
                k if k.starts_with("AUTH=") => {
                    ext.auth.extend(
                        std::iter::once(&line.trim()[5..])
                            .chain(words)
                            .map(str::to_ascii_uppercase),
                    );
                }
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
    /// The TLS handshake failed, e.g. the certificate did not verify.
    Tls(io::Error),
    /// TLS is required and the upstream does not offer or refused STARTTLS;
    /// nothing was sent in clear.
    TlsRequired(String),
    /// The upstream refused our credentials.
    Auth(Reply),
    /// AUTH is configured but cannot be done safely or at all (no TLS, no
    /// PLAIN or LOGIN offered).
    AuthUnavailable(&'static str),
    /// The upstream refused the real client announced with XCLIENT; the
    /// reply is for that client, and the connection is not to be reused.
    ClientRefused(Reply),
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
            UpstreamError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            UpstreamError::TlsRequired(why) => write!(f, "TLS required but {why}"),
            UpstreamError::Auth(r) => write!(f, "AUTH refused: {r}"),
            UpstreamError::AuthUnavailable(why) => write!(f, "cannot AUTH: {why}"),
            UpstreamError::ClientRefused(r) => write!(f, "refused the client of XCLIENT: {r}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

impl UpstreamError {
    /// The `kind` label this failure is counted under in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Closed => "closed",
            UpstreamError::Io(_) => "io",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Refused(_) => "refused",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::TlsRequired(_) => "tls_required",
            UpstreamError::Auth(_) => "auth",
            UpstreamError::AuthUnavailable(_) => "auth_unavailable",
            UpstreamError::ClientRefused(_) => "client_refused",
        }
    }
}

/// True when a command's `result` on a *reused* connection (kept from an
/// earlier transaction, or idle in the pool) shows that the connection
/// died while it waited: closed, reset or silent, or the server saying
/// `421` because it is closing. Nothing reached a mail transaction then,
/// so the command is retried once on a fresh connection before the
/// client hears anything. Any other answer is the upstream's real one.
pub fn reused_connection_died(result: &Result<Reply, UpstreamError>) -> bool {
    match result {
        Ok(reply) => reply.code == 421,
        Err(e) => matches!(
            e,
            UpstreamError::Closed | UpstreamError::Io(_) | UpstreamError::Timeout(_)
        ),
    }
}

/// Chunk size for streaming a body: large enough for few syscalls, small
/// enough to keep memory per session low.
const BODY_CHUNK: usize = 64 * 1024;
/// Body pieces at least this long are written from the body itself, not
/// copied into the write buffer first.
const DIRECT_WRITE: usize = 16 * 1024;

/// How much is read at a time while waiting for a reply.
const READ_CHUNK: usize = 4096;

/// One SMTP client connection to the upstream server.
pub struct Upstream {
    /// The connection: plain TCP, or TLS over it.
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
    /// Version and cipher once the session is under TLS.
    pub tls: Option<TlsInfo>,
    /// The client session this connection was restarted for with XCLIENT:
    /// the upstream takes it for that client from then on, so it must not
    /// carry another client's mail.
    pub xclient_for: Option<String>,
    /// The configured `host:port` this connection was opened to: the idle
    /// pool keeps connections per configured server.
    pub origin: String,
    /// When the connection was opened, for the pool's lifetime limit.
    pub opened: Instant,
    /// Whether the connection may serve another client session after this
    /// one. Clear it when the connection carries per-client state (an
    /// identity set with XCLIENT, say) that the next client must not inherit.
    pub reusable: bool,
    /// The user this connection logged in as on behalf of a client (AUTH
    /// passthrough): it carries that client's mail only, and is never
    /// replaced by a connection that did not log in.
    pub logged_in_as: Option<String>,
}

/// How the session to the upstream is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    /// No TLS.
    Plain,
    /// STARTTLS when offered.
    Opportunistic,
    /// STARTTLS, and no session without it.
    Required,
    /// TLS from the first byte.
    Implicit,
}

/// TLS settings for opening an upstream session.
#[derive(Clone)]
pub struct TlsClient {
    /// When to use TLS.
    pub policy: TlsPolicy,
    /// Verification and protocol settings.
    pub config: Arc<ClientConfig>,
    /// SNI and certificate name; `None` means the host of the address.
    pub server_name: Option<String>,
}

/// Credentials for AUTH at the upstream.
#[derive(Clone)]
pub struct UpstreamCredentials {
    /// User name.
    pub user: String,
    /// Password; wiped from memory when dropped.
    pub password: Zeroizing<String>,
}

/// Everything needed to open one upstream session.
#[derive(Clone, Copy)]
pub struct Opening<'a> {
    /// Our EHLO name.
    pub helo: &'a str,
    /// Limits for every wait.
    pub timeouts: &'a Timeouts,
    /// TLS, if any.
    pub tls: Option<&'a TlsClient>,
    /// AUTH, if any (only ever done under TLS).
    pub auth: Option<&'a UpstreamCredentials>,
}

/// A stream being opened, and the peer name for logs.
pub type Connecting<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = io::Result<(BoxStream, String)>> + Send + 'a>,
>;

/// What opens the byte stream to an upstream server. The pool uses TCP;
/// a test harness or an offline run hands it an in-memory one instead,
/// and everything above the stream (TLS, greeting, AUTH, the relay) stays
/// the same.
pub trait Connector: Send + Sync {
    /// A stream to `addr` ("host:port"), and the peer name for logs.
    fn connect<'a>(&'a self, addr: &'a str) -> Connecting<'a>;
}

/// Opens a TCP connection to `addr` within the connect timeout.
async fn connect_tcp(
    addr: &str,
    timeouts: &Timeouts,
) -> Result<(BoxStream, String), UpstreamError> {
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
    Ok((Box::new(tcp), peer))
}

impl Upstream {
    /// Opens a session to `addr` ("host:port", resolved now): connects,
    /// does implicit TLS or STARTTLS as the policy says, greets, and
    /// authenticates. With TLS required, nothing but EHLO and STARTTLS is
    /// ever sent in clear.
    pub async fn open(addr: &str, opening: &Opening<'_>) -> Result<Upstream, UpstreamError> {
        Upstream::open_with(None, addr, opening).await
    }

    /// [`open`](Self::open), over a stream from `connector` when one is
    /// given instead of TCP.
    pub async fn open_with(
        connector: Option<&dyn Connector>,
        addr: &str,
        opening: &Opening<'_>,
    ) -> Result<Upstream, UpstreamError> {
        let timeouts = opening.timeouts;
        let (stream, peer) = match connector {
            None => connect_tcp(addr, timeouts).await?,
            Some(c) => match timeout(timeouts.upstream_connect(), c.connect(addr)).await {
                Ok(opened) => opened,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamError::Timeout("connect"))
                }
                Err(e) => return Err(UpstreamError::Connect(e)),
            },
        };
        let mut up = Upstream {
            stream,
            rbuf: Vec::with_capacity(1024),
            wbuf: Vec::with_capacity(1024),
            parser: ReplyParser::new(),
            extensions: Extensions::default(),
            peer,
            timeouts: timeouts.clone(),
            tls: None,
            xclient_for: None,
            origin: addr.to_string(),
            opened: Instant::now(),
            reusable: true,
            logged_in_as: None,
        };
        let tls = opening.tls.filter(|t| t.policy != TlsPolicy::Plain);
        if let Some(t) = tls.filter(|t| t.policy == TlsPolicy::Implicit) {
            up.handshake(t, addr).await?;
        }
        let greeting = up
            .read_reply(timeouts.upstream_greeting(), "greeting")
            .await?;
        if greeting.code != 220 {
            return Err(UpstreamError::Refused(greeting));
        }
        up.greet(opening.helo).await?;
        if let Some(t) = tls.filter(|t| t.policy != TlsPolicy::Implicit) {
            up.starttls(t, addr, opening.helo).await?;
        }
        if let Some(creds) = opening.auth {
            up.authenticate(creds).await?;
        }
        Ok(up)
    }

    /// STARTTLS (RFC 3207) as the policy says, then EHLO again.
    async fn starttls(
        &mut self,
        tls: &TlsClient,
        addr: &str,
        helo: &str,
    ) -> Result<(), UpstreamError> {
        let required = tls.policy == TlsPolicy::Required;
        if !self.extensions.starttls {
            if required {
                return Err(UpstreamError::TlsRequired(
                    "the upstream does not offer STARTTLS".to_string(),
                ));
            }
            debug!(
                "upstream {} offers no STARTTLS; going on in plain text",
                self.peer
            );
            return Ok(());
        }
        let reply = self.command("STARTTLS", "STARTTLS reply").await?;
        if reply.code != 220 {
            if required {
                return Err(UpstreamError::TlsRequired(format!(
                    "the upstream refused STARTTLS: {reply}"
                )));
            }
            info!(
                "upstream {} refused STARTTLS ({reply}); going on in plain text",
                self.peer
            );
            return Ok(());
        }
        // Anything the server sent after its 220 arrived before the
        // handshake, in clear, and may have been injected: drop it
        // (CVE-2011-0411, client side).
        self.rbuf.clear();
        self.handshake(tls, addr).await?;
        // What the server offered before TLS is forgotten (RFC 3207 §4.2).
        self.extensions = Extensions::default();
        self.greet(helo).await
    }

    /// The client side of a TLS handshake over the current stream.
    async fn handshake(&mut self, tls: &TlsClient, addr: &str) -> Result<(), UpstreamError> {
        let name: ServerName<'static> =
            crate::tls::server_name(tls.server_name.as_deref(), addr)
                .map_err(|e| UpstreamError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let plain = std::mem::replace(
            &mut self.stream,
            Box::new(futures::io::Cursor::new(Vec::new())),
        );
        let connector = TlsConnector::from(tls.config.clone());
        let stream = match timeout(
            self.timeouts.upstream_greeting(),
            connector.connect(name, plain),
        )
        .await
        {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(UpstreamError::Timeout("TLS handshake"))
            }
            Err(e) => return Err(UpstreamError::Tls(e)),
        };
        let info = crate::tls::info(stream.get_ref().1);
        debug!(
            "upstream {} under TLS: {} {}",
            self.peer, info.version, info.cipher
        );
        self.tls = Some(info);
        self.stream = Box::new(stream);
        Ok(())
    }

    /// AUTH PLAIN (or LOGIN when only that is offered) with `creds`. Never
    /// without TLS: the password would cross the wire in clear.
    async fn authenticate(&mut self, creds: &UpstreamCredentials) -> Result<(), UpstreamError> {
        self.authenticate_as(&creds.user, creds.password.as_bytes(), false)
            .await
    }

    /// Logs in as a client's user (AUTH passthrough), with LOGIN first when
    /// `login_first` (the client used LOGIN) and the server offers it, else
    /// PLAIN. Under TLS only. On success the connection is bound to `user`:
    /// not reusable by other sessions.
    pub async fn log_in_for_client(
        &mut self,
        user: &str,
        password: &[u8],
        login_first: bool,
    ) -> Result<(), UpstreamError> {
        self.authenticate_as(user, password, login_first).await?;
        self.logged_in_as = Some(user.to_string());
        self.reusable = false;
        Ok(())
    }

    /// AUTH PLAIN or LOGIN as `user`; LOGIN is preferred when `login_first`.
    async fn authenticate_as(
        &mut self,
        user: &str,
        password: &[u8],
        login_first: bool,
    ) -> Result<(), UpstreamError> {
        if self.tls.is_none() {
            return Err(UpstreamError::AuthUnavailable(
                "the session is not under TLS; the password is not sent in clear",
            ));
        }
        let offers = |m: &str| self.extensions.auth.iter().any(|a| a == m);
        let plain = offers("PLAIN") && !(login_first && offers("LOGIN"));
        let reply = if plain {
            let mut token = Zeroizing::new(Vec::new());
            token.push(0);
            token.extend_from_slice(user.as_bytes());
            token.push(0);
            token.extend_from_slice(password);
            let line = Zeroizing::new(format!("AUTH PLAIN {}", STANDARD.encode(&token[..])));
            self.command(&line, "AUTH reply").await?
        } else if offers("LOGIN") {
            let reply = self.command("AUTH LOGIN", "AUTH reply").await?;
            if reply.code != 334 {
                return Err(UpstreamError::Auth(reply));
            }
            let reply = self
                .command(&STANDARD.encode(user.as_bytes()), "AUTH reply")
                .await?;
            if reply.code != 334 {
                return Err(UpstreamError::Auth(reply));
            }
            let line = Zeroizing::new(STANDARD.encode(password));
            self.command(&line, "AUTH reply").await?
        } else {
            return Err(UpstreamError::AuthUnavailable(
                "the upstream offers neither AUTH PLAIN nor LOGIN",
            ));
        };
        // The command buffer held the password; wipe it.
        zeroize::Zeroize::zeroize(&mut self.wbuf);
        if reply.code == 235 {
            debug!("upstream {} accepted AUTH as {user}", self.peer);
            Ok(())
        } else {
            Err(UpstreamError::Auth(reply))
        }
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

    /// Sends the message as BDAT chunks when the upstream offers CHUNKING.
    /// Otherwise sends DATA and, when the upstream invites it with 354, streams
    /// `prepend` then `body` dot-stuffed and returns the reply to the final
    /// dot. Any other reply to DATA is returned as it is (it is final).
    pub async fn send_message(
        &mut self,
        prepend: &[u8],
        body: &mut Body,
    ) -> Result<Reply, UpstreamError> {
        if self.extensions.chunking {
            return self.send_chunked(prepend, body).await;
        }
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
        let canonical = body.is_canonical();
        let mut chunk = Vec::new();
        let mut chunks = body.chunks(BODY_CHUNK).map_err(UpstreamError::Io)?;
        while let Some(piece) = chunks.next_slice(&mut chunk).map_err(UpstreamError::Io)? {
            if !canonical {
                stuffer.encode(piece, &mut out);
            }
            for part in canonical
                .then(|| stuffer.stuff_canonical(piece))
                .into_iter()
                .flatten()
            {
                if part.len() < DIRECT_WRITE {
                    out.extend_from_slice(part);
                    continue;
                }
                // Straight from the body to the socket: no copy on the way.
                if !out.is_empty() {
                    self.write_all(&out, block, "message write").await?;
                    out.clear();
                }
                self.write_all(part, block, "message write").await?;
            }
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

    /// True when no command is queued and no reply is left unread: the
    /// dialogue is between commands, as a reusable connection must be.
    pub fn is_settled(&self) -> bool {
        self.wbuf.is_empty() && self.rbuf.is_empty()
    }

    /// Checks, without waiting, that the server has neither closed the
    /// connection nor sent anything unasked. An idle SMTP server speaks
    /// only to say goodbye (`421` on its idle timeout), so readable input —
    /// data, end of stream or an error — means the connection is done.
    /// A peer that vanished without a word still looks alive: that shows
    /// only when the next command fails.
    pub fn looks_alive(&mut self) -> bool {
        if !self.is_settled() {
            return false;
        }
        let mut probe = [0u8; 1];
        // One poll with a no-op waker: `None` means "would block", i.e.
        // nothing there. A byte read this way is lost, but the connection
        // is thrown away in that case anyway.
        self.stream.read(&mut probe).now_or_never().is_none()
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
            // Read straight into the buffer's tail: a local array here
            // would live in every future that awaits a reply, and so in
            // every session's task, idle or not.
            let start = self.rbuf.len();
            self.rbuf.resize(start + READ_CHUNK, 0);
            let read = timeout(limit, self.stream.read(&mut self.rbuf[start..])).await;
            self.rbuf.truncate(start + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(UpstreamError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamError::Timeout(stage))
                }
                Err(e) => return Err(UpstreamError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::UPSTREAM_ERROR_KINDS;

    #[test]
    fn every_error_kind_is_a_metrics_label() {
        let reply = Reply::plain(550, "no");
        for e in [
            UpstreamError::Connect(io::Error::other("x")),
            UpstreamError::Timeout("x"),
            UpstreamError::Closed,
            UpstreamError::Io(io::Error::other("x")),
            UpstreamError::Refused(reply.clone()),
            UpstreamError::Tls(io::Error::other("x")),
            UpstreamError::TlsRequired("x".into()),
            UpstreamError::Auth(reply.clone()),
            UpstreamError::AuthUnavailable("x"),
            UpstreamError::ClientRefused(reply),
        ] {
            assert!(UPSTREAM_ERROR_KINDS.contains(&e.kind()), "{}", e.kind());
            // Present at 0 on a fresh /metrics, before the first failure.
            let text = crate::metrics::Metrics::new().render();
            let series = format!(
                "smtpgate_upstream_errors_total{{kind=\"{}\"}} 0\n",
                e.kind()
            );
            assert!(text.contains(&series), "{series}");
        }
    }
}
