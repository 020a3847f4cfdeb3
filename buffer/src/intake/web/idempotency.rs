//! `Idempotency-Key`, the web's Message-ID (contract: Retransmission): a retried POST with the
//! same key and the same content gets the original ticket, and the key fixes the request's
//! Message-ID so a client can join the ack to its POST before any reply. The form page's hidden
//! `form_token` plays the same role for a browser. A key belongs to its requester (the `email`
//! field): [`dedup_key`] scopes it, so another requester's key never finds this one's request.

use axum::http::{HeaderMap, StatusCode};

use super::response::Problem;

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The posted field carrying the form page's one-time token.
pub(super) const FORM_TOKEN: &str = "form_token";

/// The request's key: the `Idempotency-Key` header, else the form's `form_token` field (taken
/// out of `pairs`); `None` without either, a 422 problem when it is malformed.
pub(super) fn idempotency_key(
    headers: &HeaderMap,
    pairs: &mut Vec<(String, String)>,
) -> Result<Option<String>, Problem> {
    let token = pairs
        .iter()
        .position(|(name, _)| name.trim().eq_ignore_ascii_case(FORM_TOKEN))
        .map(|i| pairs.remove(i).1);
    let (name, text) = match (headers.get("idempotency-key"), &token) {
        (Some(value), _) => ("Idempotency-Key", value.to_str().unwrap_or("")),
        (None, Some(token)) => (FORM_TOKEN, token.as_str()),
        (None, None) => return Ok(None),
    };
    check_key(name, text.trim())
}

fn check_key(name: &str, key: &str) -> Result<Option<String>, Problem> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request refused: invalid {name}"),
        );
        problem.fields.insert(
            name.into(),
            format!("1 to {MAX_KEY_LEN} printable ASCII characters"),
        );
        return Err(problem);
    }
    Ok(Some(key.to_string()))
}

/// The journal's dedup key of a keyed web request: the key within its requester's address.
pub(super) fn dedup_key(requester: &str, key: &str) -> String {
    format!("http\n{}\n{key}", requester.to_ascii_lowercase())
}

/// A fresh token for one rendering of the form: 128 bits from the process's randomly keyed
/// hasher, as 32 hex digits (unguessable enough that nobody else's form names it).
pub(super) fn new_form_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static RENDERED: AtomicU64 = AtomicU64::new(0);
    let n = RENDERED.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (a, b) = (RandomState::new(), RandomState::new());
    format!("{:016x}{:016x}", a.hash_one((n, now)), b.hash_one((now, n)))
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
