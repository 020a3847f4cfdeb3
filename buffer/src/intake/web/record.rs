//! What is kept of a POST for disputes: a mail-like record (a few request headers and the
//! Message-ID given to it, a blank line, the body as received), the web's `raw` column.

use axum::http::HeaderMap;

/// What is kept of the POST for disputes: a mail-like header block (a few request headers and
/// the Message-ID given to it), a blank line, and the body as received.
pub(super) fn raw_record(headers: &HeaderMap, message_id: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(body.len() + 256);
    raw.extend_from_slice(
        format!("Message-ID: {message_id}\r\nX-Barrage-Intake: http\r\n").as_bytes(),
    );
    for name in [
        "content-type",
        "idempotency-key",
        "x-landrush-id",
        "user-agent",
        "x-forwarded-for",
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect();
            raw.extend_from_slice(format!("{}: {value}\r\n", header_case(name)).as_bytes());
        }
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

fn header_case(name: &str) -> String {
    match name {
        "x-landrush-id" => "X-Landrush-Id".into(),
        "x-forwarded-for" => "X-Forwarded-For".into(),
        _ => name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}
