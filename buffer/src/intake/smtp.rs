//! The SMTP intake: turns a received request mail into a journal row and the final reply.
//!
//! Replies: `250 2.0.0 queued as ticket N at T` only after the durable commit (the original
//! ticket again for an RFC 1047 retransmission: same sender, Message-ID and bytes), `550 5.6.0 …`
//! naming what is wrong with a malformed request, `451 4.3.0 …` when the journal cannot write.
//! A request that came over STARTTLS carries the negotiated `tls.version` and `tls.cipher` in
//! its fields (contract: Request format). The Message-ID is read as [`message_id`] says; the ack
//! address is chosen by the rule of [`AckRecipient`] (contract: One ack).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mail_parser::{Address, HeaderName, MessageParser};
use serde::Deserialize;

use super::IntakeCounters;
use super::message_id::{self, MessageId};
use crate::anvil::Refusal;
use crate::form;
use crate::journal::{Journal, JournalError, NewRequest, Ticket, format_micros, now_micros};
use crate::smtp::{Envelope, MessageHandler, Reply};

/// Longest ack address taken: a path is at most 256 octets with its brackets (RFC 5321
/// §4.5.3.1.3).
const MAX_ADDRESS_LEN: usize = 254;

/// Where the ack of a mail request goes (`ack.recipient`; contract: One ack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckRecipient {
    /// The envelope sender (`MAIL FROM`), where RFC 3834 §4 sends automatic replies.
    #[default]
    Envelope,
    /// `Reply-To`, else `From`, else the envelope sender: the first that is a usable mailbox.
    Header,
}

pub struct SmtpIntake<J> {
    journal: Arc<J>,
    counters: Arc<IntakeCounters>,
    /// Host part of the Message-IDs given to requests that came without a usable one.
    hostname: String,
    generated_ids: AtomicU64,
    ack_recipient: AckRecipient,
    /// Parses only the headers the intake reads: the MIME ones (for the body) and the ack's
    /// addresses; the others it reads raw (`Message-ID`, `Auto-Submitted`) or not at all.
    parser: MessageParser,
}

/// A request and what the counters must learn of it once it is stored.
struct Parsed {
    request: NewRequest,
    unusable_message_id: bool,
    unusable_ack_address: bool,
}

impl<J: Journal> SmtpIntake<J> {
    pub fn new(journal: Arc<J>, counters: Arc<IntakeCounters>, hostname: String) -> Self {
        SmtpIntake {
            journal,
            counters,
            hostname,
            generated_ids: AtomicU64::new(0),
            ack_recipient: AckRecipient::default(),
            parser: MessageParser::new()
                .with_mime_headers()
                .header_address(HeaderName::From)
                .header_address(HeaderName::ReplyTo)
                .default_header_ignore(),
        }
    }

    /// Sends acks where `rule` says instead of the envelope sender.
    pub fn with_ack_recipient(mut self, rule: AckRecipient) -> Self {
        self.ack_recipient = rule;
        self
    }

    fn malformed(&self, problem: &str) -> Reply {
        IntakeCounters::count(&self.counters.refused_malformed);
        Reply::new(550, [5, 6, 0], format!("request refused: {problem}"))
    }

    /// The request a mail stands for, or the reason it is refused.
    fn request(&self, envelope: &Envelope, message: Vec<u8>) -> Result<Parsed, String> {
        let parsed = self
            .parser
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
        let found = MessageId::from_header(parsed.header_raw("Message-ID"));
        let unusable_message_id = found == MessageId::Unusable;
        let (message_id, dedup_key) = match found {
            MessageId::Usable(id) => {
                // Same sender and Message-ID: a retransmission if the bytes match too (RFC 1047);
                // the journal compares them (contract: Retransmission).
                let key = format!("smtp\n{sender}\n{id}");
                (id, Some(key))
            }
            // An id that is not the requester's own can recognise nothing: no dedup key.
            MessageId::Missing | MessageId::Unusable => {
                let n = self.generated_ids.fetch_add(1, Ordering::Relaxed);
                (message_id::generated(now_micros(), n, &self.hostname), None)
            }
        };
        // The null reverse-path and an automatic mail ask for no replies (RFC 3834 §2, §5):
        // theirs is not an unusable address.
        let wants_reply = !sender.is_empty() && !auto_submitted(&parsed);
        let ack_to = wants_reply
            .then(|| self.ack_address(&parsed, &sender))
            .flatten();
        let unusable_ack_address = ack_to.is_none() && wants_reply;
        let request = NewRequest {
            intake: "smtp",
            message_id,
            dedup_key,
            sender,
            ack_to,
            domain: form.domain,
            fields: form.fields,
            raw: message,
        };
        Ok(Parsed {
            request,
            unusable_message_id,
            unusable_ack_address,
        })
    }

    /// Where the ack goes (contract: One ack): the envelope sender, or with
    /// [`AckRecipient::Header`] the first usable mailbox of `Reply-To`, `From` and the envelope
    /// sender.
    fn ack_address(&self, parsed: &mail_parser::Message<'_>, sender: &str) -> Option<String> {
        let headers = match self.ack_recipient {
            AckRecipient::Envelope => None,
            AckRecipient::Header => {
                first_address(parsed.reply_to()).or_else(|| first_address(parsed.from()))
            }
        };
        headers.or_else(|| usable_mailbox(sender).then(|| sender.to_string()))
    }
}

/// Whether the mail says it was sent by a program (RFC 3834 §5: `Auto-Submitted` other than
/// `no`). Answering one could start a loop with another responder; it is stored all the same.
fn auto_submitted(parsed: &mail_parser::Message<'_>) -> bool {
    parsed.header_raw("Auto-Submitted").is_some_and(|value| {
        let keyword = value.split([';', '(']).next().unwrap_or("").trim();
        !keyword.eq_ignore_ascii_case("no")
    })
}

/// The first address of a header when it is a usable mailbox (the ack goes to one address only).
fn first_address(header: Option<&Address<'_>>) -> Option<String> {
    let address = header?.first()?.address()?.trim();
    usable_mailbox(address).then(|| address.to_string())
}

/// Whether an ack can be addressed to `address`: `local@domain` as the ack mail's `To` takes
/// it (both parts present and valid), within the length of an SMTP path.
fn usable_mailbox(address: &str) -> bool {
    address.len() <= MAX_ADDRESS_LEN
        && address.parse::<lettre::Address>().is_ok()
        && address.parse::<lettre::message::Mailbox>().is_ok()
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
        let parsed = match self.request(envelope, message) {
            Ok(parsed) => parsed,
            Err(problem) => return self.malformed(&problem),
        };
        match self.journal.append(parsed.request).await {
            Ok(ticket) => {
                let c = &self.counters;
                if ticket.retransmission {
                    IntakeCounters::count(&c.retransmissions);
                } else {
                    IntakeCounters::count(&c.accepted);
                    if parsed.unusable_message_id {
                        IntakeCounters::count(&c.unusable_message_ids);
                    }
                    if parsed.unusable_ack_address {
                        IntakeCounters::count(&c.unusable_ack_addresses);
                    }
                }
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
