//! A raw SMTP client over TLS (rustls, blocking), for byte-level dialogues
//! after STARTTLS or on an implicit-TLS port.

use super::{Client, WireReply};
use futures_rustls::rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// An SMTP client under TLS.
pub struct TlsClient {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Runs the TLS handshake over `tcp` (after `220` to STARTTLS, or at
    /// once on an implicit-TLS port).
    pub fn handshake(
        mut tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: &str,
    ) -> io::Result<TlsClient> {
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(TlsClient {
            tls: StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        })
    }

    /// STARTTLS on `client`, whose `220` is expected next.
    pub fn starttls(mut client: Client, config: Arc<ClientConfig>) -> TlsClient {
        client.cmd("STARTTLS", 220);
        TlsClient::handshake(client.stream, config, "localhost").expect("TLS handshake")
    }

    /// Connects to an implicit-TLS port and reads the greeting.
    pub fn implicit(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        let tcp = TcpStream::connect(addr).expect("connect");
        let mut c = TlsClient::handshake(tcp, config, "localhost").expect("TLS handshake");
        c.expect(220);
        c
    }

    /// The certificate the server presented (leaf, DER).
    pub fn peer_certificate(&self) -> CertificateDer<'static> {
        self.tls.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// The negotiated protocol version, e.g. "TLSv1_3".
    pub fn version(&self) -> String {
        format!("{:?}", self.tls.conn.protocol_version().unwrap())
    }

    /// The negotiated cipher suite, e.g. "TLS13_AES_128_GCM_SHA256".
    #[allow(dead_code)] // Not every test binary asks.
    pub fn suite(&self) -> String {
        format!(
            "{:?}",
            self.tls.conn.negotiated_cipher_suite().unwrap().suite()
        )
    }

    pub fn send(&mut self, text: &str) {
        self.tls.write_all(text.as_bytes()).expect("write");
        self.tls.flush().expect("flush");
    }

    fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=lf).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.tls.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading reply: {e}"),
            }
        }
    }

    /// Reads one reply; None when the connection is closed.
    pub fn try_reply(&mut self) -> Option<WireReply> {
        let mut raw = String::new();
        loop {
            let line = self.read_line()?;
            raw.push_str(&line);
            assert!(
                line.ends_with("\r\n"),
                "reply line must end with CRLF: {line:?}"
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line[..3].parse().expect("numeric code");
                return Some(WireReply { code, raw });
            }
        }
    }

    pub fn reply(&mut self) -> WireReply {
        self.try_reply().expect("a reply")
    }

    pub fn expect(&mut self, code: u16) -> String {
        let r = self.reply();
        assert_eq!(r.code, code, "expected {code}, got {:?}", r.raw);
        r.raw
    }

    pub fn cmd(&mut self, line: &str, code: u16) -> String {
        self.send(&format!("{line}\r\n"));
        self.expect(code)
    }

    /// True when the server closed the connection.
    pub fn is_closed(&mut self) -> bool {
        self.read_line().is_none()
    }

    /// MAIL + RCPTs + DATA + body; returns the final reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> WireReply {
        self.cmd(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.cmd("DATA", 354);
        self.send(body);
        self.send(".\r\n");
        self.reply()
    }
}
