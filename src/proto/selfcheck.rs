//! Invariant checks over arbitrary input, shared by the fuzz targets in
//! `fuzz/` and the corpus replay test, so both assert exactly the same
//! things. Each function panics when an invariant is broken.

use super::{
    parse_command, BareLineEndings, BdatReceiver, DataReceiver, DotStuffer, LineReader, ReplyParser,
};

/// The line splitter and command parser never panic, and the splitter finds
/// the same lines however the bytes arrive.
pub fn check_commands(data: &[u8]) {
    let whole = split_lines(data, data.len());
    let split = split_lines(data, data.len() / 2 + 1);
    assert_eq!(whole, split, "line splitting depends on how bytes arrive");
    for line in whole.into_iter().flatten() {
        let _ = parse_command(&line, false);
        let _ = parse_command(&line, true);
    }
}

/// Lines found in `data` delivered `chunk` bytes at a time (`None` for an
/// over-long line).
fn split_lines(data: &[u8], chunk: usize) -> Vec<Option<Vec<u8>>> {
    let mut reader = LineReader::new(512);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let (used, line) = reader.next_line(&buf);
            let found = match &line {
                Some(Ok(range)) => Some(Some(buf[range.clone()].to_vec())),
                Some(Err(_)) => Some(None),
                None => None,
            };
            buf.drain(..used);
            match found {
                Some(l) => out.push(l),
                None => break,
            }
        }
    }
    out
}

/// The DATA receiver never panics, gives the same result however its input
/// is split, and what the dot-stuffer makes of its output ends exactly once,
/// at the real end: no input can smuggle an early end upstream.
pub fn check_data(data: &[u8]) {
    for policy in [BareLineEndings::Reject, BareLineEndings::Normalize] {
        let whole = receive(policy, data, data.len().max(1));
        let split = receive(policy, data, 3);
        assert_eq!(whole, split, "DATA decoding depends on how bytes arrive");
        let (message, consumed, done) = whole;
        if !done {
            assert_eq!(consumed, data.len());
            continue;
        }
        let wire = stuff_both_ways(&message, 3);
        let mut again = DataReceiver::new(BareLineEndings::Reject, 0);
        let mut out = Vec::new();
        let fed = again.feed(&wire, &mut out);
        assert!(fed.done, "re-encoded message has no end");
        assert_eq!(fed.consumed, wire.len(), "re-encoded message ends early");
        assert_eq!(again.error(), None, "re-encoded message is not canonical");
        assert_eq!(out, message, "re-encoded message changed");
    }
}

/// A receiver's `message` encoded for DATA by the general encoder, after
/// checking that the canonical one, fed `chunk`-sized pieces, writes the
/// same bytes.
fn stuff_both_ways(message: &[u8], chunk: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.encode(message, &mut wire);
    stuffer.finish(&mut wire);
    let mut canonical = Vec::new();
    let mut stuffer = DotStuffer::new();
    for piece in message.chunks(chunk) {
        stuffer.encode_canonical(piece, &mut canonical);
    }
    stuffer.finish(&mut canonical);
    assert_eq!(canonical, wire, "the canonical encoder differs");
    wire
}

/// Feeds `data` in `chunk`-sized pieces; returns (message, consumed, done).
fn receive(policy: BareLineEndings, data: &[u8], chunk: usize) -> (Vec<u8>, usize, bool) {
    let mut rx = DataReceiver::new(policy, 1000);
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in data.chunks(chunk) {
        let fed = rx.feed(piece, &mut out);
        consumed += fed.consumed;
        if fed.done {
            return (out, consumed, true);
        }
    }
    (out, consumed, false)
}

/// The reply parser never panics, never finds a reply complete before its
/// end, and every reply it accepts writes back out as a reply that parses
/// to the same code and enhanced code.
pub fn check_reply(data: &[u8]) {
    let parser = ReplyParser::new();
    let Ok(Some((reply, used))) = parser.parse(data) else {
        return;
    };
    assert!(used <= data.len());
    if used > 1 {
        if let Ok(Some((early, _))) = parser.parse(&data[..used - 1]) {
            panic!("reply complete before its end: {early:?}");
        }
    }
    let wire = reply.to_bytes();
    let (again, n) = match parser.parse(&wire) {
        Ok(Some(parsed)) => parsed,
        other => panic!("our own reply does not parse: {other:?} for {wire:?}"),
    };
    assert_eq!(n, wire.len());
    assert_eq!(again.code, reply.code);
    assert_eq!(again.enhanced, reply.enhanced);
}

/// The PROXY header parser never panics; reading exactly what it asks for,
/// piece by piece, gives the same answer as parsing all the bytes at once
/// and never takes a byte past the header (those belong to the client);
/// and every header it accepts writes back out as a header that parses to
/// the same thing.
pub fn check_proxy(data: &[u8]) {
    use super::proxy::{encode_v1, encode_v2, parse, Parse, V1_MAX_LEN, V2_MAX_LEN};
    let whole = parse(data);
    let mut taken = 0;
    let piecewise = loop {
        match parse(&data[..taken]) {
            Ok(Parse::Need(n)) => {
                assert!(n >= 1, "asks for nothing at {taken} bytes");
                let bound = if data.first() == Some(&b'P') {
                    V1_MAX_LEN
                } else {
                    V2_MAX_LEN
                };
                assert!(taken + n <= bound, "asks past the longest header");
                if taken == data.len() {
                    break Ok(Parse::Need(n));
                }
                taken = (taken + n).min(data.len());
            }
            other => break other,
        }
    };
    assert_eq!(
        whole, piecewise,
        "PROXY parsing depends on how bytes arrive"
    );
    if let Ok(Parse::Done { header, len }) = whole {
        assert!(len <= data.len());
        assert_eq!(taken, len, "read past the end of the header");
        let again = match header.version {
            1 => encode_v1(header.addresses.as_ref()),
            _ => encode_v2(header.addresses.as_ref(), &[]),
        };
        match parse(&again) {
            Ok(Parse::Done { header: h, len: n }) => {
                assert_eq!(n, again.len());
                assert_eq!(h, header, "re-encoded header differs");
            }
            other => panic!("our own header does not parse: {other:?} for {again:?}"),
        }
    }
}

/// The BDAT receiver never panics, gives the same message however the
/// octets are split into chunks (the first input byte picks a chunk size),
/// and what it produces, relayed as DATA, ends exactly once at its end: a
/// BDAT message can never become two upstream messages.
pub fn check_bdat(data: &[u8]) {
    let Some((&first, message)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    for policy in [BareLineEndings::Reject, BareLineEndings::Normalize] {
        let whole = receive_bdat(policy, message, message.len().max(1));
        let split = receive_bdat(policy, message, chunk);
        assert_eq!(whole, split, "BDAT decoding depends on chunking");
        let (message, _) = whole;
        let wire = stuff_both_ways(&message, chunk);
        let mut again = DataReceiver::new(BareLineEndings::Reject, 0);
        let mut out = Vec::new();
        let fed = again.feed(&wire, &mut out);
        assert!(fed.done, "BDAT message relayed as DATA has no end");
        assert_eq!(
            fed.consumed,
            wire.len(),
            "BDAT message relayed as DATA ends early"
        );
        assert_eq!(again.error(), None, "BDAT message is not canonical");
        let mut expected = message.clone();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(out, expected, "BDAT message relayed as DATA changed");
    }
}

/// Feeds `data` to a BDAT receiver in `chunk`-sized chunks; returns (message, error).
fn receive_bdat(
    policy: BareLineEndings,
    data: &[u8],
    chunk: usize,
) -> (Vec<u8>, Option<super::DataError>) {
    let mut rx = BdatReceiver::new(policy, 1000);
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        rx.feed(piece, &mut out);
    }
    rx.finish(&mut out);
    (out, rx.error())
}
