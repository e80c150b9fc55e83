//! Checks: the asynchronous steps a session runs at a stage before that
//! stage's rules, each turning a lookup (DNS, later a scanner or Redis)
//! into facts the rules match on.
//!
//! - [`Check`] is one kind of lookup: the facts it gives, the earliest
//!   stage it can run at, and the lookup itself.
//! - [`Registry`] holds every check the gateway can run, with its
//!   settings (timeout, what a failure does).
//! - [`Plan`] is what the loaded rules need: built from the facts they
//!   read, it runs each check at the first stage that reads one of its
//!   facts, and runs no check that no rule reads.
//! - [`run_stage`] runs a stage's checks concurrently, each within its own
//!   timeout, so a client waits at most the slowest check, not the sum. A
//!   check that fails or times out gives `temperror` for each of its
//!   facts; with `on_error: tempfail` the client is also told `451 4.7.1`.
//!
//! A fact is kept for as long as what it is about (see
//! [`Scope`](crate::facts::Scope)), and a check whose facts are all known
//! is not run again: the iprev lookup of a session's first transaction
//! serves every later one.

pub mod arc;
pub mod clamav;
pub mod dkim;
mod dkim_dmarc;
pub mod dmarc;
pub mod dmarc_pct;
pub mod dnsbl;
pub mod dnslist;
pub mod helo;
pub mod http;
pub mod iprev;
mod mailauth;
mod plan;
pub mod policy;
pub mod reputation;
mod resolver;
pub mod rhsbl;
pub mod rspamd;
pub mod scanners;
pub mod sender_domain;
pub mod spf;
mod spf_void;
pub mod urls;

pub use plan::Plan;
pub use resolver::SharedResolver;

use crate::config::{CheckSettings, Config, OnError};
use crate::facts::{CheckRun, Scope, Value, TEMPERROR};
use crate::filter::{Context, FactUse, Filter, Stage};
use crate::metrics::Metrics;
use crate::proto::{EnhancedCode, Reply};
use futures::future::join_all;
use log::warn;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a check's lookup gives: its facts, or why it could not tell.
pub type CheckFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(String, Value)>, String>> + Send + 'a>>;

/// One kind of lookup that gives facts.
pub trait Check: Send + Sync {
    /// The check's name, in `checks:` settings, logs, metrics and audit
    /// records (`iprev`).
    fn name(&self) -> &'static str;

    /// The facts it gives; a rule that reads one of them makes it run.
    /// Borrowed from the check, so a check built from config (one fact
    /// per configured DNS list, say) names its own.
    fn facts(&self) -> &[String];

    /// The first stage it can run at: what it looks at is known from then
    /// on (the client's IP at connect, the sender at mail).
    fn earliest(&self) -> Stage;

    /// Looks it up. `message` is the whole message (dot-unstuffed, CRLF)
    /// at the data stage, `None` before. An `Err` says why the answer is
    /// unknown: every fact of the check then says `temperror`.
    fn run<'a>(&'a self, ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a>;
}

/// A check with its settings.
pub struct Configured {
    /// The check.
    pub check: Arc<dyn Check>,
    /// Its timeout and failure policy.
    pub settings: CheckSettings,
}

/// Every check the gateway can run, whether or not a rule needs it.
#[derive(Clone)]
pub struct Registry {
    /// In the order plans run them.
    checks: Vec<Arc<Configured>>,
    /// Filters that act on the checks' facts without a rule (the DNSBL
    /// threshold, the scanners' actions), appended to every chain.
    policies: Vec<Arc<dyn Filter>>,
    /// Facts the configuration reads without a rule.
    always: Vec<FactUse>,
    /// Facts the session records itself, not a check (a milter's
    /// `milter.NAME` verdict), with the stage they are known from.
    session_facts: Vec<(String, Stage)>,
    /// The DNS thread the checks share, when built from a config: other
    /// components run their tokio work on its runtime (LDAP AUTH).
    resolver: Option<Arc<SharedResolver>>,
}

impl Registry {
    /// The built-in checks, with the settings of `config`. Nothing starts
    /// here: the DNS resolver starts on the first lookup, so a gateway
    /// whose rules read no DNS fact never starts it.
    pub fn new(config: &Config, metrics: &Metrics) -> Registry {
        let resolver = Arc::new(SharedResolver::new(config.dns.clone()));
        let mut checks = vec![(
            Arc::new(iprev::Iprev::new(resolver.clone())) as Arc<dyn Check>,
            config.checks.iprev.clone(),
        )];
        let (reputation, policy) = reputation::checks(config, &resolver, metrics);
        checks.extend(reputation);
        let (scanners, scanner_actions) = scanners::checks(config);
        checks.extend(scanners);
        let session_facts = config
            .milters
            .iter()
            .map(|m| (format!("milter.{}", m.name), Stage::Mail))
            .collect();
        let mut registry = Registry {
            policies: policy.into_iter().chain(scanner_actions).collect(),
            session_facts,
            resolver: Some(resolver.clone()),
            ..Registry::with(checks)
        };
        registry.add_sender_auth(config, &resolver, metrics);
        registry
    }

    /// Adds the SPF, DKIM, ARC and DMARC checks; with `sender_auth:`
    /// configured they run on every message, rules or not.
    fn add_sender_auth(
        &mut self,
        config: &Config,
        resolver: &Arc<SharedResolver>,
        metrics: &Metrics,
    ) {
        let host = &config.hostname;
        let c = &config.checks;
        let arc_options = config
            .sender_auth
            .as_ref()
            .map(|s| s.arc.clone())
            .unwrap_or_default();
        let joint = Arc::new(dkim_dmarc::Joint::new(
            resolver.clone(),
            host,
            arc_options,
            metrics.dkim_verifications.clone(),
        ));
        let checks: [(Arc<dyn Check>, &CheckSettings); 4] = [
            (Arc::new(spf::Spf::new(resolver.clone(), host)), &c.spf),
            (Arc::new(dkim::Dkim::new(joint.clone())), &c.dkim),
            (Arc::new(arc::ArcCheck::new(resolver.clone())), &c.arc),
            (Arc::new(dmarc::Dmarc::new(joint)), &c.dmarc),
        ];
        for (check, settings) in checks {
            if config.sender_auth.is_some() {
                self.always.push(FactUse {
                    fact: check.facts()[0].clone(),
                    stage: check.earliest(),
                    file: config.source.origin.clone(),
                    line: None,
                    path: "sender_auth".to_string(),
                });
            }
            self.checks.push(Arc::new(Configured {
                check,
                settings: settings.clone(),
            }));
        }
    }

    /// Facts read whatever the rules say (`sender_auth:` needs its checks
    /// on every message), for the plan.
    pub fn always(&self) -> &[FactUse] {
        &self.always
    }

    /// The stage from which the session itself knows `fact`, if it does.
    pub fn session_fact(&self, fact: &str) -> Option<Stage> {
        self.session_facts
            .iter()
            .find(|(name, _)| name == fact)
            .map(|(_, stage)| *stage)
    }

    /// A registry of the given checks (a library user's own, or tests').
    pub fn with(checks: Vec<(Arc<dyn Check>, CheckSettings)>) -> Registry {
        Registry {
            checks: checks
                .into_iter()
                .map(|(check, settings)| Arc::new(Configured { check, settings }))
                .collect(),
            policies: Vec::new(),
            always: Vec::new(),
            session_facts: Vec::new(),
            resolver: None,
        }
    }

    /// The shared DNS thread (see the `resolver` field).
    pub fn resolver(&self) -> Option<Arc<SharedResolver>> {
        self.resolver.clone()
    }

    /// The filters that act on the checks' facts without a rule, those
    /// the configuration has, in chain order.
    pub fn policies(&self) -> Vec<Arc<dyn Filter>> {
        self.policies.clone()
    }

    /// The names of every check.
    pub fn names(&self) -> Vec<&'static str> {
        self.checks.iter().map(|c| c.check.name()).collect()
    }

    /// The check that gives `fact`.
    fn giving(&self, fact: &str) -> Option<&Arc<Configured>> {
        self.checks
            .iter()
            .find(|c| c.check.facts().iter().any(|f| f == fact))
    }

    /// Every fact some check gives, for error messages.
    fn all_facts(&self) -> Vec<&str> {
        self.checks
            .iter()
            .flat_map(|c| c.check.facts().iter().map(String::as_str))
            .collect()
    }
}

/// Facts given instead of looked up: the simulator's `--fact iprev=fail`,
/// so a rule that reads a fact can be tried offline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fixtures(pub Vec<(String, Value)>);

impl Fixtures {
    /// The value given for `fact`.
    fn get(&self, fact: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == fact).map(|(_, v)| v)
    }
}

/// How long facts found at `stage` are kept.
pub fn scope_of(stage: Stage) -> Scope {
    match stage {
        Stage::Connect => Scope::Connection,
        Stage::Helo | Stage::Auth => Scope::Greeting,
        Stage::Mail | Stage::Rcpt | Stage::Data => Scope::Transaction,
    }
}

/// The reply when a check failed and its policy is `tempfail`.
pub fn check_failed(check: &str) -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 7, 1),
        format!("Temporary failure of the {check} check, try again later"),
    )
}

/// How one run ended.
enum Ran {
    /// The check answered.
    Facts(Vec<(String, Value)>),
    /// The check could not tell.
    Failed(String),
    /// The check took longer than its timeout.
    TimedOut,
}

/// Runs the checks `plan` has for `stage` whose facts are not known yet,
/// all at once, and records their facts and runs in `ctx`. `message` is
/// the whole message at the data stage. Facts given in
/// `fixtures` are taken instead of looking them up. Returns the reply that
/// refuses the stage when a check failed and its policy is `tempfail`
/// (`ctx.decided_by` then names the check).
pub async fn run_stage(
    plan: &Plan,
    stage: Stage,
    ctx: &mut Context,
    message: Option<&[u8]>,
    fixtures: &Fixtures,
    metrics: &Metrics,
) -> Option<Reply> {
    let mut due = Vec::new();
    for c in plan.at(stage) {
        let facts = c.check.facts();
        if facts.iter().all(|f| ctx.facts.has(f)) {
            continue;
        }
        let given: Vec<(&str, Value)> = facts
            .iter()
            .filter_map(|f| fixtures.get(f).map(|v| (f.as_str(), v.clone())))
            .collect();
        if given.is_empty() {
            due.push(c);
            continue;
        }
        let scope = scope_of(c.check.earliest());
        for (f, v) in given {
            ctx.facts.set(f, v, scope);
        }
        ctx.checks.push(CheckRun {
            check: c.check.name().to_string(),
            stage: stage.name(),
            outcome: "fixture",
            error: None,
            ms: 0.0,
            scope,
        });
    }
    if due.is_empty() {
        return None;
    }
    let view: &Context = ctx;
    let runs = join_all(due.iter().map(|c| async move {
        let started = Instant::now();
        let ran = match async_std::future::timeout(c.settings.timeout(), c.check.run(view, message))
            .await
        {
            Ok(Ok(facts)) => Ran::Facts(facts),
            Ok(Err(why)) => Ran::Failed(why),
            Err(_) => Ran::TimedOut,
        };
        (ran, started.elapsed())
    }))
    .await;
    let mut refusal = None;
    for (c, (ran, took)) in due.iter().zip(runs) {
        let name = c.check.name();
        let scope = scope_of(c.check.earliest());
        let (outcome, error) = match ran {
            Ran::Facts(facts) => {
                for (f, v) in facts {
                    ctx.facts.set(f, v, scope);
                }
                ("ok", None)
            }
            Ran::Failed(why) => ("error", Some(why)),
            Ran::TimedOut => (
                "timeout",
                Some(format!("no answer within {} ms", c.settings.timeout_ms)),
            ),
        };
        if let Some(why) = &error {
            // Never "no answer means clean": every fact says temperror.
            for f in c.check.facts() {
                ctx.facts.set(f.as_str(), Value::text(TEMPERROR), scope);
            }
            warn!(
                "check {name} at {stage} for {}: {outcome}: {why}",
                ctx.client.ip()
            );
            if c.settings.on_error == OnError::Tempfail && refusal.is_none() {
                ctx.decided_by = Some(format!("check:{name}"));
                refusal = Some(check_failed(name));
            }
        }
        metrics.check_ran(name, outcome, took);
        ctx.checks.push(CheckRun {
            check: name.to_string(),
            stage: stage.name(),
            outcome,
            error,
            ms: millis(took),
            scope,
        });
    }
    refusal
}

/// A duration in milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests;
