//! The SMTP intake: turns a received request mail into a journal row and the final reply.
//!
//! Replies: `250 2.0.0 queued as ticket N at T` only after the durable commit (the original
//! ticket again for an RFC 1047 retransmission: same sender, Message-ID and bytes), `550 5.6.0 …`
//! naming what is wrong with a malformed request, `451 4.3.0 …` when the journal cannot write.
//! A request that came over STARTTLS carries the negotiated `tls.version` and `tls.cipher` in
//! its fields (contract: Request format).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mail_parser::{Address, MessageParser};

use super::IntakeCounters;
use crate::anvil::Refusal;
use crate::form;
use crate::journal::{Journal, JournalError, NewRequest, Ticket, format_micros, now_micros};
use crate::smtp::{Envelope, MessageHandler, Reply};

pub struct SmtpIntake<J> {
    journal: Arc<J>,
    counters: Arc<IntakeCounters>,
    /// Host part of the Message-IDs given to requests that came without one.
    hostname: String,
    generated_ids: AtomicU64,
}

impl<J: Journal> SmtpIntake<J> {
    pub fn new(journal: Arc<J>, counters: Arc<IntakeCounters>, hostname: String) -> Self {
        SmtpIntake {
            journal,
            counters,
            hostname,
            generated_ids: AtomicU64::new(0),
        }
    }

    fn malformed(&self, problem: &str) -> Reply {
        IntakeCounters::count(&self.counters.refused_malformed);
        Reply::new(550, [5, 6, 0], format!("request refused: {problem}"))
    }

    /// The request a mail stands for, or the reason it is refused.
    fn request(&self, envelope: &Envelope, message: Vec<u8>) -> Result<NewRequest, String> {
        let parsed = MessageParser::default()
            .parse(&message)
            .ok_or("the message cannot be parsed as RFC 5322 mail")?;
        let body = parsed.body_text(0).unwrap_or_default();
        let mut form = form::parse_body(&body)?;
        if let Some(tls) = &envelope.tls {
            // A dot cannot appear in a form key, so a request cannot forge these.
            form.fields
                .insert("tls.version".into(), tls.version.clone());
            form.fields.insert("tls.cipher".into(), tls.cipher.clone());
        }
        let sender = envelope.mail_from.to_ascii_lowercase();
        let (message_id, dedup_key) = match parsed.message_id() {
            Some(id) if !id.is_empty() => {
                let id = format!("<{id}>");
                // Same sender and Message-ID: a retransmission if the bytes match too (RFC 1047);
                // the journal compares them (contract: Retransmission).
                let key = format!("smtp\n{sender}\n{id}");
                (id, Some(key))
            }
            _ => {
                let n = self.generated_ids.fetch_add(1, Ordering::Relaxed);
                let id = format!("<barrage.{}.{n}@{}>", now_micros(), self.hostname);
                (id, None)
            }
        };
        let ack_to = first_address(parsed.reply_to())
            .or_else(|| first_address(parsed.from()))
            .or_else(|| (!sender.is_empty()).then(|| sender.clone()));
        Ok(NewRequest {
            intake: "smtp",
            message_id,
            dedup_key,
            sender,
            ack_to,
            domain: form.domain,
            fields: form.fields,
            raw: message,
        })
    }
}

/// The first plain address of a header (the acknowledgement goes to one address only).
fn first_address(header: Option<&Address<'_>>) -> Option<String> {
    let address = header?.first()?.address()?;
    let clean = address.trim();
    (clean.contains('@') && !clean.chars().any(|c| c.is_control() || c.is_whitespace()))
        .then(|| clean.to_string())
}

/// The success reply, in the one format the harness parses: `queued as ticket N at T`.
pub fn accepted_reply(ticket: &Ticket) -> Reply {
    Reply::new(
        250,
        [2, 0, 0],
        format!(
            "queued as ticket {} at {}",
            ticket.seq,
            format_micros(ticket.accepted_at)
        ),
    )
}

impl<J: Journal> MessageHandler for SmtpIntake<J> {
    fn admit(&self) -> Result<(), Reply> {
        let refusal = self.journal.admission();
        refusal.map_err(|why| Reply::new(452, [4, 3, 1], why.to_string()))
    }

    async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        let request = match self.request(envelope, message) {
            Ok(request) => request,
            Err(problem) => return self.malformed(&problem),
        };
        match self.journal.append(request).await {
            Ok(ticket) => {
                let counter = if ticket.retransmission {
                    &self.counters.retransmissions
                } else {
                    &self.counters.accepted
                };
                IntakeCounters::count(counter);
                if envelope.tls.is_some() {
                    IntakeCounters::count(&self.counters.accepted_tls);
                }
                accepted_reply(&ticket)
            }
            Err(JournalError::Unavailable(why)) => {
                IntakeCounters::count(&self.counters.refused_unavailable);
                tracing::warn!("request not stored, answered 451: {why}");
                Reply::new(
                    451,
                    [4, 3, 0],
                    "request not stored: the journal cannot write right now, try again later",
                )
            }
            Err(JournalError::Invalid(why)) => self.malformed(&why),
            Err(JournalError::Conflict(why)) => self.malformed(&why),
        }
    }

    fn refused(&self, why: Refusal) {
        self.counters.refused(why);
    }
}
