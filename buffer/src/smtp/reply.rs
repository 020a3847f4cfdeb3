//! SMTP replies: a code, an enhanced status code (RFC 3463) and a text, always printable ASCII
//! on the wire (RFC 5321 §4.2: reply text is 7-bit; whatever the client sent and a reply names
//! goes through [`echo`]).

use std::io::Write;

/// Longest reply line, code and CRLF included (RFC 5321 §4.5.3.1.5); longer texts are cut.
pub const MAX_LINE_LEN: usize = 512;

/// Most characters of a client's text a reply names (an address, a parameter, a domain): an SMTP
/// reply line must stay within 512 bytes (RFC 5321 §4.5.3.1.5), and an escaped byte takes four.
pub const MAX_ECHO_CHARS: usize = 80;

/// One SMTP reply. Multi-line texts (separated by `\n`) are written as continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code; `None` for the greeting and EHLO lines, which carry none.
    pub esc: Option<[u8; 3]>,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, esc: [u8; 3], text: impl Into<String>) -> Self {
        debug_assert!((200..600).contains(&code), "SMTP reply code {code}");
        Reply {
            code,
            esc: Some(esc),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            esc: None,
            text: text.into(),
        }
    }

    pub fn is_success(&self) -> bool {
        self.code < 400
    }

    /// Appends the wire form (`250-…\r\n250 …\r\n`) to `out`. Every byte of a line outside
    /// printable ASCII is written `\xHH`, so no reply can carry anything else, nor a line break
    /// it did not mean to.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_none() { ' ' } else { '-' };
            let start = out.len();
            let _ = write!(out, "{}{}", self.code, sep);
            if let Some([a, b, c]) = self.esc {
                let _ = write!(out, "{a}.{b}.{c} ");
            }
            let room = MAX_LINE_LEN - (out.len() - start) - 2;
            escape_into(line, out, room);
            out.extend_from_slice(b"\r\n");
            debug_assert!(out.len() - start <= MAX_LINE_LEN);
            debug_assert!(
                out[start..]
                    .iter()
                    .all(|&b| b == b'\r' || b == b'\n' || is_printable(b))
            );
        }
    }
}

fn is_printable(byte: u8) -> bool {
    (0x20..=0x7e).contains(&byte)
}

/// Writes `text` in printable ASCII, in at most `room` bytes: every byte outside 0x20–0x7E (a
/// control byte, each byte of a non-ASCII character's UTF-8 form) becomes `\xHH`; a text that
/// does not fit is cut before an escape, never inside one, and ends with `...`.
fn escape_into(text: &str, out: &mut Vec<u8>, room: usize) {
    let width = |byte: u8| if is_printable(byte) { 1 } else { 4 };
    let whole: usize = text.bytes().map(width).sum();
    let budget = if whole <= room {
        room
    } else {
        room.saturating_sub(3)
    };
    let mut used = 0;
    for byte in text.bytes() {
        used += width(byte);
        if used > budget {
            break;
        }
        if is_printable(byte) {
            out.push(byte);
        } else {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    if whole > room {
        out.extend_from_slice(b"...");
    }
}

/// The text a client sent, made fit to be named in a reply: cut to [`MAX_ECHO_CHARS`] characters
/// (`...` marks the cut), `\` doubled so every `\xHH` is one of ours, then every byte outside
/// printable ASCII written `\xHH` (line breaks too, so it stays on its line). Its result is
/// printable ASCII already, which [`Reply::write_to`] leaves as it is.
pub fn echo(text: &str) -> String {
    let kept: String = text.chars().take(MAX_ECHO_CHARS).collect();
    let mut out = Vec::new();
    escape_into(&kept.replace('\\', "\\\\"), &mut out, usize::MAX);
    if kept.len() < text.len() {
        out.extend_from_slice(b"...");
    }
    String::from_utf8(out).expect("escape_into writes printable ASCII")
}

/// The replies the session itself gives; the handler decides the final reply to DATA.
pub mod std_replies {
    use super::Reply;

    pub fn ok() -> Reply {
        Reply::new(250, [2, 0, 0], "OK")
    }
    pub fn bad_sequence(what: &str) -> Reply {
        Reply::new(503, [5, 5, 1], what)
    }
    pub fn syntax(what: impl Into<String>) -> Reply {
        Reply::new(501, [5, 5, 4], what)
    }
    pub fn line_too_long(limit: usize) -> Reply {
        Reply::new(
            500,
            [5, 5, 2],
            format!("line too long: at most {limit} bytes per command line"),
        )
    }
    pub fn bare_lf_command() -> Reply {
        Reply::new(
            500,
            [5, 5, 2],
            "command line must end with CRLF (bare LF or CR refused)",
        )
    }
    pub fn shutting_down() -> Reply {
        Reply::new(421, [4, 3, 2], "service shutting down, try again later")
    }
    pub fn too_many_client_connections() -> Reply {
        Reply::new(421, [4, 7, 0], "too many connections from your address")
    }
    pub fn message_rate(per_minute: u32) -> Reply {
        Reply::new(
            450,
            [4, 7, 1],
            format!(
                "too many messages from your address: the message rate limit is {per_minute} a \
                 minute, try again later"
            ),
        )
    }
    pub fn junk_commands() -> Reply {
        Reply::new(
            421,
            [4, 7, 0],
            "too many junk commands (NOOP, RSET, VRFY, HELP, unknown), closing connection",
        )
    }
    pub fn command_deadline() -> Reply {
        Reply::new(
            421,
            [4, 4, 2],
            "command line not complete in time, closing connection",
        )
    }
    pub fn data_deadline() -> Reply {
        Reply::new(
            421,
            [4, 4, 2],
            "message data not received in time (too slow), closing connection",
        )
    }
    pub fn shed() -> Reply {
        Reply::new(
            421,
            [4, 7, 0],
            "server busy and your address holds the most connections: closing this idle one, \
             try again later",
        )
    }
    pub fn too_many_connections() -> Reply {
        Reply::new(421, [4, 3, 2], "too many connections, try again later")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_and_control_characters() {
        let mut out = Vec::new();
        Reply::new(250, [2, 0, 0], "a\nb\rc").write_to(&mut out);
        assert_eq!(out, b"250-2.0.0 a\r\n250 2.0.0 b\\x0Dc\r\n");
    }

    #[test]
    fn non_ascii_is_escaped_once() {
        let mut out = Vec::new();
        Reply::new(550, [5, 1, 1], "<\u{e9}\u{7f}\t>").write_to(&mut out);
        assert_eq!(out, b"550 5.1.1 <\\xC3\\xA9\\x7F\\x09>\r\n");
        let mut twice = Vec::new();
        Reply::new(550, [5, 1, 1], echo("\\x41\u{e9}")).write_to(&mut twice);
        assert_eq!(twice, b"550 5.1.1 \\\\x41\\xC3\\xA9\r\n");
    }

    #[test]
    fn a_line_is_cut_to_512_bytes_between_escapes() {
        let mut out = Vec::new();
        let text = format!("{}\u{e9}{}", "a".repeat(496), "b".repeat(600));
        Reply::new(550, [5, 6, 0], text).write_to(&mut out);
        // 10 bytes of code, 496 + "..." + CRLF: the escape of é did not fit whole.
        let want = format!("550 5.6.0 {}...\r\n", "a".repeat(496));
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let mut out = Vec::new();
        Reply::new(250, [2, 0, 0], "x".repeat(500)).write_to(&mut out);
        assert_eq!(out.len(), MAX_LINE_LEN);
        assert!(out.ends_with(b"xxx\r\n"), "500 fit whole");
    }

    #[test]
    fn echo_keeps_one_line_and_is_bounded() {
        assert_eq!(echo("a\r\nb"), "a\\x0D\\x0Ab");
        let long = "\u{e9}".repeat(MAX_ECHO_CHARS + 1);
        let shown = echo(&long);
        assert_eq!(shown, format!("{}...", "\\xC3\\xA9".repeat(MAX_ECHO_CHARS)));
    }
}
