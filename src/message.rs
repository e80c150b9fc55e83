//! A read-only view of a received message for data-stage filters: its
//! header fields (parsed once per message, unfolded and RFC 2047-decoded),
//! its body line by line, and its MIME structure (attachment names, decoded
//! text parts).
//!
//! Header and MIME parsing is done by `mail-parser`; this module only cuts
//! the header block out of the body and reads the body back in bounded
//! chunks, so a message that spilled to disk is never read into memory
//! whole except for MIME parsing, which callers bound with a size limit.

pub mod header_value;

use crate::body::Body;
use mail_parser::{HeaderName, MessageParser, MimeHeaders, PartType};
use std::borrow::Cow;
use std::io;

/// Largest header block read from a message on disk; a longer one is cut at
/// its last complete line. Far above anything legitimate (each line is at
/// most `limits.max_text_line`), it bounds memory against abuse.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Chunk size for reading a body back from disk.
const CHUNK: usize = 64 * 1024;

/// Nested `message/rfc822` parts looked into for attachments and text.
const MAX_NESTING: usize = 8;

/// The received message, for data-stage filters.
pub struct Message<'a> {
    /// The message bytes (dot-unstuffed, CRLF); may live in a temporary file.
    pub body: &'a mut Body,
    /// The header fields, parsed on first use.
    headers: Option<Headers>,
}

impl<'a> Message<'a> {
    /// A view of `body`; nothing is parsed until asked for.
    pub fn new(body: &'a mut Body) -> Self {
        Message {
            body,
            headers: None,
        }
    }

    /// Size of the message in bytes.
    pub fn size(&self) -> u64 {
        self.body.len()
    }

    /// The header fields, parsed on the first call and kept, so every
    /// filter and rule shares one parse.
    pub fn headers(&mut self) -> io::Result<&Headers> {
        if self.headers.is_none() {
            let block = header_block(self.body)?;
            self.headers = Some(Headers::parse(&block.bytes, block.body_offset));
        }
        Ok(self.headers.get_or_insert_with(Headers::default))
    }

    /// Calls `f` with the body (after the header block) in blocks of whole
    /// lines, line endings included, until `f` returns false: one block for
    /// a message in memory, blocks of about 64 KiB read in turn for one on
    /// disk. A matcher can then test a whole block at once and look at its
    /// lines only when the block matches.
    pub fn for_each_body_block(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        let offset = self.headers()?.body_offset();
        if !self.body.is_spilled() {
            let data = self.body.head();
            let start = (offset as usize).min(data.len());
            if start < data.len() {
                f(&data[start..]);
            }
            return Ok(());
        }
        let mut chunks = self.body.chunks(CHUNK)?;
        let mut buf = Vec::new();
        let mut block: Vec<u8> = Vec::new();
        let mut seen: u64 = 0;
        while chunks.next_into(&mut buf)? {
            let chunk_start = seen;
            seen += buf.len() as u64;
            if seen <= offset {
                continue;
            }
            let skip = offset.saturating_sub(chunk_start) as usize;
            block.extend_from_slice(&buf[skip..]);
            // Hand out whole lines; keep the partial last one for the next
            // block. Lines are bounded on receipt (limits.max_text_line);
            // a block without any line break is handed out as it is.
            let cut = match block.iter().rposition(|&b| b == b'\n') {
                Some(pos) => pos + 1,
                None if block.len() > CHUNK => block.len(),
                None => continue,
            };
            if !f(&block[..cut]) {
                return Ok(());
            }
            block.drain(..cut);
        }
        if !block.is_empty() {
            f(&block);
        }
        Ok(())
    }

    /// Calls `f` with each body line (after the header block), without its
    /// line ending, until `f` returns false. A message on disk is read in
    /// bounded chunks.
    pub fn for_each_body_line(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        let mut go = true;
        self.for_each_body_block(|block| {
            for line in lines(block) {
                if !f(line) {
                    go = false;
                    break;
                }
            }
            go
        })
    }

    /// The whole message in memory, or `None` when it is larger than
    /// `limit` bytes. A message in memory is borrowed, not copied.
    pub fn bytes(&mut self, limit: u64) -> io::Result<Option<Cow<'_, [u8]>>> {
        if self.body.len() > limit {
            return Ok(None);
        }
        if !self.body.is_spilled() {
            return Ok(Some(Cow::Borrowed(self.body.head())));
        }
        let mut out = Vec::with_capacity(self.body.len() as usize);
        let mut chunks = self.body.chunks(CHUNK)?;
        let mut buf = Vec::new();
        while chunks.next_into(&mut buf)? {
            out.extend_from_slice(&buf);
        }
        Ok(Some(Cow::Owned(out)))
    }
}

/// The lines of a block of whole lines, without their line endings (and
/// without the empty piece after a final line break).
pub fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let block = block.strip_suffix(b"\n").unwrap_or(block);
    let empty = block.is_empty();
    block
        .split(|&b| b == b'\n')
        .filter(move |_| !empty)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The header block of a message and where its body starts.
struct Block<'b> {
    /// The header lines with their line endings (and the blank line).
    bytes: Cow<'b, [u8]>,
    /// Offset of the first body byte.
    body_offset: u64,
}

/// Cuts the header block out of the message: up to and including the first
/// empty line, or the whole message when there is none.
fn header_block(body: &mut Body) -> io::Result<Block<'_>> {
    let found = header_end(body.head());
    if found.is_some() || !body.is_spilled() {
        let head = body.head();
        let end = found.unwrap_or(head.len());
        return Ok(Block {
            bytes: Cow::Borrowed(&head[..end]),
            body_offset: end as u64,
        });
    }
    // Spilled and the header block is longer than what stayed in memory.
    let mut block = Vec::new();
    let mut chunks = body.chunks(CHUNK)?;
    let mut buf = Vec::new();
    while chunks.next_into(&mut buf)? {
        let from = block.len().saturating_sub(3);
        block.extend_from_slice(&buf);
        let end = if from == 0 {
            header_end(&block)
        } else {
            find_blank_line(&block[from..]).map(|e| from + e)
        };
        if let Some(end) = end {
            block.truncate(end);
            break;
        }
        if block.len() >= MAX_HEADER_BLOCK {
            block.truncate(MAX_HEADER_BLOCK);
            if let Some(last) = block.iter().rposition(|&b| b == b'\n') {
                block.truncate(last + 1);
            }
            break;
        }
    }
    let offset = block.len() as u64;
    Ok(Block {
        bytes: Cow::Owned(block),
        body_offset: offset,
    })
}

/// The offset of the first body byte when `data` holds the end of the
/// header block: after the first empty line, which may be the very first
/// line (a message without header fields).
fn header_end(data: &[u8]) -> Option<usize> {
    if data.starts_with(b"\r\n") {
        return Some(2);
    }
    if data.starts_with(b"\n") {
        return Some(1);
    }
    find_blank_line(data)
}

/// The offset just after the first empty line (`\r\n\r\n` or `\n\n`).
fn find_blank_line(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = data[i..].iter().position(|&b| b == b'\n') {
        let at = i + pos;
        let next = &data[at + 1..];
        if next.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        if next.starts_with(b"\n") {
            return Some(at + 2);
        }
        i = at + 1;
    }
    None
}

/// One header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    /// The field name as written in the message.
    pub name: String,
    /// The value unfolded (line breaks of folding removed) and trimmed, not
    /// decoded.
    pub raw: String,
    /// The value with RFC 2047 encoded words decoded, unfolded and trimmed.
    pub decoded: String,
}

/// The header fields of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every field, in message order.
    fields: Vec<HeaderField>,
    /// Offset of the first body byte in the message.
    body_offset: u64,
    /// The message is one text part whose decoded text is its body as is
    /// (see [`Headers::is_plain_text`]).
    plain_text: bool,
}

impl Headers {
    /// Parses a header block (`mail-parser` does the work; every field is
    /// decoded as unstructured text so that encoded words anywhere, display
    /// names included, are decoded).
    pub fn parse(block: &[u8], body_offset: u64) -> Headers {
        let mut fields = Vec::new();
        if !block.is_empty() {
            // A non-empty header map makes the default parser apply to every
            // field, known ones included.
            let parser = MessageParser::new()
                .default_header_text()
                .header_text(HeaderName::Subject);
            if let Some(parsed) = parser.parse_headers(block) {
                for h in parsed.headers() {
                    let start = (h.offset_start as usize).min(block.len());
                    let end = (h.offset_end as usize).clamp(start, block.len());
                    let raw = unfold(&String::from_utf8_lossy(&block[start..end]));
                    let decoded = match h.value.as_text() {
                        Some(t) => unfold(t),
                        None => raw.clone(),
                    };
                    fields.push(HeaderField {
                        name: h.name.as_str().to_string(),
                        raw,
                        decoded,
                    });
                }
            }
        }
        Headers {
            plain_text: plain_text(block),
            fields,
            body_offset,
        }
    }

    /// True when the message is a single text part (no MIME type, or
    /// `text/*`), without a file name, not base64 or quoted-printable
    /// (7bit, 8bit or binary), in US-ASCII or UTF-8: its decoded text is
    /// then its body as it is, and it has no attachment, so rules that look
    /// at MIME structure need not parse it.
    pub fn is_plain_text(&self) -> bool {
        self.plain_text
    }

    /// Every field, in message order.
    pub fn fields(&self) -> &[HeaderField] {
        &self.fields
    }

    /// The fields named `name` (case-insensitive), in order.
    pub fn get<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s HeaderField> + 's {
        self.fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
    }

    /// The first field named `name`.
    pub fn first(&self, name: &str) -> Option<&HeaderField> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Offset of the first body byte in the message.
    pub fn body_offset(&self) -> u64 {
        self.body_offset
    }
}

/// See [`Headers::is_plain_text`]; the MIME fields are read with
/// `mail-parser`'s own parsers.
fn plain_text(block: &[u8]) -> bool {
    let Some(parsed) = MessageParser::new().parse_headers(block) else {
        return true;
    };
    let part = parsed.root_part();
    if let Some(ct) = part.content_type() {
        let charset_ok = ct.attribute("charset").is_none_or(|c| {
            ["us-ascii", "ascii", "utf-8", "utf8"]
                .iter()
                .any(|ok| c.eq_ignore_ascii_case(ok))
        });
        if !ct.c_type.eq_ignore_ascii_case("text") || !charset_ok || ct.attribute("name").is_some()
        {
            return false;
        }
    }
    if let Some(cd) = part.content_disposition() {
        if cd.attribute("filename").is_some() {
            return false;
        }
    }
    part.content_transfer_encoding().is_none_or(|cte| {
        ["7bit", "8bit", "binary"]
            .iter()
            .any(|ok| cte.trim().eq_ignore_ascii_case(ok))
    })
}

/// Removes folding (a line break followed by white space keeps the white
/// space) and trims the ends.
fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {}
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// What MIME parsing finds in a message: attachment file names and the
/// decoded text of its text parts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MimeFacts {
    /// File names of parts that carry one (attachments and named inline
    /// parts), nested messages included.
    pub attachment_names: Vec<String>,
    /// Decoded (transfer encoding and charset) text of `text/*` parts.
    pub texts: Vec<String>,
}

impl MimeFacts {
    /// Parses `raw` (a whole message) with `mail-parser`.
    pub fn parse(raw: &[u8]) -> MimeFacts {
        let mut facts = MimeFacts::default();
        if let Some(msg) = MessageParser::new().parse(raw) {
            facts.collect(&msg, 0);
        }
        facts
    }

    /// Adds what `msg` holds, descending into nested messages.
    fn collect(&mut self, msg: &mail_parser::Message<'_>, depth: usize) {
        for part in &msg.parts {
            if let Some(name) = part.attachment_name() {
                self.attachment_names.push(name.to_string());
            }
            match &part.body {
                PartType::Text(t) | PartType::Html(t) => self.texts.push(t.to_string()),
                PartType::Message(inner) if depth < MAX_NESTING => self.collect(inner, depth + 1),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8], threshold: usize) -> Body {
        let mut b = Body::new(threshold);
        b.append(bytes).unwrap();
        b
    }

    const MSG: &[u8] = b"Subject: =?UTF-8?B?WW91IGhhdmUgd29u?= a\r\n\
X-Long: one\r\n two\r\n\tthree\r\n\
From: =?ISO-8859-1?Q?Andr=E9?= <a@example.com>\r\n\
subject: second\r\n\
\r\n\
line one\r\nline two\r\n\r\nlast";

    #[test]
    fn headers_are_unfolded_decoded_and_case_insensitive() {
        for threshold in [4096, 10, 0] {
            let mut b = body(MSG, threshold);
            let mut m = Message::new(&mut b);
            let h = m.headers().unwrap().clone();
            let subjects: Vec<_> = h.get("SUBJECT").map(|f| f.decoded.as_str()).collect();
            assert_eq!(subjects, ["You have won a", "second"], "{threshold}");
            assert_eq!(
                h.first("subject").unwrap().raw,
                "=?UTF-8?B?WW91IGhhdmUgd29u?= a"
            );
            assert_eq!(h.first("x-long").unwrap().raw, "one two\tthree");
            assert!(h.first("from").unwrap().decoded.starts_with("André"));
            assert!(h.first("To").is_none());
            let mut lines = Vec::new();
            m.for_each_body_line(|l| {
                lines.push(String::from_utf8_lossy(l).to_string());
                true
            })
            .unwrap();
            assert_eq!(lines, ["line one", "line two", "", "last"], "{threshold}");
        }
    }

    #[test]
    fn plain_text_is_recognised() {
        let cases: &[(&str, bool)] = &[
            ("Subject: x\r\n\r\n", true),
            (
                "Content-Type: text/plain; charset=\"US-ASCII\"\r\n\r\n",
                true,
            ),
            (
                "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
                true,
            ),
            (
                "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n",
                false,
            ),
            (
                "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                false,
            ),
            ("Content-Type: multipart/mixed; boundary=b\r\n\r\n", false),
            ("Content-Type: application/pdf\r\n\r\n", false),
            ("Content-Type: text/plain; name=a.txt\r\n\r\n", false),
            (
                "Content-Disposition: attachment; filename=run.exe\r\n\r\n",
                false,
            ),
        ];
        for (block, want) in cases {
            let h = Headers::parse(block.as_bytes(), block.len() as u64);
            assert_eq!(h.is_plain_text(), *want, "{block}");
        }
    }

    #[test]
    fn no_headers_and_no_body() {
        let mut b = body(b"\r\nbody only\r\n", 100);
        let mut m = Message::new(&mut b);
        assert!(m.headers().unwrap().fields().is_empty());
        assert_eq!(m.headers().unwrap().body_offset(), 2);
        let mut b = body(b"Subject: x\r\n", 100);
        let mut m = Message::new(&mut b);
        assert_eq!(m.headers().unwrap().fields().len(), 1);
        let mut n = 0;
        m.for_each_body_line(|_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 0, "no body, no lines");
    }

    #[test]
    fn spilled_lines_across_chunks() {
        let mut msg = b"Subject: big\r\n\r\n".to_vec();
        for i in 0..20_000 {
            msg.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let mut b = body(&msg, 16);
        let mut m = Message::new(&mut b);
        let mut count = 0;
        let mut last = String::new();
        m.for_each_body_line(|l| {
            count += 1;
            last = String::from_utf8_lossy(l).to_string();
            true
        })
        .unwrap();
        // 20 000 lines and the empty piece after the final CRLF is not reported
        // by the chunked reader.
        assert_eq!(count, 20_000);
        assert_eq!(last, "line 19999");
        assert_eq!(m.bytes(10).unwrap(), None);
        assert_eq!(m.bytes(u64::MAX).unwrap().unwrap().len(), msg.len());
    }

    #[test]
    fn mime_attachments_and_decoded_text() {
        let raw = b"Subject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
Q2hlYXAgcGlsbHMgaGVyZQ==\r\n\
--b\r\nContent-Type: application/octet-stream; name=\"invoice.EXE\"\r\n\
Content-Disposition: attachment; filename=\"invoice.EXE\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
AAAA\r\n--b--\r\n";
        let facts = MimeFacts::parse(raw);
        assert_eq!(facts.attachment_names, ["invoice.EXE"]);
        assert!(facts.texts.iter().any(|t| t.contains("Cheap pills here")));
    }
}
