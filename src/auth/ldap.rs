//! The LDAP AUTH backend: a simple bind (RFC 4513 §5.1.3) as the user,
//! over LDAPS or StartTLS with the directory's certificate verified. The
//! user's DN comes from a template, or from a search as a service account
//! (the filter's `%u` escaped as RFC 4515 asks); then, optionally, the
//! addresses the user may send as, read from their entry (in that same
//! search, or after the bind as the user).
//!
//! ldap3 needs tokio, so every login runs as one job on the DNS thread's
//! runtime (the only place tokio runs), bounded by the backend's timeout.

use super::{Credentials, User};
use crate::checks::SharedResolver;
use crate::relay::SenderRule;
use futures_rustls::rustls::ClientConfig;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// LDAP result code 49: the DN or the password is wrong (RFC 4511 A.1).
const INVALID_CREDENTIALS: u32 = 49;

/// LDAP result code 4: more entries matched than the size limit.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// How the user's DN is found.
#[derive(Clone)]
enum FindDn {
    /// The template, `%u` for the DN-escaped login name.
    Template(String),
    /// A search as a service account.
    Search(Arc<DnSearch>),
}

/// `search:` of the backend, with the service account's password read.
struct DnSearch {
    /// Where the search starts.
    base: String,
    /// The filter, `%u` for the escaped login name.
    filter: String,
    /// How deep it goes.
    scope: Scope,
    /// The service account.
    bind_dn: String,
    /// Its password.
    password: Zeroizing<String>,
}

/// One directory.
pub struct LdapClient {
    /// `ldaps://...` or `ldap://...` (StartTLS).
    url: String,
    /// Upgrade with StartTLS.
    starttls: bool,
    /// The verifying TLS client configuration.
    tls: Arc<ClientConfig>,
    /// How the user's DN is found.
    find: FindDn,
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
    /// A client; nothing connects until the first login. Fails when the
    /// service account's password file cannot be read (or is empty).
    pub fn new(
        options: &crate::config::LdapBackend,
        tls: Arc<ClientConfig>,
        runtime: Arc<SharedResolver>,
    ) -> Result<LdapClient, String> {
        let find = match (&options.search, &options.bind_dn) {
            (Some(s), _) => FindDn::Search(Arc::new(DnSearch {
                base: s.base.clone(),
                filter: s.filter.clone(),
                scope: match s.scope {
                    crate::config::LdapScope::Base => Scope::Base,
                    crate::config::LdapScope::One => Scope::OneLevel,
                    crate::config::LdapScope::Sub => Scope::Subtree,
                },
                bind_dn: s.bind_dn.clone(),
                password: read_password(&s.bind_password_file)?,
            })),
            (None, Some(dn)) => FindDn::Template(dn.clone()),
            (None, None) => return Err("needs `bind_dn` or `search`".into()),
        };
        Ok(LdapClient {
            url: options.url.clone(),
            starttls: options.starttls,
            tls,
            find,
            sender_attributes: options.sender_attributes.clone(),
            timeout: Duration::from_millis(options.timeout_ms),
            runtime,
        })
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
        let password = Zeroizing::new(password.to_string());
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls)
            .set_config(self.tls.clone());
        let url = self.url.clone();
        let attrs = self.sender_attributes.clone();
        let find = self.find.clone();
        let user = creds.user.clone();
        let resolver = self.runtime.get()?;
        let outcome = resolver
            .with_resolver_within(self.timeout, move |_| {
                Box::pin(async move {
                    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &url)
                        .await
                        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
                    ldap3::drive!(conn);
                    let outcome = bind_and_read(&mut ldap, &find, &user, &password, &attrs).await;
                    let _ = ldap.unbind().await;
                    outcome
                })
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

/// The service account's password: the file's first line.
fn read_password(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// On the tokio runtime: find the DN, bind as the user, read the sender
/// attributes. `Ok(None)` for wrong credentials or no such user.
async fn bind_and_read(
    ldap: &mut Ldap,
    find: &FindDn,
    user: &str,
    password: &str,
    attrs: &[String],
) -> Result<Option<Vec<String>>, String> {
    let (dn, found) = match find {
        FindDn::Template(t) => (t.replace("%u", &ldap3::dn_escape(user)), None),
        FindDn::Search(search) => match search_dn(ldap, search, user, attrs).await? {
            Some((dn, addresses)) => (dn, Some(addresses)),
            None => return Ok(None),
        },
    };
    let bound = ldap
        .simple_bind(&dn, password)
        .await
        .map_err(|e| format!("bind failed: {e}"))?;
    if bound.rc == INVALID_CREDENTIALS {
        return Ok(None);
    }
    if bound.rc != 0 {
        return Err(format!("bind answered {}: {}", bound.rc, bound.text));
    }
    if let Some(addresses) = found {
        return Ok(Some(addresses));
    }
    if attrs.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let (entries, _) = ldap
        .search(&dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
        .await
        .and_then(|r| r.success())
        .map_err(|e| format!("reading the user's entry failed: {e}"))?;
    Ok(Some(
        entries
            .into_iter()
            .flat_map(|e| addresses_of(SearchEntry::construct(e), attrs))
            .collect(),
    ))
}

/// Binds as the service account and searches for the user's entry: its
/// DN and the values of `attrs`; `None` when no entry matches. More than
/// one is an error: which of them is the user cannot be told.
async fn search_dn(
    ldap: &mut Ldap,
    search: &DnSearch,
    user: &str,
    attrs: &[String],
) -> Result<Option<(String, Vec<String>)>, String> {
    let bound = ldap
        .simple_bind(&search.bind_dn, &search.password)
        .await
        .map_err(|e| format!("service account bind failed: {e}"))?;
    if bound.rc != 0 {
        return Err(format!(
            "service account bind as {} answered {}: {}",
            search.bind_dn, bound.rc, bound.text
        ));
    }
    let filter = search.filter.replace("%u", &ldap3::ldap_escape(user));
    // "1.1": no attributes, only the DN (RFC 4511 §4.5.1.8).
    let wanted = if attrs.is_empty() {
        vec!["1.1".to_string()]
    } else {
        attrs.to_vec()
    };
    // Two are enough to tell an ambiguous filter.
    let result = ldap
        .with_search_options(SearchOptions::new().sizelimit(2))
        .search(&search.base, search.scope, &filter, wanted)
        .await
        .map_err(|e| format!("searching for the user failed: {e}"))?;
    let (entries, status) = (result.0, result.1);
    if status.rc == SIZE_LIMIT_EXCEEDED || entries.len() > 1 {
        return Err(format!(
            "ambiguous: more than one entry under {} matches {filter}",
            search.base
        ));
    }
    if status.rc != 0 {
        return Err(format!(
            "searching for the user answered {}: {}",
            status.rc, status.text
        ));
    }
    Ok(entries.into_iter().next().map(|e| {
        let entry = SearchEntry::construct(e);
        let dn = entry.dn.clone();
        (dn, addresses_of(entry, attrs))
    }))
}

/// The values of `attrs` in `entry`, attribute names compared without case.
fn addresses_of(entry: SearchEntry, attrs: &[String]) -> Vec<String> {
    let mut addresses = Vec::new();
    for attr in attrs {
        if let Some((_, values)) = entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        {
            addresses.extend(values.iter().cloned());
        }
    }
    addresses
}
