//! DKIM signing of submitted mail (RFC 6376; Ed25519 per RFC 8463): the
//! keys of `dkim_signing`, loaded at start-up and again on reload, and the
//! signature a message gets just before it is relayed.
//!
//! - [`Signer`] holds the configured keys (swapped whole on reload) and
//!   says whose mail is signed.
//! - [`KeySet::sign`] picks the keys of the message's From domain
//!   ([`from`]) and returns the `DKIM-Signature` fields to put on top.
//! - [`keygen`] makes a key pair and its DNS record, for
//!   `smtpgate dkim-keygen`.
//!
//! Signing is mail-auth's, on ring (the one crypto provider of TLS and
//! DKIM), relaxed/relaxed, with no `l=` (the whole body is covered) and
//! no expiry.

pub mod from;
pub mod key;
pub mod keygen;
pub mod selfcheck;

use crate::config::{DkimSigning, Network};
use from::NoAuthor;
use mail_auth::common::crypto::DkimKey as SigningKey;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// A key of the configuration that did not load: which one (its index in
/// `dkim_signing.keys`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Index in `dkim_signing.keys`.
    pub index: usize,
    /// What is wrong with its file.
    pub reason: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dkim_signing.keys[{}].key_file: {}",
            self.index, self.reason
        )
    }
}

/// One loaded key, ready to sign.
struct Loaded {
    /// `d=`, lower case.
    domain: String,
    /// `s=`.
    selector: String,
    /// Whether subdomains without keys of their own use it.
    subdomains: bool,
    /// mail-auth's signer with the header list and canonicalization.
    signer: DkimSigner<SigningKey, Done>,
}

/// Every key, by domain: one snapshot, replaced whole on reload, so a
/// message is signed with the keys of one configuration state.
pub struct KeySet {
    by_domain: HashMap<String, Vec<Loaded>>,
}

/// What signing a message came to.
#[derive(Debug)]
pub enum Signed {
    /// The `DKIM-Signature` fields (CRLF-terminated) to put in front of
    /// the message, and the domain they sign for.
    Fields {
        /// The header fields, one per key.
        header: Vec<u8>,
        /// `d=` of the signatures.
        domain: String,
    },
    /// No key for the message: no single From domain, or none of ours.
    Unsigned(&'static str),
    /// A key of the domain could not sign (logged; the message goes
    /// unsigned).
    Failed {
        /// `d=` it was for.
        domain: String,
        /// What the signer said.
        error: String,
    },
}

impl KeySet {
    /// Loads every key of `settings`; the first one that does not load is
    /// the error.
    pub fn load(settings: &DkimSigning) -> Result<KeySet, KeyError> {
        let headers = settings.signed_headers();
        let mut by_domain: HashMap<String, Vec<Loaded>> = HashMap::new();
        for (index, k) in settings.keys.iter().enumerate() {
            let key = key::load(k).map_err(|reason| KeyError { index, reason })?;
            let domain = k.domain.to_ascii_lowercase();
            let signer = DkimSigner::from_key(key)
                .domain(domain.clone())
                .selector(k.selector.clone())
                .headers(headers.iter().cloned())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            by_domain.entry(domain.clone()).or_default().push(Loaded {
                domain,
                selector: k.selector.clone(),
                subdomains: k.subdomains,
                signer,
            });
        }
        Ok(KeySet { by_domain })
    }

    /// One key for `domain`, signing `settings.signed_headers()`: for
    /// the fuzz invariants, which have no key file.
    pub(crate) fn single(domain: &str, key: SigningKey, settings: &DkimSigning) -> KeySet {
        let signer = DkimSigner::from_key(key)
            .domain(domain)
            .selector("fuzz")
            .headers(settings.signed_headers())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        let loaded = Loaded {
            domain: domain.to_string(),
            selector: "fuzz".to_string(),
            subdomains: true,
            signer,
        };
        KeySet {
            by_domain: HashMap::from([(domain.to_string(), vec![loaded])]),
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_domain.values().map(Vec::len).sum()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured signing domains, for metrics at zero.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.by_domain.keys().map(String::as_str)
    }

    /// The keys for mail from `domain`: its own, or else those of the
    /// nearest parent domain that let subdomains use them.
    fn keys_for(&self, domain: &str) -> Vec<&Loaded> {
        if let Some(keys) = self.by_domain.get(domain) {
            return keys.iter().collect();
        }
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(keys) = self.by_domain.get(parent) {
                let usable: Vec<&Loaded> = keys.iter().filter(|k| k.subdomains).collect();
                if !usable.is_empty() {
                    return usable;
                }
            }
            rest = parent;
        }
        Vec::new()
    }

    /// Signs `parts` (together the whole message as it is relayed:
    /// added header fields, then the message) with every key of its From
    /// domain.
    pub fn sign(&self, parts: &[&[u8]]) -> Signed {
        let whole: Vec<u8> = parts.concat();
        let domain = match from::author_domain(&whole) {
            Ok(d) => d,
            Err(e @ (NoAuthor::Missing | NoAuthor::Ambiguous)) => {
                return Signed::Unsigned(e.label())
            }
        };
        let keys = self.keys_for(&domain);
        if keys.is_empty() {
            return Signed::Unsigned("no_key");
        }
        let mut header = Vec::new();
        for k in &keys {
            match k.signer.sign(&whole) {
                Ok(sig) => header.extend_from_slice(sig.to_header().as_bytes()),
                Err(e) => {
                    return Signed::Failed {
                        domain: k.domain.clone(),
                        error: format!("selector {}: {e}", k.selector),
                    }
                }
            }
        }
        Signed::Fields {
            header,
            domain: keys[0].domain.clone(),
        }
    }
}

/// The DKIM signer of a gateway: the keys (reloadable) and whose mail
/// gets signed.
pub struct Signer {
    /// The configuration the keys come from (paths are re-read on reload).
    settings: DkimSigning,
    /// The keys in use.
    keys: RwLock<Arc<KeySet>>,
}

impl Signer {
    /// Loads the keys of `settings`.
    pub fn load(settings: &DkimSigning) -> Result<Signer, KeyError> {
        Ok(Signer {
            keys: RwLock::new(Arc::new(KeySet::load(settings)?)),
            settings: settings.clone(),
        })
    }

    /// Re-reads every key file; on success the new keys sign from now on
    /// and the count is returned, on error the old keys stay.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let fresh = Arc::new(KeySet::load(&self.settings)?);
        let n = fresh.len();
        match self.keys.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(n)
    }

    /// The keys in use (a snapshot: a reload does not change it).
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether mail of this client is signed: an authenticated one (when
    /// `authenticated` is on) or one in `networks`. Anyone else's never
    /// is, whatever its From says.
    pub fn signs_for(&self, authenticated: bool, client: IpAddr) -> bool {
        (authenticated && self.settings.authenticated)
            || in_networks(&self.settings.networks, client)
    }
}

/// True when `ip` is in one of `networks` (IPv4-mapped IPv6 counts as
/// IPv4).
fn in_networks(networks: &[Network], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    networks.iter().any(|n| n.0.contains(&ip))
}
