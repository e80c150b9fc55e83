//! The BDAT receiver (RFC 3030 CHUNKING): chunk contents in, the message
//! out, with the same bare line-ending policy and line limit as DATA.
//!
//! BDAT carries the message octets as they are, framed by byte counts, so
//! there is no dot-unstuffing and no end-of-data line to find: the session
//! reads exactly the announced number of octets of each chunk and feeds
//! them here, and [`BdatReceiver::finish`] ends the message at `LAST`.
//! What comes out is canonical CRLF (a bare CR or LF is written as CRLF
//! whatever the policy), so the message can be relayed as DATA through
//! [`DotStuffer`](super::DotStuffer) or as BDAT and stays one message.
//! How the client split its chunks never changes the bytes produced, even
//! when a chunk ends between a CR and its LF.

use super::{BareLineEndings, DataError};

/// Decodes the octets of a message's BDAT chunks into the message.
#[derive(Clone, Debug)]
pub struct BdatReceiver {
    /// What to do with bare CR/LF.
    policy: BareLineEndings,
    /// Longest line, CRLF included; 0 = unlimited.
    max_line: usize,
    /// The last octet fed was a CR: the next one says whether it is bare.
    pending_cr: bool,
    /// Bytes of the current line so far, line ending excluded.
    line_len: usize,
    /// First problem seen; later ones are not interesting.
    error: Option<DataError>,
    /// Message bytes written out so far.
    produced: u64,
    /// `finish` has run.
    finished: bool,
}

impl BdatReceiver {
    /// `max_line` counts CRLF (1000 per RFC 5321 §4.5.3.1.6); 0 = unlimited.
    pub fn new(policy: BareLineEndings, max_line: usize) -> Self {
        BdatReceiver {
            policy,
            max_line,
            pending_cr: false,
            line_len: 0,
            error: None,
            produced: 0,
            finished: false,
        }
    }

    /// Takes octets of a chunk (any part of one; every octet is message
    /// content) and appends the message bytes they complete to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        debug_assert!(!self.finished, "BDAT octets fed after LAST");
        let start_len = out.len();
        let mut pos = 0;
        while pos < input.len() {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_len = 0;
                if input[pos] == b'\n' {
                    pos += 1;
                    continue;
                }
                self.bare(DataError::BareCr);
            }
            // Bulk copy up to the next CR or LF.
            let rest = &input[pos..];
            let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            out.extend_from_slice(&rest[..n]);
            self.add_content(n);
            pos += n;
            match input.get(pos) {
                Some(b'\r') => self.pending_cr = true,
                Some(_) => {
                    self.bare(DataError::BareLf);
                    out.extend_from_slice(b"\r\n");
                    self.line_len = 0;
                }
                None => break,
            }
            pos += 1;
        }
        self.produced += (out.len() - start_len) as u64;
    }

    /// Ends the message (the `LAST` chunk has been fed): a CR left over at
    /// the very end had no LF after it and is bare.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare(DataError::BareCr);
            out.extend_from_slice(b"\r\n");
            self.produced += 2;
        }
        self.finished = true;
    }

    /// The first problem seen; the session reports it after `LAST`.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Message bytes produced so far (for the size limit).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Counts `n` bytes of line content against the line limit.
    fn add_content(&mut self, n: usize) {
        self.line_len += n;
        if self.max_line != 0 && self.line_len + 2 > self.max_line {
            self.error.get_or_insert(DataError::LineTooLong);
        }
    }

    /// Notes a bare CR or LF, which only the `Reject` policy refuses.
    fn bare(&mut self, kind: DataError) {
        if self.policy == BareLineEndings::Reject {
            self.error.get_or_insert(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{DataReceiver, DotStuffer};
    use proptest::prelude::*;

    /// Receives `chunks` as one message; returns the message and its error.
    fn receive(policy: BareLineEndings, chunks: &[&[u8]]) -> (Vec<u8>, Option<DataError>) {
        let mut rx = BdatReceiver::new(policy, 1000);
        let mut out = Vec::new();
        for chunk in chunks {
            rx.feed(chunk, &mut out);
        }
        rx.finish(&mut out);
        assert_eq!(rx.produced(), out.len() as u64);
        (out, rx.error())
    }

    #[test]
    fn canonical_message_passes_unchanged() {
        let msg: &[u8] = b"Subject: x\r\n\r\n.hidden dot\r\nbody\r\n";
        assert_eq!(
            receive(BareLineEndings::Reject, &[msg]),
            (msg.to_vec(), None)
        );
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let (out, err) = receive(BareLineEndings::Reject, &[b"a\r", b"\nb\r", b"\n"]);
        assert_eq!(out, b"a\r\nb\r\n");
        assert_eq!(err, None);
    }

    #[test]
    fn bare_endings_are_refused_or_normalized() {
        assert_eq!(
            receive(BareLineEndings::Reject, &[b"a\nb"]).1,
            Some(DataError::BareLf)
        );
        assert_eq!(
            receive(BareLineEndings::Reject, &[b"a\rb"]).1,
            Some(DataError::BareCr)
        );
        assert_eq!(
            receive(BareLineEndings::Reject, &[b"a\r"]).1,
            Some(DataError::BareCr)
        );
        assert_eq!(
            receive(BareLineEndings::Normalize, &[b"a\nb\rc\r"]),
            (b"a\r\nb\r\nc\r\n".to_vec(), None)
        );
    }

    #[test]
    fn long_line_is_refused() {
        let line = vec![b'x'; 999];
        assert_eq!(
            receive(BareLineEndings::Reject, &[&line[..500], &line[500..]]).1,
            Some(DataError::LineTooLong)
        );
        assert_eq!(receive(BareLineEndings::Reject, &[&line[..998]]).1, None);
    }

    #[test]
    fn smuggling_sequences_stay_content() {
        // A DATA end inside a BDAT message is content: relayed as DATA it
        // is stuffed, and the upstream sees one message ending at ours.
        let (out, _) = receive(
            BareLineEndings::Normalize,
            &[b"a\r\n.\r\nMAIL FROM:<x>\r\n"],
        );
        let mut wire = Vec::new();
        let mut stuffer = DotStuffer::new();
        stuffer.encode(&out, &mut wire);
        stuffer.finish(&mut wire);
        let mut rx = DataReceiver::new(BareLineEndings::Reject, 0);
        let mut back = Vec::new();
        let fed = rx.feed(&wire, &mut back);
        assert!(fed.done);
        assert_eq!(fed.consumed, wire.len());
        assert_eq!(back, out);
    }

    /// Splits `data` at the given (sorted, deduplicated) cut points.
    fn cut<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points {
            pieces.push(&data[last..p]);
            last = p;
        }
        pieces.push(&data[last..]);
        pieces
    }

    proptest! {
        /// Any chunking of the same message gives the same bytes and the same verdict.
        #[test]
        fn any_chunking_gives_the_same_message(
            data in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            for policy in [BareLineEndings::Reject, BareLineEndings::Normalize] {
                let whole = receive(policy, &[&data]);
                let split = receive(policy, &cut(&data, &cuts));
                prop_assert_eq!(&whole, &split);
                let bytewise: Vec<&[u8]> = data.chunks(1).collect();
                prop_assert_eq!(&whole, &receive(policy, &bytewise));
            }
        }

        /// The output is canonical: every CR is followed by LF and every LF preceded by CR.
        #[test]
        fn output_is_canonical(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (out, _) = receive(BareLineEndings::Normalize, &[&data]);
            for (i, &b) in out.iter().enumerate() {
                if b == b'\r' {
                    prop_assert_eq!(out.get(i + 1), Some(&b'\n'));
                }
                if b == b'\n' {
                    prop_assert!(i > 0 && out[i - 1] == b'\r');
                }
            }
        }
    }
}
