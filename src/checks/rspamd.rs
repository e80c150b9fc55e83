//! The rspamd check: the whole message to rspamd's normal worker
//! (`POST /checkv2`, over TCP or its Unix socket), with the envelope and
//! connection as headers, and its JSON answer as facts.
//!
//! Facts: `rspamd.score` (number), `rspamd.action` (`no action`, `add
//! header`, `rewrite subject`, `greylist`, `soft reject`, `reject`, or
//! `skipped` for a message over `max_size`), `rspamd.symbols` (the names
//! of the symbols that hit), and `rspamd.add_headers` /
//! `rspamd.remove_headers` (`Name: value` and names, from its `milter`
//! block) and `rspamd.subject` (the new Subject of a `rewrite subject`
//! answer as text, rspamd's template already applied; empty when it gave
//! none)
//! for the [scanner filter](super::scanners) to apply.

use super::http;
use super::{Check, CheckFuture};
use crate::config::{HttpEndpoint, RspamdOptions};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use crate::message::header_value;
use serde_json::Value as Json;

/// `rspamd.score`.
pub const SCORE: &str = "rspamd.score";
/// `rspamd.action`.
pub const ACTION: &str = "rspamd.action";
/// `rspamd.symbols`.
pub const SYMBOLS: &str = "rspamd.symbols";
/// `rspamd.add_headers`: `Name: value` per header rspamd asks to add.
pub const ADD_HEADERS: &str = "rspamd.add_headers";
/// `rspamd.remove_headers`: names of headers rspamd asks to remove.
pub const REMOVE_HEADERS: &str = "rspamd.remove_headers";
/// `rspamd.subject`: the Subject rspamd wrote (on one line), or empty.
pub const SUBJECT: &str = "rspamd.subject";
/// The action of a message too large to be sent.
pub const SKIPPED: &str = "skipped";

/// The rspamd check with its settings.
pub struct Rspamd {
    /// Where the worker listens.
    endpoint: HttpEndpoint,
    /// `/checkv2` under the URL's path.
    path: String,
    /// The settings.
    options: RspamdOptions,
    /// Its facts.
    facts: Vec<String>,
}

impl Rspamd {
    /// The check for `options` (validated: the URL parses).
    pub fn new(options: &RspamdOptions) -> Rspamd {
        let endpoint = HttpEndpoint::parse(&options.url).unwrap_or(HttpEndpoint::Tcp {
            authority: String::new(),
            prefix: String::new(),
        });
        let prefix = match &endpoint {
            HttpEndpoint::Tcp { prefix, .. } => prefix.clone(),
            HttpEndpoint::Unix(_) => String::new(),
        };
        Rspamd {
            endpoint,
            path: format!("{prefix}/checkv2"),
            options: options.clone(),
            facts: [SCORE, ACTION, SYMBOLS, ADD_HEADERS, REMOVE_HEADERS, SUBJECT]
                .map(String::from)
                .to_vec(),
        }
    }

    /// The request headers: what rspamd would otherwise read from the
    /// MTA (its `rspamc` protocol names).
    fn headers(&self, ctx: &Context) -> Vec<(String, String)> {
        let mut h = vec![("IP".to_string(), ctx.client.ip().to_canonical().to_string())];
        if let Some(helo) = &ctx.helo {
            h.push(("Helo".into(), helo.clone()));
        }
        if let Some(ptr) = ctx.facts.get("client.ptr").map(|v| v.to_string()) {
            if ptr != "none" && ptr != crate::facts::TEMPERROR {
                h.push(("Hostname".into(), ptr));
            }
        }
        if let Some(sender) = &ctx.mail_from {
            let from = sender.as_ref().map(|m| m.to_string()).unwrap_or_default();
            h.push(("From".into(), from));
        }
        for r in &ctx.rcpts {
            h.push(("Rcpt".into(), r.to_string()));
        }
        if let Some(user) = &ctx.auth_user {
            h.push(("User".into(), user.clone()));
        }
        if let Some(id) = &ctx.queue_id {
            h.push(("Queue-Id".into(), id.clone()));
        }
        if let Some(pw) = &self.options.password {
            h.push(("Password".into(), pw.clone()));
        }
        h
    }
}

impl Check for Rspamd {
    fn name(&self) -> &'static str {
        "rspamd"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Data
    }

    fn run<'a>(&'a self, ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let message = message.ok_or("the message could not be read")?;
            if message.len() as u64 > self.options.max_size {
                return Ok(Scan::skipped().facts());
            }
            let reply = http::post(&self.endpoint, &self.path, &self.headers(ctx), message).await?;
            if reply.status != 200 {
                return Err(format!("rspamd answered HTTP {}", reply.status));
            }
            Ok(Scan::parse(&reply.body)?.facts())
        })
    }
}

/// What rspamd said about a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Its score.
    pub score: f64,
    /// Its action.
    pub action: String,
    /// The symbols that hit, sorted.
    pub symbols: Vec<String>,
    /// Headers to add, `(name, value)`.
    pub add_headers: Vec<(String, String)>,
    /// Header names to remove.
    pub remove_headers: Vec<String>,
    /// The new Subject (top-level `subject`, sent with `rewrite
    /// subject`: a header value, RFC 2047-encoded by rspamd when it is
    /// not ASCII) as text, on one line.
    pub subject: Option<String>,
}

/// The actions rspamd defines; any other is an error, never a pass.
const ACTIONS: [&str; 6] = [
    "no action",
    "add header",
    "rewrite subject",
    "greylist",
    "soft reject",
    "reject",
];

impl Scan {
    /// The facts of a message over `max_size`.
    fn skipped() -> Scan {
        Scan {
            score: 0.0,
            action: SKIPPED.to_string(),
            symbols: Vec::new(),
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
            subject: None,
        }
    }

    /// Reads a `/checkv2` answer. Anything but an object with a numeric
    /// `score` and a known `action` is an error.
    pub fn parse(body: &[u8]) -> Result<Scan, String> {
        let json: Json = serde_json::from_slice(body)
            .map_err(|e| format!("rspamd's answer is not JSON: {e}"))?;
        let obj = json
            .as_object()
            .ok_or("rspamd's answer is not a JSON object")?;
        if let Some(err) = obj.get("error") {
            return Err(format!("rspamd: {}", short(err)));
        }
        let score = obj
            .get("score")
            .and_then(Json::as_f64)
            .filter(|s| s.is_finite())
            .ok_or("rspamd's answer has no numeric score")?;
        let action = obj
            .get("action")
            .and_then(Json::as_str)
            .filter(|a| ACTIONS.contains(a))
            .ok_or_else(|| {
                format!(
                    "rspamd's answer has no known action: {}",
                    short(&json["action"])
                )
            })?
            .to_string();
        let mut symbols: Vec<String> = match obj.get("symbols") {
            Some(Json::Object(m)) => m.keys().cloned().collect(),
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|s| s.get("name").and_then(Json::as_str).map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        symbols.sort();
        let milter = obj.get("milter");
        let mut add_headers = Vec::new();
        if let Some(Json::Object(m)) = milter.and_then(|m| m.get("add_headers")) {
            for (name, v) in m {
                if !is_field_name(name) {
                    continue;
                }
                for value in header_values(v) {
                    add_headers.push((name.clone(), value));
                }
            }
        }
        let remove_headers = match milter.and_then(|m| m.get("remove_headers")) {
            Some(Json::Object(m)) => m.keys().filter(|n| is_field_name(n)).cloned().collect(),
            _ => Vec::new(),
        };
        let subject = obj
            .get("subject")
            .and_then(Json::as_str)
            .map(header_value::decode)
            .filter(|s| !s.is_empty());
        Ok(Scan {
            score,
            action,
            symbols,
            add_headers,
            remove_headers,
            subject,
        })
    }

    /// As facts.
    pub fn facts(self) -> Vec<(String, Value)> {
        vec![
            (SCORE.to_string(), Value::Number(self.score)),
            (ACTION.to_string(), Value::Text(self.action)),
            (SYMBOLS.to_string(), Value::List(self.symbols)),
            (
                ADD_HEADERS.to_string(),
                Value::List(
                    self.add_headers
                        .into_iter()
                        .map(|(n, v)| format!("{n}: {v}"))
                        .collect(),
                ),
            ),
            (REMOVE_HEADERS.to_string(), Value::List(self.remove_headers)),
            (
                SUBJECT.to_string(),
                Value::Text(self.subject.unwrap_or_default()),
            ),
        ]
    }
}

/// The values of one `add_headers` entry: a string, `{value, order}`, or
/// a list of those.
fn header_values(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![one_line(s)],
        Json::Object(o) => o
            .get("value")
            .and_then(Json::as_str)
            .map(|s| vec![one_line(s)])
            .unwrap_or_default(),
        Json::Array(a) => a.iter().flat_map(header_values).collect(),
        _ => Vec::new(),
    }
}

/// A header value unfolded onto one line (it is refolded by nobody: the
/// gateway writes it as one line).
fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A header field name (RFC 5322 §3.6.8: printable ASCII but `:`).
fn is_field_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 76 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A JSON value, shortened for a log line.
fn short(v: &Json) -> String {
    let s = v.to_string();
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkv2_answer_gives_facts_and_headers() {
        let body = br#"{"is_skipped":false,"score":15.5,"required_score":15,"action":"reject",
            "symbols":{"GTUBE":{"name":"GTUBE","score":0},"R_DUMMY":{"name":"R_DUMMY"}},
            "milter":{"add_headers":{"X-Spamd-Result":{"value":"default: True\n [15.5]","order":0},
            "X-Two":["a",{"value":"b"}],"Bad Name":"x"},"remove_headers":{"X-Spam":1}}}"#;
        let s = Scan::parse(body).unwrap();
        assert_eq!(s.score, 15.5);
        assert_eq!(s.action, "reject");
        assert_eq!(s.symbols, ["GTUBE", "R_DUMMY"]);
        assert!(s
            .add_headers
            .contains(&("X-Spamd-Result".into(), "default: True [15.5]".into())));
        assert!(s.add_headers.contains(&("X-Two".into(), "b".into())));
        assert!(!s.add_headers.iter().any(|(n, _)| n == "Bad Name"));
        assert_eq!(s.remove_headers, ["X-Spam"]);
        assert_eq!(s.subject, None);
    }

    #[test]
    fn a_rewrite_subject_answer_gives_the_subject_on_one_line() {
        let body = "{\"score\":7,\"action\":\"rewrite subject\",\
            \"subject\":\"*** SPAM *** Grüße\\r\\nBcc: x@y\"}";
        let s = Scan::parse(body.as_bytes()).unwrap();
        assert_eq!(s.subject.as_deref(), Some("*** SPAM *** Grüße Bcc: x@y"));
        let facts = s.facts();
        assert!(facts.contains(&(SUBJECT.into(), Value::text("*** SPAM *** Grüße Bcc: x@y"))));
        // A subject that is not a string is no subject.
        let s = Scan::parse(br#"{"score":7,"action":"rewrite subject","subject":7}"#).unwrap();
        assert_eq!(s.subject, None);
    }

    #[test]
    fn malformed_answers_are_errors_never_a_pass() {
        for body in [
            &b""[..],
            b"[]",
            b"{\"action\":\"no action\"}",
            b"{\"score\":\"1\",\"action\":\"no action\"}",
            b"{\"score\":1,\"action\":\"accept\"}",
            b"{\"error\":\"bad request\"}",
            b"{\"score\":1,\"action\":\"no action\"",
        ] {
            assert!(
                Scan::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
