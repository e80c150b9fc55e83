//! Test harness: an in-process gateway on 127.0.0.1:0, a recording mock
//! upstream SMTP server, and a raw SMTP client for byte-level dialogues.
#![allow(dead_code, unused_imports)]

pub mod binary;
pub mod certs;
pub mod dialogue;
pub mod dkim;
pub mod dnslists;
pub mod dovecot;
pub mod mailauth;
pub mod milters;
pub mod mock_upstream;
pub mod pipe;
pub mod postfix;
pub mod scanners;
pub mod slapd;
pub mod tls_client;
pub mod tls_upstream;
pub mod unbound;

use smtpgate::config::Config;
use smtpgate::filter::FilterChain;
use smtpgate::gateway::Gateway as Built;
use smtpgate::server::Server;
use smtpgate::shutdown::ShutdownTrigger;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

pub use mock_upstream::{MockOptions, MockUpstream};

/// A gateway running in-process on a loopback port; shut down on drop.
pub struct Gateway {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in config order.
    pub addrs: Vec<SocketAddr>,
    /// What the sessions share (filter chain, audit log, TLS), e.g. to reload.
    pub shared: Arc<Built>,
    /// The metrics listener's address, when `metrics` is configured.
    pub metrics_addr: Option<SocketAddr>,
    trigger: ShutdownTrigger,
    stopped: mpsc::Receiver<()>,
}

impl Gateway {
    /// Starts a gateway from YAML; every listen address is forced to
    /// 127.0.0.1:0 (other listener settings stay).
    pub fn start(yaml: &str) -> Gateway {
        let config = Config::from_yaml(yaml, "test.yaml").expect("test config is valid");
        Gateway::start_config(config)
    }

    /// Starts a gateway from a parsed config (listen addresses forced to
    /// 127.0.0.1:0), with the filter chain the binary builds for it (its
    /// `rules_dir`).
    pub fn start_config(config: Config) -> Gateway {
        let chain = smtpgate::rules::chain_for(&config).unwrap_or_else(|e| panic!("rules: {e}"));
        Gateway::start_with_filters(config, chain)
    }

    /// Starts a gateway from a parsed config running `chain`.
    pub fn start_with_chain(config: Config, chain: FilterChain) -> Gateway {
        Gateway::start_with_filters(config, chain)
    }

    /// Like [`Gateway::start_config`], with sessions running `filters`.
    pub fn start_with_filters(mut config: Config, filters: FilterChain) -> Gateway {
        for l in &mut config.listen {
            l.addr = "127.0.0.1:0".parse().unwrap();
        }
        let server =
            async_std::task::block_on(Server::bind_with_filters(config, filters)).expect("bind");
        let addrs = server.local_addrs();
        let addr = addrs[0];
        let metrics_addr = server.metrics_addr();
        let shared = server.shared();
        let trigger = server.shutdown_trigger();
        let (tx, stopped) = mpsc::channel();
        std::thread::spawn(move || {
            async_std::task::block_on(server.run());
            let _ = tx.send(());
        });
        wait_for_probe(&shared);
        Gateway {
            addr,
            addrs,
            shared,
            metrics_addr,
            trigger,
            stopped,
        }
    }

    /// A gateway relaying to `upstream`, with `extra` YAML appended.
    pub fn with_upstream(upstream: &MockUpstream, extra: &str) -> Gateway {
        Gateway::start(&format!(
            "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{extra}",
            upstream.addr
        ))
    }

    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.trigger.fire();
    }

    /// Waits until the server's run() returned.
    pub fn wait_stopped(&self, limit: Duration) -> bool {
        self.stopped.recv_timeout(limit).is_ok()
    }

    /// A raw client connected to this gateway, greeting already read.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.expect(220);
        c
    }
}

/// Waits (up to 10 s) until the gateway's first probe of the upstream's
/// extensions is over, so tests start from a settled upstream pool: which
/// servers are marked down, and which connection is the first client's.
fn wait_for_probe(shared: &Built) {
    let Some(pool) = shared.upstreams() else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pool.probed() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.trigger.fire();
    }
}

/// A raw SMTP client: write bytes, read whole (multi-line) replies.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One reply as read off the wire.
#[derive(Debug, Clone)]
pub struct WireReply {
    pub code: u16,
    /// The whole reply, every line with its CRLF.
    pub raw: String,
}

impl WireReply {
    /// The text of the last line after "DDD ".
    pub fn last_text(&self) -> &str {
        let last = self.raw.trim_end().lines().last().unwrap_or("");
        last.get(4..).unwrap_or("")
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// A session from `source` (a 127.0.0.x address), for servers that
    /// treat each client IP on its own.
    pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> Client {
        use socket2::{Domain, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(source, 0))).unwrap();
        s.connect_timeout(&SockAddr::from(addr), Duration::from_secs(10))
            .expect("connect");
        let stream: TcpStream = s.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one reply; panics on timeout or close.
    pub fn reply(&mut self) -> WireReply {
        self.try_reply().expect("a reply")
    }

    /// Reads one reply; None when the connection is closed.
    pub fn try_reply(&mut self) -> Option<WireReply> {
        let mut raw = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("reading reply: {e} (so far: {raw:?})"),
            }
            raw.push_str(&line);
            assert!(
                line.ends_with("\r\n"),
                "reply line must end with CRLF: {line:?}"
            );
            assert!(
                line.len() >= 5 || line.len() == 5,
                "short reply line {line:?}"
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line[..3].parse().expect("numeric code");
                return Some(WireReply { code, raw });
            }
        }
    }

    /// Reads one reply and asserts its code; returns the raw reply.
    pub fn expect(&mut self, code: u16) -> String {
        let r = self.reply();
        assert_eq!(r.code, code, "expected {code}, got {:?}", r.raw);
        r.raw
    }

    /// Sends a command line and expects a reply code.
    pub fn cmd(&mut self, line: &str, code: u16) -> String {
        self.send(&format!("{line}\r\n"));
        self.expect(code)
    }

    /// True when the server closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }

    /// EHLO + MAIL + RCPT + DATA + body; returns the final reply.
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

/// A directory of rule files (name, text), for `rules_dir`.
pub fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// The `rules_dir:` line for a directory.
pub fn rules_line(dir: &std::path::Path) -> String {
    format!("rules_dir: \"{}\"\n", dir.display())
}

/// Reads the JSON lines of an audit file, waiting (up to 5 s) until there
/// are at least `n`.
pub fn audit_records(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for _ in 0..500 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        records = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if records.len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    records
}

/// A short RFC 5322 message.
pub fn message(subject: &str, body: &str) -> String {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\n{body}"
    )
}

/// Strips the Received header that the gateway prepends (the first header
/// with its continuation lines).
pub fn strip_received(data: &[u8]) -> &[u8] {
    assert!(
        data.starts_with(b"Received: "),
        "no Received header first: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(80)])
    );
    let mut pos = 0;
    loop {
        let end = pos + data[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        pos = end;
        if !matches!(data.get(pos), Some(b' ') | Some(b'\t')) {
            return &data[pos..];
        }
    }
}
