//! A message as milters see and change it: its header fields in order
//! and its body, and the header and body modifications of SMFIR_ADDHEADER,
//! SMFIR_INSHEADER, SMFIR_CHGHEADER and SMFIR_REPLBODY applied to it.

/// One header field: its name and everything after the colon, folding
/// and final CRLF included, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The raw value after the colon, with its CRLF line ends.
    pub raw: Vec<u8>,
}

impl Field {
    /// A field from a milter's value: `\n` line ends become CRLF; without
    /// HDR_LEADSPC the value gets the usual single space after the colon.
    pub fn from_milter(name: &str, value: &str, leading_space: bool) -> Field {
        let mut raw = Vec::new();
        if !leading_space {
            raw.push(b' ');
        }
        let value = value.trim_end_matches(['\r', '\n']);
        let mut prev = 0u8;
        for &b in value.as_bytes() {
            if b == b'\n' && prev != b'\r' {
                raw.push(b'\r');
            }
            raw.push(b);
            prev = b;
        }
        raw.extend_from_slice(b"\r\n");
        Field {
            name: name.to_string(),
            raw,
        }
    }

    /// The value as the milter protocol carries it: line ends as `\n`
    /// (as Sendmail and Postfix send them), without the last one, and
    /// without the leading space unless HDR_LEADSPC was negotiated.
    pub fn milter_value(&self, leading_space: bool) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let text = text
            .strip_suffix("\r\n")
            .unwrap_or(&text)
            .replace("\r\n", "\n");
        if leading_space {
            text
        } else {
            text.trim_start_matches([' ', '\t']).to_string()
        }
    }
}

/// A message split into header fields and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// The header fields in order.
    pub fields: Vec<Field>,
    /// The body after the blank line.
    pub body: Vec<u8>,
    /// Whether the message had the blank line between header and body.
    separator: bool,
}

impl Edited {
    /// Splits `message` (CRLF line ends). Lines before the body that are
    /// not fields (no colon) end the header, as a mail server's parser does.
    pub fn parse(message: &[u8]) -> Edited {
        let mut fields: Vec<Field> = Vec::new();
        let mut pos = 0;
        let mut separator = false;
        while pos < message.len() {
            let end = message[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|i| pos + i + 2)
                .unwrap_or(message.len());
            let line = &message[pos..end];
            if line == b"\r\n" {
                separator = true;
                pos = end;
                break;
            }
            if matches!(line.first(), Some(b' ' | b'\t')) {
                if let Some(last) = fields.last_mut() {
                    last.raw.extend_from_slice(line);
                    pos = end;
                    continue;
                }
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            let name = String::from_utf8_lossy(&line[..colon])
                .trim_end()
                .to_string();
            if name.is_empty() || name.contains(' ') {
                break;
            }
            fields.push(Field {
                name,
                raw: line[colon + 1..].to_vec(),
            });
            pos = end;
        }
        Edited {
            fields,
            body: message[pos..].to_vec(),
            separator,
        }
    }

    /// The message back in wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(&f.raw);
            if !f.raw.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        if self.separator || !self.body.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// SMFIR_ADDHEADER: at the end of the header.
    pub fn add(&mut self, field: Field) {
        self.fields.push(field);
    }

    /// SMFIR_INSHEADER: before the field at `index` (0: the top), at the
    /// end when past it.
    pub fn insert(&mut self, index: u32, field: Field) {
        let at = (index as usize).min(self.fields.len());
        self.fields.insert(at, field);
    }

    /// SMFIR_CHGHEADER: the `index`-th (from 1; 0 counts as 1, as
    /// Sendmail) field named `name`, in any case, is replaced, or deleted
    /// when `value` is empty; a missing one is added when `value` is not
    /// empty, as Sendmail does.
    pub fn change(&mut self, index: u32, name: &str, value: &str, leading_space: bool) {
        let nth = index.max(1) as usize;
        let found = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
            .nth(nth - 1)
            .map(|(i, _)| i);
        let delete = value.trim().is_empty();
        match (found, delete) {
            (Some(i), true) => {
                self.fields.remove(i);
            }
            (Some(i), false) => {
                let name = self.fields[i].name.clone();
                self.fields[i] = Field::from_milter(&name, value, leading_space);
            }
            (None, true) => {}
            (None, false) => self.add(Field::from_milter(name, value, leading_space)),
        }
    }

    /// SMFIR_REPLBODY (all chunks joined): the new body, bare LF line ends
    /// made CRLF and a last line end added, as the wire needs.
    pub fn replace_body(&mut self, body: &[u8]) {
        let mut out = Vec::with_capacity(body.len() + 64);
        let mut prev = 0u8;
        for &b in body {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        self.separator = true;
        self.body = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: one\r\nSubject: a\r\n\tfolded\r\nreceived: two\r\n\r\nbody\r\n";

    #[test]
    fn fields_keep_their_folding_and_join_back_unchanged() {
        let m = Edited::parse(MSG);
        assert_eq!(m.fields.len(), 3);
        assert_eq!(m.fields[1].milter_value(false), "a\n\tfolded");
        assert_eq!(m.fields[1].milter_value(true), " a\n\tfolded");
        assert_eq!(m.body, b"body\r\n");
        assert_eq!(m.to_bytes(), MSG);
    }

    #[test]
    fn change_counts_fields_of_that_name_in_any_case() {
        let mut m = Edited::parse(MSG);
        m.change(2, "RECEIVED", "three", false);
        assert_eq!(m.fields[2].raw, b" three\r\n");
        m.change(1, "Received", "", false);
        assert_eq!(m.fields[0].name, "Subject");
        // No such field: a value adds it, an empty one does nothing.
        m.change(1, "X-New", "v\nw", false);
        assert_eq!(m.fields.last().unwrap().raw, b" v\r\nw\r\n");
        let before = m.fields.len();
        m.change(1, "X-Absent", "", false);
        assert_eq!(m.fields.len(), before);
    }

    #[test]
    fn insert_and_replace_body() {
        let mut m = Edited::parse(MSG);
        m.insert(
            0,
            Field::from_milter("DKIM-Signature", " v=1;\n\tb=x", true),
        );
        m.insert(99, Field::from_milter("X-Last", "z", false));
        m.replace_body(b"new\nlines");
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert!(out.starts_with("DKIM-Signature: v=1;\r\n\tb=x\r\nReceived: one\r\n"));
        assert!(out.ends_with("X-Last: z\r\n\r\nnew\r\nlines\r\n"), "{out}");
    }
}
