//! MAIL FROM (RFC 5321 §4.1.1.2, SIZE from RFC 1870, BODY from RFC 6152): start a transaction,
//! within the client's message rate (contract: Fair intake).

use std::borrow::Cow;

use smtp_proto::{MAIL_SMTPUTF8, MailFrom};

use super::MessageHandler;
use super::reply::{Reply, std_replies};
use super::session::Session;
use crate::anvil::Refusal;

impl<H: MessageHandler> Session<H> {
    pub(super) fn handle_mail(&mut self, from: MailFrom<Cow<'_, str>>) {
        if self.needs_starttls() {
            self.queue(super::starttls::must_starttls());
        } else if self.tx.helo.is_none() {
            self.queue(std_replies::bad_sequence("say EHLO first"));
        } else if self.tx.mail_from.is_some() {
            self.queue(std_replies::bad_sequence("nested MAIL command"));
        } else if from.size > self.limits.max_message_size {
            self.queue(Reply::new(
                552,
                [5, 3, 4],
                format!(
                    "message too large: at most {} bytes",
                    self.limits.max_message_size
                ),
            ));
        } else if let Err(refusal) = self.handler.admit() {
            self.queue(refusal);
        } else if from.flags & MAIL_SMTPUTF8 != 0 {
            // Not advertised, so a client must not ask for it (RFC 6531 §3.4).
            self.queue(Reply::new(555, [5, 5, 4], "SMTPUTF8 is not offered here"));
        } else if self.lease().is_some_and(|lease| lease.message().is_err()) {
            self.handler().refused(Refusal::ClientMessageRate);
            let rate = self.limits.clients.message_rate;
            self.queue(std_replies::message_rate(rate));
        } else {
            self.tx.mail_from = Some(from.address.into_owned());
            self.queue(Reply::new(250, [2, 1, 0], "sender OK"));
        }
    }
}
