//! The milter client: every transaction goes through the configured
//! milters in order, as Postfix's `smtpd_milters`. Each milter gets its
//! own connection per transaction, opened at MAIL (with the connect and
//! HELO steps replayed first), told of each RCPT, and at the end of DATA
//! given the message as the earlier milters left it. Their answers refuse
//! a stage, discard or quarantine the message, or change it.
//!
//! [`codec`] is the wire protocol, [`client`] one connection, [`edit`]
//! the message changes.

pub mod client;
pub mod codec;
pub mod edit;
pub mod selfcheck;

use crate::config::{MilterDefault, MilterOptions};
use crate::proto::{EnhancedCode, Reply};
use client::{Connection, MilterError};
use codec::{action, protocol as flag, Command, Family, Response, BODY_CHUNK};
use edit::{Edited, Field};
use log::warn;
use std::net::SocketAddr;

/// What the gateway tells milters about the client and transaction
/// (the connect step and the macros).
#[derive(Clone, Debug, Default)]
pub struct Info {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The client's verified host name, when known.
    pub client_name: Option<String>,
    /// The HELO/EHLO argument.
    pub helo: Option<String>,
    /// The AUTH user (`{auth_authen}`).
    pub auth_user: Option<String>,
    /// The gateway's host name (`j`).
    pub hostname: String,
    /// The transaction id (`i`).
    pub queue_id: String,
    /// The TLS version, when under TLS (`{tls_version}`).
    pub tls_version: Option<String>,
}

/// What the milters decided for a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Continue,
    /// Refuse with this reply (4xx or 5xx).
    Refuse(Reply),
    /// Answer 250, deliver nothing.
    Discard,
    /// Answer 250, keep the message in quarantine (the reason).
    Quarantine(String),
}

/// Envelope changes asked for at end of message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeChanges {
    /// SMFIR_CHGFROM: the new sender (`<>` allowed) and its ESMTP arguments.
    pub from: Option<(String, Option<String>)>,
    /// SMFIR_ADDRCPT(_PAR): recipients to add.
    pub add_rcpts: Vec<String>,
    /// SMFIR_DELRCPT: recipients to delete.
    pub del_rcpts: Vec<String>,
}

impl EnvelopeChanges {
    /// True when a milter changed the envelope.
    pub fn any(&self) -> bool {
        self.from.is_some() || !self.add_rcpts.is_empty() || !self.del_rcpts.is_empty()
    }
}

/// The end of the message: the decision, the message as the milters left
/// it (when they changed it) and their envelope changes.
pub struct MessageOutcome {
    /// Refuse, discard, quarantine or go on.
    pub decision: Decision,
    /// The changed message, `None` when no milter changed it.
    pub message: Option<Vec<u8>>,
    /// Sender and recipient changes.
    pub envelope: EnvelopeChanges,
}

/// One milter in one transaction.
struct Slot {
    cfg: MilterOptions,
    /// Open while the milter still takes part.
    conn: Option<Connection>,
    /// Its verdict so far, the `milter.NAME` fact: `continue`, `accept`,
    /// `reject`, `tempfail`, `discard`, `quarantine` or `temperror`.
    verdict: &'static str,
}

/// The milters of one transaction.
pub struct Transaction {
    slots: Vec<Slot>,
    /// The milter whose refusal, discard or quarantine stands.
    by: Option<String>,
}

/// Postfix's reply to a milter's plain reject.
fn reject_reply() -> Reply {
    Reply::new(550, EnhancedCode::new(5, 7, 1), "Command rejected")
}

/// Postfix's reply to a milter's plain tempfail.
fn tempfail_reply() -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 7, 1),
        "Service unavailable - try again later",
    )
}

/// A milter's SMFIR_REPLYCODE as an SMTP reply; `None` when malformed
/// (not 4xx/5xx, mixed codes, a bad continuation).
pub fn custom_reply(text: &str) -> Option<Reply> {
    let (code, enhanced, lines) = codec::parse_replycode(text)?;
    let enhanced = match enhanced {
        Some(e) => Some(e.parse::<EnhancedCode>().ok()?),
        None => None,
    };
    Some(Reply::multiline(code, enhanced, lines))
}

/// A failure's decision under the milter's `default_action`.
fn default_decision(cfg: &MilterOptions) -> Decision {
    match cfg.default_action {
        MilterDefault::Accept => Decision::Continue,
        MilterDefault::Tempfail => Decision::Refuse(tempfail_reply()),
        MilterDefault::Reject => Decision::Refuse(reject_reply()),
    }
}

/// `<address>` as milters expect envelope addresses.
fn bracketed(address: &str) -> String {
    if address.starts_with('<') {
        address.to_string()
    } else {
        format!("<{address}>")
    }
}

impl Slot {
    /// Turns a stage answer into a decision; a misbehaving milter is
    /// dropped under its default action.
    fn answer(&mut self, response: Option<Response>, stage: &str) -> Decision {
        let Some(response) = response else {
            return Decision::Continue;
        };
        match response {
            Response::Continue => Decision::Continue,
            Response::Accept => {
                self.verdict = "accept";
                self.close();
                Decision::Continue
            }
            Response::Reject => {
                self.verdict = "reject";
                Decision::Refuse(reject_reply())
            }
            Response::Tempfail => {
                self.verdict = "tempfail";
                Decision::Refuse(tempfail_reply())
            }
            Response::Discard => {
                self.verdict = "discard";
                self.close();
                Decision::Discard
            }
            Response::ReplyCode(text) => match custom_reply(&text) {
                Some(reply) => {
                    self.verdict = if reply.is_transient() {
                        "tempfail"
                    } else {
                        "reject"
                    };
                    Decision::Refuse(reply)
                }
                None => self.failed(&MilterError::Protocol(format!("malformed reply {text:?}"))),
            },
            Response::Quarantine(reason) => {
                self.verdict = "quarantine";
                Decision::Quarantine(reason)
            }
            other => self.failed(&MilterError::Protocol(format!("{other:?} after {stage}"))),
        }
    }

    /// The milter cannot be used any more: its default action decides.
    fn failed(&mut self, e: &MilterError) -> Decision {
        warn!(
            "milter {}: {e}; default action {:?}",
            self.cfg.name, self.cfg.default_action
        );
        self.verdict = "temperror";
        self.conn = None;
        default_decision(&self.cfg)
    }

    /// Done with this milter for the transaction (it needs no QUIT to
    /// wait for: dropping the connection is what it sees after QUIT).
    fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            async_std::task::spawn(conn.quit());
        }
    }

    /// Sends the macros of `stage`, then `command`, reading its answer.
    async fn step(
        &mut self,
        macros: Vec<(String, String)>,
        command: Command,
        skip: u32,
        no_reply: u32,
    ) -> Decision {
        let Some(conn) = self.conn.as_mut() else {
            return Decision::Continue;
        };
        if skip != 0 && conn.has(skip) {
            return Decision::Continue;
        }
        let stage = command.code();
        let result = async {
            if !macros.is_empty() {
                conn.send(&Command::Macro {
                    stage,
                    pairs: macros,
                })
                .await?;
            }
            conn.ask(&command, no_reply).await
        }
        .await;
        match result {
            Ok(response) => self.answer(response, "a command"),
            Err(e) => self.failed(&e),
        }
    }
}

fn pairs(list: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    list.iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
        .collect()
}

impl Transaction {
    /// Opens every milter and runs the connect, HELO and MAIL steps.
    /// Milters are asked in order; the first refusal ends the stage.
    pub async fn begin(
        milters: &[MilterOptions],
        info: &Info,
        sender: &str,
        params: &[String],
    ) -> (Transaction, Decision) {
        let mut tx = Transaction {
            slots: milters
                .iter()
                .map(|cfg| Slot {
                    cfg: cfg.clone(),
                    conn: None,
                    verdict: "continue",
                })
                .collect(),
            by: None,
        };
        let mut decision = Decision::Continue;
        for slot in &mut tx.slots {
            let d = slot_begin(slot, info, sender, params).await;
            note(&mut tx.by, slot, &d);
            if let Some(d) = merge(&mut decision, d) {
                return (tx, d);
            }
        }
        (tx, decision)
    }

    /// The RCPT step for `rcpt`.
    pub async fn rcpt(&mut self, info: &Info, rcpt: &str, params: &[String]) -> Decision {
        let mut decision = Decision::Continue;
        let addr = bracketed(rcpt);
        for slot in &mut self.slots {
            let macros = pairs(&[("{rcpt_addr}", Some(addr.trim_matches(['<', '>'])))]);
            let mut args = vec![addr.clone()];
            args.extend(params.iter().cloned());
            let d = slot
                .step(macros, Command::Rcpt(args), flag::NORCPT, flag::NR_RCPT)
                .await;
            // A refused recipient is that recipient's alone; the milter
            // goes on with the transaction.
            if matches!(d, Decision::Refuse(_)) && slot.conn.is_some() {
                slot.verdict = "continue";
            }
            note(&mut self.by, slot, &d);
            if let Some(d) = merge(&mut decision, d) {
                let _ = info;
                return d;
            }
        }
        decision
    }

    /// The DATA, header, body and end-of-message steps, each milter in
    /// turn given the message as the ones before it left it.
    pub async fn message(&mut self, info: &Info, message: &[u8]) -> MessageOutcome {
        let mut edited = Edited::parse(message);
        let mut changed = false;
        let mut envelope = EnvelopeChanges::default();
        let mut decision = Decision::Continue;
        for slot in &mut self.slots {
            let macros = pairs(&[("i", Some(&info.queue_id))]);
            let d = slot
                .step(macros, Command::Data, flag::NODATA, flag::NR_DATA)
                .await;
            let d = match d {
                Decision::Continue if slot.conn.is_some() => {
                    match send_content(slot, &edited).await {
                        Ok(Some(d)) => d,
                        Ok(None) => eom(slot, &mut edited, &mut changed, &mut envelope).await,
                        Err(e) => slot.failed(&e),
                    }
                }
                d => d,
            };
            note(&mut self.by, slot, &d);
            if let Some(d) = merge(&mut decision, d) {
                return MessageOutcome {
                    decision: d,
                    message: None,
                    envelope: EnvelopeChanges::default(),
                };
            }
        }
        MessageOutcome {
            decision,
            message: changed.then(|| edited.to_bytes()),
            envelope,
        }
    }

    /// The milter whose refusal, discard or quarantine decided the
    /// last stage.
    pub fn decided_by(&self) -> Option<&str> {
        self.by.as_deref()
    }

    /// Each milter's verdict, for the `milter.NAME` facts.
    pub fn verdicts(&self) -> Vec<(String, &'static str)> {
        self.slots
            .iter()
            .map(|s| (s.cfg.name.clone(), s.verdict))
            .collect()
    }

    /// Ends the transaction: milters still open are told to abort (if it
    /// did not reach its end) and to quit.
    pub fn finish(mut self, aborted: bool) {
        for slot in &mut self.slots {
            if let Some(mut conn) = slot.conn.take() {
                async_std::task::spawn(async move {
                    if aborted {
                        let _ = conn.send(&Command::Abort).await;
                    }
                    conn.quit().await;
                });
            }
        }
    }
}

/// Remembers which milter gave a decision other than going on.
fn note(by: &mut Option<String>, slot: &Slot, d: &Decision) {
    if *d != Decision::Continue {
        *by = Some(slot.cfg.name.clone());
    }
}

/// Folds one milter's decision into the stage's: a refusal ends the stage
/// (returned), a quarantine outranks a discard, which outranks going on.
fn merge(acc: &mut Decision, d: Decision) -> Option<Decision> {
    match d {
        Decision::Refuse(_) => Some(d),
        Decision::Quarantine(_) => {
            *acc = d;
            None
        }
        Decision::Discard if *acc == Decision::Continue => {
            *acc = d;
            None
        }
        _ => None,
    }
}

/// Connects one milter and runs its connect, HELO and MAIL steps.
async fn slot_begin(slot: &mut Slot, info: &Info, sender: &str, params: &[String]) -> Decision {
    match Connection::open(&slot.cfg).await {
        Ok(conn) => slot.conn = Some(conn),
        Err(e) => return slot.failed(&e),
    }
    let (family, port, address) = match info.client {
        Some(SocketAddr::V4(a)) => (Family::Inet, a.port(), a.ip().to_string()),
        Some(SocketAddr::V6(a)) => (Family::Inet6, a.port(), a.ip().to_string()),
        None => (Family::Unknown, 0, String::new()),
    };
    let host = info
        .client_name
        .clone()
        .unwrap_or_else(|| format!("[{address}]"));
    let port_text = port.to_string();
    let underscore = format!("{host} [{address}]");
    let macros = pairs(&[
        ("j", Some(&info.hostname)),
        ("{daemon_name}", Some("smtpgate")),
        ("v", Some("smtpgate")),
        ("_", Some(&underscore)),
        ("{client_addr}", Some(&address)),
        ("{client_port}", Some(&port_text)),
        ("{client_name}", Some(&host)),
    ]);
    let connect = Command::Connect {
        host,
        family,
        port,
        address,
    };
    let d = slot
        .step(macros, connect, flag::NOCONNECT, flag::NR_CONN)
        .await;
    if d != Decision::Continue || slot.conn.is_none() {
        return d;
    }
    if let Some(helo) = &info.helo {
        let macros = pairs(&[("{tls_version}", info.tls_version.as_deref())]);
        let d = slot
            .step(
                macros,
                Command::Helo(helo.clone()),
                flag::NOHELO,
                flag::NR_HELO,
            )
            .await;
        if d != Decision::Continue || slot.conn.is_none() {
            return d;
        }
    }
    let from = bracketed(sender);
    let macros = pairs(&[
        ("i", Some(&info.queue_id)),
        ("{mail_addr}", Some(from.trim_matches(['<', '>']))),
        ("{auth_authen}", info.auth_user.as_deref()),
        ("{auth_type}", info.auth_user.as_ref().map(|_| "PLAIN")),
    ]);
    let mut args = vec![from];
    args.extend(params.iter().cloned());
    slot.step(macros, Command::Mail(args), flag::NOMAIL, flag::NR_MAIL)
        .await
}

/// Sends the header fields, end of header and body; `Some` when the
/// milter decided before the end of the message.
async fn send_content(slot: &mut Slot, edited: &Edited) -> Result<Option<Decision>, MilterError> {
    let Some(conn) = slot.conn.as_mut() else {
        return Ok(Some(Decision::Continue));
    };
    let lead = conn.has(flag::HDR_LEADSPC);
    let mut answers = Vec::new();
    if !conn.has(flag::NOHDRS) {
        for f in &edited.fields {
            let cmd = Command::Header(f.name.clone(), f.milter_value(lead));
            match conn.ask(&cmd, flag::NR_HDR).await? {
                None | Some(Response::Continue) => {}
                Some(r) => {
                    answers.push(r);
                    break;
                }
            }
        }
    }
    let decided = |slot: &mut Slot, r: Response| -> Option<Decision> {
        match r {
            Response::Continue => None,
            Response::Skip => None,
            r => Some(slot.answer(Some(r), "content")),
        }
    };
    if let Some(r) = answers.pop() {
        if let Some(d) = decided(slot, r) {
            return Ok(Some(d));
        }
    }
    let Some(conn) = slot.conn.as_mut() else {
        return Ok(Some(Decision::Continue));
    };
    if !conn.has(flag::NOEOH) {
        if let Some(r) = conn.ask(&Command::Eoh, flag::NR_EOH).await? {
            if let Some(d) = decided(slot, r) {
                return Ok(Some(d));
            }
        }
    }
    let Some(conn) = slot.conn.as_mut() else {
        return Ok(Some(Decision::Continue));
    };
    if !conn.has(flag::NOBODY) {
        for chunk in edited.body.chunks(BODY_CHUNK) {
            let Some(conn) = slot.conn.as_mut() else {
                return Ok(Some(Decision::Continue));
            };
            match conn
                .ask(&Command::Body(chunk.to_vec()), flag::NR_BODY)
                .await?
            {
                Some(Response::Skip) if conn.has(flag::SKIP) => break,
                Some(r) => {
                    if let Some(d) = decided(slot, r) {
                        return Ok(Some(d));
                    }
                }
                None => {}
            }
        }
    }
    Ok(None)
}

/// End of message for one milter: applies its changes (those it
/// negotiated) to the message and envelope.
async fn eom(
    slot: &mut Slot,
    edited: &mut Edited,
    changed: &mut bool,
    envelope: &mut EnvelopeChanges,
) -> Decision {
    let Some(conn) = slot.conn.as_mut() else {
        return Decision::Continue;
    };
    let lead = conn.has(flag::HDR_LEADSPC);
    let allowed = conn.actions;
    let (changes, last) = match conn.eom().await {
        Ok(r) => r,
        Err(e) => return slot.failed(&e),
    };
    let decision = slot.answer(Some(last), "end of message");
    if matches!(decision, Decision::Refuse(_) | Decision::Discard) {
        return decision;
    }
    let mut quarantine = None;
    let mut body: Option<Vec<u8>> = None;
    let name = slot.cfg.name.clone();
    let permitted = |bit: u32, what: &str| {
        if allowed & bit == 0 {
            warn!("milter {name}: {what} without negotiating it, ignored");
            false
        } else {
            true
        }
    };
    for change in changes {
        match change {
            Response::AddHeader(n, v) if permitted(action::ADDHDRS, "add header") => {
                edited.add(Field::from_milter(&n, &v, lead));
                *changed = true;
            }
            Response::InsertHeader(i, n, v) if permitted(action::ADDHDRS, "insert header") => {
                edited.insert(i, Field::from_milter(&n, &v, lead));
                *changed = true;
            }
            Response::ChangeHeader(i, n, v) if permitted(action::CHGHDRS, "change header") => {
                edited.change(i, &n, &v, lead);
                *changed = true;
            }
            Response::ReplaceBody(chunk) if permitted(action::CHGBODY, "replace body") => {
                body.get_or_insert_with(Vec::new).extend_from_slice(&chunk);
            }
            Response::AddRcpt(r, args)
                if permitted(action::ADDRCPT | action::ADDRCPT_PAR, "add recipient") =>
            {
                let _ = args;
                envelope.add_rcpts.push(r);
            }
            Response::DelRcpt(r) if permitted(action::DELRCPT, "delete recipient") => {
                envelope.del_rcpts.push(r);
            }
            Response::ChangeFrom(f, args) if permitted(action::CHGFROM, "change sender") => {
                envelope.from = Some((f, args));
            }
            Response::Quarantine(reason) if permitted(action::QUARANTINE, "quarantine") => {
                slot.verdict = "quarantine";
                quarantine = Some(reason);
            }
            _ => {}
        }
    }
    if let Some(body) = body {
        edited.replace_body(&body);
        *changed = true;
    }
    match quarantine {
        Some(reason) => Decision::Quarantine(reason),
        None => decision,
    }
}
