//! The metrics and health listener: a deliberately tiny HTTP/1.1 server.
//!
//! It answers `GET` (and `HEAD`) of two paths and nothing else:
//! - `/metrics`: every metric in the Prometheus text format;
//! - `/healthz`: `200 ok` while the gateway accepts mail, `503` once
//!   shutdown has begun, so a load balancer stops sending new clients while
//!   sessions in flight drain.
//!
//! One request per connection (`Connection: close`), a request head of at
//! most [`MAX_REQUEST`] bytes read within [`REQUEST_TIMEOUT`], and at most
//! [`MAX_CONCURRENT`] connections at once: a scraper or a stray client
//! cannot make it hold more than a few kilobytes. A general HTTP stack
//! (hyper and its runtime) would be far more code than this needs.

use super::Metrics;
use crate::shutdown::ShutdownSignal;
use async_std::io::timeout;
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use log::{debug, info, warn};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest request head accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head, and to read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection waits for the client's leftover input.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more are closed at once.
pub const MAX_CONCURRENT: usize = 32;

/// What the listener reports on: the gateway's counters, and whether it is
/// draining.
struct Source {
    /// Rendered by `/metrics`.
    metrics: Arc<Metrics>,
    /// Fired once shutdown began: `/healthz` turns 503.
    shutdown: ShutdownSignal,
}

/// Serves `metrics` and a health check that turns 503 once `shutdown`
/// fires, on `listener`, until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: ShutdownSignal) {
    let shared = Arc::new(Source { metrics, shutdown });
    if let Ok(addr) = listener.local_addr() {
        info!("metrics on http://{addr}/metrics, health check on http://{addr}/healthz");
    }
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                warn!("metrics listener: accept failed: {e}");
                task::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
            busy.fetch_sub(1, Ordering::SeqCst);
            debug!("metrics listener: too many connections; closing one from {peer}");
            continue;
        }
        let shared = shared.clone();
        let busy = busy.clone();
        task::spawn(async move {
            if let Err(e) = answer(stream, &shared).await {
                debug!("metrics listener: {peer}: {e}");
            }
            busy.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Reads one request and writes its answer.
async fn answer(mut stream: TcpStream, shared: &Source) -> io::Result<()> {
    let head = timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await;
    let response = match head {
        Ok(Some(head)) => respond(&head, shared),
        Ok(None) => response(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            "too large\n",
        ),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(e),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => return Err(e),
    };
    timeout(REQUEST_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.flush().await
    })
    .await?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Closing with unread input would reset the connection, and the client
    // might lose the response: read what it still sends (a little, briefly).
    let _ = timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut left = MAX_REQUEST * 8;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok(())
    })
    .await;
    Ok(())
}

/// Reads up to the blank line ending the request head; `None` when the
/// head is longer than [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = end_of_head(&head) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Where the request head ends (after CRLF CRLF, or LF LF from lenient
/// clients), if it does.
fn end_of_head(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The whole response to a request head.
fn respond(head: &[u8], shared: &Source) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return response(400, "Bad Request", "text/plain", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return response(400, "Bad Request", "text/plain", "bad request\n");
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let mut r = response(405, "Method Not Allowed", "text/plain", "GET only\n");
        insert_header(&mut r, "Allow: GET, HEAD");
        return r;
    }
    let path = target.split('?').next().unwrap_or_default();
    let mut r = match path {
        "/metrics" => response(200, "OK", super::CONTENT_TYPE, &shared.metrics.render()),
        "/healthz" if shared.shutdown.is_fired() => {
            response(503, "Service Unavailable", "text/plain", "shutting down\n")
        }
        "/healthz" => response(200, "OK", "text/plain", "ok\n"),
        _ => response(404, "Not Found", "text/plain", "not found\n"),
    };
    if head_only {
        if let Some(end) = end_of_head(&r) {
            r.truncate(end);
        }
    }
    r
}

/// A complete HTTP/1.1 response that closes the connection.
fn response(code: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Adds a header line to a response built by [`response`].
fn insert_header(response: &mut Vec<u8>, header: &str) {
    if let Some(end) = end_of_head(response) {
        let at = end - 2;
        let line = format!("{header}\r\n");
        response.splice(at..at, line.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(
            end_of_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"),
            Some(27)
        );
        assert_eq!(end_of_head(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(end_of_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn extra_header_goes_before_the_blank_line() {
        let mut r = response(405, "Method Not Allowed", "text/plain", "x\n");
        insert_header(&mut r, "Allow: GET, HEAD");
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Connection: close\r\nAllow: GET, HEAD\r\n\r\nx\n"));
    }
}
