//! Observers: what the registration side and the requesters receive from a buffer, recorded as
//! run records (`handed.jsonl`, `acks.jsonl`) for the checkers.
//!
//! | observer            | records         | stands for                                              |
//! |---------------------|-----------------|---------------------------------------------------------|
//! | [`registry`]        | `handed.jsonl`  | the registration system pulling the handover API        |
//! | [`acksink`]         | `acks.jsonl`    | the requesters' mailboxes, where the buffer's acks go   |
//! | [`smtp_handover`]   | `handed.jsonl`  | a back office a foreign buffer relays requests to       |
//! | [`maildir`]         | `handed.jsonl`  | a back office reading the Maildir a foreign buffer fills |
//!
//! Every observer keeps a [`Seen`] set (X-Landrush-Ids and bare Message-IDs) so that
//! `landrush rehearse` can tell when everything accepted has arrived. The two SMTP observers share
//! one restartable server, [`sink::SmtpSink`], built on `barrage::smtp::serve`.

pub mod acksink;
pub mod maildir;
pub mod registry;
pub mod sink;
pub mod smtp_handover;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mail_parser::MessageParser;

/// What an observer has received so far: a count of records and the keys that identify them.
#[derive(Debug, Default)]
pub struct Seen {
    records: AtomicU64,
    keys: Mutex<HashSet<String>>,
}

impl Seen {
    /// Notes one record carrying these keys (X-Landrush-Id, Message-ID; brackets are stripped).
    pub fn note<'a>(&self, keys: impl IntoIterator<Item = Option<&'a str>>) {
        self.records.fetch_add(1, Ordering::Relaxed);
        let mut set = self.keys.lock().expect("seen set poisoned");
        for key in keys.into_iter().flatten() {
            set.insert(bare_id(key).to_string());
        }
    }

    /// Records received (repeats included).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Whether any record carried one of these keys.
    pub fn contains_any<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> bool {
        let set = self.keys.lock().expect("seen set poisoned");
        keys.into_iter().any(|k| set.contains(bare_id(k)))
    }
}

/// A Message-ID without angle brackets and surrounding space.
pub fn bare_id(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(id)
        .trim()
}

/// What the observers read from a request mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMail {
    /// `X-Landrush-Id`.
    pub landrush_id: Option<String>,
    /// `Message-ID`, in angle brackets as the driver writes it.
    pub message_id: Option<String>,
    /// The form's `domain:` line.
    pub domain: Option<String>,
}

/// Reads the harness's join keys and the domain from a request mail as delivered (extra headers
/// such as `Received:` or `Delivered-To:` in front are fine).
pub fn parse_request_mail(raw: &[u8]) -> RequestMail {
    let Some(message) = MessageParser::default().parse(raw) else {
        return RequestMail::default();
    };
    let landrush_id = message
        .header_raw("X-Landrush-Id")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let message_id = message.message_id().map(|m| format!("<{}>", bare_id(m)));
    let domain = message.body_text(0).and_then(|body| {
        body.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim().eq_ignore_ascii_case("domain")).then(|| value.trim().to_string())
        })
    });
    RequestMail {
        landrush_id,
        message_id,
        domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_mail_keys_are_read_behind_extra_headers() {
        let raw = b"Return-Path: <a@b.fr>\r\nDelivered-To: x@y\r\nFrom: <a@b.fr>\r\n\
Message-ID: <r1@landrush>\r\nX-Landrush-Id: r0000001\r\n\r\ndomain: exemple.fr\r\nholder: A\r\n";
        let mail = parse_request_mail(raw);
        assert_eq!(mail.landrush_id.as_deref(), Some("r0000001"));
        assert_eq!(mail.message_id.as_deref(), Some("<r1@landrush>"));
        assert_eq!(mail.domain.as_deref(), Some("exemple.fr"));
        let seen = Seen::default();
        seen.note([mail.landrush_id.as_deref(), mail.message_id.as_deref()]);
        assert!(seen.contains_any(["r1@landrush"]));
        assert!(seen.contains_any(["nope", "r0000001"]));
        assert!(!seen.contains_any(["r2@landrush"]));
    }
}
