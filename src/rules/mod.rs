//! The YAML rule set: rules by stage, loaded from `*.yaml` files in a
//! directory, compiled once, evaluated as one [`Filter`] of the chain.
//!
//! - `model`: the YAML shape (serde).
//! - `compile`: checks and compiles it, with file:line errors.
//! - `lists`: CIDR tables, domain sets and list files.
//! - `eval`: runs a stage's rules over a [`Context`].
//! - `cases`: the `tests:` of a rule file, checked and read at load.
//!
//! Evaluation touches only the rules of the stage asked. At the data stage
//! all body regexes of all rules form one `RegexSet` (one for raw lines,
//! one for decoded text), and the body is read once, on the first rule that
//! needs it; header fields are parsed once per message.

mod bodyset;
mod cases;
mod compile;
mod eval;
mod lists;
mod model;
mod prefilter;
pub mod selfcheck;

use crate::config::{item_lines, locate, Config, ConfigError};
use crate::filter::{Context, FactUse, Filter, FilterChain, Hit, Message, Stage, Verdict};
use crate::metrics::{RuleMetrics, RuleSeries, StageEvaluations};
use crate::proto::{EnhancedCode, Recipient, Reply};
use bodyset::BodySet;
pub use cases::{Actual, Expect, ExpectedVerdict, RuleTest, DEFAULT_MESSAGE};
use compile::FileCompiler;
use lists::{CidrTable, DomainSet, ListFiles};
use regex::RegexSet;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How the rule set treats messages, from the gateway configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleOptions {
    /// Largest message that attachment and decoded-body matchers parse as
    /// MIME (in memory); larger ones do not match them.
    pub max_mime_bytes: u64,
}

impl Default for RuleOptions {
    fn default() -> Self {
        RuleOptions {
            max_mime_bytes: 10 << 20,
        }
    }
}

impl RuleOptions {
    /// The options a configuration asks for.
    pub fn from_config(config: &Config) -> RuleOptions {
        RuleOptions {
            max_mime_bytes: config.limits.max_mime_scan_bytes,
        }
    }
}

/// The compiled rule set; one filter of the chain.
pub struct RuleSet {
    /// Rules by stage, in [`Stage::ALL`] order.
    stages: Vec<StageRules>,
    /// Score thresholds.
    scoring: Scoring,
    /// Options from the configuration.
    options: RuleOptions,
    /// Where the rules came from, for summaries.
    origin: String,
    /// The files read, in load order.
    files: Vec<PathBuf>,
    /// The files' `tests:`, in load order.
    tests: Vec<RuleTest>,
}

/// The rules of one stage and their shared body regex sets.
#[derive(Default)]
pub(crate) struct StageRules {
    /// The rules, in file-name order, then file order.
    pub rules: Vec<Rule>,
    /// All raw-body regexes of the stage, as one set.
    pub raw_body: Option<BodySet>,
    /// All decoded-body regexes of the stage, as one set.
    pub decoded_body: Option<BodySet>,
    /// Raw then decoded regexes, as one set: for a plain-text message the
    /// decoded text is the raw body, so one pass serves both.
    pub combined_body: Option<BodySet>,
    /// Per rule, in order: the one body pattern that is its whole
    /// condition ([`BodyOnly`]), so the evaluation loop can pass over a
    /// rule whose pattern did not match without reading the rule itself.
    pub body_only: Vec<BodyOnly>,
    /// Counts how far each run of the stage got, once it is in service.
    pub evaluations: OnceLock<Arc<StageEvaluations>>,
}

/// A rule whose whole condition is one body pattern, as a small value kept
/// next to the others of its stage: with thousands of such rules, reading
/// each rule's condition (three allocations apart) costs more than the
/// body scan.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BodyOnly {
    /// Some other condition.
    No,
    /// Pattern `.0` of the stage's raw-body set.
    Raw(u32),
    /// Pattern `.0` of the stage's decoded-body set.
    Decoded(u32),
}

impl BodyOnly {
    /// What `cond` is, as far as the loop's shortcut cares.
    fn of(cond: Option<&Cond>) -> BodyOnly {
        match cond {
            Some(Cond::Test(Test::Body { decoded, ids })) if ids.len() == 1 => {
                match u32::try_from(ids[0]) {
                    Ok(id) if *decoded => BodyOnly::Decoded(id),
                    Ok(id) => BodyOnly::Raw(id),
                    Err(_) => BodyOnly::No,
                }
            }
            _ => BodyOnly::No,
        }
    }
}

/// Body regex patterns of a stage while compiling; each distinct pattern
/// gets one index in the stage's set.
#[derive(Default)]
pub(crate) struct StagePatterns {
    /// Raw-body patterns.
    pub raw: Patterns,
    /// Decoded-body patterns.
    pub decoded: Patterns,
}

/// Distinct patterns in order, with their index.
#[derive(Default)]
pub(crate) struct Patterns {
    /// Patterns by index.
    list: Vec<String>,
    /// Index by pattern.
    index: HashMap<String, usize>,
}

impl Patterns {
    /// The index of `pattern`, added if new.
    pub(crate) fn intern(&mut self, pattern: &str) -> usize {
        if let Some(i) = self.index.get(pattern) {
            return *i;
        }
        self.list.push(pattern.to_string());
        self.index.insert(pattern.to_string(), self.list.len() - 1);
        self.list.len() - 1
    }

    /// The sets of all the patterns; `None` when there are none.
    fn build(&self) -> Result<Option<BodySet>, regex::Error> {
        BodySet::build(&self.list)
    }
}

/// A rule file as read, kept so that a rule's line can be found when it
/// is needed (errors, summaries) rather than for every rule at load time,
/// which would re-read the file once per rule.
pub(crate) struct Source {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The line each rule starts on, found in one pass on first need;
    /// `None` when that pass and the exact probe disagree.
    pub rule_lines: OnceLock<Option<Vec<usize>>>,
}

impl Source {
    /// A file and its text.
    pub(crate) fn new(path: PathBuf, text: String) -> Source {
        Source {
            path,
            text,
            rule_lines: OnceLock::new(),
        }
    }

    /// The line where rule `index` of the file starts. The lines of all
    /// rules come from one pass over the text; they are used only if the
    /// exact probe (`config::locate::line_of`, one parse per question)
    /// agrees on the first and the last rule, and otherwise each rule is
    /// probed on its own.
    pub(crate) fn rule_line(&self, index: usize) -> Option<usize> {
        let probe = |i: usize| locate::line_of(&self.text, &format!("rules[{i}]"));
        let lines = self.rule_lines.get_or_init(|| {
            let lines = item_lines::item_lines(&self.text, "rules")?;
            let agree = match (lines.first(), lines.last()) {
                (Some(&first), Some(&last)) => {
                    probe(0) == Some(first) && probe(lines.len() - 1) == Some(last)
                }
                _ => true,
            };
            agree.then_some(lines)
        });
        match lines {
            Some(lines) if index < lines.len() => Some(lines[index]),
            _ => probe(index),
        }
    }
}

/// One compiled rule.
pub(crate) struct Rule {
    /// Unique name.
    pub name: String,
    /// The file it came from.
    pub source: Arc<Source>,
    /// Its index in the file's `rules` list.
    pub index: usize,
    /// Free text for people.
    pub description: Option<String>,
    /// When it matches; `None` is always.
    pub cond: Option<Cond>,
    /// What it does.
    pub action: Action,
    /// Its evaluation and last-hit series, once the set is in service
    /// ([`RuleSet::count_into`]); unset in the simulator and `check`.
    pub series: OnceLock<RuleSeries>,
}

/// A compiled condition.
pub(crate) enum Cond {
    /// Every one.
    All(Vec<Cond>),
    /// At least one.
    Any(Vec<Cond>),
    /// Not this.
    Not(Box<Cond>),
    /// One matcher.
    Test(Test),
}

/// One compiled matcher.
pub(crate) enum Test {
    /// Client IP in a table.
    ClientIp(Arc<CidrTable>),
    /// HELO name.
    Helo(NameMatcher),
    /// HELO name is an address literal (or bare IP).
    HeloIpLiteral(bool),
    /// Under TLS.
    Tls(bool),
    /// Authenticated.
    Authenticated(bool),
    /// Authenticated user.
    AuthUser(NameMatcher),
    /// Envelope sender.
    Sender(AddressMatcher),
    /// Null sender.
    NullSender(bool),
    /// A recipient.
    Recipient(AddressMatcher),
    /// Recipient count.
    RecipientCount(Range<u64>),
    /// Declared SIZE=.
    DeclaredSize(Range<u64>),
    /// Actual size.
    Size(Range<u64>),
    /// Transaction score.
    Score(Range<f64>),
    /// A header field.
    Header {
        /// Field name, matched case-insensitively.
        name: String,
        /// Regexes over the value.
        regexes: Option<RegexSet>,
        /// Presence test instead of regexes.
        present: Option<bool>,
        /// Match the raw value instead of the decoded one.
        raw: bool,
    },
    /// Body lines, by index into the stage's set.
    Body {
        /// Which set: decoded text parts or raw lines.
        decoded: bool,
        /// Pattern indices in that set.
        ids: Vec<usize>,
    },
    /// A fact a check established.
    Fact {
        /// Its name.
        name: String,
        /// How its value is tested.
        test: FactTest,
    },
    /// Attachment file names.
    Attachment {
        /// Regexes over the name.
        regexes: Option<RegexSet>,
        /// Extensions, lowercase, without dot.
        extensions: HashSet<String>,
    },
}

impl Cond {
    /// The names of the facts this condition reads, into `out`.
    fn facts(&self, out: &mut Vec<String>) {
        match self {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| c.facts(out)),
            Cond::Not(c) => c.facts(out),
            Cond::Test(Test::Fact { name, .. }) => out.push(name.clone()),
            Cond::Test(_) => {}
        }
    }
}

/// How a `fact:` matcher tests the value.
pub(crate) enum FactTest {
    /// One of these values, lowercase.
    Is(HashSet<String>),
    /// A regex finds it.
    Regex(RegexSet),
    /// A number within.
    Number(Range<f64>),
    /// Whether the fact is known at all.
    Present(bool),
}

impl Rule {
    /// The line the rule starts on (for errors and summaries; the file's
    /// rule lines are found on first need, see [`Source::rule_line`]).
    pub(crate) fn line(&self) -> Option<usize> {
        self.source.rule_line(self.index)
    }

    /// `file:line` for messages.
    pub(crate) fn place(&self) -> String {
        format!(
            "{}:{}",
            self.source.path.display(),
            self.line()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into())
        )
    }
}

/// A min/max range, inclusive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range<T> {
    /// At least.
    pub min: Option<T>,
    /// At most.
    pub max: Option<T>,
}

impl<T: PartialOrd + Copy> Range<T> {
    /// Whether `v` is within.
    pub(crate) fn contains(&self, v: T) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// A name matcher: regexes or exact names.
pub(crate) struct NameMatcher {
    /// Regexes over the name as given.
    pub regexes: Option<RegexSet>,
    /// Names, lowercase.
    pub names: HashSet<String>,
}

/// An address matcher: regexes, exact addresses or domains.
pub(crate) struct AddressMatcher {
    /// Regexes over `local@domain` as given.
    pub regexes: Option<RegexSet>,
    /// Addresses, lowercase.
    pub addresses: HashSet<String>,
    /// Domains.
    pub domains: DomainSet,
}

/// A compiled action.
pub(crate) enum Action {
    /// End the stage.
    Accept,
    /// End filtering for the transaction (the session, at a session stage).
    AcceptTransaction,
    /// Refuse with a 5xx.
    Reject(Reply),
    /// Refuse with a 4xx.
    Tempfail(Reply),
    /// Say this and close.
    Disconnect(Reply),
    /// Answer 250, forward nothing.
    Discard,
    /// Answer 250, quarantine.
    Quarantine,
    /// Prepend a header.
    AddHeader {
        /// Field name.
        name: String,
        /// Value template.
        value: Template,
    },
    /// Add points.
    Score(f64),
    /// Log and audit only.
    Warn,
    /// Mark the stage for greylisting; the session asks the store.
    Greylist,
}

impl Action {
    /// The action's name as written in rule files.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::AcceptTransaction => "accept_transaction",
            Action::Reject(_) => "reject",
            Action::Tempfail(_) => "tempfail",
            Action::Disconnect(_) => "disconnect",
            Action::Discard => "discard",
            Action::Quarantine => "quarantine",
            Action::AddHeader { .. } => "add_header",
            Action::Score(_) => "score",
            Action::Warn => "warn",
            Action::Greylist => "greylist",
        }
    }
}

/// A header value with placeholders.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(pub Vec<TemplatePart>);

/// A piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TemplatePart {
    /// Literal text.
    Lit(String),
    /// A placeholder.
    Var(Var),
}

/// The placeholders of `add_header` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    /// `{rule}`
    Rule,
    /// `{stage}`
    Stage,
    /// `{score}`: the transaction score so far.
    Score,
    /// `{client_ip}`
    ClientIp,
    /// `{helo}`
    Helo,
    /// `{sender}`
    Sender,
    /// `{recipient}`: the recipient at the rcpt stage, empty elsewhere.
    Recipient,
    /// `{auth_user}`
    AuthUser,
}

/// Score thresholds.
#[derive(Debug, Clone)]
pub(crate) struct Scoring {
    /// Tag at this score.
    pub tag_at: Option<f64>,
    /// Reject at this score.
    pub reject_at: Option<f64>,
    /// The reply for `reject_at`.
    pub reply: Reply,
    /// The file that set them.
    pub file: Option<PathBuf>,
}

impl Scoring {
    /// `550 5.7.1`, without the rule names (those go to the audit record).
    pub(crate) fn default_reply() -> Reply {
        Reply::new(
            550,
            EnhancedCode::new(5, 7, 1),
            "Message rejected as spam by policy",
        )
    }
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring {
            tag_at: None,
            reject_at: None,
            reply: Scoring::default_reply(),
            file: None,
        }
    }
}

/// The pseudo-rule name for a rejection at `scoring.reject_at`.
pub const SCORING_REJECT: &str = "scoring:reject_at";
/// The pseudo-rule name for tagging at `scoring.tag_at`.
pub const SCORING_TAG: &str = "scoring:tag_at";

impl RuleSet {
    /// The name of the rule set in the filter chain (and in `decided_by`
    /// when a filter other than a rule decided).
    pub const NAME: &'static str = "rules";

    /// A rule set without rules.
    pub fn empty() -> RuleSet {
        RuleSet {
            stages: Stage::ALL.iter().map(|_| StageRules::default()).collect(),
            scoring: Scoring::default(),
            options: RuleOptions::default(),
            origin: "(no rules)".into(),
            files: Vec::new(),
            tests: Vec::new(),
        }
    }

    /// Loads every `*.yaml` file of `dir` in file-name order. Any error
    /// (unreadable file, YAML error, bad rule, bad list file) stops the load
    /// and names the file and line.
    pub fn load_dir(dir: &Path, options: RuleOptions) -> Result<RuleSet, ConfigError> {
        let read_dir = std::fs::read_dir(dir).map_err(|e| ConfigError {
            file: dir.display().to_string(),
            line: None,
            reason: format!("cannot read the rules directory: {e}"),
        })?;
        let mut paths: Vec<PathBuf> = read_dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "yaml")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
                    && p.is_file()
            })
            .collect();
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| ConfigError {
                file: p.display().to_string(),
                line: None,
                reason: format!("cannot read: {e}"),
            })?;
            files.push((p, text));
        }
        let mut set = RuleSet::from_texts(&files, options)?;
        set.origin = dir.display().to_string();
        Ok(set)
    }

    /// Compiles rule files given as (path, text), in the order given. The
    /// path names the file in errors and is where relative list files are
    /// looked for.
    pub fn from_texts(
        files: &[(PathBuf, String)],
        options: RuleOptions,
    ) -> Result<RuleSet, ConfigError> {
        let mut stages: Vec<StageRules> =
            Stage::ALL.iter().map(|_| StageRules::default()).collect();
        let mut patterns: Vec<StagePatterns> = Stage::ALL
            .iter()
            .map(|_| StagePatterns::default())
            .collect();
        let mut scoring = Scoring::default();
        let mut seen: HashMap<String, (Arc<Source>, usize)> = HashMap::new();
        let mut lists = ListFiles::default();
        let mut tests = Vec::new();
        for (path, text) in files {
            let parsed: Option<model::RuleFile> =
                serde_yaml::from_str(text).map_err(|e| yaml_error(e, path))?;
            let parsed = parsed.unwrap_or_default();
            let base = path.parent().unwrap_or(Path::new("."));
            let source = Arc::new(Source::new(path.clone(), text.clone()));
            let mut compiler = FileCompiler {
                file: path,
                text,
                base,
                lists: &mut lists,
                source: source.clone(),
            };
            for (i, def) in parsed.rules.iter().enumerate() {
                if let Some((first, first_index)) = seen.get(&def.name) {
                    let first_line = config_line(&first.text, &format!("rules[{first_index}]"));
                    return Err(ConfigError {
                        file: path.display().to_string(),
                        line: compiler.rule_line(i),
                        reason: format!(
                            "rule {:?}: the name is already used at {}:{}",
                            def.name,
                            first.path.display(),
                            first_line
                                .map(|l| l.to_string())
                                .unwrap_or_else(|| "?".into())
                        ),
                    });
                }
                seen.insert(def.name.clone(), (source.clone(), i));
                let stage = def.stage;
                let idx = stage_index(stage);
                let rule = compiler.rule(i, def, &mut patterns[idx])?;
                if def.enabled {
                    stages[idx].rules.push(rule);
                }
            }
            if let Some(def) = &parsed.scoring {
                if let Some(first) = &scoring.file {
                    return Err(ConfigError {
                        file: path.display().to_string(),
                        line: config_line(text, "scoring"),
                        reason: format!(
                            "scoring is already set in {}; set it in one file only",
                            first.display()
                        ),
                    });
                }
                scoring = compile::scoring(def, path, text)?;
            }
            tests.extend(cases::compile(&parsed.tests, path, text)?);
        }
        let names: HashSet<&str> = stages
            .iter()
            .flat_map(|s| &s.rules)
            .map(|r| r.name.as_str())
            .collect();
        let texts: HashMap<PathBuf, &str> =
            files.iter().map(|(p, t)| (p.clone(), t.as_str())).collect();
        cases::check_names(&tests, &texts, &names)?;
        for (stage, pats) in stages.iter_mut().zip(&patterns) {
            stage.body_only = stage
                .rules
                .iter()
                .map(|r| BodyOnly::of(r.cond.as_ref()))
                .collect();
            let build = |p: &Patterns| {
                p.build().map_err(|e| ConfigError {
                    file: files
                        .first()
                        .map(|f| f.0.display().to_string())
                        .unwrap_or_default(),
                    line: None,
                    reason: format!("the body regexes together are too large: {e}"),
                })
            };
            stage.raw_body = build(&pats.raw)?;
            stage.decoded_body = build(&pats.decoded)?;
            if !pats.raw.list.is_empty() && !pats.decoded.list.is_empty() {
                let both = Patterns {
                    list: pats
                        .raw
                        .list
                        .iter()
                        .chain(&pats.decoded.list)
                        .cloned()
                        .collect(),
                    index: HashMap::new(),
                };
                stage.combined_body = build(&both)?;
            }
        }
        Ok(RuleSet {
            stages,
            scoring,
            options,
            origin: "(inline)".into(),
            files: files.iter().map(|f| f.0.clone()).collect(),
            tests,
        })
    }

    /// Compiles one rule file's text; `origin` names it in errors, and
    /// relative list files are looked for in its directory.
    pub fn from_yaml(
        text: &str,
        origin: &Path,
        options: RuleOptions,
    ) -> Result<RuleSet, ConfigError> {
        RuleSet::from_texts(&[(origin.to_path_buf(), text.to_string())], options)
    }

    /// Number of rules (enabled ones).
    pub fn len(&self) -> usize {
        self.stages.iter().map(|s| s.rules.len()).sum()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cases of the files' `tests:`, in load order.
    pub fn tests(&self) -> &[RuleTest] {
        &self.tests
    }

    /// Names of the rules of `stage`, in evaluation order.
    pub fn rule_names(&self, stage: Stage) -> Vec<&str> {
        self.stages[stage_index(stage)]
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    /// The rule set per stage, for `smtpgate check`: each rule with its
    /// file and line, action and condition.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let scoring = match (self.scoring.tag_at, self.scoring.reject_at) {
            (None, None) => "no scoring thresholds".to_string(),
            (t, r) => format!(
                "scoring: tag at {}, reject at {}",
                t.map(fmt_score).unwrap_or_else(|| "-".into()),
                r.map(fmt_score).unwrap_or_else(|| "-".into())
            ),
        };
        let _ = writeln!(
            s,
            "rules:     {} rules in {} files from {}; {scoring}",
            self.len(),
            self.files.len(),
            self.origin
        );
        for stage in Stage::ALL {
            let rules = &self.stages[stage_index(stage)].rules;
            if rules.is_empty() {
                continue;
            }
            let _ = writeln!(s, "  {stage}:");
            for r in rules {
                let file = r
                    .source
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default();
                let at = format!(
                    "{file}:{}",
                    r.line().map(|l| l.to_string()).unwrap_or_default()
                );
                let action = match &r.action {
                    Action::Reject(rep) | Action::Tempfail(rep) | Action::Disconnect(rep) => {
                        format!("{} ({})", r.action.name(), rep)
                    }
                    Action::Score(n) => format!("score {}", fmt_score(*n)),
                    Action::AddHeader { name, .. } => format!("add_header {name}"),
                    a => a.name().to_string(),
                };
                let when = r
                    .cond
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "always".into());
                let _ = writeln!(s, "    {:<24} {:<22} {action}", r.name, at);
                if let Some(d) = &r.description {
                    let _ = writeln!(s, "      # {}", d.trim());
                }
                let _ = writeln!(s, "      when {when}");
            }
        }
        s
    }

    /// Runs the rules of `stage`.
    fn run(
        &self,
        stage: Stage,
        ctx: &mut Context,
        rcpt: Option<&Recipient>,
        message: Option<&mut Message<'_>>,
    ) -> Verdict {
        eval::run_stage(self, stage, ctx, rcpt, message)
    }

    /// Gives every rule its series in `metrics` (created at 0, or the
    /// ones a rule of the same name had before a reload), and drops those
    /// of rules no longer loaded: done once when the set goes in service.
    pub fn count_into(&self, metrics: &RuleMetrics) {
        let rules: Vec<&Rule> = self.stages.iter().flat_map(|s| &s.rules).collect();
        let names: Vec<(&str, &str)> = rules
            .iter()
            .map(|r| (r.name.as_str(), r.action.name()))
            .collect();
        for (rule, series) in rules.iter().zip(metrics.loaded(&names)) {
            let _ = rule.series.set(series);
        }
        for stage in &self.stages {
            let series: Vec<&RuleSeries> =
                stage.rules.iter().filter_map(|r| r.series.get()).collect();
            if series.len() == stage.rules.len() {
                let _ = stage.evaluations.set(metrics.stage(&series));
            }
        }
    }

    /// The rules of a stage.
    pub(crate) fn stage(&self, stage: Stage) -> &StageRules {
        &self.stages[stage_index(stage)]
    }

    /// The thresholds.
    pub(crate) fn scoring(&self) -> &Scoring {
        &self.scoring
    }

    /// The options.
    pub(crate) fn options(&self) -> RuleOptions {
        self.options
    }
}

impl Filter for RuleSet {
    fn name(&self) -> &str {
        RuleSet::NAME
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn facts_used(&self) -> Vec<FactUse> {
        let mut used = Vec::new();
        for (stage, rules) in Stage::ALL.iter().zip(&self.stages) {
            for rule in &rules.rules {
                let mut names = Vec::new();
                if let Some(c) = &rule.cond {
                    c.facts(&mut names);
                }
                for fact in names {
                    used.push(FactUse {
                        fact,
                        stage: *stage,
                        file: rule.source.path.display().to_string(),
                        line: rule.line(),
                        path: format!("rule {:?}: when: fact", rule.name),
                    });
                }
            }
        }
        used
    }
    fn connect(&self, ctx: &mut Context) -> Verdict {
        self.run(Stage::Connect, ctx, None, None)
    }
    fn helo(&self, ctx: &mut Context) -> Verdict {
        self.run(Stage::Helo, ctx, None, None)
    }
    fn auth(&self, ctx: &mut Context) -> Verdict {
        self.run(Stage::Auth, ctx, None, None)
    }
    fn mail(&self, ctx: &mut Context) -> Verdict {
        self.run(Stage::Mail, ctx, None, None)
    }
    fn rcpt(&self, ctx: &mut Context, rcpt: &Recipient) -> Verdict {
        self.run(Stage::Rcpt, ctx, Some(rcpt), None)
    }
    fn data(&self, ctx: &mut Context, message: &mut Message<'_>) -> Verdict {
        self.run(Stage::Data, ctx, None, Some(message))
    }
}

/// Index of a stage in [`Stage::ALL`].
fn stage_index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

/// The rules directory a configuration uses, if any.
pub fn rules_dir(config: &Config) -> Option<&Path> {
    config.rules_dir.as_deref()
}

/// The rule set a configuration asks for: loaded from its `rules_dir`, or
/// `None` when it names none.
pub fn load_for(config: &Config) -> Result<Option<RuleSet>, ConfigError> {
    match rules_dir(config) {
        Some(dir) => RuleSet::load_dir(dir, RuleOptions::from_config(config)).map(Some),
        None => Ok(None),
    }
}

/// The filter chain the `smtpgate` binary runs for `config`: the rule set
/// of its `rules_dir` (or no filter at all). The simulator builds its chain
/// with the same function.
pub fn chain_for(config: &Config) -> Result<FilterChain, ConfigError> {
    let mut chain = FilterChain::new();
    if let Some(set) = load_for(config)? {
        if let Some(dir) = rules_dir(config) {
            log::info!("rules: {} loaded from {}", set.len(), dir.display());
        }
        chain.push(Arc::new(set));
    }
    Ok(chain)
}

/// A serde_yaml error as a [`ConfigError`] with its line.
fn yaml_error(err: serde_yaml::Error, path: &Path) -> ConfigError {
    let mut reason = err.to_string();
    let line = err.location().map(|loc| {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = reason.strip_suffix(&suffix) {
            reason = stripped.to_string();
        }
        loc.line()
    });
    ConfigError {
        file: path.display().to_string(),
        line,
        reason,
    }
}

/// The line of a top-level key.
fn config_line(text: &str, key: &str) -> Option<usize> {
    crate::config::locate::line_of(text, key)
}

/// A score for people and headers: at most two decimals, no trailing zeros.
pub fn fmt_score(score: f64) -> String {
    let s = format!("{score:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A one-line description of a condition, for summaries.
fn describe(c: &Cond) -> String {
    match c {
        Cond::All(v) => format!(
            "all({})",
            v.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Cond::Any(v) => format!(
            "any({})",
            v.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Cond::Not(c) => format!("not({})", describe(c)),
        Cond::Test(t) => match t {
            Test::ClientIp(t) => format!("client_ip in {} networks", t.len()),
            Test::Helo(m) => format!("helo {}", describe_names(m)),
            Test::HeloIpLiteral(b) => format!("helo_ip_literal {b}"),
            Test::Tls(b) => format!("tls {b}"),
            Test::Authenticated(b) => format!("authenticated {b}"),
            Test::AuthUser(m) => format!("auth_user {}", describe_names(m)),
            Test::Sender(m) => format!("sender {}", describe_addresses(m)),
            Test::NullSender(b) => format!("null_sender {b}"),
            Test::Recipient(m) => format!("recipient {}", describe_addresses(m)),
            Test::RecipientCount(r) => format!("recipient_count {}", describe_range(r)),
            Test::DeclaredSize(r) => format!("declared_size {}", describe_range(r)),
            Test::Size(r) => format!("size {}", describe_range(r)),
            Test::Score(r) => format!("score {}", describe_range(r)),
            Test::Header {
                name,
                regexes,
                present,
                raw,
            } => match present {
                Some(true) => format!("header {name} present"),
                Some(false) => format!("header {name} absent"),
                None => format!(
                    "header {name}{} =~ {} regex(es)",
                    if *raw { " (raw)" } else { "" },
                    regexes.as_ref().map(|s| s.len()).unwrap_or(0)
                ),
            },
            Test::Body { decoded, ids } => format!(
                "body{} =~ {} regex(es)",
                if *decoded { " (decoded)" } else { "" },
                ids.len()
            ),
            Test::Attachment {
                regexes,
                extensions,
            } => {
                let mut v: Vec<&str> = extensions.iter().map(|s| s.as_str()).collect();
                v.sort();
                let n = regexes.as_ref().map(|s| s.len()).unwrap_or(0);
                format!("attachment extensions [{}] or {n} regex(es)", v.join(" "))
            }
            Test::Fact { name, test } => match test {
                FactTest::Present(true) => format!("fact {name} known"),
                FactTest::Present(false) => format!("fact {name} unknown"),
                FactTest::Is(values) => {
                    let mut v: Vec<&str> = values.iter().map(|s| s.as_str()).collect();
                    v.sort();
                    format!("fact {name} is [{}]", v.join(" "))
                }
                FactTest::Regex(set) => format!("fact {name} =~ {} regex(es)", set.len()),
                FactTest::Number(r) => format!("fact {name} {}", describe_range(r)),
            },
        },
    }
}

/// `(2 regexes, 3 names)`.
fn describe_names(m: &NameMatcher) -> String {
    format!(
        "({} regexes, {} names)",
        m.regexes.as_ref().map(|s| s.len()).unwrap_or(0),
        m.names.len()
    )
}

/// `(1 regexes, 0 addresses, 12 domains)`.
fn describe_addresses(m: &AddressMatcher) -> String {
    format!(
        "({} regexes, {} addresses, {} domains)",
        m.regexes.as_ref().map(|s| s.len()).unwrap_or(0),
        m.addresses.len(),
        m.domains.len()
    )
}

/// `>= 3`, `<= 10`, `3..10`.
fn describe_range<T: std::fmt::Display + Copy>(r: &Range<T>) -> String {
    match (r.min, r.max) {
        (Some(a), Some(b)) => format!("{a}..{b}"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "any".into(),
    }
}

/// Records a hit.
pub(crate) fn hit(ctx: &mut Context, rule: &str, stage: Stage, action: &str, score: f64) {
    ctx.hits.push(Hit {
        rule: rule.to_string(),
        stage,
        action: action.to_string(),
        score,
    });
}

#[cfg(test)]
mod tests;
