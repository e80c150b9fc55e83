//! Invariants of DKIM signing on arbitrary messages, shared by the
//! `dkim_sign` fuzz target and the seed replay test: finding the From
//! domain and signing never panic, a domain found is a lower-case name
//! without `@`, and a signature is one well-formed header field block for
//! the key's domain that the message's own header fields follow.

use super::from::author_domain;
use super::{KeySet, Signed};
use crate::config::DkimSigning;
use mail_auth::common::crypto::{DkimKey, Ed25519Key};
use std::sync::OnceLock;

/// The domain the fuzz key signs for (and its subdomains).
pub const FUZZ_DOMAIN: &str = "example.com";

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let der = Ed25519Key::generate_pkcs8().expect("ring makes Ed25519 keys");
        let key = Ed25519Key::from_pkcs8_der(&der).expect("ring reads its own key");
        KeySet::single(FUZZ_DOMAIN, DkimKey::Ed25519(key), &DkimSigning::default())
    })
}

/// Checks the invariants on `data` taken as a whole message; panics when
/// one breaks.
pub fn check_signing(data: &[u8]) {
    if let Ok(domain) = author_domain(data) {
        assert!(!domain.is_empty() && !domain.contains('@'), "{domain:?}");
        assert_eq!(domain, domain.to_ascii_lowercase());
    }
    // Split anywhere: the parts are one message together.
    let cut = data.len() / 3;
    match keys().sign(&[&data[..cut], &data[cut..]]) {
        Signed::Fields { header, domain } => {
            assert_eq!(domain, FUZZ_DOMAIN);
            let text = std::str::from_utf8(&header).expect("the signature is ASCII");
            assert!(text.starts_with("DKIM-Signature: "), "{text}");
            assert!(text.ends_with("\r\n"), "{text}");
            assert!(text.contains("d=example.com;"), "{text}");
            // Continuation lines only: one field.
            for line in text.trim_end_matches("\r\n").split("\r\n").skip(1) {
                assert!(line.starts_with([' ', '\t']), "{text}");
            }
        }
        Signed::Unsigned(reason) => {
            assert!(["no_from", "ambiguous_from", "no_key"].contains(&reason));
        }
        Signed::Failed { domain, .. } => assert_eq!(domain, FUZZ_DOMAIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_message_is_signed_for_the_fuzz_domain() {
        check_signing(b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n");
        let signed = keys().sign(&[b"From: a@sub.example.com\r\n\r\nx\r\n"]);
        assert!(matches!(signed, Signed::Fields { .. }), "{signed:?}");
        check_signing(b"");
        check_signing(b"From: \xff@\xfe\r\n\r\n");
    }
}
