//! Every reply the gateway itself sends, in one place.
//!
//! Replies that come from the upstream are passed through untouched; these
//! are the ones smtpgate speaks on its own (DESIGN.md, "Reply codes used").

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
