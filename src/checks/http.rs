//! A minimal HTTP/1.1 client for scanners that speak HTTP (rspamd): one
//! `POST` per connection (`Connection: close`) over async-std, to a TCP
//! address or a Unix socket, and a strict parser of the response, so a
//! malformed answer is an error and never a pass. `smtpgate rules stats`
//! reads a gateway's `/metrics` with its [`get`].

use crate::config::HttpEndpoint;
use async_std::net::TcpStream;
use async_std::os::unix::net::UnixStream;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest response accepted: a scan result, not a message.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// A parsed response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (200).
    pub status: u16,
    /// The body, after any chunked transfer coding is removed.
    pub body: Vec<u8>,
}

/// Sends `POST path` to `endpoint` with `headers` and `body`, and reads
/// the whole response.
pub async fn post(
    endpoint: &HttpEndpoint,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    match endpoint {
        HttpEndpoint::Tcp { authority, .. } => {
            let stream = TcpStream::connect(authority.as_str())
                .await
                .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
            exchange(stream, authority, authority, "POST", path, headers, body).await
        }
        HttpEndpoint::Unix(socket) => {
            let stream = UnixStream::connect(socket)
                .await
                .map_err(|e| format!("cannot connect to {socket}: {e}"))?;
            // A socket has no host name; HTTP/1.1 still wants a Host.
            exchange(stream, socket, "localhost", "POST", path, headers, body).await
        }
    }
}

/// Sends `GET path` to `authority` (`host:port`) and reads the whole
/// response.
pub async fn get(authority: &str, path: &str) -> Result<Response, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    exchange(stream, authority, authority, "GET", path, &[], &[]).await
}

/// One request and its response over a connected `stream`; `name` is the
/// server in errors.
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    name: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        // Header values come from the SMTP dialogue: no line breaks.
        let clean: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        head.push_str(&format!("{name}: {clean}\r\n"));
    }
    head.push_str("\r\n");
    let io = |e: std::io::Error| format!("{name}: {e}");
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err(format!("{name}: response over {MAX_RESPONSE} bytes"));
        }
    }
    parse_response(&raw)
}

/// Parses a complete HTTP/1.x response (read until the server closed).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = memchr::memmem::find(raw, b"\r\n\r\n").ok_or("response without end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response headers are not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:.80}"));
    }
    // Three digits, the first 1 to 5 (RFC 9110 §15): "020" is no status.
    let status: u16 = parts
        .next()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .filter(|n| (100..=599).contains(n))
        .ok_or_else(|| format!("bad status line: {status_line:.80}"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line: {line:.80}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| format!("bad Content-Length: {value:.40}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| format!("body shorter than its Content-Length {n}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Removes the chunked transfer coding (RFC 9112 §7.1).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(rest, b"\r\n").ok_or("chunk size line without end")?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size line")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:.20}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or("chunk without its line end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_chunks_give_the_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n1;x\r\n}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"}");
    }

    #[test]
    fn malformed_responses_are_errors() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SMTP 220 hi\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_response(raw).is_err(), "{raw:?}");
        }
    }
}
