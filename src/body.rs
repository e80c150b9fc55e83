//! A message body that stays in memory while small and spills to an
//! anonymous temporary file when it grows past a threshold, so a session's
//! memory stays bounded whatever the size of the message.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The received message bytes (already dot-unstuffed, canonical CRLF).
#[derive(Debug)]
pub struct Body {
    /// Bytes held in memory; once spilled, only the first `threshold` bytes
    /// stay here so header checks never touch the disk.
    head: Vec<u8>,
    /// The whole body once it outgrew `threshold`.
    file: Option<File>,
    /// Total length in bytes.
    len: u64,
    /// Size past which the body moves to a temporary file.
    threshold: usize,
    /// Every byte came from a receiver and is canonical CRLF (see
    /// [`Body::received`]).
    canonical: bool,
    /// Reused for bytes on their way to the file once spilled.
    scratch: Vec<u8>,
}

impl Body {
    /// An empty body that spills past `threshold` bytes.
    pub fn new(threshold: usize) -> Self {
        Body {
            head: Vec::new(),
            file: None,
            len: 0,
            threshold,
            canonical: false,
            scratch: Vec::new(),
        }
    }

    /// An empty body for what the DATA or BDAT receiver produces, which is
    /// canonical CRLF whatever the client sent (every CR is followed by LF,
    /// every LF follows a CR). Knowing it lets the relay skip looking for
    /// line ends again (see [`Body::is_canonical`]). Only receivers' output
    /// may go into such a body; anything else belongs in [`Body::new`].
    pub fn received(threshold: usize) -> Self {
        Body {
            head: pool::take(),
            file: None,
            len: 0,
            threshold,
            canonical: true,
            scratch: Vec::new(),
        }
    }

    /// True for a body made by [`Body::received`].
    pub fn is_canonical(&self) -> bool {
        self.canonical
    }

    /// Appends what `fill` writes into the buffer it is given, like
    /// [`Body::append`], but without copying it once more: while the body
    /// is in memory, `fill` writes straight into it. Returns what `fill`
    /// returned, and the result of storing the bytes.
    pub fn append_with<R>(&mut self, fill: impl FnOnce(&mut Vec<u8>) -> R) -> (R, io::Result<()>) {
        if self.file.is_some() {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let result = fill(&mut scratch);
            let stored = self.append(&scratch);
            self.scratch = scratch;
            return (result, stored);
        }
        let before = self.head.len();
        let result = fill(&mut self.head);
        self.len += (self.head.len() - before) as u64;
        if self.head.len() <= self.threshold {
            return (result, Ok(()));
        }
        let stored = tempfile::tempfile().and_then(|mut file| {
            file.write_all(&self.head)?;
            self.file = Some(file);
            Ok(())
        });
        self.head.truncate(self.threshold);
        (result, stored)
    }

    /// Appends bytes, spilling to a temporary file when the threshold is passed.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.head.len() + bytes.len() > self.threshold {
            let mut file = tempfile::tempfile()?;
            file.write_all(&self.head)?;
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => {
                file.write_all(bytes)?;
                let room = self.threshold.saturating_sub(self.head.len());
                self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
            }
            None => self.head.extend_from_slice(bytes),
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the body lives in a temporary file.
    pub fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    /// The first bytes of the message (up to the threshold), for header checks.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The whole message in memory, for a data-stage check that needs it
    /// all at once (a DKIM verifier hashes the full body).
    pub fn to_vec(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        let mut buf = Vec::new();
        let mut chunks = self.chunks(1 << 16)?;
        while chunks.next_into(&mut buf)? {
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Reads the whole body back in chunks of at most `chunk` bytes.
    pub fn chunks(&mut self, chunk: usize) -> io::Result<Chunks<'_>> {
        if let Some(file) = &mut self.file {
            file.seek(SeekFrom::Start(0))?;
        }
        Ok(Chunks {
            body: self,
            offset: 0,
            chunk: chunk.max(1),
        })
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.head));
    }
}

/// Buffers of finished bodies, kept for the next received ones. A large
/// message in a fresh buffer costs a page fault and a zeroed page per 4 KiB
/// and copies as the buffer grows; a buffer that held a message before has
/// its pages already. Bounded in number and size, so what stays is at most
/// a few megabytes.
mod pool {
    use std::sync::Mutex;

    /// Buffers kept at most.
    const KEPT: usize = 8;
    /// Smaller buffers are cheap to make again; larger ones are not kept.
    const MIN_CAPACITY: usize = 64 * 1024;
    const MAX_CAPACITY: usize = 4 * 1024 * 1024;

    /// The buffers every body shares.
    static FREE: Pool = Pool::new();

    /// Free buffers (a type of its own so tests can have their own).
    pub(super) struct Pool(Mutex<Vec<Vec<u8>>>);

    impl Pool {
        pub(super) const fn new() -> Self {
            Pool(Mutex::new(Vec::new()))
        }

        /// An empty buffer, with room from an earlier message when one is kept.
        pub(super) fn take(&self) -> Vec<u8> {
            self.0
                .lock()
                .ok()
                .and_then(|mut free| free.pop())
                .unwrap_or_default()
        }

        /// Keeps `buf` for a later body if it is worth it and there is room.
        pub(super) fn give(&self, mut buf: Vec<u8>) {
            if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&buf.capacity()) {
                return;
            }
            buf.clear();
            if let Ok(mut free) = self.0.lock() {
                if free.len() < KEPT {
                    free.push(buf);
                }
            }
        }
    }

    /// A buffer from the shared pool.
    pub(super) fn take() -> Vec<u8> {
        FREE.take()
    }

    /// Gives a buffer back to the shared pool.
    pub(super) fn give(buf: Vec<u8>) {
        FREE.give(buf)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keeps_a_bounded_number_of_useful_buffers_empty() {
            let pool = Pool::new();
            pool.give(Vec::with_capacity(1024));
            pool.give(Vec::with_capacity(MAX_CAPACITY + 1));
            assert_eq!(
                pool.take().capacity(),
                0,
                "too small or too large: not kept"
            );
            let mut used = Vec::with_capacity(MIN_CAPACITY);
            used.extend_from_slice(b"an old message");
            let addr = used.as_ptr();
            pool.give(used);
            let again = pool.take();
            assert!(again.is_empty() && again.capacity() >= MIN_CAPACITY);
            assert_eq!(again.as_ptr(), addr, "the same buffer comes back");
            for _ in 0..KEPT + 3 {
                pool.give(Vec::with_capacity(MIN_CAPACITY));
            }
            let kept = std::iter::from_fn(|| Some(pool.take()))
                .take_while(|b| b.capacity() > 0)
                .count();
            assert_eq!(kept, KEPT);
        }
    }
}

/// Iterates over a body's bytes in bounded chunks (see [`Body::chunks`]).
pub struct Chunks<'a> {
    /// The body being read.
    body: &'a mut Body,
    /// Bytes handed out so far.
    offset: u64,
    /// Largest chunk to hand out.
    chunk: usize,
}

impl Chunks<'_> {
    /// The next chunk: borrowed from the body while it is in memory, read
    /// into `buf` once it is spilled; `None` at the end.
    pub fn next_slice<'s>(&'s mut self, buf: &'s mut Vec<u8>) -> io::Result<Option<&'s [u8]>> {
        if self.body.file.is_some() {
            return Ok(if self.next_into(buf)? {
                Some(buf.as_slice())
            } else {
                None
            });
        }
        let start = self.offset as usize;
        let n = (self.body.head.len() - start).min(self.chunk);
        if n == 0 {
            return Ok(None);
        }
        self.offset += n as u64;
        Ok(Some(&self.body.head[start..start + n]))
    }

    /// Fills `buf` (cleared first) with the next chunk; false at the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        let remaining = self.body.len - self.offset;
        if remaining == 0 {
            return Ok(false);
        }
        let n = (remaining.min(self.chunk as u64)) as usize;
        match &mut self.body.file {
            Some(file) => {
                buf.resize(n, 0);
                file.read_exact(buf)?;
            }
            None => {
                let start = self.offset as usize;
                buf.extend_from_slice(&self.body.head[start..start + n]);
            }
        }
        self.offset += n as u64;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(body: &mut Body, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut chunks = body.chunks(chunk).unwrap();
        while chunks.next_into(&mut buf).unwrap() {
            assert!(buf.len() <= chunk);
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn small_body_stays_in_memory() {
        let mut body = Body::new(100);
        body.append(b"hello ").unwrap();
        body.append(b"world").unwrap();
        assert!(!body.is_spilled());
        assert_eq!(body.len(), 11);
        assert_eq!(read_all(&mut body, 4), b"hello world");
    }

    #[test]
    fn large_body_spills_and_reads_back_identically() {
        let mut body = Body::new(10);
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let piece = vec![b'a' + (i % 26); (i as usize % 7) + 1];
            body.append(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        assert!(body.is_spilled());
        assert_eq!(body.head(), &expected[..10]);
        assert_eq!(body.len(), expected.len() as u64);
        assert_eq!(read_all(&mut body, 3), expected);
        // A second pass reads the same bytes again.
        assert_eq!(read_all(&mut body, 64), expected);
    }

    fn read_slices(body: &mut Body, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut chunks = body.chunks(chunk).unwrap();
        while let Some(piece) = chunks.next_slice(&mut buf).unwrap() {
            assert!(!piece.is_empty() && piece.len() <= chunk);
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn filled_in_place_like_appended_in_memory_and_spilled() {
        for threshold in [1000, 10] {
            let (mut filled, mut appended) = (Body::received(threshold), Body::new(threshold));
            let mut expected = Vec::new();
            for i in 0..40u8 {
                let piece = vec![b'a' + (i % 26); (i as usize % 5) + 1];
                let (n, stored) = filled.append_with(|buf| {
                    buf.extend_from_slice(&piece);
                    piece.len()
                });
                stored.unwrap();
                assert_eq!(n, piece.len());
                appended.append(&piece).unwrap();
                expected.extend_from_slice(&piece);
            }
            assert_eq!(filled.is_spilled(), threshold == 10);
            assert_eq!(filled.head(), appended.head());
            assert_eq!(filled.len(), expected.len() as u64);
            assert!(filled.is_canonical() && !appended.is_canonical());
            assert_eq!(read_all(&mut filled, 7), expected);
            assert_eq!(read_slices(&mut filled, 7), expected);
            assert_eq!(read_slices(&mut appended, 64), expected);
        }
    }
}
