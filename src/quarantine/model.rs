//! The sidecar: what the gateway knew about a quarantined message when it
//! held it, versioned so later tools can still read old entries.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The sidecar format this build writes and reads.
pub const VERSION: u32 = 1;

/// One quarantined message's sidecar (`<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The format version, [`VERSION`].
    pub version: u32,
    /// The transaction id; also the file names' stem.
    pub id: String,
    /// When the message was received, RFC 3339.
    pub received: String,
    /// The envelope as the client gave it.
    pub envelope: Envelope,
    /// The client session.
    pub client: Client,
    /// The facts the checks had established (`iprev`, `spf`, ...).
    #[serde(default)]
    pub facts: BTreeMap<String, serde_json::Value>,
    /// Every rule (or filter) that matched in the transaction, in order.
    #[serde(default)]
    pub rules: Vec<RuleFired>,
    /// Why the message was held.
    pub held: Held,
    /// Size of the stored `.eml` in bytes (the gateway's headers included).
    pub size: u64,
}

/// MAIL FROM and RCPT TO, with their parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The reverse path without brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// MAIL parameters in their wire form (`SIZE=123`, `BODY=8BITMIME`).
    #[serde(default)]
    pub mail_params: Vec<String>,
    /// The accepted recipients.
    pub rcpts: Vec<RcptEntry>,
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptEntry {
    /// The address without brackets (or `postmaster`).
    pub address: String,
    /// RCPT parameters in their wire form (`NOTIFY=NEVER`).
    #[serde(default)]
    pub params: Vec<String>,
}

/// The client session the message came in on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client's IP address (after PROXY protocol, the real client).
    pub ip: String,
    /// The client's port.
    pub port: u16,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
    /// TLS, when the session was under TLS.
    pub tls: Option<TlsEntry>,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// The session id, as in logs and audit records.
    pub session: String,
}

/// The TLS parameters of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsEntry {
    /// Protocol version (`TLSv1.3`).
    pub version: String,
    /// Cipher suite.
    pub cipher: String,
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFired {
    /// The rule's (or filter's) name.
    pub name: String,
    /// The stage it matched at.
    pub stage: String,
    /// What it did (`quarantine`, `score`, `add_header`, ...).
    pub verdict: String,
}

/// Who held the message and at which stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The rule, milter or check that decided (`dmarc` for a DMARC
    /// `p=quarantine`); `None` when nothing named itself.
    pub by: Option<String>,
    /// The stage the quarantine verdict was given at.
    pub stage: String,
    /// The reason given with it, when there was one (a milter's).
    #[serde(default)]
    pub reason: Option<String>,
}

impl Sidecar {
    /// The recipients' addresses.
    pub fn rcpt_addresses(&self) -> Vec<String> {
        self.envelope
            .rcpts
            .iter()
            .map(|r| r.address.clone())
            .collect()
    }
}

#[cfg(test)]
pub(crate) fn sample(id: &str) -> Sidecar {
    Sidecar {
        version: VERSION,
        id: id.to_string(),
        received: "2026-01-02T03:04:05+00:00".to_string(),
        envelope: Envelope {
            mail_from: "a@x.test".to_string(),
            mail_params: vec!["SIZE=10".to_string()],
            rcpts: vec![RcptEntry {
                address: "b@y.test".to_string(),
                params: vec!["NOTIFY=NEVER".to_string()],
            }],
        },
        client: Client {
            ip: "192.0.2.1".to_string(),
            port: 4242,
            helo: Some("client.test".to_string()),
            tls: Some(TlsEntry {
                version: "TLSv1.3".to_string(),
                cipher: "TLS13_AES_128_GCM_SHA256".to_string(),
            }),
            auth_user: None,
            session: "s1".to_string(),
        },
        facts: [("iprev".to_string(), serde_json::json!("fail"))].into(),
        rules: vec![RuleFired {
            name: "review".to_string(),
            stage: "data".to_string(),
            verdict: "quarantine".to_string(),
        }],
        held: Held {
            by: Some("review".to_string()),
            stage: "data".to_string(),
            reason: None,
        },
        size: 42,
    }
}
