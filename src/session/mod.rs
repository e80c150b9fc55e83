//! One inbound SMTP session: the command loop, its state, and the lockstep
//! relay to the upstream.
//!
//! The session reads bytes, lets the sans-I/O codec in [`crate::proto`] turn
//! them into commands, and answers each one. Command handlers live in one
//! file per command (`ehlo.rs`, `mail.rs`, `rcpt.rs`, `data.rs`, `misc.rs`,
//! `starttls.rs`, `auth.rs`).
//! The session is written against `futures::io`, so plain TCP, TLS and
//! in-memory pipes are the same to it.

mod audit;
mod auth;
mod bdat;
mod conn;
mod data;
mod dkim;
mod ehlo;
mod footprint;
mod greylist;
mod link;
mod mail;
mod milter;
mod misc;
mod protect;
mod quarantine;
mod rcpt;
pub(crate) mod replies;
mod scanned;
mod sender_auth;
mod starttls;
mod transaction;

use crate::auth::{Exchange, User};
use crate::config::ListenerPolicy;
use crate::filter::{AfterConnect, Context, Outcome, Stage};
use crate::gateway::{Gateway, Pipeline};
use crate::proto::{
    parse_command, Command, CommandError, EnhancedCode, LineError, LineReader, Recipient, Reply,
};
use crate::stream::Stream;
use async_std::io::timeout;
use conn::Conn;
use futures::future::{select, Either};
use link::Link;
use log::{debug, info, warn};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transaction::{Disposition, Transaction};

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next command.
    Continue,
    /// Flush what is queued and close the connection.
    Stop,
}

/// A reply or upstream answer owed to the client, in command order.
///
/// RCPTs pipelined to the upstream are answered only when its replies are
/// read; any reply of our own that follows them must wait its turn.
enum Pending {
    /// A RCPT sent to the upstream whose reply is still to be read.
    Rcpt(Recipient),
    /// A reply of our own, queued behind upstream replies.
    Local(Reply),
}

/// One client connection from greeting to close.
pub struct Session<S> {
    /// The client connection and its buffers.
    conn: Conn<S>,
    /// Configuration and shutdown signal.
    shared: Arc<Gateway>,
    /// Session id, in logs and transaction ids.
    id: String,
    /// The client's address.
    peer: SocketAddr,
    /// Our address the client connected to, when known (AUTH backends).
    local: Option<SocketAddr>,
    /// When the session started, for the closing log line.
    started: Instant,
    /// Splits the input into command lines.
    lines: LineReader,
    /// Bad commands so far; too many end the session.
    errors: u32,
    /// The transaction in progress, from MAIL to the end of DATA.
    tx: Option<Transaction>,
    /// The BDAT chunks of the transaction's message, before `LAST`.
    chunks: Option<Box<bdat::Chunks>>,
    /// 503s still excused after a refused MAIL: a client that pipelined
    /// RCPT and DATA behind it did nothing wrong (RFC 2920 §3.1), so those
    /// do not count toward `max_errors`. Bounded, so a client cannot make
    /// bad commands free by failing MAIL on purpose.
    excused_503s: usize,
    /// Transactions started (MAIL past the gateway's checks), for ids.
    tx_seq: u32,
    /// The upstream connection, kept for the next transaction, and
    /// whether it needs RSET first.
    upstream: Link,
    /// Answers owed to the client, in order.
    pending: VecDeque<Pending>,
    /// The checks and filters this session started with.
    pipeline: Arc<Pipeline>,
    /// What filters see and accumulate.
    ctx: Context,
    /// What the session learned from the greeting on; STARTTLS forgets
    /// it in one step.
    greeting: Greeting,
    /// What the session had learned when its connect stage ended, to go
    /// back to on STARTTLS and on a new EHLO.
    after_connect: AfterConnect,
    /// A connect-stage `discard`/`quarantine`: it outlives STARTTLS.
    connect_disposition: Disposition,
    /// What the listener this client came in on does (TLS, AUTH).
    listener: ListenerPolicy,
    /// The client is in a trusted network: it may relay anywhere.
    trusted: bool,
    /// Failed AUTH attempts; too many end the session.
    auth_failures: u32,
    /// Time spent in the filter chain during the current transaction (audit).
    tx_rules_time: Duration,
    /// Transaction records written; a session without any gets a session record.
    audit_records: u32,
    /// The last refusal outside a transaction and who gave it (session record).
    refusal: Option<(Reply, String)>,
    /// Per-client protection: this connection's per-IP slot, the tarpit.
    protect: protect::State,
    /// The current transaction's milter connections.
    milters: Option<crate::milter::Transaction>,
}

impl<S: Stream> Session<S> {
    /// A session over `stream` with the client at `peer`.
    pub fn new(stream: S, peer: SocketAddr, shared: Arc<Gateway>) -> Self {
        let lines = LineReader::new(shared.config.limits.max_command_line);
        let pipeline = shared.pipeline();
        Session {
            listener: ListenerPolicy::plain(),
            trusted: shared.relay().is_trusted(peer.ip()),
            auth_failures: 0,
            pipeline,
            after_connect: Context::new(peer).after_connect(),
            ctx: Context::new(peer),
            greeting: Greeting::default(),
            connect_disposition: Disposition::Relay,
            tx_rules_time: Duration::ZERO,
            audit_records: 0,
            refusal: None,
            protect: protect::State::default(),
            milters: None,
            conn: Conn::new(stream, shared.metrics().replies()),
            id: shared.session_id(),
            shared,
            peer,
            local: None,
            started: Instant::now(),
            lines,
            errors: 0,
            tx: None,
            chunks: None,
            excused_503s: 0,
            tx_seq: 0,
            upstream: Link::None,
            pending: VecDeque::new(),
        }
    }

    /// Sets what the listener does (TLS, AUTH); a session starts as a
    /// plain listener's.
    pub fn on_listener(mut self, policy: ListenerPolicy) -> Self {
        self.listener = policy;
        self
    }

    /// Sets the address the client connected to (the listener socket's,
    /// or the PROXY header's destination), which AUTH backends hear.
    pub fn on_local(mut self, local: Option<SocketAddr>) -> Self {
        self.local = local;
        self
    }

    /// Refuses the connection at once with `421 4.7.0` (over the connection limit).
    pub async fn refuse_busy(mut self) {
        if self.listener.implicit_tls {
            // The client expects a TLS handshake, not text: just close.
            info!(
                "session {} peer={} refused: too many connections",
                self.id, self.peer
            );
            return;
        }
        let reply = replies::too_many_connections(&self.shared.config.hostname);
        self.conn.push(&reply);
        let _ = self.conn.flush(self.shared.config.timeouts.command()).await;
        info!(
            "session {} peer={} refused: too many connections",
            self.id, self.peer
        );
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        debug!("session {} peer={} connected", self.id, self.peer);
        let host = self.shared.config.hostname.clone();
        // Per-IP limits come first, before any TLS handshake is paid for.
        let admitted = self.admit().await;
        if admitted.is_none() && self.listener.implicit_tls && !self.implicit_tls().await {
            return;
        }
        let end = if let Some(end) = admitted {
            end
        } else if self.shared.shutdown.is_fired() {
            self.conn.push(&replies::shutting_down(&host));
            "shutting down"
        } else if let Some(end) = self.pregreet().await {
            end
        } else if let Some(refusal) = self.connect_stage().await {
            self.conn.push(&refusal);
            "refused at connect"
        } else {
            self.conn
                .push(&Reply::plain(220, format!("{host} ESMTP smtpgate ready")));
            self.command_loop().await
        };
        let _ = self.conn.flush(self.shared.config.timeouts.command()).await;
        if let Some((up, needs_rset)) = self.upstream.take() {
            // Kept for the next session only when nothing is left owed; a
            // transaction still open there is reset first.
            let reusable = self.pending.is_empty() && !self.shared.shutdown.is_fired();
            let dirty = needs_rset || self.tx.is_some();
            if let Some(pool) = self.shared.upstreams() {
                // Boxed: a rare, large future kept out of every idle task.
                Box::pin(pool.release(up, dirty, reusable)).await;
            }
        }
        if let Some(tx) = self.tx.take() {
            self.audit_aborted(&tx);
        }
        self.audit_session(end);
        info!(
            "session {} peer={} helo={} duration={:.3}s transactions={} errors={} end={}",
            self.id,
            self.peer,
            self.greeting.helo.as_deref().unwrap_or("-"),
            self.started.elapsed().as_secs_f64(),
            // The audit trail's count: every transaction that got an id,
            // delivered or not, so the two can be matched.
            self.audit_records,
            self.errors,
            end
        );
    }

    /// Asks the filters about the new connection; a refusal is the reply to
    /// give instead of the greeting.
    async fn connect_stage(&mut self) -> Option<Reply> {
        let verdict = self.session_stage(Stage::Connect).await;
        self.after_connect = self.ctx.after_connect();
        self.connect_disposition = self.greeting.disposition;
        match verdict {
            SessionVerdict::Refuse(r) | SessionVerdict::Close(r) => Some(r),
            SessionVerdict::Go => None,
        }
    }

    /// Goes back to what the session knew when its connect stage ended:
    /// the greeting, AUTH, the helo- and auth-stage scores, headers, hits
    /// and facts are forgotten, so a new greeting counts them once.
    fn restart_greeting(&mut self) {
        self.abandon_transaction();
        self.greeting = Greeting {
            disposition: self.connect_disposition,
            ..Greeting::default()
        };
        self.ctx.restart(&self.after_connect);
    }

    /// Runs a session-level stage (connect, helo, auth): a refusal is noted
    /// for the session's audit record, and a `discard` or `quarantine`
    /// applies to every transaction of the session.
    async fn session_stage(&mut self, stage: Stage) -> SessionVerdict {
        match self.stage_verdict(stage, None).await.outcome() {
            Outcome::Refuse(r) => {
                self.note_refusal(&r);
                SessionVerdict::Refuse(r)
            }
            Outcome::Close(r) => {
                self.note_refusal(&r);
                SessionVerdict::Close(r)
            }
            Outcome::Discard => {
                self.greeting.disposition = Disposition::Discard;
                SessionVerdict::Go
            }
            Outcome::Quarantine => {
                self.greeting.disposition = Disposition::Quarantine;
                SessionVerdict::Go
            }
            Outcome::Proceed => SessionVerdict::Go,
        }
    }

    /// Reads and answers commands until the session ends; returns why it ended.
    async fn command_loop(&mut self) -> &'static str {
        loop {
            let (used, line) = self.lines.next_line(self.conn.input());
            match line {
                Some(Ok(range)) => {
                    let bytes = self.conn.input()[range].to_vec();
                    self.conn.consume(used);
                    self.line_done();
                    if self.handle_line(&bytes).await == Flow::Stop {
                        return "closed";
                    }
                    // A client that pipelines without reading its replies
                    // gets no more input read until they are written: the
                    // replies waiting here stay small.
                    if self.conn.output_len() >= conn::OUTPUT_HIGH_WATER {
                        self.resolve_pending().await;
                        if self.flush().await.is_err() {
                            return "write failed";
                        }
                    }
                    continue;
                }
                Some(Err(LineError::TooLong)) => {
                    self.conn.consume(used);
                    // An over-long SASL response ends the AUTH exchange.
                    if self.greeting.sasl.take().is_some() {
                        self.lines = LineReader::new(self.shared.config.limits.max_command_line);
                    }
                    self.resolve_pending().await;
                    if self.client_error(replies::line_too_long()) == Flow::Stop {
                        return "too many errors";
                    }
                    continue;
                }
                None => self.conn.consume(used),
            }
            // The input holds no complete command: answer what is owed
            // before waiting for the client.
            self.resolve_pending().await;
            if self.flush().await.is_err() {
                return "write failed";
            }
            match self.read_command_input().await {
                Input::Data => {}
                Input::Eof => return "client closed",
                Input::Error => return "read failed",
                Input::Timeout => {
                    self.conn
                        .push(&replies::timeout(&self.shared.config.hostname));
                    return "timeout";
                }
                Input::Shutdown => {
                    self.conn
                        .push(&replies::shutting_down(&self.shared.config.hostname));
                    return "shutdown";
                }
            }
        }
    }

    /// Waits for more command input. Shutdown interrupts the wait only
    /// between transactions: a transaction in flight may finish.
    async fn read_command_input(&mut self) -> Input {
        let limit = self.command_wait();
        let watch_shutdown = self.tx.is_none();
        let read = timeout(limit, self.conn.fill(false));
        let result = if watch_shutdown {
            let stop = self.shared.shutdown.wait();
            futures::pin_mut!(read, stop);
            match select(read, stop).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => return Input::Shutdown,
            }
        } else {
            read.await
        };
        Input::from(result)
    }

    /// Parses and answers one command line.
    async fn handle_line(&mut self, line: &[u8]) -> Flow {
        if self.greeting.sasl.is_some() {
            return self.auth_response(line).await;
        }
        // UTF-8 is parsed where SMTPUTF8 was offered, and then kept only on
        // a MAIL that asks for it and the RCPTs of its transaction.
        let smtputf8 = self.greeting.smtputf8;
        let command = match parse_command(line, smtputf8) {
            Ok(c) if line.is_ascii() || self.utf8_allowed(&c) => Ok(c),
            Ok(_) => Err(CommandError::EightBit),
            Err(e) => Err(e),
        };
        let command = match command {
            Ok(c) => c,
            Err(e) => {
                self.resolve_pending().await;
                debug!("session {} bad command: {e}", self.id);
                return self.client_error(replies::command_error(e));
            }
        };
        // Only RCPTs may queue behind upstream replies still to be read.
        if !matches!(command, Command::Rcpt { .. }) {
            self.resolve_pending().await;
        }
        match command {
            Command::Ehlo(name) => self.ehlo(name, true).await,
            Command::Helo(name) => self.ehlo(name, false).await,
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => self.rset().await,
            Command::Noop => self.reply(replies::ok()),
            Command::Quit => {
                self.reply(replies::bye());
                Flow::Stop
            }
            Command::Help(_) => self.reply(replies::help()),
            Command::Vrfy(_) => self.reply(replies::cannot_verify()),
            Command::Expn(_) => self.reply(replies::expn_disabled()),
            Command::StartTls => self.starttls().await,
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
        }
    }

    /// UTF-8 in a command line (RFC 6531 §3.4): in a `MAIL` with the
    /// SMTPUTF8 parameter and the `RCPT`s of its transaction only.
    fn utf8_allowed(&self, command: &Command) -> bool {
        match command {
            Command::Mail { params, .. } => transaction::smtputf8(params),
            Command::Rcpt { .. } => {
                self.tx.is_some() && transaction::smtputf8(&self.ctx.mail_params)
            }
            _ => false,
        }
    }

    /// Queues a reply in command order.
    fn reply(&mut self, reply: Reply) -> Flow {
        if self.pending.is_empty() {
            self.conn.push(&reply);
        } else {
            self.pending.push_back(Pending::Local(reply));
        }
        Flow::Continue
    }

    /// Answers a command that needs a transaction when there is none: a
    /// bad command, unless it was pipelined behind a refused MAIL.
    fn no_transaction(&mut self) -> Flow {
        let reply = replies::bad_sequence("Error: need MAIL command");
        if self.excused_503s > 0 {
            self.excused_503s -= 1;
            return self.reply(reply);
        }
        self.client_error(reply)
    }

    /// Queues the reply to a bad command; too many of them end the session.
    fn client_error(&mut self, reply: Reply) -> Flow {
        self.reply(reply);
        self.errors += 1;
        self.owe_error_delay();
        if self.errors >= self.shared.config.limits.max_errors {
            let host = self.shared.config.hostname.clone();
            self.reply(replies::too_many_errors(&host));
            warn!("session {} peer={} too many errors", self.id, self.peer);
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// Writes queued replies to the client (after the tarpit's delay, if
    /// errors made one owed).
    async fn flush(&mut self) -> io::Result<()> {
        self.pay_error_delay().await;
        self.conn.flush(self.shared.config.timeouts.command()).await
    }

    /// Reads the upstream's replies to pipelined RCPTs and queues every
    /// owed answer in order.
    async fn resolve_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut alive = match self.upstream.get() {
            Some(up) => match up.flush().await {
                Ok(()) => true,
                Err(e) => {
                    self.upstream_lost(&e);
                    false
                }
            },
            None => false,
        };
        while let Some(owed) = self.pending.pop_front() {
            match owed {
                Pending::Local(reply) => self.conn.push(&reply),
                Pending::Rcpt(rcpt) => {
                    let answer = match (alive, self.upstream.get()) {
                        (true, Some(up)) => up.reply("RCPT reply").await,
                        _ => Err(crate::upstream::UpstreamError::Closed),
                    };
                    let (reply, by) = match answer {
                        Ok(reply) => (self.upstream_reply(reply), audit::BY_UPSTREAM),
                        Err(e) => {
                            if alive {
                                self.upstream_lost(&e);
                                alive = false;
                            }
                            (link::failure_reply(&e), audit::BY_GATEWAY)
                        }
                    };
                    self.record_rcpt(rcpt, &reply, by);
                    self.conn.push(&reply);
                }
            }
        }
    }

    /// Adapts an upstream reply for the client. A `421` means the upstream
    /// is closing its connection, not ours: the client gets it as `451` (so
    /// it retries and our session goes on) and the connection is dropped. A
    /// reply without an enhanced code gets the generic one of its class,
    /// since we advertised ENHANCEDSTATUSCODES (RFC 2034).
    fn upstream_reply(&mut self, mut reply: Reply) -> Reply {
        if reply.code == 421 {
            warn!("session {} upstream is closing: {reply}", self.id);
            self.shared.metrics().upstream_error_kind("closing_421");
            self.upstream.drop_connection();
            if let Some(tx) = self.tx.as_mut() {
                tx.upstream_failed = true;
            }
            reply.code = 451;
            if let Some(e) = reply.enhanced.as_mut() {
                e.class = 4;
            }
        }
        if reply.enhanced.is_none() && matches!(reply.class(), 2 | 4 | 5) {
            reply.enhanced = Some(EnhancedCode::new(reply.class(), 0, 0));
        }
        reply
    }

    /// Drops a failed upstream connection; the transaction it carried cannot go on.
    fn upstream_lost(&mut self, err: &crate::upstream::UpstreamError) {
        let peer = self
            .upstream
            .peek()
            .map(|u| u.peer.clone())
            .unwrap_or_default();
        warn!("session {} upstream {peer} failed: {err}", self.id);
        self.shared.metrics().upstream_error_kind(err.kind());
        self.upstream.drop_connection();
        if let Some(tx) = self.tx.as_mut() {
            tx.upstream_failed = true;
        }
    }

    /// Ends the current transaction (if any) without delivering it.
    fn abandon_transaction(&mut self) {
        self.chunks = None;
        if let Some(tx) = self.tx.take() {
            self.audit_aborted(&tx);
            self.upstream.abandoned();
        }
        self.ctx.reset_transaction();
    }
}

/// What a session learns from its greeting on: the HELO name, AUTH, and
/// what the helo and auth stages decided. STARTTLS replaces it with a new
/// one, so nothing learnt in plain text carries over (RFC 3207 §4.2).
#[derive(Default)]
struct Greeting {
    /// The HELO/EHLO name, once given.
    helo: Option<String>,
    /// The client greeted with EHLO (ESMTP parameters allowed).
    esmtp: bool,
    /// EHLO offered DSN (the upstream did when the client greeted).
    dsn: bool,
    /// EHLO offered SMTPUTF8 (the upstream did when the client greeted).
    smtputf8: bool,
    /// The user the client authenticated as.
    auth: Option<Arc<User>>,
    /// An AUTH exchange waiting for the client's next response line.
    sasl: Option<Exchange>,
    /// A connect-, helo- or auth-stage `discard`/`quarantine` that applies
    /// to every transaction.
    disposition: Disposition,
}

/// What a session-level stage (connect, helo, auth) decided.
enum SessionVerdict {
    /// Go on as normal.
    Go,
    /// Answer this instead; the session goes on.
    Refuse(Reply),
    /// Answer this and close.
    Close(Reply),
}

/// What waiting for client input produced.
enum Input {
    /// New bytes arrived.
    Data,
    /// The client closed the connection.
    Eof,
    /// The read failed.
    Error,
    /// The client said nothing for too long.
    Timeout,
    /// The gateway is shutting down.
    Shutdown,
}

impl From<io::Result<usize>> for Input {
    fn from(result: io::Result<usize>) -> Input {
        match result {
            Ok(0) => Input::Eof,
            Ok(_) => Input::Data,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Input::Timeout,
            Err(_) => Input::Error,
        }
    }
}
