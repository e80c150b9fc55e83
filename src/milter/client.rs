//! One connection to a milter over TCP (`inet:host:port`) or a Unix
//! socket (`unix:/path`), as Postfix names them: option negotiation, then
//! commands each answered (or not, as negotiated) within a timeout.

use super::codec::{action, protocol, Command, Decoder, Response, VERSION};
use crate::config::MilterOptions;
use crate::stream::BoxStream;
use async_std::io::timeout;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use std::fmt;
use std::io;
use std::time::Duration;

/// Why a milter could not be used.
#[derive(Debug)]
pub enum MilterError {
    /// Connecting, reading or writing failed (or it closed).
    Io(io::Error),
    /// It did not answer in time.
    Timeout(&'static str),
    /// It answered something the protocol does not allow there.
    Protocol(String),
}

impl fmt::Display for MilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterError::Io(e) => write!(f, "{e}"),
            MilterError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            MilterError::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl From<io::Error> for MilterError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            MilterError::Timeout("the milter")
        } else {
            MilterError::Io(e)
        }
    }
}

/// An open, negotiated milter connection.
pub struct Connection {
    stream: BoxStream,
    decoder: Decoder,
    /// SMFIF_* actions the milter may ask for.
    pub actions: u32,
    /// SMFIP_* steps it skips or does not answer.
    pub protocol: u32,
    command_timeout: Duration,
    eom_timeout: Duration,
}

/// Opens the socket named `inet:host:port` or `unix:/path`.
async fn dial(socket: &str) -> io::Result<BoxStream> {
    if let Some(path) = socket.strip_prefix("unix:") {
        let s = async_std::os::unix::net::UnixStream::connect(path).await?;
        return Ok(Box::new(s));
    }
    let addr = socket.strip_prefix("inet:").unwrap_or(socket);
    // Postfix writes inet:host:port; an IPv6 host may be bracketed.
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad port"))?;
    let s = async_std::net::TcpStream::connect((host, port)).await?;
    s.set_nodelay(true)?;
    Ok(Box::new(s))
}

impl Connection {
    /// Connects to the milter and negotiates options.
    pub async fn open(cfg: &MilterOptions) -> Result<Connection, MilterError> {
        let stream = timeout(cfg.connect_timeout(), dial(&cfg.socket))
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => MilterError::Timeout("the connection"),
                _ => MilterError::Io(e),
            })?;
        let mut conn = Connection {
            stream,
            decoder: Decoder::new(),
            actions: 0,
            protocol: 0,
            command_timeout: cfg.command_timeout(),
            eom_timeout: cfg.eom_timeout(),
        };
        conn.send(&Command::OptNeg {
            version: VERSION,
            actions: action::ALL,
            protocol: protocol::OFFERED,
        })
        .await?;
        match conn
            .read("option negotiation", conn.command_timeout)
            .await?
        {
            Response::OptNeg {
                version,
                actions,
                protocol: flags,
            } => {
                if version < 2 {
                    return Err(MilterError::Protocol(format!("version {version}")));
                }
                conn.actions = actions & action::ALL;
                // Steps the gateway did not offer to leave out are still sent.
                conn.protocol = flags & protocol::OFFERED;
                Ok(conn)
            }
            other => Err(MilterError::Protocol(format!(
                "{other:?} to option negotiation"
            ))),
        }
    }

    /// True when protocol flag `flag` was negotiated.
    pub fn has(&self, flag: u32) -> bool {
        self.protocol & flag != 0
    }

    /// Writes one command.
    pub async fn send(&mut self, command: &Command) -> Result<(), MilterError> {
        let packet = command.encode();
        timeout(self.command_timeout, async {
            self.stream.write_all(&packet).await?;
            self.stream.flush().await
        })
        .await?;
        Ok(())
    }

    /// Reads the next response, waiting at most `wait` for it (progress
    /// reports restart the wait, as with Postfix).
    async fn read(&mut self, what: &'static str, wait: Duration) -> Result<Response, MilterError> {
        let mut buf = [0u8; 8192];
        loop {
            match self.decoder.next_response() {
                Ok(Some(Response::Progress)) => continue,
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(MilterError::Protocol(e.to_string())),
            }
            let n = match timeout(wait, self.stream.read(&mut buf)).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(MilterError::Timeout(what))
                }
                Err(e) => return Err(MilterError::Io(e)),
            };
            if n == 0 {
                return Err(MilterError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed the connection waiting for {what}"),
                )));
            }
            self.decoder.feed(&buf[..n]);
        }
    }

    /// Sends `command` and reads its answer, `None` when the negotiated
    /// flag `no_reply` says it is not answered.
    pub async fn ask(
        &mut self,
        command: &Command,
        no_reply: u32,
    ) -> Result<Option<Response>, MilterError> {
        self.send(command).await?;
        if no_reply != 0 && self.has(no_reply) {
            return Ok(None);
        }
        self.read("a reply", self.command_timeout).await.map(Some)
    }

    /// Sends end of message and reads the modifications up to the final
    /// answer.
    pub async fn eom(&mut self) -> Result<(Vec<Response>, Response), MilterError> {
        self.send(&Command::Eom).await?;
        let mut changes = Vec::new();
        loop {
            let r = self
                .read("the end-of-message reply", self.eom_timeout)
                .await?;
            match r {
                Response::Accept
                | Response::Continue
                | Response::Discard
                | Response::Reject
                | Response::Tempfail
                | Response::ReplyCode(_) => return Ok((changes, r)),
                Response::OptNeg { .. } | Response::Skip => {
                    return Err(MilterError::Protocol(format!("{r:?} at end of message")))
                }
                change => changes.push(change),
            }
        }
    }

    /// Ends the connection politely.
    pub async fn quit(mut self) {
        let _ = self.send(&Command::Quit).await;
        let _ = self.stream.close().await;
    }
}
