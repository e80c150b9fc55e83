//! The edges of the gateway in `gateway.yaml`: the PROXY protocol spoken by
//! a load balancer in front of it, and how the real client is named to the
//! mail server behind it (XFORWARD or XCLIENT).
//!
//! Kept apart from the core settings in `mod.rs`, like the security ones.
//! The cross-field checks are in [`check`].

use super::{Config, Network, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::IpAddr;

/// Who may put a PROXY protocol header (HAProxy, v1 or v2) in front of a
/// connection, and how long it may take. YAML:
/// `proxy_protocol: { trusted_proxies: [10.0.0.10, 10.0.0.11], timeout_s: 5 }`,
/// used by listeners with `proxy_protocol: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolOptions {
    /// The load balancers' addresses, as networks (`10.0.0.0/29`) or single
    /// addresses. A header names the client that everything else trusts, so
    /// only these may send one: a connection from anywhere else on a
    /// `proxy_protocol: true` listener is closed without a greeting.
    /// Required; not empty.
    pub trusted_proxies: Vec<Network>,
    /// Seconds the whole header may take to arrive, from the accept.
    /// Default 5 (a proxy sends it at once); 1 to 300.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

/// Serde default of [`ProxyProtocolOptions::timeout_s`].
fn default_timeout_s() -> u64 {
    5
}

/// Longest PROXY header wait accepted: a longer one only holds sockets.
const MAX_PROXY_TIMEOUT_S: u64 = 300;

impl ProxyProtocolOptions {
    /// True when `ip` (the TCP peer) may send a PROXY header. An IPv4
    /// peer seen on an IPv6 socket (`::ffff:10.0.0.10`) counts as the
    /// IPv4 address.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.0.contains(&ip))
    }

    /// [`timeout_s`](Self::timeout_s) as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s)
    }
}

/// How the upstream learns who the real client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardClient {
    /// Postfix's XFORWARD, before each MAIL, when the upstream offers it:
    /// its logs (and Received header) name the real client, HELO and our
    /// transaction id. Changes nothing else. The default.
    #[default]
    Xforward,
    /// XCLIENT, when the upstream offers it (else XFORWARD when offered):
    /// the upstream's session takes the real client's address, HELO and
    /// login, so its access rules judge the client, not the gateway. The
    /// upstream must authorize it (Postfix: `smtpd_authorized_xclient_hosts`).
    Xclient,
    /// Say nothing: the upstream sees the gateway as the client.
    None,
}

/// Shorthand for building an error.
fn err(path: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::new(path, reason)
}

/// Cross-field checks of the PROXY protocol and forwarding settings.
pub(super) fn check(c: &Config) -> Result<(), ValidationError> {
    if let Some(p) = &c.proxy_protocol {
        if p.trusted_proxies.is_empty() {
            return Err(err(
                "proxy_protocol.trusted_proxies",
                "must name at least one load balancer address or network",
            ));
        }
        if p.timeout_s == 0 || p.timeout_s > MAX_PROXY_TIMEOUT_S {
            return Err(err(
                "proxy_protocol.timeout_s",
                format!("must be between 1 and {MAX_PROXY_TIMEOUT_S}"),
            ));
        }
    }
    for (i, l) in c.listen.iter().enumerate() {
        if l.proxy_protocol && c.proxy_protocol.is_none() {
            return Err(err(
                &format!("listen[{i}].proxy_protocol"),
                "needs the load balancers' addresses: add \
                 `proxy_protocol: { trusted_proxies: [10.0.0.10] }` at the top level",
            ));
        }
    }
    if c.proxy_protocol.is_some() && !c.listen.iter().any(|l| l.proxy_protocol) {
        return Err(err(
            "proxy_protocol",
            "has no effect: no listener has `proxy_protocol: true`",
        ));
    }
    if let Some(up) = &c.upstream {
        if up.forward_client == ForwardClient::Xclient && up.auth.is_some() {
            return Err(err(
                "upstream.forward_client",
                "xclient restarts the upstream session as the client, which drops the login \
                 of `upstream.auth`: use xforward, or remove upstream.auth",
            ));
        }
    }
    Ok(())
}

impl Config {
    /// The summary lines of the PROXY protocol and forwarding settings.
    pub(super) fn edge_summary(&self, s: &mut String) {
        if let Some(p) = &self.proxy_protocol {
            let from: Vec<String> = p.trusted_proxies.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "proxy:     PROXY protocol v1/v2 accepted from {} (header within {}s)",
                from.join(", "),
                p.timeout_s
            );
        }
        if let Some(up) = &self.upstream {
            let how = match up.forward_client {
                ForwardClient::Xforward => "XFORWARD when offered",
                ForwardClient::Xclient => "XCLIENT when offered, else XFORWARD",
                ForwardClient::None => "not told",
            };
            let _ = writeln!(s, "client:    the upstream learns the real client by {how}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, super::super::ConfigError> {
        Config::from_yaml(text, "test.yaml")
    }

    #[test]
    fn errors_name_key_and_line() {
        let cases: Vec<(&str, usize, &str)> = vec![
            (
                "listen:\n  - addr: \"0.0.0.0:25\"\n    proxy_protocol: true\n",
                3,
                "listen[0].proxy_protocol: needs the load balancers' addresses",
            ),
            (
                "listen:\n  - { addr: \"0.0.0.0:25\", proxy_protocol: true }\nproxy_protocol:\n  trusted_proxies: []\n",
                4,
                "proxy_protocol.trusted_proxies: must name at least one",
            ),
            (
                "listen:\n  - { addr: \"0.0.0.0:25\", proxy_protocol: true }\nproxy_protocol:\n  trusted_proxies: [10.0.0.10]\n  timeout_s: 0\n",
                5,
                "proxy_protocol.timeout_s: must be between 1 and 300",
            ),
            (
                "listen:\n  - { addr: \"0.0.0.0:25\" }\nproxy_protocol:\n  trusted_proxies: [10.0.0.10]\n",
                3,
                "proxy_protocol: has no effect",
            ),
            (
                "proxy_protocol:\n  trusted_proxies: [10.0.0.300]\n",
                2,
                "\"10.0.0.300\" is not an IP address or network",
            ),
            (
                "proxy_protocol:\n  timeout_s: 5\n",
                2,
                "missing field `trusted_proxies`",
            ),
            (
                "upstream:\n  addr: \"mx:25\"\n  forward_client: xforwarded\n",
                3,
                "unknown variant `xforwarded`",
            ),
            (
                "upstream:\n  addr: \"mx:465\"\n  tls: implicit\n  forward_client: xclient\n  auth: { user: u, password: p }\n",
                4,
                "upstream.forward_client: xclient restarts the upstream session",
            ),
        ];
        for (text, line, want) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.reason.contains(want), "{text}\nwant {want:?}\ngot  {e}");
            assert_eq!(e.line, Some(line), "{text}\n{e}");
        }
    }

    #[test]
    fn proxy_listener_and_trust() {
        let c = parse(
            "listen:\n  - { addr: \"0.0.0.0:25\", proxy_protocol: true }\n  - { addr: \"127.0.0.1:2525\" }\n\
             proxy_protocol: { trusted_proxies: [10.0.0.8/29, \"::1\"] }\n",
        )
        .unwrap();
        assert!(c.listener_policy(&c.listen[0]).proxy_protocol);
        assert!(!c.listener_policy(&c.listen[1]).proxy_protocol);
        let p = c.proxy_protocol.as_ref().unwrap();
        assert_eq!(p.timeout_s, 5);
        for (ip, trusted) in [
            ("10.0.0.10", true),
            ("::ffff:10.0.0.15", true),
            ("10.0.0.16", false),
            ("::1", true),
            ("127.0.0.1", false),
        ] {
            assert_eq!(p.is_trusted(ip.parse().unwrap()), trusted, "{ip}");
        }
        let s = c.summary();
        assert!(s.contains("0.0.0.0:25 (PROXY protocol)"), "{s}");
        assert!(
            s.contains("proxy:     PROXY protocol v1/v2 accepted from 10.0.0.8/29, ::1/128 (header within 5s)"),
            "{s}"
        );
    }

    #[test]
    fn forward_client_defaults_to_xforward() {
        let c = parse("upstream: { addr: \"mx:25\" }\n").unwrap();
        let up = c.upstream.as_ref().unwrap();
        assert_eq!(up.forward_client, ForwardClient::Xforward);
        assert!(c
            .summary()
            .contains("client:    the upstream learns the real client by XFORWARD when offered"));
        for (word, want) in [
            ("xclient", ForwardClient::Xclient),
            ("none", ForwardClient::None),
        ] {
            let c = parse(&format!(
                "upstream: {{ addr: \"mx:25\", forward_client: {word} }}\n"
            ))
            .unwrap();
            assert_eq!(c.upstream.unwrap().forward_client, want);
        }
    }
}
