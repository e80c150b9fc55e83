//! `milters:`: the Sendmail-protocol filters (OpenDKIM, OpenDMARC,
//! clamav-milter, spamass-milter, rspamd's proxy...) every transaction
//! goes through, in order, as Postfix's `smtpd_milters`.
//!
//! ```yaml
//! milters:
//!   - name: opendkim
//!     socket: "inet:127.0.0.1:8891"   # or unix:/run/opendkim/opendkim.sock
//!     connect_timeout_s: 30
//!     command_timeout_s: 30
//!     eom_timeout_s: 300
//!     default_action: tempfail        # accept | tempfail | reject
//! ```

use super::ValidationError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a milter that cannot be used (down, too slow, misbehaving) means
/// for the mail, as Postfix's `milter_default_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MilterDefault {
    /// Go on without that milter.
    Accept,
    /// `451 4.7.1` (default, as Postfix).
    #[default]
    Tempfail,
    /// `550 5.7.1`.
    Reject,
}

/// One milter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterOptions {
    /// Its name in facts (`milter.NAME`), logs, metrics and the audit:
    /// letters, digits, `-` and `_`. Required, unique.
    pub name: String,
    /// Where it listens: `inet:host:port` or `unix:/path`. Required.
    pub socket: String,
    /// Seconds to connect and negotiate. Default 30 (Postfix's
    /// `milter_connect_timeout`).
    #[serde(default = "default_connect")]
    pub connect_timeout_s: u64,
    /// Seconds for each command's answer. Default 30 (Postfix's
    /// `milter_command_timeout`).
    #[serde(default = "default_command")]
    pub command_timeout_s: u64,
    /// Seconds for the end-of-message answer. Default 300 (Postfix's
    /// `milter_content_timeout`).
    #[serde(default = "default_eom")]
    pub eom_timeout_s: u64,
    /// What happens when it cannot be used. Default `tempfail`.
    #[serde(default)]
    pub default_action: MilterDefault,
}

fn default_connect() -> u64 {
    30
}
fn default_command() -> u64 {
    30
}
fn default_eom() -> u64 {
    300
}

impl MilterOptions {
    /// [`connect_timeout_s`](Self::connect_timeout_s) as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_s)
    }
    /// [`command_timeout_s`](Self::command_timeout_s) as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_s)
    }
    /// [`eom_timeout_s`](Self::eom_timeout_s) as a duration.
    pub fn eom_timeout(&self) -> Duration {
        Duration::from_secs(self.eom_timeout_s)
    }
}

/// Checks of `milters:`: names, sockets and timeouts.
pub(super) fn check(milters: &[MilterOptions]) -> Result<(), ValidationError> {
    for (i, m) in milters.iter().enumerate() {
        let err =
            |key: &str, reason: &str| ValidationError::new(format!("milters[{i}].{key}"), reason);
        if m.name.is_empty()
            || !m
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err("name", "must be letters, digits, - or _"));
        }
        if milters[..i].iter().any(|o| o.name == m.name) {
            return Err(err("name", "is used by an earlier milter"));
        }
        let ok = match m.socket.split_once(':') {
            Some(("unix", path)) => path.starts_with('/'),
            Some(("inet", addr)) => addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            }),
            _ => false,
        };
        if !ok {
            return Err(err("socket", "must be inet:host:port or unix:/path"));
        }
        for (key, v) in [
            ("connect_timeout_s", m.connect_timeout_s),
            ("command_timeout_s", m.command_timeout_s),
            ("eom_timeout_s", m.eom_timeout_s),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(err(key, "must be between 1 and 3600"));
            }
        }
    }
    Ok(())
}
