//! Relay control, deny by default: which recipients a client may name, and
//! which senders a logged-in user may use.
//!
//! A recipient is accepted when its domain is local, or the client is in a
//! trusted network, or the session is authenticated; everyone else gets
//! `554 5.7.1 Relay access denied`. Addresses are judged by where they
//! really lead: the source route of `<@a:user@b>` is already dropped by the
//! parser (only `user@b` counts), and a local part that still carries a
//! route — `%` (percent hack), `!` (bang path) or `@` (inside quotes) — is
//! a relay attempt even at a local domain, as Postfix's
//! `reject_unauth_destination` treats it: the server behind us might
//! follow that route.

use crate::config::RelayOptions;
use crate::proto::{Mailbox, Recipient};
use ipnet::IpNet;
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

/// The compiled relay settings.
#[derive(Clone, Debug, Default)]
pub struct RelayPolicy {
    /// Local domains, lowercased, without trailing dot.
    exact: HashSet<String>,
    /// Parents whose subdomains are local (from `.example.com`), as
    /// `.example.com`, lowercased.
    suffixes: Vec<String>,
    /// Networks whose clients may relay anywhere.
    trusted: Vec<IpNet>,
}

impl RelayPolicy {
    /// Compiles the `relay` section.
    pub fn new(options: &RelayOptions) -> Self {
        let mut policy = RelayPolicy {
            trusted: options.trusted_networks.iter().map(|n| n.0).collect(),
            ..RelayPolicy::default()
        };
        for d in &options.local_domains {
            let d = canonical_domain(d);
            if d.starts_with('.') {
                policy.suffixes.push(d);
            } else {
                policy.exact.insert(d);
            }
        }
        policy
    }

    /// True when `ip` is in a trusted network. IPv4-mapped IPv6 addresses
    /// (a dual-stack listener) count as their IPv4 address.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// True when `domain` is a local domain (without case, trailing dot
    /// ignored). An address literal never is.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = canonical_domain(domain);
        if d.starts_with('[') {
            return false;
        }
        self.exact.contains(&d) || self.suffixes.iter().any(|s| d.ends_with(s.as_str()))
    }

    /// True when mail to `m` stays here: a local domain, and a local part
    /// that names no further route.
    pub fn is_local_destination(&self, m: &Mailbox) -> bool {
        self.is_local_domain(&m.domain) && !has_route(&local_part_text(&m.local))
    }

    /// Whether a client may name `rcpt`: local destinations for everyone,
    /// anything for trusted or authenticated clients. `<postmaster>`
    /// without a domain is always local (RFC 5321 §4.5.1).
    pub fn may_relay(&self, rcpt: &Recipient, trusted: bool, authenticated: bool) -> bool {
        if trusted || authenticated {
            return true;
        }
        match rcpt {
            Recipient::Postmaster => true,
            Recipient::Mailbox(m) => self.is_local_destination(m),
        }
    }
}

/// A domain for comparisons: ASCII-lowercased, one trailing dot removed,
/// internationalized labels as A-labels (`xn--...`).
pub fn canonical_domain(domain: &str) -> String {
    crate::proto::address::ascii_domain(domain)
}

/// The local part as its text: a quoted string without its quotes and
/// backslash escapes (`"a\"b"` is `a"b`), anything else as written.
pub fn local_part_text(local: &str) -> Cow<'_, str> {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return Cow::Borrowed(local);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// True when a local part's text carries a route to somewhere else:
/// `user%host` (percent hack), `host!user` (bang path) or `user@host`.
pub fn has_route(local_text: &str) -> bool {
    local_text.contains(['%', '!', '@'])
}

/// One entry of a user's `senders` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderRule {
    /// `*`: any sender (for trusted applications only).
    Any,
    /// `@example.com`: any address at that domain (not its subdomains).
    Domain(String),
    /// `alice@example.com`: that address (without case).
    Address {
        /// Local part text, lowercased.
        local: String,
        /// Domain, canonical.
        domain: String,
    },
}

impl SenderRule {
    /// Parses `*`, `@domain` or `local@domain`.
    pub fn parse(s: &str) -> Result<SenderRule, String> {
        if s == "*" {
            return Ok(SenderRule::Any);
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(format!("{s:?} is not an address, \"@domain\" or \"*\""));
        };
        let domain = canonical_domain(domain);
        if domain.is_empty() || domain.contains(['@', ' ']) {
            return Err(format!("{s:?} has no valid domain"));
        }
        if local.is_empty() {
            return Ok(SenderRule::Domain(domain));
        }
        Ok(SenderRule::Address {
            local: local_part_text(local).to_lowercase(),
            domain,
        })
    }

    /// True when this rule lets a user send as `m`.
    pub fn allows(&self, m: &Mailbox) -> bool {
        match self {
            SenderRule::Any => true,
            SenderRule::Domain(d) => canonical_domain(&m.domain) == *d,
            SenderRule::Address { local, domain } => {
                canonical_domain(&m.domain) == *domain
                    && local_part_text(&m.local).to_lowercase() == *local
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Network;

    fn mb(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn policy() -> RelayPolicy {
        RelayPolicy::new(&RelayOptions {
            local_domains: vec!["Local.Test".into(), ".sub.test".into()],
            trusted_networks: vec![
                "10.0.0.0/8".parse::<Network>().unwrap(),
                "::1".parse().unwrap(),
            ],
        })
    }

    #[test]
    fn local_destinations_are_judged_by_their_real_route() {
        let p = policy();
        let cases: &[(&str, &str, bool)] = &[
            ("user", "local.test", true),
            ("user", "LOCAL.TEST", true),
            ("user", "local.test.", true),
            ("User.Name+tag", "Local.Test", true),
            ("user", "a.sub.test", true),
            ("user", "sub.test", false),
            ("user", "other.test", false),
            ("user", "other.test.", false),
            ("user", "local.test.other.test", false),
            ("user", "notlocal.test", false),
            ("user", "[127.0.0.1]", false),
            ("user%other.test", "local.test", false),
            ("other.test!user", "local.test", false),
            ("\"user@other.test\"", "local.test", false),
            ("\"user%other.test\"", "local.test", false),
            ("\"@other.test:user\"", "local.test", false),
            ("\"plain quoted\"", "local.test", true),
            ("\"a\\@b\"", "local.test", false),
        ];
        for (local, domain, want) in cases {
            assert_eq!(
                p.is_local_destination(&mb(local, domain)),
                *want,
                "{local}@{domain}"
            );
        }
    }

    #[test]
    fn trusted_or_authenticated_clients_relay_anywhere() {
        let p = policy();
        let far = Recipient::Mailbox(mb("user%x", "other.test"));
        assert!(!p.may_relay(&far, false, false));
        assert!(p.may_relay(&far, true, false));
        assert!(p.may_relay(&far, false, true));
        assert!(p.may_relay(&Recipient::Postmaster, false, false));
        assert!(p.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(p.is_trusted("::1".parse().unwrap()));
        assert!(!p.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(!p.is_trusted("192.0.2.1".parse().unwrap()));
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
        assert!(p.is_trusted("::ffff:10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn default_trusts_loopback_only() {
        let p = RelayPolicy::new(&RelayOptions::default());
        assert!(p.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(p.is_trusted("127.8.9.10".parse().unwrap()));
        assert!(p.is_trusted("::1".parse().unwrap()));
        assert!(!p.is_trusted("192.168.1.1".parse().unwrap()));
        assert!(!p.is_trusted("::2".parse().unwrap()));
    }

    #[test]
    fn sender_rules() {
        let addr = SenderRule::parse("Alice@Example.COM.").unwrap();
        let dom = SenderRule::parse("@example.com").unwrap();
        let any = SenderRule::parse("*").unwrap();
        assert!(addr.allows(&mb("alice", "example.com")));
        assert!(addr.allows(&mb("ALICE", "EXAMPLE.com.")));
        assert!(addr.allows(&mb("\"alice\"", "example.com")));
        assert!(!addr.allows(&mb("bob", "example.com")));
        assert!(!addr.allows(&mb("alice", "example.org")));
        assert!(!addr.allows(&mb("alice%x", "example.com")));
        assert!(dom.allows(&mb("anyone", "Example.com")));
        assert!(!dom.allows(&mb("anyone", "sub.example.com")));
        assert!(!dom.allows(&mb("anyone", "example.com.evil")));
        assert!(any.allows(&mb("x", "y.test")));
        for bad in ["alice", "alice@", "@", ""] {
            assert!(SenderRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoted_local_parts_are_unescaped() {
        assert_eq!(local_part_text("plain"), "plain");
        assert_eq!(local_part_text("\"a b\""), "a b");
        assert_eq!(local_part_text("\"a\\\"b\""), "a\"b");
        assert_eq!(local_part_text("\"a\\@b\""), "a@b");
    }
}
