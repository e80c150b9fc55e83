//! Where AUTH checks passwords: `auth.backends`, tried in order.
//!
//! ```yaml
//! auth:
//!   users_file: users.yaml
//!   backends:
//!     - dovecot: { socket: /run/dovecot/auth-client, timeout_ms: 5000 }
//!     - users_file
//!     - upstream: { timeout_ms: 10000 }
//! ```
//!
//! Without `backends` the users file is the only one, as before.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One place passwords are checked. YAML: the word `users_file`, or a
/// one-key map `dovecot: {...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Written", into = "Written")]
pub enum AuthBackend {
    /// `auth.users_file`, with its password hashes and `senders:`.
    UsersFile,
    /// A Dovecot auth service (auth protocol 1.2), as Postfix's
    /// `smtpd_sasl_type = dovecot` uses it.
    Dovecot(DovecotBackend),
    /// An LDAP directory: a simple bind as the user.
    Ldap(LdapBackend),
    /// The upstream server's own AUTH, over TLS; the connection that
    /// logged in then carries the session's mail.
    Upstream(UpstreamBackend),
}

/// A backend as written: serde_yaml wants `!tags` for enums, so the map
/// form is spelled out.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Written {
    /// `users_file`.
    Name(String),
    /// `dovecot: {...}`.
    Map(WrittenMap),
}

/// The map form of [`Written`]: one key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenMap {
    /// `dovecot:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dovecot: Option<DovecotBackend>,
    /// `ldap:`, boxed: it is by far the largest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ldap: Option<Box<LdapBackend>>,
    /// `upstream:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<UpstreamBackend>,
}

impl TryFrom<Written> for AuthBackend {
    type Error = String;
    fn try_from(w: Written) -> Result<AuthBackend, String> {
        match w {
            Written::Name(n) if n == "users_file" => Ok(AuthBackend::UsersFile),
            Written::Name(n) if n == "upstream" => {
                Ok(AuthBackend::Upstream(UpstreamBackend::default()))
            }
            Written::Map(WrittenMap {
                dovecot: None,
                ldap: None,
                upstream: Some(u),
            }) => Ok(AuthBackend::Upstream(u)),
            Written::Map(WrittenMap {
                upstream: Some(_), ..
            }) => Err(
                "a backend is one of `dovecot: {...}`, `ldap: {...}` and `upstream: {...}`".into(),
            ),
            Written::Name(n) => Err(format!(
                "unknown backend {n:?}: use `users_file`, `upstream`, `dovecot: {{...}}` or `ldap: {{...}}`"
            )),
            Written::Map(WrittenMap {
                dovecot: Some(d),
                ldap: None,
                ..
            }) => Ok(AuthBackend::Dovecot(d)),
            Written::Map(WrittenMap {
                dovecot: None,
                ldap: Some(l),
                ..
            }) => Ok(AuthBackend::Ldap(*l)),
            Written::Map(_) => Err(
                "a backend is one of `dovecot: {...}`, `ldap: {...}` and `upstream: {...}`".into(),
            ),
        }
    }
}

impl From<AuthBackend> for Written {
    fn from(b: AuthBackend) -> Written {
        match b {
            AuthBackend::UsersFile => Written::Name("users_file".into()),
            AuthBackend::Dovecot(d) => Written::Map(WrittenMap {
                dovecot: Some(d),
                ldap: None,
                upstream: None,
            }),
            AuthBackend::Ldap(l) => Written::Map(WrittenMap {
                dovecot: None,
                ldap: Some(Box::new(l)),
                upstream: None,
            }),
            AuthBackend::Upstream(u) => Written::Map(WrittenMap {
                dovecot: None,
                ldap: None,
                upstream: Some(u),
            }),
        }
    }
}

impl AuthBackend {
    /// The backend's name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            AuthBackend::UsersFile => "users_file",
            AuthBackend::Dovecot(_) => "dovecot",
            AuthBackend::Ldap(_) => "ldap",
            AuthBackend::Upstream(_) => "upstream",
        }
    }
}

/// `dovecot: { socket | addr, timeout_ms, senders }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DovecotBackend {
    /// Unix socket of Dovecot's auth service (its `unix_listener`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Or its TCP `inet_listener`, as `host:port`.
    #[serde(default)]
    pub addr: Option<String>,
    /// How long one login may take, connecting included; past it the
    /// client gets `454 4.7.0`. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// MAIL FROM addresses every Dovecot user may use besides their login
    /// name when it is an address: `user@domain`, `@domain` or `*`.
    #[serde(default)]
    pub senders: Vec<String>,
}

/// `auth.cache: { ttl_s, max_entries }`: remember successful logins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginCacheOptions {
    /// How long a login is remembered, in seconds. Default 60; 1 to 3600.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// How many logins are remembered. Default 10000.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

/// Serde default of [`LoginCacheOptions::ttl_s`].
fn default_ttl_s() -> u64 {
    60
}

/// Serde default of [`LoginCacheOptions::max_entries`].
fn default_max_entries() -> usize {
    10_000
}

/// Checks `auth.cache`.
pub fn validate_cache(c: &LoginCacheOptions) -> Result<(), (String, String)> {
    if !(1..=3600).contains(&c.ttl_s) {
        return Err(("auth.cache.ttl_s".into(), "must be 1 to 3600".into()));
    }
    if c.max_entries == 0 {
        return Err(("auth.cache.max_entries".into(), "must be at least 1".into()));
    }
    Ok(())
}

/// `ldap: { url, starttls, ca_file, bind_dn, sender_attributes, timeout_ms }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapBackend {
    /// `ldaps://host:port` or, with `starttls: true`, `ldap://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4511 §4.14).
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA certificates the directory's certificate must chain to;
    /// default: the system's roots. The certificate is always verified.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The user's DN, `%u` standing for the login name (DN-escaped):
    /// `uid=%u,ou=people,dc=example,dc=com`. Exactly one of this and
    /// `search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    /// Or find the user's DN by a search as a service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Box<LdapSearch>>,
    /// Attributes of the user's entry that list the addresses they may
    /// send as (`mail`, `mailAlternateAddress`); read after the bind, as
    /// the user (with `search`: in the search, as the service account).
    /// Empty: the login name, when it is an address.
    #[serde(default)]
    pub sender_attributes: Vec<String>,
    /// How long one login may take, connecting included. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// `search: { base, filter, bind_dn, bind_password_file, scope }`: how
/// the LDAP backend finds the user's DN, as Postfix's and Dovecot's LDAP
/// lookups do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSearch {
    /// Where the search starts: `ou=people,dc=example,dc=com`.
    pub base: String,
    /// The filter, `%u` standing for the login name (escaped as RFC 4515
    /// asks): `(uid=%u)`. Exactly one entry must match.
    pub filter: String,
    /// The service account's DN, bound as before the search.
    pub bind_dn: String,
    /// A file holding the service account's password (one line).
    pub bind_password_file: PathBuf,
    /// `base`, `one` or `sub` (default).
    #[serde(default)]
    pub scope: LdapScope,
}

/// How deep an LDAP search goes below its base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapScope {
    /// The base entry only.
    Base,
    /// The entries right below the base.
    One,
    /// The base and its whole subtree.
    #[default]
    Sub,
}

/// `upstream: { timeout_ms, senders }`: the login is tried at the
/// upstream server (`upstream:`), which must be reached over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBackend {
    /// How long one login may take: connecting, TLS and AUTH. Past it the
    /// client gets `454 4.7.0`. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// MAIL FROM addresses every such user may use besides their login
    /// name when it is an address: `user@domain`, `@domain` or `*`.
    #[serde(default)]
    pub senders: Vec<String>,
}

impl Default for UpstreamBackend {
    fn default() -> UpstreamBackend {
        UpstreamBackend {
            timeout_ms: default_timeout_ms(),
            senders: Vec::new(),
        }
    }
}

/// Checks that an `upstream` backend has an upstream to ask, reached over
/// TLS (`starttls: required` or `tls: implicit`) and not logging in with
/// its own `upstream.auth`: a plaintext upstream would see passwords in
/// the clear.
pub fn validate_upstream(
    backends: &[AuthBackend],
    upstream: Option<&super::Upstream>,
) -> Result<(), (String, String)> {
    use super::{TlsMode, UpstreamStartTls};
    let Some(i) = backends
        .iter()
        .position(|b| matches!(b, AuthBackend::Upstream(_)))
    else {
        return Ok(());
    };
    let at = format!("auth.backends[{i}].upstream");
    let Some(up) = upstream else {
        return Err((
            at,
            "passes logins to the upstream server, but there is no `upstream:` section".into(),
        ));
    };
    if up.tls != TlsMode::Implicit && up.starttls != UpstreamStartTls::Required {
        return Err((
            at,
            "passes passwords to the upstream server: it needs `upstream.starttls: required` \
             or `upstream.tls: implicit`, since a plaintext upstream would see them in the clear"
                .into(),
        ));
    }
    if up.auth.is_some() {
        return Err((
            at,
            "cannot be combined with `upstream.auth`: the connection logs in as the client's user"
                .into(),
        ));
    }
    Ok(())
}

/// Serde default of the backends' `timeout_ms`.
fn default_timeout_ms() -> u64 {
    5000
}

/// Checks `auth.backends[i]`: a key path and a reason on error.
pub fn validate(backends: &[AuthBackend], has_users_file: bool) -> Result<(), (String, String)> {
    if backends.is_empty() && !has_users_file {
        return Err(("auth".into(), "needs `users_file` or `backends`".into()));
    }
    for (i, b) in backends.iter().enumerate() {
        let at = |k: &str| format!("auth.backends[{i}]{k}");
        match b {
            AuthBackend::UsersFile if !has_users_file => {
                return Err((
                    at(""),
                    "`users_file` is listed but `auth.users_file` is not set".into(),
                ))
            }
            AuthBackend::UsersFile => {}
            AuthBackend::Ldap(l) => {
                let plain = l.url.starts_with("ldap://");
                if !(l.url.starts_with("ldaps://") || plain) {
                    return Err((
                        at(".ldap.url"),
                        "must start with ldaps:// or ldap://".into(),
                    ));
                }
                if plain != l.starttls {
                    return Err((
                        at(".ldap.starttls"),
                        "ldap:// needs `starttls: true` and ldaps:// must not have it: \
                         passwords never go to the directory in the clear"
                            .into(),
                    ));
                }
                validate_ldap_dn(l).map_err(|(k, r)| (at(&k), r))?;
                if l.timeout_ms == 0 {
                    return Err((at(".ldap.timeout_ms"), "must be at least 1".into()));
                }
            }
            AuthBackend::Dovecot(d) => {
                if d.socket.is_some() == d.addr.is_some() {
                    return Err((
                        at(".dovecot"),
                        "needs exactly one of `socket` and `addr`".into(),
                    ));
                }
                if d.timeout_ms == 0 {
                    return Err((at(".dovecot.timeout_ms"), "must be at least 1".into()));
                }
            }
            AuthBackend::Upstream(u) => {
                if u.timeout_ms == 0 {
                    return Err((at(".upstream.timeout_ms"), "must be at least 1".into()));
                }
                if backends[..i]
                    .iter()
                    .any(|b| matches!(b, AuthBackend::Upstream(_)))
                {
                    return Err((at(""), "`upstream` is listed twice".into()));
                }
            }
        }
    }
    Ok(())
}

/// Checks how an LDAP backend finds the DN: a key below `.ldap` and a
/// reason on error.
fn validate_ldap_dn(l: &LdapBackend) -> Result<(), (String, String)> {
    match (&l.bind_dn, &l.search) {
        (Some(dn), None) if !dn.contains("%u") => {
            Err((".ldap.bind_dn".into(), "must contain %u".into()))
        }
        (Some(_), None) => Ok(()),
        (None, Some(s)) => {
            if s.base.trim().is_empty() {
                return Err((".ldap.search.base".into(), "must not be empty".into()));
            }
            if s.bind_dn.trim().is_empty() {
                return Err((".ldap.search.bind_dn".into(), "must not be empty".into()));
            }
            if !s.filter.contains("%u") {
                return Err((".ldap.search.filter".into(), "must contain %u".into()));
            }
            if ldap3::parse_filter(s.filter.replace("%u", "x")).is_err() {
                return Err((
                    ".ldap.search.filter".into(),
                    "is not an LDAP filter (RFC 4515), e.g. (uid=%u)".into(),
                ));
            }
            Ok(())
        }
        _ => Err((
            ".ldap".into(),
            "needs exactly one of `bind_dn` (a DN template) and `search`".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthBackend, Config};

    fn load(auth: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_yaml(&format!("hostname: gate.test\n{auth}"), "gateway.yaml")
    }

    #[test]
    fn backends_load_and_default_to_the_users_file() {
        let c = load("auth:\n  users_file: u.yaml\n").unwrap();
        assert_eq!(c.auth.unwrap().backends(), vec![AuthBackend::UsersFile]);
        let c = load(
            "auth:\n  backends:\n    - dovecot: { socket: /run/auth, senders: [\"@x.test\"] }\n",
        )
        .unwrap();
        let b = c.auth.unwrap().backends();
        let AuthBackend::Dovecot(d) = &b[0] else {
            panic!("{b:?}")
        };
        assert_eq!(d.socket.as_deref(), Some(std::path::Path::new("/run/auth")));
        assert_eq!((d.timeout_ms, d.senders.len()), (5000, 1));
    }

    #[test]
    fn bad_backends_name_the_line_and_key() {
        let cases = [
            (
                "auth:\n  backends: [users_file]\n",
                "auth.backends[0]",
                "is not set",
            ),
            (
                "auth:\n  backends:\n    - dovecot: { socket: /a, addr: \"b:1\" }\n",
                "auth.backends[0].dovecot",
                "exactly one of",
            ),
            (
                "auth:\n  backends:\n    - dovecot: { addr: \"b:1\", timeout_ms: 0 }\n",
                "auth.backends[0].dovecot.timeout_ms",
                "at least 1",
            ),
            (
                "auth:\n  max_failures: 3\n",
                "auth",
                "needs `users_file` or `backends`",
            ),
            (
                "auth:\n  backends:\n    - ldap: { url: \"ldap://d\", bind_dn: \"uid=%u\" }\n",
                "auth.backends[0].ldap.starttls",
                "never go to the directory in the clear",
            ),
            (
                "auth:\n  backends:\n    - ldap: { url: \"ldaps://d\", bind_dn: \"uid=x\" }\n",
                "auth.backends[0].ldap.bind_dn",
                "must contain %u",
            ),
            (
                "auth:\n  backends:\n    - ldap: { url: \"http://d\", bind_dn: \"uid=%u\" }\n",
                "auth.backends[0].ldap.url",
                "ldaps://",
            ),
            (
                "auth:\n  backends:\n    - ldap: { url: \"ldaps://d\" }\n",
                "auth.backends[0].ldap",
                "exactly one of `bind_dn`",
            ),
            (
                "auth:\n  backends:\n    - ldap:\n        url: \"ldaps://d\"\n        \
                 bind_dn: \"uid=%u\"\n        search: { base: b, filter: \"(uid=%u)\", \
                 bind_dn: s, bind_password_file: /p }\n",
                "auth.backends[0].ldap",
                "exactly one of `bind_dn`",
            ),
            (
                "auth:\n  backends:\n    - ldap:\n        url: \"ldaps://d\"\n        \
                 search: { base: b, filter: \"(uid=%u\", bind_dn: s, bind_password_file: /p }\n",
                "auth.backends[0].ldap.search.filter",
                "not an LDAP filter",
            ),
            (
                "auth:\n  backends:\n    - ldap:\n        url: \"ldaps://d\"\n        \
                 search: { base: b, filter: \"(uid=x)\", bind_dn: s, bind_password_file: /p }\n",
                "auth.backends[0].ldap.search.filter",
                "must contain %u",
            ),
        ];
        for (yaml, key, want) in cases {
            let e = load(yaml).unwrap_err();
            assert!(
                e.reason.contains(key) && e.reason.contains(want),
                "{yaml}: {e}"
            );
            assert!(e.line.is_some(), "{yaml}: {e}");
        }
        let c = load(
            "auth:\n  backends:\n    - ldap:\n        url: \"ldaps://d\"\n        \
             search: { base: b, filter: \"(uid=%u)\", bind_dn: s, bind_password_file: /p, \
             scope: one }\n",
        )
        .unwrap();
        let b = c.auth.unwrap().backends();
        let AuthBackend::Ldap(l) = &b[0] else {
            panic!("{b:?}")
        };
        let search = l.search.as_ref().unwrap();
        assert_eq!(search.scope, crate::config::LdapScope::One);
        let e = load("auth:\n  backends: [ldapp]\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn the_upstream_backend_needs_a_tls_upstream() {
        let tls = "upstream: { addr: \"mx.test:587\", starttls: required }\n";
        for (backends, timeout) in [
            ("[upstream]", 5000),
            ("[{ upstream: { timeout_ms: 900 } }]", 900),
        ] {
            let c = load(&format!("auth:\n  backends: {backends}\n{tls}")).unwrap();
            let b = c.auth.unwrap().backends();
            let [AuthBackend::Upstream(u)] = &b[..] else {
                panic!("{b:?}")
            };
            assert_eq!(u.timeout_ms, timeout);
        }
        let implicit = "upstream: { addr: \"mx.test:465\", tls: implicit }\n";
        load(&format!("auth:\n  backends: [upstream]\n{implicit}")).unwrap();
        let cases = [
            ("upstream: { addr: \"mx.test:25\" }\n", "starttls: required"),
            (
                "upstream: { addr: \"mx.test:25\", starttls: opportunistic }\n",
                "in the clear",
            ),
            ("", "no `upstream:` section"),
            (
                "upstream: { addr: \"mx.test:465\", tls: implicit, auth: { user: u, password_file: /p } }\n",
                "`upstream.auth`",
            ),
        ];
        for (upstream, want) in cases {
            let yaml = format!(
                "auth:\n  users_file: u.yaml\n  backends: [users_file, upstream]\n{upstream}"
            );
            let e = load(&yaml).unwrap_err();
            assert!(
                e.reason.contains("auth.backends[1].upstream") && e.reason.contains(want),
                "{yaml}: {e}"
            );
            assert!(e.line.is_some(), "{yaml}: {e}");
        }
        let e = load(&format!(
            "auth:\n  backends:\n    - upstream: {{ timeout_ms: 0 }}\n{tls}"
        ))
        .unwrap_err();
        assert!(
            e.reason.contains("auth.backends[0].upstream.timeout_ms"),
            "{e}"
        );
    }
}
