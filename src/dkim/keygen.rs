//! `smtpgate dkim-keygen`: a new key pair and the DNS TXT record that
//! publishes its public half (RFC 6376 §3.6.1).
//!
//! RSA keys come from the `rsa` crate, since ring signs with RSA keys but
//! cannot make them; Ed25519 keys from ring (through mail-auth). Either
//! way the private key is written as PKCS#8 PEM, which the gateway (and
//! OpenSSL, OpenDKIM, rspamd) read.

use mail_auth::common::crypto::Ed25519Key;
use rsa::pkcs8::der::pem::LineEnding;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The RSA key size written: RFC 8301's recommended size, and what every
/// DNS provider takes in one TXT record.
pub const RSA_BITS: usize = 2048;

/// Longest character-string in a TXT record (RFC 1035 §3.3).
const TXT_STRING_MAX: usize = 255;

/// The kind of key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, 2048 bits, for `rsa-sha256`.
    Rsa,
    /// Ed25519, for `ed25519-sha256`.
    Ed25519,
}

impl KeyKind {
    /// The `k=` tag value.
    pub fn tag(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// The `algorithm:` of `dkim_signing.keys` that uses it.
    pub fn algorithm(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa-sha256",
            KeyKind::Ed25519 => "ed25519-sha256",
        }
    }
}

/// A new key pair.
pub struct KeyPair {
    /// The kind of key.
    pub kind: KeyKind,
    /// The private key, PKCS#8 PEM.
    pub private_pem: zeroize::Zeroizing<String>,
    /// The public key as `p=` wants it, base64: the SubjectPublicKeyInfo
    /// DER for RSA, the raw 32 bytes for Ed25519 (RFC 8463 §4.2).
    pub public_b64: String,
}

/// Makes a key pair of `kind`.
pub fn generate(kind: KeyKind) -> Result<KeyPair, String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    match kind {
        KeyKind::Rsa => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| format!("cannot make an RSA key: {e}"))?;
            let private_pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
            Ok(KeyPair {
                kind,
                private_pem,
                public_b64: b64.encode(public.as_bytes()),
            })
        }
        KeyKind::Ed25519 => {
            let der = zeroize::Zeroizing::new(
                Ed25519Key::generate_pkcs8()
                    .map_err(|e| format!("cannot make an Ed25519 key: {e}"))?,
            );
            let key = Ed25519Key::from_pkcs8_der(&der)
                .map_err(|e| format!("cannot read back the Ed25519 key: {e}"))?;
            // ring writes PKCS#8 v2 (the public key inside), which OpenSSL
            // 3.0 cannot read; the v1 form of RFC 8410 is the same key
            // without it, and what `openssl genpkey` writes.
            let mut info = rsa::pkcs8::PrivateKeyInfo::try_from(der.as_slice())
                .map_err(|e| format!("cannot read back the Ed25519 key: {e}"))?;
            info.public_key = None;
            let pem = rsa::pkcs8::SecretDocument::try_from(info)
                .and_then(|doc| Ok(doc.to_pem("PRIVATE KEY", LineEnding::LF)?))
                .map_err(|e| format!("cannot encode the Ed25519 key: {e}"))?;
            Ok(KeyPair {
                kind,
                private_pem: pem,
                public_b64: b64.encode(key.public_key()),
            })
        }
    }
}

impl KeyPair {
    /// The TXT record's text: `v=DKIM1; k=rsa; p=...`.
    pub fn record_text(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.kind.tag(), self.public_b64)
    }

    /// The record to publish, in zone-file syntax, the text split into
    /// strings of at most 255 bytes (one TXT record; verifiers join them):
    /// `s._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB..." "..."`.
    pub fn zone_record(&self, domain: &str, selector: &str) -> String {
        let text = self.record_text();
        // The text is ASCII, so byte chunks are character chunks.
        let strings: Vec<String> = text
            .as_bytes()
            .chunks(TXT_STRING_MAX)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!(
            "{selector}._domainkey.{domain}. IN TXT {}",
            strings.join(" ")
        )
    }

    /// Writes `<domain>.<selector>.pem` (the private key, mode 0600) and
    /// `<domain>.<selector>.txt` (the DNS record) into `dir`; an existing
    /// file is never overwritten. Returns both paths.
    pub fn write(
        &self,
        dir: &Path,
        domain: &str,
        selector: &str,
    ) -> Result<(PathBuf, PathBuf), String> {
        let base = format!("{domain}.{selector}");
        let key = dir.join(format!("{base}.pem"));
        let txt = dir.join(format!("{base}.txt"));
        for p in [&key, &txt] {
            if p.exists() {
                return Err(format!("{} exists; not overwriting it", p.display()));
            }
        }
        write_new(&key, self.private_pem.as_bytes(), 0o600)?;
        let record = format!("{}\n", self.zone_record(domain, selector));
        write_new(&txt, record.as_bytes(), 0o644)?;
        Ok((key, txt))
    }
}

/// Creates `path` (it must not exist) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_into_255_byte_strings() {
        let pair = generate(KeyKind::Rsa).unwrap();
        let zone = pair.zone_record("example.com", "s1");
        assert!(zone.starts_with("s1._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p=MIIB"));
        let strings: Vec<&str> = zone.split('"').skip(1).step_by(2).collect();
        assert!(strings.len() >= 2, "{zone}");
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), pair.record_text());
        assert!(pair
            .private_pem
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let ed = generate(KeyKind::Ed25519).unwrap();
        assert_eq!(ed.public_b64.len(), 44);
        assert!(ed
            .zone_record("e.test", "s")
            .ends_with(&format!("\"v=DKIM1; k=ed25519; p={}\"", ed.public_b64)));
    }
}
