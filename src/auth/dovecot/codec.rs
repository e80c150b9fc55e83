//! The client side of Dovecot's auth protocol (version 1.2), free of I/O:
//! the lines smtpgate writes and the parsed lines Dovecot answers with.
//!
//! Lines are tab-separated and end in LF. Values are "tab-escaped":
//! `\x01` introduces an escape (`\x011` SOH, `\x01t` TAB, `\x01r` CR,
//! `\x01n` LF), so a value never contains a separator.

/// Longest line accepted from Dovecot: far above any real answer, and a
/// bound on what a broken or hostile peer can make us buffer.
pub const MAX_LINE: usize = 16 * 1024;

/// One line from the auth server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `VERSION <major> <minor>`: the first line of the handshake.
    Version(u32, u32),
    /// `MECH <name> [flags]`: one mechanism the server offers.
    Mech(String),
    /// `DONE`: the handshake is over.
    Done,
    /// `OK <id> [params]`: the request succeeded; `user` is the
    /// canonical login name when the server sends one.
    Ok {
        /// The request ID.
        id: u32,
        /// `user=`.
        user: Option<String>,
    },
    /// `FAIL <id> [params]`: the request failed; `temp` when the server
    /// could not decide (its passdb is down), so the client may retry.
    Fail {
        /// The request ID.
        id: u32,
        /// `temp` was given.
        temp: bool,
        /// `reason=`, for the log.
        reason: Option<String>,
    },
    /// `CONT <id> <base64>`: the server's next challenge.
    Cont {
        /// The request ID.
        id: u32,
        /// The challenge, base64 as received.
        data: String,
    },
    /// A handshake line we do not need (`SPID`, `CUID`, `COOKIE`, ...).
    Other,
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one line, without its LF (a trailing CR is tolerated).
pub fn parse(line: &[u8]) -> Result<ServerLine, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| ParseError("not UTF-8".into()))?;
    let mut fields = text.split('\t');
    let command = fields.next().unwrap_or_default();
    let id = |f: Option<&str>| -> Result<u32, ParseError> {
        f.and_then(|s| s.parse().ok())
            .ok_or_else(|| ParseError(format!("{command} without a request ID")))
    };
    match command {
        "VERSION" => {
            let major = fields.next().and_then(|s| s.parse().ok());
            let minor = fields.next().and_then(|s| s.parse().ok());
            match (major, minor) {
                (Some(a), Some(b)) => Ok(ServerLine::Version(a, b)),
                _ => Err(ParseError("VERSION without two numbers".into())),
            }
        }
        "MECH" => match fields.next() {
            Some(name) if !name.is_empty() => Ok(ServerLine::Mech(name.to_ascii_uppercase())),
            _ => Err(ParseError("MECH without a name".into())),
        },
        "DONE" => Ok(ServerLine::Done),
        "OK" => {
            let id = id(fields.next())?;
            let user = fields
                .filter_map(|f| f.strip_prefix("user="))
                .map(unescape)
                .next();
            Ok(ServerLine::Ok { id, user })
        }
        "FAIL" => {
            let id = id(fields.next())?;
            let (mut temp, mut reason) = (false, None);
            for f in fields {
                if f == "temp" {
                    temp = true;
                } else if let Some(r) = f.strip_prefix("reason=") {
                    reason = Some(unescape(r));
                }
            }
            Ok(ServerLine::Fail { id, temp, reason })
        }
        "CONT" => {
            let id = id(fields.next())?;
            let data = fields.next().unwrap_or_default().to_string();
            Ok(ServerLine::Cont { id, data })
        }
        "" => Err(ParseError("empty line".into())),
        _ => Ok(ServerLine::Other),
    }
}

/// Undoes Dovecot's tab-escaping; an unknown escape keeps its character.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Tab-escapes a value for a request parameter.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            '\0' => out.push_str("\x010"),
            c => out.push(c),
        }
    }
    out
}

/// The client's half of the handshake: protocol version and process ID.
pub fn handshake(pid: u32) -> String {
    format!("VERSION\t1\t2\nCPID\t{pid}\n")
}

/// What an `AUTH` request says about the client.
pub struct Request<'a> {
    /// Request ID, unique on its connection.
    pub id: u32,
    /// Mechanism name as Dovecot lists it.
    pub mechanism: &'a str,
    /// The SMTP client's address (`rip=`), for Dovecot's log and penalty.
    pub remote_ip: Option<std::net::IpAddr>,
    /// Our address the client connected to (`lip=`).
    pub local_ip: Option<std::net::IpAddr>,
    /// The client's port (`rport=`).
    pub remote_port: Option<u16>,
    /// Our port the client connected to (`lport=`).
    pub local_port: Option<u16>,
    /// The SMTP session is under TLS (`secured`).
    pub secured: bool,
    /// The initial response, base64 (`resp=`); `None` for none.
    pub initial: Option<&'a str>,
}

/// An `AUTH` line as Postfix sends it (`service=smtp`, `nologin`: the
/// login is only checked, no mail session starts on Dovecot's side).
pub fn auth(r: &Request<'_>) -> String {
    let mut line = format!(
        "AUTH\t{}\t{}\tservice=smtp\tnologin",
        r.id,
        escape(r.mechanism)
    );
    if let Some(ip) = r.local_ip {
        line.push_str(&format!("\tlip={ip}"));
    }
    if let Some(ip) = r.remote_ip {
        line.push_str(&format!("\trip={ip}"));
    }
    if let Some(port) = r.local_port {
        line.push_str(&format!("\tlport={port}"));
    }
    if let Some(port) = r.remote_port {
        line.push_str(&format!("\trport={port}"));
    }
    if r.secured {
        line.push_str("\tsecured");
    }
    if let Some(resp) = r.initial {
        line.push_str("\tresp=");
        line.push_str(resp);
    }
    line.push('\n');
    line
}

/// A `CONT` line: the client's answer to a challenge, base64.
pub fn cont(id: u32, data: &str) -> String {
    format!("CONT\t{id}\t{data}\n")
}

/// Splits a byte stream into lines, bounded by [`MAX_LINE`].
#[derive(Default)]
pub struct LineBuffer {
    /// Bytes received and not yet returned as a line.
    buf: Vec<u8>,
}

impl LineBuffer {
    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line (without LF), or `Ok(None)` when more bytes
    /// are needed; an error when a line grows past [`MAX_LINE`].
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ParseError> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(end) => {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(ParseError("line too long".into())),
            None => Ok(None),
        }
    }
}

/// The codec's invariants on arbitrary server bytes, for the fuzz target
/// and the seed replay test: fed in any split, lines come out bounded and
/// parse without panicking, and escaping round-trips.
pub fn selfcheck(data: &[u8]) {
    let mut whole = LineBuffer::default();
    whole.feed(data);
    let mut split = LineBuffer::default();
    let (a, b) = data.split_at(data.len() / 2);
    split.feed(a);
    let mut from_split = Vec::new();
    while let Ok(Some(line)) = split.next_line() {
        from_split.push(line);
    }
    split.feed(b);
    while let Ok(Some(line)) = split.next_line() {
        from_split.push(line);
    }
    let mut from_whole = Vec::new();
    while let Ok(Some(line)) = whole.next_line() {
        assert!(!line.contains(&b'\n'));
        if let Ok(ServerLine::Ok { user: Some(u), .. }) = parse(&line) {
            assert_eq!(unescape(&escape(&u)), u);
        }
        from_whole.push(line);
    }
    if data.len() <= MAX_LINE {
        assert_eq!(from_whole, from_split);
    }
    let text = String::from_utf8_lossy(data);
    let escaped = escape(&text);
    assert!(!escaped.contains(['\t', '\n', '\r', '\0']));
    assert_eq!(unescape(&escaped), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_handshake_and_answers() {
        let mut b = LineBuffer::default();
        b.feed(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tlogin\tplaintext\nSPID\t7\nCUID\t1\nCOOKIE\tab\nDONE\nOK\t3\tuser=al\x01tice\nFAIL\t4\treason=db down\ttemp\nCONT\t5\tVXNlcm5hbWU6\nFA");
        let mut got = Vec::new();
        while let Some(l) = b.next_line().unwrap() {
            got.push(parse(&l).unwrap());
        }
        assert_eq!(
            got,
            vec![
                ServerLine::Version(1, 2),
                ServerLine::Mech("PLAIN".into()),
                ServerLine::Mech("LOGIN".into()),
                ServerLine::Other,
                ServerLine::Other,
                ServerLine::Other,
                ServerLine::Done,
                ServerLine::Ok {
                    id: 3,
                    user: Some("al\tice".into())
                },
                ServerLine::Fail {
                    id: 4,
                    temp: true,
                    reason: Some("db down".into())
                },
                ServerLine::Cont {
                    id: 5,
                    data: "VXNlcm5hbWU6".into()
                },
            ]
        );
        b.feed(b"IL\t6\n");
        let l = b.next_line().unwrap().unwrap();
        assert_eq!(
            parse(&l).unwrap(),
            ServerLine::Fail {
                id: 6,
                temp: false,
                reason: None
            }
        );
    }

    #[test]
    fn refuses_broken_lines() {
        for bad in [&b"OK"[..], b"FAIL\tx", b"VERSION\t1", b"", b"MECH", b"\xff"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut b = LineBuffer::default();
        b.feed(&vec![b'a'; MAX_LINE + 1]);
        assert!(b.next_line().is_err());
    }

    #[test]
    fn writes_requests_like_postfix() {
        let r = Request {
            id: 9,
            mechanism: "PLAIN",
            remote_ip: Some("192.0.2.7".parse().unwrap()),
            local_ip: None,
            remote_port: None,
            local_port: None,
            secured: true,
            initial: Some("AGEAYg=="),
        };
        assert_eq!(
            auth(&r),
            "AUTH\t9\tPLAIN\tservice=smtp\tnologin\trip=192.0.2.7\tsecured\tresp=AGEAYg==\n"
        );
        let r = Request {
            local_ip: Some("2001:db8::25".parse().unwrap()),
            remote_port: Some(40000),
            local_port: Some(587),
            secured: false,
            initial: None,
            ..r
        };
        assert_eq!(
            auth(&r),
            "AUTH\t9\tPLAIN\tservice=smtp\tnologin\tlip=2001:db8::25\trip=192.0.2.7\t\
             lport=587\trport=40000\n"
        );
        assert_eq!(handshake(42), "VERSION\t1\t2\nCPID\t42\n");
        assert_eq!(cont(9, "YQ=="), "CONT\t9\tYQ==\n");
        assert_eq!(unescape(&escape("a\tb\x01c\nd")), "a\tb\x01c\nd");
    }
}
