//! SMTP replies: a code, an enhanced status code (RFC 3463) and a text.

use std::fmt::Write;

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

    /// Appends the wire form (`250-…\r\n250 …\r\n`) to `out`. Control characters in the text are
    /// replaced so no reply can ever carry a line break it did not mean to.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let mut wire = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let clean: String = line
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = write!(wire, "{}{}", self.code, sep);
            if let Some([a, b, c]) = self.esc {
                let _ = write!(wire, "{a}.{b}.{c} ");
            }
            let _ = write!(wire, "{clean}\r\n");
        }
        out.extend_from_slice(wire.as_bytes());
    }
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
        assert_eq!(out, b"250-2.0.0 a\r\n250 2.0.0 b c\r\n");
    }
}
