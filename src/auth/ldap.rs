//! The LDAP AUTH backend: a simple bind (RFC 4513 §5.1.3) as the user,
//! whose DN comes from a template, over LDAPS or StartTLS with the
//! directory's certificate verified; then, optionally, the addresses the
//! user may send as, read from their own entry.
//!
//! ldap3 needs tokio, so every login runs as one job on the DNS thread's
//! runtime (the only place tokio runs), bounded by the backend's timeout.

use super::{Credentials, User};
use crate::checks::SharedResolver;
use crate::relay::SenderRule;
use futures_rustls::rustls::ClientConfig;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::sync::Arc;
use std::time::Duration;

/// LDAP result code 49: the DN or the password is wrong (RFC 4511 A.1).
const INVALID_CREDENTIALS: u32 = 49;

/// One directory.
pub struct LdapClient {
    /// `ldaps://...` or `ldap://...` (StartTLS).
    url: String,
    /// Upgrade with StartTLS.
    starttls: bool,
    /// The verifying TLS client configuration.
    tls: Arc<ClientConfig>,
    /// The DN template, `%u` for the login name.
    bind_dn: String,
    /// Attributes listing the user's addresses.
    sender_attributes: Vec<String>,
    /// How long one login may take.
    timeout: Duration,
    /// The DNS thread, whose runtime runs the LDAP work.
    runtime: Arc<SharedResolver>,
}

/// What the directory said: a user, or `None` for wrong credentials.
pub type Verdict = Option<User>;

impl LdapClient {
    /// A client; nothing connects until the first login.
    pub fn new(
        options: &crate::config::LdapBackend,
        tls: Arc<ClientConfig>,
        runtime: Arc<SharedResolver>,
    ) -> LdapClient {
        LdapClient {
            url: options.url.clone(),
            starttls: options.starttls,
            tls,
            bind_dn: options.bind_dn.clone(),
            sender_attributes: options.sender_attributes.clone(),
            timeout: Duration::from_millis(options.timeout_ms),
            runtime,
        }
    }

    /// Checks a login. `Err` is a temporary failure, with why.
    pub async fn login(&self, creds: &Credentials) -> Result<Verdict, String> {
        // An empty password makes a simple bind "unauthenticated" and
        // succeed (RFC 4513 §5.1.2): never send one.
        if creds.password.is_empty() || creds.user.is_empty() {
            return Ok(None);
        }
        let Ok(password) = std::str::from_utf8(&creds.password) else {
            return Ok(None);
        };
        let password = zeroize::Zeroizing::new(password.to_string());
        let dn = self
            .bind_dn
            .replace("%u", &ldap3::dn_escape(creds.user.as_str()));
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls)
            .set_config(self.tls.clone());
        let url = self.url.clone();
        let attrs = self.sender_attributes.clone();
        let resolver = self.runtime.get()?;
        let outcome = resolver
            .with_resolver_within(self.timeout, move |_| {
                Box::pin(async move { bind_and_read(settings, &url, &dn, &password, &attrs).await })
            })
            .await
            .map_err(|e| e.to_string())??;
        Ok(outcome.map(|addresses| {
            let mut senders = Vec::new();
            for a in &addresses {
                match SenderRule::parse(a) {
                    Ok(rule) => senders.push(rule),
                    Err(_) => log::warn!(
                        "auth backend ldap: ignoring sender address {a:?} of user {:?}",
                        creds.user
                    ),
                }
            }
            if self.sender_attributes.is_empty() {
                User::external(creds.user.clone(), senders)
            } else {
                User::with_senders(creds.user.clone(), senders)
            }
        }))
    }
}

/// On the tokio runtime: connect, bind, read the sender attributes.
/// `Ok(None)` for wrong credentials.
async fn bind_and_read(
    settings: LdapConnSettings,
    url: &str,
    dn: &str,
    password: &str,
    attrs: &[String],
) -> Result<Option<Vec<String>>, String> {
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    ldap3::drive!(conn);
    let bound = ldap
        .simple_bind(dn, password)
        .await
        .map_err(|e| format!("bind failed: {e}"))?;
    if bound.rc == INVALID_CREDENTIALS {
        let _ = ldap.unbind().await;
        return Ok(None);
    }
    if bound.rc != 0 {
        let _ = ldap.unbind().await;
        return Err(format!("bind answered {}: {}", bound.rc, bound.text));
    }
    let mut addresses = Vec::new();
    if !attrs.is_empty() {
        let (entries, _) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("reading the user's entry failed: {e}"))?;
        for entry in entries {
            let entry = SearchEntry::construct(entry);
            for attr in attrs {
                let found = entry
                    .attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(attr))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                addresses.extend(found);
            }
        }
    }
    let _ = ldap.unbind().await;
    Ok(Some(addresses))
}
