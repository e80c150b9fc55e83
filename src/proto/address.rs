//! Mailbox paths of `MAIL FROM` and `RCPT TO` (RFC 5321 §4.1.2).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A mailbox `local-part@domain` as the client wrote it.
///
/// `local` keeps quotes when the client quoted it, so that forwarding it
/// upstream with `Display` gives back a valid path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// Local part, exactly as written (a quoted string stays quoted).
    pub local: String,
    /// Domain or address literal (`[192.0.2.1]`), exactly as written.
    pub domain: String,
}

/// The argument of `RCPT TO`: a mailbox, or the special `<postmaster>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// `<postmaster>` with no domain, which every server must accept (RFC 5321 §4.5.1).
    Postmaster,
    /// An ordinary mailbox.
    Mailbox(Mailbox),
}

impl Mailbox {
    /// The domain in a canonical form for comparisons (relay domains, rule
    /// sets): ASCII-lowercased, with one trailing dot removed.
    /// An internationalized domain (SMTPUTF8) is given in its A-label form
    /// (`xn--...`), so that it compares equal however it was written.
    pub fn domain_lowercase(&self) -> String {
        ascii_domain(&self.domain)
    }
}

/// A domain in the form domains are compared in: one trailing dot
/// removed, A-labels for internationalized labels (UTS 46, as browsers
/// and MTAs map them), ASCII lower case. A leading dot (a suffix pattern)
/// is kept; an address literal or a name that does not map is only
/// lower-cased.
pub fn ascii_domain(domain: &str) -> String {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    let (dot, name) = match d.strip_prefix('.') {
        Some(rest) => (".", rest),
        None => ("", d),
    };
    if name.is_ascii() || name.starts_with('[') {
        return d.to_ascii_lowercase();
    }
    match idna::domain_to_ascii(name) {
        Ok(a) => format!("{dot}{a}"),
        Err(_) => d.to_ascii_lowercase(),
    }
}

impl fmt::Display for Mailbox {
    /// `local@domain`, the form that goes between `<` and `>` on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Display for Recipient {
    /// `postmaster` or the mailbox, the form that goes between `<` and `>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Postmaster => f.write_str("postmaster"),
            Recipient::Mailbox(m) => m.fmt(f),
        }
    }
}

/// What a `<...>` path turned out to be; `MAIL` and `RCPT` each accept a
/// different subset, so the path parser reports all three.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// `<>`, the null reverse-path of bounces.
    Null,
    /// `<postmaster>` without a domain (any case).
    Postmaster,
    /// `<local@domain>`, after dropping any source route.
    Mailbox(Mailbox),
}

/// RFC 5321 §4.5.3.1.1.
const MAX_LOCAL: usize = 64;
/// RFC 5321 §4.5.3.1.2.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3, counting the angle brackets and source route.
const MAX_PATH: usize = 256;
/// RFC 1035 label limit.
const MAX_LABEL: usize = 63;

const BAD_SYNTAX: &str = "Bad address syntax";

/// Parses a path that starts at the `<` at the front of `s` and returns it
/// with the number of bytes up to and including the closing `>`.
///
/// The caller needs the length because a quoted local part may contain
/// spaces and `>`, so the end of the path cannot be found by a plain search.
/// `utf8` allows non-ASCII in the local part and domain (SMTPUTF8, RFC 6531);
/// the caller has already checked that `s` is valid UTF-8.
pub(crate) fn parse_path(s: &str, utf8: bool) -> Result<(Path, usize), &'static str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return Err(BAD_SYNTAX);
    }
    if b.get(1) == Some(&b'>') {
        return Ok((Path::Null, 2));
    }
    if b.len() >= 12 && b[1..11].eq_ignore_ascii_case(b"postmaster") && b[11] == b'>' {
        return Ok((Path::Postmaster, 12));
    }
    let mut i = 1;
    // Source route (RFC 5321 Appendix C): obsolete, must be accepted and ignored.
    if b.get(i) == Some(&b'@') {
        loop {
            i = parse_domain(b, i + 1, utf8)?;
            match b.get(i) {
                Some(b',') if b.get(i + 1) == Some(&b'@') => i += 1,
                Some(b':') => {
                    i += 1;
                    break;
                }
                _ => return Err(BAD_SYNTAX),
            }
        }
    }
    let local_start = i;
    i = if b.get(i) == Some(&b'"') {
        parse_quoted(b, i, utf8)?
    } else {
        parse_dot_string(b, i, utf8)?
    };
    if i - local_start > MAX_LOCAL {
        return Err("Local part too long");
    }
    let local_end = i;
    if b.get(i) != Some(&b'@') {
        return Err(BAD_SYNTAX);
    }
    i += 1;
    let domain_start = i;
    i = if b.get(i) == Some(&b'[') {
        parse_literal(b, i)?
    } else {
        parse_domain(b, i, utf8)?
    };
    if i - domain_start > MAX_DOMAIN {
        return Err("Domain too long");
    }
    let domain_end = i;
    if b.get(i) != Some(&b'>') {
        return Err(BAD_SYNTAX);
    }
    i += 1;
    if i > MAX_PATH {
        return Err("Address too long");
    }
    // All indices sit next to ASCII delimiters, so they are char boundaries.
    Ok((
        Path::Mailbox(Mailbox {
            local: s[local_start..local_end].to_owned(),
            domain: s[domain_start..domain_end].to_owned(),
        }),
        i,
    ))
}

/// `atext` of RFC 5322 §3.2.3, plus UTF-8 when SMTPUTF8 is on.
fn is_atext(c: u8, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || (utf8 && c >= 0x80)
}

/// A letter or digit, which must begin and end every domain label.
fn is_let_dig(c: u8, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || (utf8 && c >= 0x80)
}

/// Dot-string: atoms separated by single dots. Returns the end index.
fn parse_dot_string(b: &[u8], mut i: usize, utf8: bool) -> Result<usize, &'static str> {
    loop {
        let start = i;
        while b.get(i).is_some_and(|&c| is_atext(c, utf8)) {
            i += 1;
        }
        // An empty atom is a leading, trailing or doubled dot.
        if i == start {
            return Err(BAD_SYNTAX);
        }
        if b.get(i) != Some(&b'.') {
            return Ok(i);
        }
        i += 1;
    }
}

/// Quoted-string starting at the `"` at `i`. Returns the index after the closing quote.
fn parse_quoted(b: &[u8], mut i: usize, utf8: bool) -> Result<usize, &'static str> {
    i += 1;
    loop {
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(32..=126) => i += 2,
                _ => return Err(BAD_SYNTAX),
            },
            Some(&c) if (32..=126).contains(&c) || (utf8 && c >= 0x80) => i += 1,
            _ => return Err(BAD_SYNTAX),
        }
    }
}

/// Dot-separated domain of letter/digit/hyphen labels, one trailing dot
/// tolerated. Returns the end index.
fn parse_domain(b: &[u8], mut i: usize, utf8: bool) -> Result<usize, &'static str> {
    let mut labels = 0;
    loop {
        let start = i;
        if !b.get(i).is_some_and(|&c| is_let_dig(c, utf8)) {
            // A trailing dot after at least one label ends the domain.
            if labels > 0 {
                return Ok(i);
            }
            return Err(BAD_SYNTAX);
        }
        while b.get(i).is_some_and(|&c| is_let_dig(c, utf8) || c == b'-') {
            i += 1;
        }
        if b[i - 1] == b'-' || i - start > MAX_LABEL {
            return Err(BAD_SYNTAX);
        }
        labels += 1;
        if b.get(i) != Some(&b'.') {
            return Ok(i);
        }
        i += 1;
    }
}

/// Address literal `[IPv4]` or `[IPv6:...]` starting at the `[` at `i`.
/// Returns the index after the `]`.
fn parse_literal(b: &[u8], i: usize) -> Result<usize, &'static str> {
    const BAD: &str = "Bad address literal";
    let len = b[i..].iter().position(|&c| c == b']').ok_or(BAD)?;
    let inner = std::str::from_utf8(&b[i + 1..i + len]).map_err(|_| BAD)?;
    let ok = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    };
    if ok {
        Ok(i + len + 1)
    } else {
        Err(BAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(local: &str, domain: &str) -> Path {
        Path::Mailbox(Mailbox {
            local: local.into(),
            domain: domain.into(),
        })
    }

    #[test]
    fn valid_paths() {
        let cases: &[(&str, Path, usize)] = &[
            ("<>", Path::Null, 2),
            ("<postmaster>", Path::Postmaster, 12),
            ("<PostMaster> SIZE=1", Path::Postmaster, 12),
            ("<joe@example.com>", mb("joe", "example.com"), 17),
            (
                "<Joe.Q.Public@Example.COM.>",
                mb("Joe.Q.Public", "Example.COM."),
                27,
            ),
            (
                "<postmaster@example.com>",
                mb("postmaster", "example.com"),
                24,
            ),
            (
                "<\"john..doe\"@example.com>",
                mb("\"john..doe\"", "example.com"),
                25,
            ),
            ("<\"a >b\\\"c\"@x>", mb("\"a >b\\\"c\"", "x"), 13),
            (
                "<@a.example,@b.example:joe@c.example>",
                mb("joe", "c.example"),
                37,
            ),
            ("<@a.example:joe@c.example>", mb("joe", "c.example"), 26),
            ("<u@[192.0.2.1]>", mb("u", "[192.0.2.1]"), 15),
            ("<u@[IPv6:2001:db8::1]>", mb("u", "[IPv6:2001:db8::1]"), 22),
            ("<u@[ipv6:::1]>", mb("u", "[ipv6:::1]"), 14),
            (
                "<a+tag=x!#$%&'*/?^_`{|}~-@x-1.y2>",
                mb("a+tag=x!#$%&'*/?^_`{|}~-", "x-1.y2"),
                33,
            ),
        ];
        for (input, want, len) in cases {
            assert_eq!(
                parse_path(input, false),
                Ok((want.clone(), *len)),
                "{input}"
            );
        }
    }

    #[test]
    fn invalid_paths() {
        let long_local = format!("<{}@x>", "a".repeat(65));
        let long_label = format!("<a@{}.com>", "b".repeat(64));
        let long_domain = format!("<a@{}b>", "b.".repeat(128));
        let long_path = format!("<{}@{}b>", "a".repeat(60), "bcdefgh.".repeat(25));
        let cases = [
            "",
            "joe@x",
            "<joe>",
            "<joe@>",
            "<@x>",
            "<.joe@x>",
            "<joe.@x>",
            "<jo..e@x>",
            "<jo e@x>",
            "<joe@x",
            "<joe@-x>",
            "<joe@x-.y>",
            "<joe@x..y>",
            "<joe@.x>",
            "<joe@x_y>",
            "<\"unterminated@x>",
            "<\"bad\\\u{7f}\"@x>",
            "<joe@[300.1.1.1]>",
            "<joe@[IPv6:zz]>",
            "<joe@[x:1]>",
            "<joe@[192.0.2.1>",
            "<@a.example joe@x>",
            "<@a.example,b.example:joe@x>",
            "<@:joe@x>",
            "<postmaster >",
            "<jöe@x>",
            &long_local,
            &long_label,
            &long_domain,
            &long_path,
        ];
        for input in cases {
            assert!(parse_path(input, false).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn limits_at_the_edge_pass() {
        let local = format!("<{}@x>", "a".repeat(64));
        assert!(parse_path(&local, false).is_ok());
        let label = format!("<a@{}.com>", "b".repeat(63));
        assert!(parse_path(&label, false).is_ok());
    }

    #[test]
    fn utf8_only_with_smtputf8() {
        assert_eq!(
            parse_path("<jöe@exämple.de>", true),
            Ok((mb("jöe", "exämple.de"), 18))
        );
        assert!(parse_path("<jöe@example.de>", false).is_err());
    }

    #[test]
    fn idn_domains_compare_in_a_label_form() {
        assert_eq!(ascii_domain("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(
            ascii_domain("xn--bcher-kva.example"),
            "xn--bcher-kva.example"
        );
        assert_eq!(ascii_domain(".BÜCHER.example"), ".xn--bcher-kva.example");
        assert_eq!(ascii_domain("[192.0.2.1]"), "[192.0.2.1]");
    }

    #[test]
    fn display_and_domain_lowercase() {
        let m = Mailbox {
            local: "\"J D\"".into(),
            domain: "Example.COM.".into(),
        };
        assert_eq!(m.to_string(), "\"J D\"@Example.COM.");
        assert_eq!(m.domain_lowercase(), "example.com");
        assert_eq!(Recipient::Postmaster.to_string(), "postmaster");
        assert_eq!(Recipient::Mailbox(m).to_string(), "\"J D\"@Example.COM.");
    }
}
