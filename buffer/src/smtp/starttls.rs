//! STARTTLS (RFC 3207): answer 220, forget everything the client pipelined after the command
//! (CVE-2011-0411: it was sent in plain text and must not run inside the TLS session), do the
//! handshake, and start the session afresh: the client must say EHLO again.

use std::sync::Arc;

use super::MessageHandler;
use super::reply::{Reply, std_replies};
use super::session::Session;
use super::stream::Stream;
use crate::tls::{Certificates, TlsInfo, TlsMode};

/// The SMTP intake's TLS: the mode and the certificate, swappable on SIGHUP.
#[derive(Debug, Clone)]
pub struct SmtpTls {
    pub mode: TlsMode,
    pub certificates: Arc<Certificates>,
}

impl SmtpTls {
    pub fn required(&self) -> bool {
        self.mode == TlsMode::Required
    }
}

/// The reply to MAIL over plain text when TLS is required (RFC 3207 §4).
pub(super) fn must_starttls() -> Reply {
    Reply::new(530, [5, 7, 0], "Must issue a STARTTLS command first")
}

impl<H: MessageHandler> Session<H> {
    /// Whether EHLO advertises STARTTLS: configured, and not already in TLS.
    pub(super) fn offers_starttls(&self) -> bool {
        self.limits.tls.is_some() && self.tls_info.is_none()
    }

    /// Whether MAIL must wait for STARTTLS.
    pub(super) fn needs_starttls(&self) -> bool {
        self.tls_info.is_none() && self.limits.tls.as_ref().is_some_and(SmtpTls::required)
    }

    /// Answers STARTTLS; true when the handshake is to follow.
    pub(super) fn handle_starttls(&mut self) -> bool {
        if self.limits.tls.is_none() {
            self.errors += 1;
            self.queue(Reply::new(502, [5, 5, 1], "STARTTLS is not offered here"));
            false
        } else if self.tls_info.is_some() {
            self.queue(std_replies::bad_sequence("TLS is already active"));
            false
        } else {
            self.queue(Reply::new(220, [2, 0, 0], "ready to start TLS"));
            true
        }
    }

    /// Sends the 220, drops what was pipelined after STARTTLS, and runs the handshake within
    /// the command deadline. An error ends the session (the stream is no longer plain text).
    pub(super) async fn start_tls(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        let dropped = self.input.len() - self.pos;
        if dropped > 0 {
            tracing::debug!(peer = %self.peer, dropped, "input pipelined after STARTTLS discarded");
        }
        self.input.clear();
        self.pos = 0;
        let Some(tls) = self.limits.tls.clone() else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        let accept = tls.certificates.acceptor().accept(tcp);
        let stream = match tokio::time::timeout(self.limits.command_timeout, accept).await {
            Ok(result) => result?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        };
        self.tls_info = Some(TlsInfo::of(stream.get_ref().1));
        self.stream = Stream::Tls(Box::new(stream));
        self.tx = Default::default();
        Ok(())
    }
}
