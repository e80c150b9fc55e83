//! The rule simulator behind `smtpgate test-rules`: one transaction run
//! through the filter chain offline (no sockets, no upstream), stage by
//! stage, reporting which rules matched, the score, and the reply a client
//! would get.
//!
//! It runs on the gateway a live server builds ([`Gateway::build`]): the
//! same chain and check plan, the same [`FilterChain::run`] and check
//! runner, the same verdict mapping ([`Verdict::outcome`]) and the same
//! replies as a live session; the session's own decisions that come before
//! the rules (relay control, size and recipient limits) are made by the
//! same components in the same order. Facts that would need the network can
//! be given as fixtures ([`Gateway::set_fixtures`]), so a rule that reads a
//! fact can be tried offline.

use crate::body::Body;
use crate::checks::dmarc::Enforcement;
use crate::checks::{run_stage, Fixtures, Plan};
use crate::filter::{Context, FilterChain, Hit, Message, Outcome, Stage, TlsInfo, Verdict};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::protection::greylisted_reply;
use crate::proto::{parse_command, Command, EnhancedCode, Recipient, Reply};
use crate::rules::fmt_score;
use crate::session::replies;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// What to simulate: one client, one transaction.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The client's address.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: String,
    /// Authenticate as this user (runs the auth stage).
    pub auth_user: Option<String>,
    /// The session runs under TLS.
    pub tls: bool,
    /// Envelope sender; empty for the null sender `<>`.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message as read from a file: bare LF line endings are turned
    /// into CRLF, as an SMTP client does when it sends a file.
    pub message: Vec<u8>,
    /// What the greylisting store would know when a `greylist` rule
    /// matches: `false` (a first attempt: greylisted), `true` (the
    /// triplets passed before, or the network is allowlisted: goes on).
    /// The store itself is not asked.
    pub greylist_passed: bool,
    /// The SIZE= of MAIL FROM; `None`: the message's size, as a client that
    /// knows it sends.
    pub declared_size: Option<u64>,
}

/// What happened at one stage (one line of recipients per RCPT).
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// What the stage was about: the HELO name, the sender, a recipient...
    pub subject: String,
    /// Rules that matched at this stage, in order.
    pub hits: Vec<Hit>,
    /// The transaction score after the stage.
    pub score: f64,
    /// The chain's verdict.
    pub verdict: Verdict,
    /// Who decided, for a terminal verdict.
    pub decided_by: Option<String>,
    /// The reply the client gets; `None` when it is the upstream's.
    pub reply: Option<Reply>,
    /// A note for the reader (why a reply is not shown, ...).
    pub note: Option<String>,
}

/// How the simulated transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// Relayed to the upstream (whose reply the client would get).
    Relayed,
    /// Stored in the local spool (no upstream configured).
    Delivered,
    /// Answered 250 and dropped.
    Discarded,
    /// Answered 250 and stored in the quarantine directory.
    Quarantined,
    /// Refused permanently (5xx).
    Rejected,
    /// Refused for now (4xx).
    Tempfailed,
    /// Closed by a `disconnect` rule.
    Disconnected,
}

impl Final {
    /// The verdict's name, as in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Final::Relayed => "relayed",
            Final::Delivered => "delivered",
            Final::Discarded => "discarded",
            Final::Quarantined => "quarantined",
            Final::Rejected => "rejected",
            Final::Tempfailed => "tempfailed",
            Final::Disconnected => "disconnected",
        }
    }

    /// True when the client was told its message was accepted.
    pub fn accepted(self) -> bool {
        matches!(
            self,
            Final::Relayed | Final::Delivered | Final::Discarded | Final::Quarantined
        )
    }
}

/// The result of a simulation.
#[derive(Debug, Clone)]
pub struct Report {
    /// Stage by stage, in order.
    pub stages: Vec<StageReport>,
    /// How it ended.
    pub verdict: Final,
    /// The stage it ended at.
    pub stage: Stage,
    /// The final reply (`None` when it is the upstream's).
    pub reply: Option<Reply>,
    /// Recipients accepted, of those given.
    pub accepted: usize,
    /// Headers the rules would add.
    pub headers: Vec<(String, String)>,
    /// The Subject the message would go on with instead of its own
    /// (rspamd's `rewrite subject`).
    pub new_subject: Option<String>,
    /// What the checks found (or the fixtures gave), by name.
    pub facts: Vec<(String, String)>,
    /// The final score.
    pub score: f64,
    /// What becomes of the message: relayed, stored in the spool or the
    /// quarantine, dropped, or nothing forwarded.
    pub destination: String,
    /// The `greylist` rule that refused the transaction (a first attempt),
    /// if one did.
    pub greylisted_by: Option<String>,
}

impl Report {
    /// The exit status of `smtpgate test-rules`: 0 accepted, 1 refused.
    pub fn exit_code(&self) -> u8 {
        if self.verdict.accepted() {
            0
        } else {
            1
        }
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for st in &self.stages {
            let _ = writeln!(s, "{:<8} {}", st.stage.name(), st.subject);
            if st.hits.is_empty() {
                let _ = writeln!(s, "         no rule matched");
            }
            for h in &st.hits {
                let extra = if h.score != 0.0 {
                    format!(
                        " {:+}",
                        fmt_score(h.score).parse::<f64>().unwrap_or(h.score)
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(s, "         matched {} ({}{extra})", h.rule, h.action);
            }
            let _ = writeln!(s, "         score {}", fmt_score(st.score));
            if let Some(by) = &st.decided_by {
                let _ = writeln!(s, "         decided by {by}");
            }
            match &st.reply {
                Some(r) => {
                    let _ = writeln!(s, "         -> {r}");
                }
                None => {
                    let _ = writeln!(s, "         -> (the upstream's reply)");
                }
            }
            if let Some(n) = &st.note {
                let _ = writeln!(s, "         ({n})");
            }
        }
        if !self.facts.is_empty() {
            let _ = writeln!(s, "facts:");
            for (n, v) in &self.facts {
                let _ = writeln!(s, "         {n} = {v}");
            }
        }
        if !self.headers.is_empty() {
            let _ = writeln!(s, "headers added:");
            for (n, v) in &self.headers {
                let _ = writeln!(s, "         {n}: {v}");
            }
        }
        if let Some(subject) = &self.new_subject {
            let _ = writeln!(s, "subject rewritten: {subject:?}");
        }
        let reply = match &self.reply {
            Some(r) => r.to_string(),
            None => "the upstream's reply to the end of DATA".to_string(),
        };
        let _ = writeln!(
            s,
            "verdict: {} at {} (score {}, {} of {} recipients accepted, {}); the client gets: {reply}",
            self.verdict.name(),
            self.stage.name(),
            fmt_score(self.score),
            self.accepted,
            self.stages.iter().filter(|s| s.stage == Stage::Rcpt).count(),
            self.destination
        );
        s
    }
}

/// Runs `sim` through what `gateway` runs: its checks, its filters, its
/// relay control and limits. `Err` for input that is not valid (addresses
/// that do not parse).
pub fn simulate(gateway: &Gateway, sim: &Simulation) -> Result<Report, String> {
    let pipeline = gateway.pipeline();
    run(
        gateway,
        &pipeline.chain,
        &pipeline.plan,
        gateway.fixtures(),
        false,
        sim,
    )
}

/// Runs `sim` through `chain` on what else `gateway` has (relay control,
/// limits, greylisting and DMARC settings) without running a single check:
/// the facts are `facts` and only those, known from the start of the
/// session; any other fact is unknown, as if no check gave it. A rule
/// file's `tests:` run this way, so they need nothing outside the process
/// and give the same result every time.
pub fn simulate_offline(
    gateway: &Gateway,
    chain: &FilterChain,
    facts: &Fixtures,
    sim: &Simulation,
) -> Result<Report, String> {
    run(gateway, chain, &Plan::default(), facts, true, sim)
}

/// [`simulate`] on a given chain and plan: checks of `plan` whose facts
/// `fixtures` give are not run. `offline` (with an empty plan): every fact
/// of `fixtures` is known from the start.
fn run(
    gateway: &Gateway,
    chain: &FilterChain,
    plan: &Plan,
    fixtures: &Fixtures,
    offline: bool,
    sim: &Simulation,
) -> Result<Report, String> {
    let config = &gateway.config;
    let host = config.hostname.clone();
    let relay = config.upstream.is_some();
    let destination = |verdict: Final| match verdict {
        Final::Relayed => match &config.upstream {
            Some(up) => format!("relayed to the upstream {}", up.addr),
            None => "relayed".to_string(),
        },
        Final::Delivered => format!("stored in {}", config.spool_dir.display()),
        Final::Quarantined => format!("stored in {}", config.quarantine_dir.display()),
        Final::Discarded => "dropped".to_string(),
        _ => "nothing forwarded".to_string(),
    };
    let mut run = Run {
        chain,
        plan,
        fixtures,
        metrics: gateway.metrics(),
        ctx: Context::new(SocketAddr::new(sim.client_ip, 0)),
        stages: Vec::new(),
        greylist_passed: sim.greylist_passed,
        greylisted_by: None,
        greylist_delay: gateway.greylist().options().delay(),
        enforce_dmarc: gateway
            .config
            .sender_auth
            .as_ref()
            .is_some_and(|s| s.dmarc == crate::config::DmarcMode::Enforce),
    };
    let mut disposition = Outcome::Proceed;
    let end =
        |run: Run<'_>, verdict: Final, stage: Stage, reply: Option<Reply>, accepted: usize| {
            Report {
                verdict,
                stage,
                reply,
                accepted,
                headers: run.ctx.add_headers.clone(),
                new_subject: run.ctx.new_subject.clone(),
                facts: run
                    .ctx
                    .facts
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                score: run.ctx.score,
                stages: run.stages,
                destination: destination(verdict),
                greylisted_by: run.greylisted_by,
            }
        };
    if offline {
        for (name, value) in &fixtures.0 {
            let scope = crate::facts::Scope::Connection;
            run.ctx.facts.set(name.clone(), value.clone(), scope);
        }
    }

    // Connect.
    let greeting = Reply::plain(220, format!("{host} ESMTP smtpgate ready"));
    match run.stage(
        Stage::Connect,
        sim.client_ip.to_string(),
        None,
        None,
        Some(greeting),
    ) {
        Outcome::Refuse(r) => return Ok(end(run, refused(&r), Stage::Connect, Some(r), 0)),
        Outcome::Close(r) => return Ok(end(run, Final::Disconnected, Stage::Connect, Some(r), 0)),
        o @ (Outcome::Discard | Outcome::Quarantine) => disposition = o,
        Outcome::Proceed => {}
    }

    // HELO (after STARTTLS when simulating TLS: rules see TLS from here on).
    if sim.tls {
        run.ctx.tls = Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "simulated".into(),
        });
    }
    run.ctx.helo = Some(sim.helo.clone());
    let ok = Reply::plain(250, host.clone());
    match run.stage(Stage::Helo, sim.helo.clone(), None, None, Some(ok)) {
        Outcome::Refuse(r) => return Ok(end(run, refused(&r), Stage::Helo, Some(r), 0)),
        Outcome::Close(r) => return Ok(end(run, Final::Disconnected, Stage::Helo, Some(r), 0)),
        o @ (Outcome::Discard | Outcome::Quarantine) => disposition = o,
        Outcome::Proceed => {}
    }

    // AUTH.
    if let Some(user) = &sim.auth_user {
        run.ctx.auth_user = Some(user.clone());
        let ok = Reply::new(235, EnhancedCode::new(2, 7, 0), "Authentication successful");
        match run.stage(Stage::Auth, user.clone(), None, None, Some(ok)) {
            Outcome::Refuse(r) => return Ok(end(run, refused(&r), Stage::Auth, Some(r), 0)),
            Outcome::Close(r) => return Ok(end(run, Final::Disconnected, Stage::Auth, Some(r), 0)),
            o @ (Outcome::Discard | Outcome::Quarantine) => disposition = o,
            Outcome::Proceed => {}
        }
    }

    // MAIL, with SIZE= as a client that knows the size sends it.
    let message = crlf(&sim.message);
    let size = sim.declared_size.unwrap_or(message.len() as u64);
    let line = format!("MAIL FROM:<{}> SIZE={size}", sim.from);
    let Ok(Command::Mail { from, params }) = parse_command(line.as_bytes(), true) else {
        return Err(format!("--from {:?} is not a valid address", sim.from));
    };
    if size > config.limits.max_message_bytes {
        let r = replies::too_big();
        return Ok(end(run, Final::Rejected, Stage::Mail, Some(r), 0));
    }
    run.ctx.reset_transaction();
    run.ctx.mail_from = Some(from);
    run.ctx.mail_params = params;
    run.ctx.declared_size = Some(size);
    let ok = if relay && disposition == Outcome::Proceed {
        None
    } else {
        Some(replies::sender_ok())
    };
    let subject = format!("<{}> SIZE={size}", sim.from);
    match run.stage(Stage::Mail, subject, None, None, ok) {
        Outcome::Refuse(r) => return Ok(end(run, refused(&r), Stage::Mail, Some(r), 0)),
        Outcome::Close(r) => return Ok(end(run, Final::Disconnected, Stage::Mail, Some(r), 0)),
        o @ (Outcome::Discard | Outcome::Quarantine) => disposition = o,
        Outcome::Proceed => {}
    }

    // RCPT, one by one: a refusal refuses that recipient only.
    let mut accepted = 0;
    for to in &sim.to {
        let line = format!("RCPT TO:<{to}>");
        let Ok(Command::Rcpt { to: rcpt, .. }) = parse_command(line.as_bytes(), true) else {
            return Err(format!("--to {to:?} is not a valid address"));
        };
        let trusted = gateway.relay().is_trusted(sim.client_ip);
        if !gateway
            .relay()
            .may_relay(&rcpt, trusted, sim.auth_user.is_some())
        {
            run.stages.push(StageReport {
                stage: Stage::Rcpt,
                subject: format!("<{to}>"),
                hits: Vec::new(),
                score: run.ctx.score,
                verdict: Verdict::Continue,
                decided_by: Some("gateway".into()),
                reply: Some(replies::relay_denied(&rcpt.to_string())),
                note: Some("relay control: not a local domain, and the client is neither trusted nor authenticated".into()),
            });
            continue;
        }
        if accepted >= config.limits.max_recipients {
            let r = replies::too_many_recipients();
            run.stages.push(StageReport {
                stage: Stage::Rcpt,
                subject: format!("<{to}>"),
                hits: Vec::new(),
                score: run.ctx.score,
                verdict: Verdict::Continue,
                decided_by: Some("gateway".into()),
                reply: Some(r),
                note: Some("limits.max_recipients".into()),
            });
            continue;
        }
        let ok = if relay && disposition == Outcome::Proceed {
            None
        } else {
            Some(replies::recipient_ok())
        };
        match run.stage(Stage::Rcpt, format!("<{to}>"), Some(&rcpt), None, ok) {
            Outcome::Refuse(_) => {}
            Outcome::Close(r) => {
                return Ok(end(
                    run,
                    Final::Disconnected,
                    Stage::Rcpt,
                    Some(r),
                    accepted,
                ))
            }
            o => {
                if o != Outcome::Proceed {
                    disposition = o;
                }
                accepted += 1;
                run.ctx.rcpts.push(rcpt);
            }
        }
    }
    if accepted == 0 {
        let r = replies::no_valid_recipients();
        return Ok(end(run, Final::Rejected, Stage::Rcpt, Some(r), 0));
    }

    // DATA: the message as it would be received, before anything is forwarded.
    let mut body = Body::new(config.limits.spill_threshold_bytes);
    body.append(&message)
        .map_err(|e| format!("cannot buffer the message: {e}"))?;
    let mut msg = Message::new(&mut body);
    let size = message.len();
    let subject = match msg.headers() {
        Ok(h) => match h.first("Subject") {
            Some(f) => format!("{size} bytes, Subject {:?}", f.decoded),
            None => format!("{size} bytes, no Subject"),
        },
        Err(_) => format!("{size} bytes"),
    };
    let queued = replies::queued("SIMULATED");
    let ok = if relay && disposition == Outcome::Proceed {
        None
    } else {
        Some(queued.clone())
    };
    let outcome = run.stage(Stage::Data, subject, None, Some(&mut msg), ok);
    let (verdict, reply) = match outcome {
        Outcome::Refuse(r) => (refused(&r), Some(r)),
        Outcome::Close(r) => (Final::Disconnected, Some(r)),
        Outcome::Discard => (Final::Discarded, Some(queued)),
        Outcome::Quarantine => (Final::Quarantined, Some(queued)),
        Outcome::Proceed => match disposition {
            Outcome::Discard => (Final::Discarded, Some(queued)),
            Outcome::Quarantine => (Final::Quarantined, Some(queued)),
            _ if relay => (Final::Relayed, None),
            _ => (Final::Delivered, Some(queued)),
        },
    };
    Ok(end(run, verdict, Stage::Data, reply, accepted))
}

/// `tempfailed` for a 4xx, `rejected` otherwise.
fn refused(r: &Reply) -> Final {
    if r.is_transient() {
        Final::Tempfailed
    } else {
        Final::Rejected
    }
}

/// The chain and what it has gathered, stage after stage.
struct Run<'c> {
    /// The chain under test.
    chain: &'c FilterChain,
    /// The checks that run before it.
    plan: &'c Plan,
    /// Facts given instead of looked up.
    fixtures: &'c Fixtures,
    /// Where check runs are counted.
    metrics: &'c Metrics,
    /// What the rules see.
    ctx: Context,
    /// What happened so far.
    stages: Vec<StageReport>,
    /// [`Simulation::greylist_passed`].
    greylist_passed: bool,
    /// The `greylist` rule that refused, once one did.
    greylisted_by: Option<String>,
    /// `greylisting.delay_s`, for the reply a first attempt gets.
    greylist_delay: std::time::Duration,
    /// `sender_auth.dmarc: enforce`: a DMARC failure is refused or
    /// quarantined at data, as in a live session.
    enforce_dmarc: bool,
}

impl Run<'_> {
    /// Runs one stage; `ok` is the reply when the chain lets it pass
    /// (`None`: the upstream's).
    fn stage(
        &mut self,
        stage: Stage,
        subject: String,
        rcpt: Option<&Recipient>,
        mut message: Option<&mut Message<'_>>,
        ok: Option<Reply>,
    ) -> Outcome {
        let before = self.ctx.hits.len();
        // The whole message, as the session hands it to data-stage checks.
        let whole = match &mut message {
            Some(m) if !self.plan.at(stage).is_empty() => m.body.to_vec().ok(),
            _ => None,
        };
        // Milters do not run in a simulation: their verdicts
        // (`milter.NAME`) come from the fixtures.
        if stage >= Stage::Mail {
            for (name, value) in &self.fixtures.0 {
                if name.starts_with("milter.") && !self.ctx.facts.has(name) {
                    let scope = crate::facts::Scope::Transaction;
                    self.ctx.facts.set(name.clone(), value.clone(), scope);
                }
            }
        }
        let checked = async_std::task::block_on(run_stage(
            self.plan,
            stage,
            &mut self.ctx,
            whole.as_deref(),
            self.fixtures,
            self.metrics,
        ));
        let enforced = match (stage, self.enforce_dmarc) {
            (Stage::Data, true) => crate::checks::dmarc::enforcement(&self.ctx.facts),
            _ => None,
        };
        let verdict = match (checked, enforced) {
            (Some(refused), _) => Verdict::Tempfail(refused),
            (None, Some(Enforcement::Reject(r))) => {
                self.ctx.decided_by = Some("dmarc".to_string());
                Verdict::Reject(r)
            }
            (None, Some(Enforcement::Quarantine)) => {
                match self.chain.run(stage, &mut self.ctx, rcpt, message) {
                    v if v.clone().outcome() == Outcome::Proceed => {
                        self.ctx.decided_by = Some("dmarc".to_string());
                        Verdict::Quarantine
                    }
                    v => v,
                }
            }
            (None, None) => self.chain.run(stage, &mut self.ctx, rcpt, message),
        };
        let (verdict, greylisting) = self.greylisting(verdict);
        let outcome = verdict.clone().outcome();
        let (reply, note) = match &outcome {
            Outcome::Refuse(r) => (Some(r.clone()), None),
            Outcome::Close(r) => (Some(r.clone()), Some("and the connection is closed".into())),
            Outcome::Discard => (
                ok.clone().or_else(|| Some(replies::queued("SIMULATED"))),
                Some("the message will be discarded".into()),
            ),
            Outcome::Quarantine => (
                ok.clone().or_else(|| Some(replies::queued("SIMULATED"))),
                Some("the message will be quarantined".into()),
            ),
            Outcome::Proceed => (ok, None),
        };
        let note = match (note, greylisting) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let decided_by = if matches!(outcome, Outcome::Proceed) {
            None
        } else {
            self.ctx.decided_by.clone()
        };
        self.stages.push(StageReport {
            stage,
            subject,
            hits: self.ctx.hits.get(before..).unwrap_or(&[]).to_vec(),
            score: self.ctx.score,
            verdict,
            decided_by,
            reply,
            note,
        });
        outcome
    }

    /// What the session does when a `greylist` rule matched and nothing
    /// else refused, with the store's answer taken from
    /// [`Simulation::greylist_passed`]; the note says which it was.
    fn greylisting(&mut self, verdict: Verdict) -> (Verdict, Option<String>) {
        let Some(rule) = self.ctx.greylist.take() else {
            return (verdict, None);
        };
        if verdict.clone().outcome() != Outcome::Proceed {
            return (verdict, None);
        }
        if self.greylist_passed {
            let note = format!("greylisting ({rule}): the triplet passed before, the mail goes on");
            return (verdict, Some(note));
        }
        self.ctx.decided_by = Some(rule.clone());
        self.greylisted_by = Some(rule.clone());
        let note = format!(
            "would be greylisted by {rule}: a first attempt; a retry after {} s passes \
             (--greylist-passed shows that)",
            self.greylist_delay.as_secs()
        );
        (
            Verdict::Tempfail(greylisted_reply(self.greylist_delay)),
            Some(note),
        )
    }
}

/// The message with every bare LF made CRLF (files on disk usually have
/// LF line endings; SMTP clients send CRLF).
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 40);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rules::{RuleOptions, RuleSet};
    use std::path::Path;
    use std::sync::Arc;

    fn chain(yaml: &str) -> FilterChain {
        let set = RuleSet::from_yaml(yaml, Path::new("t.yaml"), RuleOptions::default()).unwrap();
        let mut c = FilterChain::new();
        c.push(Arc::new(set));
        c
    }

    /// The gateway `config` builds, running `chain`; x.test is local.
    fn gateway(mut config: Config, chain: &FilterChain) -> Arc<Gateway> {
        config.relay.local_domains = vec!["x.test".into()];
        let (_trigger, signal) = crate::shutdown::channel();
        Gateway::build(config, chain.clone(), signal, None).unwrap()
    }

    fn sim(to: &[&str]) -> Simulation {
        Simulation {
            client_ip: "203.0.113.9".parse().unwrap(),
            helo: "mx.example.net".into(),
            auth_user: None,
            tls: false,
            from: "a@example.net".into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            message: b"Subject: hello\nMessage-ID: <1@x>\n\nhi\n".to_vec(),
            greylist_passed: false,
            declared_size: None,
        }
    }

    #[test]
    fn per_recipient_refusal_and_spool_delivery() {
        let c = chain("rules:\n  - { name: no-bob, stage: rcpt, when: { recipient: { regex: '^bob@' } }, action: reject }\n");
        let config = Config::default();
        let r = simulate(
            &gateway(config.clone(), &c),
            &sim(&["bob@x.test", "carol@x.test"]),
        )
        .unwrap();
        assert_eq!(r.verdict, Final::Delivered);
        assert_eq!(r.accepted, 1);
        assert_eq!(r.exit_code(), 0);
        let text = r.render();
        assert!(text.contains("matched no-bob (reject)"), "{text}");
        assert!(text.contains("-> 550 5.7.1 Rejected by policy"), "{text}");
        assert!(text.contains("verdict: delivered at data"), "{text}");
        let r = simulate(&gateway(config.clone(), &c), &sim(&["bob@x.test"])).unwrap();
        assert_eq!(r.verdict, Final::Rejected);
        assert_eq!(r.reply.as_ref().unwrap().code, 554);
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn dmarc_enforcement_is_simulated_like_a_live_session() {
        let c = chain("rules: []\n");
        let mut config = Config::default();
        config.sender_auth = Some(crate::config::SenderAuthOptions {
            dmarc: crate::config::DmarcMode::Enforce,
            ..Default::default()
        });
        let given = |policy: &str| {
            let mut f: Vec<(String, crate::facts::Value)> = [
                ("spf.mailfrom", "pass"),
                ("spf.helo", "none"),
                ("dkim", "none"),
                ("dkim.signatures", "none"),
                ("arc", "none"),
                ("arc.sealer", "none"),
                ("dmarc", "fail"),
                ("dmarc.from", "example.net"),
                ("dmarc.reason", "not aligned"),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), crate::facts::Value::text(*v)))
            .collect();
            f.push(("dmarc.policy".into(), crate::facts::Value::text(policy)));
            Fixtures(f)
        };
        for (policy, want) in [
            ("reject", Final::Rejected),
            ("quarantine", Final::Quarantined),
            ("none", Final::Delivered),
        ] {
            let g = gateway(config.clone(), &c);
            g.set_fixtures(given(policy));
            let r = simulate(&g, &sim(&["b@x.test"])).unwrap();
            assert_eq!(r.verdict, want, "p={policy}\n{}", r.render());
            if want == Final::Rejected {
                let reply = r.reply.unwrap();
                assert_eq!(
                    (reply.code, reply.to_string().contains("5.7.1")),
                    (550, true)
                );
            }
        }
    }

    #[test]
    fn relay_mode_leaves_the_reply_to_the_upstream() {
        let c = chain("rules: []\n");
        let config = Config {
            upstream: Some(crate::config::Upstream::new("10.0.0.5:25")),
            ..Config::default()
        };
        let r = simulate(&gateway(config.clone(), &c), &sim(&["b@x.test"])).unwrap();
        assert_eq!(r.verdict, Final::Relayed);
        assert!(r.reply.is_none());
        assert!(r.render().contains("relayed to the upstream 10.0.0.5:25"));
    }

    #[test]
    fn bad_addresses_are_errors() {
        let c = chain("rules: []\n");
        let mut s = sim(&["not an address"]);
        assert!(simulate(&gateway(Config::default(), &c), &s).is_err());
        s.to = vec!["b@x.test".into()];
        s.from = "nope".into();
        assert!(simulate(&gateway(Config::default(), &c), &s).is_err());
        s.from = String::new();
        assert!(
            simulate(&gateway(Config::default(), &c), &s).is_ok(),
            "<> is fine"
        );
    }

    #[test]
    fn greylisting_shows_as_would_be_greylisted_or_passed() {
        let c = chain(
            "rules:\n  - { name: gl, stage: data, when: { not: { sender: { domains: [friend.test] } } }, action: greylist }\n",
        );
        let mut config = Config::default();
        config.greylisting.delay_s = 120;
        let g = gateway(config, &c);
        let r = simulate(&g, &sim(&["b@x.test"])).unwrap();
        assert_eq!(r.verdict, Final::Tempfailed);
        let text = r.render();
        assert!(text.contains("matched gl (greylist)"), "{text}");
        assert!(
            text.contains("-> 451 4.7.1 Greylisted, please try again in 120 seconds"),
            "{text}"
        );
        assert!(text.contains("would be greylisted by gl"), "{text}");
        let mut s = sim(&["b@x.test"]);
        s.greylist_passed = true;
        let r = simulate(&g, &s).unwrap();
        assert_eq!(r.verdict, Final::Delivered);
        assert!(r.render().contains("the triplet passed before"));
        s.greylist_passed = false;
        s.from = "a@friend.test".into();
        assert_eq!(simulate(&g, &s).unwrap().verdict, Final::Delivered);
    }

    #[test]
    fn offline_runs_no_check_and_knows_only_the_facts_given() {
        let c = chain(
            "rules:\n  - { name: no-ptr, stage: mail, when: { fact: { name: iprev, is: fail } }, action: reject }\n  - { name: unknown, stage: mail, when: { fact: { name: iprev, present: false } }, action: score, score: 1 }\n",
        );
        let g = gateway(Config::default(), &c);
        let run = |facts: Vec<(String, crate::facts::Value)>| {
            simulate_offline(&g, &c, &Fixtures(facts), &sim(&["b@x.test"])).unwrap()
        };
        let r = run(Vec::new());
        assert_eq!(
            (r.verdict, r.score),
            (Final::Delivered, 1.0),
            "{}",
            r.render()
        );
        assert!(r.facts.is_empty(), "no check ran: {:?}", r.facts);
        let r = run(vec![("iprev".into(), crate::facts::Value::text("fail"))]);
        assert_eq!((r.verdict, r.stage), (Final::Rejected, Stage::Mail));
        assert!(r.render().contains("matched no-ptr (reject)"));
    }

    #[test]
    fn crlf_only_fixes_bare_lf() {
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }
}
