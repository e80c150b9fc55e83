//! The header fields a scanner asked to remove from the relayed message
//! (rspamd's `milter.remove_headers`: its own result headers, so a
//! client cannot send a forged `X-Spam` or `X-Spamd-Result` through).

use super::Session;
use crate::body::Body;
use crate::checks::rspamd::REMOVE_HEADERS;
use crate::facts::TEMPERROR;
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
        let mut fresh = Body::new(self.shared.config.limits.spill_threshold_bytes);
        match fresh.append(&kept) {
            Ok(()) => *body = fresh,
            Err(e) => log::error!("session {} cannot remove header fields: {e}", self.id),
        }
    }
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
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            dropping = line.contains(&b':')
                && names
                    .iter()
                    .any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii_end()));
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
    use super::without_fields;

    #[test]
    fn named_fields_and_their_continuations_go_the_body_stays() {
        let msg = b"X-Spam: yes\r\nFrom: a@b\r\nx-spamd-result: forged\r\n\tmore\r\nSubject: s\r\n\r\nX-Spam: body\r\n";
        let out = without_fields(msg, &["X-Spam".into(), "X-Spamd-Result".into()]);
        assert_eq!(out, b"From: a@b\r\nSubject: s\r\n\r\nX-Spam: body\r\n");
        assert_eq!(without_fields(msg, &["Other".into()]), msg);
    }
}
