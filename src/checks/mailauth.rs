//! mail-auth (SPF, DKIM, DMARC, ARC) on the gateway's own resolver.
//!
//! mail-auth's `MessageAuthenticator` is a thin wrapper around a hickory
//! `TokioResolver`, so it is built on the DNS thread around the shared
//! resolver (its settings, its cache) for each job, and the whole
//! verification runs there: its futures need tokio. What a job returns is
//! owned (result names, domains), never mail-auth's borrowed outputs.
//! mail-auth's own record caches are not used: hickory's cache keeps the
//! answers, and parsing a TXT record again costs next to nothing.

use super::SharedResolver;
use crate::dns::JobFuture;
use mail_auth::common::crypto::Algorithm;
use mail_auth::dkim::DkimError;
use mail_auth::{DkimResult, Error, MessageAuthenticator, SpfResult};
use std::time::Duration;

/// The longest a verification job may run on the DNS thread. The check's
/// own timeout (`checks.<name>.timeout_ms`) normally ends it first.
const JOB_LIMIT: Duration = Duration::from_secs(120);

/// Runs `job` on the DNS thread with an authenticator over the shared
/// resolver. `Err` says why it could not run (the resolver did not
/// start, the DNS thread is gone).
pub(super) async fn on_dns<T: Send + 'static>(
    resolver: &SharedResolver,
    job: impl FnOnce(MessageAuthenticator) -> JobFuture<T> + Send + 'static,
) -> Result<T, String> {
    let resolver = resolver.get()?;
    resolver
        .with_resolver_within(JOB_LIMIT, move |r| job(MessageAuthenticator(r)))
        .await
        .map_err(|e| e.to_string())
}

/// An SPF result as RFC 8601 names it.
pub(super) fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// An SPF result from its RFC 8601 name (what the `spf.*` facts hold).
pub(super) fn spf_from_name(name: &str) -> Option<SpfResult> {
    Some(match name {
        "pass" => SpfResult::Pass,
        "fail" => SpfResult::Fail,
        "softfail" => SpfResult::SoftFail,
        "neutral" => SpfResult::Neutral,
        "temperror" => SpfResult::TempError,
        "permerror" => SpfResult::PermError,
        "none" => SpfResult::None,
        _ => return None,
    })
}

/// A DKIM (or ARC) result as RFC 8601 names it.
pub(super) fn dkim_name(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        // mail-auth calls a body that no longer matches its hash neutral;
        // RFC 6376 §6.3 makes it a failed verification, which RFC 8601
        // §2.7.1 calls fail (as OpenDKIM and dkimpy do).
        DkimResult::Neutral(Error::Dkim(DkimError::FailedBodyHashMatch)) => "fail",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

/// The `a=` tag's name.
pub(super) fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

/// The domain of an address (`user@Example.COM` → `example.com`), without
/// a trailing dot.
pub(super) fn domain_of(address: &str) -> Option<String> {
    let (_, d) = address.rsplit_once('@')?;
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

/// Whether a signing domain `d` is aligned with the From domain `from`
/// for the `dkim.signatures` fact: the same name, or one a subdomain of
/// the other (relaxed alignment without a public-suffix list; the DMARC
/// check decides alignment itself, from the DNS).
pub(super) fn aligned(d: &str, from: &str) -> bool {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    let from = from.trim_end_matches('.').to_ascii_lowercase();
    d == from || from.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{from}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_names_round_trip() {
        for r in [
            SpfResult::Pass,
            SpfResult::Fail,
            SpfResult::SoftFail,
            SpfResult::Neutral,
            SpfResult::TempError,
            SpfResult::PermError,
            SpfResult::None,
        ] {
            assert_eq!(spf_from_name(spf_name(r)), Some(r));
        }
        assert_eq!(spf_from_name("maybe"), None);
    }

    #[test]
    fn alignment_is_the_same_domain_or_a_subdomain() {
        assert!(aligned("example.com", "Example.COM"));
        assert!(aligned("example.com", "news.example.com"));
        assert!(aligned("mail.example.com", "example.com"));
        assert!(!aligned("example.net", "example.com"));
        assert!(!aligned("badexample.com", "example.com"));
        assert_eq!(domain_of("a@B.Example."), Some("b.example".into()));
        assert_eq!(domain_of("nodomain"), None);
    }
}
