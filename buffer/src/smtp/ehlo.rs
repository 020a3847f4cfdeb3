//! EHLO and HELO (RFC 5321 §4.1.1.1): greet the client, advertise the extensions, start afresh.

use super::MessageHandler;
use super::reply::Reply;
use super::session::Session;

impl<H: MessageHandler> Session<H> {
    pub(super) fn handle_ehlo(&mut self, host: &str, extended: bool) {
        // A new EHLO resets any transaction in progress (RFC 5321 §4.1.4).
        self.tx.reset();
        self.tx.helo = Some(host.chars().take(255).collect());
        let hostname = &self.limits.hostname;
        let starttls = if self.offers_starttls() {
            "\nSTARTTLS"
        } else {
            ""
        };
        let reply = if extended {
            Reply::plain(
                250,
                format!(
                    "{hostname}\nPIPELINING\nSIZE {}\n8BITMIME\nENHANCEDSTATUSCODES{starttls}\nHELP",
                    self.limits.max_message_size
                ),
            )
        } else {
            Reply::plain(250, hostname.clone())
        };
        self.queue(reply);
    }
}
