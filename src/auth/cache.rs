//! A short-lived cache of recent successful logins, so clients that log
//! in on every connection do not each cost a backend round trip.
//!
//! Entries are keyed by an HMAC-SHA256 of the login (authzid, user and
//! password) under a key drawn at start-up: the cache holds no password,
//! nor anything an attacker who reads the process memory could test
//! guesses against offline without the key. A wrong password is never
//! cached, so it always reaches a backend. Off by default; flushed on
//! reload, so a changed password or a removed user takes effect then.

use super::{Credentials, User};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One remembered login.
struct Entry {
    /// Who logged in.
    user: Arc<User>,
    /// The backend that accepted it.
    backend: &'static str,
    /// When it expires.
    until: Instant,
}

/// Recent successful logins.
pub struct LoginCache {
    /// The HMAC key, random per process.
    key: hmac::Key,
    /// How long a login is remembered.
    ttl: Duration,
    /// At most this many logins are remembered.
    max: usize,
    /// Logins by tag.
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl LoginCache {
    /// A cache remembering up to `max` logins for `ttl` each.
    pub fn new(ttl: Duration, max: usize) -> LoginCache {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system's random source works");
        LoginCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl,
            max: max.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The keyed tag of a login; lengths are included so that no two
    /// different logins run together into the same input.
    fn tag(&self, creds: &Credentials) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [
            creds.authzid.as_bytes(),
            creds.user.as_bytes(),
            &creds.password[..],
        ] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// The user and backend of a remembered, unexpired login.
    pub fn get(&self, creds: &Credentials) -> Option<(Arc<User>, &'static str)> {
        let tag = self.tag(creds);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&tag) {
            Some(e) if e.until > Instant::now() => Some((e.user.clone(), e.backend)),
            Some(_) => {
                entries.remove(&tag);
                None
            }
            None => None,
        }
    }

    /// Remembers a successful login.
    pub fn put(&self, creds: &Credentials, user: Arc<User>, backend: &'static str) {
        let tag = self.tag(creds);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            entries.retain(|_, e| e.until > now);
        }
        if entries.len() >= self.max {
            // Still full of live entries: start over rather than track
            // ages; the cost is one backend round trip per login.
            entries.clear();
        }
        entries.insert(
            tag,
            Entry {
                user,
                backend,
                until: now + self.ttl,
            },
        );
    }

    /// Forgets every login (on reload).
    pub fn flush(&self) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let n = entries.len();
        entries.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            authzid: String::new(),
            user: user.into(),
            password: Zeroizing::new(password.as_bytes().to_vec()),
        }
    }

    #[test]
    fn remembers_only_the_same_login_until_it_expires_or_is_flushed() {
        let c = LoginCache::new(Duration::from_secs(60), 2);
        let alice = Arc::new(User::external("alice@example.com".into(), Vec::new()));
        c.put(&creds("alice", "pw"), alice, "dovecot");
        assert_eq!(c.get(&creds("alice", "pw")).unwrap().1, "dovecot");
        assert!(c.get(&creds("alice", "pw2")).is_none());
        assert!(c.get(&creds("alicep", "w")).is_none());
        assert_eq!(c.flush(), 1);
        assert!(c.get(&creds("alice", "pw")).is_none());
        let gone = LoginCache::new(Duration::ZERO, 2);
        let bob = Arc::new(User::external("bob".into(), Vec::new()));
        gone.put(&creds("bob", "pw"), bob, "dovecot");
        assert!(gone.get(&creds("bob", "pw")).is_none());
    }
}
