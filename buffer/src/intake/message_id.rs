//! A request mail's Message-ID as barrage stores it (contract: Request format): unfolded,
//! bounded, and of the one shape that can be copied into the ack's `In-Reply-To` as is;
//! anything else is unusable and the request gets an id barrage generates.

/// Longest Message-ID stored, brackets included. The ack carries it twice (`In-Reply-To` and
/// `References`), each on one header line that must stay within RFC 5322's 998 characters; ids
/// in the wild are well under 100 characters, so 250 takes every real one with room to spare
/// while bounding what a dedup key and a stored row may cost.
pub const MAX_LEN: usize = 250;

/// What a mail's `Message-ID` header comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageId {
    /// A usable id, `<left@right>`, unfolded.
    Usable(String),
    /// No header, or an empty one.
    Missing,
    /// A header whose value is no usable id: too long, no `<…@…>`, or not printable ASCII.
    Unusable,
}

impl MessageId {
    /// Reads the raw value of a `Message-ID` header (what follows the colon, folds and all).
    pub fn from_header(raw: Option<&str>) -> MessageId {
        let value = unfold(raw.unwrap_or(""));
        if value.is_empty() {
            MessageId::Missing
        } else if usable(&value) {
            MessageId::Usable(value)
        } else {
            MessageId::Unusable
        }
    }
}

/// Joins a folded header value into one line and trims it. A fold's CRLF goes and so does the
/// white space after it: mailers that cut a long Message-ID insert a fold where there was no
/// space, and an id holds no white space of its own.
fn unfold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_LEN + 2));
    for (i, line) in raw.split("\r\n").enumerate() {
        out.push_str(if i == 0 {
            line
        } else {
            line.trim_start_matches([' ', '\t'])
        });
    }
    out.trim_matches([' ', '\t']).to_string()
}

/// Whether `id` is `<left@right>` of printable ASCII with no `<`, `>` or white space inside,
/// both sides non-empty, at most [`MAX_LEN`] characters: fit for a header as is.
pub fn usable(id: &str) -> bool {
    let Some(inner) = id.strip_prefix('<').and_then(|s| s.strip_suffix('>')) else {
        return false;
    };
    let sides = inner.rsplit_once('@');
    id.len() <= MAX_LEN
        && sides.is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
        && inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// The id given to a mail without a usable Message-ID of its own: `<barrage.MICROS.N@HOSTNAME>`.
pub fn generated(micros: i64, n: u64, hostname: &str) -> String {
    format!("<barrage.{micros}.{n}@{hostname}>")
}

/// Whether `id` has the shape of [`generated`] for `hostname`: an id the requester never saw,
/// which its ack therefore does not name in `In-Reply-To` (RFC 5322 §3.6.4: a reply to a
/// message without a Message-ID has no `In-Reply-To`).
pub fn is_generated(id: &str, hostname: &str) -> bool {
    let middle = id
        .strip_prefix("<barrage.")
        .and_then(|rest| rest.strip_suffix('>'))
        .and_then(|rest| rest.strip_suffix(hostname))
        .and_then(|rest| rest.strip_suffix('@'));
    let numbers = middle.and_then(|m| m.split_once('.'));
    numbers.is_some_and(|(micros, n)| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(micros) && digits(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_removed() {
        let id = |raw: &str| MessageId::from_header(Some(raw));
        let want = MessageId::Usable("<a.b@c.example>".into());
        assert_eq!(id(" <a.b@c.example>\r\n"), want);
        assert_eq!(id("\r\n\t<a.b@c.example>"), want);
        assert_eq!(id(" <a.\r\n b@c.example>"), want);
        assert_eq!(id(" <a.b@\r\n c.\r\n\t example>"), want);
    }

    #[test]
    fn unusable_and_missing() {
        let id = |raw: &str| MessageId::from_header(Some(raw));
        assert_eq!(MessageId::from_header(None), MessageId::Missing);
        assert_eq!(id(" \r\n "), MessageId::Missing);
        let longest = format!("<{}@c>", "x".repeat(MAX_LEN - 4));
        assert_eq!(id(&longest), MessageId::Usable(longest.clone()));
        let too_long = format!("<{}@c>", "x".repeat(MAX_LEN - 3));
        for bad in [
            too_long.as_str(),
            "a@b",
            "<ab>",
            "<@b>",
            "<a@>",
            "<a b@c>",
            "<a@b> (comment)",
            "<a<b@c>",
            "<\u{e9}@c>",
            "<a\u{1}@c>",
        ] {
            assert_eq!(id(bad), MessageId::Unusable, "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_recognised() {
        let id = generated(1_778_490_000_123_456, 7, "mx.example");
        assert!(usable(&id));
        assert!(is_generated(&id, "mx.example"));
        assert!(!is_generated(&id, "other.example"));
        assert!(!is_generated("<barrage.web.1.2@mx.example>", "mx.example"));
        assert!(!is_generated("<barrage.1.x@mx.example>", "mx.example"));
        assert!(!is_generated("<request-1@mx.example>", "mx.example"));
    }
}
