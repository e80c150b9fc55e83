//! `sender_auth:`: verifying who a message comes from (SPF, DKIM, DMARC,
//! ARC) on every message, the `Authentication-Results` header the gateway
//! writes, and whether DMARC policies are applied as published.
//!
//! Without this section the sender-authentication checks still run when a
//! rule reads one of their facts, but no header is written and no policy
//! is applied.

use super::ValidationError;
use serde::{Deserialize, Serialize};

/// `sender_auth: { authserv_id: mx.example.com, dmarc: enforce, arc: { trusted_sealers: [...] } }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderAuthOptions {
    /// The authserv-id of the `Authentication-Results` header (RFC 8601):
    /// the name this gateway's results are known by. Headers already in a
    /// message with this id are removed. Default: `hostname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authserv_id: Option<String>,
    /// `monitor` (the default: rules see `dmarc=fail` and decide) or
    /// `enforce` (`p=reject` refuses the message with `550 5.7.1`,
    /// `p=quarantine` quarantines it).
    pub dmarc: DmarcMode,
    /// ARC (RFC 8617): whose chains are believed.
    pub arc: ArcOptions,
}

/// What a DMARC failure does by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DmarcMode {
    /// Nothing: the result is a fact, rules decide.
    #[default]
    Monitor,
    /// The published policy is applied.
    Enforce,
}

/// `sender_auth.arc`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArcOptions {
    /// Forwarders (the `d=` of their ARC-Seal) whose valid ARC chain makes
    /// a DMARC failure pass: mailing lists and forwarding services known to
    /// check DMARC themselves. Default: none.
    pub trusted_sealers: Vec<String>,
}

impl ArcOptions {
    /// True when `domain` is a trusted sealer (names compare without case
    /// and without a trailing dot).
    pub fn trusts(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.');
        self.trusted_sealers
            .iter()
            .any(|t| t.trim_end_matches('.').eq_ignore_ascii_case(d))
    }
}

/// Range checks of `sender_auth:`.
pub(super) fn check(s: &SenderAuthOptions) -> Result<(), ValidationError> {
    if let Some(id) = &s.authserv_id {
        // RFC 8601 §2.2: a `value` (token); we write it bare, so no
        // specials, spaces or controls.
        let ok = !id.is_empty()
            && id.len() <= 255
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            return Err(ValidationError::new(
                "sender_auth.authserv_id",
                format!("must be a host name (letters, digits, '-', '.', '_'), not {id:?}"),
            ));
        }
    }
    for (i, d) in s.arc.trusted_sealers.iter().enumerate() {
        if !super::validate::is_domain(d.trim_end_matches('.')) {
            return Err(ValidationError::new(
                format!("sender_auth.arc.trusted_sealers[{i}]"),
                format!("must be a domain name, not {d:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealers_compare_without_case_or_trailing_dot() {
        let a = ArcOptions {
            trusted_sealers: vec!["Lists.Example.org.".into()],
        };
        assert!(a.trusts("lists.example.org"));
        assert!(!a.trusts("example.org"));
    }

    #[test]
    fn a_bad_authserv_id_is_refused() {
        let s = SenderAuthOptions {
            authserv_id: Some("mx example".into()),
            ..Default::default()
        };
        assert!(check(&s).is_err());
        let s = SenderAuthOptions {
            authserv_id: Some("mx.example.com".into()),
            ..Default::default()
        };
        assert!(check(&s).is_ok());
    }
}
