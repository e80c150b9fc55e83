//! The PROXY protocol (HAProxy), versions 1 and 2: the header a load
//! balancer sends in front of the client's first byte, naming the real
//! client, free of I/O.
//!
//! A connection from a proxy starts with either a text line
//! (`PROXY TCP4 192.0.2.7 198.51.100.1 51234 25\r\n`, at most 107 bytes) or
//! a binary block (a 12-byte signature, version/command, family/protocol, a
//! length, the addresses, then optional TLVs). Everything after the header
//! belongs to the client (SMTP commands, or a TLS ClientHello on an
//! implicit-TLS listener), so the reader must never take a byte past it:
//! [`parse`] answers either with the header and its length, or with how
//! many more bytes can safely be read ([`Parse::Need`]) — never more than
//! what is left of the shortest header the bytes so far could still
//! become. Reading exactly that much, again and again, ends exactly at the
//! header's end.
//!
//! TLVs (v2 extensions: ALPN, authority, TLS details, unique id) are
//! skipped: the gateway only needs the client's address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: no v1 header, SMTP command or TLS record starts like it.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;

/// Shortest v1 header (`PROXY UNKNOWN\r\n`); also the first read, which no
/// header of either version can be shorter than.
const V1_MIN_LEN: usize = 15;

/// Length of the fixed part of a v2 header.
const V2_FIXED_LEN: usize = 16;

/// Longest v2 header the gateway accepts, TLVs included. The protocol
/// allows 64 KiB; real proxies send well under 1 KiB (addresses plus a few
/// TLVs), and every byte of it is held in memory before the session starts.
pub const V2_MAX_LEN: usize = 4096;

/// The client and the address it connected to, as the proxy saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// The real client: what rules, limits, logs and audit see.
    pub source: SocketAddr,
    /// The address the client connected to, on the proxy.
    pub destination: SocketAddr,
}

/// A parsed PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Protocol version: 1 (text) or 2 (binary).
    pub version: u8,
    /// The proxied client, or `None` when the proxy speaks for itself (v2
    /// `LOCAL`, e.g. its health checks) or does not know the client (v1
    /// `UNKNOWN`, v2 `UNSPEC` or a UNIX socket): the connection's own
    /// addresses then stand.
    pub addresses: Option<Addresses>,
}

/// What [`parse`] found at the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A complete header of `len` bytes; the client's bytes follow it.
    Done {
        /// The header.
        header: ProxyHeader,
        /// Its length in bytes (v1: with the CRLF; v2: with TLVs).
        len: usize,
    },
    /// Not complete yet: at least this many more bytes (1 or more) are
    /// part of the header, so reading up to this many cannot take a byte
    /// that belongs to the client.
    Need(usize),
}

/// Why bytes are not a PROXY header the gateway accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither the v1 prefix nor the v2 signature: e.g. a client talking
    /// SMTP (or TLS) straight to a listener that expects a proxy.
    NotProxy,
    /// A v1 line without its CRLF within 107 bytes.
    V1TooLong,
    /// A malformed v1 line; says what is wrong.
    V1Syntax(&'static str),
    /// A v2 version other than 2 (the high nibble of byte 13).
    V2Version(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1).
    V2Command(u8),
    /// A v2 family/protocol byte that is undefined, or not a stream (UDP).
    V2Family(u8),
    /// A v2 address block shorter than its family needs.
    V2Truncated,
    /// A v2 header longer than [`V2_MAX_LEN`] (its total length in bytes).
    V2TooLong(usize),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol header"),
            ProxyError::V1TooLong => write!(f, "v1 header longer than {V1_MAX_LEN} bytes"),
            ProxyError::V1Syntax(what) => write!(f, "bad v1 header: {what}"),
            ProxyError::V2Version(v) => write!(f, "v2 header with version {v}"),
            ProxyError::V2Command(c) => write!(f, "v2 header with unknown command {c}"),
            ProxyError::V2Family(b) => {
                write!(f, "v2 header with unsupported family/protocol 0x{b:02x}")
            }
            ProxyError::V2Truncated => f.write_str("v2 address block too short for its family"),
            ProxyError::V2TooLong(n) => {
                write!(f, "v2 header of {n} bytes (at most {V2_MAX_LEN} accepted)")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the PROXY header at the front of `buf` (v1 or v2, told apart by
/// the first byte). Bytes after a complete header are not looked at.
pub fn parse(buf: &[u8]) -> Result<Parse, ProxyError> {
    match buf.first() {
        None => Ok(Parse::Need(V1_MIN_LEN)),
        Some(b'P') => parse_v1(buf),
        Some(&b) if b == V2_SIGNATURE[0] => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// True when `buf` starts like `prefix` as far as either goes.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// Version 1: one CRLF-terminated text line.
fn parse_v1(buf: &[u8]) -> Result<Parse, ProxyError> {
    if !starts_like(buf, V1_PREFIX) {
        return Err(ProxyError::NotProxy);
    }
    // Only the first 107 bytes can hold the line; nothing past them counts,
    // so the answer is the same however far the caller has read.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    if let Some(lf) = window.iter().position(|&b| b == b'\n') {
        // A CR anywhere but right before the LF is found as soon as the
        // byte after it arrives, so check for it first: the answer must
        // not depend on how the bytes were split.
        if window[..lf.saturating_sub(1)].contains(&b'\r') {
            return Err(ProxyError::V1Syntax("CR inside the line"));
        }
        if lf == 0 || window[lf - 1] != b'\r' {
            return Err(ProxyError::V1Syntax("line does not end with CRLF"));
        }
        let line = &window[..lf - 1];
        let header = v1_line(line)?;
        return Ok(Parse::Done {
            header,
            len: lf + 1,
        });
    }
    // No line end yet. A CR can only be the first half of the CRLF.
    let last_is_cr = window.last() == Some(&b'\r');
    let body = &window[..window.len() - usize::from(last_is_cr)];
    if body.contains(&b'\r') {
        return Err(ProxyError::V1Syntax("CR inside the line"));
    }
    if window.len() >= V1_MAX_LEN {
        return Err(ProxyError::V1TooLong);
    }
    // The line needs its CRLF (or the LF after a CR), and no v1 header is
    // shorter than `PROXY UNKNOWN\r\n`.
    let crlf = if last_is_cr { 1 } else { 2 };
    let need = crlf
        .max(V1_MIN_LEN.saturating_sub(window.len()))
        .min(V1_MAX_LEN - window.len());
    Ok(Parse::Need(need))
}

/// The v1 line without its CRLF: `PROXY TCP4|TCP6 src dst sport dport`
/// or `PROXY UNKNOWN[ anything]`.
fn v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let rest = &line[V1_PREFIX.len()..];
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        // The specification says the rest of an UNKNOWN line is ignored.
        return Ok(ProxyHeader {
            version: 1,
            addresses: None,
        });
    }
    let text = std::str::from_utf8(rest).map_err(|_| ProxyError::V1Syntax("not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    let [family, src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1Syntax(
            "expected TCP4|TCP6, two addresses and two ports, separated by single spaces",
        ));
    };
    let (src, dst) = match family {
        "TCP4" => (IpAddr::V4(v1_ip(src)?), IpAddr::V4(v1_ip(dst)?)),
        "TCP6" => (IpAddr::V6(v1_ip(src)?), IpAddr::V6(v1_ip(dst)?)),
        _ => {
            return Err(ProxyError::V1Syntax(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(ProxyHeader {
        version: 1,
        addresses: Some(Addresses {
            source: SocketAddr::new(src, v1_port(sport)?),
            destination: SocketAddr::new(dst, v1_port(dport)?),
        }),
    })
}

/// One v1 address of the family the line named.
fn v1_ip<T: std::str::FromStr>(s: &str) -> Result<T, ProxyError> {
    s.parse()
        .map_err(|_| ProxyError::V1Syntax("address does not match the protocol"))
}

/// One v1 port: 1 to 5 decimal digits, at most 65535 (no sign, which
/// Rust's integer parser would accept).
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::V1Syntax("port is not a decimal number"));
    }
    s.parse()
        .map_err(|_| ProxyError::V1Syntax("port is not between 0 and 65535"))
}

/// Version 2: the binary header.
fn parse_v2(buf: &[u8]) -> Result<Parse, ProxyError> {
    if !starts_like(buf, &V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < V2_FIXED_LEN {
        return Ok(Parse::Need(V2_FIXED_LEN - buf.len()));
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    let family = buf[13];
    if version != 2 {
        return Err(ProxyError::V2Version(version));
    }
    if command > 1 {
        return Err(ProxyError::V2Command(command));
    }
    // The defined combinations: UNSPEC, TCP over IPv4, TCP over IPv6,
    // UNIX stream. Datagram ones make no sense in front of SMTP.
    if !matches!(family, 0x00 | 0x11 | 0x21 | 0x31) {
        return Err(ProxyError::V2Family(family));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = V2_FIXED_LEN + len;
    if total > V2_MAX_LEN {
        return Err(ProxyError::V2TooLong(total));
    }
    if buf.len() < total {
        return Ok(Parse::Need(total - buf.len()));
    }
    let block = &buf[V2_FIXED_LEN..total];
    let addresses = if command == 0 {
        // LOCAL: the proxy's own connection (health checks); the address
        // block, if any, is ignored.
        None
    } else {
        v2_addresses(family, block)?
    };
    Ok(Parse::Done {
        header: ProxyHeader {
            version: 2,
            addresses,
        },
        len: total,
    })
}

/// The addresses of a v2 PROXY command; TLVs after them are skipped.
fn v2_addresses(family: u8, block: &[u8]) -> Result<Option<Addresses>, ProxyError> {
    match family {
        0x11 => {
            let b = block.get(..12).ok_or(ProxyError::V2Truncated)?;
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]));
            let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
            Ok(Some(Addresses {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }))
        }
        0x21 => {
            let b = block.get(..36).ok_or(ProxyError::V2Truncated)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
            Ok(Some(Addresses {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }))
        }
        0x31 => {
            // A UNIX socket has no IP address to give the rules: the
            // connection's own address stands.
            if block.len() < 216 {
                return Err(ProxyError::V2Truncated);
            }
            Ok(None)
        }
        // UNSPEC: the receiver uses the connection's own addresses.
        _ => Ok(None),
    }
}

/// A v1 header for `addresses` (`PROXY UNKNOWN` for none). Mixed families
/// are written as TCP6 with IPv4-mapped addresses. For tests, fuzzing and
/// tools that stand in for a proxy.
pub fn encode_v1(addresses: Option<&Addresses>) -> Vec<u8> {
    let Some(a) = addresses else {
        return b"PROXY UNKNOWN\r\n".to_vec();
    };
    let line = match (a.source.ip(), a.destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => format!("PROXY TCP4 {s} {d}"),
        (s, d) => format!("PROXY TCP6 {} {}", as_v6(s), as_v6(d)),
    };
    format!("{line} {} {}\r\n", a.source.port(), a.destination.port()).into_bytes()
}

/// A v2 header: PROXY for `addresses`, LOCAL for none, with `tlvs`
/// appended verbatim after the addresses. Mixed families are written as
/// IPv6 with IPv4-mapped addresses.
pub fn encode_v2(addresses: Option<&Addresses>, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut block = Vec::new();
    match addresses {
        None => out.extend_from_slice(&[0x20, 0x00]),
        Some(a) => match (a.source.ip(), a.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&[0x21, 0x11]);
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                block.extend_from_slice(&a.source.port().to_be_bytes());
                block.extend_from_slice(&a.destination.port().to_be_bytes());
            }
            (s, d) => {
                out.extend_from_slice(&[0x21, 0x21]);
                block.extend_from_slice(&as_v6(s).octets());
                block.extend_from_slice(&as_v6(d).octets());
                block.extend_from_slice(&a.source.port().to_be_bytes());
                block.extend_from_slice(&a.destination.port().to_be_bytes());
            }
        },
    }
    block.extend_from_slice(tlvs);
    let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&block[..usize::from(len)]);
    out
}

/// An address as IPv6 (IPv4 as IPv4-mapped).
fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(src: &str, dst: &str) -> Option<Addresses> {
        Some(Addresses {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        })
    }

    fn done(version: u8, addresses: Option<Addresses>, len: usize) -> Result<Parse, ProxyError> {
        Ok(Parse::Done {
            header: ProxyHeader { version, addresses },
            len,
        })
    }

    /// Reads `stream` the way the server does: exactly what `parse` asks
    /// for, never more. Returns the outcome and the bytes taken.
    fn read_like_server(stream: &[u8]) -> (Result<Parse, ProxyError>, usize) {
        let mut taken = 0;
        loop {
            match parse(&stream[..taken]) {
                Ok(Parse::Need(n)) => {
                    assert!(n >= 1);
                    if taken == stream.len() {
                        return (Ok(Parse::Need(n)), taken);
                    }
                    taken = (taken + n).min(stream.len());
                }
                other => return (other, taken),
            }
        }
    }

    #[test]
    fn v1_headers() {
        let cases: Vec<(&[u8], Result<Parse, ProxyError>)> = vec![
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 25\r\n",
                done(1, addrs("192.0.2.7:51234", "198.51.100.1:25"), 44),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n",
                done(1, addrs("[2001:db8::7]:65535", "[2001:db8::1]:0"), 44),
            ),
            (b"PROXY UNKNOWN\r\n", done(1, None, 15)),
            (
                b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n",
                done(1, None, 51),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nEHLO x\r\n",
                done(1, addrs("1.2.3.4:1", "5.6.7.8:2"), 32),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                Err(ProxyError::V1Syntax("line does not end with CRLF")),
            ),
            (
                b"PROXY TCP4 1.2\r3.4 5.6.7.8 1 2\r\n",
                Err(ProxyError::V1Syntax("CR inside the line")),
            ),
            (
                b"PROXY TCP4 1.2\r3",
                Err(ProxyError::V1Syntax("CR inside the line")),
            ),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(ProxyError::V1Syntax(
                    "protocol is not TCP4, TCP6 or UNKNOWN",
                )),
            ),
            (
                b"PROXY TCP4 ::1 ::1 1 2\r\n",
                Err(ProxyError::V1Syntax("address does not match the protocol")),
            ),
            (
                b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(ProxyError::V1Syntax("address does not match the protocol")),
            ),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
                Err(ProxyError::V1Syntax("address does not match the protocol")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
                Err(ProxyError::V1Syntax("port is not a decimal number")),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                Err(ProxyError::V1Syntax("port is not between 0 and 65535")),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                Err(ProxyError::V1Syntax(
                    "expected TCP4|TCP6, two addresses and two ports, separated by single spaces",
                )),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                Err(ProxyError::V1Syntax(
                    "expected TCP4|TCP6, two addresses and two ports, separated by single spaces",
                )),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                Err(ProxyError::V1Syntax(
                    "expected TCP4|TCP6, two addresses and two ports, separated by single spaces",
                )),
            ),
            (
                b"PROXY UNKNOWNX\r\n",
                Err(ProxyError::V1Syntax(
                    "expected TCP4|TCP6, two addresses and two ports, separated by single spaces",
                )),
            ),
            (
                b"PROXY \xff\xfe\r\n",
                Err(ProxyError::V1Syntax("not ASCII")),
            ),
            (
                b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Err(ProxyError::NotProxy),
            ),
            (b"PROXX", Err(ProxyError::NotProxy)),
            (b"EHLO client.example\r\n", Err(ProxyError::NotProxy)),
            (b"\x16\x03\x01\x02\x00", Err(ProxyError::NotProxy)),
            (b"", Ok(Parse::Need(15))),
            (b"PRO", Ok(Parse::Need(12))),
            (b"PROXY UNKNOWN", Ok(Parse::Need(2))),
            (b"PROXY UNKNOWN\r", Ok(Parse::Need(1))),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", Ok(Parse::Need(2))),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn v1_length_bound() {
        // The longest valid line is exactly 107 bytes.
        let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX_LEN);
        assert!(matches!(parse(longest), Ok(Parse::Done { len: 107, .. })));
        let mut unterminated = b"PROXY UNKNOWN ".to_vec();
        unterminated.resize(106, b'x');
        assert_eq!(parse(&unterminated), Ok(Parse::Need(1)));
        unterminated.push(b'x');
        assert_eq!(parse(&unterminated), Err(ProxyError::V1TooLong));
        // A line end past 107 bytes is never looked for.
        unterminated.extend_from_slice(b"\r\n");
        assert_eq!(parse(&unterminated), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn v2_headers() {
        let v4 = addrs("192.0.2.7:51234", "198.51.100.1:25");
        let v6 = addrs("[2001:db8::7]:51234", "[2001:db8::1]:587");
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
        unix.resize(16 + 216, 0);
        let mut local_with_block = V2_SIGNATURE.to_vec();
        local_with_block.extend_from_slice(&[0x20, 0x11, 0x00, 0x03, 1, 2, 3]);
        let with_tlv = encode_v2(v4.as_ref(), &[0x04, 0x00, 0x03, b'a', b'b', b'c']);
        let mut cases: Vec<(Vec<u8>, Result<Parse, ProxyError>)> = vec![
            (encode_v2(v4.as_ref(), &[]), done(2, v4, 28)),
            (encode_v2(v6.as_ref(), &[]), done(2, v6, 52)),
            (encode_v2(None, &[]), done(2, None, 16)),
            (local_with_block, done(2, None, 19)),
            (with_tlv.clone(), done(2, v4, 34)),
            (unix, done(2, None, 232)),
        ];
        let patch = |at: usize, byte: u8| {
            let mut h = encode_v2(v4.as_ref(), &[]);
            h[at] = byte;
            h
        };
        cases.extend([
            (patch(12, 0x11), Err(ProxyError::V2Version(1))),
            (patch(12, 0x22), Err(ProxyError::V2Command(2))),
            (patch(13, 0x12), Err(ProxyError::V2Family(0x12))),
            (patch(13, 0x41), Err(ProxyError::V2Family(0x41))),
            (patch(15, 11), Err(ProxyError::V2Truncated)),
            (patch(14, 0x10), Err(ProxyError::V2TooLong(16 + 0x100c))),
            (patch(3, b'X'), Err(ProxyError::NotProxy)),
            (patch(13, 0x00), done(2, None, 28)),
            (V2_SIGNATURE[..5].to_vec(), Ok(Parse::Need(11))),
            (with_tlv[..20].to_vec(), Ok(Parse::Need(14))),
        ]);
        for (input, want) in cases {
            assert_eq!(parse(&input), want, "{input:?}");
        }
    }

    #[test]
    fn v2_length_bound() {
        let mut h = V2_SIGNATURE.to_vec();
        let max_block = (V2_MAX_LEN - 16) as u16;
        h.extend_from_slice(&[0x20, 0x00]);
        h.extend_from_slice(&max_block.to_be_bytes());
        assert_eq!(parse(&h), Ok(Parse::Need(V2_MAX_LEN - 16)));
        h.resize(V2_MAX_LEN, 0);
        assert!(matches!(
            parse(&h),
            Ok(Parse::Done {
                len: V2_MAX_LEN,
                ..
            })
        ));
        h[15] += 1;
        assert_eq!(parse(&h), Err(ProxyError::V2TooLong(V2_MAX_LEN + 1)));
    }

    /// The server's way of reading stops exactly at the end of the header,
    /// with whatever the client sends behind it.
    #[test]
    fn reading_what_is_asked_ends_at_the_header() {
        let v4 = addrs("192.0.2.7:51234", "198.51.100.1:25");
        for header in [
            encode_v1(v4.as_ref()),
            encode_v1(None),
            encode_v2(v4.as_ref(), b"\x05\x00\x02id"),
            encode_v2(None, &[]),
        ] {
            let mut stream = header.clone();
            stream.extend_from_slice(b"\x16\x03\x01 TLS or EHLO right behind");
            let (outcome, taken) = read_like_server(&stream);
            assert!(matches!(outcome, Ok(Parse::Done { len, .. }) if len == header.len()));
            assert_eq!(taken, header.len(), "read past the header");
        }
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        ]
    }

    proptest! {
        /// Encode, then parse with the server's reading: the same
        /// addresses, and not a byte of what follows taken.
        #[test]
        fn round_trip(
            src in socket_addr(),
            dst in socket_addr(),
            local in any::<bool>(),
            v2 in any::<bool>(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..300),
            after in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // v1 and v2 write one family; give both ends the source's.
            let dst = match (src.ip(), dst.ip()) {
                (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => {
                    SocketAddr::new(src.ip(), dst.port())
                }
                _ => dst,
            };
            let a = (!local).then_some(Addresses { source: src, destination: dst });
            let header = if v2 { encode_v2(a.as_ref(), &tlvs) } else { encode_v1(a.as_ref()) };
            let mut stream = header.clone();
            stream.extend_from_slice(&after);
            let (outcome, taken) = read_like_server(&stream);
            prop_assert_eq!(taken, header.len());
            prop_assert_eq!(
                outcome,
                Ok(Parse::Done {
                    header: ProxyHeader { version: if v2 { 2 } else { 1 }, addresses: a },
                    len: header.len(),
                })
            );
        }

        /// Any bytes: no panic, and reading piecemeal as asked gives the
        /// same answer as parsing everything at once.
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200), v2 in any::<bool>()) {
            let mut input = if v2 { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
            input.extend_from_slice(&data);
            crate::proto::selfcheck::check_proxy(&input);
            crate::proto::selfcheck::check_proxy(&data);
        }
    }
}
