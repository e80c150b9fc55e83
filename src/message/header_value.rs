//! Unstructured header values (a Subject) between text and the header:
//! [`decode`] reads one a scanner wrote (encoded words and all, through
//! `mail-parser`); [`encode`] writes one: plain folded ASCII when it can
//! be, RFC 2047 encoded words (`=?UTF-8?B?...?=`) when it holds anything
//! else, and never a line break that is not a fold, so a value from a
//! scanner cannot add header fields.

use base64::Engine as _;

/// The longest line the value is folded to, the field name included
/// (RFC 5322 §2.1.1 recommends 78).
const FOLD_AT: usize = 78;

/// UTF-8 bytes per encoded word: 39 bytes are 52 base64 characters, so
/// `=?UTF-8?B?` + 52 + `?=` is 64, within RFC 2047's 75.
const WORD_BYTES: usize = 39;

/// `text` as the value of the field `name` (what follows `Name: `, without
/// the final CRLF): control characters become spaces, whitespace runs one
/// space; printable ASCII is folded at spaces, anything else (or text that
/// would read as an encoded word, or a word too long to fold) is written
/// as UTF-8 encoded words, one per line.
pub fn encode(name: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = clean.split_whitespace().collect();
    let plain = words
        .iter()
        .all(|w| w.is_ascii() && !w.contains("=?") && w.len() + 1 < FOLD_AT);
    if plain {
        fold(name, &words)
    } else {
        encoded_words(&words.join(" "))
    }
}

/// The text of the header value `raw` (RFC 2047 encoded words decoded,
/// unfolded, on one line); `raw` itself, on one line, when it does not
/// parse as a header value.
pub fn decode(raw: &str) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let field = format!("Subject: {}\r\n\r\n", one_line(raw));
    mail_parser::MessageParser::default()
        .parse(field.as_bytes())
        .and_then(|m| m.subject().map(one_line))
        .unwrap_or_else(|| one_line(raw))
}

/// Printable ASCII words joined by spaces, folded before a word that
/// would pass [`FOLD_AT`].
fn fold(name: &str, words: &[&str]) -> String {
    let mut out = String::new();
    let mut line = name.len() + 2;
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            if line + 1 + w.len() > FOLD_AT {
                out.push_str("\r\n");
                line = 0;
            }
            out.push(' ');
            line += 1;
        }
        out.push_str(w);
        line += w.len();
    }
    out
}

/// `text` as UTF-8 "B" encoded words, each on its own folded line (the
/// whitespace between adjacent encoded words is not part of the text).
fn encoded_words(text: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut words = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + WORD_BYTES).min(text.len());
        // A character is never split across two words (RFC 2047 §5).
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!("=?UTF-8?B?{}?=", b64.encode(&text[start..end])));
        start = end;
    }
    words.join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn ascii_stays_plain_and_folds_at_spaces() {
        assert_eq!(
            encode("Subject", "*** SPAM ***  hello"),
            "*** SPAM *** hello"
        );
        let long = "word ".repeat(30);
        let v = encode("Subject", &long);
        assert!(v.contains("\r\n "), "{v}");
        for line in format!("Subject: {v}").split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
        }
        assert_eq!(v.replace("\r\n", ""), long.trim_end());
    }

    #[test]
    fn a_scanners_value_decodes_to_its_text() {
        assert_eq!(
            decode("=?UTF-8?Q?=2A=2A=2A_SPAM_=2A=2A=2A_Gr=C3=BC=C3=9Fe_a?= =?UTF-8?Q?us_Koeln?="),
            "*** SPAM *** Grüße aus Koeln"
        );
        assert_eq!(
            decode("*** SPAM *** Grüße\r\n\tBcc: x@y"),
            "*** SPAM *** Grüße Bcc: x@y"
        );
        assert_eq!(decode(""), "");
    }

    #[test]
    fn line_breaks_cannot_add_a_field() {
        let v = encode("Subject", "hi\r\nBcc: victim@example.com\n");
        assert_eq!(v, "hi Bcc: victim@example.com");
    }

    #[test]
    fn non_ascii_is_encoded_words_that_decode_back() {
        let text = "*** SPAM *** Grüße aus Köln, größer als ein Wort: ".repeat(3);
        let v = encode("Subject", &text);
        assert!(v.is_ascii(), "{v}");
        assert!(v.starts_with("=?UTF-8?B?"), "{v}");
        let msg = format!("Subject: {v}\r\n\r\nbody\r\n");
        let parsed = mail_parser::MessageParser::default()
            .parse(msg.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject().unwrap(), text.trim_end());
        for line in msg.split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
        }
        assert_eq!(decode(&v), text.trim_end());
        // Text that would read as an encoded word is encoded itself.
        assert!(encode("Subject", "=?x?Q?y?=").starts_with("=?UTF-8?B?"));
    }
}
