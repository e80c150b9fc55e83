//! AUTH (RFC 4954) with PLAIN and LOGIN, and what a logged-in user may do.
//!
//! AUTH is offered only under TLS (unless the listener allows plaintext
//! AUTH), once per session, outside a transaction. Passwords are checked
//! off the async threads; every failure is logged with the client's IP —
//! never the password — in one fixed format for fail2ban:
//! `auth failed: client=192.0.2.7 user="alice" mechanism=PLAIN session=...`.
//! After `auth.max_failures` failures the session ends with `421 4.7.0`.

use super::link::Link;
use super::{replies, Flow, Session, SessionVerdict};
use crate::auth::dovecot::Peer;
use crate::auth::{
    Credentials, Exchange, Mechanism, MechanismError, Outcome, SaslError, Step, UpstreamLogin,
};
use crate::config::{AuthMode, StartTls};
use crate::filter::Stage;
use crate::proto::{LineReader, Mailbox};
use crate::stream::Stream;
use crate::upstream::Upstream;
use log::{info, warn};

/// Longest SASL response line accepted, CRLF included: RFC 4954 §4 asks
/// servers to take at least 12288 octets, more than a command line.
const SASL_LINE_MAX: usize = 12288;

impl<S: Stream> Session<S> {
    /// True when AUTH is offered to this session now (advertised in EHLO).
    pub(super) fn auth_offered(&self) -> bool {
        self.listener.auth != AuthMode::None
            && self.shared.auth_backends().is_some()
            && self.greeting.auth.is_none()
            && (self.is_tls() || self.listener.plaintext_auth)
    }

    /// The EHLO `AUTH` line: the mechanisms the backends take, `None`
    /// when none. A Dovecot not reached yet is asked in the background,
    /// for the next EHLO: this one does not wait.
    pub(super) fn auth_keyword(&self) -> Option<String> {
        let backends = self.shared.auth_backends()?;
        if backends.mechanisms_unknown() {
            let shared = self.shared.clone();
            async_std::task::spawn(async move {
                if let Some(b) = shared.auth_backends() {
                    b.learn_mechanisms().await;
                }
            });
        }
        let names: Vec<&str> = backends.mechanisms().iter().map(|m| m.name()).collect();
        (!names.is_empty()).then(|| format!("AUTH {}", names.join(" ")))
    }

    /// Answers AUTH: checks that it may happen now, then starts the exchange.
    pub(super) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Flow {
        if self.listener.auth == AuthMode::None || self.shared.auth_backends().is_none() {
            return self.client_error(replies::not_offered("AUTH"));
        }
        if self.greeting.helo.is_none() || !self.greeting.esmtp {
            return self.client_error(replies::bad_sequence("Error: send EHLO first"));
        }
        if self.greeting.auth.is_some() {
            return self.client_error(replies::bad_sequence("Error: already authenticated"));
        }
        if self.tx.is_some() {
            return self.client_error(replies::bad_sequence("Error: MAIL transaction in progress"));
        }
        if !self.is_tls() && !self.listener.plaintext_auth {
            return self.client_error(if self.listener.starttls == StartTls::Required {
                replies::must_starttls()
            } else {
                replies::encryption_required()
            });
        }
        let mechanism = match Mechanism::parse(&mechanism) {
            Ok(m) => m,
            Err(MechanismError::Unknown) => return self.client_error(replies::unknown_mechanism()),
            Err(MechanismError::TooWeak) => return self.client_error(replies::weak_mechanism()),
        };
        // Only what EHLO advertised: no backend takes the others.
        let offered = self.shared.auth_backends().map(|b| b.mechanisms());
        if !offered.is_some_and(|o| o.contains(&mechanism)) {
            return self.client_error(replies::unknown_mechanism());
        }
        let (exchange, step) = Exchange::start(mechanism, initial.as_deref());
        self.sasl_step(exchange, step).await
    }

    /// One response line of an AUTH exchange in progress.
    pub(super) async fn auth_response(&mut self, line: &[u8]) -> Flow {
        let Some(mut exchange) = self.greeting.sasl.take() else {
            return Flow::Continue;
        };
        let step = match std::str::from_utf8(line) {
            Ok(text) => exchange.next(text),
            Err(_) => Step::Failed(SaslError::BadBase64),
        };
        self.sasl_step(exchange, step).await
    }

    /// Acts on the next step of an exchange.
    async fn sasl_step(&mut self, exchange: Exchange, step: Step) -> Flow {
        if let Step::Challenge(text) = step {
            self.conn.push_raw(format!("334 {text}\r\n").as_bytes());
            self.greeting.sasl = Some(exchange);
            // The response is read with the longer SASL limit.
            self.lines = LineReader::new(SASL_LINE_MAX.max(self.command_line_max()));
            return Flow::Continue;
        }
        // The exchange is over: back to the command line limit.
        self.lines = LineReader::new(self.command_line_max());
        match step {
            Step::Challenge(_) => Flow::Continue,
            Step::Failed(SaslError::Cancelled) => self.client_error(replies::auth_cancelled()),
            Step::Failed(SaslError::BadBase64 | SaslError::Malformed) => {
                self.client_error(replies::auth_malformed())
            }
            Step::Done(credentials) => {
                self.check_credentials(exchange.mechanism, credentials)
                    .await
            }
        }
    }

    /// Checks the credentials and answers 235 or 535.
    async fn check_credentials(&mut self, mechanism: Mechanism, creds: Credentials) -> Flow {
        let Some(backends) = self.shared.auth_backends() else {
            return self.reply(replies::auth_unavailable());
        };
        let name = creds.user.clone();
        let peer = Peer {
            remote: self.peer,
            local: self.local,
            secured: self.is_tls(),
        };
        let metrics = self.shared.metrics();
        let shared = self.shared.clone();
        let via = match (shared.upstreams(), &shared.config.upstream) {
            (Some(pool), Some(cfg)) => Some(UpstreamLogin {
                pool,
                helo: cfg.helo.as_deref().unwrap_or(&shared.config.hostname),
                timeouts: &shared.config.timeouts,
            }),
            _ => None,
        };
        // Boxed: a backend's exchange is large and rare, and every idle
        // session's future would otherwise carry its size.
        let outcome =
            Box::pin(
                backends.check(mechanism, &creds, &peer, via.as_ref(), |backend, result| {
                    metrics.auth_backend(backend, result)
                }),
            )
            .await;
        let (user, logged_in) = match outcome {
            Outcome::Accepted(user, _, up) => (Some(user), up),
            Outcome::Rejected => (None, None),
            Outcome::Unavailable(backend) => {
                // Not the client's fault: no failure is counted, and the
                // fail2ban line is not written.
                warn!(
                    "auth unavailable: client={} user={:?} mechanism={} backend={backend} session={}",
                    self.peer.ip(),
                    name,
                    mechanism.name(),
                    self.id
                );
                return self.reply(replies::auth_unavailable());
            }
        };
        // Proxy authorization (acting as someone else) is not supported:
        // an authorization identity must name the user who logged in.
        let user = user.filter(|u| {
            creds.authzid.is_empty()
                || creds.authzid == name
                || creds.authzid.eq_ignore_ascii_case(&u.name)
        });
        self.shared.metrics().auth(user.is_some());
        let Some(user) = user else {
            // Refused for the authorization identity: the login the
            // upstream accepted is not used.
            if let Some(up) = logged_in {
                Box::pin(up.quit()).await;
            }
            return self.auth_failed(&name, mechanism);
        };
        // From here on, a login that is not completed closes the upstream
        // connection it logged in on (dropping it does).
        if let Some(flow) = self.login_limits(&user.name).await {
            return flow;
        }
        self.greeting.auth = Some(user.clone());
        self.ctx.auth_user = Some(user.name.clone());
        match self.session_stage(Stage::Auth).await {
            SessionVerdict::Refuse(r) => {
                self.greeting.auth = None;
                self.ctx.auth_user = None;
                return self.reply(r);
            }
            SessionVerdict::Close(r) => {
                self.reply(r);
                return Flow::Stop;
            }
            SessionVerdict::Go => {}
        }
        if let Some(up) = logged_in {
            self.keep_logged_in_upstream(up).await;
        }
        info!(
            "session {} peer={} authenticated user={:?} mechanism={}",
            self.id,
            self.peer,
            user.name,
            mechanism.name()
        );
        self.reply(replies::auth_ok())
    }

    /// Makes the connection that logged in at the upstream as the client's
    /// user the session's own: every later transaction goes over it, and
    /// when it dies none is opened in its place (see [`Link::Lost`]). A
    /// connection the session held before (from an earlier, unauthenticated
    /// transaction) goes back to the pool.
    ///
    /// [`Link::Lost`]: super::link::Link::Lost
    async fn keep_logged_in_upstream(&mut self, up: Box<Upstream>) {
        info!(
            "session {} upstream {} session logged in as {:?}: it carries this session's mail",
            self.id,
            up.peer,
            up.logged_in_as.as_deref().unwrap_or("")
        );
        let mut before = std::mem::replace(&mut self.upstream, Link::Clean(*up));
        if let (Some((old, dirty)), Some(pool)) = (before.take(), self.shared.upstreams()) {
            // Boxed: a rare, large future kept out of every idle task.
            Box::pin(pool.release(old, dirty, !self.shared.shutdown.is_fired())).await;
        }
    }

    /// A failed login: logged for fail2ban, counted, and after too many the
    /// session ends.
    fn auth_failed(&mut self, user: &str, mechanism: Mechanism) -> Flow {
        self.auth_failures += 1;
        warn!(
            "auth failed: client={} user={:?} mechanism={} session={} failures={}",
            self.peer.ip(),
            user,
            mechanism.name(),
            self.id,
            self.auth_failures
        );
        self.reply(replies::auth_failed());
        let max = self
            .shared
            .config
            .auth
            .as_ref()
            .map_or(3, |a| a.max_failures);
        if self.auth_failures >= max {
            let host = self.shared.config.hostname.clone();
            self.reply(replies::too_many_auth_failures(&host));
            warn!(
                "auth failures: client={} closed after {} failed attempts session={}",
                self.peer.ip(),
                self.auth_failures,
                self.id
            );
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// The configured command line limit.
    fn command_line_max(&self) -> usize {
        self.shared.config.limits.max_command_line
    }

    /// Whether the logged-in user (if any) may use `from` in MAIL FROM.
    pub(super) fn sender_allowed(&self, from: Option<&Mailbox>) -> bool {
        match &self.greeting.auth {
            Some(user) => user.may_send_as(from),
            None => true,
        }
    }
}
