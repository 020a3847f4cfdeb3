//! The ack sink: an SMTP server the buffer's ack relay points at. Each ack mail is parsed with
//! mail-parser and recorded as a line of `acks.jsonl` ([`AckRecord`]): its own Message-ID, the
//! request's Message-ID from `In-Reply-To`, the ticket (`X-Barrage-Ticket`, else a `ticket N` in
//! the Subject, for foreign buffers), the accepted-at (`X-Barrage-Accepted-At`), the envelope
//! recipients and when it arrived. It always answers
//! 250: judging the acks is the checkers' job.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use barrage::smtp::{Envelope, MessageHandler, Reply};
use mail_parser::MessageParser;
use reports::records::{AckRecord, JsonlWriter, Stamp};

use super::sink::SmtpSink;
use super::{Seen, bare_id};
use crate::driver::smtp::wire::parse_ticket;

/// Records every ack mail it receives.
pub struct AckRecorder {
    out: Mutex<JsonlWriter<AckRecord>>,
    /// In-Reply-To of every ack received.
    pub seen: Arc<Seen>,
}

impl AckRecorder {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Ok(AckRecorder {
            out: Mutex::new(JsonlWriter::create(path)?),
            seen: Arc::new(Seen::default()),
        })
    }

    /// Writes what is buffered to disk.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.out.lock().expect("ack writer poisoned").flush()
    }

    /// Records one ack mail.
    pub fn record(&self, envelope: &Envelope, message: &[u8]) -> anyhow::Result<()> {
        let record = parse_ack(message, envelope.rcpt_to.clone(), Stamp::now());
        self.seen.note([record.in_reply_to.as_deref()]);
        self.out.lock().expect("ack writer poisoned").write(&record)
    }
}

/// Reads an ack mail into an [`AckRecord`].
pub fn parse_ack(message: &[u8], to: Vec<String>, received_at: Stamp) -> AckRecord {
    let parsed = MessageParser::default().parse(message);
    let header = |name: &str| -> Option<String> {
        parsed
            .as_ref()?
            .header_raw(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let angle = |id: String| format!("<{}>", bare_id(&id));
    let accepted_at = header("X-Barrage-Accepted-At").and_then(|t| Stamp::parse(&t).ok());
    let ticket = header("X-Barrage-Ticket")
        .and_then(|t| t.parse().ok())
        .or_else(|| header("Subject").and_then(|s| parse_ticket(&s)));
    AckRecord {
        message_id: header("Message-ID").map(angle),
        // In-Reply-To may list several ids; the request's is the first.
        in_reply_to: header("In-Reply-To")
            .and_then(|v| v.split_whitespace().next().map(str::to_string))
            .map(angle),
        ticket,
        accepted_at,
        to,
        received_at,
    }
}

impl MessageHandler for AckRecorder {
    async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        match self.record(envelope, &message) {
            Ok(()) => Reply::new(250, [2, 0, 0], "ack recorded"),
            Err(e) => {
                tracing::error!("ack sink cannot record: {e:#}");
                Reply::new(451, [4, 3, 0], "ack sink cannot record, try again")
            }
        }
    }
}

/// The ack sink: an [`SmtpSink`] around an [`AckRecorder`]; `stop()` and `restart()` take it down
/// and bring it back on the same address.
pub type AckSink = SmtpSink<AckRecorder>;

/// Starts an ack sink on `bind`, recording into `acks_path`.
pub async fn start(bind: SocketAddr, acks_path: &Path) -> anyhow::Result<AckSink> {
    SmtpSink::start(bind, Arc::new(AckRecorder::create(acks_path)?)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_mail_becomes_a_record() {
        let mail =
            b"From: registry@example.fr\r\nTo: a@b.fr\r\nMessage-ID: <ack.7.abc@barrage>\r\n\
In-Reply-To: <r7@landrush>\r\nReferences: <r7@landrush>\r\nX-Barrage-Ticket: 7\r\n\
X-Barrage-Accepted-At: 2026-12-01T09:00:00.123456Z\r\n\
Subject: Acknowledgement (ticket 7)\r\n\r\nhello\r\n";
        let at = Stamp::from_micros(5);
        let record = parse_ack(mail, vec!["a@b.fr".into()], at);
        assert_eq!(record.message_id.as_deref(), Some("<ack.7.abc@barrage>"));
        assert_eq!(record.in_reply_to.as_deref(), Some("<r7@landrush>"));
        assert_eq!(record.ticket, Some(7));
        assert_eq!(
            record.accepted_at.map(|a| a.to_string()).as_deref(),
            Some("2026-12-01T09:00:00.123456Z")
        );
        let foreign =
            b"Message-ID: x@y\r\nIn-Reply-To: r8@landrush\r\nSubject: ticket #8\r\n\r\n.\r\n";
        let record = parse_ack(foreign, vec![], at);
        assert_eq!(record.in_reply_to.as_deref(), Some("<r8@landrush>"));
        assert_eq!(record.message_id.as_deref(), Some("<x@y>"));
        assert_eq!(record.ticket, Some(8));
        assert_eq!(record.accepted_at, None);
    }
}
