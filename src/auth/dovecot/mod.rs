//! A client of Dovecot's auth service, as Postfix's
//! `smtpd_sasl_type = dovecot` is: the protocol lines are in [`codec`],
//! this module speaks them over a Unix or TCP socket.
//!
//! Connections are kept and reused across sessions, one request at a time
//! each; answers are matched to requests by ID, as the protocol asks.
//! Every error (cannot connect, bad line, `FAIL ... temp`, timeout) is a
//! temporary failure: the client must not hear its password is wrong
//! when only Dovecot is unreachable.

pub mod codec;

use super::{Credentials, Mechanism};
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use async_std::os::unix::net::UnixStream;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use codec::{LineBuffer, ServerLine};
use futures::io::{AsyncRead, AsyncWrite};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use zeroize::Zeroizing;

/// Where the auth service listens.
#[derive(Debug, Clone)]
pub enum Target {
    /// Its `unix_listener`.
    Unix(PathBuf),
    /// Its `inet_listener`, `host:port`.
    Tcp(String),
}

/// What Dovecot said about a login.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The password is right; the canonical user name.
    Ok(String),
    /// The password is wrong, or the user unknown.
    Rejected,
}

/// About the SMTP client, for Dovecot's log, penalties and passdb rules
/// (`%{lip}`, `%{rip}`, `allow_nets`).
pub struct Peer {
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address the client connected to: the listener socket's, or
    /// behind a PROXY protocol balancer the destination its header names.
    pub local: Option<SocketAddr>,
    /// The session is under TLS.
    pub secured: bool,
}

/// Connections kept open for reuse, at most this many.
const IDLE_MAX: usize = 8;

/// A Dovecot auth service.
pub struct DovecotClient {
    /// Where it listens.
    target: Target,
    /// How long one login may take, connecting included.
    timeout: Duration,
    /// Open connections after their handshake, waiting for a request.
    idle: Mutex<Vec<Connection>>,
    /// Request IDs, unique per process and so per connection.
    next_id: AtomicU32,
    /// What the last handshake offered, as [`Offered`] bits; 0 when no
    /// handshake succeeded yet or the last connection attempt failed.
    offered: AtomicU8,
    /// A background handshake ([`DovecotClient::learn_mechanisms`]) is under way.
    learning: AtomicBool,
}

/// Bits of [`DovecotClient::offered`].
struct Offered;

impl Offered {
    /// A handshake succeeded: the other bits are what it offered.
    const KNOWN: u8 = 1;
    /// The bit of one mechanism.
    fn bit(m: Mechanism) -> u8 {
        match m {
            Mechanism::Plain => 2,
            Mechanism::Login => 4,
        }
    }
}

/// One connection after its handshake.
struct Connection {
    /// Reading half.
    reader: Box<dyn AsyncRead + Unpin + Send>,
    /// Writing half.
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// Received bytes not yet parsed.
    lines: LineBuffer,
    /// The mechanisms the server offered.
    mechanisms: Vec<String>,
}

impl Connection {
    /// Connects and does the handshake.
    async fn open(target: &Target) -> Result<Connection, String> {
        let (reader, writer): (
            Box<dyn AsyncRead + Unpin + Send>,
            Box<dyn AsyncWrite + Unpin + Send>,
        ) = match target {
            Target::Unix(path) => {
                let s = UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
                (Box::new(s.clone()), Box::new(s))
            }
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                (Box::new(s.clone()), Box::new(s))
            }
        };
        let mut c = Connection {
            reader,
            writer,
            lines: LineBuffer::default(),
            mechanisms: Vec::new(),
        };
        c.send(&codec::handshake(std::process::id())).await?;
        match c.line().await? {
            ServerLine::Version(1, _) => {}
            ServerLine::Version(major, minor) => {
                return Err(format!("speaks auth protocol {major}.{minor}, not 1.x"))
            }
            other => return Err(format!("handshake began with {other:?}, not VERSION")),
        }
        loop {
            match c.line().await? {
                ServerLine::Mech(name) => c.mechanisms.push(name),
                ServerLine::Done => break,
                ServerLine::Other | ServerLine::Version(..) => {}
                other => return Err(format!("unexpected {other:?} in the handshake")),
            }
        }
        Ok(c)
    }

    /// Writes a request line.
    async fn send(&mut self, line: &str) -> Result<(), String> {
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        self.writer
            .flush()
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// Reads and parses the next line.
    async fn line(&mut self) -> Result<ServerLine, String> {
        loop {
            if let Some(line) = self.lines.next_line().map_err(|e| e.to_string())? {
                return codec::parse(&line).map_err(|e| format!("bad answer: {e}"));
            }
            let mut buf = [0u8; 4096];
            let n = self
                .reader
                .read(&mut buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("closed the connection".into());
            }
            self.lines.feed(&buf[..n]);
        }
    }

    /// The mechanism to use with Dovecot for a client's: the same when
    /// offered, else the other one we can carry (we hold the credentials
    /// either way).
    fn mechanism_for(&self, wanted: Mechanism) -> Result<Mechanism, String> {
        let offers = |m: Mechanism| self.mechanisms.iter().any(|n| n == m.name());
        let other = match wanted {
            Mechanism::Plain => Mechanism::Login,
            Mechanism::Login => Mechanism::Plain,
        };
        [wanted, other]
            .into_iter()
            .find(|m| offers(*m))
            .ok_or_else(|| "offers neither PLAIN nor LOGIN".to_string())
    }

    /// One login on this connection.
    async fn login(
        &mut self,
        id: u32,
        mechanism: Mechanism,
        creds: &Credentials,
        peer: &Peer,
    ) -> Result<Answer, String> {
        let mechanism = self.mechanism_for(mechanism)?;
        let user = STANDARD.encode(creds.user.as_bytes());
        let password = Zeroizing::new(STANDARD.encode(&creds.password[..]));
        let initial = match mechanism {
            Mechanism::Plain => {
                let mut raw = Zeroizing::new(Vec::new());
                raw.extend_from_slice(creds.authzid.as_bytes());
                raw.push(0);
                raw.extend_from_slice(creds.user.as_bytes());
                raw.push(0);
                raw.extend_from_slice(&creds.password);
                Some(Zeroizing::new(STANDARD.encode(&raw[..])))
            }
            Mechanism::Login => None,
        };
        let request = codec::Request {
            id,
            mechanism: mechanism.name(),
            remote_ip: Some(peer.remote.ip()),
            local_ip: peer.local.map(|a| a.ip()),
            remote_port: Some(peer.remote.port()),
            local_port: peer.local.map(|a| a.port()),
            secured: peer.secured,
            initial: initial.as_ref().map(|s| s.as_str()),
        };
        self.send(&codec::auth(&request)).await?;
        // LOGIN answers "Username:" then "Password:"; PLAIN without an
        // initial response would get one empty challenge.
        let mut answers: Vec<&str> = match (&initial, mechanism) {
            (Some(resp), _) => vec![resp.as_str()],
            (None, _) => vec![&password, &user],
        };
        loop {
            match self.line().await? {
                ServerLine::Ok { id: got, user } if got == id => {
                    return Ok(Answer::Ok(user.unwrap_or_else(|| creds.user.clone())))
                }
                ServerLine::Fail {
                    id: got,
                    temp,
                    reason,
                } if got == id => {
                    if temp {
                        return Err(format!(
                            "temporary failure: {}",
                            reason.unwrap_or_else(|| "no reason given".into())
                        ));
                    }
                    return Ok(Answer::Rejected);
                }
                ServerLine::Cont { id: got, .. } if got == id => {
                    let Some(next) = answers.pop() else {
                        return Err("asked for more than the mechanism carries".into());
                    };
                    let line = Zeroizing::new(codec::cont(id, next));
                    self.send(&line).await?;
                }
                // An answer to a request this connection no longer waits for
                // (one that timed out is never reused, so this is a server
                // bug): skip it rather than take it for ours.
                ServerLine::Ok { .. } | ServerLine::Fail { .. } | ServerLine::Cont { .. } => {}
                ServerLine::Other => {}
                other => return Err(format!("unexpected {other:?}")),
            }
        }
    }
}

impl DovecotClient {
    /// A client of the auth service at `target`; connects on first use.
    pub fn new(target: Target, timeout: Duration) -> DovecotClient {
        DovecotClient {
            target,
            timeout,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(1),
            offered: AtomicU8::new(0),
            learning: AtomicBool::new(false),
        }
    }

    /// The mechanisms smtpgate carries that Dovecot offered at the last
    /// handshake; `None` when it has not been reached (yet, or since a
    /// connection attempt failed).
    pub fn mechanisms(&self) -> Option<Vec<Mechanism>> {
        let bits = self.offered.load(Ordering::Relaxed);
        (bits & Offered::KNOWN != 0).then(|| {
            Mechanism::ALL
                .into_iter()
                .filter(|m| bits & Offered::bit(*m) != 0)
                .collect()
        })
    }

    /// Connects once to learn the mechanisms, when they are not known and
    /// no other attempt is under way; the connection is kept for the next
    /// login. For EHLO, which must not wait on it: spawn it.
    pub async fn learn_mechanisms(&self) {
        if self.mechanisms().is_some() || self.learning.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(Ok(conn)) = async_std::future::timeout(self.timeout, self.open()).await {
            self.keep(conn);
        }
        self.learning.store(false, Ordering::Release);
    }

    /// Opens a connection and notes what its handshake offered (or, when
    /// it fails, that nothing is known).
    async fn open(&self) -> Result<Connection, String> {
        match Connection::open(&self.target).await {
            Ok(conn) => {
                let bits = Mechanism::ALL
                    .into_iter()
                    .filter(|m| conn.mechanisms.iter().any(|n| n == m.name()))
                    .fold(Offered::KNOWN, |bits, m| bits | Offered::bit(m));
                self.offered.store(bits, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => {
                self.offered.store(0, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Checks a login. `Err` is a temporary failure, with why.
    pub async fn login(
        &self,
        mechanism: Mechanism,
        creds: &Credentials,
        peer: &Peer,
    ) -> Result<Answer, String> {
        let work = async {
            let kept = self.take_idle();
            let reused = kept.is_some();
            let mut conn = match kept {
                Some(c) => c,
                None => self.open().await?,
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
            let answer = match conn.login(id, mechanism, creds, peer).await {
                // A kept connection may have been closed by Dovecot while
                // idle: one retry on a fresh one.
                Err(_) if reused => {
                    let mut fresh = self.open().await?;
                    let answer = fresh.login(id, mechanism, creds, peer).await?;
                    conn = fresh;
                    answer
                }
                other => other?,
            };
            self.keep(conn);
            Ok(answer)
        };
        match async_std::future::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// An idle connection, if one is kept.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.pop()
    }

    /// Keeps a connection for the next login.
    fn keep(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(conn);
        }
    }
}
