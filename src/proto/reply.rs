//! SMTP replies: the formatter for our replies and the incremental parser
//! for the upstream's (RFC 5321 §4.2, enhanced codes RFC 3463).
//!
//! The same [`Reply`] type serves both directions, so the upstream's answer
//! to a RCPT or DATA can be passed on to the client unchanged (design
//! invariant 2, transparency).

use std::fmt;
use std::str::FromStr;

/// An enhanced status code `class.subject.detail` (RFC 3463), e.g. `5.7.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (transient) or 5 (permanent); matches the reply's first digit.
    pub class: u8,
    /// What the status is about (0..=999), e.g. 7 = security or policy.
    pub subject: u16,
    /// The detail within the subject (0..=999).
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code; `const` so that replies can be written as constants.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedCode {
    type Err = ReplyError;

    /// Parses `X.Y.Z` with X in {2, 4, 5} and Y, Z of 1 to 3 digits.
    fn from_str(s: &str) -> Result<Self, ReplyError> {
        const BAD: ReplyError = ReplyError::Malformed("invalid enhanced status code");
        let mut parts = s.split('.');
        let mut next = |max_digits: usize| -> Result<u16, ReplyError> {
            let p = parts.next().ok_or(BAD)?;
            if p.is_empty() || p.len() > max_digits || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(BAD);
            }
            p.parse().map_err(|_| BAD)
        };
        // class = "2" / "4" / "5"; subject and detail = 1*3digit.
        let (class, subject, detail) = (next(1)?, next(3)?, next(3)?);
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return Err(BAD);
        }
        Ok(EnhancedCode::new(class as u8, subject, detail))
    }
}

/// One SMTP reply, single- or multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 §4.2.1).
    pub code: u16,
    /// Enhanced status code written at the start of every line, when present.
    pub enhanced: Option<EnhancedCode>,
    /// Text lines without code or enhanced code; one wire line each.
    pub lines: Vec<String>,
}

impl Reply {
    /// One-line reply with an enhanced code, e.g. Reply::new(250, EnhancedCode::new(2,0,0), "OK").
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// Without an enhanced code (greeting 220, EHLO 250 lines, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A reply of several lines (EHLO keywords, long upstream texts).
    pub fn multiline(code: u16, enhanced: Option<EnhancedCode>, lines: Vec<String>) -> Self {
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// The first digit of the code.
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// 2xx: the command succeeded.
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// 3xx: go on (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        self.class() == 3
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// Appends the wire form: every line "CODE-" / last "CODE ", each line prefixed with the enhanced code when present, CRLF endings; CR/LF/control bytes inside text are replaced by spaces so a text can never inject a line; an empty reply has one line with just the code (and enhanced code).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        let last = lines.len() - 1;
        for (i, text) in lines.iter().enumerate() {
            let line_start = out.len();
            push_code(out, self.code);
            let bare = self.enhanced.is_none() && text.is_empty();
            if i < last {
                out.push(b'-');
            } else if !bare {
                out.push(b' ');
            }
            if let Some(e) = self.enhanced {
                push_num(out, u16::from(e.class));
                out.push(b'.');
                push_num(out, e.subject);
                out.push(b'.');
                push_num(out, e.detail);
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            // TAB is legal in reply text (RFC 5321 §4.2 textstring) and kept;
            // every other control byte could end or forge a line. Reply text
            // is ASCII without SMTPUTF8, so all of those become '?', one
            // byte per character, which also keeps a relayed line within
            // the length it arrived with.
            let room = MAX_TEXT.saturating_sub(out.len() - line_start);
            out.extend(text.chars().take(room).map(|c| match c {
                '\t' => b'\t',
                ' '..='~' => c as u8,
                // Not a space: a space could turn "2.5.6<ctl>x" into an
                // enhanced code the upstream never sent.
                _ => b'?',
            }));
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Lines joined with a space, for logs.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// Writes the code as three digits; codes are always 3 digits on the wire.
fn push_code(out: &mut Vec<u8>, code: u16) {
    let code = code.min(999);
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
}

/// Writes a number in decimal without allocating.
fn push_num(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl fmt::Display for Reply {
    /// "550 5.7.1 text text2" on one line, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// Why the upstream's reply could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Not an SMTP reply (bad code, bad separator, codes that differ between lines).
    Malformed(&'static str),
    /// A line or the whole reply exceeds the parser's bounds.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed(why) => write!(f, "malformed reply: {why}"),
            ReplyError::TooLong => f.write_str("reply too long"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Longest accepted reply line, line ending included (RFC 5321 says 512;
/// real servers exceed it, so we are lenient but bounded).
const MAX_LINE: usize = 1000;
/// Longest reply line we write, CRLF excluded: RFC 5321 §4.5.3.1.5 allows
/// 512 with CRLF; longer upstream texts are cut.
const MAX_TEXT: usize = 510;
/// Most lines in one reply (a long EHLO answer has about 20).
const MAX_LINES: usize = 200;

/// Parser for the upstream's replies; stateless apart from its bounds, so
/// it just reparses the buffer front on each call.
#[derive(Clone, Debug)]
pub struct ReplyParser {
    /// Longest line, line ending counted as 2 bytes.
    max_line: usize,
    /// Most lines in one reply.
    max_lines: usize,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyParser {
    /// A parser with the default bounds: 1000 bytes per line, 200 lines.
    pub fn new() -> Self {
        ReplyParser {
            max_line: MAX_LINE,
            max_lines: MAX_LINES,
        }
    }

    /// Parses one complete (possibly multi-line) reply at the front of `buf`: Ok(None) = need more bytes, Ok(Some((reply, consumed))).
    pub fn parse(&self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        let mut pos = 0;
        let mut code = 0u16;
        let mut texts: Vec<&[u8]> = Vec::new();
        loop {
            if texts.len() == self.max_lines {
                return Err(ReplyError::TooLong);
            }
            let rest = &buf[pos..];
            // Bounded search: a line ending past the limit is an error anyway.
            let window = &rest[..rest.len().min(self.max_line)];
            let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                let known = rest.len() - usize::from(rest.last() == Some(&b'\r'));
                if known + 2 > self.max_line {
                    return Err(ReplyError::TooLong);
                }
                return Ok(None);
            };
            let end = if lf > 0 && rest[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            if end + 2 > self.max_line {
                return Err(ReplyError::TooLong);
            }
            let line = &rest[..end];
            pos += lf + 1;

            let line_code = match line {
                [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
                }
                _ => return Err(ReplyError::Malformed("bad reply code")),
            };
            if texts.is_empty() {
                code = line_code;
            } else if line_code != code {
                return Err(ReplyError::Malformed("reply code changed between lines"));
            }
            let (more, text) = match line.get(3) {
                None => (false, &line[3..]),
                Some(b' ') => (false, &line[4..]),
                Some(b'-') => (true, &line[4..]),
                Some(_) => return Err(ReplyError::Malformed("bad separator after reply code")),
            };
            texts.push(text);
            if !more {
                break;
            }
        }

        let class = (code / 100) as u8;
        let enhanced = split_enhanced(texts[0])
            .filter(|(e, _)| e.class == class)
            .map(|(e, _)| e);
        let lines = texts
            .iter()
            .map(|&t| {
                let t = match (enhanced, split_enhanced(t)) {
                    (Some(want), Some((got, rest))) if want == got => rest,
                    _ => t,
                };
                String::from_utf8_lossy(t).into_owned()
            })
            .collect();
        Ok(Some((
            Reply {
                code,
                enhanced,
                lines,
            },
            pos,
        )))
    }
}

/// Splits `X.Y.Z` (followed by a space or the end) off the front of a text:
/// returns the code and the text after it and its space.
fn split_enhanced(text: &[u8]) -> Option<(EnhancedCode, &[u8])> {
    // The code is short; only look at its possible span.
    let len = text
        .iter()
        .take(12)
        .position(|&c| c == b' ')
        .unwrap_or(text.len());
    if len > 11 {
        return None;
    }
    let code = std::str::from_utf8(&text[..len]).ok()?.parse().ok()?;
    Some((code, text.get(len + 1..).unwrap_or(&[])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn written_text_is_ascii_and_within_the_line_limit() {
        let r = Reply::new(
            550,
            EnhancedCode::new(5, 1, 1),
            "M\u{fc}ller \u{fffd} unknown",
        );
        assert_eq!(r.to_bytes(), b"550 5.1.1 M?ller ? unknown\r\n");
        let long = Reply::plain(250, "x".repeat(3000));
        let wire = long.to_bytes();
        assert_eq!(
            wire.len(),
            512,
            "a reply line is at most 512 bytes with CRLF"
        );
        assert!(wire.ends_with(b"xx\r\n"));
    }

    #[test]
    fn enhanced_code_text() {
        assert_eq!(EnhancedCode::new(5, 7, 1).to_string(), "5.7.1");
        assert_eq!("4.4.1".parse(), Ok(EnhancedCode::new(4, 4, 1)));
        assert_eq!("2.999.0".parse(), Ok(EnhancedCode::new(2, 999, 0)));
        for bad in [
            "", "5", "5.7", "5.7.", "3.0.0", "5.7.1.1", "5.1000.1", "5.a.1", "5.+1.1", "05.1.1",
            " 5.1.1",
        ] {
            assert!(bad.parse::<EnhancedCode>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classes() {
        let r = |c| Reply::plain(c, "");
        assert!(r(250).is_positive() && r(354).is_intermediate());
        assert!(r(451).is_transient() && r(554).is_permanent());
        assert_eq!(r(421).class(), 4);
        assert!(!r(250).is_permanent());
    }

    #[test]
    fn formatting() {
        let e = EnhancedCode::new(2, 0, 0);
        let cases: Vec<(Reply, &str)> = vec![
            (Reply::new(250, e, "OK"), "250 2.0.0 OK\r\n"),
            (
                Reply::plain(220, "mx.example.com ESMTP"),
                "220 mx.example.com ESMTP\r\n",
            ),
            (
                Reply::plain(354, "End data with <CR><LF>.<CR><LF>"),
                "354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            (
                Reply::multiline(
                    250,
                    None,
                    vec![
                        "mx.example.com".into(),
                        "PIPELINING".into(),
                        "8BITMIME".into(),
                    ],
                ),
                "250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            ),
            (
                Reply::multiline(
                    550,
                    Some(EnhancedCode::new(5, 7, 1)),
                    vec!["Blocked".into(), "see policy".into()],
                ),
                "550-5.7.1 Blocked\r\n550 5.7.1 see policy\r\n",
            ),
            (Reply::multiline(250, None, vec![]), "250\r\n"),
            (Reply::multiline(250, Some(e), vec![]), "250 2.0.0\r\n"),
            (Reply::new(250, e, ""), "250 2.0.0\r\n"),
            (
                Reply::multiline(250, None, vec!["a".into(), "".into()]),
                "250-a\r\n250\r\n",
            ),
            (
                Reply::multiline(250, None, vec!["".into(), "b".into()]),
                "250-\r\n250 b\r\n",
            ),
            (
                Reply::new(550, EnhancedCode::new(5, 1, 10), "x\ty"),
                "550 5.1.10 x\ty\r\n",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(s(&reply.to_bytes()), want, "{reply:?}");
        }
    }

    #[test]
    fn text_cannot_inject_lines() {
        let r = Reply::new(
            550,
            EnhancedCode::new(5, 7, 1),
            "no\r\n250 2.0.0 yes\rx\ny\0z\x7f",
        );
        assert_eq!(s(&r.to_bytes()), "550 5.7.1 no??250 2.0.0 yes?x?y?z?\r\n");
        let r = Reply::multiline(250, None, vec!["a\r\n250 b".into(), "c".into()]);
        assert_eq!(s(&r.to_bytes()), "250-a??250 b\r\n250 c\r\n");
    }

    #[test]
    fn display_and_text() {
        let r = Reply::multiline(
            550,
            Some(EnhancedCode::new(5, 7, 1)),
            vec!["text".into(), "text2".into()],
        );
        assert_eq!(r.to_string(), "550 5.7.1 text text2");
        assert_eq!(r.text(), "text text2");
        assert_eq!(Reply::plain(354, "go").to_string(), "354 go");
    }

    fn parsed(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        ReplyParser::new().parse(input)
    }

    #[test]
    fn parsing() {
        let e250 = Some(EnhancedCode::new(2, 0, 0));
        let strings = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (input, code, enhanced code, lines, bytes used)
        type Case = (&'static [u8], u16, Option<EnhancedCode>, Vec<String>, usize);
        let cases: Vec<Case> = vec![
            (b"250 OK\r\n", 250, None, strings(&["OK"]), 8),
            (b"250 2.0.0 OK\r\n", 250, e250, strings(&["OK"]), 14),
            (b"250 2.0.0\r\n", 250, e250, strings(&[""]), 11),
            (b"250\r\n", 250, None, strings(&[""]), 5),
            (b"250 \r\n", 250, None, strings(&[""]), 6),
            (b"220 mx ESMTP\nnext", 220, None, strings(&["mx ESMTP"]), 13),
            (
                b"250-mx.example.com\r\n250-SIZE 1000\r\n250 HELP\r\nMORE",
                250,
                None,
                strings(&["mx.example.com", "SIZE 1000", "HELP"]),
                45,
            ),
            (
                b"550-5.1.1 No such\r\n550-user here\r\n550 5.1.1 Bye\r\n",
                550,
                Some(EnhancedCode::new(5, 1, 1)),
                strings(&["No such", "user here", "Bye"]),
                49,
            ),
            // Class of the enhanced code must match the reply code.
            (b"250 5.0.0 odd\r\n", 250, None, strings(&["5.0.0 odd"]), 15),
            // Not an enhanced code unless followed by a space or the end.
            (b"250 2.0.0.1 x\r\n", 250, None, strings(&["2.0.0.1 x"]), 15),
            (b"250 2.0.0x\r\n", 250, None, strings(&["2.0.0x"]), 12),
            // A different code on a later line stays in the text.
            (
                b"451-4.4.1 a\r\n451 4.7.0 b\r\n",
                451,
                Some(EnhancedCode::new(4, 4, 1)),
                strings(&["a", "4.7.0 b"]),
                26,
            ),
            (
                b"250 caf\xc3\xa9 \xff\r\n",
                250,
                None,
                strings(&["café \u{fffd}"]),
                13,
            ),
            (b"250-\r\n250 x\r\n", 250, None, strings(&["", "x"]), 13),
        ];
        for (input, code, enhanced, lines, used) in cases {
            let want = Reply {
                code,
                enhanced,
                lines,
            };
            assert_eq!(
                parsed(input),
                Ok(Some((want, used))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn need_more() {
        for input in [
            &b""[..],
            b"2",
            b"250",
            b"250 OK",
            b"250 OK\r",
            b"250-a\r\n",
            b"250-a\r\n250 b",
        ] {
            assert_eq!(parsed(input), Ok(None), "{input:?}");
        }
    }

    #[test]
    fn malformed() {
        for input in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"150 too low\r\n",
            b"600 too high\r\n",
            b"25 short\r\n",
            b"\r\n",
            b"2x0 x\r\n",
            b"250_x\r\n",
            b"250-a\r\n251 b\r\n",
            b"250-a\r\n550 b\r\n",
            b"250-a\r\ngarbage\r\n",
        ] {
            assert!(
                matches!(parsed(input), Err(ReplyError::Malformed(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn bounds() {
        let long = format!("250 {}\r\n", "x".repeat(995));
        assert_eq!(parsed(long.as_bytes()), Err(ReplyError::TooLong));
        let fits = format!("250 {}\r\n", "x".repeat(994));
        assert!(matches!(parsed(fits.as_bytes()), Ok(Some(_))));
        // Known to be too long before its end arrives.
        assert_eq!(
            parsed("x".repeat(1000).as_bytes()),
            Err(ReplyError::TooLong)
        );
        let many = "250-x\r\n".repeat(200);
        assert_eq!(parsed(many.as_bytes()), Err(ReplyError::TooLong));
        let most = format!("{}250 x\r\n", "250-x\r\n".repeat(199));
        assert!(matches!(parsed(most.as_bytes()), Ok(Some(_))));
    }

    /// Reply lines, mostly valid, sometimes not, to exercise every path.
    fn reply_line() -> impl Strategy<Value = Vec<u8>> {
        let text = "[a-z0-9 .]{0,12}";
        prop_oneof![
            4 => (prop_oneof![Just("250"), Just("550")], prop_oneof![Just("-"), Just(" "), Just("")], text)
                .prop_map(|(c, sep, t)| format!("{c}{sep}{t}").into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
        ]
        .prop_flat_map(|l| (Just(l), prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..])]))
        .prop_map(|(mut l, end)| {
            l.extend_from_slice(end);
            l
        })
    }

    /// Texts the round trip must survive: no control bytes, and not looking
    /// like an enhanced code at the front (that would be read as one).
    fn sane_text() -> impl Strategy<Value = String> {
        "([A-Za-z<>@\\[\\]][ -~]{0,40})?"
    }

    proptest! {
        #[test]
        fn growing_prefixes_agree_with_whole(
            lines in proptest::collection::vec(reply_line(), 1..6),
        ) {
            let input = lines.concat();
            let p = ReplyParser::new();
            let whole = p.parse(&input);
            let mut seen_answer = false;
            for k in 0..=input.len() {
                let got = p.parse(&input[..k]);
                if got == Ok(None) {
                    prop_assert!(!seen_answer, "answer lost at prefix {}", k);
                    continue;
                }
                seen_answer = true;
                prop_assert_eq!(&got, &whole, "prefix {}", k);
                if let Ok(Some((_, used))) = &got {
                    // A reply is complete exactly when its last line ends.
                    prop_assert!(*used <= k);
                }
            }
        }

        #[test]
        fn write_then_parse_round_trips(
            code in 200u16..600,
            with_enhanced in any::<bool>(),
            subject in 0u16..1000,
            detail in 0u16..1000,
            lines in proptest::collection::vec(sane_text(), 1..5),
            trailer in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            // Enhanced codes exist for classes 2, 4 and 5 only.
            let enhanced = (with_enhanced && code / 100 != 3).then(|| EnhancedCode::new((code / 100) as u8, subject, detail));
            let reply = Reply::multiline(code, enhanced, lines);
            let mut wire = reply.to_bytes();
            let len = wire.len();
            wire.extend_from_slice(&trailer);
            prop_assert_eq!(ReplyParser::new().parse(&wire), Ok(Some((reply, len))));
        }
    }
}
