//! Private keys: read from their PEM files and checked against the
//! algorithm the configuration names, so a wrong or damaged file stops
//! start-up (and is refused on reload) instead of failing at the first
//! message.

use crate::config::{DkimAlgorithm, DkimKey};
use mail_auth::common::crypto::{DkimKey as SigningKey, Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// Smallest RSA modulus accepted, in bytes: RFC 8301 §3.2 wants at least
/// 1024 bits and says 2048 should be the norm; ring refuses less anyway.
const MIN_RSA_BYTES: usize = 256;

/// Reads `key.key_file` as a key of `key.algorithm`; the error says what
/// is wrong with the file (not where it is named: the caller knows that).
pub fn load(key: &DkimKey) -> Result<SigningKey, String> {
    let path = key.key_file.display();
    let pem = std::fs::read(&key.key_file).map_err(|e| format!("cannot read {path}: {e}"))?;
    warn_if_readable_by_others(&key.key_file);
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{path} holds no PEM private key: {e}"))?;
    match key.algorithm {
        DkimAlgorithm::RsaSha256 => {
            let rsa = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
                // ring names the reason in one word; say what it means.
                if e.to_string().ends_with("TooSmall") {
                    format!("{path}: the RSA key is shorter than 2048 bits (RFC 8301)")
                } else {
                    format!("{path} is not a usable RSA key: {e}")
                }
            })?;
            // The public key is PKCS#1 DER; its length tracks the modulus.
            if rsa.public_key().len() < MIN_RSA_BYTES {
                return Err(format!("{path}: the RSA key is shorter than 2048 bits"));
            }
            Ok(SigningKey::Rsa(rsa))
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                return Err(format!(
                    "{path}: an ed25519-sha256 key must be PKCS#8 (BEGIN PRIVATE KEY)"
                ));
            };
            // OpenSSL writes PKCS#8 v1 (no public key inside); ring's own
            // generator v2. Both are the same key.
            let ed = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                .map_err(|e| format!("{path} is not a usable Ed25519 key: {e}"))?;
            Ok(SigningKey::Ed25519(ed))
        }
    }
}

/// Logs a warning when others than the owner and group may read the key:
/// whoever reads it can sign mail as the domain.
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            log::warn!(
                "DKIM key {} is readable by everyone; chmod 600 (or 640) it",
                path.display()
            );
        }
    }
}
