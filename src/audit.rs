//! The audit trail: one JSON object per line for every transaction, and
//! one for every session that ended without a transaction (refused at
//! connect, closed after failed AUTH, ...).
//!
//! Records are serialized by the session and handed to one writer thread
//! through a bounded queue, so mail never waits for the disk: a full queue
//! or a failed write is logged loudly (the record is lost) and the session
//! goes on. SIGUSR1 asks the writer to reopen the file, for logrotate.

use crate::config::AuditOptions;
use crate::facts::{CheckRun, Facts, Value};
use crate::filter::{Hit, TlsInfo};
use log::{error, info};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// Records that may wait for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// Longest `Subject` and `Message-ID` kept in a record, in characters.
pub const MAX_HEADER_CHARS: usize = 200;

/// What the writer thread is asked to do.
enum Job {
    /// Append one line (with its newline).
    Line(String),
    /// Close and reopen the file.
    Reopen,
    /// Answer once everything queued before is written.
    Flush(SyncSender<()>),
    /// Write what is queued and stop.
    Stop,
}

/// The audit writer shared by every session.
pub struct AuditLog {
    /// The queue to the writer thread.
    jobs: SyncSender<Job>,
    /// The writer thread, joined on drop.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Records dropped because the queue was full.
    dropped: AtomicU64,
}

/// Where records go.
enum Target {
    /// Standard output.
    Stdout,
    /// An append-only file, reopened by path on request.
    File {
        /// The path, for reopening and messages.
        path: PathBuf,
        /// The open file.
        file: File,
    },
}

impl Target {
    /// Opens the target of `options`; a file is created if missing.
    fn open(options: &AuditOptions) -> io::Result<Target> {
        if options.is_stdout() {
            return Ok(Target::Stdout);
        }
        let file = open_append(&options.path)?;
        Ok(Target::File {
            path: options.path.clone(),
            file,
        })
    }

    /// Writes one whole line.
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            // One write_all on an O_APPEND file per record: lines from
            // another writer (a second instance) never interleave mid-line.
            Target::File { file, .. } => file.write_all(line),
        }
    }

    /// Reopens a file target by path (after rotation).
    fn reopen(&mut self) {
        if let Target::File { path, file } = self {
            match open_append(path) {
                Ok(new) => {
                    *file = new;
                    info!("audit file {} reopened", path.display());
                }
                Err(e) => error!(
                    "AUDIT: cannot reopen {}: {e}; still writing to the old file",
                    path.display()
                ),
            }
        }
    }

    /// The target for messages.
    fn name(&self) -> String {
        match self {
            Target::Stdout => "standard output".into(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }
}

/// Opens `path` for appending, creating it.
fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AuditLog {
    /// Opens the audit target now (so a bad path stops start-up) and starts
    /// the writer thread.
    pub fn open(options: &AuditOptions) -> io::Result<AuditLog> {
        let target = Target::open(options).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open audit file {}: {e}", options.path.display()),
            )
        })?;
        let (jobs, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer(target, rx))?;
        Ok(AuditLog {
            jobs,
            thread: Mutex::new(Some(thread)),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues one record; never blocks. A record that cannot be queued is
    /// logged as lost.
    pub fn write<T: Serialize>(&self, record: &T) {
        let mut line = match serde_json::to_string(record) {
            Ok(l) => l,
            Err(e) => {
                error!("AUDIT: cannot serialize a record: {e}");
                return;
            }
        };
        line.push('\n');
        match self.jobs.try_send(Job::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    error!("AUDIT: writer is behind; {n} record(s) dropped so far");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                error!("AUDIT: writer thread is gone; record dropped");
            }
        }
    }

    /// Asks the writer to reopen the file (SIGUSR1, after log rotation).
    pub fn reopen(&self) {
        if self.jobs.try_send(Job::Reopen).is_err() {
            error!("AUDIT: cannot ask the writer to reopen the file");
        }
    }

    /// Waits (at most `limit`) until every record queued so far is written.
    pub fn flush(&self, limit: Duration) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.jobs.send(Job::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(limit).is_ok()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Stop);
        if let Ok(mut guard) = self.thread.lock() {
            if let Some(t) = guard.take() {
                let _ = t.join();
            }
        }
    }
}

/// The writer thread: writes lines as they come, reopens on request.
fn writer(mut target: Target, jobs: Receiver<Job>) {
    let mut failing = false;
    loop {
        let job = match jobs.recv_timeout(Duration::from_secs(3600)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match job {
            Job::Line(line) => match target.write(line.as_bytes()) {
                Ok(()) => {
                    if failing {
                        info!("audit writing to {} works again", target.name());
                        failing = false;
                    }
                }
                Err(e) => {
                    // Loud every time: a lost audit record is an incident.
                    error!("AUDIT: cannot write to {}: {e}; record lost", target.name());
                    failing = true;
                    target.reopen();
                }
            },
            Job::Reopen => target.reopen(),
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::Stop => return,
        }
    }
}

/// The client's address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientRecord {
    /// IP address.
    pub ip: String,
    /// TCP port.
    pub port: u16,
}

impl From<SocketAddr> for ClientRecord {
    fn from(a: SocketAddr) -> Self {
        ClientRecord {
            ip: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// TLS facts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsRecord {
    /// Protocol version.
    pub version: String,
    /// Cipher suite.
    pub cipher: String,
}

impl From<&TlsInfo> for TlsRecord {
    fn from(t: &TlsInfo) -> Self {
        TlsRecord {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
        }
    }
}

/// One rule that matched.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HitRecord {
    /// Rule (or filter) name.
    pub rule: String,
    /// Stage.
    pub stage: &'static str,
    /// What it did.
    pub action: String,
    /// Points it added.
    pub score: f64,
}

impl From<&Hit> for HitRecord {
    fn from(h: &Hit) -> Self {
        HitRecord {
            rule: h.rule.clone(),
            stage: h.stage.name(),
            action: h.action.clone(),
            score: h.score,
        }
    }
}

/// One recipient and the answer it got.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RcptRecord {
    /// The address as given.
    pub address: String,
    /// The reply the client got, e.g. `250 2.1.5 Ok`.
    pub reply: String,
    /// Who gave it: `upstream`, `gateway`, or the rule's name.
    pub by: String,
}

/// How long the parts of a transaction took, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Durations {
    /// From MAIL to the final reply.
    pub total: f64,
    /// Time spent in the filter chain.
    pub rules: f64,
    /// Delivery (upstream DATA to its final reply, or the spool write).
    pub delivery: Option<f64>,
}

/// The record of one transaction (`"type": "transaction"`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransactionRecord {
    /// Always `transaction`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the transaction ended, RFC 3339 UTC.
    pub time: String,
    /// Session id.
    pub session: String,
    /// Transaction id (as in Received headers and spool file names).
    pub transaction: String,
    /// The client.
    pub client: ClientRecord,
    /// HELO/EHLO name.
    pub helo: Option<String>,
    /// TLS facts, when under TLS.
    pub tls: Option<TlsRecord>,
    /// Authenticated user.
    pub auth_user: Option<String>,
    /// Envelope sender; empty for `<>`.
    pub mail_from: String,
    /// MAIL parameters, e.g. `SIZE=1234`.
    pub mail_params: Vec<String>,
    /// Every RCPT with its reply.
    pub rcpts: Vec<RcptRecord>,
    /// Message size in bytes, when DATA was received.
    pub size: Option<u64>,
    /// `Message-ID` (truncated).
    pub message_id: Option<String>,
    /// `Subject`, decoded (truncated).
    pub subject: Option<String>,
    /// Final score.
    pub score: f64,
    /// Every rule that matched, in order.
    pub rules: Vec<HitRecord>,
    /// `delivered`, `discarded`, `quarantined`, `rejected`, `tempfailed`,
    /// `disconnected` or `aborted`.
    pub verdict: &'static str,
    /// The stage at which the verdict was reached.
    pub stage: &'static str,
    /// The final reply the client got (to DATA, or to the refused command).
    pub reply: Option<String>,
    /// Who decided: `upstream`, `gateway`, or a rule's name.
    pub decided_by: Option<String>,
    /// The upstream's reply to the end of DATA, when the message went there.
    pub upstream_reply: Option<String>,
    /// What the checks found (`{"iprev": "pass"}`); absent when no
    /// check ran.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, Value>,
    /// Each check that ran: its outcome and duration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRun>,
    /// Durations.
    pub durations_ms: Durations,
    /// Milliseconds the error tarpit delayed this session's replies so
    /// far; absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tarpit_ms: Option<f64>,
}

/// The record of a session without any transaction (`"type": "session"`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionRecord {
    /// Always `session`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the session ended, RFC 3339 UTC.
    pub time: String,
    /// Session id.
    pub session: String,
    /// The client.
    pub client: ClientRecord,
    /// HELO/EHLO name.
    pub helo: Option<String>,
    /// TLS facts.
    pub tls: Option<TlsRecord>,
    /// Authenticated user.
    pub auth_user: Option<String>,
    /// Failed AUTH attempts.
    pub auth_failures: u32,
    /// Rules that matched (connect, helo and auth stages).
    pub rules: Vec<HitRecord>,
    /// What the checks found (`{"iprev": "pass"}`); absent when no
    /// check ran.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, Value>,
    /// Each check that ran: its outcome and duration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRun>,
    /// Why the session ended: `refused at connect`, `client closed`, ...
    pub end: String,
    /// The last reply that refused the client, if one did.
    pub reply: Option<String>,
    /// Who refused: a rule's name or `gateway`.
    pub decided_by: Option<String>,
    /// How long the session lasted, in milliseconds.
    pub duration_ms: f64,
    /// Milliseconds the error tarpit delayed this session's replies;
    /// absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tarpit_ms: Option<f64>,
}

/// The record of a quarantined message released to the upstream
/// (`"type": "released"`), written by `smtpgate quarantine release` and
/// the quarantine API once the upstream accepted it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReleasedRecord {
    /// Always `released`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the upstream accepted it, RFC 3339 UTC.
    pub time: String,
    /// The transaction id the message was quarantined under.
    pub transaction: String,
    /// The envelope sender it went with (`""` for `<>`).
    pub mail_from: String,
    /// The recipients it went to: the original ones, or those given instead.
    pub rcpts: Vec<String>,
    /// True when the recipients were given instead of the original ones.
    pub rcpts_replaced: bool,
    /// The rule (or milter, or check) that had held it.
    pub held_by: Option<String>,
    /// The upstream's reply to the end of the message.
    pub upstream_reply: String,
    /// Who released it: `cli` or `api`.
    pub by: &'static str,
}

/// The facts as a record's `facts` object.
pub fn facts_record(facts: &Facts) -> BTreeMap<String, Value> {
    facts
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Now, as written in records.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `s` cut to [`MAX_HEADER_CHARS`] characters.
pub fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_HEADER_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_lines_and_reopen_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&AuditOptions { path: path.clone() }).unwrap();
        log.write(&serde_json::json!({"n": 1}));
        assert!(log.flush(Duration::from_secs(5)));
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        log.write(&serde_json::json!({"n": 2}));
        log.reopen();
        log.write(&serde_json::json!({"n": 3}));
        assert!(log.flush(Duration::from_secs(5)));
        let old = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old, "{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(new, "{\"n\":3}\n");
    }

    #[test]
    fn a_bad_path_fails_at_open() {
        let e = AuditLog::open(&AuditOptions {
            path: PathBuf::from("/nonexistent-dir/x/audit.jsonl"),
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("cannot open audit file"), "{e}");
    }

    #[test]
    fn truncates_by_characters() {
        let long = "é".repeat(500);
        assert_eq!(truncate(&long).chars().count(), MAX_HEADER_CHARS);
        assert_eq!(truncate("short"), "short");
    }
}
