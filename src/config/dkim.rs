//! `dkim_signing:`: the DKIM keys the gateway signs submitted mail with
//! (RFC 6376, Ed25519 per RFC 8463), whose mail is signed and which header
//! fields the signature covers. The keys themselves are loaded by the
//! `dkim` module, at start-up and on reload.

use super::{Network, ValidationError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The header fields signed by default: the ones a reader sees and the
/// MIME fields that say how to read the body (RFC 6376 §5.4.1).
pub const DEFAULT_HEADERS: [&str; 13] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Sender",
];

/// `dkim_signing: { keys: [...], networks: [...], headers: [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DkimSigning {
    /// The signing keys, one per domain and selector. A message is signed
    /// with every key of its From domain (an RSA and an Ed25519 key of one
    /// domain give two signatures, as RFC 8463 §1 suggests). At least one.
    pub keys: Vec<DkimKey>,
    /// Sign mail from clients that authenticated with SMTP AUTH. Default
    /// true.
    pub authenticated: bool,
    /// Also sign mail from clients in these networks (`10.0.0.0/8`, a
    /// single address), authenticated or not. Default: none.
    pub networks: Vec<Network>,
    /// Header fields to sign, names as written. Each one the message has
    /// is signed (every instance); one it lacks is signed as absent, so it
    /// cannot be added later. Must name `From` (RFC 6376 §5.4). Default:
    /// [`DEFAULT_HEADERS`].
    pub headers: Vec<String>,
    /// Of `headers`, the ones signed once more than the message has them,
    /// so that not even another instance can be added. Default `[From]`.
    pub oversign: Vec<String>,
}

impl Default for DkimSigning {
    fn default() -> Self {
        DkimSigning {
            keys: Vec::new(),
            authenticated: true,
            networks: Vec::new(),
            headers: DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect(),
            oversign: vec!["From".to_string()],
        }
    }
}

impl DkimSigning {
    /// The `h=` list to sign with: every header once, then the oversigned
    /// ones again (the signer signs each listed name the message has, and
    /// one more of a name listed twice).
    pub fn signed_headers(&self) -> Vec<String> {
        let mut all = self.headers.clone();
        all.extend(self.oversign.iter().cloned());
        all
    }
}

/// One key: `{ domain: example.com, selector: s2026, algorithm:
/// rsa-sha256, key_file: /etc/smtpgate/dkim/example.com.pem }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The signing domain (`d=`): mail whose From address is in it is
    /// signed with this key. Required.
    pub domain: String,
    /// The selector (`s=`): the public key is published at
    /// `<selector>._domainkey.<domain>`. Required.
    pub selector: String,
    /// `rsa-sha256` (the default; a 2048-bit or larger key) or
    /// `ed25519-sha256`.
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// The private key: a PEM file, PKCS#8 (`BEGIN PRIVATE KEY`, what
    /// `smtpgate dkim-keygen` writes) or, for RSA, PKCS#1 (`BEGIN RSA
    /// PRIVATE KEY`). Required.
    pub key_file: PathBuf,
    /// Also sign mail from subdomains of `domain` that have no key of
    /// their own, with `d=` this domain (DMARC's relaxed alignment accepts
    /// that; strict alignment does not). Default false.
    #[serde(default)]
    pub subdomains: bool,
}

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256 (RFC 6376), what every verifier knows.
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256 (RFC 8463): short keys, not yet known to every
    /// verifier, so best next to an RSA key.
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The `a=` name.
    pub fn name(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

/// A selector or domain name as DKIM writes them: dot-separated labels of
/// letters, digits and inner hyphens.
pub fn is_dns_labels(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A header field name (RFC 5322 §3.6.8): printable ASCII but the colon.
fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Checks of `dkim_signing`: keys present and unique, names valid, `From`
/// signed.
pub(super) fn check(d: &DkimSigning) -> Result<(), ValidationError> {
    let at = |path: String, reason: String| Err(ValidationError::new(path, reason));
    if d.keys.is_empty() {
        return at(
            "dkim_signing.keys".into(),
            "at least one key is required".into(),
        );
    }
    for (i, k) in d.keys.iter().enumerate() {
        if !super::validate::is_domain(&k.domain) {
            return at(
                format!("dkim_signing.keys[{i}].domain"),
                format!("{:?} is not a domain name", k.domain),
            );
        }
        if !is_dns_labels(&k.selector) {
            return at(
                format!("dkim_signing.keys[{i}].selector"),
                format!(
                    "{:?} is not a selector (letters, digits, hyphens, dots)",
                    k.selector
                ),
            );
        }
        if k.key_file.as_os_str().is_empty() {
            return at(
                format!("dkim_signing.keys[{i}].key_file"),
                "must not be empty".into(),
            );
        }
        let same = |o: &DkimKey| {
            o.domain.eq_ignore_ascii_case(&k.domain) && o.selector.eq_ignore_ascii_case(&k.selector)
        };
        if let Some(j) = d.keys[..i].iter().position(same) {
            return at(
                format!("dkim_signing.keys[{i}].selector"),
                format!(
                    "{}._domainkey.{} is already keys[{j}]",
                    k.selector, k.domain
                ),
            );
        }
    }
    for (i, h) in d.headers.iter().enumerate() {
        if !is_field_name(h) {
            return at(
                format!("dkim_signing.headers[{i}]"),
                format!("{h:?} is not a header field name"),
            );
        }
        if h.eq_ignore_ascii_case("DKIM-Signature") {
            return at(
                format!("dkim_signing.headers[{i}]"),
                "DKIM-Signature is not signed by a DKIM signature".into(),
            );
        }
    }
    if !d.headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
        return at(
            "dkim_signing.headers".into(),
            "must name From: RFC 6376 §5.4 requires it to be signed".into(),
        );
    }
    for (i, h) in d.oversign.iter().enumerate() {
        if !d.headers.iter().any(|s| s.eq_ignore_ascii_case(h)) {
            return at(
                format!("dkim_signing.oversign[{i}]"),
                format!("{h:?} is not in dkim_signing.headers"),
            );
        }
    }
    Ok(())
}

/// The `dkim:` line of `smtpgate check`: the keys, and whose mail.
pub(super) fn summary(d: &DkimSigning, out: &mut String) {
    use std::fmt::Write as _;
    let keys: Vec<String> = d
        .keys
        .iter()
        .map(|k| {
            let sub = if k.subdomains { " +subdomains" } else { "" };
            format!(
                "{}._domainkey.{} ({}{sub})",
                k.selector,
                k.domain,
                k.algorithm.name()
            )
        })
        .collect();
    let mut who = Vec::new();
    if d.authenticated {
        who.push("authenticated users".to_string());
    }
    let nets: Vec<String> = d.networks.iter().map(ToString::to_string).collect();
    if !nets.is_empty() {
        who.push(nets.join(", "));
    }
    let who = if who.is_empty() {
        "nobody".to_string()
    } else {
        who.join(" and ")
    };
    let _ = writeln!(
        out,
        "dkim:      signs mail of {who} with {}",
        keys.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(yaml: &str) -> String {
        Config::from_yaml(yaml, "g.yaml").unwrap_err().to_string()
    }

    #[test]
    fn a_key_section_parses_with_defaults() {
        let c = Config::from_yaml(
            "dkim_signing:\n  keys:\n    - { domain: example.com, selector: s1, key_file: /k.pem }\n",
            "g.yaml",
        )
        .unwrap();
        let d = c.dkim_signing.unwrap();
        assert!(d.authenticated);
        assert_eq!(d.keys[0].algorithm.name(), "rsa-sha256");
        let h = d.signed_headers();
        assert_eq!(h.iter().filter(|h| *h == "From").count(), 2, "{h:?}");
        let mut s = String::new();
        super::summary(&d, &mut s);
        assert_eq!(
            s,
            "dkim:      signs mail of authenticated users with s1._domainkey.example.com (rsa-sha256)\n"
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        let cases = [
            ("dkim_signing: { keys: [] }\n", "g.yaml:1: dkim_signing.keys: at least one"),
            (
                "dkim_signing:\n  keys:\n    - { domain: \"-x\", selector: s, key_file: k }\n",
                "g.yaml:3: dkim_signing.keys[0].domain",
            ),
            (
                "dkim_signing:\n  keys:\n    - { domain: a.test, selector: \"s_1\", key_file: k }\n",
                "g.yaml:3: dkim_signing.keys[0].selector",
            ),
            (
                "dkim_signing:\n  keys:\n    - { domain: a.test, selector: s, key_file: k }\n    - { domain: A.test, selector: s, key_file: j }\n",
                "is already keys[0]",
            ),
            (
                "dkim_signing:\n  keys:\n    - { domain: a.test, selector: s, key_file: k }\n  headers: [To]\n",
                "g.yaml:4: dkim_signing.headers: must name From",
            ),
            (
                "dkim_signing:\n  keys:\n    - { domain: a.test, selector: s, key_file: k }\n  oversign: [X-Y]\n",
                "dkim_signing.oversign[0]",
            ),
            (
                "dkim_signing:\n  keys:\n    - { domain: a.test, selector: s, key_file: k, algorithm: rsa-sha1 }\n",
                "g.yaml:3",
            ),
        ];
        for (yaml, want) in cases {
            let e = error(yaml);
            assert!(e.contains(want), "{yaml}\nwant {want}\ngot  {e}");
        }
    }
}
