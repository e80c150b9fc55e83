//! The domain a message is signed for: the one of its From header field
//! (RFC 5322 §3.6.2), the author DMARC aligns a signature with.

use mail_parser::{HeaderName, MessageParser};

/// Why a message has no single author domain to sign for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAuthor {
    /// No From header field, or one without an address.
    Missing,
    /// Several From fields, or addresses in more than one domain: no key
    /// would align with every one (RFC 7489 §6.6.1 makes that a DMARC
    /// `permerror` anyway).
    Ambiguous,
}

impl NoAuthor {
    /// The reason, as a metric label and in logs.
    pub fn label(self) -> &'static str {
        match self {
            NoAuthor::Missing => "no_from",
            NoAuthor::Ambiguous => "ambiguous_from",
        }
    }
}

/// The lower-case ASCII (A-label) domain of the From address(es) of
/// `message` (its header section is enough).
pub fn author_domain(message: &[u8]) -> Result<String, NoAuthor> {
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or(NoAuthor::Missing)?;
    let mut froms = parsed
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From);
    let from = froms.next().ok_or(NoAuthor::Missing)?;
    if froms.next().is_some() {
        return Err(NoAuthor::Ambiguous);
    }
    let address = from.value.as_address().ok_or(NoAuthor::Missing)?;
    let mut found: Option<String> = None;
    for addr in address.iter() {
        let Some(domain) = addr
            .address()
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d)
        else {
            continue;
        };
        let domain =
            mail_auth::common::to_a_label(domain.trim().trim_end_matches('.')).to_ascii_lowercase();
        if domain.is_empty() {
            continue;
        }
        match &found {
            Some(d) if *d != domain => return Err(NoAuthor::Ambiguous),
            Some(_) => {}
            None => found = Some(domain),
        }
    }
    found.ok_or(NoAuthor::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_or_why_not() {
        let cases: [(&str, Result<&str, NoAuthor>); 8] = [
            ("From: A <a@Example.COM>\r\n\r\nx", Ok("example.com")),
            (
                "Subject: x\r\nFrom: a@example.com.\r\n\r\n",
                Ok("example.com"),
            ),
            ("From: a@b.test, c@b.test\r\n\r\n", Ok("b.test")),
            ("From: a@b.test, c@d.test\r\n\r\n", Err(NoAuthor::Ambiguous)),
            (
                "From: a@b.test\r\nFrom: a@b.test\r\n\r\n",
                Err(NoAuthor::Ambiguous),
            ),
            ("To: a@b.test\r\n\r\n", Err(NoAuthor::Missing)),
            ("From: nobody\r\n\r\n", Err(NoAuthor::Missing)),
            (
                "From: a@bücher.example\r\n\r\n",
                Ok("xn--bcher-kva.example"),
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(
                author_domain(msg.as_bytes()),
                want.map(String::from),
                "{msg}"
            );
        }
    }
}
