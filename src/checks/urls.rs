//! The domains a URIBL is asked about: the host names of the `http` and
//! `https` URLs in a message's text and HTML parts, decoded from base64 or
//! quoted-printable by `mail-parser`; and the From header's domain for
//! the RHSBL `from` check.
//!
//! A host is asked about as written and as its last two labels
//! (`www.spam.example` and `spam.example`): URIBLs list registered
//! domains, and some list host names. At most [`MAX_DOMAINS`] distinct
//! names per message, so one message cannot make thousands of lookups.

use super::rhsbl::domain_of;
use mail_parser::MessageParser;
use regex::Regex;
use std::sync::OnceLock;

/// Most names asked about per message.
pub const MAX_DOMAINS: usize = 20;

/// Most text scanned per message, in bytes: a URL past it is not seen.
const MAX_SCAN: usize = 4 * 1024 * 1024;

/// `http://` or `https://` and the authority's host part.
fn url_host() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)\bhttps?://(?:[^\s/?#@<>]*@)?([a-z0-9._-]+)").expect("valid regex")
    })
}

/// The names to ask about for the URLs in `text`, in order of first
/// appearance, each once, at most [`MAX_DOMAINS`].
pub fn text_domains(text: &str, out: &mut Vec<String>) {
    for cap in url_host().captures_iter(text) {
        if out.len() >= MAX_DOMAINS {
            return;
        }
        let Some(host) = cap.get(1).and_then(|m| domain_of(m.as_str())) else {
            continue;
        };
        let labels: Vec<&str> = host.split('.').collect();
        let registered = labels[labels.len().saturating_sub(2)..].join(".");
        for name in [host.clone(), registered] {
            if out.len() < MAX_DOMAINS && !out.contains(&name) {
                out.push(name);
            }
        }
    }
}

/// The names to ask about for the URLs in `message`'s text parts.
pub fn message_domains(message: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(parsed) = MessageParser::default().parse(message) else {
        return out;
    };
    let mut scanned = 0;
    for part in parsed.text_bodies().chain(parsed.html_bodies()) {
        let Some(text) = part.text_contents() else {
            continue;
        };
        let room = MAX_SCAN.saturating_sub(scanned);
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text_domains(&text[..end], &mut out);
        scanned += end;
        if scanned >= MAX_SCAN || out.len() >= MAX_DOMAINS {
            break;
        }
    }
    out
}

/// The domain of the first address of `message`'s From header.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = MessageParser::default().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    domain_of(domain)
}

/// The invariants the fuzz target checks: never a panic, never more than
/// [`MAX_DOMAINS`] names, each one fit to ask about.
pub fn selfcheck(data: &[u8]) {
    let names = message_domains(data);
    assert!(names.len() <= MAX_DOMAINS);
    for n in &names {
        assert_eq!(domain_of(n).as_deref(), Some(n.as_str()), "{n:?}");
    }
    if let Some(d) = from_domain(data) {
        assert_eq!(domain_of(&d), Some(d.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_plain_base64_and_quoted_printable_bodies() {
        let plain = b"From: a@b.test\r\nSubject: x\r\n\r\nsee https://www.Spam.Example/x?y and http://user@other.test:80/\r\n";
        assert_eq!(
            message_domains(plain),
            vec!["www.spam.example", "spam.example", "other.test"]
        );
        // "visit http://b64.example/ now" in base64.
        let b64 = b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\ndmlzaXQgaHR0cDovL2I2NC5leGFtcGxlLyBub3c=\r\n";
        assert_eq!(message_domains(b64), vec!["b64.example"]);
        let qp = b"Subject: x\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D\"http://qp.exa=\r\nmple/\">x</a>\r\n";
        assert_eq!(message_domains(qp), vec!["qp.example"]);
    }

    #[test]
    fn at_most_so_many_names() {
        let text: String = (0..100).map(|i| format!("http://h{i}.test/ ")).collect();
        let msg = format!("Subject: x\r\n\r\n{text}\r\n");
        assert_eq!(message_domains(msg.as_bytes()).len(), MAX_DOMAINS);
        selfcheck(msg.as_bytes());
    }

    #[test]
    fn the_from_domain() {
        assert_eq!(
            from_domain(b"From: \"A\" <a@Sender.Example>\r\n\r\nx\r\n"),
            Some("sender.example".into())
        );
        assert_eq!(from_domain(b"Subject: x\r\n\r\nx\r\n"), None);
    }
}
