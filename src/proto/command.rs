//! Client command parser (RFC 5321 §4.1, RFC 1869 parameters).
//!
//! [`parse_command`] takes one command line (without its line ending, as
//! [`LineReader`](super::LineReader) yields it) and returns a typed
//! [`Command`] or a [`CommandError`] that tells the session which 5xx to send.

use std::fmt;

use super::address::{parse_path, Path};
use super::{Mailbox, Recipient};

/// One ESMTP parameter of `MAIL` or `RCPT` (`SIZE=1000`, `BODY=8BITMIME`, `SMTPUTF8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Keyword, ASCII-uppercased so that lookups need not care about case.
    pub keyword: String,
    /// Value after `=`, as written; `None` for a bare keyword.
    pub value: Option<String>,
}

impl fmt::Display for Param {
    /// The wire form `KEY` or `KEY=VALUE`, for forwarding upstream.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.keyword, v),
            None => f.write_str(&self.keyword),
        }
    }
}

/// A parsed client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`: the client's name (first token, unchecked beyond that).
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail {
        /// Reverse-path; `None` is the null sender `<>` of bounces.
        from: Option<Mailbox>,
        /// ESMTP parameters, keywords uppercased, no duplicates.
        params: Vec<Param>,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// Forward-path.
        to: Recipient,
        /// ESMTP parameters, keywords uppercased, no duplicates.
        params: Vec<Param>,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030): `size` octets of message follow the line.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// This chunk ends the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP` (any argument is ignored, RFC 5321 §4.1.1.9).
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// SASL mechanism name, ASCII-uppercased.
        mechanism: String,
        /// Base64 initial response (or `=` for an empty one), as written.
        initial_response: Option<String>,
    },
}

impl Command {
    /// The verb in upper case, for logs and metrics.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Help(_) => "HELP",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

/// Why a command line was refused; the session picks the reply code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The verb is not one we know → the server answers 500 5.5.2.
    Unknown,
    /// A known verb with bad arguments → 501 5.5.4; the str says what is wrong, e.g. "Syntax: MAIL FROM:<address>".
    Syntax(&'static str),
    /// A NUL byte in the line.
    NulByte,
    /// A byte >= 0x80 while SMTPUTF8 is not in use (or invalid UTF-8 when it is).
    EightBit,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown => f.write_str("Command unrecognized"),
            CommandError::Syntax(s) => f.write_str(s),
            CommandError::NulByte => f.write_str("NUL byte in command"),
            CommandError::EightBit => f.write_str("8-bit data in command"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Parses one command line (no line ending).
///
/// `smtputf8` is true when the client asked for SMTPUTF8 on this
/// transaction's `MAIL` (or, for `MAIL` itself, when the session has
/// advertised it): only then may the line carry UTF-8.
pub fn parse_command(line: &[u8], smtputf8: bool) -> Result<Command, CommandError> {
    // NUL first: it is the most suspicious byte and gets its own reply.
    if line.contains(&0) {
        return Err(CommandError::NulByte);
    }
    if !smtputf8 && !line.is_ascii() {
        return Err(CommandError::EightBit);
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::EightBit)?;
    // A bare CR or other control byte would let a line smuggle something;
    // TAB is let through here and refused below except in free text.
    if line.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f) {
        return Err(CommandError::Syntax("Invalid character in command"));
    }
    let line = line.trim_matches(is_blank);
    let (verb, arg) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_start_matches(is_blank)),
        None => (line, ""),
    };
    let Some(&verb) = VERBS.iter().find(|v| verb.eq_ignore_ascii_case(v)) else {
        return Err(CommandError::Unknown);
    };
    // Free text (a user name to verify, a help topic) may hold TABs; any
    // other argument is made of tokens where a TAB has no business.
    let free_text = matches!(verb, "HELP" | "NOOP" | "VRFY" | "EXPN");
    if !free_text && arg.contains('\t') {
        return Err(CommandError::Syntax("Invalid character in command"));
    }

    match verb {
        "EHLO" | "HELO" => {
            let name = arg.split(' ').next().unwrap_or("");
            match (verb, name.is_empty()) {
                ("EHLO", true) => Err(CommandError::Syntax("Syntax: EHLO hostname")),
                (_, true) => Err(CommandError::Syntax("Syntax: HELO hostname")),
                ("EHLO", false) => Ok(Command::Ehlo(name.to_owned())),
                (_, false) => Ok(Command::Helo(name.to_owned())),
            }
        }
        "MAIL" => {
            const SYNTAX: &str = "Syntax: MAIL FROM:<address>";
            let (path, params) = path_and_params(arg, "FROM:", SYNTAX, smtputf8)?;
            let from = match path {
                Path::Null => None,
                Path::Mailbox(m) => Some(m),
                // A bare `postmaster` is only meaningful as a recipient.
                Path::Postmaster => return Err(CommandError::Syntax("Bad sender address syntax")),
            };
            Ok(Command::Mail { from, params })
        }
        "RCPT" => {
            const SYNTAX: &str = "Syntax: RCPT TO:<address>";
            let (path, params) = path_and_params(arg, "TO:", SYNTAX, smtputf8)?;
            let to = match path {
                Path::Null => return Err(CommandError::Syntax("Null recipient not allowed")),
                Path::Mailbox(m) => Recipient::Mailbox(m),
                Path::Postmaster => Recipient::Postmaster,
            };
            Ok(Command::Rcpt { to, params })
        }
        "DATA" => no_arg(arg, Command::Data, "Syntax: DATA (no arguments)"),
        "BDAT" => parse_bdat(arg),
        "RSET" => no_arg(arg, Command::Rset, "Syntax: RSET (no arguments)"),
        "QUIT" => no_arg(arg, Command::Quit, "Syntax: QUIT (no arguments)"),
        "STARTTLS" => no_arg(arg, Command::StartTls, "Syntax: STARTTLS (no arguments)"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help((!arg.is_empty()).then(|| arg.to_owned()))),
        "VRFY" if arg.is_empty() => Err(CommandError::Syntax("Syntax: VRFY string")),
        "VRFY" => Ok(Command::Vrfy(arg.to_owned())),
        "EXPN" if arg.is_empty() => Err(CommandError::Syntax("Syntax: EXPN string")),
        "EXPN" => Ok(Command::Expn(arg.to_owned())),
        _ => parse_auth(arg),
    }
}

/// Every verb we know; anything else is `CommandError::Unknown`.
const VERBS: [&str; 14] = [
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "HELP", "VRFY", "EXPN",
    "STARTTLS", "AUTH", "BDAT",
];

/// `BDAT SP chunk-size [SP end-marker]` (RFC 3030 §2): a size of 1 to 20
/// digits that fits 64 bits, then optionally `LAST` in any case.
fn parse_bdat(arg: &str) -> Result<Command, CommandError> {
    const SYNTAX: &str = "Syntax: BDAT size [LAST]";
    let mut words = arg.split(' ');
    let size = words.next().unwrap_or("");
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax(SYNTAX));
    }
    let size = size.parse().map_err(|_| CommandError::Syntax(SYNTAX))?;
    let last = match (words.next(), words.next()) {
        (None, _) => false,
        (Some(w), None) if w.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(CommandError::Syntax(SYNTAX)),
    };
    Ok(Command::Bdat { size, last })
}

/// Space or TAB, the blanks tolerated around a command.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Commands without arguments refuse one rather than ignore it, so a client
/// that expects some other meaning hears about it.
fn no_arg(arg: &str, cmd: Command, msg: &'static str) -> Result<Command, CommandError> {
    if arg.is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::Syntax(msg))
    }
}

/// The shared shape of `MAIL` and `RCPT`: `KEYWORD:<path>[ SP params]`.
fn path_and_params(
    arg: &str,
    keyword: &str,
    syntax: &'static str,
    smtputf8: bool,
) -> Result<(Path, Vec<Param>), CommandError> {
    let rest = match arg.get(..keyword.len()) {
        Some(k) if k.eq_ignore_ascii_case(keyword) => &arg[keyword.len()..],
        _ => return Err(CommandError::Syntax(syntax)),
    };
    // Many clients write `MAIL FROM: <a@b>`; RFC 5321 §4.1.2 forbids it but
    // refusing it helps nobody.
    let rest = rest.trim_start_matches(' ');
    if !rest.starts_with('<') {
        return Err(CommandError::Syntax(syntax));
    }
    let (path, used) = parse_path(rest, smtputf8).map_err(CommandError::Syntax)?;
    let rest = &rest[used..];
    let params = if rest.is_empty() {
        Vec::new()
    } else if let Some(p) = rest.strip_prefix(' ') {
        parse_params(p, smtputf8)?
    } else {
        return Err(CommandError::Syntax(syntax));
    };
    Ok((path, params))
}

/// ESMTP parameters `KEY[=VALUE]` separated by spaces (RFC 5321 §4.1.2).
fn parse_params(s: &str, smtputf8: bool) -> Result<Vec<Param>, CommandError> {
    const BAD: CommandError = CommandError::Syntax("Bad parameter syntax");
    let mut params: Vec<Param> = Vec::new();
    for item in s.split(' ').filter(|t| !t.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        let kb = key.as_bytes();
        let key_ok = kb.first().is_some_and(u8::is_ascii_alphanumeric)
            && kb.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-');
        // esmtp-value = 1*(%d33-60 / %d62-126), widened to UTF-8 by RFC 6531.
        let value_ok = value.is_none_or(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|c| ((33..=126).contains(&c) && c != b'=') || (smtputf8 && c >= 0x80))
        });
        if !key_ok || !value_ok {
            return Err(BAD);
        }
        let keyword = key.to_ascii_uppercase();
        if params.iter().any(|p| p.keyword == keyword) {
            return Err(CommandError::Syntax("Duplicate parameter"));
        }
        params.push(Param {
            keyword,
            value: value.map(str::to_owned),
        });
    }
    Ok(params)
}

/// `AUTH mechanism [initial-response]` (RFC 4954 §4).
fn parse_auth(arg: &str) -> Result<Command, CommandError> {
    const SYNTAX: CommandError = CommandError::Syntax("Syntax: AUTH mechanism [initial-response]");
    let mut tokens = arg.split(' ').filter(|t| !t.is_empty());
    let mechanism = tokens.next().ok_or(SYNTAX)?;
    let initial = tokens.next();
    if tokens.next().is_some() {
        return Err(SYNTAX);
    }
    // sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_"), matched case-insensitively.
    if mechanism.len() > 20
        || !mechanism
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(SYNTAX);
    }
    if initial.is_some_and(|r| !r.is_ascii()) {
        return Err(SYNTAX);
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response: initial.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn param(k: &str, v: Option<&str>) -> Param {
        Param {
            keyword: k.into(),
            value: v.map(Into::into),
        }
    }

    fn ok(line: &str) -> Command {
        match parse_command(line.as_bytes(), false) {
            Ok(c) => c,
            Err(e) => panic!("{line:?} refused: {e:?}"),
        }
    }

    #[test]
    fn bdat_sizes_and_last() {
        assert_eq!(
            ok("BDAT 0"),
            Command::Bdat {
                size: 0,
                last: false
            }
        );
        assert_eq!(
            ok("bdat 1024 last"),
            Command::Bdat {
                size: 1024,
                last: true
            }
        );
        assert_eq!(
            ok("BDAT 18446744073709551615 LAST"),
            Command::Bdat {
                size: u64::MAX,
                last: true
            }
        );
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT +5",
            "BDAT 18446744073709551616",
            "BDAT 5 NOW",
            "BDAT 5 LAST x",
        ] {
            assert!(
                matches!(
                    parse_command(bad.as_bytes(), false),
                    Err(CommandError::Syntax(_))
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn simple_verbs() {
        let cases: Vec<(&str, Command)> = vec![
            (
                "EHLO mail.example.com",
                Command::Ehlo("mail.example.com".into()),
            ),
            ("ehlo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            ("EHLO host extra words", Command::Ehlo("host".into())),
            ("  HeLo   host  ", Command::Helo("host".into())),
            ("DATA", Command::Data),
            ("data  ", Command::Data),
            ("RSET", Command::Rset),
            ("QUIT", Command::Quit),
            ("quit", Command::Quit),
            ("STARTTLS", Command::StartTls),
            ("StartTLS", Command::StartTls),
            ("NOOP", Command::Noop),
            ("NOOP whatever\there", Command::Noop),
            ("HELP", Command::Help(None)),
            ("HELP   ", Command::Help(None)),
            ("help Mail", Command::Help(Some("Mail".into()))),
            ("VRFY John Smith", Command::Vrfy("John Smith".into())),
            ("EXPN staff", Command::Expn("staff".into())),
            (
                "AUTH plain",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: None,
                },
            ),
            (
                "AUTH PLAIN AGpvZQBzZWNyZXQ=",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: Some("AGpvZQBzZWNyZXQ=".into()),
                },
            ),
            (
                "AUTH login =",
                Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial_response: Some("=".into()),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), want, "{line:?}");
        }
    }

    #[test]
    fn mail_from() {
        let cases: Vec<(&str, Option<Mailbox>, Vec<Param>)> = vec![
            (
                "MAIL FROM:<joe@example.com>",
                Some(mbox("joe", "example.com")),
                vec![],
            ),
            (
                "mail from:<joe@example.com>",
                Some(mbox("joe", "example.com")),
                vec![],
            ),
            (
                "MAIL FROM: <joe@example.com>",
                Some(mbox("joe", "example.com")),
                vec![],
            ),
            ("MAIL FROM:<>", None, vec![]),
            ("MAIL FROM:<> SIZE=0", None, vec![param("SIZE", Some("0"))]),
            (
                "MAIL FROM:<\"john..doe\"@example.com>",
                Some(mbox("\"john..doe\"", "example.com")),
                vec![],
            ),
            (
                "MAIL FROM:<@a.example,@b.example:joe@c.example>",
                Some(mbox("joe", "c.example")),
                vec![],
            ),
            (
                "MAIL FROM:<a@b> size=1000  body=8BITMIME smtputf8 ",
                Some(mbox("a", "b")),
                vec![
                    param("SIZE", Some("1000")),
                    param("BODY", Some("8BITMIME")),
                    param("SMTPUTF8", None),
                ],
            ),
            (
                "MAIL FROM:<a@b> AUTH=<> X-Y1=a+b",
                Some(mbox("a", "b")),
                vec![param("AUTH", Some("<>")), param("X-Y1", Some("a+b"))],
            ),
        ];
        for (line, from, params) in cases {
            assert_eq!(ok(line), Command::Mail { from, params }, "{line:?}");
        }
    }

    #[test]
    fn rcpt_to() {
        let cases: Vec<(&str, Recipient, Vec<Param>)> = vec![
            (
                "RCPT TO:<jane@example.org>",
                Recipient::Mailbox(mbox("jane", "example.org")),
                vec![],
            ),
            (
                "rcpt to: <jane@example.org>",
                Recipient::Mailbox(mbox("jane", "example.org")),
                vec![],
            ),
            ("RCPT TO:<postmaster>", Recipient::Postmaster, vec![]),
            ("RCPT TO:<PostMaster>", Recipient::Postmaster, vec![]),
            (
                "RCPT TO:<postmaster@example.org>",
                Recipient::Mailbox(mbox("postmaster", "example.org")),
                vec![],
            ),
            (
                "RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b",
                Recipient::Mailbox(mbox("a", "b")),
                vec![
                    param("NOTIFY", Some("SUCCESS,FAILURE")),
                    param("ORCPT", Some("rfc822;a@b")),
                ],
            ),
        ];
        for (line, to, params) in cases {
            assert_eq!(ok(line), Command::Rcpt { to, params }, "{line:?}");
        }
    }

    #[test]
    fn smtputf8_lines() {
        let line = "MAIL FROM:<jöe@exämple.de> SMTPUTF8".as_bytes();
        assert_eq!(parse_command(line, false), Err(CommandError::EightBit));
        assert_eq!(
            parse_command(line, true),
            Ok(Command::Mail {
                from: Some(mbox("jöe", "exämple.de")),
                params: vec![param("SMTPUTF8", None)],
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<\xff@x>", true),
            Err(CommandError::EightBit)
        );
        assert_eq!(
            parse_command(b"NOOP \xc3", true),
            Err(CommandError::EightBit)
        );
    }

    #[test]
    fn byte_level_errors() {
        let cases: &[(&[u8], CommandError)] = &[
            (b"MAIL FROM:<a@b>\0", CommandError::NulByte),
            (b"\0\xff", CommandError::NulByte),
            (b"XYZZY \0", CommandError::NulByte),
            (b"MAIL FROM:<\xe9@b>", CommandError::EightBit),
            (b"HELP \x80", CommandError::EightBit),
            (
                b"NOOP\r",
                CommandError::Syntax("Invalid character in command"),
            ),
            (
                b"MAIL FROM:<a@b>\rRCPT TO:<c@d>",
                CommandError::Syntax("Invalid character in command"),
            ),
            (
                b"DATA\x1b",
                CommandError::Syntax("Invalid character in command"),
            ),
            (
                b"HELP \x7f",
                CommandError::Syntax("Invalid character in command"),
            ),
            (
                b"EHLO a\tb",
                CommandError::Syntax("Invalid character in command"),
            ),
            (
                b"MAIL FROM:<a@b>\tSIZE=1",
                CommandError::Syntax("Invalid character in command"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_command(line, false), Err(*want), "{line:?}");
        }
        // TAB is fine in free text.
        assert_eq!(ok("HELP a\tb"), Command::Help(Some("a\tb".into())));
        assert_eq!(ok("EXPN a\tb"), Command::Expn("a\tb".into()));
    }

    #[test]
    fn unknown_verbs() {
        // A TAB does not separate the verb from its argument.
        for line in [
            "",
            "   ",
            "XYZZY",
            "VRFY\tx",
            "FOO\tbar",
            "MAILFROM:<a@b>",
            "EHLOx",
            "DATAX",
            "SEND FROM:<a@b>",
            "TURN",
        ] {
            assert_eq!(
                parse_command(line.as_bytes(), false),
                Err(CommandError::Unknown),
                "{line:?}"
            );
        }
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            "EHLO",
            "EHLO   ",
            "HELO",
            "MAIL",
            "MAIL FROM",
            "MAIL FROM:",
            "MAIL TO:<a@b>",
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a@b>x",
            "MAIL FROM:<a@b>>",
            "MAIL FROM:<a@b> =1",
            "MAIL FROM:<a@b> -X=1",
            "MAIL FROM:<a@b> SIZE=",
            "MAIL FROM:<a@b> SIZE=1=2",
            "MAIL FROM:<a@b> X_Y",
            "MAIL FROM:<a@b> SIZE=1 size=2",
            "MAIL FROM:<postmaster>",
            "MAIL FROM:<a..b@c>",
            "MAIL FROM:<a@b..c>",
            "MAIL FROM :<a@b>",
            "RCPT",
            "RCPT TO:",
            "RCPT TO:<>",
            "RCPT TO:jane@example.org",
            "RCPT FROM:<a@b>",
            "RCPT TO:<jane>",
            "DATA now",
            "RSET x",
            "QUIT bye",
            "STARTTLS please",
            "VRFY",
            "EXPN  ",
            "AUTH",
            "AUTH  ",
            "AUTH PLAIN a b",
            "AUTH PL@IN",
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
        ];
        for line in cases {
            assert!(
                matches!(
                    parse_command(line.as_bytes(), false),
                    Err(CommandError::Syntax(_))
                ),
                "{line:?} gave {:?}",
                parse_command(line.as_bytes(), false)
            );
        }
        assert_eq!(
            parse_command(b"MAIL FROM:a@b", false),
            Err(CommandError::Syntax("Syntax: MAIL FROM:<address>"))
        );
    }

    #[test]
    fn verbs_for_logs() {
        assert_eq!(ok("MAIL FROM:<>").verb(), "MAIL");
        assert_eq!(ok("starttls").verb(), "STARTTLS");
        assert_eq!(ok("AUTH PLAIN").verb(), "AUTH");
        assert_eq!(CommandError::Syntax("x").to_string(), "x");
        assert_eq!(param("SIZE", Some("10")).to_string(), "SIZE=10");
        assert_eq!(param("SMTPUTF8", None).to_string(), "SMTPUTF8");
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300), utf8 in any::<bool>()) {
            let _ = parse_command(&line, utf8);
        }

        #[test]
        fn mailbox_display_round_trips(
            local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-z0-9]{1,10}){0,2}",
            domain in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}",
        ) {
            let m = mbox(&local, &domain);
            let line = format!("RCPT TO:<{m}>");
            prop_assert_eq!(
                parse_command(line.as_bytes(), false),
                Ok(Command::Rcpt { to: Recipient::Mailbox(m), params: vec![] })
            );
        }
    }
}
