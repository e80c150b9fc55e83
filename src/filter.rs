//! The filter chain: what decides, at each stage of a session, whether mail
//! goes on.
//!
//! A [`Filter`] has one method per stage, each defaulting to
//! [`Verdict::Continue`] (in the spirit of pingora's phases). Filters are
//! synchronous functions over an in-memory [`Context`]; anything slow happens
//! outside them. The YAML rule set is one implementation; a library user can
//! add their own and run the gateway with it (see `examples/custom_filter.rs`).
//!
//! [`Verdict::outcome`] is the one mapping from a verdict to what the client
//! is told; live sessions and the rule simulator both use it.

use crate::facts::{CheckRun, Facts, Scope};
pub use crate::message::Message;
use crate::proto::{EnhancedCode, Mailbox, Param, Recipient, Reply};
use log::error;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// The stages of a session at which filters are asked (in rule files:
/// `stage: connect`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

    /// True for the stages of a mail transaction (mail, rcpt, data); the
    /// others belong to the session.
    pub fn in_transaction(self) -> bool {
        matches!(self, Stage::Mail | Stage::Rcpt | Stage::Data)
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

/// What a verdict means for the client and the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on: the command gets its normal answer (the gateway's or the
    /// upstream's).
    Proceed,
    /// Answer this reply instead; the session goes on.
    Refuse(Reply),
    /// Answer this reply, then close the connection.
    Close(Reply),
    /// Answer as if accepted; forward nothing.
    Discard,
    /// Answer as if accepted; store the message in the quarantine directory.
    Quarantine,
}

impl Verdict {
    /// What the session does with this verdict: the one mapping, shared by
    /// live sessions and the rule simulator.
    pub fn outcome(self) -> Outcome {
        match self {
            Verdict::Continue | Verdict::Accept | Verdict::AcceptTransaction => Outcome::Proceed,
            Verdict::Reject(r) | Verdict::Tempfail(r) => Outcome::Refuse(r),
            Verdict::Disconnect(r) => Outcome::Close(r),
            Verdict::Discard => Outcome::Discard,
            Verdict::Quarantine => Outcome::Quarantine,
        }
    }

    /// A short name for logs and audit records: `continue`, `reject`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Accept => "accept",
            Verdict::AcceptTransaction => "accept_transaction",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
            Verdict::Disconnect(_) => "disconnect",
            Verdict::Discard => "discard",
            Verdict::Quarantine => "quarantine",
        }
    }

    /// True for verdicts that end the stage.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Verdict::Continue)
    }

    /// The default reply for `reject` rules at the connect stage: 554, the
    /// code RFC 5321 §3.1 gives for refusing a connection at the greeting.
    pub fn default_reject_connect() -> Reply {
        Reply::new(
            554,
            EnhancedCode::new(5, 7, 1),
            "Connection refused by policy",
        )
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
    /// The Subject the message goes on with instead of its own (rspamd's
    /// `rewrite subject`), as text: the session encodes it.
    pub new_subject: Option<String>,
    /// Rules that matched in this transaction (and at connect/helo/auth for the session).
    pub hits: Vec<Hit>,
    /// Set by `accept_transaction`: no more filtering in this transaction.
    pub accepted_transaction: bool,
    /// Set by `accept_transaction` at a session stage (connect, helo,
    /// auth): no more filtering in this session.
    pub accepted_session: bool,
    /// Who gave the terminal verdict of the last [`FilterChain::run`]: a
    /// filter may name the rule that decided; otherwise the chain puts the
    /// filter's name. For the audit record.
    pub decided_by: Option<String>,
    /// Score gathered at the session stages; each transaction starts from it.
    pub session_score: f64,
    /// Headers asked for at the session stages; each transaction starts with them.
    pub session_headers: Vec<(String, String)>,
    /// What the checks established (`iprev = pass`), for rules to match on.
    pub facts: Facts,
    /// The checks that ran, with their outcome and duration, for the audit.
    pub checks: Vec<CheckRun>,
    /// Set by a `greylist` rule (its name) at the rcpt or data stage: when
    /// the stage otherwise goes on, the session asks the greylisting store
    /// before it does. Cleared at the start of every stage.
    pub greylist: Option<String>,
    /// The id of the current transaction (its queue id in logs, audit
    /// records and `Received:`), from MAIL on; for scanners that want it.
    pub queue_id: Option<String>,
}

/// A place where a filter reads a fact: which fact, at which stage, and
/// where that is written (for the error when no check gives it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactUse {
    /// The fact's name (`iprev`).
    pub fact: String,
    /// The stage it is read at.
    pub stage: Stage,
    /// The file that reads it (a rule file).
    pub file: String,
    /// The line there, when known.
    pub line: Option<usize>,
    /// The key path of the reading matcher (`rules[2].when.fact`).
    pub path: String,
}

/// What a session had learned when its connect stage ended: STARTTLS and
/// a new EHLO go back to it, so nothing from an earlier greeting (its
/// score, headers, hits, facts) counts twice.
#[derive(Clone, Debug)]
pub struct AfterConnect {
    /// The score of the connect stage.
    score: f64,
    /// The headers the connect stage asked for.
    headers: Vec<(String, String)>,
    /// The connect stage's hits.
    hits: Vec<Hit>,
    /// The facts about the connection.
    facts: Facts,
    /// The checks that gave them.
    checks: Vec<CheckRun>,
    /// A connect-stage `accept_transaction` covers the whole session.
    accepted_session: bool,
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
            new_subject: None,
            hits: Vec::new(),
            accepted_transaction: false,
            accepted_session: false,
            decided_by: None,
            session_score: 0.0,
            session_headers: Vec::new(),
            facts: Facts::new(),
            checks: Vec::new(),
            greylist: None,
            queue_id: None,
        }
    }

    /// What the session has learned so far, to go back to: call it when
    /// the connect stage is over.
    pub fn after_connect(&self) -> AfterConnect {
        AfterConnect {
            score: self.session_score,
            headers: self.session_headers.clone(),
            hits: self.hits.clone(),
            facts: self.facts.clone(),
            checks: self.checks.clone(),
            accepted_session: self.accepted_session,
        }
    }

    /// Goes back to the state at the end of the connect stage, before a
    /// new greeting (EHLO again, or after STARTTLS): the HELO name, the AUTH
    /// user, the transaction and everything the later stages added are gone.
    pub fn restart(&mut self, to: &AfterConnect) {
        self.helo = None;
        self.auth_user = None;
        self.session_score = to.score;
        self.session_headers.clone_from(&to.headers);
        self.hits.clone_from(&to.hits);
        self.facts.clone_from(&to.facts);
        self.checks.clone_from(&to.checks);
        self.accepted_session = to.accepted_session;
        self.reset_transaction();
    }

    /// Clears the transaction part (after the end of DATA, RSET or EHLO);
    /// session facts (client, HELO, TLS, auth) stay, and so do the score,
    /// headers and hits of the session stages.
    pub fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.mail_params.clear();
        self.declared_size = None;
        self.rcpts.clear();
        self.score = self.session_score;
        self.add_headers.clone_from(&self.session_headers);
        self.new_subject = None;
        self.decided_by = None;
        self.hits
            .retain(|h| matches!(h.stage, Stage::Connect | Stage::Helo | Stage::Auth));
        self.accepted_transaction = false;
        self.facts.forget(Scope::Transaction);
        self.checks.retain(|c| c.scope < Scope::Transaction);
        self.queue_id = None;
    }
}

/// A filter: one method per stage, each defaulting to "continue".
pub trait Filter: Send + Sync {
    /// A short name for logs and audit records.
    fn name(&self) -> &str;

    /// This filter as [`Any`](std::any::Any), for the gateway to find a
    /// filter of a type it knows (the rule set, to give its rules their
    /// counters); `None` for filters nothing needs to find.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The facts this filter reads, each with the stage it reads it at:
    /// the checks that give them run at the earliest such stage, and no
    /// check that no filter reads runs at all.
    fn facts_used(&self) -> Vec<FactUse> {
        Vec::new()
    }

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

    /// A copy of this chain with the filter named `name` replaced by
    /// `filter` (appended when there is none): how a reload swaps the rule
    /// set while keeping any other filters.
    pub fn replacing(&self, name: &str, filter: Arc<dyn Filter>) -> FilterChain {
        let mut filters = self.filters.clone();
        match filters.iter().position(|f| f.name() == name) {
            Some(i) => filters[i] = filter,
            None => filters.push(filter),
        }
        FilterChain { filters }
    }

    /// Every fact the chain's filters read, and where.
    pub fn facts_used(&self) -> Vec<FactUse> {
        self.filters.iter().flat_map(|f| f.facts_used()).collect()
    }

    /// The filter named `name`, if the chain has one.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Filter>> {
        self.filters.iter().find(|f| f.name() == name)
    }

    /// Asks every filter at `stage` until one gives a terminal verdict.
    /// `Accept` ends the stage as `Continue` for the caller. A filter that
    /// panics fails closed, temporarily: `451 4.3.0`, and the session goes on.
    pub fn run(
        &self,
        stage: Stage,
        ctx: &mut Context,
        rcpt: Option<&Recipient>,
        message: Option<&mut Message<'_>>,
    ) -> Verdict {
        ctx.decided_by = None;
        ctx.greylist = None;
        let verdict = self.ask(stage, ctx, rcpt, message);
        if !stage.in_transaction() {
            // Before any transaction: what was gathered belongs to the session.
            ctx.session_score = ctx.score;
            ctx.session_headers.clone_from(&ctx.add_headers);
        }
        verdict
    }

    /// The loop behind [`run`](Self::run).
    fn ask(
        &self,
        stage: Stage,
        ctx: &mut Context,
        rcpt: Option<&Recipient>,
        message: Option<&mut Message<'_>>,
    ) -> Verdict {
        if ctx.accepted_session || (ctx.accepted_transaction && stage.in_transaction()) {
            return Verdict::Continue;
        }
        let mut message = message;
        for filter in &self.filters {
            let asked = catch_unwind(AssertUnwindSafe(|| match stage {
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
            }));
            let verdict = match asked {
                Ok(v) => v,
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    error!(
                        "filter {} panicked at stage {stage}: {why}; failing closed (451 4.3.0)",
                        filter.name()
                    );
                    ctx.decided_by = Some(filter.name().to_string());
                    return Verdict::Tempfail(Verdict::filter_failed());
                }
            };
            match verdict {
                Verdict::Continue => {}
                Verdict::Accept => return Verdict::Continue,
                Verdict::AcceptTransaction => {
                    ctx.accepted_transaction = true;
                    if !stage.in_transaction() {
                        ctx.accepted_session = true;
                    }
                    return Verdict::Continue;
                }
                terminal => {
                    if ctx.decided_by.is_none() {
                        ctx.decided_by = Some(filter.name().to_string());
                    }
                    return terminal;
                }
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
        assert_eq!(c.decided_by.as_deref(), Some("b"));
    }

    struct Panics;

    impl Filter for Panics {
        fn name(&self) -> &str {
            "panics"
        }
        fn mail(&self, _ctx: &mut Context) -> Verdict {
            panic!("broken filter")
        }
    }

    #[test]
    fn a_panicking_filter_fails_closed_with_451() {
        let mut chain = FilterChain::new();
        chain.push(Arc::new(Panics));
        let mut c = ctx();
        let v = chain.run(Stage::Mail, &mut c, None, None);
        assert_eq!(v, Verdict::Tempfail(Verdict::filter_failed()));
        assert_eq!(v.outcome(), Outcome::Refuse(Verdict::filter_failed()));
        assert_eq!(c.decided_by.as_deref(), Some("panics"));
    }

    struct Scores(f64);

    impl Filter for Scores {
        fn name(&self) -> &str {
            "scores"
        }
        fn connect(&self, ctx: &mut Context) -> Verdict {
            ctx.score += self.0;
            ctx.add_headers.push(("X-Connect".into(), "yes".into()));
            Verdict::Continue
        }
        fn mail(&self, ctx: &mut Context) -> Verdict {
            ctx.score += self.0;
            Verdict::Continue
        }
    }

    #[test]
    fn session_stage_score_and_headers_carry_into_every_transaction() {
        let mut chain = FilterChain::new();
        chain.push(Arc::new(Scores(2.0)));
        let mut c = ctx();
        chain.run(Stage::Connect, &mut c, None, None);
        c.reset_transaction();
        chain.run(Stage::Mail, &mut c, None, None);
        assert_eq!(c.score, 4.0);
        c.reset_transaction();
        assert_eq!(c.score, 2.0);
        assert_eq!(c.add_headers.len(), 1);
    }

    #[test]
    fn accept_transaction_at_connect_covers_the_session() {
        let mut chain = FilterChain::new();
        chain.push(Arc::new(Fixed("a", Stage::Connect, Verdict::Continue)));
        struct AcceptAll;
        impl Filter for AcceptAll {
            fn name(&self) -> &str {
                "trusted"
            }
            fn connect(&self, _ctx: &mut Context) -> Verdict {
                Verdict::AcceptTransaction
            }
        }
        let mut chain2 = FilterChain::new();
        chain2.push(Arc::new(AcceptAll));
        chain2.push(Arc::new(Fixed(
            "b",
            Stage::Mail,
            Verdict::Reject(Verdict::default_reject()),
        )));
        let mut c = ctx();
        chain2.run(Stage::Connect, &mut c, None, None);
        c.reset_transaction();
        assert_eq!(
            chain2.run(Stage::Mail, &mut c, None, None),
            Verdict::Continue
        );
        c.reset_transaction();
        assert_eq!(
            chain2.run(Stage::Mail, &mut c, None, None),
            Verdict::Continue
        );
        let swapped = chain2.replacing("b", Arc::new(Fixed("b", Stage::Mail, Verdict::Discard)));
        assert_eq!(swapped.len(), 2);
        assert!(chain.get("a").is_some() && chain.get("zzz").is_none());
    }
}
