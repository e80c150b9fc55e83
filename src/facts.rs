//! Facts: what the checks of a session established, by name, for the rules
//! to match on and the audit trail to carry.
//!
//! A check (an iprev lookup, later DNS lists, SPF, a scanner) runs before a
//! stage's rules and records typed values here, such as `iprev = pass` or
//! `client.ptr = mail.example.com`. Rules only read them, so they stay
//! synchronous and never see a socket. A check that failed records
//! [`TEMPERROR`] for each of its facts, never nothing: a rule cannot
//! mistake a DNS outage for a clean answer.
//!
//! Each fact has a [`Scope`], which says when it is forgotten: facts about
//! the connection (the client's IP) last the whole session, facts about
//! the greeting are forgotten when STARTTLS restarts the session, and
//! facts about a transaction when it ends.

use std::collections::BTreeMap;
use std::fmt;

/// The value every fact of a check that failed or timed out gets.
pub const TEMPERROR: &str = "temperror";

/// A fact's value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A word or a name: `pass`, `mail.example.com`.
    Text(String),
    /// A number: a score, a count.
    Number(f64),
    /// Several values: the addresses a DNS list answered.
    List(Vec<String>),
}

impl Value {
    /// A text value.
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    /// The value as the texts it holds (a number as written), for matching.
    pub fn texts(&self) -> Vec<String> {
        match self {
            Value::Text(s) => vec![s.clone()],
            Value::Number(n) => vec![n.to_string()],
            Value::List(l) => l.clone(),
        }
    }

    /// The value as a number, when it is one (or a text that reads as one).
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Text(s) => s.parse().ok(),
            Value::List(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Number(n) => write!(f, "{n}"),
            Value::List(l) => write!(f, "[{}]", l.join(",")),
        }
    }
}

/// How long a fact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The whole connection: facts about the client's address.
    Connection,
    /// Until STARTTLS restarts the session: facts about the HELO name or
    /// the AUTH user.
    Greeting,
    /// Until the transaction ends: facts about the sender, recipients or
    /// message.
    Transaction,
}

/// One fact and how long it holds.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// Its value.
    value: Value,
    /// When it is forgotten.
    scope: Scope,
}

/// The facts of one session, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// By name, sorted so that logs and audit records list them in a
    /// stable order.
    entries: BTreeMap<String, Entry>,
}

impl Facts {
    /// No facts.
    pub fn new() -> Facts {
        Facts::default()
    }

    /// Records `name = value`, held for `scope`.
    pub fn set(&mut self, name: impl Into<String>, value: Value, scope: Scope) {
        self.entries.insert(name.into(), Entry { value, scope });
    }

    /// The value of `name`, if a check recorded it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.get(name).map(|e| &e.value)
    }

    /// True when `name` is known.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Forgets every fact of `scope` or narrower: `Transaction` when a
    /// transaction ends, `Greeting` when STARTTLS restarts the session.
    pub fn forget(&mut self, scope: Scope) {
        self.entries.retain(|_, e| e.scope < scope);
    }

    /// Every fact, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), &e.value))
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One run of a check, for the audit record: what it found, or why it
/// found nothing, and how long it took.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckRun {
    /// The check's name (`iprev`).
    pub check: String,
    /// The stage it ran at (`connect`, `mail`, ...).
    pub stage: &'static str,
    /// `ok`, `error`, `timeout`, or `fixture` when the simulator supplied
    /// its facts.
    pub outcome: &'static str,
    /// What went wrong, for `error` and `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub ms: f64,
    /// When the run is forgotten (with the facts it gave).
    #[serde(skip)]
    pub scope: Scope,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_scope_keeps_the_wider_ones() {
        let mut f = Facts::new();
        f.set("iprev", Value::text("pass"), Scope::Connection);
        f.set("helo.fqdn", Value::text("yes"), Scope::Greeting);
        f.set("spf", Value::text("fail"), Scope::Transaction);
        f.forget(Scope::Transaction);
        assert!(f.has("iprev") && f.has("helo.fqdn") && !f.has("spf"));
        f.forget(Scope::Greeting);
        assert!(f.has("iprev") && !f.has("helo.fqdn"));
        assert_eq!(f.get("iprev"), Some(&Value::text("pass")));
    }

    #[test]
    fn values_read_as_texts_and_numbers() {
        assert_eq!(Value::Number(7.5).number(), Some(7.5));
        assert_eq!(Value::text("7.5").number(), Some(7.5));
        assert_eq!(Value::text("pass").number(), None);
        assert_eq!(
            Value::List(vec!["127.0.0.2".into(), "127.0.0.4".into()]).texts(),
            vec!["127.0.0.2", "127.0.0.4"]
        );
        assert_eq!(
            Value::List(vec!["a".into(), "b".into()]).to_string(),
            "[a,b]"
        );
    }
}
