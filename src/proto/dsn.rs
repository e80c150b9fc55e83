//! DSN parameters (RFC 3461): `RET=` and `ENVID=` on MAIL, `NOTIFY=` and
//! `ORCPT=` on RCPT. They are passed upstream as written, so only their
//! syntax is checked here: a malformed one is refused before it can reach
//! the upstream.

/// `xtext` (RFC 3461 §4): printable ASCII except `+` and `=`, with `+XX`
/// (two upper-case hex digits) for anything else.
pub fn is_xtext(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = |b: Option<&u8>| {
                    b.is_some_and(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                };
                if !(hex(bytes.get(i + 1)) && hex(bytes.get(i + 2))) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            b'!'..=b'~' => i += 1,
            _ => return false,
        }
    }
    true
}

/// `RET=FULL` or `RET=HDRS`, in any case.
pub fn is_ret(value: &str) -> bool {
    value.eq_ignore_ascii_case("FULL") || value.eq_ignore_ascii_case("HDRS")
}

/// `ENVID=`: xtext of at most 100 characters (RFC 3461 §4.4).
pub fn is_envid(value: &str) -> bool {
    !value.is_empty() && value.len() <= 100 && is_xtext(value)
}

/// `NOTIFY=NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY`, each
/// at most once (RFC 3461 §4.1).
pub fn is_notify(value: &str) -> bool {
    if value.eq_ignore_ascii_case("NEVER") {
        return true;
    }
    let mut seen = [false; 3];
    for word in value.split(',') {
        let i = match word.to_ascii_uppercase().as_str() {
            "SUCCESS" => 0,
            "FAILURE" => 1,
            "DELAY" => 2,
            _ => return false,
        };
        if std::mem::replace(&mut seen[i], true) {
            return false;
        }
    }
    true
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2): an atom such as `rfc822`, a
/// semicolon, a non-empty xtext; at most 500 characters.
pub fn is_orcpt(value: &str) -> bool {
    let Some((kind, addr)) = value.split_once(';') else {
        return false;
    };
    let atom = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c);
    value.len() <= 500
        && !kind.is_empty()
        && kind.bytes().all(atom)
        && !addr.is_empty()
        && is_xtext(addr)
}

/// Fuzz invariant: the checks never panic, and what passes is printable
/// ASCII without spaces (it cannot split or end the command it rides on).
pub fn selfcheck(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for ok in [
        is_xtext(text),
        is_envid(text),
        is_orcpt(text),
        is_notify(text),
        is_ret(text),
    ] {
        if ok {
            assert!(text.bytes().all(|b| (b'!'..=b'~').contains(&b)), "{text:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_and_parameters() {
        assert!(is_xtext("abc+2Bdef"));
        assert!(is_xtext(""));
        assert!(!is_xtext("a+2b"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a b"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("é"));
        assert!(is_ret("hdrs") && is_ret("FULL") && !is_ret("ALL"));
        assert!(is_envid("QQ314159") && !is_envid("") && !is_envid(&"x".repeat(101)));
        assert!(is_notify("NEVER") && is_notify("success,delay") && is_notify("FAILURE"));
        assert!(!is_notify("NEVER,SUCCESS") && !is_notify("SUCCESS,SUCCESS") && !is_notify(""));
        assert!(is_orcpt("rfc822;bob+40example.com") && is_orcpt("utf-8;b+C3+A9"));
        assert!(
            !is_orcpt("rfc822")
                && !is_orcpt(";x")
                && !is_orcpt("rfc822;")
                && !is_orcpt("rfc 822;x")
        );
    }
}
