//! The DATA receiver (dot-unstuffing, end-of-data detection, bare line-ending
//! policy) and the DATA encoder (dot-stuffing) (RFC 5321 §4.5.2).
//!
//! This is the SMTP-smuggling defence (design invariant 3). The receiver
//! ends the message only at `<CRLF>.<CRLF>`; a bare CR or bare LF is never a
//! line ending, so `\n.\n`, `\r.\r`, `\n.\r\n`... are content, never an end.
//! The encoder writes strictly canonical CRLF with every leading dot doubled,
//! so whatever the client sent, the upstream can only see the end we send.

use std::fmt;

/// What to do with a CR not followed by LF, or an LF not preceded by CR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BareLineEndings {
    /// Refuse the message after its end (RFC 5321 §2.3.8); the safe default.
    #[default]
    Reject,
    /// Accept, writing each bare CR or LF as CRLF, for lenient old clients.
    Normalize,
}

/// A problem in the message, found while receiving it; the session answers
/// it once the end of data has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// An LF not preceded by CR (policy `Reject`).
    BareLf,
    /// A CR not followed by LF (policy `Reject`).
    BareCr,
    /// A line longer than the limit (RFC 5321 §4.5.3.1.6).
    LineTooLong,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataError::BareLf => "Bare LF in message",
            DataError::BareCr => "Bare CR in message",
            DataError::LineTooLong => "Line too long in message",
        })
    }
}

impl std::error::Error for DataError {}

/// The result of one [`DataReceiver::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes used; the rest (after the end of data) belongs to the
    /// next commands and must stay in the session's buffer.
    pub consumed: usize,
    /// The end-of-data line has been read.
    pub done: bool,
}

/// Where the receiver stands in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line after a real CRLF (or the start of the data):
    /// the only place where a dot is special.
    LineStart,
    /// Read a `.` at `LineStart`; it is dropped whatever follows.
    Dot,
    /// Read `.` CR at `LineStart`: an LF now ends the data.
    DotCr,
    /// Inside a line, or at the start of a line that followed a bare CR/LF.
    Mid,
    /// Read a CR; the next byte says whether it ends a line or is bare.
    Cr,
    /// The end of data has been read; nothing more is consumed.
    Done,
}

/// Decodes the DATA stream (RFC 5321 §4.5.2) into the message.
#[derive(Clone, Debug)]
pub struct DataReceiver {
    /// What to do with bare CR/LF.
    policy: BareLineEndings,
    /// Longest line, CRLF included; 0 = unlimited.
    max_line: usize,
    /// Position in the line structure; holds a CR split off at a chunk end.
    state: State,
    /// Bytes of the current line so far, line ending excluded (a stuffing
    /// dot counts: it is on the wire).
    line_len: usize,
    /// First problem seen; later ones are not interesting.
    error: Option<DataError>,
    /// Message bytes written to `out` so far.
    produced: u64,
}

impl DataReceiver {
    /// `max_line` counts CRLF (1000 per RFC 5321 §4.5.3.1.6); 0 = unlimited.
    pub fn new(policy: BareLineEndings, max_line: usize) -> Self {
        DataReceiver {
            policy,
            max_line,
            state: State::LineStart,
            line_len: 0,
            error: None,
            produced: 0,
        }
    }

    /// Consumes bytes of the DATA stream, appending the message (dot-unstuffed, canonical CRLF) to `out`.
    /// Stops right after the end-of-data line: `done` tells it was found, and bytes after it are NOT consumed (they are the client's next pipelined commands).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let start_len = out.len();
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            let b = input[pos];
            match self.state {
                State::LineStart => match b {
                    b'.' => {
                        self.add_content(1);
                        self.state = State::Dot;
                        pos += 1;
                    }
                    // Anything else is handled as the middle of a line.
                    _ => self.state = State::Mid,
                },
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                        pos += 1;
                    } else {
                        // Dot-stuffed line: the dot is dropped; the byte is
                        // read again as ordinary line content.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::Done;
                        pos += 1;
                    } else {
                        // "." then a bare CR: the dot was stuffing, the CR is bare.
                        self.bare(DataError::BareCr, out);
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.line_len = 0;
                        self.state = State::LineStart;
                        pos += 1;
                    } else {
                        // Not consumed: the byte after a bare CR is read in `Mid`.
                        self.bare(DataError::BareCr, out);
                    }
                }
                State::Mid => {
                    // A run of ordinary lines (each ended by CRLF, the next
                    // not starting with a dot) is copied as one block: the
                    // body of a large message is mostly such runs, and a
                    // copy and state change per line cost more than the
                    // SIMD search for the line end.
                    let run = pos;
                    loop {
                        let rest = &input[pos..];
                        let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                        self.add_content(n);
                        pos += n;
                        let ordinary_next = input.get(pos) == Some(&b'\r')
                            && input.get(pos + 1) == Some(&b'\n')
                            && input.get(pos + 2).is_some_and(|&b| b != b'.');
                        if !ordinary_next {
                            break;
                        }
                        pos += 2;
                        self.line_len = 0;
                    }
                    out.extend_from_slice(&input[run..pos]);
                    match input.get(pos) {
                        Some(b'\r') => {
                            self.state = State::Cr;
                            pos += 1;
                        }
                        Some(_) => {
                            // An LF without CR before it.
                            self.bare(DataError::BareLf, out);
                            pos += 1;
                        }
                        None => {}
                    }
                }
                State::Done => unreachable!("loop condition excludes Done"),
            }
        }
        self.produced += (out.len() - start_len) as u64;
        Fed {
            consumed: pos,
            done: self.state == State::Done,
        }
    }

    /// The first problem seen; the session reports it after the end of data.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Message bytes produced so far (for the size limit).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// True once the end-of-data line has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Counts `n` bytes of line content against the line limit.
    fn add_content(&mut self, n: usize) {
        self.line_len += n;
        if self.max_line != 0 && self.line_len + 2 > self.max_line {
            self.error.get_or_insert(DataError::LineTooLong);
        }
    }

    /// Handles a bare CR or LF. Under either policy it is written as CRLF so
    /// that `out` is always canonical (a bug upstream of the error check
    /// then still cannot forward a smuggling sequence); only `Reject` records
    /// it. The next line is not at a real line start: no dot is special there.
    fn bare(&mut self, kind: DataError, out: &mut Vec<u8>) {
        if self.policy == BareLineEndings::Reject {
            self.error.get_or_insert(kind);
        }
        out.extend_from_slice(b"\r\n");
        self.line_len = 0;
        self.state = State::Mid;
    }
}

/// Encodes a message for the DATA phase: dot-stuffing and canonical CRLF.
#[derive(Clone, Debug)]
pub struct DotStuffer {
    /// At the start of an output line, where a dot must be doubled.
    line_start: bool,
    /// The last input byte was a CR, already written as CRLF: an LF right
    /// after it is the rest of that CRLF and must not be written again.
    after_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// An encoder at the start of the message.
    pub fn new() -> Self {
        DotStuffer {
            line_start: true,
            after_cr: false,
        }
    }

    /// Appends `input` to `out`, doubling a '.' that begins a line; any bare CR or LF is written as CRLF so the output is always canonical.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut pos = 0;
        while pos < input.len() {
            if self.after_cr {
                self.after_cr = false;
                if input[pos] == b'\n' {
                    pos += 1;
                    continue;
                }
            }
            if self.line_start && input[pos] == b'.' {
                out.push(b'.');
            }
            let rest = &input[pos..];
            let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            out.extend_from_slice(&rest[..n]);
            pos += n;
            if n > 0 {
                self.line_start = false;
            }
            if let Some(&c) = input.get(pos) {
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                self.after_cr = c == b'\r';
                pos += 1;
            }
        }
    }

    /// Appends `input` to `out` like [`encode`](Self::encode), for input
    /// already in canonical CRLF (see [`DotStuffer::stuff_canonical`]).
    pub fn encode_canonical(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for piece in self.stuff_canonical(input) {
            out.extend_from_slice(piece);
        }
    }

    /// Encodes `input` like [`encode`](Self::encode) without copying it:
    /// the pieces are slices of `input` and, between them, the "." that
    /// doubles a line's leading dot; in order they are the encoded bytes.
    ///
    /// Only for input already in canonical CRLF (every CR followed by LF,
    /// every LF after a CR), as [`DataReceiver`] and the BDAT receiver
    /// produce it: then only the dots that begin lines need work, and a
    /// search for dots alone finds them (a large body is mostly base64,
    /// which has none). Other input would come out as it went in, bare CR
    /// or LF included: use [`encode`](Self::encode) for bytes of unknown
    /// shape.
    pub fn stuff_canonical<'a>(&mut self, input: &'a [u8]) -> StuffedPieces<'a> {
        let mut input = input;
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        let at_line_start = self.line_start;
        if let Some(&last) = input.last() {
            self.line_start = last == b'\n';
        }
        StuffedPieces {
            input,
            start: 0,
            dots: memchr::memchr_iter(b'.', input),
            at_line_start,
            dot_next: false,
        }
    }

    /// Ends the DATA: a CRLF if the content did not end with one, then ".\r\n".
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        // Ready for the next message on the same connection.
        *self = Self::new();
    }
}

/// The pieces of a canonical input as DATA carries it (see
/// [`DotStuffer::stuff_canonical`]).
pub struct StuffedPieces<'a> {
    /// The content being encoded.
    input: &'a [u8],
    /// Where the next piece of `input` starts.
    start: usize,
    /// The dots of `input`, in order.
    dots: memchr::Memchr<'a>,
    /// `input` begins a line (the previous content ended with CRLF).
    at_line_start: bool,
    /// The doubling "." comes next, before the piece from `start`.
    dot_next: bool,
}

impl<'a> Iterator for StuffedPieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.dot_next {
            self.dot_next = false;
            return Some(b".");
        }
        for dot in self.dots.by_ref() {
            let begins_line = match dot {
                0 => self.at_line_start,
                _ => self.input[dot - 1] == b'\n',
            };
            if !begins_line {
                continue;
            }
            let piece = &self.input[self.start..dot];
            self.start = dot;
            if piece.is_empty() {
                return Some(b".");
            }
            self.dot_next = true;
            return Some(piece);
        }
        if self.start < self.input.len() {
            let piece = &self.input[self.start..];
            self.start = self.input.len();
            return Some(piece);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Result of receiving a whole input: message, consumed, done, error.
    #[derive(Debug, PartialEq, Eq)]
    struct Received {
        out: Vec<u8>,
        consumed: usize,
        done: bool,
        error: Option<DataError>,
    }

    fn receive_chunks(policy: BareLineEndings, max_line: usize, chunks: &[&[u8]]) -> Received {
        let mut r = DataReceiver::new(policy, max_line);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for chunk in chunks {
            let fed = r.feed(chunk, &mut out);
            consumed += fed.consumed;
            if fed.done {
                done = true;
                break;
            }
            assert_eq!(
                fed.consumed,
                chunk.len(),
                "stopped early without end of data"
            );
        }
        assert_eq!(r.produced(), out.len() as u64);
        assert_eq!(r.is_done(), done);
        Received {
            out,
            consumed,
            done,
            error: r.error(),
        }
    }

    fn receive(policy: BareLineEndings, input: &[u8]) -> Received {
        receive_chunks(policy, 1000, &[input])
    }

    fn received(out: &[u8], consumed: usize, done: bool, error: Option<DataError>) -> Received {
        Received {
            out: out.to_vec(),
            consumed,
            done,
            error,
        }
    }

    #[test]
    fn ordinary_messages() {
        use BareLineEndings::Reject;
        let cases: &[(&[u8], Received)] = &[
            (b".\r\n", received(b"", 3, true, None)),
            (b".\r\nQUIT\r\n", received(b"", 3, true, None)),
            (b"\r\n.\r\n", received(b"\r\n", 5, true, None)),
            (
                b"Subject: x\r\n\r\nhi\r\n.\r\n",
                received(b"Subject: x\r\n\r\nhi\r\n", 21, true, None),
            ),
            (b"..\r\n.\r\n", received(b".\r\n", 7, true, None)),
            (b"...\r\n.\r\n", received(b"..\r\n", 8, true, None)),
            (
                b"a\r\n..b\r\n.\r\n",
                received(b"a\r\n.b\r\n", 11, true, None),
            ),
            (b"a\r\n.b\r\n.\r\n", received(b"a\r\nb\r\n", 10, true, None)),
            (b"a.\r\n.\r\n", received(b"a.\r\n", 7, true, None)),
            (b"a\r\n. \r\n.\r\n", received(b"a\r\n \r\n", 10, true, None)),
            (
                b"a\r\n.\r\nMAIL FROM:<x@y>\r\n",
                received(b"a\r\n", 6, true, None),
            ),
            (b"a\r\n.\r", received(b"a\r\n", 5, false, None)),
            (b"a\r\n", received(b"a\r\n", 3, false, None)),
            (b"a\r", received(b"a", 2, false, None)),
        ];
        for (input, want) in cases {
            assert_eq!(
                &receive(Reject, input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The smuggling sequences: each must be content, and only the real
    /// CRLF.CRLF after the smuggled command may end the data.
    const SMUGGLING: [&[u8]; 9] = [
        b"\n.\n",
        b"\r.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r.\n",
        b"\r.\r\n",
        b"\n.\r",
        b"\r\n.\r\r\n",
    ];

    fn smuggling_input(seq: &[u8]) -> Vec<u8> {
        let mut input = b"Subject: hi\r\n\r\nbody".to_vec();
        input.extend_from_slice(seq);
        input.extend_from_slice(
            b"MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n",
        );
        input
    }

    #[test]
    fn smuggling_never_ends_data_early() {
        for seq in SMUGGLING {
            let input = smuggling_input(seq);
            let real_end = input.len() - b"QUIT\r\n".len();
            for policy in [BareLineEndings::Reject, BareLineEndings::Normalize] {
                let got = receive(policy, &input);
                let name = String::from_utf8_lossy(seq);
                assert!(got.done, "{name:?} {policy:?}");
                assert_eq!(got.consumed, real_end, "{name:?} {policy:?}");
                assert!(
                    got.out.ends_with(b"DATA\r\nevil\r\n"),
                    "{name:?} {policy:?}"
                );
                // Byte at a time: still exactly one end, at the same place.
                let chunks: Vec<&[u8]> = input.chunks(1).collect();
                assert_eq!(
                    receive_chunks(policy, 1000, &chunks),
                    got,
                    "{name:?} {policy:?} bytewise"
                );
                // Whatever is produced, once stuffed again it cannot end the
                // upstream's DATA before the real end.
                let mut wire = Vec::new();
                let mut st = DotStuffer::new();
                st.encode(&got.out, &mut wire);
                st.finish(&mut wire);
                let again = receive(BareLineEndings::Reject, &wire);
                assert_eq!(
                    (again.done, again.consumed, again.error),
                    (true, wire.len(), None)
                );
                assert_eq!(again.out, got.out);
            }
        }
    }

    #[test]
    fn reject_policy_records_the_first_problem() {
        use BareLineEndings::Reject;
        let cases: &[(&[u8], DataError)] = &[
            (b"a\nb\r\n.\r\n", DataError::BareLf),
            (b"a\rb\r\n.\r\n", DataError::BareCr),
            (b"a\r\r\n.\r\n", DataError::BareCr),
            (b"\n.\n\r\n.\r\n", DataError::BareLf),
            (b"\r.\r\r\n.\r\n", DataError::BareCr),
            (b"x\r\n.\rx\r\n.\r\n", DataError::BareCr),
            (b"x\r\n.\nx\r\n.\r\n", DataError::BareLf),
            (b"a\rb\nc\r\n.\r\n", DataError::BareCr),
            (b"a\nb\rc\r\n.\r\n", DataError::BareLf),
        ];
        for (input, want) in cases {
            let got = receive(Reject, input);
            assert!(got.done, "{input:?}");
            assert_eq!(got.consumed, input.len(), "{input:?}");
            assert_eq!(got.error, Some(*want), "{input:?}");
        }
    }

    #[test]
    fn normalize_policy_output() {
        use BareLineEndings::Normalize;
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"a\nb\r\n.\r\n", b"a\r\nb\r\n", true),
            (b"a\rb\r\n.\r\n", b"a\r\nb\r\n", true),
            (b"a\r\r\n.\r\n", b"a\r\n\r\n", true),
            // After a bare ending no dot is removed and "." does not end.
            (b"a\n.\n.b\r\n.\r\n", b"a\r\n.\r\n.b\r\n", true),
            (b"a\n..\r\n.\r\n", b"a\r\n..\r\n", true),
            (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\r\nb\r\n", true),
            (b"\n\n.\r\n", b"\r\n\r\n.\r\n", false),
            (b"\r.\r\n", b"\r\n.\r\n", false),
        ];
        for (input, want, done) in cases {
            let got = receive(Normalize, input);
            let name = String::from_utf8_lossy(input);
            assert_eq!(
                (&got.out[..], got.done, got.error),
                (*want, *done, None),
                "{name:?}"
            );
        }
    }

    #[test]
    fn long_lines() {
        use BareLineEndings::Reject;
        let ok = [
            &b"12345678\r\n"[..],
            b".2345678\r\n",
            b"..345678\r\n",
            b".\r\n",
        ]
        .concat();
        assert_eq!(receive_chunks(Reject, 10, &[&ok]).error, None);
        let long = [&b"123456789\r\n"[..], b".\r\n"].concat();
        let got = receive_chunks(Reject, 10, &[&long]);
        assert_eq!((got.done, got.error), (true, Some(DataError::LineTooLong)));
        let stuffed = [&b"..3456789\r\n"[..], b".\r\n"].concat();
        assert_eq!(
            receive_chunks(Reject, 10, &[&stuffed]).error,
            Some(DataError::LineTooLong)
        );
        // First error wins.
        let both = [&b"123456789\r\na\nb\r\n"[..], b".\r\n"].concat();
        assert_eq!(
            receive_chunks(Reject, 10, &[&both]).error,
            Some(DataError::LineTooLong)
        );
        let both = [&b"a\n123456789\r\n"[..], b".\r\n"].concat();
        assert_eq!(
            receive_chunks(Reject, 10, &[&both]).error,
            Some(DataError::BareLf)
        );
        // 0 = unlimited.
        let huge = [&vec![b'x'; 100_000][..], b"\r\n.\r\n"].concat();
        assert_eq!(receive_chunks(Reject, 0, &[&huge]).error, None);
    }

    #[test]
    fn done_consumes_nothing_more() {
        let mut r = DataReceiver::new(BareLineEndings::Reject, 1000);
        let mut out = Vec::new();
        assert_eq!(
            r.feed(b"x\r\n.\r\nNOOP\r\n", &mut out),
            Fed {
                consumed: 6,
                done: true
            }
        );
        assert_eq!(
            r.feed(b"NOOP\r\n", &mut out),
            Fed {
                consumed: 0,
                done: true
            }
        );
        assert_eq!(out, b"x\r\n");
    }

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut st = DotStuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            st.encode(c, &mut out);
        }
        st.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (
                b"a\r\n.b\r\n..\r\nc.\r\n",
                b"a\r\n..b\r\n...\r\nc.\r\n.\r\n",
            ),
            (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
            (b"a\nb", b"a\r\nb\r\n.\r\n"),
            (b"a\rb", b"a\r\nb\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
            (b"a\r.\r", b"a\r\n..\r\n.\r\n"),
            (b"a\n\r.", b"a\r\n\r\n..\r\n.\r\n"),
            (b"a\r\r\n", b"a\r\n\r\n.\r\n"),
        ];
        for (input, want) in cases {
            let name = String::from_utf8_lossy(input);
            assert_eq!(stuff(&[input]), *want, "{name:?}");
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(stuff(&bytes), *want, "{name:?} bytewise");
        }
    }

    #[test]
    fn stuffer_is_reusable_after_finish() {
        let mut st = DotStuffer::new();
        let mut out = Vec::new();
        st.encode(b"a\r", &mut out);
        st.finish(&mut out);
        st.encode(b"\n.", &mut out);
        st.finish(&mut out);
        assert_eq!(out, b"a\r\n.\r\n\r\n..\r\n.\r\n");
    }

    /// Splits `input` at the given cut points.
    fn split<'a>(input: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([input.len()]) {
            chunks.push(&input[prev..p]);
            prev = p;
        }
        chunks
    }

    /// Byte soup rich in the characters that matter here.
    fn soup() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => Just(b'\r'),
                3 => Just(b'\n'),
                3 => Just(b'.'),
                2 => Just(b'a'),
                1 => any::<u8>(),
            ],
            0..120,
        )
    }

    fn policy() -> impl Strategy<Value = BareLineEndings> {
        prop_oneof![
            Just(BareLineEndings::Reject),
            Just(BareLineEndings::Normalize)
        ]
    }

    fn is_canonical(out: &[u8]) -> bool {
        out.iter().enumerate().all(|(i, &c)| match c {
            b'\r' => out.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && out[i - 1] == b'\r',
            _ => true,
        })
    }

    /// The receiver's state machine taken one byte at a time, with none of
    /// `feed`'s block copies: what `feed` must produce, whatever the input.
    fn feed_bytewise(r: &mut DataReceiver, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let start_len = out.len();
        let mut pos = 0;
        while pos < input.len() && r.state != State::Done {
            let b = input[pos];
            match r.state {
                State::LineStart if b == b'.' => {
                    r.add_content(1);
                    r.state = State::Dot;
                    pos += 1;
                }
                State::Dot if b == b'\r' => {
                    r.state = State::DotCr;
                    pos += 1;
                }
                State::LineStart | State::Dot => r.state = State::Mid,
                State::DotCr if b == b'\n' => {
                    r.state = State::Done;
                    pos += 1;
                }
                State::Cr if b == b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    r.line_len = 0;
                    r.state = State::LineStart;
                    pos += 1;
                }
                State::DotCr | State::Cr => r.bare(DataError::BareCr, out),
                State::Mid if b == b'\r' => {
                    // `feed` checks the line length on every line end,
                    // empty lines too (they matter for max_line < 2).
                    r.add_content(0);
                    r.state = State::Cr;
                    pos += 1;
                }
                State::Mid if b == b'\n' => {
                    r.add_content(0);
                    r.bare(DataError::BareLf, out);
                    pos += 1;
                }
                State::Mid => {
                    out.push(b);
                    r.add_content(1);
                    pos += 1;
                }
                State::Done => unreachable!("loop condition excludes Done"),
            }
        }
        r.produced += (out.len() - start_len) as u64;
        Fed {
            consumed: pos,
            done: r.state == State::Done,
        }
    }

    /// What a receiver made of a series of chunks: output, each feed's
    /// result, the problem found.
    type Run = (Vec<u8>, Vec<Fed>, Option<DataError>);

    /// Feeds `chunks` to two receivers, `feed` and [`feed_bytewise`], and
    /// returns what each produced.
    fn both_receivers(policy: BareLineEndings, max_line: usize, chunks: &[&[u8]]) -> (Run, Run) {
        let mut fast = DataReceiver::new(policy, max_line);
        let mut slow = fast.clone();
        let (mut fast_run, mut slow_run): (Run, Run) = Default::default();
        for c in chunks {
            fast_run.1.push(fast.feed(c, &mut fast_run.0));
            slow_run
                .1
                .push(feed_bytewise(&mut slow, c, &mut slow_run.0));
        }
        fast_run.2 = fast.error();
        slow_run.2 = slow.error();
        (fast_run, slow_run)
    }

    /// Content as the receivers make it: canonical CRLF, dot-unstuffed.
    fn canonical_content() -> impl Strategy<Value = Vec<u8>> {
        soup().prop_map(|input| receive_chunks(BareLineEndings::Normalize, 0, &[&input]).out)
    }

    proptest! {
        #[test]
        fn receiver_split_anywhere_same_result(
            input in soup(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            policy in policy(),
            max_line in 0usize..12,
        ) {
            let whole = receive_chunks(policy, max_line, &[&input]);
            prop_assert_eq!(receive_chunks(policy, max_line, &split(&input, &cuts)), whole);
        }

        #[test]
        fn receiver_matches_the_bytewise_state_machine(
            input in soup(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            policy in policy(),
            max_line in 0usize..12,
        ) {
            let (fast, slow) = both_receivers(policy, max_line, &split(&input, &cuts));
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn canonical_encoder_matches_the_general_one(
            prepend in soup(),
            content in canonical_content(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut general = DotStuffer::new();
            let mut want = Vec::new();
            general.encode(&prepend, &mut want);
            general.encode(&content, &mut want);
            general.finish(&mut want);
            let mut canonical = DotStuffer::new();
            let mut got = Vec::new();
            canonical.encode(&prepend, &mut got);
            for piece in split(&content, &cuts) {
                canonical.encode_canonical(piece, &mut got);
            }
            canonical.finish(&mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn receiver_output_is_canonical(input in soup(), policy in policy()) {
            let got = receive(policy, &input);
            prop_assert!(is_canonical(&got.out), "{:?}", got.out);
            if policy == BareLineEndings::Normalize {
                prop_assert!(got.error.is_none());
            }
        }

        #[test]
        fn receiver_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300), policy in policy()) {
            let got = receive(policy, &input);
            prop_assert!(got.consumed <= input.len());
        }

        #[test]
        fn stuffer_split_anywhere_same_result(
            input in soup(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            prop_assert_eq!(stuff(&split(&input, &cuts)), stuff(&[&input]));
        }

        #[test]
        fn stuffer_output_is_canonical_and_ends_once(input in soup()) {
            let wire = stuff(&[&input]);
            prop_assert!(is_canonical(&wire));
            let got = receive(BareLineEndings::Reject, &wire);
            prop_assert_eq!((got.done, got.consumed, got.error), (true, wire.len(), None));
        }

        #[test]
        fn stuff_then_receive_round_trips(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![3 => Just(b'.'), 1 => any::<u8>().prop_filter("no CR/LF", |c| *c != b'\r' && *c != b'\n')],
                    0..20),
                0..10),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut content = Vec::new();
            for l in &lines {
                content.extend_from_slice(l);
                content.extend_from_slice(b"\r\n");
            }
            let wire = stuff(&[&content]);
            let got = receive_chunks(BareLineEndings::Reject, 0, &split(&wire, &cuts));
            prop_assert_eq!(got, received(&content, wire.len(), true, None));
        }
    }
}
