//! The ack mail: its body from a template the operator can replace (minijinja), its headers built
//! by barrage alone.
//!
//! Values that come from the requester (domain, fields, Message-ID, address) reach the template
//! only after [`clean`]: no control characters (so no CR/LF), at most [`MAX_VALUE_CHARS`]
//! characters. They are data to the template engine, never template source, so they cannot break
//! it. Headers are never built from template output except the Subject, which is cleaned the same
//! way and then RFC 2047-encoded and folded by lettre. The request's Message-ID goes into
//! `In-Reply-To`/`References` only when it is a well-formed `<…@…>` of printable ASCII and not
//! one barrage generated for a mail without a usable one.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use contract::chain::Checkpoint;
use lettre::Message;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Mailbox, SinglePart};
use minijinja::Environment;
use serde::Serialize;

use super::AckConfig;
use super::outbox::PendingAck;
use crate::intake::message_id;
use crate::journal::format_micros;
use crate::signing::Signer;

/// The default body: French then English, plain text.
pub const DEFAULT_TEMPLATE: &str = include_str!("default_ack.txt.j2");
/// The default subject template.
pub const DEFAULT_SUBJECT: &str =
    "Accusé de réception / Acknowledgement: {{ domain }} (ticket {{ ticket }})";

/// Longest value from the requester the template sees (longer ones are cut, with `…`).
pub const MAX_VALUE_CHARS: usize = 200;
/// Longest subject, in characters.
const MAX_SUBJECT_CHARS: usize = 200;

/// What the template can use.
#[derive(Debug, Clone, Serialize)]
pub struct AckContext {
    pub ticket: u64,
    /// RFC 3339 UTC with microseconds.
    pub accepted_at: String,
    pub domain: String,
    pub position: u64,
    /// The request's Message-ID.
    pub message_id: String,
    /// The address the ack goes to.
    pub requester: String,
    /// Every field of the request form.
    pub fields: BTreeMap<String, String>,
    /// The sender's display name (or address), for a signature.
    pub registry: String,
}

/// Makes a requester value safe for the template and the subject: control characters (CR, LF,
/// TAB, NUL, U+2028…, bidi overrides) become spaces, and it is cut to `max` characters.
pub fn clean(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max * 4));
    for (i, c) in value.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let unsafe_char = c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        out.push(if unsafe_char { ' ' } else { c });
    }
    out
}

/// A Message-ID fit to be copied into a header as is: `<…@…>`, printable ASCII, no `<>` inside,
/// at most [`message_id::MAX_LEN`] characters (the rule the SMTP intake stores ids by).
pub fn safe_msg_id(id: &str) -> Option<&str> {
    message_id::usable(id).then_some(id)
}

/// The Message-ID of the ack of `seq`: the same on every resend, distinct across instances.
pub fn ack_message_id(seq: u64, instance_id: &str, hostname: &str) -> String {
    format!("<ack.{seq}.{instance_id}@{hostname}>")
}

/// `X-Barrage-Ticket: SEQ`, so a checker reads the ticket without parsing the body.
#[derive(Debug, Clone)]
struct TicketHeader(String);

impl Header for TicketHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Barrage-Ticket")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(TicketHeader(s.into()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `X-Barrage-Accepted-At: RFC 3339 with microseconds`.
#[derive(Debug, Clone)]
struct AcceptedAtHeader(String);

impl Header for AcceptedAtHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Barrage-Accepted-At")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AcceptedAtHeader(s.into()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `X-Barrage-Receipt: journal_id=ID; seq=N; accepted_at=T; chain=HEX; signature=HEX`
/// (contract: Provable order): the request's signed checkpoint, proof of its place.
#[derive(Debug, Clone)]
struct ReceiptHeader(String);

impl Header for ReceiptHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(contract::chain::RECEIPT_HEADER)
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ReceiptHeader(s.into()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The receipt of an ack: the checkpoint of its request's seq, signed by the buffer's key.
fn receipt(signer: &Signer, instance_id: &str, ack: &PendingAck) -> Checkpoint {
    let at = format_micros(ack.accepted_at);
    signer.checkpoint(instance_id, ack.seq, Some(at), ack.chain.clone())
}

/// `Auto-Submitted: auto-replied` (RFC 3834), so autoresponders do not answer the ack.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-replied".into())
    }
}

/// Why an ack cannot be composed: permanent for that ack (it is marked failed).
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the ack address {0:?} is not a valid address")]
    BadAddress(String),
    #[error("the ack template failed: {0}")]
    Template(String),
    #[error("the ack mail cannot be built: {0}")]
    Build(String),
}

/// Builds ack mails: the templates, the sender, and the Message-ID parts.
pub struct Composer {
    env: Environment<'static>,
    from: Mailbox,
    instance_id: String,
    hostname: String,
    /// Signs the receipts; `None`: acks carry none (the preview).
    signer: Option<Arc<Signer>>,
}

impl Composer {
    /// Acks signed with `signer` carry a receipt (header and body).
    pub fn with_signer(mut self, signer: Arc<Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Loads the templates of `config` and checks that they render a sample ack.
    pub fn new(config: &AckConfig, instance_id: &str, hostname: &str) -> anyhow::Result<Self> {
        let body = match &config.template {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read ack.template {}", path.display()))?,
            None => DEFAULT_TEMPLATE.to_string(),
        };
        let mut env = Environment::new();
        env.set_keep_trailing_newline(true);
        env.add_template_owned("body", body)
            .context("ack.template is not a valid template")?;
        env.add_template_owned("subject", config.subject.clone())
            .context("ack.subject is not a valid template")?;
        let from: Mailbox = match &config.from_name {
            Some(name) => format!(
                "{} <{}>",
                clean(name, 100).replace(['"', '<', '>'], ""),
                config.from
            ),
            None => config.from.clone(),
        }
        .parse()
        .with_context(|| format!("ack.from {:?} is not a valid address", config.from))?;
        let composer = Composer {
            env,
            from,
            instance_id: instance_id.to_string(),
            hostname: hostname.to_string(),
            signer: None,
        };
        composer
            .compose(&sample_ack())
            .context("the ack templates do not render a sample ack")?;
        Ok(composer)
    }

    fn context(&self, ack: &PendingAck) -> AckContext {
        AckContext {
            ticket: ack.seq,
            accepted_at: format_micros(ack.accepted_at),
            domain: clean(&ack.domain, MAX_VALUE_CHARS),
            position: ack.position,
            message_id: clean(&ack.message_id, MAX_VALUE_CHARS),
            requester: clean(&ack.ack_to, MAX_VALUE_CHARS),
            fields: ack
                .fields
                .iter()
                .map(|(k, v)| (clean(k, 64), clean(v, MAX_VALUE_CHARS)))
                .collect(),
            registry: self
                .from
                .name
                .clone()
                .unwrap_or_else(|| self.from.email.to_string()),
        }
    }

    /// The subject and body text of the ack of `ack`.
    pub fn render(&self, ack: &PendingAck) -> Result<(String, String), ComposeError> {
        let context = self.context(ack);
        let render = |name: &str| {
            self.env
                .get_template(name)
                .and_then(|t| t.render(&context))
                .map_err(|e| ComposeError::Template(e.to_string()))
        };
        let subject = clean(render("subject")?.trim(), MAX_SUBJECT_CHARS);
        // The body keeps its line breaks and tabs, nothing else below U+0020.
        let body: String = render("body")?
            .replace("\r\n", "\n")
            .chars()
            .map(|c| {
                if c == '\n' || c == '\t' || !c.is_control() {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        Ok((subject, body))
    }

    /// The complete ack mail of `ack`.
    pub fn compose(&self, ack: &PendingAck) -> Result<Message, ComposeError> {
        let to: Mailbox = ack
            .ack_to
            .parse()
            .map_err(|_| ComposeError::BadAddress(clean(&ack.ack_to, MAX_VALUE_CHARS)))?;
        let (subject, mut body) = self.render(ack)?;
        let receipt = self
            .signer
            .as_ref()
            .map(|signer| receipt(signer, &self.instance_id, ack));
        if let Some(receipt) = &receipt {
            let json = serde_json::to_string(receipt).expect("a checkpoint serializes");
            body.push_str(&format!("\nReceipt: {json}\n"));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(ack_message_id(
                ack.seq,
                &self.instance_id,
                &self.hostname,
            )))
            .header(TicketHeader(ack.seq.to_string()))
            .header(AcceptedAtHeader(format_micros(ack.accepted_at)))
            .header(AutoSubmitted);
        if let Some(receipt) = &receipt {
            builder = builder.header(ReceiptHeader(contract::chain::receipt_header(receipt)));
        }
        // An id barrage generated names nothing the requester sent (RFC 5322 §3.6.4).
        if let Some(id) = safe_msg_id(&ack.message_id)
            && !message_id::is_generated(id, &self.hostname)
        {
            builder = builder
                .in_reply_to(id.to_string())
                .references(id.to_string());
        }
        let part = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .header(ContentTransferEncoding::QuotedPrintable)
            .body(body);
        builder
            .singlepart(part)
            .map_err(|e| ComposeError::Build(e.to_string()))
    }

    /// The ack of a made-up request, as `barrage ack preview` shows it.
    pub fn preview(&self) -> Result<String, ComposeError> {
        let ack = sample_ack();
        let (subject, body) = self.render(&ack)?;
        let mail = self.compose(&ack)?;
        let mut out = String::new();
        for name in PREVIEW_HEADERS {
            if let Some(value) = mail.headers().get_raw(name) {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
        // Shown decoded: the subject travels RFC 2047-encoded, the body quoted-printable.
        out.push_str(&format!("Subject: {subject}\n"));
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }
}

/// The headers `barrage ack preview` shows, in this order.
const PREVIEW_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Message-ID",
    "In-Reply-To",
    "References",
    "X-Barrage-Ticket",
    "X-Barrage-Accepted-At",
    "Auto-Submitted",
];

/// A made-up pending ack, for the preview and the start-up check of the templates.
pub fn sample_ack() -> PendingAck {
    let mut fields = BTreeMap::new();
    fields.insert("domain".into(), "exemple.fr".into());
    fields.insert("holder".into(), "Jeanne Durand".into());
    fields.insert("contact".into(), "jeanne@exemple.org".into());
    PendingAck {
        seq: 42,
        accepted_at: 1_778_490_000_123_456, // 2026-05-11T09:00:00.123456Z
        position: 17,
        message_id: "<request-1@client.exemple.org>".into(),
        ack_to: "jeanne@exemple.org".into(),
        domain: "exemple.fr".into(),
        fields,
        chain: "00".repeat(32),
        attempts: 0,
    }
}
