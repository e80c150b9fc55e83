//! The `Authentication-Results` header (RFC 8601): reading the
//! authserv-id of headers already in a message, removing the ones that
//! claim to be ours, and writing ours from the facts the checks found.
//!
//! Removal matters: a sender could otherwise write
//! `Authentication-Results: <our id>; dmarc=pass` and have it trusted
//! downstream (RFC 8601 §5). Other servers' headers stay untouched.

use crate::facts::{Facts, Value};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The header's name.
pub const NAME: &str = "Authentication-Results";

/// The authserv-id of an `Authentication-Results` value (what follows the
/// colon, folding included): the first `value` (RFC 2045 token or quoted
/// string) after any comments and white space (RFC 8601 §2.2). `None`
/// when there is none (an empty or malformed header).
pub fn authserv_id(value: &[u8]) -> Option<String> {
    let mut i = skip_cfws(value, 0)?;
    let first = *value.get(i)?;
    if first == b'"' {
        let mut out = Vec::new();
        i += 1;
        loop {
            match *value.get(i)? {
                b'"' => break,
                b'\\' => {
                    out.push(*value.get(i + 1)?);
                    i += 2;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        return String::from_utf8(out).ok();
    }
    let start = i;
    while value.get(i).is_some_and(|b| is_token(*b)) {
        i += 1;
    }
    if i == start {
        return None;
    }
    String::from_utf8(value[start..i].to_vec()).ok()
}

/// RFC 2045 token characters (no specials, no space, no controls), with
/// UTF-8 bytes allowed (RFC 8601 §2.2 permits U-labels).
fn is_token(b: u8) -> bool {
    b >= 0x80 || (b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// Past white space, folding and (nested) comments from `i`; `None` when
/// a comment does not close.
fn skip_cfws(v: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while let Some(&b) = v.get(i) {
        match b {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => return Some(i),
        }
        i += 1;
    }
    (depth == 0).then_some(i)
}

/// `message` without the `Authentication-Results` header fields whose
/// authserv-id is `id` (compared without case), or `None` when it has
/// none. Only the header section is looked at; the body is kept byte for
/// byte.
pub fn strip_ours(message: &[u8], id: &str) -> Option<Vec<u8>> {
    let mut drop: Vec<(usize, usize)> = Vec::new();
    for (start, end, name, value) in fields(message) {
        if name.eq_ignore_ascii_case(NAME.as_bytes())
            && authserv_id(value).is_some_and(|v| v.eq_ignore_ascii_case(id))
        {
            drop.push((start, end));
        }
    }
    if drop.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for (start, end) in drop {
        out.extend_from_slice(&message[at..start]);
        at = end;
    }
    out.extend_from_slice(&message[at..]);
    Some(out)
}

/// The header fields of `message` as (start, end, name, value) with end
/// past the field's last line end; stops at the empty line that ends the
/// header section, or at a line that is no header field.
fn fields(message: &[u8]) -> Vec<(usize, usize, &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let line_end = |from: usize| {
            memchr::memchr(b'\n', &message[from..]).map_or(message.len(), |n| from + n + 1)
        };
        let first = &message[at..line_end(at)];
        if first == b"\r\n" || first == b"\n" {
            break;
        }
        let Some(colon) = memchr::memchr(b':', first) else {
            break;
        };
        let name = &first[..colon];
        if name.is_empty() || name.iter().any(|b| !(33..=126).contains(b)) {
            break;
        }
        let mut end = line_end(at);
        while matches!(message.get(end), Some(b' ' | b'\t')) {
            end = line_end(end);
        }
        out.push((at, end, name, &message[at + colon + 1..end]));
        at = end;
    }
    out
}

/// What the header is about besides the facts: who connected and said
/// what.
pub struct Envelope<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO name.
    pub helo: Option<&'a str>,
    /// The MAIL FROM address; `None` for `<>`.
    pub mail_from: Option<String>,
}

/// Our `Authentication-Results` header, folded, ending in CRLF: one
/// result per method whose facts are known (iprev, spf, dkim, arc,
/// dmarc), or `none` when no method ran.
pub fn header(id: &str, facts: &Facts, env: &Envelope<'_>) -> String {
    let text = |name: &str| facts.get(name).map(Value::to_string);
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = text("iprev") {
        parts.push(format!("iprev={} policy.iprev={}", word(&r), env.ip));
    }
    let helo = env.helo.unwrap_or("");
    if let Some(r) = text("spf.mailfrom") {
        let who = match &env.mail_from {
            Some(a) => pvalue(a),
            None => pvalue(&format!("postmaster@{helo}")),
        };
        parts.push(format!("spf={} smtp.mailfrom={who}", word(&r)));
    }
    if let (Some(r), Some(_), false) = (text("spf.helo"), &env.mail_from, helo.is_empty()) {
        parts.push(format!("spf={} smtp.helo={}", word(&r), pvalue(helo)));
    }
    match facts.get("dkim.signatures").map(Value::texts) {
        Some(sigs) if facts.get("dkim").is_some_and(|v| v.to_string() != "none") => {
            for s in sigs {
                parts.push(dkim_result(&s));
            }
        }
        Some(_) => parts.push("dkim=none".to_string()),
        None => {}
    }
    if let Some(r) = text("arc") {
        let mut p = format!("arc={}", word(&r));
        if let Some(s) = text("arc.sealer").filter(|s| s != "none") {
            let _ = write!(p, " (sealer {})", comment(&s));
        }
        let _ = write!(p, " smtp.remote-ip={}", env.ip);
        parts.push(p);
    }
    if let Some(r) = text("dmarc") {
        let mut p = format!("dmarc={}", word(&r));
        if let Some(why) = text("dmarc.reason").filter(|w| w != "temperror") {
            let _ = write!(p, " ({})", comment(&why));
        }
        if let Some(d) = text("dmarc.from").filter(|d| d != "none" && d != "temperror") {
            let _ = write!(p, " header.from={}", pvalue(&d));
        }
        if let Some(pol) = text("dmarc.policy").filter(|p| p != "temperror") {
            let _ = write!(p, " policy.dmarc={}", word(&pol));
        }
        parts.push(p);
    }
    if parts.is_empty() {
        parts.push("none".to_string());
    }
    let mut out = format!("{NAME}: {id}");
    for p in parts {
        let _ = write!(out, ";\r\n\t{p}");
    }
    out.push_str("\r\n");
    out
}

/// A `dkim=` result from one `dkim.signatures` entry
/// (`pass d=example.com s=sel a=rsa-sha256 aligned l=10`).
fn dkim_result(entry: &str) -> String {
    let mut words = entry.split(' ');
    let mut out = format!("dkim={}", word(words.next().unwrap_or("none")));
    let mut tail = String::new();
    for w in words {
        match w.split_once('=') {
            Some(("d", v)) => {
                let _ = write!(out, " header.d={}", pvalue(v));
            }
            Some(("s", v)) => {
                let _ = write!(out, " header.s={}", pvalue(v));
            }
            Some(("a", v)) => {
                let _ = write!(out, " header.a={}", pvalue(v));
            }
            Some(("l", v)) => {
                let _ = write!(tail, " (body length limit l={})", comment(v));
            }
            _ => {}
        }
    }
    out.push_str(&tail);
    out
}

/// A result keyword: a fact's value is ours, but keep it a bare word.
fn word(s: &str) -> String {
    let w: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if w.is_empty() {
        "none".to_string()
    } else {
        w
    }
}

/// A property value (RFC 8601 `pvalue`): bare when it is an address or a
/// token, else a quoted string.
fn pvalue(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.@".contains(&b) || b >= 0x80
        });
    if bare {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Text safe inside a comment: no parentheses, backslashes or controls.
fn comment(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\'))
        .collect()
}

/// The invariants of the header parser on any input, for the fuzz target
/// and the seed replay test: nothing panics; removal only shortens the
/// message, removes every header it matched (running it again finds
/// none) and never touches what follows the header section; the header we
/// write reads back with our id.
pub fn selfcheck(data: &[u8]) {
    let _ = authserv_id(data);
    let mut ids = vec!["mx.example.com".to_string()];
    if let Some((_, _, _, value)) = fields(data).first() {
        ids.extend(authserv_id(value));
    }
    for id in ids {
        if let Some(out) = strip_ours(data, &id) {
            assert!(out.len() < data.len());
            assert_eq!(strip_ours(&out, &id), None, "removal is complete");
            let rest = |m: &[u8]| fields(m).last().map_or(0, |f| f.1);
            assert_eq!(&out[rest(&out)..], &data[rest(data)..]);
        }
    }
    let text = String::from_utf8_lossy(data);
    let facts = {
        let mut f = Facts::new();
        f.set(
            "dmarc.reason",
            Value::text(text.clone()),
            crate::facts::Scope::Transaction,
        );
        f.set(
            "dmarc",
            Value::text(text.clone()),
            crate::facts::Scope::Transaction,
        );
        f
    };
    let env = Envelope {
        ip: IpAddr::from([192, 0, 2, 1]),
        helo: Some(&text),
        mail_from: Some(text.to_string()),
    };
    let h = header("mx.example.com", &facts, &env);
    let value = h.split_once(':').map_or("", |(_, v)| v);
    assert_eq!(
        authserv_id(value.as_bytes()).as_deref(),
        Some("mx.example.com")
    );
    assert_eq!(fields(h.as_bytes()).len(), 1, "one header field: {h:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Scope;

    #[test]
    fn the_authserv_id_is_found_past_comments_and_folding() {
        assert_eq!(
            authserv_id(b" mx.example.com; spf=pass\r\n").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(
            authserv_id(b" (a (nested) comment)\r\n\tMX.Example.com (x); none\r\n").as_deref(),
            Some("MX.Example.com")
        );
        assert_eq!(
            authserv_id(b" \"mx.example.com\"; none").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(
            authserv_id(b" mx.example.com 1; none").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(authserv_id(b" (unclosed mx.example.com"), None);
        assert_eq!(authserv_id(b"   "), None);
        assert_eq!(authserv_id(b" ; spf=pass"), None);
    }

    #[test]
    fn only_our_headers_are_removed_and_the_body_is_kept() {
        let msg = b"Authentication-Results: MX.example.com;\r\n\tdmarc=pass\r\n\
From: a@example.org\r\n\
Authentication-Results: other.example; spf=fail\r\n\
authentication-results: (forged) mx.example.com; dkim=pass\r\n\
Subject: hi\r\n\r\n\
Authentication-Results: mx.example.com; body line\r\n";
        let out = strip_ours(msg, "mx.example.com").expect("removed");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@example.org\r\n\
Authentication-Results: other.example; spf=fail\r\n\
Subject: hi\r\n\r\n\
Authentication-Results: mx.example.com; body line\r\n"
        );
        assert_eq!(strip_ours(b"From: a@b\r\n\r\nbody", "mx.example.com"), None);
    }

    #[test]
    fn the_header_carries_every_known_result() {
        let mut f = Facts::new();
        let t = Scope::Transaction;
        f.set("spf.mailfrom", Value::text("pass"), t);
        f.set("spf.helo", Value::text("none"), t);
        f.set("dkim", Value::text("pass"), t);
        f.set(
            "dkim.signatures",
            Value::List(vec![
                "pass d=example.com s=sel a=rsa-sha256 aligned l=10".into(),
                "fail d=other.example s=x a=ed25519-sha256 unaligned".into(),
            ]),
            t,
        );
        f.set("dmarc", Value::text("pass"), t);
        f.set("dmarc.reason", Value::text("dkim aligned"), t);
        f.set("dmarc.from", Value::text("example.com"), t);
        f.set("dmarc.policy", Value::text("reject"), t);
        let env = Envelope {
            ip: "192.0.2.7".parse().unwrap(),
            helo: Some("mail.example.com"),
            mail_from: Some("user@example.com".into()),
        };
        let h = header("mx.test", &f, &env);
        assert_eq!(
            h,
            "Authentication-Results: mx.test;\r\n\
\tspf=pass smtp.mailfrom=user@example.com;\r\n\
\tspf=none smtp.helo=mail.example.com;\r\n\
\tdkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 (body length limit l=10);\r\n\
\tdkim=fail header.d=other.example header.s=x header.a=ed25519-sha256;\r\n\
\tdmarc=pass (dkim aligned) header.from=example.com policy.dmarc=reject\r\n"
        );
        assert_eq!(
            authserv_id(h.split_once(':').unwrap().1.as_bytes()).as_deref(),
            Some("mx.test")
        );
        assert_eq!(
            header("mx.test", &Facts::new(), &env),
            "Authentication-Results: mx.test;\r\n\tnone\r\n"
        );
    }

    #[test]
    fn odd_values_are_quoted() {
        assert_eq!(pvalue("a b@example.com"), "\"a b@example.com\"");
        assert_eq!(pvalue("x\"y"), "\"x\\\"y\"");
        assert_eq!(word("pass;x=1"), "passx1");
    }
}
