//! The YAML shape of a rule file, as serde reads it.
//!
//! Every struct rejects unknown keys, so a misspelt matcher or action is a
//! load error with its line rather than a rule that silently never matches.
//! Nothing here is checked beyond its YAML type: regexes, CIDRs, replies and
//! which matcher fits which stage are checked by `compile`, which turns these
//! types into the compiled rule set.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// One rule file: a list of rules and, in at most one file, the scoring
/// thresholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    /// The rules, in the order they run within their stage.
    #[serde(default)]
    pub rules: Vec<RuleDef>,
    /// Score thresholds (tag and reject); at most one file may set them.
    #[serde(default)]
    pub scoring: Option<ScoringDef>,
    /// Cases the rules must pass: one transaction each, with the verdict
    /// it must end with (`smtpgate check`, reloads).
    #[serde(default)]
    pub tests: Vec<TestDef>,
}

/// One case of `tests:`: an envelope, a message, facts standing in for
/// checks, and what must come of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestDef {
    /// Unique in the file; names the case in failures.
    pub name: String,
    /// Envelope sender; empty for the null sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The client's address.
    pub client_ip: String,
    /// The HELO name; default: the client address as an address literal.
    #[serde(default)]
    pub helo: Option<String>,
    /// Authenticated as this user.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Under TLS.
    #[serde(default)]
    pub tls: bool,
    /// The message, inline.
    #[serde(default)]
    pub message: Option<String>,
    /// The message, from a file relative to the rule file.
    #[serde(default)]
    pub message_file: Option<String>,
    /// Facts given instead of looked up (NAME: VALUE).
    #[serde(default)]
    pub facts: std::collections::BTreeMap<String, serde_yaml::Value>,
    /// Whether the greylisting store would know the triplet as passed.
    #[serde(default)]
    pub greylist_passed: bool,
    /// The SIZE= the client announces; default: the message's size.
    #[serde(default)]
    pub declared_size: Option<ByteSize>,
    /// What must come of it.
    pub expect: ExpectDef,
}

/// `expect: { verdict, code, enhanced, score, stage }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectDef {
    /// How the transaction ends.
    pub verdict: super::cases::ExpectedVerdict,
    /// The final reply's code.
    #[serde(default)]
    pub code: Option<u16>,
    /// The final reply's enhanced code, `X.Y.Z`.
    #[serde(default)]
    pub enhanced: Option<String>,
    /// The final score.
    #[serde(default)]
    pub score: Option<f64>,
    /// The stage it ends at.
    #[serde(default)]
    pub stage: Option<crate::filter::Stage>,
    /// Rules that must have matched.
    #[serde(default)]
    pub matched: Vec<String>,
    /// Rules that must not have matched.
    #[serde(default)]
    pub not_matched: Vec<String>,
}

/// `scoring: { tag_at, reject_at, reply }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoringDef {
    /// At this score or more the message gets `X-Spam-Flag: YES` and
    /// `X-Spam-Score` headers.
    #[serde(default)]
    pub tag_at: Option<f64>,
    /// At this score or more the transaction is rejected.
    #[serde(default)]
    pub reject_at: Option<f64>,
    /// The reply for `reject_at`; default `550 5.7.1`.
    #[serde(default)]
    pub reply: Option<ReplyDef>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDef {
    /// Unique name, in logs, audit records and `{rule}` placeholders.
    pub name: String,
    /// The stage the rule runs at.
    pub stage: crate::filter::Stage,
    /// Free text for people; shown by `smtpgate check`.
    #[serde(default)]
    pub description: Option<String>,
    /// `false` keeps the rule in the file but out of the rule set.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When the rule matches; absent means always.
    #[serde(default)]
    pub when: Option<Condition>,
    /// What the rule does when it matches.
    pub action: ActionName,
    /// Reply override for `reject`, `tempfail` and `disconnect`.
    #[serde(default)]
    pub reply: Option<ReplyDef>,
    /// Points for `action: score`.
    #[serde(default)]
    pub score: Option<f64>,
    /// The header for `action: add_header`.
    #[serde(default)]
    pub header: Option<HeaderDef>,
}

/// Serde default for `enabled`.
fn yes() -> bool {
    true
}

/// An action name as written in rule files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ActionName {
    /// Skip the remaining rules of this stage.
    Accept,
    /// Skip the remaining rules for the rest of the transaction.
    AcceptTransaction,
    /// Refuse permanently (5xx).
    Reject,
    /// Refuse for now (4xx).
    Tempfail,
    /// Say 421 (or the given reply) and close.
    Disconnect,
    /// Answer 250, forward nothing.
    Discard,
    /// Answer 250, store in the quarantine directory.
    Quarantine,
    /// Prepend a header to the message.
    AddHeader,
    /// Add points to the transaction's score.
    Score,
    /// Log and audit only.
    Warn,
    /// Greylist the recipient (rcpt) or the message (data) when the
    /// greylisting store has not seen its triplet pass.
    Greylist,
}

/// `reply: { code, enhanced, text }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplyDef {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code `X.Y.Z`; default: the action's default for the
    /// code's class.
    #[serde(default)]
    pub enhanced: Option<String>,
    /// Reply text; default: the action's default text.
    #[serde(default)]
    pub text: Option<String>,
}

/// `header: { name, value }` for `add_header`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderDef {
    /// Header field name.
    pub name: String,
    /// Value, with `{placeholders}`.
    pub value: String,
}

/// A condition: every key given must hold (`all`, `any` and `not` nest).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Condition {
    /// Every one of these.
    #[serde(default)]
    pub all: Option<Vec<Condition>>,
    /// At least one of these.
    #[serde(default)]
    pub any: Option<Vec<Condition>>,
    /// Not this.
    #[serde(default)]
    pub not: Option<Box<Condition>>,
    /// Client IP in networks.
    #[serde(default)]
    pub client_ip: Option<CidrDef>,
    /// HELO/EHLO name.
    #[serde(default)]
    pub helo: Option<NameDef>,
    /// HELO name is an address literal (or a bare IP address).
    #[serde(default)]
    pub helo_ip_literal: Option<bool>,
    /// Session under TLS.
    #[serde(default)]
    pub tls: Option<bool>,
    /// Client authenticated.
    #[serde(default)]
    pub authenticated: Option<bool>,
    /// Authenticated user name.
    #[serde(default)]
    pub auth_user: Option<NameDef>,
    /// Envelope sender.
    #[serde(default)]
    pub sender: Option<AddressDef>,
    /// Envelope sender is `<>`.
    #[serde(default)]
    pub null_sender: Option<bool>,
    /// Envelope recipient (this one at rcpt, any accepted one at data).
    #[serde(default)]
    pub recipient: Option<AddressDef>,
    /// Number of recipients.
    #[serde(default)]
    pub recipient_count: Option<CountRange>,
    /// SIZE= declared at MAIL.
    #[serde(default)]
    pub declared_size: Option<SizeRange>,
    /// Actual message size.
    #[serde(default)]
    pub size: Option<SizeRange>,
    /// Transaction score so far.
    #[serde(default)]
    pub score: Option<ScoreRange>,
    /// A header field.
    #[serde(default)]
    pub header: Option<HeaderMatchDef>,
    /// Body lines.
    #[serde(default)]
    pub body: Option<BodyDef>,
    /// Attachment file names.
    #[serde(default)]
    pub attachment: Option<AttachmentDef>,
    /// A fact a check established (`iprev`, `client.ptr`).
    #[serde(default)]
    pub fact: Option<FactDef>,
}

/// `fact: { name: iprev, is: [fail, temperror] }`: a fact and one test of
/// its value. Several values of a list fact match when any one does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FactDef {
    /// The fact's name, as the check gives it.
    pub name: String,
    /// Matches when the value is one of these (case-insensitive).
    #[serde(default)]
    pub is: OneOrMany,
    /// Matches when a regex finds the value.
    #[serde(default)]
    pub regex: OneOrMany,
    /// Matches a number at least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// Matches a number at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// Matches when the fact is (`true`) or is not (`false`) known.
    #[serde(default)]
    pub present: Option<bool>,
}

/// `client_ip: { cidrs, cidrs_file }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CidrDef {
    /// Networks (`10.0.0.0/8`, `2001:db8::/32`) or addresses.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// A list file of networks.
    #[serde(default)]
    pub cidrs_file: Option<String>,
}

/// A name matcher (`helo`, `auth_user`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameDef {
    /// Regexes.
    #[serde(default)]
    pub regex: OneOrMany,
    /// A list file of regexes.
    #[serde(default)]
    pub regex_file: Option<String>,
    /// Exact names (case-insensitive).
    #[serde(default)]
    pub names: Vec<String>,
    /// A list file of names.
    #[serde(default)]
    pub names_file: Option<String>,
}

/// An address matcher (`sender`, `recipient`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressDef {
    /// Regexes over `local@domain`.
    #[serde(default)]
    pub regex: OneOrMany,
    /// A list file of regexes.
    #[serde(default)]
    pub regex_file: Option<String>,
    /// Exact addresses (case-insensitive).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// A list file of addresses.
    #[serde(default)]
    pub addresses_file: Option<String>,
    /// Domains (`example.com` exactly, `.example.com` any subdomain).
    #[serde(default)]
    pub domains: Vec<String>,
    /// A list file of domains.
    #[serde(default)]
    pub domains_file: Option<String>,
}

/// `recipient_count: { min, max }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CountRange {
    /// At least.
    #[serde(default)]
    pub min: Option<u64>,
    /// At most.
    #[serde(default)]
    pub max: Option<u64>,
}

/// `size: { min, max }`, in bytes or with a K/M/G suffix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SizeRange {
    /// At least.
    #[serde(default)]
    pub min: Option<ByteSize>,
    /// At most.
    #[serde(default)]
    pub max: Option<ByteSize>,
}

/// `score: { min, max }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoreRange {
    /// At least.
    #[serde(default)]
    pub min: Option<f64>,
    /// At most.
    #[serde(default)]
    pub max: Option<f64>,
}

/// `header: { name, regex, regex_file, present, raw }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderMatchDef {
    /// Header field name (case-insensitive).
    pub name: String,
    /// Regexes over the value.
    #[serde(default)]
    pub regex: OneOrMany,
    /// A list file of regexes.
    #[serde(default)]
    pub regex_file: Option<String>,
    /// `true`: the header is there; `false`: it is not.
    #[serde(default)]
    pub present: Option<bool>,
    /// Match the raw (unfolded, not RFC 2047-decoded) value.
    #[serde(default)]
    pub raw: bool,
}

/// `body: { regex, regex_file, decoded }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BodyDef {
    /// Regexes, matched line by line.
    #[serde(default)]
    pub regex: OneOrMany,
    /// A list file of regexes.
    #[serde(default)]
    pub regex_file: Option<String>,
    /// Match the decoded text parts instead of the raw body.
    #[serde(default)]
    pub decoded: bool,
}

/// `attachment: { regex, regex_file, extensions, extensions_file }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttachmentDef {
    /// Regexes over the file name.
    #[serde(default)]
    pub regex: OneOrMany,
    /// A list file of regexes.
    #[serde(default)]
    pub regex_file: Option<String>,
    /// Extensions (`exe`, `.js`; case-insensitive).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// A list file of extensions.
    #[serde(default)]
    pub extensions_file: Option<String>,
}

/// A string or a list of strings (`regex: 'a'` or `regex: ['a', 'b']`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte count: a number, or a string with a `K`, `M` or `G` suffix
/// (binary multiples: `10M` is 10485760).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub u64);

/// Parses `1234`, `512K`, `10M`, `1G` (optional `B`/`iB`, any case).
pub(crate) fn parse_byte_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, mult) = match upper.chars().last()? {
        'K' => (&upper[..upper.len() - 1], 1u64 << 10),
        'M' => (&upper[..upper.len() - 1], 1 << 20),
        'G' => (&upper[..upper.len() - 1], 1 << 30),
        _ => (upper, 1),
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(mult)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count such as 1048576, \"512K\", \"10M\" or \"1G\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a byte count cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_byte_size(s).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "{s:?} is not a byte count (e.g. 1048576, \"512K\", \"10M\", \"1G\")"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}
