//! The security parts of `gateway.yaml`: TLS on listeners, SMTP AUTH, relay
//! control, and TLS/AUTH/failover towards the upstream.
//!
//! Kept apart from the core settings in `mod.rs` so that each part reads on
//! its own. The cross-field checks are in [`check`]. The files these keys
//! name (certificates, users file, CA file) are opened by the gateway when
//! it is built, which names the config line of a broken one.

use super::validate::{is_domain, MAX_SECONDS};
use super::{Config, Listener, Upstream, ValidationError};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// STARTTLS (RFC 3207) on a plain-text listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Not offered.
    #[default]
    None,
    /// Offered; clients may go on in plain text.
    Optional,
    /// Offered, and MAIL/AUTH before it get `530 5.7.0`.
    Required,
}

/// Whether a connection starts with a TLS handshake (RFC 8314 "implicit
/// TLS", port 465 style) — on a listener, or towards the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text first (STARTTLS may follow).
    #[default]
    None,
    /// TLS from the first byte.
    Implicit,
}

/// SMTP AUTH (RFC 4954) on a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Not offered.
    #[default]
    None,
    /// Offered (under TLS); not needed to send mail.
    Optional,
    /// MAIL before a successful AUTH gets `530 5.7.0 Authentication required`.
    Required,
}

/// The certificate and key every TLS listener presents. YAML:
/// `tls: { cert: /etc/smtpgate/cert.pem, key: /etc/smtpgate/key.pem }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, leaf first. Re-read on SIGHUP.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    pub key: PathBuf,
    /// Stateless session tickets sealed with keys from a file that several
    /// instances share, so a client resumes on any of them. Without it,
    /// each instance resumes only its own sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tickets: Option<SessionTickets>,
}

/// Shared TLS session tickets. YAML:
/// `session_tickets: { key_file: /etc/smtpgate/ticket-keys, lifetime_s: 43200 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTickets {
    /// One key per line, newest first (`smtpgate ticket-keys rotate`
    /// writes it). Looked at every 10 s for a rotation.
    pub key_file: PathBuf,
    /// How long clients may keep a ticket, in seconds (at most 7 days, RFC
    /// 8446). Rotate the keys at least this often. Default 12 hours.
    #[serde(default = "default_ticket_lifetime_s")]
    pub lifetime_s: u32,
}

/// Serde default of [`SessionTickets::lifetime_s`].
fn default_ticket_lifetime_s() -> u32 {
    12 * 3600
}

/// Who may authenticate. YAML: `auth: { users_file: users.yaml }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthOptions {
    /// The users file: names, password hashes and allowed senders.
    /// Re-read on SIGHUP. Optional when `backends` names others.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Where passwords are checked, tried in order (see
    /// `config/auth_backends.rs`). Default: the users file alone.
    #[serde(default)]
    pub backends: Vec<super::AuthBackend>,
    /// Remember successful logins for a short while; off by default.
    #[serde(default)]
    pub cache: Option<super::LoginCacheOptions>,
    /// Failed AUTH attempts a session may make before it gets
    /// `421 4.7.0` and is closed. Default 3; at least 1.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
}

impl AuthOptions {
    /// The backends in the order they are tried: `backends`, or the users
    /// file alone when it is not set.
    pub fn backends(&self) -> Vec<super::AuthBackend> {
        if self.backends.is_empty() {
            vec![super::AuthBackend::UsersFile]
        } else {
            self.backends.clone()
        }
    }

    /// What `check` prints: the users file's path, the others' names.
    fn backend_names(&self) -> Vec<String> {
        self.backends()
            .iter()
            .map(|b| match (b, &self.users_file) {
                (super::AuthBackend::UsersFile, Some(f)) => f.display().to_string(),
                (b, _) => b.name().to_string(),
            })
            .collect()
    }
}

/// Serde default of [`AuthOptions::max_failures`].
fn default_max_failures() -> u32 {
    3
}

/// Relay control: which recipients a client may name (deny by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayOptions {
    /// Domains we receive mail for: anyone may send to them. A leading dot
    /// (`.example.com`) matches every subdomain. Compared without case and
    /// without a trailing dot. Default: none.
    pub local_domains: Vec<String>,
    /// Clients that may relay to any domain, as networks (`10.0.0.0/8`) or
    /// single addresses. Default: loopback only (`127.0.0.0/8`, `::1/128`),
    /// so the embedded default keeps working for local tests; `[]` trusts
    /// nobody.
    pub trusted_networks: Vec<Network>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            local_domains: Vec::new(),
            trusted_networks: vec![
                Network("127.0.0.0/8".parse().expect("valid network")),
                Network("::1/128".parse().expect("valid network")),
            ],
        }
    }
}

/// An IP network in `trusted_networks`: `10.0.0.0/8`, `2001:db8::/32`, or a
/// single address (`192.0.2.7`, meaning /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network(pub IpNet);

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('/') {
            return s
                .parse::<IpNet>()
                .map(|n| Network(n.trunc()))
                .map_err(|_| format!("{s:?} is not a network (e.g. 10.0.0.0/8 or 2001:db8::/32)"));
        }
        s.parse::<IpAddr>()
            .map(|ip| Network(IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is not an IP address or network (e.g. 10.0.0.0/8)"))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// STARTTLS towards the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamStartTls {
    /// Never: the session stays in plain text (the default, as before).
    #[default]
    None,
    /// When the upstream offers it. A failed handshake or certificate check
    /// fails the connection; it never falls back to plain text once TLS was
    /// offered.
    Opportunistic,
    /// Always: an upstream that does not offer STARTTLS is not used, and
    /// nothing is sent to it in clear (the client gets `451 4.4.1`).
    Required,
}

/// Credentials for AUTH at the upstream (a provider's smarthost).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuth {
    /// The user name.
    pub user: String,
    /// The password, inline. Prefer `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file whose first line is the password (keep it mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl fmt::Debug for UpstreamAuth {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl UpstreamAuth {
    /// The password: inline, or the first line of `password_file`.
    pub fn read_password(&self) -> Result<String, String> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        let Some(path) = &self.password_file else {
            return Err("no password or password_file".to_string());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(format!("{}: the first line is empty", path.display()));
        }
        Ok(line.to_string())
    }
}

/// What one listener does, with the defaults resolved against the rest of
/// the configuration (see [`Config::listener_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// TLS from the first byte (port 465 style).
    pub implicit_tls: bool,
    /// STARTTLS on a plain listener (always `None` with implicit TLS).
    pub starttls: StartTls,
    /// SMTP AUTH.
    pub auth: AuthMode,
    /// AUTH allowed without TLS (meant for loopback listeners only).
    pub plaintext_auth: bool,
    /// Connections start with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
}

impl ListenerPolicy {
    /// A plain listener with neither TLS nor AUTH.
    pub fn plain() -> Self {
        ListenerPolicy {
            implicit_tls: false,
            starttls: StartTls::None,
            auth: AuthMode::None,
            plaintext_auth: false,
            proxy_protocol: false,
        }
    }

    /// True if sessions on this listener can ever be under TLS.
    pub fn tls_capable(&self) -> bool {
        self.implicit_tls || self.starttls != StartTls::None
    }
}

impl Listener {
    /// A listener on `addr` with the other fields at their defaults.
    pub fn at(addr: std::net::SocketAddr) -> Self {
        Listener {
            addr,
            ..Listener::default()
        }
    }
}

impl Config {
    /// The resolved policy of `l`. Defaults: STARTTLS `optional` on plain
    /// listeners when `tls` certificates are configured (`none` without);
    /// AUTH `optional` when a users file is configured and the listener can
    /// do TLS (or allows plaintext AUTH), `none` otherwise.
    pub fn listener_policy(&self, l: &Listener) -> ListenerPolicy {
        let implicit_tls = l.tls == TlsMode::Implicit;
        let starttls = if implicit_tls {
            StartTls::None
        } else {
            l.starttls.unwrap_or(if self.tls.is_some() {
                StartTls::Optional
            } else {
                StartTls::None
            })
        };
        let tls_capable = implicit_tls || starttls != StartTls::None;
        let auth = l.auth.unwrap_or(
            if self.auth.is_some() && (tls_capable || l.plaintext_auth) {
                AuthMode::Optional
            } else {
                AuthMode::None
            },
        );
        ListenerPolicy {
            implicit_tls,
            starttls,
            auth,
            plaintext_auth: l.plaintext_auth,
            proxy_protocol: l.proxy_protocol,
        }
    }
}

impl Upstream {
    /// Every server to try, in order: `addr`, then `fallback`.
    pub fn addrs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.addr.as_str()).chain(self.fallback.iter().map(String::as_str))
    }

    /// True when the upstream session uses TLS at all.
    pub fn uses_tls(&self) -> bool {
        self.tls == TlsMode::Implicit || self.starttls != UpstreamStartTls::None
    }
}

/// Shorthand for building an error.
fn err(path: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::new(path, reason)
}

/// Cross-field checks of the security settings; the first problem found
/// wins, in file order (listeners, tls, auth, relay, upstream).
pub(super) fn check(c: &Config) -> Result<(), ValidationError> {
    for (i, l) in c.listen.iter().enumerate() {
        listener(c, i, l)?;
    }
    if let Some(t) = &c.tls {
        for (key, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
            if path.as_os_str().is_empty() {
                return Err(err(key, "must not be empty"));
            }
        }
        if let Some(st) = &t.session_tickets {
            if st.key_file.as_os_str().is_empty() {
                return Err(err("tls.session_tickets.key_file", "must not be empty"));
            }
            if !(1..=7 * 86_400).contains(&st.lifetime_s) {
                return Err(err(
                    "tls.session_tickets.lifetime_s",
                    "must be 1 to 604800 (7 days)",
                ));
            }
        }
    }
    if let Some(a) = &c.auth {
        if a.users_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return Err(err("auth.users_file", "must not be empty"));
        }
        super::auth_backends::validate(&a.backends, a.users_file.is_some())
            .map_err(|(key, reason)| err(&key, reason))?;
        super::auth_backends::validate_upstream(&a.backends, c.upstream.as_ref())
            .map_err(|(key, reason)| err(&key, reason))?;
        if let Some(cache) = &a.cache {
            super::auth_backends::validate_cache(cache)
                .map_err(|(key, reason)| err(&key, reason))?;
        }
        if a.max_failures == 0 {
            return Err(err("auth.max_failures", "must be at least 1"));
        }
    }
    for (i, d) in c.relay.local_domains.iter().enumerate() {
        let bare = d.strip_prefix('.').unwrap_or(d);
        let bare = bare.strip_suffix('.').unwrap_or(bare);
        if !is_domain(bare) {
            return Err(err(
                &format!("relay.local_domains[{i}]"),
                format!(
                    "{d:?} is not a domain name (a leading '.' matches subdomains, e.g. \".example.com\")"
                ),
            ));
        }
    }
    if let Some(up) = &c.upstream {
        upstream(up)?;
    }
    Ok(())
}

/// The checks of one listener.
fn listener(c: &Config, i: usize, l: &Listener) -> Result<(), ValidationError> {
    let at = |key: &str| format!("listen[{i}].{key}");
    let implicit = l.tls == TlsMode::Implicit;
    if implicit && matches!(l.starttls, Some(StartTls::Optional | StartTls::Required)) {
        return Err(err(
            &at("starttls"),
            "an implicit-TLS listener is encrypted from the start; remove starttls",
        ));
    }
    if c.tls.is_none() {
        if implicit {
            return Err(err(
                &at("tls"),
                "implicit TLS needs a certificate: add `tls: { cert: ..., key: ... }` at the top level",
            ));
        }
        if matches!(l.starttls, Some(StartTls::Optional | StartTls::Required)) {
            return Err(err(
                &at("starttls"),
                "STARTTLS needs a certificate: add `tls: { cert: ..., key: ... }` at the top level",
            ));
        }
    }
    let policy = c.listener_policy(l);
    if matches!(l.auth, Some(AuthMode::Optional | AuthMode::Required)) {
        if c.auth.is_none() {
            return Err(err(
                &at("auth"),
                "AUTH needs users: add `auth: { users_file: users.yaml }` at the top level",
            ));
        }
        if !policy.tls_capable() && !l.plaintext_auth {
            return Err(err(
                &at("auth"),
                "AUTH is only offered under TLS: set `starttls` or `tls: implicit` on this \
                 listener (or `plaintext_auth: true`, for loopback listeners only)",
            ));
        }
    }
    if l.plaintext_auth && policy.auth == AuthMode::None {
        return Err(err(
            &at("plaintext_auth"),
            "has no effect: this listener offers no AUTH",
        ));
    }
    Ok(())
}

/// The checks of the upstream's TLS, AUTH and failover settings.
fn upstream(up: &Upstream) -> Result<(), ValidationError> {
    for (i, addr) in up.fallback.iter().enumerate() {
        if let Err(reason) = super::validate::host_port(addr) {
            return Err(err(&format!("upstream.fallback[{i}]"), reason));
        }
    }
    if up.tls == TlsMode::Implicit && up.starttls != UpstreamStartTls::None {
        return Err(err(
            "upstream.starttls",
            "with `tls: implicit` the session is encrypted from the start; remove starttls",
        ));
    }
    if up.retry_after_s == 0 || up.retry_after_s > MAX_SECONDS {
        return Err(err(
            "upstream.retry_after_s",
            format!("must be between 1 and {MAX_SECONDS}"),
        ));
    }
    if let Some(name) = &up.server_name {
        if name.parse::<IpAddr>().is_err() && !is_domain(name) {
            return Err(err(
                "upstream.server_name",
                format!("{name:?} is not a host name or IP address"),
            ));
        }
    }
    if up.ca_file.is_some() && !up.tls_verify {
        return Err(err(
            "upstream.ca_file",
            "is not used with `tls_verify: false`; remove one of them",
        ));
    }
    if let Some(a) = &up.auth {
        let secure = up.tls == TlsMode::Implicit || up.starttls == UpstreamStartTls::Required;
        if !secure {
            return Err(err(
                "upstream.auth",
                "the password would cross the wire in clear: set `starttls: required` or \
                 `tls: implicit` on the upstream",
            ));
        }
        if a.user.is_empty() || a.user.contains(['\0', '\r', '\n']) {
            return Err(err("upstream.auth.user", "must be a non-empty single line"));
        }
        match (&a.password, &a.password_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "upstream.auth.password_file",
                    "give either password or password_file, not both",
                ))
            }
            (None, None) => {
                return Err(err("upstream.auth", "needs `password` or `password_file`"))
            }
            (Some(p), None) if p.is_empty() || p.contains(['\0', '\r', '\n']) => {
                return Err(err(
                    "upstream.auth.password",
                    "must be a non-empty single line",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

impl Config {
    /// One listener for the summary: the address, then what it does when
    /// that is more than plain SMTP (`0.0.0.0:587 (starttls required, auth
    /// required)`).
    pub(super) fn listener_summary(&self, l: &Listener) -> String {
        let p = self.listener_policy(l);
        let mut parts = Vec::new();
        if p.implicit_tls {
            parts.push("implicit TLS".to_string());
        }
        match p.starttls {
            StartTls::None => {}
            StartTls::Optional => parts.push("starttls optional".to_string()),
            StartTls::Required => parts.push("starttls required".to_string()),
        }
        match p.auth {
            AuthMode::None => {}
            AuthMode::Optional => parts.push("auth optional".to_string()),
            AuthMode::Required => parts.push("auth required".to_string()),
        }
        if p.plaintext_auth {
            parts.push("plaintext auth".to_string());
        }
        if p.proxy_protocol {
            parts.push("PROXY protocol".to_string());
        }
        if parts.is_empty() {
            l.addr.to_string()
        } else {
            format!("{} ({})", l.addr, parts.join(", "))
        }
    }

    /// The summary lines of the security settings: TLS files, users file,
    /// relay control, upstream TLS/AUTH/failover.
    pub(super) fn security_summary(&self, s: &mut String) {
        use std::fmt::Write as _;
        if let Some(up) = &self.upstream {
            let mut parts = Vec::new();
            if !up.fallback.is_empty() {
                parts.push(format!(
                    "fallback {} (a failed server is skipped for {}s)",
                    up.fallback.join(", "),
                    up.retry_after_s
                ));
            }
            if up.tls == TlsMode::Implicit {
                parts.push("implicit TLS".to_string());
            }
            match up.starttls {
                UpstreamStartTls::None => {}
                UpstreamStartTls::Opportunistic => parts.push("starttls opportunistic".into()),
                UpstreamStartTls::Required => parts.push("starttls required".into()),
            }
            if up.uses_tls() {
                parts.push(match (&up.ca_file, up.tls_verify) {
                    (_, false) => "certificate NOT verified".to_string(),
                    (Some(ca), true) => format!("certificate verified against {}", ca.display()),
                    (None, true) => "certificate verified against the system roots".to_string(),
                });
            }
            if let Some(a) = &up.auth {
                parts.push(format!("auth as {}", a.user));
            }
            if !parts.is_empty() {
                let _ = writeln!(s, "upstream+: {}", parts.join("; "));
            }
        }
        if let Some(t) = &self.tls {
            let _ = writeln!(
                s,
                "tls:       cert {}, key {} (TLS 1.2 and 1.3)",
                t.cert.display(),
                t.key.display()
            );
        }
        if let Some(a) = &self.auth {
            let _ = writeln!(
                s,
                "auth:      users from {}, {} failures close a session",
                a.backend_names().join(", "),
                a.max_failures
            );
        }
        let domains = if self.relay.local_domains.is_empty() {
            "none".to_string()
        } else {
            self.relay.local_domains.join(", ")
        };
        let trusted: Vec<String> = self
            .relay
            .trusted_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        let trusted = if trusted.is_empty() {
            "none".to_string()
        } else {
            trusted.join(", ")
        };
        let _ = writeln!(
            s,
            "relay:     local domains {domains}; trusted networks {trusted}; \
             authenticated users may relay; everyone else: 554 5.7.1"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, super::super::ConfigError> {
        Config::from_yaml(text, "test.yaml")
    }

    /// Every security check, with the line it must be reported on.
    #[test]
    fn security_errors_name_key_and_line() {
        let tls = "tls: { cert: c.pem, key: k.pem }\n";
        let auth = "auth: { users_file: users.yaml }\n";
        let cases: Vec<(String, usize, &str)> = vec![
            (
                format!("{tls}listen:\n  - addr: \"0.0.0.0:465\"\n    tls: implicit\n    starttls: optional\n"),
                5,
                "listen[0].starttls: an implicit-TLS listener is encrypted from the start",
            ),
            (
                "listen:\n  - addr: \"0.0.0.0:465\"\n    tls: implicit\n".into(),
                3,
                "listen[0].tls: implicit TLS needs a certificate",
            ),
            (
                "listen:\n  - { addr: \"0.0.0.0:25\" }\n  - { addr: \"0.0.0.0:587\", starttls: required }\n".into(),
                3,
                "listen[1].starttls: STARTTLS needs a certificate",
            ),
            (
                format!("{tls}listen:\n  - addr: \"0.0.0.0:587\"\n    auth: required\n"),
                4,
                "listen[0].auth: AUTH needs users",
            ),
            (
                format!("{tls}{auth}listen:\n  - addr: \"0.0.0.0:25\"\n    starttls: none\n    auth: optional\n"),
                6,
                "listen[0].auth: AUTH is only offered under TLS",
            ),
            (
                "listen:\n  - addr: \"127.0.0.1:2587\"\n    plaintext_auth: true\n".into(),
                3,
                "listen[0].plaintext_auth: has no effect",
            ),
            (
                "auth:\n  users_file: u.yaml\n  max_failures: 0\n".into(),
                3,
                "auth.max_failures: must be at least 1",
            ),
            (
                "relay:\n  local_domains:\n    - example.com\n    - \"exa mple.com\"\n".into(),
                4,
                "relay.local_domains[1]: \"exa mple.com\" is not a domain name",
            ),
            (
                "relay:\n  trusted_networks: [10.0.0.0/8, \"10.0.0.0/33\"]\n".into(),
                2,
                "relay.trusted_networks: \"10.0.0.0/33\" is not a network",
            ),
            (
                "upstream:\n  addr: \"mx:25\"\n  fallback: [\"mx2:25\", \"mx3\"]\n".into(),
                3,
                "upstream.fallback[1]: \"mx3\" has no port",
            ),
            (
                "upstream:\n  addr: \"mx:465\"\n  tls: implicit\n  starttls: required\n".into(),
                4,
                "upstream.starttls: with `tls: implicit`",
            ),
            (
                "upstream:\n  addr: \"mx:25\"\n  retry_after_s: 0\n".into(),
                3,
                "upstream.retry_after_s: must be between 1 and 86400",
            ),
            (
                "upstream:\n  addr: \"mx:25\"\n  starttls: required\n  server_name: \"bad name\"\n".into(),
                4,
                "upstream.server_name: \"bad name\" is not a host name",
            ),
            (
                "upstream:\n  addr: \"mx:25\"\n  starttls: required\n  tls_verify: false\n  ca_file: ca.pem\n".into(),
                5,
                "upstream.ca_file: is not used with `tls_verify: false`",
            ),
            (
                "upstream:\n  addr: \"mx:25\"\n  starttls: opportunistic\n  auth: { user: u, password: p }\n".into(),
                4,
                "upstream.auth: the password would cross the wire in clear",
            ),
            (
                "upstream:\n  addr: \"mx:465\"\n  tls: implicit\n  auth:\n    user: u\n    password: p\n    password_file: f\n".into(),
                7,
                "upstream.auth.password_file: give either password or password_file",
            ),
            (
                "upstream:\n  addr: \"mx:465\"\n  tls: implicit\n  auth:\n    user: u\n".into(),
                4,
                "upstream.auth: needs `password` or `password_file`",
            ),
        ];
        for (text, line, want) in cases {
            let e = parse(&text).expect_err(&text);
            assert!(e.reason.contains(want), "{text}\nwant {want:?}\ngot  {e}");
            assert_eq!(e.line, Some(line), "{text}\n{e}");
        }
    }

    #[test]
    fn listener_defaults_follow_the_configuration() {
        let l = |yaml: &str| serde_yaml::from_str::<Listener>(yaml).unwrap();
        let mut c = Config::default();
        let plain = l("{ addr: \"0.0.0.0:25\" }");
        assert_eq!(c.listener_policy(&plain), ListenerPolicy::plain());
        c.tls = Some(TlsFiles {
            cert: "c".into(),
            key: "k".into(),
            session_tickets: None,
        });
        let p = c.listener_policy(&plain);
        assert_eq!((p.starttls, p.auth), (StartTls::Optional, AuthMode::None));
        c.auth = Some(AuthOptions {
            users_file: Some("u".into()),
            backends: Vec::new(),
            cache: None,
            max_failures: 3,
        });
        let p = c.listener_policy(&plain);
        assert_eq!(
            (p.starttls, p.auth),
            (StartTls::Optional, AuthMode::Optional)
        );
        let p = c.listener_policy(&l("{ addr: \"0.0.0.0:465\", tls: implicit }"));
        assert!(p.implicit_tls);
        assert_eq!((p.starttls, p.auth), (StartTls::None, AuthMode::Optional));
        let p = c.listener_policy(&l("{ addr: \"0.0.0.0:25\", starttls: none }"));
        assert_eq!((p.starttls, p.auth), (StartTls::None, AuthMode::None));
        let p = c.listener_policy(&l(
            "{ addr: \"127.0.0.1:2587\", starttls: none, plaintext_auth: true }",
        ));
        assert_eq!(p.auth, AuthMode::Optional);
    }

    #[test]
    fn networks_parse_with_or_without_a_prefix() {
        assert_eq!(
            "192.0.2.7".parse::<Network>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!("::1".parse::<Network>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "10.1.2.3/8".parse::<Network>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.0/8/8".parse::<Network>().is_err());
        assert!("example.com".parse::<Network>().is_err());
        let r: RelayOptions =
            serde_yaml::from_str("trusted_networks: [10.0.0.0/8, 192.0.2.1]").unwrap();
        assert_eq!(r.trusted_networks.len(), 2);
        assert!(r.local_domains.is_empty());
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let a = UpstreamAuth {
            user: "u".into(),
            password: Some("hunter2".into()),
            password_file: None,
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
