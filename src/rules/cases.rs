//! The `tests:` of a rule file: cases the rules must pass, checked when
//! they load so that a malformed case is a load error with its line.
//!
//! A case is data only here (envelope, message, facts, what to expect);
//! the program layer runs it through the simulator, the same chain a live
//! session runs, and compares ([`RuleTest::judge`]).

use super::model::{ExpectDef, TestDef};
use crate::config::ConfigError;
use crate::facts::Value;
use crate::filter::Stage;
use crate::proto::{parse_command, Command, EnhancedCode};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The message a case without `message:` or `message_file:` sends.
pub const DEFAULT_MESSAGE: &str =
    "Message-ID: <rule-test@smtpgate.invalid>\r\nSubject: rule test\r\n\r\nrule test\r\n";

/// How a case must end, in the simulator's words (`smtpgate test-rules`
/// prints `verdict: relayed`, `rejected`, ...); the short forms are the
/// action names of rule files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVerdict {
    /// Relayed or delivered: the message goes on.
    #[serde(alias = "accepted")]
    Accept,
    /// Relayed to the upstream.
    #[serde(alias = "relay")]
    Relayed,
    /// Stored in the spool (no upstream).
    #[serde(alias = "deliver")]
    Delivered,
    /// Refused with a 5xx.
    #[serde(alias = "rejected")]
    Reject,
    /// Refused with a 4xx, greylisting included.
    #[serde(alias = "tempfailed")]
    Tempfail,
    /// Refused with a 4xx by a `greylist` rule (a first attempt).
    #[serde(alias = "greylisted")]
    Greylist,
    /// Answered 250 and dropped.
    #[serde(alias = "discarded")]
    Discard,
    /// Answered 250 and quarantined.
    #[serde(alias = "quarantined")]
    Quarantine,
    /// Closed by a `disconnect` rule.
    #[serde(alias = "disconnected")]
    Disconnect,
}

impl ExpectedVerdict {
    /// The word as written in rule files.
    pub fn name(self) -> &'static str {
        match self {
            ExpectedVerdict::Accept => "accept",
            ExpectedVerdict::Relayed => "relayed",
            ExpectedVerdict::Delivered => "delivered",
            ExpectedVerdict::Reject => "reject",
            ExpectedVerdict::Tempfail => "tempfail",
            ExpectedVerdict::Greylist => "greylist",
            ExpectedVerdict::Discard => "discard",
            ExpectedVerdict::Quarantine => "quarantine",
            ExpectedVerdict::Disconnect => "disconnect",
        }
    }

    /// Whether a simulation that ended as `actual` (a verdict name of the
    /// simulator: `relayed`, `rejected`, ...) and was, or was not,
    /// greylisted is this verdict.
    pub fn matches(self, actual: &str, greylisted: bool) -> bool {
        match self {
            ExpectedVerdict::Accept => matches!(actual, "relayed" | "delivered"),
            ExpectedVerdict::Relayed => actual == "relayed",
            ExpectedVerdict::Delivered => actual == "delivered",
            ExpectedVerdict::Reject => actual == "rejected",
            ExpectedVerdict::Tempfail => actual == "tempfailed",
            ExpectedVerdict::Greylist => actual == "tempfailed" && greylisted,
            ExpectedVerdict::Discard => actual == "discarded",
            ExpectedVerdict::Quarantine => actual == "quarantined",
            ExpectedVerdict::Disconnect => actual == "disconnected",
        }
    }
}

/// What a case must end with; every part but the verdict is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// How it ends.
    pub verdict: ExpectedVerdict,
    /// The final reply's code.
    pub code: Option<u16>,
    /// The final reply's enhanced code.
    pub enhanced: Option<EnhancedCode>,
    /// The final score (to two decimals).
    pub score: Option<f64>,
    /// The stage it ends at.
    pub stage: Option<Stage>,
    /// Rules that must have matched.
    pub matched: Vec<String>,
    /// Rules that must not have matched.
    pub not_matched: Vec<String>,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verdict.name())?;
        if let Some(c) = self.code {
            write!(f, " {c}")?;
        }
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        if let Some(s) = self.score {
            write!(f, " score {}", super::fmt_score(s))?;
        }
        if let Some(s) = self.stage {
            write!(f, " at {s}")?;
        }
        if !self.matched.is_empty() {
            write!(f, ", matching {}", self.matched.join(", "))?;
        }
        if !self.not_matched.is_empty() {
            write!(f, ", not matching {}", self.not_matched.join(", "))?;
        }
        Ok(())
    }
}

/// How a case's simulation ended, as far as a case can expect it.
#[derive(Debug, Clone, PartialEq)]
pub struct Actual {
    /// The simulator's verdict name (`relayed`, `rejected`, ...).
    pub verdict: String,
    /// A `greylist` rule refused it (a first attempt).
    pub greylisted: bool,
    /// The final reply's code and enhanced code; `None` when the reply is
    /// the upstream's.
    pub reply: Option<(u16, Option<EnhancedCode>)>,
    /// The final score.
    pub score: f64,
    /// The stage it ended at.
    pub stage: Stage,
    /// The rules that matched, in order.
    pub matched: Vec<String>,
}

impl fmt::Display for Actual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verdict)?;
        if self.greylisted {
            write!(f, " (greylisted)")?;
        }
        match self.reply {
            Some((code, enhanced)) => {
                write!(f, " {code}")?;
                if let Some(e) = enhanced {
                    write!(f, " {e}")?;
                }
            }
            None => write!(f, " (the upstream's reply)")?,
        }
        write!(
            f,
            " score {} at {}",
            super::fmt_score(self.score),
            self.stage
        )?;
        if self.matched.is_empty() {
            write!(f, ", no rule matched")
        } else {
            write!(f, ", matched {}", self.matched.join(", "))
        }
    }
}

/// One case of a rule file's `tests:`.
#[derive(Debug, Clone)]
pub struct RuleTest {
    /// The rule file it is in.
    pub file: PathBuf,
    /// The line the case starts on.
    pub line: Option<usize>,
    /// Its name, unique in the file.
    pub name: String,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The HELO name; `None`: the client address as an address literal.
    pub helo: Option<String>,
    /// Authenticated as this user.
    pub auth_user: Option<String>,
    /// Under TLS.
    pub tls: bool,
    /// Envelope sender; empty for `<>`.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message as written (bare LF allowed, as for `test-rules`).
    pub message: Vec<u8>,
    /// Facts given instead of looked up.
    pub facts: Vec<(String, Value)>,
    /// What the greylisting store would answer (`test-rules --greylist-passed`).
    pub greylist_passed: bool,
    /// The SIZE= the client announces; `None`: the message's size.
    pub declared_size: Option<u64>,
    /// What must come of it.
    pub expect: Expect,
}

impl RuleTest {
    /// `file:line` for messages.
    pub fn place(&self) -> String {
        format!(
            "{}:{}",
            self.file.display(),
            self.line
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into())
        )
    }

    /// The HELO name the case sends.
    pub fn helo_name(&self) -> String {
        self.helo.clone().unwrap_or_else(|| match self.client_ip {
            IpAddr::V4(ip) => format!("[{ip}]"),
            IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        })
    }

    /// Whether `actual` is what the case expects.
    pub fn judge(&self, actual: &Actual) -> bool {
        let e = &self.expect;
        e.verdict.matches(&actual.verdict, actual.greylisted)
            && e.code
                .is_none_or(|c| actual.reply.is_some_and(|r| r.0 == c))
            && e.enhanced
                .is_none_or(|x| actual.reply.is_some_and(|r| r.1 == Some(x)))
            && e.score.is_none_or(|s| (s - actual.score).abs() < 0.005)
            && e.stage.is_none_or(|s| s == actual.stage)
            && e.matched.iter().all(|r| actual.matched.contains(r))
            && !e.not_matched.iter().any(|r| actual.matched.contains(r))
    }
}

/// A fact value as `test-rules --fact NAME=VALUE` takes it: text, with a
/// comma making a list; a YAML list is a list too.
fn fact_value(v: &serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    let scalar = |v: &Y| match v {
        Y::String(s) => Some(s.trim().to_string()),
        Y::Number(n) => Some(n.to_string()),
        Y::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Y::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "a list of words or numbers".to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        other => match scalar(other) {
            Some(s) if s.contains(',') => Ok(Value::List(
                s.split(',').map(|p| p.trim().to_string()).collect(),
            )),
            Some(s) => Ok(Value::text(s)),
            None => Err("give a word, a number or a list".into()),
        },
    }
}

/// Checks and reads the cases of one rule file: `path` names it in
/// errors, `text` is what it holds (for lines), and `message_file`s are
/// read relative to its directory.
pub(crate) fn compile(
    defs: &[TestDef],
    path: &Path,
    text: &str,
) -> Result<Vec<RuleTest>, ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        let line_of = |key: &str| {
            let at = if key.is_empty() {
                format!("tests[{i}]")
            } else {
                format!("tests[{i}].{key}")
            };
            crate::config::locate::line_of(text, &at)
        };
        let err = |key: &str, reason: String| ConfigError {
            file: path.display().to_string(),
            line: line_of(key),
            reason: format!("test {:?}: {reason}", def.name),
        };
        if def.name.trim().is_empty() {
            return Err(err("name", "name: must not be empty".into()));
        }
        if let Some(first) = seen.insert(&def.name, i) {
            let first_line = crate::config::locate::line_of(text, &format!("tests[{first}]"))
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into());
            return Err(err(
                "name",
                format!("the name is already used at line {first_line}"),
            ));
        }
        let client_ip: IpAddr = def.client_ip.trim().parse().map_err(|_| {
            err(
                "client_ip",
                format!("client_ip: {:?} is not an IP address", def.client_ip),
            )
        })?;
        let mail = format!("MAIL FROM:<{}>", def.from);
        if !matches!(
            parse_command(mail.as_bytes(), true),
            Ok(Command::Mail { .. })
        ) {
            return Err(err(
                "from",
                format!("from: {:?} is not an address", def.from),
            ));
        }
        if def.to.is_empty() {
            return Err(err("to", "to: give at least one recipient".into()));
        }
        for (j, to) in def.to.iter().enumerate() {
            let rcpt = format!("RCPT TO:<{to}>");
            if !matches!(
                parse_command(rcpt.as_bytes(), true),
                Ok(Command::Rcpt { .. })
            ) {
                return Err(err(
                    &format!("to[{j}]"),
                    format!("to: {to:?} is not an address"),
                ));
            }
        }
        let message = match (&def.message, &def.message_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "message_file",
                    "give message or message_file, not both".into(),
                ))
            }
            (Some(m), None) => m.clone().into_bytes(),
            (None, Some(f)) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(f);
                std::fs::read(&file).map_err(|e| {
                    err(
                        "message_file",
                        format!("message_file: cannot read {}: {e}", file.display()),
                    )
                })?
            }
            (None, None) => DEFAULT_MESSAGE.as_bytes().to_vec(),
        };
        let mut facts = Vec::new();
        for (name, value) in &def.facts {
            let value = fact_value(value)
                .map_err(|why| err(&format!("facts.{name}"), format!("facts: {name}: {why}")))?;
            facts.push((name.clone(), value));
        }
        out.push(RuleTest {
            file: path.to_path_buf(),
            line: line_of(""),
            name: def.name.clone(),
            client_ip,
            helo: def.helo.clone(),
            auth_user: def.auth_user.clone(),
            tls: def.tls,
            from: def.from.clone(),
            to: def.to.clone(),
            message,
            facts,
            greylist_passed: def.greylist_passed,
            declared_size: def.declared_size.map(|b| b.0),
            expect: expect(&def.expect).map_err(|(key, why)| err(key, why))?,
        });
    }
    Ok(out)
}

/// The `expect:` of a case; an error names its key.
fn expect(def: &ExpectDef) -> Result<Expect, (&'static str, String)> {
    let enhanced = match &def.enhanced {
        Some(e) => Some(e.parse::<EnhancedCode>().map_err(|_| {
            (
                "expect.enhanced",
                format!("expect.enhanced: {e:?} is not an enhanced status code (X.Y.Z)"),
            )
        })?),
        None => None,
    };
    if let Some(c) = def.code {
        if !(200..=599).contains(&c) {
            return Err((
                "expect.code",
                format!("expect.code: {c} is not a reply code"),
            ));
        }
    }
    Ok(Expect {
        verdict: def.verdict,
        code: def.code,
        enhanced,
        score: def.score,
        stage: def.stage,
        matched: def.matched.clone(),
        not_matched: def.not_matched.clone(),
    })
}

/// Checks that every rule a case names in `expect.matched` or
/// `expect.not_matched` is a loaded rule (`rules`: every enabled rule's
/// name), so a misspelt name cannot make a case pass unseen. Names with a
/// `:` are pseudo-rules (`scoring:reject_at`, a scanner's default action)
/// and are taken as written.
pub(crate) fn check_names(
    tests: &[RuleTest],
    texts: &HashMap<PathBuf, &str>,
    rules: &std::collections::HashSet<&str>,
) -> Result<(), ConfigError> {
    for t in tests {
        for (key, names) in [
            ("matched", &t.expect.matched),
            ("not_matched", &t.expect.not_matched),
        ] {
            for (j, name) in names.iter().enumerate() {
                if name.contains(':') || rules.contains(name.as_str()) {
                    continue;
                }
                let index = tests
                    .iter()
                    .filter(|o| o.file == t.file)
                    .position(|o| o.name == t.name)
                    .unwrap_or(0);
                let line = texts.get(&t.file).and_then(|text| {
                    crate::config::locate::line_of(
                        text,
                        &format!("tests[{index}].expect.{key}[{j}]"),
                    )
                });
                return Err(ConfigError {
                    file: t.file.display().to_string(),
                    line: line.or(t.line),
                    reason: format!(
                        "test {:?}: expect.{key}: no enabled rule is named {name:?}",
                        t.name
                    ),
                });
            }
        }
    }
    Ok(())
}
