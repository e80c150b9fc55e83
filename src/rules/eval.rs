//! Evaluating a stage's rules over a [`Context`].
//!
//! Conditions are pure tests; what is costly to learn about a message (the
//! body regex hits, the MIME structure) is computed on first need and kept
//! in a [`Cache`] for the rest of the stage, so the body is read at most
//! once per stage whatever the number of rules. A rule whose condition
//! cannot be evaluated (the message cannot be read back) fails closed:
//! `451 4.3.0`, so the client retries and nothing is lost or let through.

use super::{
    fmt_score, hit, Action, AddressMatcher, BodyOnly, Cond, FactTest, NameMatcher, Rule, RuleSet,
    StageRules, TemplatePart, Test, Var, SCORING_REJECT, SCORING_TAG,
};
use crate::filter::{Context, Message, Stage, Verdict};
use crate::message::MimeFacts;
use crate::proto::{Mailbox, Recipient};
use log::{error, info, warn};
use std::net::IpAddr;

/// What was learnt about the message so far in this stage.
#[derive(Default)]
struct Cache {
    /// Raw body pattern hits, by index in the stage's raw set.
    raw: Option<Vec<bool>>,
    /// Decoded text pattern hits, by index in the stage's decoded set.
    decoded: Option<Vec<bool>>,
    /// MIME facts; `Some(None)` when the message is over the MIME limit.
    mime: Option<Option<MimeFacts>>,
    /// Set when a test could not look at the MIME structure (over the
    /// limit) during the current rule.
    mime_skipped: bool,
}

/// What a test needs besides the context.
struct Env<'e, 'm> {
    /// The stage's rules (for the body sets).
    stage: &'e StageRules,
    /// The recipient at the rcpt stage.
    rcpt: Option<&'e Recipient>,
    /// The message at the data stage.
    message: Option<&'e mut Message<'m>>,
    /// Largest message parsed as MIME.
    max_mime: u64,
    /// Costly facts, computed once.
    cache: Cache,
}

/// Runs the rules of `stage` in order, then the score thresholds.
pub(super) fn run_stage(
    set: &RuleSet,
    stage: Stage,
    ctx: &mut Context,
    rcpt: Option<&Recipient>,
    message: Option<&mut Message<'_>>,
) -> Verdict {
    let rules = set.stage(stage);
    let mut env = Env {
        stage: rules,
        rcpt,
        message,
        max_mime: set.options().max_mime_bytes,
        cache: Cache::default(),
    };
    // How many rules this run got past, for their evaluation counts.
    let mut evaluated = 0;
    let verdict = loop {
        let at = evaluated;
        let Some(rule) = rules.rules.get(at) else {
            break None;
        };
        evaluated += 1;
        if passes_over(&env, rules.body_only.get(at)) {
            continue;
        }
        env.cache.mime_skipped = false;
        let matched = match &rule.cond {
            None => Ok(true),
            Some(c) => eval(c, ctx, &mut env),
        };
        if env.cache.mime_skipped {
            hit(ctx, &rule.name, stage, "not_evaluated", 0.0);
        }
        match matched {
            Ok(false) => {}
            Ok(true) => {
                let before = ctx.hits.len();
                let verdict = apply(rule, stage, ctx, env.rcpt);
                // A score or header rule matching again in the same
                // transaction leaves no second hit, and is no new hit here.
                if ctx.hits.len() > before {
                    if let Some(s) = rule.series.get() {
                        s.hit();
                    }
                }
                if verdict.is_some() {
                    break verdict;
                }
            }
            Err(e) => {
                error!(
                    "rule {} ({}) cannot be evaluated: {e}; failing closed (451 4.3.0)",
                    rule.name,
                    rule.place()
                );
                hit(ctx, &rule.name, stage, "error", 0.0);
                ctx.decided_by = Some(rule.name.clone());
                break Some(Verdict::Tempfail(Verdict::filter_failed()));
            }
        }
    };
    if let Some(counts) = rules.evaluations.get() {
        counts.ran(evaluated);
    }
    if let Some(v) = verdict {
        return v;
    }
    thresholds(set, stage, ctx)
}

/// Whether a rule whose whole condition is one body pattern surely does
/// not match: the body was scanned already and the pattern found nothing.
/// Then the rule needs no evaluation (it would be false, with no side
/// effect), and its own memory is not read.
fn passes_over(env: &Env<'_, '_>, body_only: Option<&BodyOnly>) -> bool {
    let (hits, id) = match body_only {
        Some(BodyOnly::Raw(id)) => (&env.cache.raw, id),
        Some(BodyOnly::Decoded(id)) => (&env.cache.decoded, id),
        _ => return false,
    };
    hits.as_deref()
        .is_some_and(|h| !h.get(*id as usize).copied().unwrap_or(false))
}

/// Does what a matched rule says; `Some` ends the stage.
fn apply(
    rule: &Rule,
    stage: Stage,
    ctx: &mut Context,
    rcpt: Option<&Recipient>,
) -> Option<Verdict> {
    let name = rule.name.as_str();
    let verdict = match &rule.action {
        Action::Accept => Verdict::Accept,
        Action::AcceptTransaction => Verdict::AcceptTransaction,
        Action::Reject(r) => Verdict::Reject(r.clone()),
        Action::Tempfail(r) => Verdict::Tempfail(r.clone()),
        Action::Disconnect(r) => Verdict::Disconnect(r.clone()),
        Action::Discard => Verdict::Discard,
        Action::Quarantine => Verdict::Quarantine,
        Action::Warn => {
            info!(
                "rule {name} matched at {stage} (warn) client={} from=<{}>{}",
                ctx.client.ip(),
                sender_text(ctx),
                rcpt.map(|r| format!(" rcpt=<{r}>")).unwrap_or_default()
            );
            hit(ctx, name, stage, "warn", 0.0);
            return None;
        }
        Action::Greylist => {
            // A mark, not a verdict: a later reject still wins, and the
            // store is asked only when the stage would go on.
            if ctx.greylist.is_none() {
                ctx.greylist = Some(name.to_string());
            }
            hit(ctx, name, stage, "greylist", 0.0);
            return None;
        }
        Action::Score(points) => {
            // Once per transaction (once per session at session stages),
            // however many recipients match a rcpt-stage rule.
            if !already(ctx, name, stage) {
                ctx.score += points;
                hit(ctx, name, stage, "score", *points);
            }
            return None;
        }
        Action::AddHeader { name: field, value } => {
            if !already(ctx, name, stage) {
                let text = expand(&value.0, name, stage, ctx, rcpt);
                ctx.add_headers.push((field.clone(), text));
                hit(ctx, name, stage, "add_header", 0.0);
            }
            return None;
        }
    };
    hit(ctx, name, stage, rule.action.name(), 0.0);
    if verdict.is_terminal() && !matches!(verdict, Verdict::Accept | Verdict::AcceptTransaction) {
        ctx.decided_by = Some(name.to_string());
    }
    Some(verdict)
}

/// True when `rule` already left a hit in this transaction (or session).
fn already(ctx: &Context, rule: &str, stage: Stage) -> bool {
    ctx.hits.iter().any(|h| h.rule == rule && h.stage == stage)
}

/// `scoring.reject_at` from the mail stage on, `scoring.tag_at` at the end
/// of the data stage.
fn thresholds(set: &RuleSet, stage: Stage, ctx: &mut Context) -> Verdict {
    let scoring = set.scoring();
    if !stage.in_transaction() {
        return Verdict::Continue;
    }
    if let Some(limit) = scoring.reject_at {
        if ctx.score >= limit {
            let rules: Vec<&str> = ctx
                .hits
                .iter()
                .filter(|h| h.score != 0.0)
                .map(|h| h.rule.as_str())
                .collect();
            info!(
                "score {} reached reject_at {} at {stage} (rules: {})",
                fmt_score(ctx.score),
                fmt_score(limit),
                rules.join(",")
            );
            hit(ctx, SCORING_REJECT, stage, "reject", 0.0);
            ctx.decided_by = Some(SCORING_REJECT.to_string());
            return Verdict::Reject(scoring.reply.clone());
        }
    }
    if stage == Stage::Data {
        if let Some(limit) = scoring.tag_at {
            if ctx.score >= limit {
                ctx.add_headers
                    .push(("X-Spam-Flag".to_string(), "YES".to_string()));
                ctx.add_headers
                    .push(("X-Spam-Score".to_string(), fmt_score(ctx.score)));
                hit(ctx, SCORING_TAG, stage, "add_header", 0.0);
            }
        }
    }
    Verdict::Continue
}

/// A header value with its placeholders filled in.
fn expand(
    parts: &[TemplatePart],
    rule: &str,
    stage: Stage,
    ctx: &Context,
    rcpt: Option<&Recipient>,
) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            TemplatePart::Lit(s) => out.push_str(s),
            TemplatePart::Var(v) => match v {
                Var::Rule => out.push_str(rule),
                Var::Stage => out.push_str(stage.name()),
                Var::Score => out.push_str(&fmt_score(ctx.score)),
                Var::ClientIp => out.push_str(&ctx.client.ip().to_string()),
                Var::Helo => out.push_str(ctx.helo.as_deref().unwrap_or("")),
                Var::Sender => out.push_str(&sender_text(ctx)),
                Var::Recipient => {
                    if let Some(r) = rcpt {
                        out.push_str(&r.to_string());
                    }
                }
                Var::AuthUser => out.push_str(ctx.auth_user.as_deref().unwrap_or("")),
            },
        }
    }
    out
}

/// The sender as text: empty for `<>` or before MAIL.
fn sender_text(ctx: &Context) -> String {
    match &ctx.mail_from {
        Some(Some(m)) => m.to_string(),
        _ => String::new(),
    }
}

/// Evaluates a condition; `Err` when it cannot be.
fn eval(c: &Cond, ctx: &Context, env: &mut Env<'_, '_>) -> Result<bool, String> {
    match c {
        Cond::All(v) => {
            for c in v {
                if !eval(c, ctx, env)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Cond::Any(v) => {
            for c in v {
                if eval(c, ctx, env)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Cond::Not(c) => Ok(!eval(c, ctx, env)?),
        Cond::Test(t) => test(t, ctx, env),
    }
}

/// Evaluates one matcher.
fn test(t: &Test, ctx: &Context, env: &mut Env<'_, '_>) -> Result<bool, String> {
    Ok(match t {
        Test::ClientIp(table) => table.contains(ctx.client.ip()),
        Test::Helo(m) => ctx.helo.as_deref().is_some_and(|h| names(m, h)),
        Test::HeloIpLiteral(want) => ctx
            .helo
            .as_deref()
            .is_some_and(|h| is_ip_literal(h) == *want),
        Test::Tls(want) => ctx.tls.is_some() == *want,
        Test::Authenticated(want) => ctx.auth_user.is_some() == *want,
        Test::AuthUser(m) => ctx.auth_user.as_deref().is_some_and(|u| names(m, u)),
        Test::Sender(m) => matches!(&ctx.mail_from, Some(Some(mb)) if mailbox(m, mb)),
        Test::NullSender(want) => match &ctx.mail_from {
            Some(None) => *want,
            Some(Some(_)) => !*want,
            None => false,
        },
        Test::Recipient(m) => match env.rcpt {
            Some(r) => recipient(m, r),
            None => ctx.rcpts.iter().any(|r| recipient(m, r)),
        },
        Test::RecipientCount(range) => {
            let n = ctx.rcpts.len() + usize::from(env.rcpt.is_some());
            range.contains(n as u64)
        }
        Test::DeclaredSize(range) => ctx.declared_size.is_some_and(|n| range.contains(n)),
        Test::Size(range) => env
            .message
            .as_ref()
            .is_some_and(|m| range.contains(m.size())),
        Test::Score(range) => range.contains(ctx.score),
        Test::Fact { name, test } => fact(ctx.facts.get(name), test),
        Test::Header {
            name,
            regexes,
            present,
            raw,
        } => {
            let Some(message) = env.message.as_deref_mut() else {
                return Ok(false);
            };
            let headers = message
                .headers()
                .map_err(|e| format!("cannot read the message headers: {e}"))?;
            let mut fields = headers.get(name);
            match (present, regexes) {
                (Some(want), _) => fields.next().is_some() == *want,
                (None, Some(set)) => fields.any(|f| {
                    let value = if *raw { &f.raw } else { &f.decoded };
                    set.is_match(value)
                }),
                (None, None) => false,
            }
        }
        Test::Body { decoded, ids } => {
            let hits = if *decoded {
                decoded_hits(env)?
            } else {
                raw_hits(env)?
            };
            ids.iter().any(|i| hits.get(*i).copied().unwrap_or(false))
        }
        Test::Attachment {
            regexes,
            extensions,
        } => match mime(env)? {
            None => false,
            Some(facts) => facts.attachment_names.iter().any(|name| {
                regexes.as_ref().is_some_and(|s| s.is_match(name))
                    || name.rsplit_once('.').is_some_and(|(_, ext)| {
                        extensions.contains(&ext.trim().to_ascii_lowercase())
                    })
            }),
        },
    })
}

/// Which raw-body patterns match some body line: one pass over the body,
/// on first need, for every body rule of the stage.
fn raw_hits<'c>(env: &'c mut Env<'_, '_>) -> Result<&'c [bool], String> {
    if env.cache.raw.is_none() {
        scan_body(env)?;
    }
    Ok(env.cache.raw.as_deref().unwrap_or(&[]))
}

/// Reads the body once for the raw patterns, and for the decoded ones too
/// when the message is plain text (its decoded text is its raw body).
fn scan_body(env: &mut Env<'_, '_>) -> Result<(), String> {
    let Some(message) = env.message.as_deref_mut() else {
        env.cache.raw = Some(Vec::new());
        return Ok(());
    };
    let plain = message
        .headers()
        .map_err(|e| format!("cannot read the message headers: {e}"))?
        .is_plain_text();
    let (set, split) = match (&env.stage.combined_body, &env.stage.raw_body) {
        (Some(both), Some(raw)) if plain && env.cache.decoded.is_none() => (both, Some(raw.len())),
        (_, Some(raw)) => (raw, None),
        (_, None) => {
            env.cache.raw = Some(Vec::new());
            return Ok(());
        }
    };
    let mut scan = set.scan();
    message
        .for_each_body_block(|block| scan.block(block))
        .map_err(|e| format!("cannot read the message body: {e}"))?;
    let mut hits = scan.hits;
    if let Some(n) = split {
        env.cache.decoded = Some(hits.split_off(n));
    }
    env.cache.raw = Some(hits);
    Ok(())
}

/// Which decoded-text patterns match some line of a decoded text part.
fn decoded_hits<'c>(env: &'c mut Env<'_, '_>) -> Result<&'c [bool], String> {
    if env.cache.decoded.is_none() {
        let Some(set) = env.stage.decoded_body.as_ref() else {
            return Ok(&[]);
        };
        let plain = match env.message.as_deref_mut() {
            Some(m) => m
                .headers()
                .map_err(|e| format!("cannot read the message headers: {e}"))?
                .is_plain_text(),
            None => false,
        };
        if plain && env.stage.combined_body.is_some() && env.cache.raw.is_none() {
            scan_body(env)?;
        } else if plain {
            // No MIME parsing: the decoded text is the raw body.
            let mut scan = set.scan();
            if let Some(message) = env.message.as_deref_mut() {
                message
                    .for_each_body_block(|block| scan.block(block))
                    .map_err(|e| format!("cannot read the message body: {e}"))?;
            }
            env.cache.decoded = Some(scan.hits);
        } else {
            let mut scan = set.scan();
            if let Some(facts) = mime(env)? {
                for text in &facts.texts {
                    if !scan.block(text.as_bytes()) {
                        break;
                    }
                }
            }
            env.cache.decoded = Some(scan.hits);
        }
    }
    Ok(env.cache.decoded.as_deref().unwrap_or(&[]))
}

/// The MIME facts of the message, parsed on first need; `None` when it is
/// over the MIME limit (noted for the audit record).
fn mime<'c>(env: &'c mut Env<'_, '_>) -> Result<Option<&'c MimeFacts>, String> {
    if env.cache.mime.is_none() {
        let plain = match env.message.as_deref_mut() {
            Some(m) => m
                .headers()
                .map_err(|e| format!("cannot read the message headers: {e}"))?
                .is_plain_text(),
            None => true,
        };
        let facts = match env.message.as_deref_mut() {
            // One text part (or no message): no attachment, nothing to decode.
            _ if plain => Some(MimeFacts::default()),
            None => Some(MimeFacts::default()),
            Some(message) => {
                let size = message.size();
                match message
                    .bytes(env.max_mime)
                    .map_err(|e| format!("cannot read the message: {e}"))?
                {
                    Some(raw) => Some(MimeFacts::parse(&raw)),
                    None => {
                        warn!(
                            "message of {size} bytes is over limits.max_mime_scan_bytes ({}); \
                             attachment and decoded-body rules do not match it",
                            env.max_mime
                        );
                        None
                    }
                }
            }
        };
        env.cache.mime = Some(facts);
    }
    match &env.cache.mime {
        Some(Some(f)) => Ok(Some(f)),
        _ => {
            env.cache.mime_skipped = true;
            Ok(None)
        }
    }
}

/// A name matcher against a name.
fn names(m: &NameMatcher, name: &str) -> bool {
    (!m.names.is_empty() && m.names.contains(&name.to_ascii_lowercase()))
        || m.regexes.as_ref().is_some_and(|s| s.is_match(name))
}

/// An address matcher against a mailbox.
fn mailbox(m: &AddressMatcher, mb: &Mailbox) -> bool {
    let full = mb.to_string();
    if !m.addresses.is_empty() && m.addresses.contains(&full.to_ascii_lowercase()) {
        return true;
    }
    if !m.domains.is_empty() && m.domains.contains(&mb.domain_lowercase()) {
        return true;
    }
    m.regexes.as_ref().is_some_and(|s| s.is_match(&full))
}

/// An address matcher against a recipient (`postmaster` has no domain).
fn recipient(m: &AddressMatcher, r: &Recipient) -> bool {
    match r {
        Recipient::Mailbox(mb) => mailbox(m, mb),
        Recipient::Postmaster => {
            m.addresses.contains("postmaster")
                || m.regexes.as_ref().is_some_and(|s| s.is_match("postmaster"))
        }
    }
}

/// A HELO name that is an address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`) or a bare IP address (not valid, but common).
pub(crate) fn is_ip_literal(helo: &str) -> bool {
    if let Some(inner) = helo.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let inner = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &inner[5..],
            _ => inner,
        };
        return inner.parse::<IpAddr>().is_ok();
    }
    helo.parse::<IpAddr>().is_ok()
}

/// Whether a fact's value passes a `fact:` test. An unknown fact passes
/// only `present: false`.
fn fact(value: Option<&crate::facts::Value>, test: &FactTest) -> bool {
    let Some(value) = value else {
        return matches!(test, FactTest::Present(false));
    };
    match test {
        FactTest::Present(want) => *want,
        FactTest::Is(values) => value
            .texts()
            .iter()
            .any(|v| values.contains(&v.to_ascii_lowercase())),
        FactTest::Regex(set) => value.texts().iter().any(|v| set.is_match(v)),
        FactTest::Number(range) => value.number().is_some_and(|n| range.contains(n)),
    }
}
