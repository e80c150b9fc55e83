//! Telling the upstream who the real client is: Postfix's XFORWARD and
//! XCLIENT extensions.
//!
//! Without them the mail server behind the gateway sees every message come
//! from the gateway: its logs, its `Received:` header and its access rules
//! name the gateway's address. When its EHLO reply offers them:
//!
//! - **XFORWARD** (the default, `upstream.forward_client: xforward`) is sent
//!   before each MAIL, pipelined with it. It only changes what the server
//!   logs and writes in its `Received:` header: the client's address, port,
//!   HELO name and protocol, and our transaction id as IDENT (Postfix logs
//!   it as `orig_queue_id`, which ties its log to our audit trail). The
//!   server forgets it at the end of each transaction.
//! - **XCLIENT** (`forward_client: xclient`) restarts the upstream's session
//!   as the client: its access rules then judge the client's address, HELO
//!   and login instead of the gateway's. The server answers with a new
//!   greeting, so the gateway says EHLO again, with the client's HELO name.
//!   It is sent once per client session; the connection belongs to that
//!   client from then on (a server usually lets only the gateway, not the
//!   client, send XCLIENT, so it cannot be changed back).
//!
//! Only the attributes the server lists are sent. Values are xtext (RFC
//! 3461) and at most 255 characters; what is unknown or unusable is
//! `[UNAVAILABLE]`: the gateway does no reverse DNS lookups, so NAME always
//! is. Each command stays within the 512-character command line limit,
//! split in several when needed.

use super::{Upstream, UpstreamError};
use std::net::{IpAddr, SocketAddr};

/// The value for an attribute that is not known.
pub const UNAVAILABLE: &str = "[UNAVAILABLE]";

/// Longest command line, CRLF excluded (RFC 5321 §4.5.3.1.4: 512 with it).
const MAX_LINE: usize = 510;

/// Longest attribute value, as sent (Postfix's XFORWARD and XCLIENT limit).
const MAX_VALUE: usize = 255;

/// The real client of a transaction, as the upstream should learn it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (the one a PROXY header named, if any).
    pub addr: SocketAddr,
    /// Its HELO/EHLO name.
    pub helo: Option<String>,
    /// It greeted with EHLO (PROTO=ESMTP) rather than HELO (PROTO=SMTP).
    pub esmtp: bool,
    /// The user it authenticated as (XCLIENT LOGIN).
    pub login: Option<String>,
    /// Our transaction id (XFORWARD IDENT).
    pub ident: String,
    /// Our session id: XCLIENT is sent once per client session.
    pub session: String,
}

/// `s` as xtext (RFC 3461 §4): `+` followed by two upper-case hex digits
/// for `+`, `=` and every byte outside `!`..`~`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// A free-form value the client chose (HELO name, login): xtext, or
/// [`UNAVAILABLE`] when it is missing, holds whitespace, control or
/// non-ASCII characters (which the server must not receive, even
/// encoded), or is too long.
fn client_value(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) => {
            let encoded = xtext(v);
            if encoded.len() <= MAX_VALUE {
                encoded
            } else {
                UNAVAILABLE.to_string()
            }
        }
        _ => UNAVAILABLE.to_string(),
    }
}

/// The ADDR value: IPv4 as is, IPv6 with the `IPV6:` prefix, an
/// IPv4-mapped address as IPv4.
fn addr_value(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPV6:{v6}"),
    }
}

impl ClientInfo {
    /// The value of one attribute, by its (upper-case) name; `None` for an
    /// attribute the gateway never sends (DESTADDR, DESTPORT, unknown ones).
    fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            // No reverse DNS lookups here: the name is not known.
            "NAME" => UNAVAILABLE.to_string(),
            "ADDR" => addr_value(self.addr.ip()),
            "PORT" => self.addr.port().to_string(),
            "PROTO" => if self.esmtp { "ESMTP" } else { "SMTP" }.to_string(),
            "HELO" => client_value(self.helo.as_deref()),
            "IDENT" => client_value(Some(&self.ident)),
            // The client reached us over the network.
            "SOURCE" => "REMOTE".to_string(),
            "LOGIN" => client_value(self.login.as_deref()),
            _ => return None,
        })
    }

    /// The name to say EHLO with after XCLIENT: the client's own, when it
    /// is one that could be sent at all.
    pub fn ehlo_name(&self) -> Option<&str> {
        self.helo
            .as_deref()
            .filter(|h| client_value(Some(h)) != UNAVAILABLE)
    }
}

/// `command` lines carrying `name=value` for each of `order` that the
/// server `offered`, in that order, each line within the command length
/// limit.
fn commands(command: &str, client: &ClientInfo, offered: &[String], order: &[&str]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for name in order {
        if !offered.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            continue;
        }
        let Some(value) = client.value(name) else {
            continue;
        };
        let attribute = format!(" {name}={value}");
        if !line.is_empty() && line.len() + attribute.len() > MAX_LINE {
            lines.push(std::mem::take(&mut line));
        }
        if line.is_empty() {
            line.push_str(command);
        }
        line.push_str(&attribute);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The XFORWARD commands for `client`, with the attributes the server
/// `offered` (none when it offered none the gateway knows).
pub fn xforward_commands(client: &ClientInfo, offered: &[String]) -> Vec<String> {
    const ORDER: [&str; 7] = ["NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"];
    commands("XFORWARD", client, offered, &ORDER)
}

/// The XCLIENT commands for `client`, with the attributes the server
/// `offered`. ADDR comes last: once it is sent, the server usually takes
/// no more XCLIENT from us, so a split puts it in the last command.
pub fn xclient_commands(client: &ClientInfo, offered: &[String]) -> Vec<String> {
    const ORDER: [&str; 6] = ["HELO", "PROTO", "LOGIN", "NAME", "PORT", "ADDR"];
    commands("XCLIENT", client, offered, &ORDER)
}

impl Upstream {
    /// True when XCLIENT is to be sent for `client` now: asked for, offered,
    /// not on a connection logged in for a client (AUTH passthrough), and
    /// not already done on this connection for the same session.
    pub fn xclient_due(&self, mode: crate::config::ForwardClient, client: &ClientInfo) -> bool {
        mode == crate::config::ForwardClient::Xclient
            && self.extensions.xclient.is_some()
            // XCLIENT restarts the server's session, and with it the login.
            && self.logged_in_as.is_none()
            && self.xclient_for.as_deref() != Some(client.session.as_str())
    }

    /// The XFORWARD commands to send before MAIL for `client` (none when
    /// `mode` or the server's offer say so, or XCLIENT already speaks for
    /// the client on this connection).
    pub fn xforward_due(
        &self,
        mode: crate::config::ForwardClient,
        client: &ClientInfo,
    ) -> Vec<String> {
        use crate::config::ForwardClient;
        let wanted = match mode {
            ForwardClient::None => false,
            ForwardClient::Xforward => true,
            // XCLIENT when offered (and usable: not after a client's
            // login); XFORWARD is the fallback.
            ForwardClient::Xclient => {
                self.xclient_for.is_none()
                    && (self.extensions.xclient.is_none() || self.logged_in_as.is_some())
            }
        };
        match (&self.extensions.xforward, wanted) {
            (Some(offered), true) => xforward_commands(client, offered),
            _ => Vec::new(),
        }
    }

    /// Restarts the upstream's session as `client` with XCLIENT, then says
    /// EHLO again — with the client's name, or `our_helo` when the client's
    /// cannot be sent. Call only when [`xclient_due`](Self::xclient_due),
    /// outside a transaction. A refusal (the server's access rules turned
    /// the client away, or it does not let us speak for clients) is
    /// [`UpstreamError::ClientRefused`]: that reply is for the client, and
    /// the connection is not to be used again.
    pub async fn xclient(
        &mut self,
        client: &ClientInfo,
        our_helo: &str,
    ) -> Result<(), UpstreamError> {
        let offered = self.extensions.xclient.clone().unwrap_or_default();
        for line in xclient_commands(client, &offered) {
            let reply = self.command(&line, "XCLIENT reply").await?;
            match reply.class() {
                // 220: the new greeting, as the client.
                2 => {}
                4 | 5 => return Err(UpstreamError::ClientRefused(reply)),
                _ => return Err(UpstreamError::Refused(reply)),
            }
        }
        self.xclient_for = Some(client.session.clone());
        // The upstream now takes this connection for this client: the idle
        // pool must never hand it to another one.
        self.reusable = false;
        let name = client.ehlo_name().unwrap_or(our_helo).to_string();
        // The server now judges the client: a permanent refusal of its
        // name is an answer for the client too.
        match self.greet(&name).await {
            Err(UpstreamError::Refused(reply)) if reply.class() == 5 => {
                Err(UpstreamError::ClientRefused(reply))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(addr: &str, helo: Option<&str>) -> ClientInfo {
        ClientInfo {
            addr: addr.parse().unwrap(),
            helo: helo.map(str::to_string),
            esmtp: true,
            login: None,
            ident: "6b0e14c647fa21.1".to_string(),
            session: "6b0e14c647fa21".to_string(),
        }
    }

    fn offer(words: &str) -> Vec<String> {
        words.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn xtext_encoding() {
        for (plain, encoded) in [
            ("mail.example.com", "mail.example.com"),
            ("[192.0.2.1]", "[192.0.2.1]"),
            ("a+b=c", "a+2Bb+3Dc"),
            ("sp ace", "sp+20ace"),
            ("tab\there", "tab+09here"),
            ("é", "+C3+A9"),
            ("", ""),
        ] {
            assert_eq!(xtext(plain), encoded, "{plain:?}");
        }
    }

    #[test]
    fn xforward_lines() {
        let all = offer("NAME ADDR PORT PROTO HELO IDENT SOURCE");
        let c = client("192.0.2.7:40000", Some("client.example"));
        assert_eq!(
            xforward_commands(&c, &all),
            vec![
                "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40000 PROTO=ESMTP \
                  HELO=client.example IDENT=6b0e14c647fa21.1 SOURCE=REMOTE"
            ]
        );
        // Only what is offered (in any case), in our order.
        assert_eq!(
            xforward_commands(&c, &offer("helo addr")),
            vec!["XFORWARD ADDR=192.0.2.7 HELO=client.example"]
        );
        assert!(xforward_commands(&c, &offer("DESTADDR FOO")).is_empty());
        assert!(xforward_commands(&c, &[]).is_empty());
        // IPv6, an IPv4-mapped address, HELO, unusable HELOs.
        let mut c6 = client("[2001:db8::7]:25", Some("[IPv6:2001:db8::7]"));
        c6.esmtp = false;
        assert_eq!(
            xforward_commands(&c6, &offer("ADDR PROTO HELO")),
            vec!["XFORWARD ADDR=IPV6:2001:db8::7 PROTO=SMTP HELO=[IPv6:2001:db8::7]"]
        );
        let mapped = client("[::ffff:192.0.2.9]:25", Some("a+b"));
        assert_eq!(
            xforward_commands(&mapped, &offer("ADDR HELO")),
            vec!["XFORWARD ADDR=192.0.2.9 HELO=a+2Bb"]
        );
        let long = "a".repeat(256);
        for bad in [
            None,
            Some("two words"),
            Some("ctl\u{1}"),
            Some(long.as_str()),
        ] {
            let c = client("192.0.2.7:1", bad);
            assert_eq!(
                xforward_commands(&c, &offer("HELO")),
                vec!["XFORWARD HELO=[UNAVAILABLE]"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn long_values_split_into_lines_within_the_limit() {
        // Every attribute at its longest: more than one command line.
        let helo = format!("{}.example", "h".repeat(240));
        let mut c = client(
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            Some(&helo),
        );
        c.ident = "i".repeat(255);
        c.login = Some("=".repeat(85));
        let lines = xforward_commands(&c, &offer("NAME ADDR PORT PROTO HELO IDENT SOURCE"));
        assert!(lines.len() > 1, "{lines:?}");
        let joined = lines.join(" ");
        for want in [
            "ADDR=", "PORT=", "PROTO=", "HELO=", "IDENT=", "SOURCE=", "NAME=",
        ] {
            assert_eq!(joined.matches(want).count(), 1, "{want} in {lines:?}");
        }
        for l in &lines {
            assert!(l.len() + 2 <= 512, "{} bytes: {l}", l.len());
            assert!(l.starts_with("XFORWARD "));
        }
        let lines = xclient_commands(&c, &offer("NAME ADDR PORT PROTO HELO LOGIN"));
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines
            .last()
            .unwrap()
            .ends_with(" ADDR=IPV6:2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(lines.iter().all(|l| l.len() + 2 <= 512));
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| !l.contains("ADDR=")));
    }

    #[test]
    fn xclient_lines() {
        let mut c = client("192.0.2.7:40000", Some("client.example"));
        c.login = Some("alice".to_string());
        assert_eq!(
            xclient_commands(
                &c,
                &offer("NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT")
            ),
            vec![
                "XCLIENT HELO=client.example PROTO=ESMTP LOGIN=alice NAME=[UNAVAILABLE] \
                  PORT=40000 ADDR=192.0.2.7"
            ]
        );
        c.login = None;
        assert_eq!(
            xclient_commands(&c, &offer("ADDR LOGIN")),
            vec!["XCLIENT LOGIN=[UNAVAILABLE] ADDR=192.0.2.7"]
        );
        assert_eq!(c.ehlo_name(), Some("client.example"));
        c.helo = Some("bad name".into());
        assert_eq!(c.ehlo_name(), None);
    }
}
