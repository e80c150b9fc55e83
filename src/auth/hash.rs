//! Password hashes: argon2id for new hashes (what `smtpgate hash-password`
//! writes), argon2 and bcrypt accepted in the users file. No crypto is done
//! here by hand: the `argon2` and `bcrypt` crates hash and compare (both in
//! constant time).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// A password hash from the users file, checked when loaded.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredHash {
    /// An argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    Argon2(String),
    /// A bcrypt hash (`$2b$12$...`, also `$2a$`/`$2y$`) with its cost.
    Bcrypt(String, u32),
}

impl std::fmt::Debug for StoredHash {
    /// Only the algorithm: hashes stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredHash::Argon2(_) => f.write_str("StoredHash::Argon2(..)"),
            StoredHash::Bcrypt(_, cost) => write!(f, "StoredHash::Bcrypt(cost {cost})"),
        }
    }
}

impl StoredHash {
    /// Recognises and checks a hash string.
    pub fn parse(s: &str) -> Result<StoredHash, String> {
        if s.starts_with("$argon2") {
            let parsed =
                PasswordHash::new(s).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            argon2::Algorithm::try_from(parsed.algorithm)
                .map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            argon2::Params::try_from(&parsed)
                .map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err("not a valid argon2 hash: no salt or hash part".to_string());
            }
            return Ok(StoredHash::Argon2(s.to_string()));
        }
        if ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| s.starts_with(p))
        {
            let parts = s
                .parse::<bcrypt::HashParts>()
                .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
            return Ok(StoredHash::Bcrypt(s.to_string(), parts.get_cost()));
        }
        Err(
            "not a password hash: expected argon2 (\"$argon2id$...\", from `smtpgate \
             hash-password`) or bcrypt (\"$2b$...\")"
                .to_string(),
        )
    }

    /// True when `password` matches. Comparison is constant-time (done by
    /// the hash crates).
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Argon2(s) => match PasswordHash::new(s) {
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
            StoredHash::Bcrypt(s, _) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }

    /// A hash of a random password with the same algorithm and cost, to
    /// verify against when the user does not exist: an unknown user then
    /// costs the same time as a wrong password.
    pub fn dummy_like(&self) -> StoredHash {
        let secret = SaltString::generate(&mut OsRng);
        match self {
            StoredHash::Argon2(s) => {
                let made = PasswordHash::new(s).ok().and_then(|parsed| {
                    let alg = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
                    let version = parsed
                        .version
                        .and_then(|v| argon2::Version::try_from(v).ok())
                        .unwrap_or_default();
                    let params = argon2::Params::try_from(&parsed).ok()?;
                    let salt = SaltString::generate(&mut OsRng);
                    Argon2::new(alg, version, params)
                        .hash_password(secret.as_str().as_bytes(), &salt)
                        .ok()
                        .map(|h| h.to_string())
                });
                match made {
                    Some(h) => StoredHash::Argon2(h),
                    None => StoredHash::default_dummy(),
                }
            }
            StoredHash::Bcrypt(_, cost) => match bcrypt::hash(secret.as_str(), *cost) {
                Ok(h) => StoredHash::Bcrypt(h, *cost),
                Err(_) => StoredHash::default_dummy(),
            },
        }
    }

    /// A dummy argon2id hash with the default parameters.
    pub fn default_dummy() -> StoredHash {
        let secret = SaltString::generate(&mut OsRng);
        match hash_password(secret.as_str()) {
            Ok(h) => StoredHash::Argon2(h),
            // Hashing with default parameters cannot fail; if it ever did,
            // an unparsable hash still makes every check fail.
            Err(_) => StoredHash::Argon2(String::new()),
        }
    }
}

/// Hashes a password for the users file: argon2id with the crate's default
/// parameters (19 MiB, 2 passes, 1 lane: the OWASP recommendation) and a
/// random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let stored = StoredHash::parse(&h).unwrap();
        assert!(stored.verify(b"correct horse"));
        assert!(!stored.verify(b"correct horsE"));
        assert!(!stored.verify(b""));
    }

    #[test]
    fn bcrypt_hashes_are_accepted() {
        let h = bcrypt::hash("s3cret", 4).unwrap();
        let stored = StoredHash::parse(&h).unwrap();
        assert_eq!(stored, StoredHash::Bcrypt(h.clone(), 4));
        assert!(stored.verify(b"s3cret"));
        assert!(!stored.verify(b"s3cret!"));
        let dummy = stored.dummy_like();
        assert!(matches!(dummy, StoredHash::Bcrypt(_, 4)));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "plaintext",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$nonsense",
            "$2b$12$short",
            "$1$md5crypt$xyz",
        ] {
            assert!(StoredHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dummy_has_the_same_parameters() {
        let h = hash_password("pw").unwrap();
        let StoredHash::Argon2(dummy) = StoredHash::parse(&h).unwrap().dummy_like() else {
            panic!("not argon2");
        };
        assert!(
            dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{dummy}"
        );
        assert_ne!(dummy, h);
    }

    /// The cost of a check must not tell whether the user exists. The cost
    /// of a hash is set by its algorithm and parameters, so the dummy must
    /// carry exactly those (timing it would be noise on a shared machine),
    /// for non-default parameters too, and must be a real hash to check.
    #[test]
    fn dummy_carries_the_cost_parameters_of_the_real_hash() {
        let params = argon2::Params::new(8192, 3, 2, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let real = Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let head = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_string();
        assert_eq!(head(&real), "$argon2i$v=19$m=8192,t=3,p=2");
        let stored = StoredHash::parse(&real).unwrap();
        let StoredHash::Argon2(dummy) = stored.dummy_like() else {
            panic!("not argon2");
        };
        assert_eq!(head(&dummy), head(&real), "{dummy}");
        let dummy = StoredHash::parse(&dummy).unwrap();
        assert!(!dummy.verify(b"pw"));

        let bcrypt = StoredHash::parse(&bcrypt::hash("pw", 5).unwrap()).unwrap();
        let StoredHash::Bcrypt(dummy, cost) = bcrypt.dummy_like() else {
            panic!("not bcrypt");
        };
        assert_eq!(cost, 5);
        assert!(dummy.starts_with("$2b$05$"), "{dummy}");
        assert!(!StoredHash::parse(&dummy).unwrap().verify(b"pw"));
    }
}
