//! STARTTLS (RFC 3207) and implicit TLS (RFC 8314) on the client side of
//! the gateway.
//!
//! After `220 Ready to start TLS` every byte the client sent before the
//! handshake is thrown away (CVE-2011-0411: commands injected in plain
//! text must not run inside the TLS session), and the session starts over:
//! no HELO, no AUTH, no transaction — the client must EHLO again. A failed
//! handshake ends this connection only.

use super::{replies, Flow, Session};
use crate::config::StartTls;
use crate::stream::Stream;
use futures_rustls::TlsAcceptor;
use log::info;

impl<S: Stream> Session<S> {
    /// True once the client's connection is under TLS.
    pub(super) fn is_tls(&self) -> bool {
        self.conn.stream.is_tls()
    }

    /// True when STARTTLS is offered to this session now.
    pub(super) fn starttls_offered(&self) -> bool {
        self.listener.starttls != StartTls::None && !self.is_tls() && self.shared.tls().is_some()
    }

    /// True when this listener demands STARTTLS and it has not happened.
    pub(super) fn needs_starttls(&self) -> bool {
        self.listener.starttls == StartTls::Required && !self.is_tls()
    }

    /// Answers STARTTLS and runs the handshake.
    pub(super) async fn starttls(&mut self) -> Flow {
        if self.is_tls() {
            return self.client_error(replies::tls_already_active());
        }
        let Some(acceptor) = self
            .shared
            .tls()
            .filter(|_| self.listener.starttls != StartTls::None)
            .map(|t| t.acceptor())
        else {
            return self.client_error(replies::not_offered("STARTTLS"));
        };
        if self.tx.is_some() {
            return self.client_error(replies::bad_sequence("Error: MAIL transaction in progress"));
        }
        self.reply(replies::ready_to_start_tls());
        if self.flush().await.is_err() {
            return Flow::Stop;
        }
        if self.handshake(acceptor).await {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    /// The handshake of an implicit-TLS listener, before the greeting.
    /// False when it failed and the connection is over.
    pub(super) async fn implicit_tls(&mut self) -> bool {
        let Some(tls) = self.shared.tls() else {
            info!(
                "session {} peer={} no TLS certificate for an implicit-TLS listener",
                self.id, self.peer
            );
            return false;
        };
        let acceptor = tls.acceptor();
        self.handshake(acceptor).await
    }

    /// Runs the server side of the handshake (STARTTLS or implicit), counts
    /// it, and on success resets the session as RFC 3207 §4.2 asks. False
    /// when it failed and the connection is over.
    async fn handshake(&mut self, acceptor: TlsAcceptor) -> bool {
        let limit = self.shared.config.timeouts.command();
        let handshake = self.conn.start_tls(acceptor, limit).await;
        self.shared.metrics().tls_handshake(handshake.is_ok());
        if let Err(e) = handshake {
            info!(
                "session {} peer={} TLS handshake failed: {e}",
                self.id, self.peer
            );
            return false;
        }
        self.tls_started();
        true
    }

    /// Resets the session after a handshake: the client starts over with
    /// EHLO, as RFC 3207 §4.2 requires, and nothing learnt in plain text
    /// (HELO name, AUTH, the line being read) carries over.
    fn tls_started(&mut self) {
        self.lines = crate::proto::LineReader::new(self.shared.config.limits.max_command_line);
        self.restart_greeting();
        self.ctx.tls = self.conn.stream.tls_info();
        if let Some(info) = &self.ctx.tls {
            info!(
                "session {} peer={} TLS established: {} {}",
                self.id, self.peer, info.version, info.cipher
            );
        }
    }

    /// The protocol name for the `Received:` header (RFC 3848): ESMTP, plus
    /// S under TLS and A when authenticated; SMTP after HELO; UTF8SMTP...
    /// for a transaction with SMTPUTF8.
    pub(super) fn received_protocol(&self) -> &'static str {
        // RFC 6531 §4.3: a transaction with SMTPUTF8 says so.
        if self.greeting.esmtp && super::transaction::smtputf8(&self.ctx.mail_params) {
            return match (self.is_tls(), self.greeting.auth.is_some()) {
                (false, false) => "UTF8SMTP",
                (true, false) => "UTF8SMTPS",
                (false, true) => "UTF8SMTPA",
                (true, true) => "UTF8SMTPSA",
            };
        }
        match (
            self.greeting.esmtp,
            self.is_tls(),
            self.greeting.auth.is_some(),
        ) {
            (false, false, _) => "SMTP",
            (false, true, _) => "SMTPS",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }
}
