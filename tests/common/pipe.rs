//! An in-memory byte pipe: two connected ends, each readable and writable
//! both as a `futures::io` stream (what a session or the upstream client
//! runs over) and as a blocking `std::io` stream (a test's side, or a mock
//! server on its own thread). Dropping an end is closing the connection.

use futures::io::{AsyncRead, AsyncWrite};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// One direction of the pipe.
#[derive(Default)]
struct Flow {
    /// Bytes written and not yet read.
    bytes: VecDeque<u8>,
    /// The writing end closed: the reader sees EOF once `bytes` is empty.
    writer_gone: bool,
    /// The reading end closed: writes fail with `BrokenPipe`.
    reader_gone: bool,
    /// An async reader waiting for bytes.
    waker: Option<Waker>,
}

/// A direction and the condition blocking readers wait on.
#[derive(Default)]
struct Channel {
    flow: Mutex<Flow>,
    ready: Condvar,
}

impl Channel {
    fn wake(&self, flow: &mut Flow) {
        if let Some(w) = flow.waker.take() {
            w.wake();
        }
        self.ready.notify_all();
    }
}

/// One end of a pipe.
pub struct End {
    incoming: Arc<Channel>,
    outgoing: Arc<Channel>,
    read_timeout: Option<Duration>,
}

/// A connected pair of ends.
pub fn pair() -> (End, End) {
    let a = Arc::new(Channel::default());
    let b = Arc::new(Channel::default());
    (
        End {
            incoming: a.clone(),
            outgoing: b.clone(),
            read_timeout: None,
        },
        End {
            incoming: b,
            outgoing: a,
            read_timeout: None,
        },
    )
}

impl End {
    /// How long a blocking read waits before failing with `TimedOut`.
    pub fn set_read_timeout(&mut self, limit: Option<Duration>) {
        self.read_timeout = limit;
    }

    fn put(&self, buf: &[u8]) -> io::Result<usize> {
        let mut flow = self.outgoing.flow.lock().unwrap();
        if flow.reader_gone || flow.writer_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        flow.bytes.extend(buf);
        self.outgoing.wake(&mut flow);
        Ok(buf.len())
    }

    fn take(flow: &mut Flow, buf: &mut [u8]) -> usize {
        let n = buf.len().min(flow.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(flow.bytes.drain(..n)) {
            *slot = byte;
        }
        n
    }

    fn close_writing(&self) {
        let mut flow = self.outgoing.flow.lock().unwrap();
        flow.writer_gone = true;
        self.outgoing.wake(&mut flow);
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.close_writing();
        let mut flow = self.incoming.flow.lock().unwrap();
        flow.reader_gone = true;
        self.incoming.wake(&mut flow);
    }
}

impl Read for &End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut flow = self.incoming.flow.lock().unwrap();
        loop {
            if !flow.bytes.is_empty() || buf.is_empty() {
                return Ok(End::take(&mut flow, buf));
            }
            if flow.writer_gone {
                return Ok(0);
            }
            flow = match self.read_timeout {
                None => self.incoming.ready.wait(flow).unwrap(),
                Some(limit) => {
                    let (flow, waited) = self.incoming.ready.wait_timeout(flow, limit).unwrap();
                    if waited.timed_out() && flow.bytes.is_empty() && !flow.writer_gone {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    flow
                }
            };
        }
    }
}

impl Write for &End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.put(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.put(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut flow = self.incoming.flow.lock().unwrap();
        if !flow.bytes.is_empty() || buf.is_empty() {
            return Poll::Ready(Ok(End::take(&mut flow, buf)));
        }
        if flow.writer_gone {
            return Poll::Ready(Ok(0));
        }
        flow.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.put(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_writing();
        Poll::Ready(Ok(()))
    }
}
