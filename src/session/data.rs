//! DATA (RFC 5321 §4.1.1.4): receive the whole message, check it, then
//! deliver it (upstream in lockstep, or the local spool) and give the
//! client the deliverer's verdict. A 2xx goes to the client only after the
//! upstream's 2xx, or after the spool file is synced.

use super::audit::{data_verdict, TxEnd, BY_GATEWAY, BY_UPSTREAM};
use super::protect::DataDeadline;
use super::sender_auth::Enforced;
use super::transaction::{Disposition, Transaction};
use super::{link, replies, Flow, Session};
use crate::audit::truncate;
use crate::body::Body;
use crate::filter::{Message, Outcome, Stage, Verdict};
use crate::proto::{DataError, DataReceiver, Reply};
use crate::spool;
use crate::stream::Stream;
use async_std::io::timeout;
use log::{error, info, warn};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// How receiving a message body ended.
enum Received {
    /// The end-of-data line arrived; the body and any problem found.
    Complete(Body, Option<Problem>),
    /// The client vanished or timed out; the session is over.
    Lost(&'static str),
}

/// Why a received message cannot be delivered.
pub(super) enum Problem {
    /// A line-ending or line-length problem in the bytes.
    Data(DataError),
    /// Over the size limit.
    TooBig,
    /// The body could not be buffered (temporary file failure).
    Local(io::Error),
}

impl<S: Stream> Session<S> {
    /// Answers DATA, receives the message and delivers it.
    pub(super) async fn data(&mut self) -> Flow {
        let Some(tx) = self.tx.as_ref() else {
            return self.no_transaction();
        };
        if self.chunks.is_some() {
            // RFC 3030 §2: a message begun with BDAT cannot go on as DATA.
            return self.client_error(replies::bad_sequence("Error: BDAT message in progress"));
        }
        if tx.upstream_failed {
            self.abandon_transaction();
            return self.reply(link::transaction_lost());
        }
        if self.ctx.rcpts.is_empty() {
            return self.reply(replies::no_valid_recipients());
        }
        self.reply(replies::start_data());
        if self.flush().await.is_err() {
            return Flow::Stop;
        }
        let (body, problem) = match self.receive_body().await {
            Received::Complete(body, problem) => (body, problem),
            Received::Lost(why) => {
                warn!("session {} lost during DATA: {why}", self.id);
                self.abandon_transaction();
                return Flow::Stop;
            }
        };
        self.conn.shrink();
        self.finish_message(body, problem).await
    }

    /// Checks and delivers a message received whole (by DATA or by BDAT
    /// up to LAST), ends the transaction and queues the client's reply.
    pub(super) async fn finish_message(
        &mut self,
        mut body: Body,
        problem: Option<Problem>,
    ) -> Flow {
        let Some(mut tx) = self.tx.take() else {
            return self.reply(replies::local_error());
        };
        let mut disposition = tx.disposition;
        let mut flow = Flow::Continue;
        // Who gave the final reply: a rule, or (default) the gateway.
        let mut by = Some(BY_GATEWAY.to_string());
        let mut delivery = None;
        let reply = match problem {
            Some(Problem::Data(e)) => replies::data_error(e),
            Some(Problem::TooBig) => replies::too_big(),
            Some(Problem::Local(e)) => {
                error!("session {} cannot buffer message: {e}", self.id);
                replies::local_error()
            }
            None => {
                let milters = if self.milters.is_some() {
                    Box::pin(self.milter_message(&mut tx, &mut body)).await
                } else {
                    None
                };
                // After the milters: what the checks see is what they made of it.
                let whole = self.message_for_checks(&mut body);
                let checked = match milters {
                    Some(decided) => Some(decided),
                    None => self.run_checks(Stage::Data, whole.as_deref()).await,
                };
                let enforced = self.sender_auth(&mut tx, &mut body, whole.as_deref());
                let mut message = Message::new(&mut body);
                let verdict = match (checked, enforced) {
                    (Some(refused), _) => refused,
                    (None, Enforced::Refuse(r)) => Verdict::Reject(r),
                    (None, enforced) => {
                        let verdict = match self.run_filters(Stage::Data, None, Some(&mut message))
                        {
                            v if matches!(enforced, Enforced::Quarantine)
                                && v.clone().outcome() == Outcome::Proceed =>
                            {
                                self.ctx.decided_by = Some("dmarc".to_string());
                                Verdict::Quarantine
                            }
                            v => v,
                        };
                        let (verdict, passes) = self.greylisting(Stage::Data, verdict, None).await;
                        tx.greylist_passes += passes;
                        verdict
                    }
                };
                if self.shared.audit().is_some() {
                    if let Ok(headers) = message.headers() {
                        tx.message_id = headers.first("Message-ID").map(|f| truncate(&f.raw));
                        tx.subject = headers.first("Subject").map(|f| truncate(&f.decoded));
                    }
                }
                let outcome = verdict.outcome();
                if outcome != Outcome::Proceed {
                    by = self.ctx.decided_by.clone();
                }
                match outcome {
                    Outcome::Refuse(r) => r,
                    Outcome::Close(r) => {
                        flow = Flow::Stop;
                        r
                    }
                    Outcome::Discard | Outcome::Quarantine | Outcome::Proceed => {
                        if outcome == Outcome::Discard {
                            disposition = Disposition::Discard;
                        } else if outcome == Outcome::Quarantine {
                            disposition = Disposition::Quarantine;
                            tx.held_at = Some(Stage::Data);
                        } else if disposition != Disposition::Relay {
                            by.clone_from(&tx.decided_by);
                        }
                        self.remove_scanner_fields(&mut body);
                        self.rewrite_subject(&mut body);
                        let started = std::time::Instant::now();
                        let reply = self
                            .dispose(&mut tx, disposition, by.clone(), &mut body)
                            .await;
                        delivery = Some(started.elapsed());
                        if tx.upstream_reply.is_some() {
                            by = Some(BY_UPSTREAM.to_string());
                        }
                        reply
                    }
                }
            }
        };
        let relayed = disposition == Disposition::Relay && reply.is_positive();
        if relayed {
            self.greylist_delivered(tx.greylist_passes).await;
        } else {
            // The upstream may still hold MAIL/RCPT of a transaction it
            // will never get DATA for.
            self.upstream.abandoned();
        }
        let hits: Vec<String> = self
            .ctx
            .hits
            .iter()
            .map(|h| format!("{}:{}", h.rule, h.action))
            .collect();
        info!(
            "tx {} peer={} from=<{}> rcpts=[{}] size={} disposition={} score={} hits=[{}] reply=\"{}\" duration={:.3}s",
            tx.id,
            self.peer,
            super::transaction::sender(&self.ctx),
            tx.rcpt_summary(),
            body.len(),
            disposition.log_name(self.shared.config.upstream.is_none()),
            self.ctx.score,
            hits.join(","),
            reply,
            tx.started.elapsed().as_secs_f64()
        );
        let verdict = if flow == Flow::Stop {
            "disconnected"
        } else {
            data_verdict(&reply, disposition)
        };
        let end = TxEnd {
            verdict,
            stage: Stage::Data,
            reply: Some(reply.clone()),
            decided_by: by,
            size: Some(body.len()),
            delivery,
        };
        self.audit_transaction(&tx, end);
        self.ctx.reset_transaction();
        self.reply(reply);
        flow
    }

    /// Sends an accepted message where its disposition says.
    /// `by` is who decided, for a quarantine's sidecar.
    async fn dispose(
        &mut self,
        tx: &mut Transaction,
        disposition: Disposition,
        by: Option<String>,
        body: &mut Body,
    ) -> Reply {
        match disposition {
            Disposition::Relay => self.deliver(tx, body).await,
            Disposition::Discard => replies::queued(&tx.id),
            Disposition::Quarantine => {
                let prepend = self.prepend(tx);
                let sidecar = self.quarantine_sidecar(tx, by, prepend.len() as u64 + body.len());
                let dir = self.shared.config.quarantine_dir.clone();
                match super::quarantine::store_blocking(dir, sidecar, prepend, body).await {
                    Ok(_) => replies::queued(&tx.id),
                    Err(e) => {
                        error!("tx {} cannot be quarantined: {e}", tx.id);
                        replies::local_error()
                    }
                }
            }
        }
    }

    /// The headers the gateway adds in front of the message: Received (if
    /// enabled), then whatever filters asked for.
    fn prepend(&self, tx: &Transaction) -> Vec<u8> {
        let mut out = if self.shared.config.message.received_header {
            self.received_header(tx).into_bytes()
        } else {
            Vec::new()
        };
        if let Some(h) = &tx.auth_results {
            out.extend_from_slice(h.as_bytes());
        }
        for (name, value) in &self.ctx.add_headers {
            let clean: String = value
                .chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                .collect();
            out.extend_from_slice(format!("{name}: {clean}\r\n").as_bytes());
        }
        out
    }

    /// Reads the message to its end-of-data line, keeping at most the
    /// size limit and spilling large bodies to disk.
    async fn receive_body(&mut self) -> Received {
        let limits = &self.shared.config.limits;
        let max = limits.max_message_bytes;
        let mut receiver = DataReceiver::new(
            self.shared.config.message.bare_line_endings.into(),
            limits.max_text_line,
        );
        let mut body = Body::received(limits.spill_threshold_bytes);
        // Where the rest goes once the message cannot be kept.
        let mut discard = Vec::new();
        let mut problem = None;
        let block = self.shared.config.timeouts.data_block();
        let per_line = self.shared.config.protection.per_line_deadline;
        let mut deadline = DataDeadline::new(block, per_line);
        loop {
            let input = self.conn.input();
            let fed = if problem.is_none() {
                // Decoded straight into the body: one copy fewer per byte.
                let (fed, stored) = body.append_with(|out| receiver.feed(input, out));
                if let Err(e) = stored {
                    problem = Some(Problem::Local(e));
                } else if body.len() > max {
                    problem = Some(Problem::TooBig);
                }
                fed
            } else {
                discard.clear();
                receiver.feed(input, &mut discard)
            };
            self.conn.consume(fed.consumed);
            if fed.done {
                break;
            }
            match timeout(deadline.wait(), self.conn.fill(true)).await {
                Ok(0) => return Received::Lost("client closed"),
                Ok(n) => {
                    let input = self.conn.input();
                    deadline.read(&input[input.len() - n..]);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    let host = self.shared.config.hostname.clone();
                    self.conn.push(&replies::timeout(&host));
                    return Received::Lost("timeout");
                }
                Err(_) => return Received::Lost("read failed"),
            }
        }
        // A bad line ending is reported before the size: it is the one the
        // client must fix.
        let problem = match receiver.error() {
            Some(e) => Some(Problem::Data(e)),
            None => problem,
        };
        Received::Complete(body, problem)
    }

    /// Hands the message to the upstream or the spool; returns the client's reply.
    async fn deliver(&mut self, tx: &mut Transaction, body: &mut Body) -> Reply {
        let prepend = self.prepend(tx);
        let prepend = self.dkim_sign(&tx.id, prepend, body).await;
        if self.shared.config.upstream.is_none() {
            let dir = self.shared.config.spool_dir.clone();
            return match store_blocking(dir, tx.id.clone(), prepend, body).await {
                Ok(path) => {
                    log::debug!("tx {} stored as {}", tx.id, path.display());
                    replies::queued(&tx.id)
                }
                Err(e) => {
                    error!("tx {} cannot be stored in the spool: {e}", tx.id);
                    replies::local_error()
                }
            };
        }
        let Some(up) = self.upstream.get() else {
            return link::transaction_lost();
        };
        match up.send_message(&prepend, body).await {
            Ok(reply) => {
                let reply = self.upstream_reply(reply);
                tx.upstream_reply = Some(reply.clone());
                reply
            }
            Err(e) => {
                self.upstream_lost(&e);
                link::failure_reply(&e)
            }
        }
    }

    /// The `Received:` trace header (RFC 5321 §4.4) naming smtpgate.
    fn received_header(&self, tx: &Transaction) -> String {
        let helo = self.greeting.helo.as_deref().unwrap_or("unknown");
        let literal = match self.peer.ip() {
            IpAddr::V4(ip) => format!("[{ip}]"),
            IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        };
        let protocol = self.received_protocol();
        let for_clause = match self.ctx.rcpts.as_slice() {
            [only] => format!("\r\n\tfor <{only}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ({literal})\r\n\tby {host} (smtpgate) with {protocol} id {id}{for_clause};\r\n\t{date}\r\n",
            host = self.shared.config.hostname,
            id = tx.id,
            date = chrono::Local::now().to_rfc2822(),
        )
    }
}

/// Stores a message file off the async threads (the fsyncs block).
async fn store_blocking(
    dir: PathBuf,
    id: String,
    prepend: Vec<u8>,
    body: &mut Body,
) -> io::Result<PathBuf> {
    let mut owned = std::mem::replace(body, Body::new(0));
    let (result, returned) = async_std::task::spawn_blocking(move || {
        let result = spool::store(&dir, &id, &prepend, &mut owned);
        (result, owned)
    })
    .await;
    *body = returned;
    result
}
