//! `smtpgate quarantine ...`: list, show, release, delete and purge the
//! messages in the quarantine directory; the release path is shared with
//! the metrics listener's quarantine API.
//!
//! A release re-sends the stored message (with the headers the gateway
//! added when it held it) through the configured upstream, with the same
//! pool, TLS and upstream AUTH as live mail, and without any rule: the
//! rules already spoke, and an admin overrules them. It is at-least-once:
//! the files are removed only after the upstream's final 2xx, so a crash
//! or a failure leaves the entry in place to try again.

use crate::audit::{now, AuditLog, ReleasedRecord};
use crate::body::Body;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::quarantine::filter::{parse_age, received};
use crate::quarantine::{Entry, ListFilter, Quarantine, Sidecar};
use crate::upstream::{Extensions, UpstreamPool};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// `smtpgate quarantine ...`.
#[derive(Subcommand, Debug)]
pub enum QuarantineCmd {
    /// List the held messages, oldest first.
    List(ListArgs),
    /// Print one entry's sidecar and the headers of its message.
    Show {
        /// The entry's id (its transaction id).
        id: String,
    },
    /// Send messages on to the configured upstream with their original
    /// envelope, without the rules that held them; each is removed only
    /// after the upstream accepted it. Exit status 1 when any failed.
    Release {
        /// The entries' ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Send to this recipient instead of the original ones; repeat for
        /// several.
        #[arg(long, value_name = "RCPT")]
        to: Vec<String>,
    },
    /// Remove entries (message and sidecar) without sending them.
    Delete {
        /// The entries' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove every entry received longer ago than the given age.
    Purge {
        /// An age such as 30d, 12h or "1w 2d".
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Duration,
    },
}

/// Arguments of `smtpgate quarantine list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only entries received within this age (2h, 30m, 7d).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    since: Option<Duration>,
    /// Only entries held by, or that fired, the rule of this exact name.
    #[arg(long, value_name = "NAME")]
    rule: Option<String>,
    /// Only entries whose envelope sender contains this text (a plain
    /// substring, not a glob; case is ignored).
    #[arg(long, value_name = "TEXT")]
    from: Option<String>,
    /// JSON (an array of entries) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs one `quarantine` subcommand: exit 0 when everything asked was
/// done, 1 when something failed (said on stderr), 2 on bad input.
pub fn run(config: &Config, cmd: QuarantineCmd) -> ExitCode {
    let q = Quarantine::new(config.quarantine_dir.clone());
    let ids: &[String] = match &cmd {
        QuarantineCmd::Show { id } => std::slice::from_ref(id),
        QuarantineCmd::Release { ids, .. } | QuarantineCmd::Delete { ids } => ids,
        _ => &[],
    };
    // Every id is checked before anything is done: a bad one is a usage error.
    for id in ids {
        if let Err(e) = crate::quarantine::valid_id(id) {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    }
    match cmd {
        QuarantineCmd::List(args) => {
            let filter = ListFilter {
                since: args.since,
                rule: args.rule,
                from: args.from,
            };
            match list(&q, &filter) {
                Ok(entries) if args.json => {
                    println!("{}", json(&entries));
                    ExitCode::SUCCESS
                }
                Ok(entries) => {
                    print!("{}", table(&entries));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("{}: {e}", q.dir().display())),
            }
        }
        QuarantineCmd::Show { id } => match show(&q, &id) {
            Ok(shown) => {
                println!("{}", json(&shown.sidecar));
                println!();
                print!("{}", shown.headers);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        QuarantineCmd::Release { ids, to } => {
            let to = (!to.is_empty()).then_some(to);
            let releaser = match Releaser::new(config) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let mut failed = false;
            for id in &ids {
                match async_std::task::block_on(releaser.release(id, to.as_deref(), "cli")) {
                    Ok(reply) => println!("{id}: released; upstream said {reply}"),
                    Err(e) => {
                        eprintln!("smtpgate: {id}: not released: {e}");
                        failed = true;
                    }
                }
            }
            releaser.finish();
            exit(failed)
        }
        QuarantineCmd::Delete { ids } => {
            let mut failed = false;
            for id in &ids {
                match delete(&q, id) {
                    Ok(()) => println!("{id}: deleted"),
                    Err(e) => {
                        eprintln!("smtpgate: {id}: {e}");
                        failed = true;
                    }
                }
            }
            exit(failed)
        }
        QuarantineCmd::Purge { older_than } => match purge(&q, older_than) {
            Ok(n) => {
                println!("{n} entr{} purged", if n == 1 { "y" } else { "ies" });
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("{}: {e}", q.dir().display())),
        },
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("smtpgate: {why}");
    ExitCode::from(1)
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Pretty JSON of `value`.
pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The entries that pass `filter`, oldest first.
pub fn list(q: &Quarantine, filter: &ListFilter) -> io::Result<Vec<Entry>> {
    let now = SystemTime::now();
    let mut entries = q.list()?;
    entries.retain(|e| filter.matches(e, now));
    Ok(entries)
}

/// The listing as a table: id, received, sender, recipients, who held it.
pub fn table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<24} {:<25} {:<30} {:<30} {:<16} {:>8}\n",
        "ID", "RECEIVED", "FROM", "TO", "HELD BY", "SIZE"
    );
    for e in entries {
        let (when, from, to, by) = match &e.sidecar {
            Some(s) => (
                s.received.clone(),
                format!("<{}>", s.envelope.mail_from),
                s.rcpt_addresses().join(","),
                s.held.by.clone().unwrap_or_else(|| "-".into()),
            ),
            None => (
                chrono::DateTime::<chrono::Utc>::from(e.modified).to_rfc3339(),
                "?".into(),
                "?".into(),
                format!("(no sidecar: {})", e.problem.as_deref().unwrap_or("?")),
            ),
        };
        out.push_str(&format!(
            "{:<24} {:<25} {:<30} {:<30} {:<16} {:>8}\n",
            e.id, when, from, to, by, e.file_size
        ));
    }
    out
}

/// One entry as `show` prints it.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The sidecar.
    pub sidecar: Sidecar,
    /// The message's header section, as stored.
    pub headers: String,
}

/// Longest header section `show` prints.
const MAX_HEADERS: usize = 256 * 1024;

/// The sidecar and the headers of the message of `id`.
pub fn show(q: &Quarantine, id: &str) -> Result<Shown, String> {
    let path = q.message_path(id).map_err(|e| e.to_string())?;
    let file = File::open(&path).map_err(|e| not_found(id, &path, e))?;
    let sidecar = q.load(id)?;
    let mut reader = io::BufReader::new(file).take(MAX_HEADERS as u64);
    let mut headers = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 || line == b"\r\n" || line == b"\n" {
            break;
        }
        headers.extend_from_slice(&line);
    }
    Ok(Shown {
        sidecar,
        headers: String::from_utf8_lossy(&headers).into_owned(),
    })
}

fn not_found(id: &str, path: &std::path::Path, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("no quarantined message {id:?} (no {})", path.display())
    } else {
        format!("{}: {e}", path.display())
    }
}

/// Removes the entry of `id` without sending it.
pub fn delete(q: &Quarantine, id: &str) -> Result<(), String> {
    let path = q.message_path(id).map_err(|e| e.to_string())?;
    q.remove(id).map_err(|e| not_found(id, &path, e))
}

/// Removes every entry received more than `older_than` ago, and sidecars
/// left without their message as long; returns how many entries went.
pub fn purge(q: &Quarantine, older_than: Duration) -> io::Result<usize> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut n = 0;
    for e in q.list()? {
        if received(&e) < cutoff {
            q.remove(&e.id)?;
            n += 1;
        }
    }
    for (id, modified) in q.orphans()? {
        if modified < cutoff {
            q.remove_orphan(&id)?;
        }
    }
    Ok(n)
}

/// Releases entries: the upstream pool and the audit trail, built once
/// for a batch of releases, or the running gateway's (for the API).
pub struct Releaser {
    quarantine: Quarantine,
    config: Config,
    via: Via,
}

/// The upstream pool and audit trail a [`Releaser`] uses.
enum Via {
    /// Its own, for the command line (boxed: the pool is large, and the
    /// other variant a pointer).
    Own {
        pool: Box<UpstreamPool>,
        audit: Option<AuditLog>,
    },
    /// The running gateway's: the same failover state and TLS as live
    /// mail, and the audit writer SIGUSR1 reopens.
    Gateway(Arc<Gateway>),
}

impl Releaser {
    /// Builds the upstream pool and opens the audit trail of `config`;
    /// an error when there is no upstream to release to.
    pub fn new(config: &Config) -> Result<Releaser, String> {
        let Some(up) = &config.upstream else {
            return Err(
                "no upstream is configured: a release needs one to send the message to".into(),
            );
        };
        let pool = UpstreamPool::new(up, Arc::new(Metrics::new()))?;
        let audit = match &config.audit {
            Some(options) => Some(AuditLog::open(options).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Releaser {
            quarantine: Quarantine::new(config.quarantine_dir.clone()),
            config: config.clone(),
            via: Via::Own {
                pool: Box::new(pool),
                audit,
            },
        })
    }

    /// Releases through `gateway`'s upstream pool and audit trail; an
    /// error when it has no upstream.
    pub fn for_gateway(gateway: Arc<Gateway>) -> Result<Releaser, String> {
        if gateway.upstreams().is_none() {
            return Err("no upstream is configured: a release needs one".into());
        }
        Ok(Releaser {
            quarantine: Quarantine::new(gateway.config.quarantine_dir.clone()),
            config: gateway.config.clone(),
            via: Via::Gateway(gateway),
        })
    }

    fn pool(&self) -> Option<&UpstreamPool> {
        match &self.via {
            Via::Own { pool, .. } => Some(pool),
            Via::Gateway(g) => g.upstreams(),
        }
    }

    fn audit(&self) -> Option<&AuditLog> {
        match &self.via {
            Via::Own { audit, .. } => audit.as_ref(),
            Via::Gateway(g) => g.audit(),
        }
    }

    /// Sends the message of `id` upstream (to `to` instead of its
    /// recipients when given), then removes it and writes the `released`
    /// audit record; returns the upstream's reply. `by` says who asked
    /// (`cli`, `api`). On any failure the entry stays.
    pub async fn release(
        &self,
        id: &str,
        to: Option<&[String]>,
        by: &'static str,
    ) -> Result<String, String> {
        let q = &self.quarantine;
        let path = q.message_path(id).map_err(|e| e.to_string())?;
        let file = File::open(&path).map_err(|e| not_found(id, &path, e))?;
        let sidecar = q.load(id)?;
        let mut body = read_body(file, self.config.limits.spill_threshold_bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let rcpts: Vec<(String, Vec<String>)> = match to {
            Some(to) => to.iter().map(|r| (r.clone(), Vec::new())).collect(),
            None => sidecar
                .envelope
                .rcpts
                .iter()
                .map(|r| (r.address.clone(), r.params.clone()))
                .collect(),
        };
        if rcpts.is_empty() {
            return Err("the entry has no recipient; give one with --to".into());
        }
        let reply = self.send(&sidecar, &rcpts, &mut body).await?;
        let record = ReleasedRecord {
            kind: "released",
            time: now(),
            transaction: id.to_string(),
            mail_from: sidecar.envelope.mail_from.clone(),
            rcpts: rcpts.iter().map(|(r, _)| r.clone()).collect(),
            rcpts_replaced: to.is_some(),
            held_by: sidecar.held.by.clone(),
            upstream_reply: reply.clone(),
            by,
        };
        if let Some(audit) = self.audit() {
            audit.write(&record);
        }
        log::info!("quarantine {id} released by {by}; upstream said {reply}");
        q.remove(id).map_err(|e| {
            format!("delivered (upstream said {reply}) but not removed, so a second release would send it again: {e}")
        })?;
        Ok(reply)
    }

    /// One transaction with the upstream: MAIL, every RCPT, the message.
    /// Every recipient must be accepted, or nothing is sent.
    async fn send(
        &self,
        sidecar: &Sidecar,
        rcpts: &[(String, Vec<String>)],
        body: &mut Body,
    ) -> Result<String, String> {
        let Some(pool) = self.pool() else {
            return Err("no upstream is configured".into());
        };
        let mut up = pool
            .connect(&self.config.hostname, &self.config.timeouts)
            .await
            .map_err(|e| format!("upstream unavailable: {e}"))?;
        let ext = up.extensions.clone();
        let outcome = async {
            let mail = mail_line(
                &sidecar.envelope.mail_from,
                &sidecar.envelope.mail_params,
                &ext,
            );
            let reply = up
                .command(&mail, "MAIL reply")
                .await
                .map_err(|e| format!("upstream failed at MAIL: {e}"))?;
            if !reply.is_positive() {
                return Err(format!("upstream refused MAIL: {reply}"));
            }
            for (rcpt, params) in rcpts {
                let mut line = format!("RCPT TO:<{rcpt}>");
                if ext.dsn {
                    for p in params {
                        line.push(' ');
                        line.push_str(p);
                    }
                }
                let reply = up
                    .command(&line, "RCPT reply")
                    .await
                    .map_err(|e| format!("upstream failed at RCPT: {e}"))?;
                if !reply.is_positive() {
                    return Err(format!("upstream refused recipient <{rcpt}>: {reply}"));
                }
            }
            let reply = up
                .send_message(b"", body)
                .await
                .map_err(|e| format!("upstream failed during the message: {e}"))?;
            if !reply.is_positive() {
                return Err(format!("upstream refused the message: {reply}"));
            }
            Ok(reply.to_string())
        }
        .await;
        up.quit().await;
        outcome
    }

    /// Writes what is queued for the audit trail (at most 5 s).
    pub fn finish(&self) {
        if let Some(audit) = self.audit() {
            if !audit.flush(Duration::from_secs(5)) {
                eprintln!("smtpgate: the audit trail could not be flushed");
            }
        }
    }
}

/// The MAIL command for a release: the original parameters the upstream
/// offers (SIZE, BODY, SMTPUTF8, the DSN ones); the others are dropped.
fn mail_line(from: &str, params: &[String], ext: &Extensions) -> String {
    let mut line = format!("MAIL FROM:<{from}>");
    for p in params {
        let keyword = p.split('=').next().unwrap_or_default().to_ascii_uppercase();
        let offered = match keyword.as_str() {
            "SIZE" => ext.size.is_some(),
            "BODY" => ext.eightbitmime,
            "SMTPUTF8" => ext.smtputf8,
            "RET" | "ENVID" => ext.dsn,
            _ => false,
        };
        if offered {
            line.push(' ');
            line.push_str(p);
        }
    }
    line
}

/// The stored message as a body to send (spilling past `threshold`).
fn read_body(mut file: File, threshold: usize) -> io::Result<Body> {
    let mut body = Body::new(threshold);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(body);
        }
        body.append(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_sends_only_the_parameters_the_upstream_offers() {
        let params = vec![
            "SIZE=10".to_string(),
            "BODY=8BITMIME".to_string(),
            "ENVID=x".to_string(),
            "AUTH=<>".to_string(),
        ];
        let none = Extensions::default();
        assert_eq!(mail_line("a@x", &params, &none), "MAIL FROM:<a@x>");
        let all = Extensions {
            size: Some(0),
            eightbitmime: true,
            dsn: true,
            ..Extensions::default()
        };
        assert_eq!(
            mail_line("", &params, &all),
            "MAIL FROM:<> SIZE=10 BODY=8BITMIME ENVID=x"
        );
    }
}
