//! `Idempotency-Key`, the web's Message-ID (contract: Retransmission): a retried POST with the
//! same key gets the original ticket, and the key fixes the request's Message-ID so a client can
//! join the ack to its POST before any reply.

use axum::http::{HeaderMap, StatusCode};

use super::response::Problem;

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The request's key, `None` without the header, a 422 problem when it is malformed.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or("");
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request refused: invalid Idempotency-Key",
        );
        problem.fields.insert(
            "Idempotency-Key".into(),
            format!("1 to {MAX_KEY_LEN} printable ASCII characters"),
        );
        return Err(problem);
    }
    Ok(Some(key.to_string()))
}

/// The Message-ID of a keyed request: `<KEY>` when the key is shaped like a Message-ID
/// (`left@right`, no brackets or spaces), else `<idem.KEY@hostname>` with unusual bytes escaped
/// as `=XX`. Deterministic, so a client knows it before any reply.
pub fn message_id_for_key(key: &str, hostname: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if let Some((left, right)) = key.split_once('@')
        && !left.is_empty()
        && !right.is_empty()
        && left.chars().all(plain)
        && right.chars().all(plain)
    {
        return format!("<{key}>");
    }
    let mut escaped = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("={b:02X}"));
        }
    }
    format!("<idem.{escaped}@{hostname}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_give_stable_message_ids() {
        assert_eq!(
            message_id_for_key("r1.7@landrush.invalid", "h"),
            "<r1.7@landrush.invalid>"
        );
        assert_eq!(message_id_for_key("abc 1", "h"), "<idem.abc=201@h>");
        assert_eq!(message_id_for_key("a@b@c", "h"), "<idem.a=40b=40c@h>");
    }
}
