//! RCPT TO (RFC 5321 §4.1.1.3): add a recipient, within the per-transaction bound.

use std::borrow::Cow;

use smtp_proto::RcptTo;

use super::MessageHandler;
use super::reply::{Reply, std_replies};
use super::session::Session;

impl<H: MessageHandler> Session<H> {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>) {
        if self.tx.mail_from.is_none() {
            self.queue(std_replies::bad_sequence("MAIL FROM first"));
        } else if to.address.is_empty() {
            self.queue(Reply::new(501, [5, 1, 3], "empty recipient address"));
        } else if self.tx.rcpt_to.len() >= self.limits.max_recipients {
            // 452 rather than 552: the client should send the rest in another transaction.
            self.queue(Reply::new(452, [4, 5, 3], "too many recipients"));
        } else {
            self.tx.rcpt_to.push(to.address.into_owned());
            self.queue(Reply::new(250, [2, 1, 5], "recipient OK"));
        }
    }
}
