//! MAIL FROM (RFC 5321 §4.1.1.2): starts a transaction and opens the
//! upstream session in lockstep.

use super::audit::{TxEnd, BY_GATEWAY, BY_UPSTREAM};
use super::link::{self, Link};
use super::transaction::{self, Disposition, Transaction};
use super::{replies, Flow, Session};
use crate::config::AuthMode;
use crate::filter::{Context, Outcome, Stage};
use crate::proto::{dsn, Mailbox, Param, Reply};
use crate::stream::Stream;
use crate::upstream::forward::ClientInfo;
use crate::upstream::{reused_connection_died, Extensions, Upstream, UpstreamError};
use log::{debug, warn};
use std::time::Instant;

impl<S: Stream> Session<S> {
    /// Answers MAIL FROM; when it is refused, the RCPTs and DATA a
    /// pipelining client sent behind it are excused their 503s.
    pub(super) async fn mail(&mut self, from: Option<Mailbox>, params: Vec<Param>) -> Flow {
        let flow = self.mail_transaction(from, params).await;
        self.excused_503s = if self.tx.is_none() {
            // One full batch: every recipient allowed, then DATA.
            self.shared.config.limits.max_recipients + 1
        } else {
            0
        };
        flow
    }

    /// Opens the transaction: local checks first, then the upstream's own reply.
    async fn mail_transaction(&mut self, from: Option<Mailbox>, params: Vec<Param>) -> Flow {
        if self.greeting.helo.is_none() {
            return self.client_error(replies::bad_sequence("Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return self.client_error(replies::bad_sequence("Error: nested MAIL command"));
        }
        if self.needs_starttls() {
            return self.client_error(replies::must_starttls());
        }
        if self.listener.auth == AuthMode::Required && self.greeting.auth.is_none() {
            return self.client_error(replies::auth_required());
        }
        let mut declared_size = None;
        for param in &params {
            if !self.greeting.esmtp {
                return self.client_error(replies::unsupported_parameter(&param.keyword));
            }
            let value = param.value.as_deref().unwrap_or("");
            match param.keyword.as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) => declared_size = Some(n),
                    Err(_) => {
                        return self.client_error(replies::bad_parameter("Bad SIZE parameter"))
                    }
                },
                "BODY" => match value.to_ascii_uppercase().as_str() {
                    "7BIT" | "8BITMIME" => {}
                    _ => return self.client_error(replies::bad_parameter("Bad BODY parameter")),
                },
                // RFC 4954 §5: accepted and not passed on; the identity we
                // vouch for is the session's own login, not the client's claim.
                "AUTH" if param.value.is_some() => {}
                "SMTPUTF8" if self.greeting.smtputf8 && param.value.is_none() => {}
                "RET" | "ENVID" if self.greeting.dsn => {
                    let valid = match param.keyword.as_str() {
                        "RET" => dsn::is_ret(value),
                        _ => dsn::is_envid(value),
                    };
                    if !valid {
                        return self.client_error(replies::bad_parameter("Bad DSN parameter"));
                    }
                }
                other => return self.client_error(replies::unsupported_parameter(other)),
            }
        }
        if declared_size.is_some_and(|n| n > self.shared.config.limits.max_message_bytes) {
            return self.reply(replies::too_big());
        }
        if !self.sender_allowed(from.as_ref()) {
            let user = self
                .greeting
                .auth
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default();
            let sender = from.as_ref().map(ToString::to_string).unwrap_or_default();
            warn!(
                "session {} peer={} user={user:?} may not send as <{sender}>",
                self.id, self.peer
            );
            return self.client_error(replies::sender_not_owned(&sender, &user));
        }
        // Every MAIL that gets this far has its own id (audit records of
        // refused transactions must not share one with the next).
        self.tx_seq += 1;
        let id = format!("{}.{}", self.id, self.tx_seq);
        let mut tx = Transaction::new(id);
        tx.disposition = self.greeting.disposition;
        self.ctx.reset_transaction();
        self.ctx.queue_id = Some(tx.id.clone());
        self.ctx.mail_from = Some(from);
        self.ctx.mail_params = params;
        self.ctx.declared_size = declared_size;
        if let Some(flow) = self.mail_limits(&tx).await {
            return flow;
        }
        match self.stage_verdict(Stage::Mail, None).await.outcome() {
            Outcome::Refuse(r) => {
                let by = self.ctx.decided_by.clone();
                self.audit_transaction(&tx, TxEnd::refused(Stage::Mail, &r, by));
                self.ctx.reset_transaction();
                return self.reply(r);
            }
            Outcome::Close(r) => {
                let by = self.ctx.decided_by.clone();
                self.audit_transaction(&tx, TxEnd::disconnected(Stage::Mail, &r, by));
                self.ctx.reset_transaction();
                self.reply(r);
                return Flow::Stop;
            }
            Outcome::Discard => {
                tx.disposition = Disposition::Discard;
                tx.decided_by.clone_from(&self.ctx.decided_by);
            }
            Outcome::Quarantine => {
                tx.disposition = Disposition::Quarantine;
                tx.decided_by.clone_from(&self.ctx.decided_by);
                tx.held_at = Some(Stage::Mail);
            }
            Outcome::Proceed => {}
        }
        if self.shared.config.upstream.is_none() || tx.disposition != Disposition::Relay {
            self.tx = Some(tx);
            return self.reply(replies::sender_ok());
        }
        match self.upstream_mail(&tx).await {
            Ok(reply) => {
                let reply = self.upstream_reply(reply);
                if reply.is_positive() {
                    self.tx = Some(tx);
                } else {
                    debug!("session {} upstream refused MAIL: {reply}", self.id);
                    let end = TxEnd::refused(Stage::Mail, &reply, Some(BY_UPSTREAM.into()));
                    self.audit_transaction(&tx, end);
                    self.ctx.reset_transaction();
                }
                self.reply(reply)
            }
            Err(e) => {
                // The pool logs the upstream's outage once, with a count;
                // a line per refused session would bury it.
                debug!("session {} upstream unavailable for MAIL: {e}", self.id);
                let reply = link::failure_reply(&e);
                let end = TxEnd::refused(Stage::Mail, &reply, Some(BY_GATEWAY.into()));
                self.audit_transaction(&tx, end);
                self.ctx.reset_transaction();
                self.reply(reply)
            }
        }
    }

    /// Sends MAIL upstream, taking a connection first when the session has
    /// none: an idle one from the pool, or a new one. A reused connection
    /// (kept from this session's last transaction, or from the pool) that
    /// turns out dead — closed, reset, timed out, or saying `421` — is
    /// replaced by a new one before the client sees anything — except the
    /// connection that logged in as the client's user (AUTH passthrough):
    /// once it is gone, MAIL fails with `451` rather than going out on a
    /// connection that is not logged in.
    async fn upstream_mail(&mut self, tx: &Transaction) -> Result<Reply, UpstreamError> {
        let Some(cfg) = self.shared.config.upstream.clone() else {
            return Err(UpstreamError::Closed);
        };
        let shared = self.shared.clone();
        let Some(pool) = shared.upstreams() else {
            return Err(UpstreamError::Closed);
        };
        let helo = cfg.helo.as_deref().unwrap_or(&shared.config.hostname);
        let timeouts = &shared.config.timeouts;
        // The server may have closed our kept connection while the client
        // was idle: no need to send it anything to find out.
        if self.upstream.get().is_some_and(|up| !up.looks_alive()) {
            debug!("session {} kept upstream was closed; reconnecting", self.id);
            pool.stale();
            self.upstream.drop_connection();
        }
        let mut fresh_only = false;
        loop {
            if self.upstream.is_lost() {
                warn!(
                    "session {} peer={} the upstream connection logged in for this client \
                     is gone; MAIL refused, no other connection is opened for it",
                    self.id, self.peer
                );
                return Err(UpstreamError::Closed);
            }
            let reused = if self.upstream.is_connected() {
                true
            } else {
                let (up, pooled) = if fresh_only {
                    (pool.connect(helo, timeouts).await?, false)
                } else {
                    pool.checkout(helo, timeouts).await?
                };
                self.upstream = Link::Clean(up);
                pooled
            };
            let dirty = self.upstream.needs_rset();
            let client = self.client_info(tx);
            let our_helo = cfg.helo_name(&self.shared.config.hostname).to_string();
            let Some(up) = self.upstream.get() else {
                return Err(UpstreamError::Closed);
            };
            let started = Instant::now();
            let result = send_mail(up, &self.ctx, dirty, &cfg, &client, &our_helo).await;
            if reused && !fresh_only && reused_connection_died(&result) {
                debug!(
                    "session {} reused upstream connection is dead; reconnecting",
                    self.id
                );
                pool.stale();
                self.upstream.drop_connection();
                fresh_only = true;
                continue;
            }
            return match result {
                Ok(reply) => {
                    shared.metrics().upstream_latency("mail", started.elapsed());
                    self.upstream.settled();
                    Ok(reply)
                }
                Err(UpstreamError::ClientRefused(reply)) => {
                    // The upstream's rules turned the real client away:
                    // that answer is the client's, and the connection now
                    // stands for a refused client.
                    debug!("session {} upstream refused XCLIENT: {reply}", self.id);
                    self.upstream.drop_connection();
                    Ok(reply)
                }
                Err(e) => {
                    shared.metrics().upstream_error_kind(e.kind());
                    self.upstream.drop_connection();
                    Err(e)
                }
            };
        }
    }
}

impl<S: Stream> Session<S> {
    /// Who the real client of `tx` is, for XFORWARD/XCLIENT.
    fn client_info(&self, tx: &Transaction) -> ClientInfo {
        ClientInfo {
            addr: self.peer,
            helo: self.greeting.helo.clone(),
            esmtp: self.greeting.esmtp,
            login: self.greeting.auth.as_ref().map(|u| u.name.clone()),
            ident: tx.id.clone(),
            session: self.id.clone(),
        }
    }
}

/// RSET (when the upstream holds an abandoned transaction), the real
/// client (XCLIENT first, on its own; or XFORWARD, pipelined), and MAIL —
/// in one batch when the upstream allows pipelining.
async fn send_mail(
    up: &mut Upstream,
    envelope: &Context,
    mut dirty: bool,
    cfg: &crate::config::Upstream,
    client: &ClientInfo,
    our_helo: &str,
) -> Result<Reply, UpstreamError> {
    if up.xclient_due(cfg.forward_client, client) {
        // XCLIENT is refused inside a transaction, and restarts the session.
        if dirty {
            up.command("RSET", "RSET reply").await?;
            dirty = false;
        }
        up.xclient(client, our_helo).await?;
    }
    // DSN was promised at EHLO; a server reached since (failover) that
    // lacks it gets no MAIL: the client hears 4xx and retries, rather than
    // its DSN request being dropped without a word.
    if !up.extensions.dsn && envelope.mail_params.iter().any(|p| is_dsn(&p.keyword)) {
        return Ok(replies::extension_unavailable("DSN"));
    }
    if !up.extensions.smtputf8 && transaction::smtputf8(&envelope.mail_params) {
        return Ok(replies::extension_unavailable("SMTPUTF8"));
    }
    let xforward = up.xforward_due(cfg.forward_client, client);
    // After XCLIENT the extensions are those of the new EHLO.
    let line = mail_line(envelope, &up.extensions);
    if cfg.pipelining && up.extensions.pipelining && (dirty || !xforward.is_empty()) {
        if dirty {
            up.queue("RSET");
        }
        for x in &xforward {
            up.queue(x);
        }
        up.queue(&line);
        up.flush().await?;
        if dirty {
            up.reply("RSET reply").await?;
        }
        for _ in &xforward {
            let reply = up.reply("XFORWARD reply").await?;
            xforward_answered(up, &reply);
        }
        return up.reply("MAIL reply").await;
    }
    if dirty {
        up.command("RSET", "RSET reply").await?;
    }
    for x in &xforward {
        let reply = up.command(x, "XFORWARD reply").await?;
        xforward_answered(up, &reply);
    }
    up.command(&line, "MAIL reply").await
}

/// Logs a refused XFORWARD: the server then logs the gateway as the
/// client, which is no reason to hold the mail back.
fn xforward_answered(up: &Upstream, reply: &Reply) {
    if !reply.is_positive() {
        warn!(
            "upstream {} refused XFORWARD ({reply}); it logs the gateway as the client",
            up.peer
        );
    }
}

/// The MAIL command for the upstream, with only the parameters it offers.
pub(super) fn mail_line(envelope: &Context, ext: &Extensions) -> String {
    let mut line = format!("MAIL FROM:<{}>", transaction::sender(envelope));
    if let (Some(size), Some(_)) = (envelope.declared_size, ext.size) {
        line.push_str(&format!(" SIZE={size}"));
    }
    if transaction::eightbit(&envelope.mail_params) && ext.eightbitmime {
        line.push_str(" BODY=8BITMIME");
    }
    if transaction::smtputf8(&envelope.mail_params) && ext.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        for p in envelope.mail_params.iter().filter(|p| is_dsn(&p.keyword)) {
            line.push_str(&format!(" {p}"));
        }
    }
    line
}

/// The DSN parameters of MAIL (RFC 3461 §4.3, §4.4).
fn is_dsn(keyword: &str) -> bool {
    keyword == "RET" || keyword == "ENVID"
}
