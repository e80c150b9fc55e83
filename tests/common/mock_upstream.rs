//! A small SMTP server that plays the upstream in tests and records what it
//! receives, with knobs for the failures the gateway must survive.

use super::pipe;
use smtpgate::stream::BoxStream;
use smtpgate::upstream::{Connecting, Connector};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the mock behaves.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Offer PIPELINING in EHLO.
    pub pipelining: bool,
    /// Reply lines for RCPT by recipient address (lowercase), e.g.
    /// "550 5.1.1 No such user"; others get "250 2.1.5 Ok".
    pub rcpt_replies: HashMap<String, String>,
    /// Reply to the final dot.
    pub data_reply: String,
    /// Close the connection after this many body bytes instead of answering.
    pub close_after_body_bytes: Option<usize>,
    /// Refuse EHLO so the client must fall back to HELO.
    pub refuse_ehlo: bool,
    /// The greeting line (a 554 greeting refuses the session).
    pub greeting: String,
    /// Read the whole message but never answer the final dot.
    pub stall_after_data: bool,
    /// More EHLO keyword lines, e.g. "XFORWARD NAME ADDR PROTO HELO"
    /// (XFORWARD is then answered 250, XCLIENT with `xclient_reply`).
    pub ehlo_extra: Vec<String>,
    /// The reply to XCLIENT: a new greeting by default.
    pub xclient_reply: String,
    /// Close a connection that sent no command for this long, saying
    /// `421 4.4.2` first, as Postfix's smtpd does on its idle timeout.
    pub idle_close: Option<Duration>,
    /// Close a connection, without a reply, when its Nth MAIL (1-based)
    /// arrives: a connection that dies between two transactions unseen.
    pub close_at_mail: Option<usize>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            pipelining: true,
            rcpt_replies: HashMap::new(),
            data_reply: "250 2.0.0 Ok: queued as MOCK".to_string(),
            close_after_body_bytes: None,
            refuse_ehlo: false,
            greeting: "220 mock.test ESMTP mock".to_string(),
            stall_after_data: false,
            ehlo_extra: Vec::new(),
            xclient_reply: "220 mock.test ESMTP mock".to_string(),
            idle_close: None,
            close_at_mail: None,
        }
    }
}

/// One message the mock accepted at the final dot (or saw end, if it closed).
#[derive(Clone, Debug)]
pub struct Delivered {
    pub from: String,
    pub rcpts: Vec<String>,
    /// The message, dot-unstuffed, without the final ".\r\n".
    pub data: Vec<u8>,
    /// The DATA bytes exactly as they came over the wire, final dot included.
    pub wire: Vec<u8>,
    /// Which connection (0-based) carried it.
    pub connection: usize,
}

/// What the mock recorded.
#[derive(Default, Debug)]
pub struct Recorded {
    pub delivered: Vec<Delivered>,
    /// Every command line, per connection.
    pub commands: Vec<Vec<String>>,
}

/// A recording upstream on 127.0.0.1:0.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub recorded: Arc<Mutex<Recorded>>,
}

/// Opens in-memory connections to a mock: each `connect` is a new pipe
/// with the mock serving its far end on a thread of its own.
pub struct MemoryConnector {
    options: MockOptions,
    recorded: Arc<Mutex<Recorded>>,
}

impl Connector for MemoryConnector {
    fn connect<'a>(&'a self, _addr: &'a str) -> Connecting<'a> {
        let (ours, mut theirs) = pipe::pair();
        let id = new_connection(&self.recorded);
        let (options, rec) = (self.options.clone(), self.recorded.clone());
        theirs.set_read_timeout(Some(options.idle_close.unwrap_or(Duration::from_secs(30))));
        std::thread::spawn(move || {
            let _ = serve(&theirs, id, &options, &rec);
        });
        Box::pin(async move { Ok((Box::new(ours) as BoxStream, "memory".to_string())) })
    }
}

/// Numbers a new connection and gives it its command list.
fn new_connection(rec: &Mutex<Recorded>) -> usize {
    let mut r = rec.lock().unwrap();
    r.commands.push(Vec::new());
    r.commands.len() - 1
}

impl MockUpstream {
    /// A mock reached over in-memory pipes, not TCP: `addr` is only a
    /// placeholder for the config, and `connector` opens the connections.
    pub fn in_memory(options: MockOptions) -> (MockUpstream, Arc<MemoryConnector>) {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let connector = Arc::new(MemoryConnector {
            options,
            recorded: recorded.clone(),
        });
        let addr = "127.0.0.1:9".parse().unwrap();
        (MockUpstream { addr, recorded }, connector)
    }

    pub fn start(options: MockOptions) -> MockUpstream {
        MockUpstream::start_on("127.0.0.1:0".parse().unwrap(), options)
    }

    /// Starts on a given address: an upstream that comes back where a
    /// dead one was.
    pub fn start_on(addr: SocketAddr, options: MockOptions) -> MockUpstream {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let rec = recorded.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let rec = rec.clone();
                let options = options.clone();
                let id = new_connection(&rec);
                let timeout = options.idle_close.unwrap_or(Duration::from_secs(30));
                if stream.set_read_timeout(Some(timeout)).is_err() {
                    continue;
                }
                std::thread::spawn(move || {
                    let _ = serve(&stream, id, &options, &rec);
                });
            }
        });
        MockUpstream { addr, recorded }
    }

    /// Messages delivered so far, numbered by connection as
    /// [`commands`](Self::commands) numbers them.
    pub fn delivered(&self) -> Vec<Delivered> {
        let r = self.recorded.lock().unwrap();
        let probes: Vec<usize> = (0..r.commands.len())
            .filter(|&i| probe_only(r.commands[i].iter().map(String::as_str)))
            .collect();
        let mut delivered = r.delivered.clone();
        for d in &mut delivered {
            d.connection -= probes.iter().filter(|&&p| p < d.connection).count();
        }
        delivered
    }

    /// Command lines seen, per connection; the connections the gateway
    /// opened only to learn what the upstream offers (its probe at start
    /// and on reload) are left out, so the first client's is the first.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.all_commands()
            .into_iter()
            .filter(|c| !probe_only(c.iter().map(String::as_str)))
            .collect()
    }

    /// Command lines seen, per connection, probes included.
    pub fn all_commands(&self) -> Vec<Vec<String>> {
        self.recorded.lock().unwrap().commands.clone()
    }

    /// Waits (up to 5 s) until `n` messages were delivered.
    pub fn wait_for(&self, n: usize) -> Vec<Delivered> {
        for _ in 0..500 {
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.delivered()
    }
}

/// True for a connection that only greeted (and maybe secured the
/// connection) and left: what the gateway's probe of the upstream's
/// extensions does, and a relayed session never does (it opens its
/// connection for a MAIL).
pub fn probe_only<'a>(mut commands: impl Iterator<Item = &'a str>) -> bool {
    let mut any = false;
    let greeting = commands.all(|c| {
        any = true;
        let verb = c.split(' ').next().unwrap_or("").to_ascii_uppercase();
        matches!(verb.as_str(), "EHLO" | "HELO" | "STARTTLS" | "QUIT")
    });
    any && greeting
}

/// An address nothing listens on (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Plays the upstream on one connection, over TCP or a pipe (both are
/// read and written through shared references).
fn serve<S>(stream: &S, id: usize, o: &MockOptions, rec: &Mutex<Recorded>) -> std::io::Result<()>
where
    for<'a> &'a S: Read + Write,
{
    let mut w = stream;
    let mut r = BufReader::new(stream);
    w.write_all(format!("{}\r\n", o.greeting).as_bytes())?;
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut mails = 0;
    // The BDAT chunks of the message so far.
    let mut chunked = Vec::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if o.idle_close.is_some() && line.is_empty() => {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    w.write_all(b"421 4.4.2 mock.test Error: timeout exceeded\r\n")?;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let cmd = line.trim_end().to_string();
        rec.lock().unwrap().commands[id].push(cmd.clone());
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            if o.refuse_ehlo {
                w.write_all(b"502 5.5.2 EHLO not supported\r\n")?;
            } else {
                let mut lines: Vec<&str> = if o.pipelining {
                    vec![
                        "mock.test",
                        "PIPELINING",
                        "SIZE 100000000",
                        "8BITMIME",
                        "ENHANCEDSTATUSCODES",
                    ]
                } else {
                    vec!["mock.test", "SIZE 100000000", "8BITMIME"]
                };
                lines.extend(o.ehlo_extra.iter().map(String::as_str));
                let last = lines.len() - 1;
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    w.write_all(format!("250{sep}{l}\r\n").as_bytes())?;
                }
            }
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 mock.test\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            mails += 1;
            if o.close_at_mail == Some(mails) {
                return Ok(());
            }
            from = between_brackets(&cmd);
            rcpts.clear();
            w.write_all(b"250 2.1.0 Ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let to = between_brackets(&cmd);
            match o.rcpt_replies.get(&to.to_ascii_lowercase()) {
                Some(reply) => {
                    if reply.starts_with('2') {
                        rcpts.push(to);
                    }
                    w.write_all(format!("{reply}\r\n").as_bytes())?;
                }
                None => {
                    rcpts.push(to);
                    w.write_all(b"250 2.1.5 Ok\r\n")?;
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                w.write_all(b"554 5.5.1 Error: no valid recipients\r\n")?;
                continue;
            }
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
            let mut wire = Vec::new();
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                wire.extend_from_slice(&l);
                if let Some(limit) = o.close_after_body_bytes {
                    if wire.len() >= limit {
                        return Ok(());
                    }
                }
                if l == b".\r\n" {
                    break;
                }
                if l.starts_with(b".") {
                    data.extend_from_slice(&l[1..]);
                } else {
                    data.extend_from_slice(&l);
                }
            }
            if o.stall_after_data {
                std::thread::sleep(Duration::from_secs(10));
                return Ok(());
            }
            let accepted = o.data_reply.starts_with('2');
            if accepted {
                rec.lock().unwrap().delivered.push(Delivered {
                    from: from.clone(),
                    rcpts: rcpts.clone(),
                    data,
                    wire,
                    connection: id,
                });
            }
            rcpts.clear();
            w.write_all(format!("{}\r\n", o.data_reply).as_bytes())?;
        } else if upper.starts_with("BDAT ") && o.ehlo_extra.iter().any(|e| e == "CHUNKING") {
            // RFC 3030: the octets follow the line; the message ends at LAST.
            let mut words = upper.split(' ').skip(1);
            let size: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let last = words.next() == Some("LAST");
            let mut octets = vec![0; size];
            r.read_exact(&mut octets)?;
            chunked.extend_from_slice(&octets);
            if !last {
                w.write_all(format!("250 2.0.0 {size} octets received\r\n").as_bytes())?;
                continue;
            }
            let data = std::mem::take(&mut chunked);
            if o.data_reply.starts_with('2') {
                rec.lock().unwrap().delivered.push(Delivered {
                    from: from.clone(),
                    rcpts: rcpts.clone(),
                    wire: data.clone(),
                    data,
                    connection: id,
                });
            }
            rcpts.clear();
            w.write_all(format!("{}\r\n", o.data_reply).as_bytes())?;
        } else if upper == "RSET" {
            chunked.clear();
            rcpts.clear();
            w.write_all(b"250 2.0.0 Ok\r\n")?;
        } else if upper.starts_with("XFORWARD ") && !o.ehlo_extra.is_empty() {
            w.write_all(b"250 2.0.0 Ok\r\n")?;
        } else if upper.starts_with("XCLIENT ") && !o.ehlo_extra.is_empty() {
            w.write_all(format!("{}\r\n", o.xclient_reply).as_bytes())?;
        } else if upper == "NOOP" {
            w.write_all(b"250 2.0.0 Ok\r\n")?;
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.2 Error: command not recognized\r\n")?;
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
