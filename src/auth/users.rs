//! The users file: who may authenticate, with which password hash, and as
//! which senders.
//!
//! ```yaml
//! users:
//!   - name: alice
//!     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$..."
//!     senders: [alice@example.com, "@example.org"]
//! ```
//!
//! Errors name the file and line, like `gateway.yaml`'s. Checks run off the
//! async threads and at most a few at a time: one argon2 check takes tens
//! of milliseconds and 19 MiB of memory.

use super::hash::StoredHash;
use crate::config::{locate, ConfigError};
use crate::proto::Mailbox;
use crate::relay::SenderRule;
use async_lock::Semaphore;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    /// The users; an empty file has none.
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// One user as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    /// Login name.
    name: String,
    /// argon2 or bcrypt hash.
    password_hash: String,
    /// Allowed MAIL FROM addresses: `user@domain`, `@domain`, or `*`.
    #[serde(default)]
    senders: Vec<String>,
}

/// One user who may authenticate.
#[derive(Debug)]
pub struct User {
    /// The login name, as written in the file.
    pub name: String,
    /// The password hash; `None` for a user another backend checked.
    hash: Option<StoredHash>,
    /// Which MAIL FROM addresses this user may use.
    senders: Vec<SenderRule>,
}

impl User {
    /// A user another backend authenticated, who may send as exactly
    /// `senders` (an LDAP entry's addresses).
    pub fn with_senders(name: String, senders: Vec<SenderRule>) -> User {
        User {
            name,
            hash: None,
            senders,
        }
    }

    /// A user another backend (Dovecot) authenticated: they may send as
    /// their login name when it is an address, and as `senders`.
    pub fn external(name: String, mut senders: Vec<SenderRule>) -> User {
        if name.contains('@') {
            if let Ok(own) = SenderRule::parse(&name) {
                senders.insert(0, own);
            }
        }
        User {
            name,
            hash: None,
            senders,
        }
    }

    /// True when this user may send with `from` as the reverse path. The
    /// null sender `<>` names nobody and is allowed (bounces, receipts).
    pub fn may_send_as(&self, from: Option<&Mailbox>) -> bool {
        match from {
            None => true,
            Some(m) => self.senders.iter().any(|r| r.allows(m)),
        }
    }
}

/// Every user of one users file.
#[derive(Debug)]
pub struct Users {
    /// Users by lowercased name: logins are matched without case.
    by_name: HashMap<String, Arc<User>>,
    /// What an unknown user is checked against, so that it costs the same.
    dummy: StoredHash,
}

impl Users {
    /// Reads and checks a users file.
    pub fn load(path: &Path) -> Result<Users, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: origin.clone(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        Users::from_yaml(&text, &origin)
    }

    /// Parses and checks users-file text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Users, ConfigError> {
        let at = |path: &str, reason: String| ConfigError {
            file: origin.to_string(),
            line: locate::line_of(text, path),
            reason: format!("{path}: {reason}"),
        };
        let parsed: Option<UsersFile> = serde_yaml::from_str(text).map_err(|e| ConfigError {
            file: origin.to_string(),
            line: e.location().map(|l| l.line()),
            reason: e.to_string(),
        })?;
        let entries = parsed.map(|f| f.users).unwrap_or_default();
        let mut by_name = HashMap::new();
        let mut first_hash = None;
        for (i, e) in entries.into_iter().enumerate() {
            if e.name.is_empty() || e.name.len() > 255 || e.name.chars().any(char::is_control) {
                return Err(at(
                    &format!("users[{i}].name"),
                    "must be 1 to 255 characters without control characters".into(),
                ));
            }
            let hash = StoredHash::parse(&e.password_hash)
                .map_err(|r| at(&format!("users[{i}].password_hash"), r))?;
            let mut senders = Vec::new();
            for (j, s) in e.senders.iter().enumerate() {
                senders.push(
                    SenderRule::parse(s).map_err(|r| at(&format!("users[{i}].senders[{j}]"), r))?,
                );
            }
            let key = e.name.to_lowercase();
            if by_name.contains_key(&key) {
                return Err(at(
                    &format!("users[{i}].name"),
                    format!(
                        "{:?} is listed twice (names are compared without case)",
                        e.name
                    ),
                ));
            }
            first_hash.get_or_insert_with(|| hash.clone());
            by_name.insert(
                key,
                Arc::new(User {
                    name: e.name,
                    hash: Some(hash),
                    senders,
                }),
            );
        }
        let dummy = match &first_hash {
            Some(h) => h.dummy_like(),
            None => StoredHash::default_dummy(),
        };
        Ok(Users { by_name, dummy })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user `name` if `password` is theirs. Blocking and slow (a hash
    /// check); an unknown user is checked against a dummy hash so the
    /// answer takes the same time either way.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        match self.by_name.get(&name.to_lowercase()) {
            Some(user) => user
                .hash
                .as_ref()
                .is_some_and(|h| h.verify(password))
                .then(|| user.clone()),
            None => {
                let _ = self.dummy.verify(password);
                None
            }
        }
    }
}

/// The users of a running gateway: reloadable, and checked on the blocking
/// thread pool a few at a time.
pub struct UserStore {
    /// Where the users come from (again on reload).
    path: PathBuf,
    /// The users new checks use.
    current: RwLock<Arc<Users>>,
    /// Bounds concurrent checks so a burst of AUTH attempts cannot take
    /// all CPU or memory.
    gate: Semaphore,
}

impl UserStore {
    /// Loads the users file at `path`.
    pub fn load(path: &Path) -> Result<UserStore, ConfigError> {
        let users = Users::load(path)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(UserStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(users)),
            gate: Semaphore::new(cores.max(2)),
        })
    }

    /// The current users.
    pub fn users(&self) -> Arc<Users> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the users file; on error the previous users stay.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let users = Users::load(&self.path)?;
        let n = users.len();
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(users),
            Err(p) => *p.into_inner() = Arc::new(users),
        }
        Ok(n)
    }

    /// Checks `name` and `password` without blocking the async threads.
    pub async fn check(&self, name: String, password: Zeroizing<Vec<u8>>) -> Option<Arc<User>> {
        let _permit = self.gate.acquire().await;
        let users = self.users();
        async_std::task::spawn_blocking(move || users.verify(&name, &password)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(text: &str) -> Result<Users, ConfigError> {
        Users::from_yaml(text, "users.yaml")
    }

    #[test]
    fn users_load_and_verify() {
        let alice = crate::auth::hash_password("wonderland").unwrap();
        let bob = bcrypt::hash("builder", 4).unwrap();
        let text = format!(
            "users:\n  - name: Alice\n    password_hash: \"{alice}\"\n    senders: [alice@example.com, \"@example.org\"]\n  - {{ name: bob, password_hash: \"{bob}\" }}\n"
        );
        let u = users(&text).unwrap();
        assert_eq!(u.len(), 2);
        let a = u.verify("alice", b"wonderland").expect("alice");
        assert_eq!(a.name, "Alice");
        assert!(u.verify("alice", b"Wonderland").is_none());
        assert!(u.verify("nobody", b"wonderland").is_none());
        assert!(u.verify("bob", b"builder").is_some());
        let mb = |l: &str, d: &str| Mailbox {
            local: l.into(),
            domain: d.into(),
        };
        assert!(a.may_send_as(Some(&mb("alice", "example.com"))));
        assert!(a.may_send_as(Some(&mb("x", "example.org"))));
        assert!(!a.may_send_as(Some(&mb("bob", "example.com"))));
        assert!(a.may_send_as(None));
        let b = u.verify("BOB", b"builder").unwrap();
        assert!(!b.may_send_as(Some(&mb("bob", "example.com"))));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let h = crate::auth::hash_password("x").unwrap();
        let cases: Vec<(String, usize, &str)> = vec![
            (
                "users:\n  - name: a\n    password_hash: plain\n".into(),
                3,
                "users[0].password_hash: not a password hash",
            ),
            (
                format!("users:\n  - name: a\n    password_hash: \"{h}\"\n    senders: [bob]\n"),
                4,
                "users[0].senders[0]: \"bob\" is not an address",
            ),
            (
                format!("users:\n  - {{ name: a, password_hash: \"{h}\" }}\n  - {{ name: A, password_hash: \"{h}\" }}\n"),
                3,
                "users[1].name: \"A\" is listed twice",
            ),
            (
                "users:\n  - name: a\n    pasword_hash: x\n".into(),
                3,
                "unknown field `pasword_hash`",
            ),
        ];
        for (text, line, want) in cases {
            let e = users(&text).unwrap_err();
            assert_eq!(e.file, "users.yaml");
            assert_eq!(e.line, Some(line), "{text}\n{e}");
            assert!(e.reason.contains(want), "{e}");
        }
        assert!(users("").unwrap().is_empty());
        assert!(users("users: []\n").unwrap().is_empty());
    }
}
