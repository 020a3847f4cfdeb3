//! The DATA phase: receiving the message text up to its end mark.
//!
//! This is written here rather than taken from `smtp-proto` because the rules are the security
//! boundary of the buffer (SMTP smuggling) and the library's receiver does not see a `.` on the very
//! first line of DATA as a line start. The rules, all from RFC 5321 §4.1.1.4 and §4.5.2:
//! - the end mark is `CRLF . CRLF` only, where the first CRLF may be the end of the DATA command
//!   itself (so a `.` alone as the first line is an empty message);
//! - a line beginning with `.` loses that first `.` (dot-unstuffing);
//! - a bare LF or bare CR anywhere, or a NUL byte, makes the whole message refused. A bare LF
//!   never starts a line, so `LF . CRLF` or `CRLF . LF` can never end the data: whatever a client
//!   hides behind such a mark stays inside the refused message instead of becoming commands;
//! - the message and each line are bounded; past a bound the text is scanned and discarded.

/// Why a received message is refused. The first problem found is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    BareLf,
    BareCr,
    Nul,
    LineTooLong,
    TooLarge,
}

/// Where the receiver is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    LineStart,
    /// Saw a `.` at the start of a line.
    Dot,
    /// Saw `.` CR at the start of a line: an LF now ends the data.
    DotCr,
    InLine,
    /// Saw a CR inside a line: only an LF may follow.
    Cr,
}

/// Incremental DATA receiver: feed it what arrives, it says when the end mark was seen.
#[derive(Debug)]
pub struct DataReceiver {
    message: Vec<u8>,
    position: Position,
    line_len: usize,
    scanned: usize,
    max_message: usize,
    max_line: usize,
    error: Option<DataError>,
}

/// What one call to [`DataReceiver::ingest`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed, the end mark not seen yet.
    NeedMore,
    /// The end mark was seen after `consumed` bytes of the input.
    Done { consumed: usize },
    /// The client sent far more than any message may hold without an end mark: give up on it.
    Flood,
}

impl DataReceiver {
    pub fn new(max_message: usize, max_line: usize) -> Self {
        assert!(max_line >= 3, "a line holds at least `.` CRLF");
        DataReceiver {
            message: Vec::with_capacity(max_message.min(16 * 1024)),
            position: Position::LineStart,
            line_len: 0,
            scanned: 0,
            max_message,
            max_line,
            error: None,
        }
    }

    pub fn ingest(&mut self, input: &[u8]) -> Progress {
        for (i, &byte) in input.iter().enumerate() {
            self.scanned += 1;
            match self.position {
                Position::LineStart if byte == b'.' => {
                    self.position = Position::Dot;
                    self.line_len = 1;
                }
                Position::Dot if byte == b'\r' => self.position = Position::DotCr,
                Position::DotCr if byte == b'\n' => return Progress::Done { consumed: i + 1 },
                Position::DotCr => {
                    // `.` CR then anything but LF: a bare CR on a dot-stuffed line.
                    self.fail(DataError::BareCr);
                    self.store(b'\r');
                    self.in_line(byte);
                }
                Position::LineStart | Position::Dot | Position::InLine => self.in_line(byte),
                Position::Cr if byte == b'\n' => {
                    self.store(b'\r');
                    self.store(b'\n');
                    self.position = Position::LineStart;
                    self.line_len = 0;
                }
                Position::Cr => {
                    self.fail(DataError::BareCr);
                    self.store(b'\r');
                    self.in_line(byte);
                }
            }
        }
        // Past twice the size limit with no end mark in sight, the client is not sending mail.
        if self.scanned > self.max_message.saturating_mul(2).saturating_add(1 << 20) {
            return Progress::Flood;
        }
        Progress::NeedMore
    }

    /// The received message (dot-unstuffed, ending with the CRLF before the end mark), or why it
    /// is refused.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.message),
        }
    }

    fn in_line(&mut self, byte: u8) {
        match byte {
            b'\r' => {
                self.position = Position::Cr;
                return;
            }
            // A bare LF does not start a new line: `LF . CRLF` must never end the data.
            b'\n' => self.fail(DataError::BareLf),
            0 => self.fail(DataError::Nul),
            _ => {}
        }
        self.position = Position::InLine;
        self.store(byte);
    }

    fn store(&mut self, byte: u8) {
        self.line_len += 1;
        if self.line_len > self.max_line {
            self.fail(DataError::LineTooLong);
        }
        if self.message.len() >= self.max_message {
            self.fail(DataError::TooLarge);
        }
        if self.error.is_none() {
            self.message.push(byte);
        } else if !self.message.is_empty() {
            // A refused message is never stored: free it now rather than at the end mark.
            self.message = Vec::new();
        }
    }

    fn fail(&mut self, error: DataError) {
        // Oversize is reported in preference to anything else: the client may retry smaller.
        if self.error.is_none() || error == DataError::TooLarge {
            self.error = Some(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(input: &[u8]) -> (Result<Vec<u8>, DataError>, usize) {
        let mut rx = DataReceiver::new(1000, 100);
        match rx.ingest(input) {
            Progress::Done { consumed } => (rx.finish(), consumed),
            other => panic!("no end mark in {input:?}: {other:?}"),
        }
    }

    #[test]
    fn dot_alone_as_first_line_is_an_empty_message() {
        assert_eq!(receive(b".\r\nMAIL"), (Ok(vec![]), 3));
    }

    #[test]
    fn double_dot_first_line_is_unstuffed() {
        assert_eq!(receive(b"..\r\n.\r\n").0, Ok(b".\r\n".to_vec()));
        assert_eq!(receive(b"a\r\n..b\r\n.\r\n").0, Ok(b"a\r\n.b\r\n".to_vec()));
    }

    #[test]
    fn body_ending_without_crlf_does_not_end_data() {
        let mut rx = DataReceiver::new(1000, 100);
        assert_eq!(rx.ingest(b"abc.\r\n"), Progress::NeedMore);
        assert_eq!(rx.ingest(b".\r\n"), Progress::Done { consumed: 3 });
        assert_eq!(rx.finish(), Ok(b"abc.\r\n".to_vec()));
    }

    #[test]
    fn split_at_every_byte_gives_the_same_result() {
        let input = b"From: a\r\n\r\n..x\r\nline\r\n.\r\n";
        let whole = receive(input).0;
        let mut rx = DataReceiver::new(1000, 100);
        for (i, b) in input.iter().enumerate() {
            let p = rx.ingest(std::slice::from_ref(b));
            assert_eq!(p == (Progress::Done { consumed: 1 }), i + 1 == input.len());
        }
        assert_eq!(rx.finish(), whole);
    }

    #[test]
    fn smuggling_marks_do_not_end_data() {
        for mark in [
            &b"\n.\r\n"[..],
            b"\r\n.\n",
            b"\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
        ] {
            let mut input = b"x".to_vec();
            input.extend_from_slice(mark);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            let mut rx = DataReceiver::new(1000, 100);
            assert_eq!(rx.ingest(&input), Progress::NeedMore, "{mark:?} ended data");
            assert!(matches!(rx.ingest(b"\r\n.\r\n"), Progress::Done { .. }));
            assert!(rx.finish().is_err(), "{mark:?} accepted");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(receive(b"a\nb\r\n.\r\n").0, Err(DataError::BareLf));
        assert_eq!(receive(b"a\rb\r\n.\r\n").0, Err(DataError::BareCr));
        assert_eq!(receive(b"a\0b\r\n.\r\n").0, Err(DataError::Nul));
        let long = [b"x".repeat(200), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(receive(&long).0, Err(DataError::LineTooLong));
        let big = b"0123456789\r\n".repeat(100);
        assert_eq!(
            receive(&[big, b".\r\n".to_vec()].concat()).0,
            Err(DataError::TooLarge)
        );
    }

    #[test]
    fn endless_line_is_a_flood_not_a_memory_leak() {
        let mut rx = DataReceiver::new(1000, 100);
        let chunk = vec![b'x'; 64 * 1024];
        let mut progress = Progress::NeedMore;
        for _ in 0..100 {
            progress = rx.ingest(&chunk);
            if progress != Progress::NeedMore {
                break;
            }
        }
        assert_eq!(progress, Progress::Flood);
        assert!(rx.message.capacity() <= 16 * 1024);
    }

    proptest::proptest! {
        /// Dot-stuffing any CRLF text and framing it gives back exactly that text.
        #[test]
        fn stuffed_text_round_trips(lines in proptest::collection::vec("[ -~]{0,60}", 0..30)) {
            let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            let mut framed = String::new();
            for line in &lines {
                if line.starts_with('.') {
                    framed.push('.');
                }
                framed.push_str(line);
                framed.push_str("\r\n");
            }
            framed.push_str(".\r\n");
            let mut rx = DataReceiver::new(1 << 20, 1000);
            proptest::prop_assert_eq!(rx.ingest(framed.as_bytes()), Progress::Done { consumed: framed.len() });
            proptest::prop_assert_eq!(rx.finish(), Ok(text.into_bytes()));
        }
    }
}
