//! The PROXY protocol on a listener: who may send a header, reading it off
//! the connection, and the client address it gives.
//!
//! Behind a load balancer (HAProxy, or any proxy that speaks the PROXY
//! protocol) every connection comes from the balancer; the header it sends
//! first names the real client. On a listener with `proxy_protocol: true`
//! the server reads that header before anything else — before the greeting,
//! and before the TLS handshake of an implicit-TLS listener — and the
//! session, the rules, relay control, logs, audit records and the
//! `Received:` header all see the client it names.
//!
//! The header is trusted only from `proxy_protocol.trusted_proxies`: from
//! anywhere else, as with a malformed, over-long, late or missing header,
//! the connection is closed without a word (a greeting would tell a client
//! that bypassed the balancer it reached an SMTP server). The parsing
//! itself is in [`crate::proto::proxy`], free of I/O; here it is fed
//! exactly the bytes it asks for, so the client's first bytes (its TLS
//! ClientHello, say) stay in the socket for the session.

use crate::config::ProxyProtocolOptions;
use crate::proto::proxy::{parse, Parse, ProxyError, ProxyHeader};
use async_std::io::timeout;
use futures::io::{AsyncRead, AsyncReadExt};
use log::{debug, info, warn};
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why no header could be read.
#[derive(Debug)]
pub enum HeaderError {
    /// The bytes are not a header the gateway accepts.
    Malformed(ProxyError),
    /// The connection closed after this many bytes of the header (0: a
    /// plain TCP health check).
    Closed(usize),
    /// The header did not arrive in time.
    Timeout,
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Malformed(e) => e.fmt(f),
            HeaderError::Closed(0) => f.write_str("closed before sending anything"),
            HeaderError::Closed(n) => write!(f, "closed after {n} bytes of the header"),
            HeaderError::Timeout => f.write_str("no complete PROXY header in time"),
            HeaderError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

/// Reads one PROXY header (v1 or v2) from the front of `stream` within
/// `limit`, taking no byte past it. Returns the header and its length.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: std::time::Duration,
) -> Result<(ProxyHeader, usize), HeaderError> {
    let mut buf = Vec::with_capacity(128);
    let outcome = timeout(limit, async {
        loop {
            match parse(&buf) {
                Ok(Parse::Done { header, len }) => return Ok(Ok((header, len))),
                Ok(Parse::Need(n)) => {
                    let have = buf.len();
                    buf.resize(have + n, 0);
                    let got = stream.read(&mut buf[have..]).await?;
                    buf.truncate(have + got);
                    if got == 0 {
                        return Ok(Err(HeaderError::Closed(have)));
                    }
                }
                Err(e) => return Ok(Err(HeaderError::Malformed(e))),
            }
        }
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(HeaderError::Timeout),
        Err(e) => Err(HeaderError::Io(e)),
    }
}

/// Who a connection through the balancer is between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The real client.
    pub client: SocketAddr,
    /// The address the client connected to on the balancer, when the
    /// header names one (the session's local address, e.g. Dovecot's `lip=`).
    pub destination: Option<SocketAddr>,
}

/// The client a connection accepted from `peer` on a PROXY listener is
/// for: the source the header names (an IPv4-mapped address as plain
/// IPv4, as is the destination), or `peer` itself for a header that names
/// none (the proxy's own health checks). `None` when the connection must
/// be closed: `peer` is not a trusted proxy, or no valid header came in
/// time; the reason is logged.
pub async fn client_address<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    options: Option<&ProxyProtocolOptions>,
) -> Option<Endpoints> {
    // Validation makes `proxy_protocol` present wherever a listener uses
    // it; without it nobody is trusted.
    let Some(options) = options.filter(|o| o.is_trusted(peer.ip())) else {
        warn!(
            "PROXY protocol: connection from {peer}, which is not in \
             proxy_protocol.trusted_proxies; closed"
        );
        return None;
    };
    match read_header(stream, options.timeout()).await {
        Ok((header, _)) => Some(match header.addresses {
            Some(a) => {
                let canonical = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
                let client = canonical(a.source);
                debug!(
                    "PROXY v{} from {peer}: client {client} (connected to {})",
                    header.version, a.destination
                );
                Endpoints {
                    client,
                    destination: Some(canonical(a.destination)),
                }
            }
            None => {
                debug!(
                    "PROXY v{} from {peer}: no client address (the proxy's own connection)",
                    header.version
                );
                Endpoints {
                    client: peer,
                    destination: None,
                }
            }
        }),
        // A balancer's plain TCP check connects and closes at once.
        Err(HeaderError::Closed(0)) => {
            debug!("PROXY protocol: {peer} closed before sending a header");
            None
        }
        Err(e @ (HeaderError::Timeout | HeaderError::Closed(_) | HeaderError::Io(_))) => {
            info!("PROXY protocol: connection from {peer}: {e}; closed");
            None
        }
        Err(e @ HeaderError::Malformed(_)) => {
            warn!("PROXY protocol: bad header from {peer}: {e}; closed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::proxy::{encode_v1, encode_v2, Addresses};
    use std::time::Duration;

    /// A stream that hands out its bytes a few at a time.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            let pos = self.pos;
            buf[..n].copy_from_slice(&self.data[pos..pos + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn options(trusted: &str) -> ProxyProtocolOptions {
        ProxyProtocolOptions {
            trusted_proxies: vec![trusted.parse().unwrap()],
            timeout_s: 5,
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        async_std::task::block_on(f)
    }

    #[test]
    fn the_header_names_the_client_and_the_rest_stays_unread() {
        let a = Addresses {
            source: "[::ffff:192.0.2.7]:40000".parse().unwrap(),
            destination: "[::ffff:198.51.100.1]:25".parse().unwrap(),
        };
        let proxy: SocketAddr = "10.0.0.10:5555".parse().unwrap();
        for header in [encode_v1(Some(&a)), encode_v2(Some(&a), b"\x04\x00\x01x")] {
            for step in [1, 3, 1000] {
                let mut data = header.clone();
                data.extend_from_slice(b"EHLO x\r\n");
                let mut s = Trickle { data, pos: 0, step };
                let got = run(client_address(&mut s, proxy, Some(&options("10.0.0.0/8"))));
                let got = got.expect("a client");
                assert_eq!(got.client, "192.0.2.7:40000".parse().unwrap());
                assert_eq!(got.destination, Some("198.51.100.1:25".parse().unwrap()));
                assert_eq!(s.pos, header.len(), "read past the header");
            }
        }
        // LOCAL / UNKNOWN: the proxy's own address stands.
        for header in [encode_v1(None), encode_v2(None, &[])] {
            let mut s = Trickle {
                data: header,
                pos: 0,
                step: 100,
            };
            let got = run(client_address(&mut s, proxy, Some(&options("10.0.0.10"))));
            assert_eq!(
                got,
                Some(Endpoints {
                    client: proxy,
                    destination: None
                })
            );
        }
    }

    #[test]
    fn untrusted_malformed_and_short_headers_close_the_connection() {
        let proxy: SocketAddr = "10.0.0.10:5555".parse().unwrap();
        let good = encode_v1(None);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good.clone(), "192.0.2.0/24"),
            (b"EHLO x\r\n".to_vec(), "10.0.0.10"),
            (good[..5].to_vec(), "10.0.0.10"),
            (Vec::new(), "10.0.0.10"),
        ];
        for (data, trusted) in cases {
            let mut s = Trickle {
                data,
                pos: 0,
                step: 100,
            };
            assert_eq!(
                run(client_address(&mut s, proxy, Some(&options(trusted)))),
                None
            );
        }
        let mut s = Trickle {
            data: good,
            pos: 0,
            step: 100,
        };
        assert_eq!(run(client_address(&mut s, proxy, None)), None);
        assert!(matches!(
            run(read_header(
                &mut Trickle {
                    data: b"PROXY UNKNOWN".to_vec(),
                    pos: 0,
                    step: 100
                },
                Duration::from_secs(1)
            )),
            Err(HeaderError::Closed(13))
        ));
    }
}
