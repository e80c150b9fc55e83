//! What a scanner asked to change in the relayed message's header: the
//! fields to remove (rspamd's `milter.remove_headers`: its own result
//! headers, so a client cannot send a forged `X-Spam` or `X-Spamd-Result`
//! through), and the Subject of a `rewrite subject` answer.

use super::Session;
use crate::body::Body;
use crate::checks::rspamd::REMOVE_HEADERS;
use crate::facts::TEMPERROR;
use crate::message::header_value;
use crate::stream::Stream;

impl<S: Stream> Session<S> {
    /// Removes every field a scanner named from `body`'s header section.
    /// A body that cannot be read back stays as it is (and is logged):
    /// the message is not lost for a header.
    pub(super) fn remove_scanner_fields(&self, body: &mut Body) {
        let names: Vec<String> = self
            .ctx
            .facts
            .get(REMOVE_HEADERS)
            .map(|v| v.texts())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n != TEMPERROR)
            .collect();
        if names.is_empty() {
            return;
        }
        let bytes = match body.to_vec() {
            Ok(b) => b,
            Err(e) => {
                log::error!("session {} cannot remove header fields: {e}", self.id);
                return;
            }
        };
        let kept = without_fields(&bytes, &names);
        if kept.len() == bytes.len() {
            return;
        }
        self.replace_body(body, &kept, "remove header fields");
    }

    /// Gives `body` the Subject a filter chose (`ctx.new_subject`), encoded
    /// for the header. A body that cannot be read back keeps its Subject
    /// (and is logged), as for removed fields.
    pub(super) fn rewrite_subject(&self, body: &mut Body) {
        let Some(subject) = &self.ctx.new_subject else {
            return;
        };
        let bytes = match body.to_vec() {
            Ok(b) => b,
            Err(e) => {
                log::error!("session {} cannot rewrite the Subject: {e}", self.id);
                return;
            }
        };
        let value = header_value::encode("Subject", subject);
        self.replace_body(body, &with_subject(&bytes, &value), "rewrite the Subject");
    }

    /// Puts `bytes` in place of `body`; on failure `body` stays and `what`
    /// was not done is logged.
    fn replace_body(&self, body: &mut Body, bytes: &[u8], what: &str) {
        let mut fresh = Body::new(self.shared.config.limits.spill_threshold_bytes);
        match fresh.append(bytes) {
            Ok(()) => *body = fresh,
            Err(e) => log::error!("session {} cannot {what}: {e}", self.id),
        }
    }
}

/// `message` with one `Subject: value` field (`value` already encoded, no
/// final CRLF) where its first Subject field was, every Subject field and
/// continuation line dropped; at the end of the header section when it had
/// none. The body after the blank line is kept as it is.
pub fn with_subject(message: &[u8], value: &str) -> Vec<u8> {
    let field = format!("Subject: {value}\r\n");
    let mut out = Vec::with_capacity(message.len() + field.len());
    let mut rest = message;
    let mut dropping = false;
    let mut written = false;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            dropping = is_field(line, "Subject");
            if dropping && !written {
                out.extend_from_slice(field.as_bytes());
                written = true;
            }
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        rest = &rest[end..];
    }
    if !written {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(rest);
    out
}

/// `line` starts the field `name` (any case).
fn is_field(line: &[u8], name: &str) -> bool {
    let head = line.split(|b| *b == b':').next().unwrap_or_default();
    line.contains(&b':') && name.as_bytes().eq_ignore_ascii_case(head.trim_ascii_end())
}

/// `message` without the header fields named in `names` (any case), each
/// with its continuation lines; the body after the blank line is kept as
/// it is.
pub fn without_fields(message: &[u8], names: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    let mut dropping = false;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            dropping = names.iter().any(|n| is_field(line, n));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{with_subject, without_fields};

    #[test]
    fn the_subject_and_its_continuations_are_replaced_in_place() {
        let msg = b"From: a@b\r\nSUBJECT: old\r\n\tfolded\r\nTo: c@d\r\nSubject: second\r\n\r\nSubject: body\r\n";
        assert_eq!(
            with_subject(msg, "*** SPAM *** old"),
            b"From: a@b\r\nSubject: *** SPAM *** old\r\nTo: c@d\r\n\r\nSubject: body\r\n"
        );
    }

    #[test]
    fn a_message_without_subject_gets_one_at_the_end_of_its_header() {
        assert_eq!(
            with_subject(b"From: a@b\r\n\r\nbody\r\n", "new"),
            b"From: a@b\r\nSubject: new\r\n\r\nbody\r\n"
        );
        assert_eq!(
            with_subject(b"From: a@b", "new"),
            b"From: a@b\r\nSubject: new\r\n"
        );
        assert_eq!(
            with_subject(b"X-Subject: no\r\n\r\n", "new"),
            b"X-Subject: no\r\nSubject: new\r\n\r\n"
        );
    }

    #[test]
    fn named_fields_and_their_continuations_go_the_body_stays() {
        let msg = b"X-Spam: yes\r\nFrom: a@b\r\nx-spamd-result: forged\r\n\tmore\r\nSubject: s\r\n\r\nX-Spam: body\r\n";
        let out = without_fields(msg, &["X-Spam".into(), "X-Spamd-Result".into()]);
        assert_eq!(out, b"From: a@b\r\nSubject: s\r\n\r\nX-Spam: body\r\n");
        assert_eq!(without_fields(msg, &["Other".into()]), msg);
    }
}
