//! EHLO and HELO (RFC 5321 §4.1.1.1): greet, reset, advertise extensions.

use super::{Flow, Session, SessionVerdict};
use crate::filter::Stage;
use crate::proto::Reply;
use crate::stream::Stream;
use crate::upstream::Extensions;

impl<S: Stream> Session<S> {
    /// Answers EHLO (`extended`) or HELO. Either one resets a transaction in
    /// progress, like RSET.
    pub(super) async fn ehlo(&mut self, name: String, extended: bool) -> Flow {
        // A new greeting starts from what the connect stage left, so its
        // helo-stage rules count once however often the client greets.
        // After AUTH the session keeps its login (RFC 4954 does not undo it)
        // and the helo stage, already run, is not run again.
        self.excused_503s = 0;
        let authenticated = self.greeting.auth.is_some();
        if authenticated {
            self.abandon_transaction();
        } else {
            self.restart_greeting();
        }
        let host = self.shared.config.hostname.clone();
        let reply = if extended {
            // Only what the relay path can honour: no DSN or SMTPUTF8,
            // which the upstream might not offer. CHUNKING is the gateway's
            // own: a BDAT message is relayed as DATA.
            let mut lines = vec![
                format!("{host} greets {name}"),
                "PIPELINING".to_string(),
                format!("SIZE {}", self.shared.config.limits.max_message_bytes),
                "8BITMIME".to_string(),
                "ENHANCEDSTATUSCODES".to_string(),
                "CHUNKING".to_string(),
            ];
            // DSN only when the upstream offered it at its last connection
            // (the probe's at start or reload, then each session's): the
            // parameters are passed through, not acted on here.
            if self.upstream_offers_dsn() {
                lines.push("DSN".to_string());
            }
            if self.upstream_offers(|ext| ext.smtputf8) {
                lines.push("SMTPUTF8".to_string());
            }
            // STARTTLS only where configured and not yet under TLS; AUTH
            // only where a password would not cross the wire in clear.
            if self.starttls_offered() {
                lines.push("STARTTLS".to_string());
            }
            if let Some(auth) = self.auth_offered().then(|| self.auth_keyword()).flatten() {
                lines.push(auth);
            }
            Reply::multiline(250, None, lines)
        } else {
            Reply::plain(250, host)
        };
        self.ctx.helo = Some(name.clone());
        let verdict = if authenticated {
            SessionVerdict::Go
        } else {
            self.session_stage(Stage::Helo).await
        };
        match verdict {
            SessionVerdict::Refuse(r) => {
                self.ctx.helo = None;
                self.greeting.helo = None;
                return self.reply(r);
            }
            SessionVerdict::Close(r) => {
                self.reply(r);
                return Flow::Stop;
            }
            SessionVerdict::Go => {}
        }
        self.greeting.helo = Some(name);
        self.greeting.esmtp = extended;
        self.greeting.dsn = extended && self.upstream_offers_dsn();
        self.greeting.smtputf8 = extended && self.upstream_offers(|ext| ext.smtputf8);
        self.reply(reply)
    }

    /// The upstream offered DSN when last connected to (never in spool mode).
    fn upstream_offers_dsn(&self) -> bool {
        self.upstream_offers(|ext| ext.dsn)
    }

    /// The upstream last connected to offered what `has` looks for.
    fn upstream_offers(&self, has: impl Fn(&Extensions) -> bool) -> bool {
        self.shared
            .upstreams()
            .and_then(|pool| pool.known_extensions())
            .is_some_and(|ext| has(&ext))
    }
}
