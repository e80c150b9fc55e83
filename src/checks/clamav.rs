//! The ClamAV check: the whole message to clamd with `zINSTREAM`, in
//! chunks, over TCP or a Unix socket.
//!
//! Fact: `clamav.virus` is `none`, the name of what clamd found, or
//! `skipped` for a message over `max_size`. clamd's `ERROR` answers, a
//! dead clamd or a timeout are failures of the check (`temperror`, and
//! by default `451 4.7.1`).

use super::{Check, CheckFuture};
use crate::config::ClamavOptions;
use crate::facts::Value;
use crate::filter::{Context, Stage};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `clamav.virus`.
pub const VIRUS: &str = "clamav.virus";
/// The fact when clamd found nothing.
pub const CLEAN: &str = "none";
/// The fact of a message too large to be sent.
pub const SKIPPED: &str = "skipped";
/// The longest answer read: one line naming a signature.
const MAX_ANSWER: usize = 64 * 1024;

/// The ClamAV check with its settings.
pub struct Clamav {
    /// The settings.
    options: ClamavOptions,
    /// `clamav.virus`.
    facts: Vec<String>,
}

impl Clamav {
    /// The check for `options`.
    pub fn new(options: &ClamavOptions) -> Clamav {
        Clamav {
            options: options.clone(),
            facts: vec![VIRUS.to_string()],
        }
    }

    /// Scans `message` over whichever socket `addr` names.
    async fn scan(&self, message: &[u8]) -> Result<Answer, String> {
        let addr = &self.options.addr;
        let chunk = self.options.chunk_size;
        let fail = |e: std::io::Error| format!("clamd at {addr}: {e}");
        if let Some(path) = self.options.unix_path() {
            let s = async_std::os::unix::net::UnixStream::connect(path)
                .await
                .map_err(fail)?;
            instream(s, message, chunk).await.map_err(fail)
        } else {
            let s = async_std::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(fail)?;
            instream(s, message, chunk).await.map_err(fail)
        }
        .and_then(|raw| parse_answer(&raw))
    }
}

impl Check for Clamav {
    fn name(&self) -> &'static str {
        "clamav"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Data
    }

    fn run<'a>(&'a self, _ctx: &'a Context, message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let message = message.ok_or("the message could not be read")?;
            let virus = if message.len() as u64 > self.options.max_size {
                SKIPPED.to_string()
            } else {
                match self.scan(message).await? {
                    Answer::Clean => CLEAN.to_string(),
                    Answer::Found(name) => name,
                }
            };
            Ok(vec![(VIRUS.to_string(), Value::Text(virus))])
        })
    }
}

/// Sends `message` as a `zINSTREAM` in chunks of at most `chunk` bytes
/// and reads the answer up to its NUL.
async fn instream<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    message: &[u8],
    chunk: usize,
) -> std::io::Result<Vec<u8>> {
    s.write_all(b"zINSTREAM\0").await?;
    for part in message.chunks(chunk.max(1)) {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(part).await?;
    }
    s.write_all(&0u32.to_be_bytes()).await?;
    s.flush().await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.contains(&0) || answer.len() > MAX_ANSWER {
            break;
        }
    }
    Ok(answer)
}

/// What clamd said about a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `stream: OK`.
    Clean,
    /// `stream: NAME FOUND`.
    Found(String),
}

/// Reads clamd's answer to `zINSTREAM` (`stream: OK`, `stream: NAME
/// FOUND`, `... ERROR`). Anything else is an error, never clean.
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .iter()
        .position(|b| *b == 0 || *b == b'\n')
        .unwrap_or(raw.len());
    let line = std::str::from_utf8(&raw[..end])
        .map_err(|_| "clamd's answer is not UTF-8".to_string())?
        .trim();
    if line.is_empty() {
        return Err("clamd closed without an answer".into());
    }
    if let Some(why) = line.strip_suffix(" ERROR") {
        return Err(format!("clamd: {why:.200}"));
    }
    // A session id (`1: stream: OK`) is only sent in IDSESSION mode.
    let rest = line
        .strip_prefix("stream: ")
        .ok_or_else(|| format!("unexpected clamd answer: {line:.200}"))?;
    if rest == "OK" {
        return Ok(Answer::Clean);
    }
    match rest.strip_suffix(" FOUND") {
        // The name goes into a reply line: no control characters (a CR
        // inside it could break the reply).
        Some(name) if !name.trim().is_empty() && !name.chars().any(char::is_control) => {
            Ok(Answer::Found(name.trim().to_string()))
        }
        _ => Err(format!("unexpected clamd answer: {line:.200}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(b"stream: OK\0").unwrap(), Answer::Clean);
        assert_eq!(
            parse_answer(b"stream: Eicar-Signature FOUND\0").unwrap(),
            Answer::Found("Eicar-Signature".into())
        );
        for bad in [
            &b""[..],
            b"\0",
            b"INSTREAM size limit exceeded. ERROR\0",
            b"stream: FOUND\0",
            b"stream: maybe\0",
            b"PONG\0",
        ] {
            assert!(parse_answer(bad).is_err(), "{bad:?}");
        }
    }
}
