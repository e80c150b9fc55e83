//! Every reply the gateway itself sends, in one place.
//!
//! Replies that come from the upstream are passed through untouched; these
//! are the ones smtpgate speaks on its own (`docs/architecture.md`, invariants
//! 2 and 6; the list is in `docs/operating.md`, "Reply codes it sends").

use crate::proto::{CommandError, DataError, EnhancedCode, Reply};

fn r(code: u16, class: u8, subject: u16, detail: u16, text: &str) -> Reply {
    Reply::new(code, EnhancedCode::new(class, subject, detail), text)
}

/// The one mapping from a command parse error to its reply.
pub(crate) fn command_error(err: CommandError) -> Reply {
    match err {
        CommandError::Unknown => r(500, 5, 5, 2, "Error: command not recognized"),
        CommandError::Syntax(why) => r(501, 5, 5, 4, why),
        CommandError::NulByte => r(500, 5, 5, 2, "Error: NUL byte in command"),
        CommandError::EightBit => r(500, 5, 5, 2, "Error: 8-bit bytes in command need SMTPUTF8"),
    }
}

/// The one mapping from a problem found in a message body to its reply.
pub(crate) fn data_error(err: DataError) -> Reply {
    match err {
        DataError::BareLf | DataError::BareCr => r(
            554,
            5,
            6,
            0,
            "Message contains bare CR or LF; lines must end with CRLF",
        ),
        DataError::LineTooLong => r(500, 5, 5, 6, "Message line too long (limit 1000 octets)"),
    }
}

/// A command line over the limit.
pub(crate) fn line_too_long() -> Reply {
    r(500, 5, 5, 6, "Error: command line too long")
}

/// A command out of order.
pub(crate) fn bad_sequence(text: &str) -> Reply {
    r(503, 5, 5, 1, text)
}

/// An ESMTP parameter we did not advertise.
pub(crate) fn unsupported_parameter(keyword: &str) -> Reply {
    r(555, 5, 5, 4, &format!("Unsupported parameter {keyword}"))
}

/// A malformed parameter value.
pub(crate) fn bad_parameter(text: &str) -> Reply {
    r(501, 5, 5, 4, text)
}

/// Declared or actual size over the limit.
pub(crate) fn too_big() -> Reply {
    r(
        552,
        5,
        3,
        4,
        "Message size exceeds fixed maximum message size",
    )
}

/// More recipients than allowed in one transaction.
pub(crate) fn too_many_recipients() -> Reply {
    r(452, 4, 5, 3, "Too many recipients")
}

/// The upstream could not be reached or failed mid-transaction.
pub(crate) fn upstream_failed() -> Reply {
    r(451, 4, 4, 1, "Upstream server unavailable, try again later")
}

/// A local failure (disk, spool) that the client should retry.
pub(crate) fn local_error() -> Reply {
    r(451, 4, 3, 0, "Local error in processing, try again later")
}

/// Too many bad commands in one session.
pub(crate) fn too_many_errors(host: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        &format!("{host} Error: too many errors, closing connection"),
    )
}

/// Over the connection limit.
pub(crate) fn too_many_connections(host: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        &format!("{host} Too many connections, try again later"),
    )
}

/// The client was silent for too long.
pub(crate) fn timeout(host: &str) -> Reply {
    r(421, 4, 4, 2, &format!("{host} Error: timeout exceeded"))
}

/// The gateway is shutting down.
pub(crate) fn shutting_down(host: &str) -> Reply {
    r(
        421,
        4,
        3,
        2,
        &format!("{host} Service shutting down, try again later"),
    )
}

/// Plain success.
pub(crate) fn ok() -> Reply {
    r(250, 2, 0, 0, "OK")
}

/// MAIL accepted (spool mode).
pub(crate) fn sender_ok() -> Reply {
    r(250, 2, 1, 0, "Sender OK")
}

/// RCPT accepted (spool mode).
pub(crate) fn recipient_ok() -> Reply {
    r(250, 2, 1, 5, "Recipient OK")
}

/// Message stored in the local spool.
pub(crate) fn queued(id: &str) -> Reply {
    r(250, 2, 0, 0, &format!("OK: queued as {id}"))
}

/// DATA with no accepted recipient.
pub(crate) fn no_valid_recipients() -> Reply {
    r(554, 5, 5, 1, "Error: no valid recipients")
}

/// The upstream reached now does not offer an extension (DSN, SMTPUTF8)
/// that EHLO promised and the transaction uses.
pub(crate) fn extension_unavailable(name: &str) -> Reply {
    r(
        451,
        4,
        3,
        3,
        &format!("{name} not available from the upstream now; try again later"),
    )
}

/// A BDAT chunk other than the last one was read (RFC 3030 §2).
pub(crate) fn chunk_received(size: u64) -> Reply {
    r(250, 2, 0, 0, &format!("{size} octets received"))
}

/// The go-ahead for the message body.
pub(crate) fn start_data() -> Reply {
    Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
}

/// Session end.
pub(crate) fn bye() -> Reply {
    r(221, 2, 0, 0, "Bye")
}

/// VRFY never tells whether a user exists (RFC 5321 §3.5.3).
pub(crate) fn cannot_verify() -> Reply {
    r(
        252,
        2,
        5,
        0,
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// EXPN is not offered.
pub(crate) fn expn_disabled() -> Reply {
    r(502, 5, 5, 1, "EXPN not available")
}

/// A command we know but do not offer on this session.
pub(crate) fn not_offered(verb: &str) -> Reply {
    r(502, 5, 5, 1, &format!("{verb} not available"))
}

/// HELP text.
pub(crate) fn help() -> Reply {
    Reply::multiline(
        214,
        Some(EnhancedCode::new(2, 0, 0)),
        vec![
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY".to_string(),
            "See RFC 5321".to_string(),
        ],
    )
}

/// STARTTLS accepted: the handshake follows.
pub(crate) fn ready_to_start_tls() -> Reply {
    r(220, 2, 0, 0, "Ready to start TLS")
}

/// STARTTLS inside TLS.
pub(crate) fn tls_already_active() -> Reply {
    r(503, 5, 5, 1, "Error: TLS already active")
}

/// MAIL or AUTH on a `starttls: required` listener before STARTTLS.
pub(crate) fn must_starttls() -> Reply {
    r(530, 5, 7, 0, "Must issue a STARTTLS command first")
}

/// MAIL on an `auth: required` listener before AUTH.
pub(crate) fn auth_required() -> Reply {
    r(530, 5, 7, 0, "Authentication required")
}

/// AUTH in plain text where TLS is available (RFC 4954 §6).
pub(crate) fn encryption_required() -> Reply {
    r(
        538,
        5,
        7,
        11,
        "Encryption required for requested authentication mechanism",
    )
}

/// AUTH with a mechanism we do not know.
pub(crate) fn unknown_mechanism() -> Reply {
    r(504, 5, 5, 4, "Unrecognized authentication type")
}

/// AUTH with a mechanism refused on purpose (CRAM-MD5, DIGEST-MD5, ANONYMOUS).
pub(crate) fn weak_mechanism() -> Reply {
    r(534, 5, 7, 9, "Authentication mechanism is too weak")
}

/// The client cancelled AUTH with `*`.
pub(crate) fn auth_cancelled() -> Reply {
    r(501, 5, 7, 0, "Authentication cancelled")
}

/// An AUTH response that is not base64 or not shaped as the mechanism needs.
pub(crate) fn auth_malformed() -> Reply {
    r(501, 5, 5, 2, "Cannot decode authentication response")
}

/// Login succeeded.
pub(crate) fn auth_ok() -> Reply {
    r(235, 2, 7, 0, "Authentication successful")
}

/// Wrong user name or password (the same reply for both).
pub(crate) fn auth_failed() -> Reply {
    r(535, 5, 7, 8, "Authentication credentials invalid")
}

/// The users could not be consulted.
pub(crate) fn auth_unavailable() -> Reply {
    r(454, 4, 7, 0, "Temporary authentication failure")
}

/// Too many failed logins in one session.
pub(crate) fn too_many_auth_failures(host: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        &format!("{host} Error: too many authentication failures, closing connection"),
    )
}

/// A recipient this client may not send to (deny by default).
pub(crate) fn relay_denied(rcpt: &str) -> Reply {
    r(554, 5, 7, 1, &format!("<{rcpt}>: Relay access denied"))
}

/// A logged-in user used a sender address that is not theirs.
pub(crate) fn sender_not_owned(sender: &str, user: &str) -> Reply {
    r(
        553,
        5,
        7,
        1,
        &format!("<{sender}>: Sender address rejected: not owned by user {user}"),
    )
}

/// Over `protection.max_connections_per_ip` (Postfix's wording).
pub(crate) fn too_many_connections_from(host: &str, ip: std::net::IpAddr) -> Reply {
    r(
        421,
        4,
        7,
        0,
        &format!("{host} Error: too many connections from {ip}"),
    )
}

/// Over a connection rate (per IP at connect, per user at AUTH).
pub(crate) fn connection_rate_exceeded(host: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        &format!("{host} Error: connection rate limit exceeded, try again later"),
    )
}

/// Over `protection.max_messages_per_session`: the rest goes over a new connection.
pub(crate) fn too_many_messages_in_session(host: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        &format!("{host} Error: too many messages in one session, reconnect to send more"),
    )
}

/// Over a message rate (MAIL).
pub(crate) fn message_rate_exceeded() -> Reply {
    r(
        450,
        4,
        7,
        1,
        "Error: message rate limit exceeded, try again later",
    )
}

/// Over a recipient rate (RCPT).
pub(crate) fn recipient_rate_exceeded() -> Reply {
    r(
        450,
        4,
        7,
        1,
        "Error: recipient rate limit exceeded, try again later",
    )
}

/// The rate-limit store cannot be reached and the limiter fails closed.
pub(crate) fn rate_store_unavailable() -> Reply {
    r(
        451,
        4,
        3,
        0,
        "Rate limit service unavailable, try again later",
    )
}

/// The same, where it ends the session (before the greeting, at AUTH).
pub(crate) fn rate_store_unavailable_closing(host: &str) -> Reply {
    r(
        421,
        4,
        3,
        0,
        &format!("{host} Rate limit service unavailable, try again later"),
    )
}

/// A client that sent before the greeting (pregreet): a bot, not an MTA.
pub(crate) fn talked_before_greeting(host: &str) -> Reply {
    r(
        554,
        5,
        5,
        0,
        &format!("{host} Protocol error: talked before greeting"),
    )
}
