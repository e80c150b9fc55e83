//! The backends AUTH checks passwords against, tried in order: the users
//! file, Dovecot's auth service, LDAP and the upstream server's own AUTH.
//!
//! The first backend that accepts the login wins. When none does and one
//! of them could not answer (down, timed out), the outcome is
//! [`Outcome::Unavailable`] naming it: the session answers `454 4.7.0`,
//! never `535`, because the password may well be right.

use super::cache::LoginCache;
use super::dovecot::{Answer, DovecotClient, Peer};
use super::upstream::{UpstreamBackend, UpstreamLogin};
use super::{Credentials, Mechanism, User, UserStore};
use crate::relay::SenderRule;
use crate::upstream::Upstream;
use log::warn;
use std::sync::Arc;

/// One backend, ready to use.
pub enum Backend {
    /// The users file (the [`Backends`]' store).
    UsersFile,
    /// An LDAP directory.
    Ldap(super::ldap::LdapClient),
    /// A Dovecot auth service, and what its users may send as.
    Dovecot {
        /// The client.
        client: DovecotClient,
        /// MAIL FROM rules every Dovecot user gets.
        senders: Vec<SenderRule>,
    },
    /// The upstream server's own AUTH (passthrough).
    Upstream(UpstreamBackend),
}

impl Backend {
    /// The name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::UsersFile => "users_file",
            Backend::Dovecot { .. } => "dovecot",
            Backend::Ldap(_) => "ldap",
            Backend::Upstream(_) => "upstream",
        }
    }
}

/// What the backends decided about one login.
pub enum Outcome {
    /// Accepted by the named backend; by the upstream backend, with the
    /// upstream connection that logged in, for the session to keep.
    Accepted(Arc<User>, &'static str, Option<Box<Upstream>>),
    /// No backend accepted it, and all of them answered.
    Rejected,
    /// No backend accepted it and this one could not answer.
    Unavailable(&'static str),
}

/// Every backend of a gateway, in order.
pub struct Backends {
    /// The users file, when configured.
    users: Option<UserStore>,
    /// The order they are tried in.
    list: Vec<Backend>,
    /// Recent successful logins, when enabled.
    cache: Option<LoginCache>,
}

impl Backends {
    /// Backends tried in the order of `list`; `users` is the users file
    /// that [`Backend::UsersFile`] stands for.
    pub fn new(
        users: Option<UserStore>,
        list: Vec<Backend>,
        cache: Option<LoginCache>,
    ) -> Backends {
        Backends { users, list, cache }
    }

    /// Forgets the cached logins (on reload); how many there were.
    pub fn flush_cache(&self) -> Option<usize> {
        self.cache.as_ref().map(LoginCache::flush)
    }

    /// The users file, for reloads.
    pub fn users(&self) -> Option<&UserStore> {
        self.users.as_ref()
    }

    /// The mechanisms to offer: those smtpgate carries that at least one
    /// backend takes. A Dovecot not reached yet counts as taking them all
    /// (EHLO never waits on a backend); see [`Backends::learn_mechanisms`].
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        let mut offered = Vec::new();
        for backend in &self.list {
            let takes = match backend {
                Backend::Dovecot { client, .. } => client
                    .mechanisms()
                    .unwrap_or_else(|| Mechanism::ALL.to_vec()),
                // The upstream backend carries either as the other when it must.
                Backend::UsersFile | Backend::Ldap(_) | Backend::Upstream(_) => {
                    Mechanism::ALL.to_vec()
                }
            };
            offered.extend(takes);
        }
        Mechanism::ALL
            .into_iter()
            .filter(|m| offered.contains(m))
            .collect()
    }

    /// True when some backend's mechanisms are still to be learned.
    pub fn mechanisms_unknown(&self) -> bool {
        self.list.iter().any(|b| match b {
            Backend::Dovecot { client, .. } => client.mechanisms().is_none(),
            Backend::UsersFile | Backend::Ldap(_) | Backend::Upstream(_) => false,
        })
    }

    /// Connects to each Dovecot whose mechanisms are not known, to learn
    /// them for the next EHLO.
    pub async fn learn_mechanisms(&self) {
        for backend in &self.list {
            if let Backend::Dovecot { client, .. } = backend {
                client.learn_mechanisms().await;
            }
        }
    }

    /// The backends' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(Backend::name).collect()
    }

    /// Checks one login against each backend in turn; `report` hears
    /// each backend's answer (`accepted`, `rejected`, `unavailable`). The
    /// upstream backend logs in through `upstream`.
    pub async fn check(
        &self,
        mechanism: Mechanism,
        creds: &Credentials,
        peer: &Peer,
        upstream: Option<&UpstreamLogin<'_>>,
        mut report: impl FnMut(&'static str, &'static str),
    ) -> Outcome {
        if let Some((user, name)) = self.cache.as_ref().and_then(|c| c.get(creds)) {
            report(name, "cached");
            return Outcome::Accepted(user, name, None);
        }
        let mut unavailable = None;
        for backend in &self.list {
            let name = backend.name();
            let users = self.users.as_ref();
            match backend_check(backend, users, mechanism, creds, peer, upstream).await {
                Ok(Some((user, up))) => {
                    report(name, "accepted");
                    // An upstream login is worth only its connection: a
                    // remembered one would have none.
                    if let (Some(c), None) = (&self.cache, &up) {
                        c.put(creds, user.clone(), name);
                    }
                    return Outcome::Accepted(user, name, up);
                }
                Ok(None) => report(name, "rejected"),
                Err(reason) => {
                    warn!(
                        "auth backend unavailable: backend={name} client={} reason={reason}",
                        peer.remote.ip()
                    );
                    report(name, "unavailable");
                    unavailable.get_or_insert(name);
                }
            }
        }
        match unavailable {
            Some(name) => Outcome::Unavailable(name),
            None => Outcome::Rejected,
        }
    }
}

/// One backend's verdict: a user (with the upstream connection that
/// logged in, for the upstream backend), `None` for a wrong password, or
/// why it could not answer.
async fn backend_check(
    backend: &Backend,
    users: Option<&UserStore>,
    mechanism: Mechanism,
    creds: &Credentials,
    peer: &Peer,
    upstream: Option<&UpstreamLogin<'_>>,
) -> Result<Option<(Arc<User>, Option<Box<Upstream>>)>, String> {
    let user = match backend {
        Backend::UsersFile => match users {
            Some(store) => {
                store
                    .check(creds.user.clone(), creds.password.clone())
                    .await
            }
            None => return Err("no users file".into()),
        },
        Backend::Ldap(client) => client.login(creds).await?.map(Arc::new),
        Backend::Dovecot { client, senders } => match client.login(mechanism, creds, peer).await? {
            Answer::Ok(name) => Some(Arc::new(User::external(name, senders.clone()))),
            Answer::Rejected => None,
        },
        Backend::Upstream(b) => {
            let found = b.log_in(mechanism, creds, upstream).await?;
            return Ok(found.map(|(user, up)| (user, Some(Box::new(up)))));
        }
    };
    Ok(user.map(|u| (u, None)))
}
