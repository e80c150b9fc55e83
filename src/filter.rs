//! The filter chain: what decides, at each stage of a session, whether mail
//! goes on.
//!
//! A [`Filter`] has one method per stage, each defaulting to
//! [`Verdict::Continue`] (in the spirit of pingora's phases). Filters are
//! synchronous functions over an in-memory [`Context`]; anything slow happens
//! outside them. The YAML rule set is one implementation; a library user can
//! add their own and run the gateway with it.

use crate::body::Body;
use crate::proto::{EnhancedCode, Mailbox, Param, Recipient, Reply};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The stages of a session at which filters are asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// A client connected, before the greeting.
    Connect,
    /// After HELO/EHLO.
    Helo,
    /// After a successful AUTH.
    Auth,
    /// After MAIL FROM passed the gateway's own checks, before the upstream sees it.
    Mail,
    /// For each RCPT TO, before the upstream sees it; the verdict applies to that recipient only.
    Rcpt,
    /// After the final dot, before anything is forwarded.
    Data,
}

impl Stage {
    /// Every stage, in session order.
    pub const ALL: [Stage; 6] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Auth,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
    ];

    /// The stage's name as written in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a filter decides at one stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No decision: ask the next filter.
    Continue,
    /// Stop asking filters at this stage; the mail goes on.
    Accept,
    /// Stop asking filters for the rest of this transaction.
    AcceptTransaction,
    /// Refuse permanently with this 5xx reply.
    Reject(Reply),
    /// Refuse for now with this 4xx reply.
    Tempfail(Reply),
    /// Say this 421 reply and close the connection.
    Disconnect(Reply),
    /// Answer 250 but forward nothing (always audited).
    Discard,
    /// Answer 250 and store the message in the quarantine directory instead of forwarding it.
    Quarantine,
}

impl Verdict {
    /// True for verdicts that end the stage.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Verdict::Continue)
    }

    /// The default reply for `reject` rules.
    pub fn default_reject() -> Reply {
        Reply::new(550, EnhancedCode::new(5, 7, 1), "Rejected by policy")
    }

    /// The default reply for `tempfail` rules.
    pub fn default_tempfail() -> Reply {
        Reply::new(
            451,
            EnhancedCode::new(4, 7, 1),
            "Temporarily rejected by policy, try again later",
        )
    }

    /// The default reply for `disconnect` rules.
    pub fn default_disconnect() -> Reply {
        Reply::new(
            421,
            EnhancedCode::new(4, 7, 0),
            "Closing connection by policy",
        )
    }

    /// The reply for a filter that could not be evaluated: fail closed, but
    /// temporarily, so no mail is lost.
    pub fn filter_failed() -> Reply {
        Reply::new(
            451,
            EnhancedCode::new(4, 3, 0),
            "Local error in processing, try again later",
        )
    }
}

/// TLS facts about a session, when it runs under TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. "TLSv1.3".
    pub version: String,
    /// Cipher suite name.
    pub cipher: String,
}

/// One rule (or filter) that matched, for logs and the audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// Rule or filter name.
    pub rule: String,
    /// Stage it matched at.
    pub stage: Stage,
    /// What it did: "reject", "score", "warn", ...
    pub action: String,
    /// Score it added (0 for non-score actions).
    pub score: f64,
}

/// Everything a filter may look at, and what filters accumulate over a
/// transaction (score, headers to add, hits).
#[derive(Clone, Debug)]
pub struct Context {
    /// The client's address (after PROXY protocol, the real client).
    pub client: SocketAddr,
    /// The HELO/EHLO name, once given.
    pub helo: Option<String>,
    /// TLS facts, when the session is under TLS.
    pub tls: Option<TlsInfo>,
    /// The authenticated user, after a successful AUTH.
    pub auth_user: Option<String>,
    /// The reverse path of the transaction: `None` before MAIL, `Some(None)` for `<>`.
    pub mail_from: Option<Option<Mailbox>>,
    /// MAIL parameters.
    pub mail_params: Vec<Param>,
    /// Size declared with SIZE=, if any.
    pub declared_size: Option<u64>,
    /// Recipients accepted so far in this transaction.
    pub rcpts: Vec<Recipient>,
    /// Score accumulated over the transaction.
    pub score: f64,
    /// Headers to prepend to the message (name, value), in order.
    pub add_headers: Vec<(String, String)>,
    /// Rules that matched in this transaction (and at connect/helo/auth for the session).
    pub hits: Vec<Hit>,
    /// Set by `accept_transaction`: no more filtering in this transaction.
    pub accepted_transaction: bool,
}

impl Context {
    /// A fresh context for a client at `client`.
    pub fn new(client: SocketAddr) -> Self {
        Context {
            client,
            helo: None,
            tls: None,
            auth_user: None,
            mail_from: None,
            mail_params: Vec::new(),
            declared_size: None,
            rcpts: Vec::new(),
            score: 0.0,
            add_headers: Vec::new(),
            hits: Vec::new(),
            accepted_transaction: false,
        }
    }

    /// Clears the transaction part (after the end of DATA, RSET or EHLO);
    /// session facts (client, HELO, TLS, auth) stay.
    pub fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.mail_params.clear();
        self.declared_size = None;
        self.rcpts.clear();
        self.score = 0.0;
        self.add_headers.clear();
        self.hits
            .retain(|h| matches!(h.stage, Stage::Connect | Stage::Helo | Stage::Auth));
        self.accepted_transaction = false;
    }
}

/// The received message, for data-stage filters.
pub struct Message<'a> {
    /// The message bytes (dot-unstuffed, CRLF); may live in a temporary file.
    pub body: &'a mut Body,
}

/// A filter: one method per stage, each defaulting to "continue".
pub trait Filter: Send + Sync {
    /// A short name for logs and audit records.
    fn name(&self) -> &str;

    /// A client connected.
    fn connect(&self, _ctx: &mut Context) -> Verdict {
        Verdict::Continue
    }

    /// The client said HELO/EHLO (`ctx.helo` is set).
    fn helo(&self, _ctx: &mut Context) -> Verdict {
        Verdict::Continue
    }

    /// The client authenticated (`ctx.auth_user` is set).
    fn auth(&self, _ctx: &mut Context) -> Verdict {
        Verdict::Continue
    }

    /// MAIL FROM (`ctx.mail_from` is set).
    fn mail(&self, _ctx: &mut Context) -> Verdict {
        Verdict::Continue
    }

    /// One RCPT TO; the verdict applies to this recipient only.
    fn rcpt(&self, _ctx: &mut Context, _rcpt: &Recipient) -> Verdict {
        Verdict::Continue
    }

    /// The whole message, before it is forwarded.
    fn data(&self, _ctx: &mut Context, _message: &mut Message<'_>) -> Verdict {
        Verdict::Continue
    }
}

/// An ordered list of filters, asked in turn at each stage.
#[derive(Clone, Default)]
pub struct FilterChain {
    /// The filters, in order.
    filters: Vec<Arc<dyn Filter>>,
}

impl FilterChain {
    /// An empty chain: every stage continues.
    pub fn new() -> Self {
        FilterChain::default()
    }

    /// Adds a filter at the end of the chain.
    pub fn push(&mut self, filter: Arc<dyn Filter>) {
        self.filters.push(filter);
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// True when there are no filters.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Asks every filter at `stage` until one gives a terminal verdict.
    /// `Accept` ends the stage as `Continue` for the caller.
    pub fn run(
        &self,
        stage: Stage,
        ctx: &mut Context,
        rcpt: Option<&Recipient>,
        message: Option<&mut Message<'_>>,
    ) -> Verdict {
        if ctx.accepted_transaction && matches!(stage, Stage::Mail | Stage::Rcpt | Stage::Data) {
            return Verdict::Continue;
        }
        let mut message = message;
        for filter in &self.filters {
            let verdict = match stage {
                Stage::Connect => filter.connect(ctx),
                Stage::Helo => filter.helo(ctx),
                Stage::Auth => filter.auth(ctx),
                Stage::Mail => filter.mail(ctx),
                Stage::Rcpt => match rcpt {
                    Some(r) => filter.rcpt(ctx, r),
                    None => Verdict::Continue,
                },
                Stage::Data => match message.as_deref_mut() {
                    Some(m) => filter.data(ctx, m),
                    None => Verdict::Continue,
                },
            };
            match verdict {
                Verdict::Continue => {}
                Verdict::Accept => return Verdict::Continue,
                Verdict::AcceptTransaction => {
                    ctx.accepted_transaction = true;
                    return Verdict::Continue;
                }
                terminal => return terminal,
            }
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Stage, Verdict);

    impl Filter for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn mail(&self, _ctx: &mut Context) -> Verdict {
            if self.1 == Stage::Mail {
                self.2.clone()
            } else {
                Verdict::Continue
            }
        }
        fn rcpt(&self, _ctx: &mut Context, _rcpt: &Recipient) -> Verdict {
            if self.1 == Stage::Rcpt {
                self.2.clone()
            } else {
                Verdict::Continue
            }
        }
    }

    fn ctx() -> Context {
        Context::new("192.0.2.1:1234".parse().unwrap())
    }

    #[test]
    fn first_terminal_verdict_wins() {
        let mut chain = FilterChain::new();
        chain.push(Arc::new(Fixed("a", Stage::Mail, Verdict::Continue)));
        chain.push(Arc::new(Fixed("b", Stage::Mail, Verdict::Discard)));
        chain.push(Arc::new(Fixed(
            "c",
            Stage::Mail,
            Verdict::Reject(Verdict::default_reject()),
        )));
        assert_eq!(
            chain.run(Stage::Mail, &mut ctx(), None, None),
            Verdict::Discard
        );
    }

    #[test]
    fn accept_ends_the_stage_and_accept_transaction_the_transaction() {
        let mut chain = FilterChain::new();
        chain.push(Arc::new(Fixed("a", Stage::Mail, Verdict::Accept)));
        chain.push(Arc::new(Fixed(
            "b",
            Stage::Mail,
            Verdict::Reject(Verdict::default_reject()),
        )));
        assert_eq!(
            chain.run(Stage::Mail, &mut ctx(), None, None),
            Verdict::Continue
        );

        let mut chain = FilterChain::new();
        chain.push(Arc::new(Fixed(
            "a",
            Stage::Mail,
            Verdict::AcceptTransaction,
        )));
        chain.push(Arc::new(Fixed(
            "b",
            Stage::Rcpt,
            Verdict::Reject(Verdict::default_reject()),
        )));
        let mut c = ctx();
        assert_eq!(
            chain.run(Stage::Mail, &mut c, None, None),
            Verdict::Continue
        );
        let rcpt = Recipient::Postmaster;
        assert_eq!(
            chain.run(Stage::Rcpt, &mut c, Some(&rcpt), None),
            Verdict::Continue
        );
        c.reset_transaction();
        assert!(matches!(
            chain.run(Stage::Rcpt, &mut c, Some(&rcpt), None),
            Verdict::Reject(_)
        ));
    }
}
