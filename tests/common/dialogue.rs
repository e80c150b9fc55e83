//! Session logic without sockets: a gateway whose sessions run over
//! in-memory pipes, relaying to the mock upstream over pipes too, and a
//! client that reads like the dialogue it tests:
//!
//! ```ignore
//! let gw = Memory::start("hostname: gate.test\n", MockOptions::default());
//! let mut s = gw.session();
//! s.cmd("EHLO client.test").expect("250");
//! s.cmd("RCPT TO:<a@b>").expect("503 5.5.1");
//! ```
//!
//! Everything above the byte stream is the real thing: the same
//! `Gateway`, `Session`, rules, checks, upstream client and pool.

use super::mock_upstream::{MockOptions, MockUpstream};
use super::pipe::{self, End};
use smtpgate::config::Config;
use smtpgate::gateway::Gateway;
use smtpgate::session::Session;
use smtpgate::shutdown::{self, ShutdownTrigger};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A gateway whose sessions and upstream connections are in memory.
pub struct Memory {
    /// The gateway every session shares.
    pub gateway: Arc<Gateway>,
    /// What the upstream received.
    pub upstream: MockUpstream,
    trigger: ShutdownTrigger,
}

impl Memory {
    /// A gateway from `yaml` (its rules from `rules_dir`, if any),
    /// relaying to a mock upstream that behaves as `options` say.
    pub fn start(yaml: &str, options: MockOptions) -> Memory {
        let (upstream, connector) = MockUpstream::in_memory(options);
        let yaml = format!("upstream: {{ addr: \"{}\" }}\n{yaml}", upstream.addr);
        let config = Config::from_yaml(&yaml, "test.yaml").expect("test config is valid");
        let chain = smtpgate::rules::chain_for(&config).unwrap_or_else(|e| panic!("rules: {e}"));
        let (trigger, signal) = shutdown::channel();
        let gateway = Gateway::build(config, chain, signal, None).expect("gateway builds");
        if let Some(pool) = gateway.upstreams() {
            pool.connect_through(connector);
        }
        Memory {
            gateway,
            upstream,
            trigger,
        }
    }

    /// A new session from 127.0.0.1, its greeting read and checked.
    pub fn session(&self) -> Dialogue {
        self.session_from("127.0.0.1:40000".parse().unwrap())
    }

    /// A new session from `peer`, its greeting read and checked.
    pub fn session_from(&self, peer: SocketAddr) -> Dialogue {
        let (ours, theirs) = pipe::pair();
        let session = Session::new(theirs, peer, self.gateway.clone());
        async_std::task::spawn(session.run());
        let mut d = Dialogue::over(ours);
        d.reply().expect("220 ");
        d
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.trigger.fire();
    }
}

/// The client side of one in-memory session.
pub struct Dialogue {
    reader: BufReader<Reading>,
    end: Arc<End>,
}

/// The reading half of a shared end.
struct Reading(Arc<End>);

impl Read for Reading {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// A reply as the client read it, every line included.
#[derive(Debug)]
pub struct Answer {
    /// The whole reply, CRLFs included.
    pub raw: String,
}

impl Answer {
    /// Asserts the reply's last line starts with `prefix` (a code, or a
    /// code and enhanced code, or more); returns the whole reply.
    #[track_caller]
    pub fn expect(self, prefix: &str) -> String {
        let last = self.raw.trim_end().lines().last().unwrap_or("");
        let last = last.replacen('-', " ", 1);
        assert!(
            last.starts_with(prefix),
            "expected a reply starting {prefix:?}, got {:?}",
            self.raw
        );
        self.raw
    }

    /// The reply code.
    pub fn code(&self) -> u16 {
        self.raw.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}

impl Dialogue {
    fn over(end: End) -> Dialogue {
        let mut end = end;
        // A session that hangs fails the test instead of stalling it.
        end.set_read_timeout(Some(Duration::from_secs(20)));
        let end = Arc::new(end);
        Dialogue {
            reader: BufReader::new(Reading(end.clone())),
            end,
        }
    }

    /// Sends `line` and CRLF, and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Answer {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    /// Sends raw bytes, with no reply read.
    pub fn send(&mut self, text: &str) {
        (&*self.end)
            .write_all(text.as_bytes())
            .expect("session is open");
    }

    /// Reads one (possibly multi-line) reply.
    #[track_caller]
    pub fn reply(&mut self) -> Answer {
        self.try_reply().expect("a reply, not a closed connection")
    }

    /// Reads one reply; `None` when the session closed the connection.
    pub fn try_reply(&mut self) -> Option<Answer> {
        let mut raw = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("reading a reply: {e} (so far: {raw:?})"),
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            raw.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(Answer { raw });
            }
        }
    }

    /// True when the session closed the connection.
    pub fn is_closed(&mut self) -> bool {
        self.try_reply().is_none()
    }

    /// MAIL, RCPT for each of `to`, DATA and `body`; the final reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> Answer {
        self.cmd(&format!("MAIL FROM:<{from}>")).expect("250");
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>")).expect("250");
        }
        self.cmd("DATA").expect("354");
        self.send(body);
        self.send(".\r\n");
        self.reply()
    }
}
