//! Turns parsed rule files into the compiled rule set, checking everything
//! serde cannot: regexes, CIDRs, domains, replies and their classes, header
//! names and placeholders, and which matcher and action fit which stage.
//!
//! Every error names the file and line of the offending key (found by
//! re-reading the YAML with `config::locate`), the rule and the reason, so
//! `smtpgate check` and start-up point straight at it.

use super::lists::{CidrTable, DomainSet, Entry, ListFiles};
use super::model::{self, ActionName, OneOrMany};
use super::{
    Action, AddressMatcher, Cond, FactTest, NameMatcher, Range, Rule, Scoring, Source,
    StagePatterns, Template, TemplatePart, Test, Var,
};
use crate::config::{locate, ConfigError};
use crate::filter::{Stage, Verdict};
use crate::proto::{EnhancedCode, Reply};
use regex::{RegexSet, RegexSetBuilder};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Size limit for one compiled regex or set (the regex crate's default is
/// 10 MiB, too small for sets of thousands of patterns).
pub(crate) const REGEX_SIZE_LIMIT: usize = 256 << 20;

/// Compiles the rules of one file.
pub(crate) struct FileCompiler<'a> {
    /// The rule file, for errors.
    pub file: &'a Path,
    /// Its text, to find lines for errors.
    pub text: &'a str,
    /// Where relative list file names are resolved (the file's directory).
    pub base: &'a Path,
    /// List files read so far in this load.
    pub lists: &'a mut ListFiles,
    /// The file, shared by its compiled rules.
    pub source: Arc<Source>,
}

/// Where in the file a rule is, for its errors.
struct At<'r> {
    /// Index in the file's `rules` list.
    index: usize,
    /// Rule name.
    name: &'r str,
    /// Stage the rule runs at.
    stage: Stage,
}

impl FileCompiler<'_> {
    /// An error at the key path `path` (relative to the rule) of rule `at`.
    fn err(&self, at: &At<'_>, path: &str, reason: impl std::fmt::Display) -> ConfigError {
        let full = if path.is_empty() {
            format!("rules[{}]", at.index)
        } else {
            format!("rules[{}].{path}", at.index)
        };
        let shown = if path.is_empty() {
            format!("rule {:?}: {reason}", at.name)
        } else {
            format!("rule {:?}: {path}: {reason}", at.name)
        };
        ConfigError {
            file: self.file.display().to_string(),
            line: locate::line_of(self.text, &full),
            reason: shown,
        }
    }

    /// An error about an entry of a list (inline at `path`, or in a list file).
    fn entry_err(&self, at: &At<'_>, path: &str, entry: &Entry, reason: String) -> ConfigError {
        match &entry.origin {
            Some((file, line)) => {
                let rule_line = locate::line_of(self.text, &format!("rules[{}]", at.index));
                ConfigError {
                    file: file.display().to_string(),
                    line: Some(*line),
                    reason: format!(
                        "{reason} (list used by rule {:?} at {}:{})",
                        at.name,
                        self.file.display(),
                        rule_line
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "?".into())
                    ),
                }
            }
            None => self.err(at, path, reason),
        }
    }

    /// The line where rule `index` starts.
    pub(crate) fn rule_line(&self, index: usize) -> Option<usize> {
        locate::line_of(self.text, &format!("rules[{index}]"))
    }

    /// Compiles rule `index` of the file. Body regexes go into the stage's
    /// shared pattern lists.
    pub(crate) fn rule(
        &mut self,
        index: usize,
        def: &model::RuleDef,
        patterns: &mut StagePatterns,
    ) -> Result<Rule, ConfigError> {
        let stage = def.stage;
        let at = At {
            index,
            name: &def.name,
            stage,
        };
        check_name(&def.name).map_err(|r| self.err(&at, "name", r))?;
        let cond = match &def.when {
            Some(c) => Some(self.condition(&at, "when", c, patterns)?),
            None => None,
        };
        let action = self.action(&at, def)?;
        Ok(Rule {
            name: def.name.clone(),
            source: self.source.clone(),
            index,
            description: def.description.clone(),
            cond,
            action,
            series: std::sync::OnceLock::new(),
        })
    }

    /// Compiles a condition; several keys in one mapping must all hold.
    fn condition(
        &mut self,
        at: &At<'_>,
        path: &str,
        c: &model::Condition,
        patterns: &mut StagePatterns,
    ) -> Result<Cond, ConfigError> {
        let mut parts: Vec<Cond> = Vec::new();
        let key = |k: &str| format!("{path}.{k}");
        if let Some(ip) = &c.client_ip {
            let p = key("client_ip");
            parts.push(Cond::Test(Test::ClientIp(Arc::new(
                self.cidrs(at, &p, ip)?,
            ))));
        }
        if let Some(b) = c.tls {
            parts.push(Cond::Test(Test::Tls(b)));
        }
        if let Some(b) = c.authenticated {
            parts.push(Cond::Test(Test::Authenticated(b)));
        }
        if let Some(n) = &c.helo {
            let p = key("helo");
            self.needs(at, &p, Stage::Helo)?;
            parts.push(Cond::Test(Test::Helo(self.names(at, &p, n)?)));
        }
        if let Some(b) = c.helo_ip_literal {
            self.needs(at, &key("helo_ip_literal"), Stage::Helo)?;
            parts.push(Cond::Test(Test::HeloIpLiteral(b)));
        }
        if let Some(n) = &c.auth_user {
            let p = key("auth_user");
            self.needs(at, &p, Stage::Auth)?;
            parts.push(Cond::Test(Test::AuthUser(self.names(at, &p, n)?)));
        }
        if let Some(b) = c.null_sender {
            self.needs(at, &key("null_sender"), Stage::Mail)?;
            parts.push(Cond::Test(Test::NullSender(b)));
        }
        if let Some(a) = &c.sender {
            let p = key("sender");
            self.needs(at, &p, Stage::Mail)?;
            parts.push(Cond::Test(Test::Sender(self.addresses(at, &p, a)?)));
        }
        if let Some(a) = &c.recipient {
            let p = key("recipient");
            self.needs(at, &p, Stage::Rcpt)?;
            parts.push(Cond::Test(Test::Recipient(self.addresses(at, &p, a)?)));
        }
        if let Some(r) = &c.recipient_count {
            let p = key("recipient_count");
            self.needs(at, &p, Stage::Rcpt)?;
            parts.push(Cond::Test(Test::RecipientCount(
                self.range(at, &p, r.min, r.max)?,
            )));
        }
        if let Some(r) = &c.declared_size {
            let p = key("declared_size");
            self.needs(at, &p, Stage::Mail)?;
            let range = self.range(at, &p, r.min.map(|b| b.0), r.max.map(|b| b.0))?;
            parts.push(Cond::Test(Test::DeclaredSize(range)));
        }
        if let Some(r) = &c.score {
            let p = key("score");
            if r.min.is_none() && r.max.is_none() {
                return Err(self.err(at, &p, "give min, max or both"));
            }
            if let (Some(a), Some(b)) = (r.min, r.max) {
                if a > b {
                    return Err(self.err(at, &p, format!("min {a} is above max {b}")));
                }
            }
            parts.push(Cond::Test(Test::Score(Range {
                min: r.min,
                max: r.max,
            })));
        }
        if let Some(r) = &c.size {
            let p = key("size");
            self.needs(at, &p, Stage::Data)?;
            let range = self.range(at, &p, r.min.map(|b| b.0), r.max.map(|b| b.0))?;
            parts.push(Cond::Test(Test::Size(range)));
        }
        if let Some(h) = &c.header {
            let p = key("header");
            self.needs(at, &p, Stage::Data)?;
            parts.push(Cond::Test(self.header(at, &p, h)?));
        }
        if let Some(a) = &c.attachment {
            let p = key("attachment");
            self.needs(at, &p, Stage::Data)?;
            let mut regexes = self.regex_entries(at, &p, &a.regex, a.regex_file.as_deref())?;
            let mut extensions = HashSet::new();
            for (entry, epath) in self.entries(
                at,
                &p,
                "extensions",
                &a.extensions,
                a.extensions_file.as_deref(),
            )? {
                let e = entry.text.trim_start_matches('.').to_ascii_lowercase();
                if e.is_empty() || e.contains(['/', '\\', ' ']) {
                    return Err(self.entry_err(
                        at,
                        &epath,
                        &entry,
                        format!("{:?} is not a file name extension (e.g. exe)", entry.text),
                    ));
                }
                extensions.insert(e);
            }
            if regexes.is_empty() && extensions.is_empty() {
                return Err(self.err(at, &p, "give regex, extensions or a list file"));
            }
            let set = self.regex_set(at, &p, &mut regexes)?;
            parts.push(Cond::Test(Test::Attachment {
                regexes: set,
                extensions,
            }));
        }
        if let Some(f) = &c.fact {
            parts.push(Cond::Test(self.fact(at, &key("fact"), f)?));
        }
        if let Some(b) = &c.body {
            let p = key("body");
            self.needs(at, &p, Stage::Data)?;
            let entries = self.regex_entries(at, &p, &b.regex, b.regex_file.as_deref())?;
            if entries.is_empty() {
                return Err(self.err(at, &p, "give regex or regex_file"));
            }
            let list = if b.decoded {
                &mut patterns.decoded
            } else {
                &mut patterns.raw
            };
            let mut ids = Vec::new();
            for (entry, epath) in &entries {
                // Each pattern is checked on its own so an error names it;
                // matching uses the stage's one set.
                regex::bytes::RegexBuilder::new(&entry.text)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| self.entry_err(at, epath, entry, regex_error(&entry.text, &e)))?;
                ids.push(list.intern(&entry.text));
            }
            parts.push(Cond::Test(Test::Body {
                decoded: b.decoded,
                ids,
            }));
        }
        if let Some(list) = &c.all {
            let p = key("all");
            if list.is_empty() {
                return Err(self.err(at, &p, "an empty list"));
            }
            let mut inner = Vec::new();
            for (i, sub) in list.iter().enumerate() {
                inner.push(self.condition(at, &format!("{p}[{i}]"), sub, patterns)?);
            }
            parts.push(Cond::All(inner));
        }
        if let Some(list) = &c.any {
            let p = key("any");
            if list.is_empty() {
                return Err(self.err(at, &p, "an empty list"));
            }
            let mut inner = Vec::new();
            for (i, sub) in list.iter().enumerate() {
                inner.push(self.condition(at, &format!("{p}[{i}]"), sub, patterns)?);
            }
            parts.push(Cond::Any(inner));
        }
        if let Some(sub) = &c.not {
            let inner = self.condition(at, &key("not"), sub, patterns)?;
            parts.push(Cond::Not(Box::new(inner)));
        }
        match parts.len() {
            0 => Err(self.err(
                at,
                path,
                "an empty condition; leave `when` out to match always",
            )),
            1 => Ok(parts.pop().unwrap_or(Cond::All(Vec::new()))),
            _ => Ok(Cond::All(parts)),
        }
    }

    /// Refuses a matcher at a stage where what it looks at is not known yet.
    fn needs(&self, at: &At<'_>, path: &str, from: Stage) -> Result<(), ConfigError> {
        if at.stage >= from {
            return Ok(());
        }
        let what = match from {
            Stage::Helo => "the HELO name is not known before the helo stage",
            Stage::Auth => "the authenticated user is not known before the auth stage",
            Stage::Mail => "the sender is not known before the mail stage",
            Stage::Rcpt => "recipients are not known before the rcpt stage",
            _ => "the message is only known at the data stage",
        };
        Err(self.err(at, path, format!("{what} (this rule runs at {})", at.stage)))
    }

    /// A min/max range; at least one bound, min not above max.
    fn range(
        &self,
        at: &At<'_>,
        path: &str,
        min: Option<u64>,
        max: Option<u64>,
    ) -> Result<Range<u64>, ConfigError> {
        if min.is_none() && max.is_none() {
            return Err(self.err(at, path, "give min, max or both"));
        }
        if let (Some(a), Some(b)) = (min, max) {
            if a > b {
                return Err(self.err(at, path, format!("min {a} is above max {b}")));
            }
        }
        Ok(Range { min, max })
    }

    /// Inline entries of `key` plus those of its list file, each with the
    /// key path it came from.
    fn entries(
        &mut self,
        at: &At<'_>,
        path: &str,
        key: &str,
        inline: &[String],
        file: Option<&str>,
    ) -> Result<Vec<(Entry, String)>, ConfigError> {
        let mut out: Vec<(Entry, String)> = inline
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    Entry {
                        text: s.trim().to_string(),
                        origin: None,
                    },
                    format!("{path}.{key}[{i}]"),
                )
            })
            .collect();
        if let Some(name) = file {
            let fpath = format!("{path}.{key}_file");
            let entries = self
                .lists
                .read(self.base, name)
                .map_err(|r| self.err(at, &fpath, r))?;
            out.extend(entries.iter().map(|e| (e.clone(), fpath.clone())));
        }
        Ok(out)
    }

    /// Regex entries: `regex` (one or many) plus `regex_file`.
    fn regex_entries(
        &mut self,
        at: &At<'_>,
        path: &str,
        regex: &OneOrMany,
        file: Option<&str>,
    ) -> Result<Vec<(Entry, String)>, ConfigError> {
        let mut out = self.entries(at, path, "regex", &regex.0, file)?;
        if regex.0.len() == 1 {
            // A single string has no index in the YAML.
            if let Some(first) = out.first_mut() {
                if first.0.origin.is_none() {
                    first.1 = format!("{path}.regex");
                }
            }
        }
        // Regexes are kept as written (leading spaces may matter) except
        // for inline entries, which YAML already delimits.
        for (i, r) in regex.0.iter().enumerate() {
            if let Some(e) = out.get_mut(i) {
                e.0.text = r.clone();
            }
        }
        Ok(out)
    }

    /// One `RegexSet` for a matcher's regexes, each checked on its own
    /// first so an error names the pattern; `None` when there are none.
    fn regex_set(
        &self,
        at: &At<'_>,
        _path: &str,
        entries: &mut [(Entry, String)],
    ) -> Result<Option<RegexSet>, ConfigError> {
        if entries.is_empty() {
            return Ok(None);
        }
        for (entry, epath) in entries.iter() {
            regex::RegexBuilder::new(&entry.text)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| self.entry_err(at, epath, entry, regex_error(&entry.text, &e)))?;
        }
        let set = RegexSetBuilder::new(entries.iter().map(|(e, _)| e.text.as_str()))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| self.err(at, _path, format!("the regexes together: {e}")))?;
        Ok(Some(set))
    }

    /// `fact: { name, is | regex | min/max | present }`. Whether a check
    /// gives the fact, and at this stage, is checked when the gateway plans
    /// its checks.
    fn fact(&mut self, at: &At<'_>, path: &str, def: &model::FactDef) -> Result<Test, ConfigError> {
        let name = def.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(self.err(
                at,
                &format!("{path}.name"),
                format!(
                    "{:?} is not a fact name (like iprev or client.ptr)",
                    def.name
                ),
            ));
        }
        let forms = [
            !def.is.0.is_empty(),
            !def.regex.0.is_empty(),
            def.min.is_some() || def.max.is_some(),
            def.present.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(self.err(
                at,
                path,
                "give exactly one of is, regex, min/max or present",
            ));
        }
        let test = if let Some(p) = def.present {
            FactTest::Present(p)
        } else if !def.is.0.is_empty() {
            FactTest::Is(def.is.0.iter().map(|v| v.to_ascii_lowercase()).collect())
        } else if !def.regex.0.is_empty() {
            let mut entries = self.regex_entries(at, path, &def.regex, None)?;
            match self.regex_set(at, path, &mut entries)? {
                Some(set) => FactTest::Regex(set),
                None => return Err(self.err(at, path, "give a regex")),
            }
        } else {
            if let (Some(a), Some(b)) = (def.min, def.max) {
                if a > b {
                    return Err(self.err(at, path, format!("min {a} is above max {b}")));
                }
            }
            FactTest::Number(Range {
                min: def.min,
                max: def.max,
            })
        };
        Ok(Test::Fact {
            name: name.to_string(),
            test,
        })
    }

    /// `client_ip: { cidrs, cidrs_file }`.
    fn cidrs(
        &mut self,
        at: &At<'_>,
        path: &str,
        def: &model::CidrDef,
    ) -> Result<CidrTable, ConfigError> {
        let mut table = CidrTable::default();
        for (entry, epath) in
            self.entries(at, path, "cidrs", &def.cidrs, def.cidrs_file.as_deref())?
        {
            table
                .add(&entry.text)
                .map_err(|r| self.entry_err(at, &epath, &entry, r))?;
        }
        if table.len() == 0 {
            return Err(self.err(
                at,
                path,
                "give cidrs or cidrs_file (with at least one entry)",
            ));
        }
        Ok(table)
    }

    /// A name matcher (`helo`, `auth_user`).
    fn names(
        &mut self,
        at: &At<'_>,
        path: &str,
        def: &model::NameDef,
    ) -> Result<NameMatcher, ConfigError> {
        let mut regexes = self.regex_entries(at, path, &def.regex, def.regex_file.as_deref())?;
        let mut names = HashSet::new();
        for (entry, _) in self.entries(at, path, "names", &def.names, def.names_file.as_deref())? {
            names.insert(entry.text.to_ascii_lowercase());
        }
        if regexes.is_empty() && names.is_empty() {
            return Err(self.err(at, path, "give regex, names or a list file"));
        }
        Ok(NameMatcher {
            regexes: self.regex_set(at, path, &mut regexes)?,
            names,
        })
    }

    /// An address matcher (`sender`, `recipient`).
    fn addresses(
        &mut self,
        at: &At<'_>,
        path: &str,
        def: &model::AddressDef,
    ) -> Result<AddressMatcher, ConfigError> {
        let mut regexes = self.regex_entries(at, path, &def.regex, def.regex_file.as_deref())?;
        let mut addresses = HashSet::new();
        for (entry, epath) in self.entries(
            at,
            path,
            "addresses",
            &def.addresses,
            def.addresses_file.as_deref(),
        )? {
            let a = entry.text.trim_start_matches('<').trim_end_matches('>');
            if !a.contains('@') && !a.eq_ignore_ascii_case("postmaster") {
                return Err(self.entry_err(
                    at,
                    &epath,
                    &entry,
                    format!(
                        "{:?} is not an address (local@domain); use domains for a whole domain",
                        entry.text
                    ),
                ));
            }
            addresses.insert(a.to_ascii_lowercase());
        }
        let mut domains = DomainSet::default();
        for (entry, epath) in self.entries(
            at,
            path,
            "domains",
            &def.domains,
            def.domains_file.as_deref(),
        )? {
            domains
                .add(&entry.text)
                .map_err(|r| self.entry_err(at, &epath, &entry, r))?;
        }
        if regexes.is_empty() && addresses.is_empty() && domains.is_empty() {
            return Err(self.err(at, path, "give regex, addresses, domains or a list file"));
        }
        Ok(AddressMatcher {
            regexes: self.regex_set(at, path, &mut regexes)?,
            addresses,
            domains,
        })
    }

    /// `header: { name, regex | present, raw }`.
    fn header(
        &mut self,
        at: &At<'_>,
        path: &str,
        def: &model::HeaderMatchDef,
    ) -> Result<Test, ConfigError> {
        check_header_name(&def.name).map_err(|r| self.err(at, &format!("{path}.name"), r))?;
        let mut regexes = self.regex_entries(at, path, &def.regex, def.regex_file.as_deref())?;
        match (def.present, regexes.is_empty()) {
            (Some(_), false) => {
                return Err(self.err(
                    at,
                    &format!("{path}.present"),
                    "give either present or regex, not both",
                ))
            }
            (None, true) => return Err(self.err(at, path, "give regex, regex_file or present")),
            _ => {}
        }
        Ok(Test::Header {
            name: def.name.clone(),
            regexes: self.regex_set(at, path, &mut regexes)?,
            present: def.present,
            raw: def.raw,
        })
    }

    /// The action with its reply, score or header, checked against each other.
    fn action(&self, at: &At<'_>, def: &model::RuleDef) -> Result<Action, ConfigError> {
        let a = def.action;
        if def.reply.is_some()
            && !matches!(
                a,
                ActionName::Reject | ActionName::Tempfail | ActionName::Disconnect
            )
        {
            return Err(self.err(
                at,
                "reply",
                format!(
                    "a reply is only for reject, tempfail and disconnect, not {}",
                    action_name(a)
                ),
            ));
        }
        if def.score.is_some() && a != ActionName::Score {
            return Err(self.err(at, "score", "score is only for action: score"));
        }
        if def.header.is_some() && a != ActionName::AddHeader {
            return Err(self.err(at, "header", "header is only for action: add_header"));
        }
        Ok(match a {
            ActionName::Accept => Action::Accept,
            ActionName::AcceptTransaction => Action::AcceptTransaction,
            ActionName::Discard => Action::Discard,
            ActionName::Quarantine => Action::Quarantine,
            ActionName::Warn => Action::Warn,
            ActionName::Greylist => {
                if !matches!(at.stage, Stage::Rcpt | Stage::Data) {
                    return Err(self.err(
                        at,
                        "action",
                        format!(
                            "greylist is for the rcpt and data stages, where the triplet is known (this rule runs at {})",
                            at.stage
                        ),
                    ));
                }
                Action::Greylist
            }
            ActionName::Reject => {
                let default = if at.stage == Stage::Connect {
                    Verdict::default_reject_connect()
                } else {
                    Verdict::default_reject()
                };
                Action::Reject(self.reply(at, def.reply.as_ref(), default, &[5])?)
            }
            ActionName::Tempfail => Action::Tempfail(self.reply(
                at,
                def.reply.as_ref(),
                Verdict::default_tempfail(),
                &[4],
            )?),
            ActionName::Disconnect => Action::Disconnect(self.reply(
                at,
                def.reply.as_ref(),
                Verdict::default_disconnect(),
                &[4, 5],
            )?),
            ActionName::Score => {
                let Some(points) = def.score else {
                    return Err(self.err(at, "action", "action: score needs `score: N`"));
                };
                if !points.is_finite() {
                    return Err(self.err(at, "score", "must be a finite number"));
                }
                Action::Score(points)
            }
            ActionName::AddHeader => {
                let Some(h) = &def.header else {
                    return Err(self.err(
                        at,
                        "action",
                        "action: add_header needs `header: { name, value }`",
                    ));
                };
                check_header_name(&h.name).map_err(|r| self.err(at, "header.name", r))?;
                let value =
                    parse_template(&h.value).map_err(|r| self.err(at, "header.value", r))?;
                Action::AddHeader {
                    name: h.name.clone(),
                    value,
                }
            }
        })
    }

    /// A reply override, or the default; its class must be one of `classes`.
    fn reply(
        &self,
        at: &At<'_>,
        def: Option<&model::ReplyDef>,
        default: Reply,
        classes: &[u8],
    ) -> Result<Reply, ConfigError> {
        match def {
            None => Ok(default),
            Some(r) => build_reply(r, &default, classes).map_err(|(key, why)| {
                let path = if key.is_empty() {
                    "reply".to_string()
                } else {
                    format!("reply.{key}")
                };
                self.err(at, &path, why)
            }),
        }
    }
}

/// Builds a reply from an override: the code's class must be one of
/// `classes`, the enhanced code's class must match the code's, and missing
/// parts come from `default` (its text; its enhanced code when the classes
/// agree, else `X.0.0`). Errors are (key, reason).
pub(crate) fn build_reply(
    r: &model::ReplyDef,
    default: &Reply,
    classes: &[u8],
) -> Result<Reply, (&'static str, String)> {
    if !(200..=599).contains(&r.code) {
        return Err((
            "code",
            format!("{} is not a reply code (200 to 599)", r.code),
        ));
    }
    let class = (r.code / 100) as u8;
    if !classes.contains(&class) {
        let want: Vec<String> = classes.iter().map(|c| format!("{c}xx")).collect();
        return Err((
            "code",
            format!(
                "{} does not fit this action, which needs a {} reply",
                r.code,
                want.join(" or ")
            ),
        ));
    }
    let enhanced = match &r.enhanced {
        Some(text) => {
            let e: EnhancedCode = text.parse().map_err(|_| {
                (
                    "enhanced",
                    format!("{text:?} is not an enhanced status code (e.g. 5.7.1)"),
                )
            })?;
            if e.class != class {
                return Err((
                    "enhanced",
                    format!(
                        "{text} has class {} but the reply code {} has class {class}",
                        e.class, r.code
                    ),
                ));
            }
            e
        }
        None => match default.enhanced {
            Some(e) if e.class == class => e,
            _ => EnhancedCode::new(class, 0, 0),
        },
    };
    let text = match &r.text {
        Some(t) => {
            if t.trim().is_empty() {
                return Err(("text", "must not be empty".to_string()));
            }
            if t.chars().any(|c| c.is_control()) {
                return Err((
                    "text",
                    "must be one line without control characters".to_string(),
                ));
            }
            if t.len() > 400 {
                return Err(("text", "is longer than 400 bytes".to_string()));
            }
            t.clone()
        }
        None => default.text(),
    };
    Ok(Reply::new(r.code, enhanced, text))
}

/// The scoring thresholds of a file.
pub(crate) fn scoring(
    def: &model::ScoringDef,
    file: &Path,
    text: &str,
) -> Result<Scoring, ConfigError> {
    let err = |key: &str, reason: String| ConfigError {
        file: file.display().to_string(),
        line: locate::line_of(text, &format!("scoring.{key}")),
        reason: format!("scoring.{key}: {reason}"),
    };
    for (key, v) in [("tag_at", def.tag_at), ("reject_at", def.reject_at)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(err(key, "must be a finite number".into()));
        }
    }
    if let (Some(t), Some(r)) = (def.tag_at, def.reject_at) {
        if t > r {
            return Err(err(
                "tag_at",
                format!("{t} is above reject_at {r}; nothing could ever be tagged"),
            ));
        }
    }
    let default = Scoring::default_reply();
    let reply = match &def.reply {
        Some(r) => build_reply(r, &default, &[5]).map_err(|(key, why)| {
            let k = if key.is_empty() {
                "reply".to_string()
            } else {
                format!("reply.{key}")
            };
            err(&k, why)
        })?,
        None => default,
    };
    Ok(Scoring {
        tag_at: def.tag_at,
        reject_at: def.reject_at,
        reply,
        file: Some(file.to_path_buf()),
    })
}

/// A rule name: 1 to 100 letters, digits, `-`, `_` or `.`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err("must be 1 to 100 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{name:?} may only use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A header field name (RFC 5322 ftext: printable ASCII but `:`).
fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!(
            "{name:?} is not a header field name (printable ASCII, no spaces or ':')"
        ));
    }
    Ok(())
}

/// Parses a header value template: `{rule}`, `{stage}`, `{score}`,
/// `{client_ip}`, `{helo}`, `{sender}`, `{recipient}`, `{auth_user}`;
/// `{{` and `}}` for literal braces.
pub(crate) fn parse_template(text: &str) -> Result<Template, String> {
    if text.chars().any(|c| c == '\r' || c == '\n') {
        return Err("must be one line".into());
    }
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unclosed {{{name}")),
                    }
                }
                let var = match name.as_str() {
                    "rule" => Var::Rule,
                    "stage" => Var::Stage,
                    "score" => Var::Score,
                    "client_ip" => Var::ClientIp,
                    "helo" => Var::Helo,
                    "sender" => Var::Sender,
                    "recipient" => Var::Recipient,
                    "auth_user" => Var::AuthUser,
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}}; known: {{rule}} {{stage}} {{score}} \
                             {{client_ip}} {{helo}} {{sender}} {{recipient}} {{auth_user}} \
                             (write {{{{ for a literal brace)"
                        ))
                    }
                };
                if !lit.is_empty() {
                    parts.push(TemplatePart::Lit(std::mem::take(&mut lit)));
                }
                parts.push(TemplatePart::Var(var));
            }
            '}' => return Err("a lone '}'; write }} for a literal brace".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        parts.push(TemplatePart::Lit(lit));
    }
    Ok(Template(parts))
}

/// A regex error on one line (the regex crate's are multi-line drawings).
fn regex_error(pattern: &str, e: &regex::Error) -> String {
    let detail = e
        .to_string()
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .next()
        .unwrap_or_else(|| e.to_string().replace('\n', " "));
    format!("bad regex {pattern:?}: {detail}")
}

/// An action's name as written in rule files.
pub(crate) fn action_name(a: ActionName) -> &'static str {
    match a {
        ActionName::Accept => "accept",
        ActionName::AcceptTransaction => "accept_transaction",
        ActionName::Reject => "reject",
        ActionName::Tempfail => "tempfail",
        ActionName::Disconnect => "disconnect",
        ActionName::Discard => "discard",
        ActionName::Quarantine => "quarantine",
        ActionName::AddHeader => "add_header",
        ActionName::Score => "score",
        ActionName::Warn => "warn",
        ActionName::Greylist => "greylist",
    }
}
