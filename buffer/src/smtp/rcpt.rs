//! RCPT TO (RFC 5321 §4.1.1.3): add a recipient, within the per-transaction bound and, when one
//! is configured, the allow-list of [`Recipients`].

use std::borrow::Cow;
use std::collections::HashSet;

use smtp_proto::RcptTo;

use super::MessageHandler;
use super::reply::{Reply, echo, std_replies};
use super::session::Session;

/// The recipient addresses the server takes (`smtp.recipients`); empty: any. Compared with the
/// whole address lower-cased: domains are case-insensitive (RFC 5321 §2.4), and local parts are
/// compared so too, as Postfix does, because the list names the registry's own mailboxes and a
/// request sent to `Requests@` instead of `requests@` must not be turned away on the day.
#[derive(Debug, Clone, Default)]
pub struct Recipients(HashSet<String>);

impl Recipients {
    /// The list of `local@domain` addresses; the first that is not one is the error.
    pub fn new<S: AsRef<str>>(addresses: &[S]) -> Result<Recipients, String> {
        let mut set = HashSet::new();
        for address in addresses {
            let address = address.as_ref();
            let plain = address.rsplit_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !address.chars().any(|c| c.is_whitespace() || c.is_control())
                    && !address.contains(['<', '>'])
            });
            if !plain {
                return Err(address.to_string());
            }
            set.insert(address.to_lowercase());
        }
        Ok(Recipients(set))
    }

    /// Whether mail to `address` is taken.
    pub fn takes(&self, address: &str) -> bool {
        self.0.is_empty() || self.0.contains(&address.to_lowercase())
    }
}

impl<H: MessageHandler> Session<H> {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>) {
        if self.tx.mail_from.is_none() {
            self.queue(std_replies::bad_sequence("MAIL FROM first"));
        } else if to.address.is_empty() {
            self.queue(Reply::new(501, [5, 1, 3], "empty recipient address"));
        } else if !self.limits.recipients.takes(&to.address) {
            // A bad command: a client guessing addresses is closed after a few (session.rs).
            self.errors += 1;
            let text = format!("<{}>: no such mailbox here", echo(&to.address));
            self.queue(Reply::new(550, [5, 1, 1], text));
        } else if self.tx.rcpt_to.len() >= self.limits.max_recipients {
            // 452 rather than 552: the client should send the rest in another transaction.
            self.queue(Reply::new(452, [4, 5, 3], "too many recipients"));
        } else {
            self.tx.rcpt_to.push(to.address.into_owned());
            self.queue(Reply::new(250, [2, 1, 5], "recipient OK"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_ignores_case_and_an_empty_list_takes_any() {
        let list = Recipients::new(&["Requests@Registry.Example"]).unwrap();
        assert!(list.takes("requests@registry.example"));
        assert!(list.takes("REQUESTS@REGISTRY.EXAMPLE"));
        assert!(!list.takes("other@registry.example"));
        assert!(!list.takes("requests@registry.example.evil"));
        assert!(Recipients::default().takes("anything@anywhere"));
        for bad in [
            "requests",
            "@registry.example",
            "requests@",
            "<a@b>",
            "a b@c",
        ] {
            assert_eq!(Recipients::new(&[bad]).unwrap_err(), bad);
        }
    }
}
