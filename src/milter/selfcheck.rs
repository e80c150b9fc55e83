//! Invariants of the milter reply parser and of the message editor,
//! shared by the fuzz target (`fuzz/fuzz_targets/milter_reply.rs`) and
//! the seed replay test: nothing panics, bytes fed in two pieces decode
//! as when fed at once, an accepted `replycode` is a 4xx/5xx reply, and a
//! message split and joined again splits the same way.

use super::codec::{parse_replycode, Decoder, Response};
use super::edit::Edited;

fn decode_all(pieces: &[&[u8]]) -> Vec<Result<Response, String>> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        d.feed(piece);
        loop {
            match d.next_response() {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

/// Checks the invariants on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    let whole = decode_all(&[data]);
    let cut = data.len() / 2;
    let split = decode_all(&[&data[..cut], &data[cut..]]);
    assert_eq!(whole, split, "decoding depends on how the bytes arrive");
    for r in whole.iter().flatten() {
        if let Response::ReplyCode(text) = r {
            if let Some((code, _, lines)) = parse_replycode(text) {
                assert!((400..600).contains(&code));
                assert!(!lines.is_empty());
                let _ = super::custom_reply(text);
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_replycode(&text);
    let once = Edited::parse(data).to_bytes();
    let twice = Edited::parse(&once).to_bytes();
    assert_eq!(once, twice, "a joined message splits differently");
}
