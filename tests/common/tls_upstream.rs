//! A small upstream SMTP server that can speak STARTTLS, implicit TLS and
//! AUTH (blocking rustls), and records what it received and whether it
//! came under TLS — for the gateway's client side.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the TLS mock behaves.
#[derive(Clone, Default)]
pub struct TlsMockOptions {
    /// Offer STARTTLS with this certificate.
    pub starttls: Option<Arc<ServerConfig>>,
    /// TLS from the first byte with this certificate.
    pub implicit: Option<Arc<ServerConfig>>,
    /// Offer AUTH PLAIN LOGIN (after TLS) and accept this user/password.
    pub auth: Option<(String, String)>,
    /// Offer only this AUTH mechanism (default: PLAIN and LOGIN).
    pub auth_mechanisms: Option<String>,
    /// Bytes sent right after "220 Ready to start TLS", before the
    /// handshake: an injection the client must ignore.
    pub inject_after_starttls: Option<String>,
    /// Greeting line (default "220 mock.test ESMTP").
    pub greeting: Option<String>,
}

/// One accepted message.
#[derive(Clone, Debug)]
pub struct TlsDelivered {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    /// It arrived under TLS.
    pub tls: bool,
    /// The user that authenticated first, if any.
    pub auth_user: Option<String>,
}

/// What the mock saw.
#[derive(Default, Debug)]
pub struct TlsRecorded {
    pub delivered: Vec<TlsDelivered>,
    /// Per connection: (command line, under TLS?).
    pub commands: Vec<Vec<(String, bool)>>,
}

/// A TLS-capable recording upstream on 127.0.0.1:0.
pub struct TlsMock {
    pub addr: SocketAddr,
    pub recorded: Arc<Mutex<TlsRecorded>>,
}

impl TlsMock {
    pub fn start(options: TlsMockOptions) -> TlsMock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(TlsRecorded::default()));
        let rec = recorded.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let rec = rec.clone();
                let options = options.clone();
                let id = {
                    let mut r = rec.lock().unwrap();
                    r.commands.push(Vec::new());
                    r.commands.len() - 1
                };
                std::thread::spawn(move || {
                    let _ = serve(stream, id, &options, &rec);
                });
            }
        });
        TlsMock { addr, recorded }
    }

    pub fn delivered(&self) -> Vec<TlsDelivered> {
        self.recorded.lock().unwrap().delivered.clone()
    }

    /// Command lines seen (and whether under TLS), per connection; those
    /// of the gateway's probe of the upstream's extensions are left out,
    /// as [`MockUpstream::commands`](super::MockUpstream::commands) does.
    pub fn commands(&self) -> Vec<Vec<(String, bool)>> {
        let all = self.recorded.lock().unwrap().commands.clone();
        all.into_iter()
            .filter(|c| !super::mock_upstream::probe_only(c.iter().map(|(l, _)| l.as_str())))
            .collect()
    }

    /// Number of connections accepted so far, probes included.
    pub fn connections(&self) -> usize {
        self.recorded.lock().unwrap().commands.len()
    }
}

/// The mock's end of a connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Gone,
}

impl Conn {
    fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    fn upgrade(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let Conn::Plain(mut tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other("not plain"));
        };
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        *self = Conn::Tls(Box::new(StreamOwned::new(conn, tcp)));
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Gone => Err(io::Error::other("gone")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Gone => Ok(()),
        }
    }
}

/// A connection with a line buffer.
struct Lines {
    conn: Conn,
    buf: Vec<u8>,
}

impl Lines {
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.buf.drain(..=lf).collect()));
            }
            let mut chunk = [0u8; 4096];
            let n = match self.conn.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn say(&mut self, text: &str) -> io::Result<()> {
        self.conn.write_all(text.as_bytes())?;
        self.conn.flush()
    }
}

fn serve(
    stream: TcpStream,
    id: usize,
    o: &TlsMockOptions,
    rec: &Mutex<TlsRecorded>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut c = Lines {
        conn: Conn::Plain(stream),
        buf: Vec::new(),
    };
    if let Some(config) = &o.implicit {
        c.conn.upgrade(config.clone())?;
    }
    let greeting = o
        .greeting
        .clone()
        .unwrap_or_else(|| "220 mock.test ESMTP".to_string());
    c.say(&format!("{greeting}\r\n"))?;
    if !greeting.starts_with("220") {
        return Ok(());
    }
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut auth_user: Option<String> = None;
    loop {
        let Some(raw) = c.line()? else { return Ok(()) };
        let cmd = String::from_utf8_lossy(&raw).trim_end().to_string();
        let tls = c.conn.is_tls();
        rec.lock().unwrap().commands[id].push((cmd.clone(), tls));
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let mut lines = vec!["250-mock.test".to_string(), "250-PIPELINING".to_string()];
            if o.starttls.is_some() && !tls {
                lines.push("250-STARTTLS".to_string());
            }
            if o.auth.is_some() && tls {
                let mechs = o
                    .auth_mechanisms
                    .clone()
                    .unwrap_or_else(|| "PLAIN LOGIN".to_string());
                lines.push(format!("250-AUTH {mechs}"));
            }
            lines.push("250 8BITMIME".to_string());
            c.say(&(lines.join("\r\n") + "\r\n"))?;
        } else if upper == "STARTTLS" {
            let Some(config) = o.starttls.clone().filter(|_| !tls) else {
                c.say("454 4.7.0 TLS not available\r\n")?;
                continue;
            };
            let mut go = "220 2.0.0 Ready to start TLS\r\n".to_string();
            if let Some(extra) = &o.inject_after_starttls {
                go.push_str(extra);
            }
            c.say(&go)?;
            c.buf.clear();
            if c.conn.upgrade(config).is_err() {
                return Ok(());
            }
        } else if upper.starts_with("AUTH ") {
            let Some((user, pass)) = o.auth.clone() else {
                c.say("502 5.5.1 no AUTH\r\n")?;
                continue;
            };
            let words: Vec<&str> = cmd.split(' ').collect();
            let got = match words.get(1).map(|w| w.to_ascii_uppercase()).as_deref() {
                Some("PLAIN") => {
                    let token = match words.get(2) {
                        Some(t) => t.to_string(),
                        None => {
                            c.say("334 \r\n")?;
                            let l = c.line()?.unwrap_or_default();
                            String::from_utf8_lossy(&l).trim_end().to_string()
                        }
                    };
                    let decoded = STANDARD.decode(token).unwrap_or_default();
                    let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                    (parts.len() == 3).then(|| {
                        (
                            String::from_utf8_lossy(parts[1]).to_string(),
                            String::from_utf8_lossy(parts[2]).to_string(),
                        )
                    })
                }
                Some("LOGIN") => {
                    c.say("334 VXNlcm5hbWU6\r\n")?;
                    let u = c.line()?.unwrap_or_default();
                    c.say("334 UGFzc3dvcmQ6\r\n")?;
                    let p = c.line()?.unwrap_or_default();
                    let d = |l: Vec<u8>| {
                        String::from_utf8_lossy(
                            &STANDARD
                                .decode(String::from_utf8_lossy(&l).trim_end())
                                .unwrap_or_default(),
                        )
                        .to_string()
                    };
                    Some((d(u), d(p)))
                }
                _ => None,
            };
            if got == Some((user.clone(), pass)) {
                auth_user = Some(user);
                c.say("235 2.7.0 Authentication successful\r\n")?;
            } else {
                c.say("535 5.7.8 Authentication credentials invalid\r\n")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            from = between_brackets(&cmd);
            rcpts.clear();
            c.say("250 2.1.0 Ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            rcpts.push(between_brackets(&cmd));
            c.say("250 2.1.5 Ok\r\n")?;
        } else if upper == "DATA" {
            c.say("354 go ahead\r\n")?;
            let mut data = Vec::new();
            loop {
                let Some(l) = c.line()? else { return Ok(()) };
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
            }
            rec.lock().unwrap().delivered.push(TlsDelivered {
                from: from.clone(),
                rcpts: std::mem::take(&mut rcpts),
                data,
                tls: c.conn.is_tls(),
                auth_user: auth_user.clone(),
            });
            c.say("250 2.0.0 Ok: queued as TLSMOCK\r\n")?;
        } else if upper == "RSET" || upper == "NOOP" {
            rcpts.clear();
            c.say("250 2.0.0 Ok\r\n")?;
        } else if upper == "QUIT" {
            c.say("221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            c.say("502 5.5.2 Error: command not recognized\r\n")?;
        }
    }
}

fn between_brackets(cmd: &str) -> String {
    let start = cmd.find('<').map(|i| i + 1).unwrap_or(0);
    let end = cmd[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(cmd.len());
    cmd[start..end].to_string()
}
