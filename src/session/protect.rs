//! Per-client protection, the session's side: the checks before the
//! greeting (connections per IP, connection rate, pre-greeting talkers),
//! at MAIL (messages per session, message rates), at RCPT (recipient
//! rates) and at AUTH (login rate per user), the error tarpit, and the
//! per-line deadline.
//!
//! The counting lives in [`crate::protection`]; this file turns its answers
//! into replies, log lines and audit records. Every refusal names what
//! refused in the audit trail's `decided_by` (or a recipient's `by`):
//! `protection:<key>` for the per-client limits, `rate_limits:<scope>.<key>`
//! for the rates, `rate_limits:store_unavailable` when Redis is down and
//! the limiter fails closed.

use super::audit::TxEnd;
use super::transaction::Transaction;
use super::{replies, Flow, Session};
use crate::filter::Stage;
use crate::gateway::Gateway;
use crate::protection::{client_key, ConnectionSlot, Decision, Kind};
use crate::proto::Recipient;
use crate::stream::Stream;
use async_std::io::timeout;
use log::{info, warn};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Who refused, for the audit trail, when the rate store fails closed.
const BY_STORE_DOWN: &str = "rate_limits:store_unavailable";

/// The session's protection state.
#[derive(Default)]
pub(super) struct State {
    /// The client is in an exempt network: no per-client protection.
    exempt: bool,
    /// This connection's place in its IP's count, held for the session's life.
    slot: Option<ConnectionSlot>,
    /// MAIL commands counted so far.
    mails: u32,
    /// Tarpit delay owed before the next replies are written.
    owed: Duration,
    /// Tarpit delay so far in this session (audit).
    pub(super) delayed: Duration,
    /// When the command line being waited for must be complete.
    line_deadline: Option<Instant>,
}

/// Counts one event of `kind` against the client key `ip` (`None`:
/// exempt) and `user`. `None`: allowed; `Some(Ok(limit))`: over that
/// limit; `Some(Err(()))`: the store is down and the limiter fails closed.
/// (A free function: the session must not be borrowed whole across the
/// store's await.)
async fn rate_check(
    shared: &Gateway,
    kind: Kind,
    ip: Option<IpAddr>,
    user: Option<String>,
) -> Option<Result<&'static str, ()>> {
    let rates = &shared.protection().rates;
    if !rates.applies(kind, ip, user.as_deref()) {
        return None;
    }
    match rates.check(kind, ip, user.as_deref()).await {
        Decision::Allow => None,
        Decision::Over(limit) => Some(Ok(limit)),
        Decision::Unavailable => Some(Err(())),
    }
}

/// The name of a rate limit as `decided_by`.
fn rate_by(limit: &str) -> String {
    format!("rate_limits:{limit}")
}

impl<S: Stream> Session<S> {
    /// The client key for per-IP limits; `None` for an exempt client.
    fn limited_ip(&self) -> Option<IpAddr> {
        (!self.protect.exempt).then(|| client_key(self.peer.ip()))
    }

    /// The logged-in user, for per-user limits.
    fn limited_user(&self) -> Option<String> {
        self.greeting.auth.as_ref().map(|u| u.name.clone())
    }

    /// The checks before anything is said to the client: connections open
    /// from its IP, then its connection rate. Returns why the session ends
    /// when it is refused (the reply is queued, except on an implicit-TLS
    /// listener, where the client expects a handshake and is just closed).
    /// Must run once the real client address is known.
    pub(super) async fn admit(&mut self) -> Option<&'static str> {
        let ip = self.peer.ip();
        let protection = self.shared.protection();
        self.protect.exempt = protection.is_exempt(ip);
        if self.protect.exempt {
            return None;
        }
        let host = self.shared.config.hostname.clone();
        let (reply, by, end) = match protection.open_connection(ip) {
            None => (
                replies::too_many_connections_from(&host, ip),
                "protection:max_connections_per_ip".to_string(),
                "too many connections from this IP",
            ),
            Some(slot) => {
                self.protect.slot = Some(slot);
                match protection
                    .rates
                    .check(Kind::Connection, self.limited_ip(), None)
                    .await
                {
                    Decision::Allow => return None,
                    Decision::Over(limit) => (
                        replies::connection_rate_exceeded(&host),
                        rate_by(limit),
                        "connection rate limit",
                    ),
                    Decision::Unavailable => (
                        replies::rate_store_unavailable_closing(&host),
                        BY_STORE_DOWN.to_string(),
                        "rate limit store unavailable",
                    ),
                }
            }
        };
        warn!(
            "session {} peer={} refused: {end} ({by})",
            self.id, self.peer
        );
        if !self.listener.implicit_tls {
            self.conn.push(&reply);
        }
        self.refusal = Some((reply, by));
        Some(end)
    }

    /// The pregreet test: waits `greeting_delay_ms` before the greeting,
    /// reading; a client that sends anything in that time is a bot that
    /// does not wait for the banner (`554 5.5.0`, closed). Returns why the
    /// session ends, if it does.
    pub(super) async fn pregreet(&mut self) -> Option<&'static str> {
        let delay = self.shared.config.protection.greeting_delay_ms;
        if delay == 0 || self.protect.exempt {
            return None;
        }
        let read = timeout(Duration::from_millis(delay), self.conn.fill(false)).await;
        match read {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => None,
            Ok(0) => Some("client closed"),
            Err(_) => Some("read failed"),
            Ok(n) => {
                let reply = replies::talked_before_greeting(&self.shared.config.hostname);
                warn!(
                    "session {} peer={} refused: talked before greeting ({n} bytes within {delay} ms)",
                    self.id, self.peer
                );
                self.conn.push(&reply);
                self.refusal = Some((reply, "protection:greeting_delay_ms".to_string()));
                Some("talked before greeting")
            }
        }
    }

    /// The checks at MAIL, once `tx` has its id: messages per session, then
    /// the message rates. On a refusal the transaction is audited and
    /// answered here, and the flow to return is given.
    pub(super) async fn mail_limits(&mut self, tx: &Transaction) -> Option<Flow> {
        let max = self.shared.config.protection.max_messages_per_session;
        if !self.protect.exempt && max > 0 {
            self.protect.mails += 1;
            if self.protect.mails > max {
                let reply = replies::too_many_messages_in_session(&self.shared.config.hostname);
                let by = "protection:max_messages_per_session".to_string();
                warn!(
                    "session {} peer={} refused MAIL: more than {max} messages in one session",
                    self.id, self.peer
                );
                self.audit_transaction(tx, TxEnd::disconnected(Stage::Mail, &reply, Some(by)));
                self.ctx.reset_transaction();
                self.reply(reply);
                return Some(Flow::Stop);
            }
        }
        let (ip, user) = (self.limited_ip(), self.limited_user());
        let (reply, by) = match rate_check(&self.shared, Kind::Message, ip, user).await? {
            Ok(limit) => (replies::message_rate_exceeded(), rate_by(limit)),
            Err(()) => (replies::rate_store_unavailable(), BY_STORE_DOWN.to_string()),
        };
        info!(
            "session {} peer={} user={} refused MAIL: {by}",
            self.id,
            self.peer,
            self.limited_user().as_deref().unwrap_or("-")
        );
        self.audit_transaction(tx, TxEnd::refused(Stage::Mail, &reply, Some(by)));
        self.ctx.reset_transaction();
        Some(self.reply(reply))
    }

    /// The recipient rates at RCPT. On a refusal the recipient is recorded
    /// and answered here.
    pub(super) async fn rcpt_limits(&mut self, to: &Recipient) -> Option<Flow> {
        let (ip, user) = (self.limited_ip(), self.limited_user());
        let (reply, by) = match rate_check(&self.shared, Kind::Recipient, ip, user).await? {
            Ok(limit) => (replies::recipient_rate_exceeded(), rate_by(limit)),
            Err(()) => (replies::rate_store_unavailable(), BY_STORE_DOWN.to_string()),
        };
        info!(
            "session {} peer={} user={} refused RCPT <{to}>: {by}",
            self.id,
            self.peer,
            self.limited_user().as_deref().unwrap_or("-")
        );
        self.record_rcpt(to.clone(), &reply, &by);
        Some(self.reply(reply))
    }

    /// The login rate of `user` after a successful AUTH; over it the
    /// session ends with `421 4.7.0` (before the 235).
    pub(super) async fn login_limits(&mut self, user: &str) -> Option<Flow> {
        let rates = &self.shared.protection().rates;
        if !rates.applies(Kind::Connection, None, Some(user)) {
            return None;
        }
        let host = self.shared.config.hostname.clone();
        let (reply, by) = match rates.check(Kind::Connection, None, Some(user)).await {
            Decision::Allow => return None,
            Decision::Over(limit) => (replies::connection_rate_exceeded(&host), rate_by(limit)),
            Decision::Unavailable => (
                replies::rate_store_unavailable_closing(&host),
                BY_STORE_DOWN.to_string(),
            ),
        };
        warn!(
            "session {} peer={} user={user:?} refused after AUTH: {by}",
            self.id, self.peer
        );
        self.reply(reply.clone());
        self.refusal = Some((reply, by));
        Some(Flow::Stop)
    }

    /// Called for each error counted in `errors`: past `soft_error_limit`,
    /// the next write of replies waits `error_delay_ms` more.
    pub(super) fn owe_error_delay(&mut self) {
        let p = &self.shared.config.protection;
        if self.protect.exempt || p.error_delay_ms == 0 || self.errors <= p.soft_error_limit {
            return;
        }
        self.protect.owed += Duration::from_millis(p.error_delay_ms);
    }

    /// The tarpit: waits what errors made owed, before replies are written.
    pub(super) async fn pay_error_delay(&mut self) {
        let owed = std::mem::take(&mut self.protect.owed);
        if owed.is_zero() {
            return;
        }
        self.protect.delayed += owed;
        info!(
            "session {} peer={} tarpit: {} ms before replying ({} errors)",
            self.id,
            self.peer,
            owed.as_millis(),
            self.errors
        );
        async_std::task::sleep(owed).await;
    }

    /// A whole command line arrived: the next one gets its own deadline.
    pub(super) fn line_done(&mut self) {
        self.protect.line_deadline = None;
    }

    /// How long to wait for the rest of a command line. With
    /// `per_line_deadline`, the whole line must arrive within
    /// `timeouts.command_s` of when we started waiting for it; otherwise
    /// each read may take that long.
    pub(super) fn command_wait(&mut self) -> Duration {
        let limit = self.shared.config.timeouts.command();
        if !self.shared.config.protection.per_line_deadline {
            return limit;
        }
        let now = Instant::now();
        match self.protect.line_deadline {
            // Part of a line is buffered: the deadline set when we started
            // waiting for it stands.
            Some(deadline) if !self.conn.input().is_empty() => {
                deadline.saturating_duration_since(now)
            }
            _ => {
                self.protect.line_deadline = Some(now + limit);
                limit
            }
        }
    }
}

/// The per-line deadline of DATA: each line of message text must arrive
/// within `data_block_s` (see [`crate::config::Protection::per_line_deadline`]).
pub(super) struct DataDeadline {
    /// The time allowed for a line (also the per-read limit without it).
    block: Duration,
    /// When the current line must be complete, with the deadline on.
    deadline: Option<Instant>,
}

impl DataDeadline {
    /// A deadline for `block` per line (`per_line` on) or per read.
    pub(super) fn new(block: Duration, per_line: bool) -> DataDeadline {
        DataDeadline {
            block,
            deadline: per_line.then(|| Instant::now() + block),
        }
    }

    /// How long the next read may take.
    pub(super) fn wait(&self) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.block,
        }
    }

    /// Notes bytes read: a line end starts the next line's time.
    pub(super) fn read(&mut self, bytes: &[u8]) {
        if self.deadline.is_some() && bytes.contains(&b'\n') {
            self.deadline = Some(Instant::now() + self.block);
        }
    }
}
