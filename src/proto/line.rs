//! Splits the client's byte stream into command lines, with a length limit.
//!
//! The reader never owns the buffer: the session keeps its read buffer,
//! asks [`LineReader::next_line`] for the next line at its front and drops
//! the consumed bytes. An over-long line is thrown away as it arrives, so the
//! buffer never has to grow past the limit.

use std::ops::Range;

/// Why a line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// The line, with its line ending, was longer than the limit → 500 5.5.6.
    TooLong,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => f.write_str("Line too long"),
        }
    }
}

impl std::error::Error for LineError {}

/// Incremental line splitter with a length bound (CRLF or bare LF ends a line;
/// a bare CR never does).
#[derive(Clone, Debug)]
pub struct LineReader {
    /// Longest accepted line, line ending included (always counted as 2).
    max_len: usize,
    /// True while throwing away the rest of an over-long line: its bytes are
    /// consumed as they come and the error is reported at its line ending.
    discarding: bool,
}

impl LineReader {
    /// `max_len` counts the line ending too (RFC 5321 §4.5.3.1.4: 512 for commands).
    pub fn new(max_len: usize) -> Self {
        LineReader {
            max_len,
            discarding: false,
        }
    }

    /// Finds the next line at the front of `buf`. Returns (bytes consumed, outcome):
    /// outcome None = need more bytes (consumed may be > 0 when discarding an over-long line);
    /// Some(Ok(range)) = the line's content is buf[range] (without the line ending), consumed covers the line ending;
    /// Some(Err(TooLong)) = a line longer than max_len ended; reported once, when its line ending arrives.
    pub fn next_line(&mut self, buf: &[u8]) -> (usize, Option<Result<Range<usize>, LineError>>) {
        if !self.discarding {
            // A line ending further than max_len bytes in cannot belong to an
            // acceptable line, so the search never looks past that window.
            let window = &buf[..buf.len().min(self.max_len)];
            if let Some(lf) = window.iter().position(|&b| b == b'\n') {
                let end = if lf > 0 && buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                return if end + 2 > self.max_len {
                    (lf + 1, Some(Err(LineError::TooLong)))
                } else {
                    (lf + 1, Some(Ok(0..end)))
                };
            }
            // No line ending yet. A final CR may be the start of a CRLF, so
            // it does not count towards the content already known.
            let known = buf.len() - usize::from(buf.last() == Some(&b'\r'));
            if known + 2 <= self.max_len {
                return (0, None);
            }
            self.discarding = true;
        }
        // Every line ending (CRLF or bare LF) ends with LF, so a discarded
        // line ends at the next LF and every byte before it can go.
        match buf.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                self.discarding = false;
                (lf + 1, Some(Err(LineError::TooLong)))
            }
            None => (buf.len(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a session sees: each line's content, or the error.
    type Outcome = Result<Vec<u8>, LineError>;

    /// Drives a reader the way the session does, one chunk at a time over a
    /// buffer that keeps unconsumed bytes. Also checks the memory bound.
    fn run(max_len: usize, chunks: &[&[u8]]) -> Vec<Outcome> {
        let mut reader = LineReader::new(max_len);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let (used, outcome) = reader.next_line(&buf);
                let Some(result) = outcome else {
                    buf.drain(..used);
                    break;
                };
                out.push(result.map(|range| buf[range].to_vec()));
                buf.drain(..used);
            }
            assert!(buf.len() < max_len.max(1), "buffer grew to {}", buf.len());
        }
        out
    }

    fn whole(max_len: usize, input: &[u8]) -> Vec<Outcome> {
        run(max_len, &[input])
    }

    fn bytewise(max_len: usize, input: &[u8]) -> Vec<Outcome> {
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        run(max_len, &chunks)
    }

    fn line(s: &str) -> Outcome {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn table() {
        let long = format!("{}\r\nNOOP\r\n", "x".repeat(11));
        let cases: Vec<(&[u8], Vec<Outcome>)> = vec![
            (b"", vec![]),
            (b"NOOP\r\n", vec![line("NOOP")]),
            (b"NOOP\nQUIT\r\n", vec![line("NOOP"), line("QUIT")]),
            (b"\r\n\n", vec![line(""), line("")]),
            (b"NO\rOP\r\n", vec![line("NO\rOP")]),
            (b"NOOP\r\r\n", vec![line("NOOP\r")]),
            (b"NOOP\r", vec![]),
            (b"NOOP", vec![]),
            // max_len 12: 10 content bytes + CRLF fit, 11 do not.
            (b"0123456789\r\n", vec![line("0123456789")]),
            (b"0123456789\n", vec![line("0123456789")]),
            (
                b"01234567890\r\nNOOP\r\n",
                vec![Err(LineError::TooLong), line("NOOP")],
            ),
            (
                b"01234567890\nNOOP\r\n",
                vec![Err(LineError::TooLong), line("NOOP")],
            ),
            (long.as_bytes(), vec![Err(LineError::TooLong), line("NOOP")]),
            (b"0123456789\r\r\n", vec![Err(LineError::TooLong)]),
            (
                b"0123456789abcdefghijklmnop\r\nRSET\r\n",
                vec![Err(LineError::TooLong), line("RSET")],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(whole(12, input), want, "{input:?} whole");
            assert_eq!(bytewise(12, input), want, "{input:?} bytewise");
        }
    }

    #[test]
    fn overlong_line_is_discarded_as_it_arrives() {
        let mut r = LineReader::new(8);
        // Not yet known to be too long: 6 bytes + a CR that may start CRLF.
        assert_eq!(r.next_line(b"abcdef\r"), (0, None));
        // 7 content bytes: too long, thrown away before its end is seen.
        assert_eq!(r.next_line(b"abcdefg"), (7, None));
        assert_eq!(r.next_line(b"more\r"), (5, None));
        assert_eq!(
            r.next_line(b"\nNOOP\r\n"),
            (1, Some(Err(LineError::TooLong)))
        );
        assert_eq!(r.next_line(b"NOOP\r\n"), (6, Some(Ok(0..4))));
    }

    #[test]
    fn tiny_limits_refuse_everything() {
        assert_eq!(
            whole(1, b"\r\na\n"),
            vec![Err(LineError::TooLong), Err(LineError::TooLong)]
        );
        assert_eq!(
            whole(2, b"\r\na\n"),
            vec![line(""), Err(LineError::TooLong)]
        );
    }

    proptest! {
        #[test]
        fn split_anywhere_same_lines(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            max_len in 1usize..20,
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for p in points.into_iter().chain([input.len()]) {
                chunks.push(&input[prev..p]);
                prev = p;
            }
            prop_assert_eq!(run(max_len, &chunks), whole(max_len, &input));
        }
    }
}
