//! The SMTP client side of one connection: greeting, EHLO, the envelope (pipelined when the
//! server offers PIPELINING), the message, and reading replies.
//!
//! Replies are parsed by `smtp-proto` (the library the buffer uses), never by hand. Every wait is
//! bounded by the reply timeout and by the run's deadline. The connection never retries on its
//! own: the caller decides what a failure means for the request. With STARTTLS (a group's
//! `starttls = true`) the connection upgrades right after the first EHLO and says EHLO again.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EXT_PIPELINING, EhloResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::either::Either;

use super::tls::{ClientTls, Stream};

/// Longest reply we accept (smtp-proto's own limit is 4 KiB per reply).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Why a connection could not go on.
#[derive(Debug)]
pub enum SmtpError {
    /// Connecting failed or the connection broke.
    Io(std::io::Error),
    /// No reply within the reply timeout (or before the run's deadline).
    Timeout,
    /// The server closed the connection.
    Closed,
    /// The server sent something that is not an SMTP reply.
    Protocol(String),
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpError::Io(e) => write!(f, "connection error: {e}"),
            SmtpError::Timeout => write!(f, "no reply in time"),
            SmtpError::Closed => write!(f, "connection closed by the server"),
            SmtpError::Protocol(what) => write!(f, "not an SMTP reply: {what}"),
        }
    }
}

impl From<std::io::Error> for SmtpError {
    fn from(e: std::io::Error) -> Self {
        SmtpError::Io(e)
    }
}

/// A reply: code and text (lines joined with `\n`), as smtp-proto parsed it.
pub type Reply = Response<String>;

/// Formats a reply as its first line reads on the wire, e.g. `250 2.0.0 queued as ticket 4`.
pub fn reply_text(reply: &Reply) -> String {
    let first = reply.message.lines().next().unwrap_or("");
    if reply.esc[0] != 0 {
        format!(
            "{} {}.{}.{} {}",
            reply.code, reply.esc[0], reply.esc[1], reply.esc[2], first
        )
    } else {
        format!("{} {}", reply.code, first)
    }
}

/// One open SMTP connection, past the greeting and EHLO.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    receiver: ResponseReceiver,
    /// The server offered PIPELINING.
    pub pipelining: bool,
    reply_timeout: Duration,
    deadline: Instant,
    /// Every write trickled at this many bytes a second (a slowloris), if set.
    trickle: Option<u64>,
    /// How long the STARTTLS handshake took, when the connection did one.
    tls_handshake: Option<Duration>,
}

/// Where and how a connection is opened.
#[derive(Debug, Clone, Copy)]
pub struct Dial<'a> {
    pub target: SocketAddr,
    /// The local address the socket binds to before connecting (port chosen by the system).
    pub source: Option<IpAddr>,
    pub helo: &'a str,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
    pub deadline: Instant,
    /// Trickle every write (EHLO included) at this many bytes a second.
    pub trickle: Option<u64>,
    /// STARTTLS after the first EHLO, with this client side.
    pub tls: Option<&'a ClientTls>,
}

/// Connects to `target`, from `source` when given.
async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(target).await;
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(target).await
}

/// How opening a connection ended when the server answered but refused us.
pub enum Opened {
    Ready(Connection),
    /// The greeting or EHLO/HELO was refused (e.g. `421 too many connections`).
    Refused(Reply),
}

impl Connection {
    /// Connects, reads the greeting and says EHLO (HELO if EHLO is refused with a 5xx).
    pub async fn open(
        target: SocketAddr,
        helo: &str,
        connect_timeout: Duration,
        reply_timeout: Duration,
        deadline: Instant,
    ) -> Result<Opened, SmtpError> {
        Connection::dial(Dial {
            target,
            source: None,
            helo,
            connect_timeout,
            reply_timeout,
            deadline,
            trickle: None,
            tls: None,
        })
        .await
    }

    /// [`Connection::open`] from a chosen source address, optionally trickling every write.
    pub async fn dial(dial: Dial<'_>) -> Result<Opened, SmtpError> {
        let Dial {
            target,
            source,
            helo,
            connect_timeout,
            reply_timeout,
            deadline,
            trickle,
            tls,
        } = dial;
        let limit = (Instant::now() + connect_timeout).min(deadline);
        let stream = match tokio::time::timeout_at(limit, connect(target, source)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(SmtpError::Timeout),
        };
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream: Either::Left(stream),
            buf: Vec::with_capacity(1024),
            pos: 0,
            receiver: ResponseReceiver::default(),
            pipelining: false,
            reply_timeout,
            deadline,
            trickle,
            tls_handshake: None,
        };
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Ok(Opened::Refused(greeting));
        }
        if let Err(refused) = conn.greet(helo).await? {
            return Ok(Opened::Refused(refused));
        }
        let Some(tls) = tls else {
            return Ok(Opened::Ready(conn));
        };
        let ready = conn.command("STARTTLS").await?;
        if ready.code != 220 {
            return Ok(Opened::Refused(ready));
        }
        let mut conn = conn.upgrade(tls).await?;
        // RFC 3207 §4.2: the server forgot everything; EHLO again, inside TLS.
        if let Err(refused) = conn.greet(helo).await? {
            return Ok(Opened::Refused(refused));
        }
        Ok(Opened::Ready(conn))
    }

    /// Says EHLO (HELO if EHLO is refused with a 5xx); `Err(reply)` when the server refused.
    async fn greet(&mut self, helo: &str) -> Result<Result<(), Reply>, SmtpError> {
        self.write(format!("EHLO {helo}\r\n").as_bytes()).await?;
        let (reply, raw) = self.read_reply_raw().await?;
        if reply.code == 250 {
            // A reply smtp-proto cannot read as EHLO keywords just means no extensions.
            self.pipelining = EhloResponse::parse(&mut raw.iter())
                .is_ok_and(|ehlo| ehlo.has_capability(EXT_PIPELINING));
            return Ok(Ok(()));
        }
        if reply.code / 100 == 5 {
            self.pipelining = false;
            self.write(format!("HELO {helo}\r\n").as_bytes()).await?;
            let reply = self.read_reply().await?;
            return Ok(if reply.code == 250 {
                Ok(())
            } else {
                Err(reply)
            });
        }
        Ok(Err(reply))
    }

    /// The TLS handshake after the server's 220 to STARTTLS, within the reply timeout.
    async fn upgrade(self, tls: &ClientTls) -> Result<Connection, SmtpError> {
        let Either::Left(tcp) = self.stream else {
            return Err(SmtpError::Protocol("STARTTLS inside TLS".into()));
        };
        if self.pos < self.buf.len() {
            // Bytes after the 220 came in plain text: they cannot be the server's (CVE-2011-0411).
            return Err(SmtpError::Protocol("data after the 220 to STARTTLS".into()));
        }
        let begun = Instant::now();
        let limit = (begun + self.reply_timeout).min(self.deadline);
        let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
        let stream = match tokio::time::timeout_at(limit, handshake).await {
            Ok(stream) => stream?,
            Err(_) => return Err(SmtpError::Timeout),
        };
        Ok(Connection {
            stream: Either::Right(Box::new(stream)),
            buf: Vec::with_capacity(1024),
            pos: 0,
            receiver: ResponseReceiver::default(),
            pipelining: false,
            tls_handshake: Some(begun.elapsed()),
            ..self
        })
    }

    /// Whether [`Connection::try_write_now`] can write on this connection from any thread: plain
    /// TCP, not trickled.
    pub fn can_fire(&self) -> bool {
        matches!(self.stream, Either::Left(_)) && self.trickle.is_none()
    }

    /// Writes what the socket takes at once, without waiting and from any thread (the firing
    /// threads' write); an error when it takes nothing or the connection cannot be written so
    /// (see [`Connection::can_fire`]).
    pub fn try_write_now(&self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.stream {
            Either::Left(tcp) if self.trickle.is_none() => tcp.try_write(bytes),
            _ => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }

    /// The address this connection is open to: the buffer node it talks to (`None` once the
    /// server has gone).
    pub fn peer(&self) -> Option<SocketAddr> {
        let tcp = match &self.stream {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        };
        tcp.peer_addr().ok()
    }

    /// How long this connection's STARTTLS handshake took (`None`: it did none).
    pub fn tls_handshake(&self) -> Option<Duration> {
        self.tls_handshake
    }

    /// Writes bytes, bounded by the reply timeout and the deadline (trickled on a slowloris
    /// connection).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        match self.trickle {
            Some(rate) => self.write_slowly(bytes, rate).await,
            None => self.write_now(bytes).await,
        }
    }

    async fn write_now(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let limit = (Instant::now() + self.reply_timeout).min(self.deadline);
        match tokio::time::timeout_at(limit, self.stream.write_all(bytes)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SmtpError::Timeout),
        }
    }

    /// Writes bytes slowly: `rate` bytes a second, in chunks of a tenth of that (at least one
    /// byte), each its own segment (no delay: the connection is `TCP_NODELAY`).
    pub async fn write_slowly(&mut self, bytes: &[u8], rate: u64) -> Result<(), SmtpError> {
        let rate = rate.max(1);
        let chunk = (rate / 10).max(1);
        let pause = Duration::from_secs_f64(chunk as f64 / rate as f64);
        let mut next = Instant::now();
        for part in bytes.chunks(chunk as usize) {
            if next >= self.deadline {
                // Out of time at the deadline itself, not a chunk early, so the caller sees the
                // run is over and starts nothing new.
                tokio::time::sleep_until(self.deadline).await;
                return Err(SmtpError::Timeout);
            }
            tokio::time::sleep_until(next).await;
            self.write_now(part).await?;
            next += pause;
        }
        Ok(())
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, SmtpError> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Reads the next reply.
    pub async fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        self.next_reply(None).await
    }

    /// Reads the next reply and also returns its raw bytes (for EHLO keyword parsing).
    async fn read_reply_raw(&mut self) -> Result<(Reply, Vec<u8>), SmtpError> {
        let mut raw = Vec::new();
        let reply = self.next_reply(Some(&mut raw)).await?;
        Ok((reply, raw))
    }

    async fn next_reply(&mut self, mut raw: Option<&mut Vec<u8>>) -> Result<Reply, SmtpError> {
        let limit = (Instant::now() + self.reply_timeout).min(self.deadline);
        loop {
            if self.pos < self.buf.len() {
                let unread = &self.buf[self.pos..];
                let mut bytes = unread.iter();
                let parsed = self.receiver.parse(&mut bytes);
                let consumed = unread.len() - bytes.len();
                if let Some(raw) = raw.as_deref_mut() {
                    raw.extend_from_slice(&unread[..consumed]);
                }
                self.pos += consumed;
                match parsed {
                    Ok(reply) => {
                        self.receiver.reset();
                        return Ok(reply);
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        return Err(SmtpError::Protocol(format!("{e}")));
                    }
                }
            }
            // Everything buffered was consumed: refill.
            self.buf.clear();
            self.pos = 0;
            self.buf.resize(4096, 0);
            let read = tokio::time::timeout_at(limit, self.stream.read(&mut self.buf)).await;
            let n = match read {
                Ok(Ok(0)) => {
                    self.buf.clear();
                    return Err(SmtpError::Closed);
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    self.buf.clear();
                    return Err(e.into());
                }
                Err(_) => {
                    self.buf.clear();
                    return Err(SmtpError::Timeout);
                }
            };
            self.buf.truncate(n);
            if self.buf.capacity() > MAX_READ_BUFFER {
                self.buf.shrink_to(MAX_READ_BUFFER);
            }
        }
    }

    /// Sends the envelope — MAIL, RCPT and, if `data`, DATA — pipelined when the server offers
    /// it. Returns the first reply that is not the expected one (250 for MAIL/RCPT, 354 for
    /// DATA), or `None` if all went through. A refused transaction is reset with RSET.
    pub async fn envelope(
        &mut self,
        sender: &str,
        recipient: &str,
        data: bool,
    ) -> Result<Option<Reply>, SmtpError> {
        let mail = format!("MAIL FROM:<{sender}>\r\n");
        let rcpt = format!("RCPT TO:<{recipient}>\r\n");
        let mut refused = None;
        let mut in_data = false;
        if self.pipelining {
            let mut batch = Vec::with_capacity(mail.len() + rcpt.len() + 6);
            batch.extend_from_slice(mail.as_bytes());
            batch.extend_from_slice(rcpt.as_bytes());
            if data {
                batch.extend_from_slice(b"DATA\r\n");
            }
            self.write(&batch).await?;
            let expected: &[u16] = if data { &[250, 250, 354] } else { &[250, 250] };
            for (n, want) in expected.iter().enumerate() {
                let reply = self.read_reply().await?;
                let ok = if n == 1 {
                    reply.code / 100 == 2
                } else {
                    reply.code == *want
                };
                in_data = n == 2 && reply.code == 354;
                if !ok && refused.is_none() {
                    refused = Some(reply);
                }
            }
        } else {
            for (n, command) in [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"]
                .into_iter()
                .enumerate()
            {
                if n == 2 && !data {
                    break;
                }
                self.write(command).await?;
                let reply = self.read_reply().await?;
                let ok = match n {
                    0 => reply.code == 250,
                    1 => reply.code / 100 == 2,
                    _ => reply.code == 354,
                };
                if !ok {
                    refused = Some(reply);
                    break;
                }
            }
        }
        if refused.is_some() {
            if in_data {
                // DATA was accepted despite an earlier refusal (a broken pipeline): end it empty.
                self.write(b".\r\n").await?;
                self.read_reply().await?;
            }
            self.reset().await?;
        }
        Ok(refused)
    }

    /// Sends DATA alone (after a staged envelope); `Some(reply)` if it was not a 354.
    pub async fn data(&mut self) -> Result<Option<Reply>, SmtpError> {
        self.write(b"DATA\r\n").await?;
        self.data_reply().await
    }

    /// Reads the reply to a DATA already written; `Some(reply)` if it was not a 354.
    pub async fn data_reply(&mut self) -> Result<Option<Reply>, SmtpError> {
        let reply = self.read_reply().await?;
        if reply.code == 354 {
            Ok(None)
        } else {
            self.reset().await?;
            Ok(Some(reply))
        }
    }

    /// RSET, reply read and ignored.
    pub async fn reset(&mut self) -> Result<(), SmtpError> {
        self.write(b"RSET\r\n").await?;
        self.read_reply().await?;
        Ok(())
    }

    /// QUIT politely, waiting at most a second for the 221.
    pub async fn quit(mut self) {
        self.trickle = None;
        self.reply_timeout = self.reply_timeout.min(Duration::from_secs(1));
        self.deadline = self.deadline.max(Instant::now() + Duration::from_secs(1));
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply().await;
        }
    }

    /// Drops the connection at once without reading anything more: FIN after the data already
    /// written, so the server has the whole message, and no wait for its reply (RFC 1047).
    pub async fn drop_now(mut self) {
        let _ = self.stream.shutdown().await;
        drop(self.stream);
    }

    /// Waits until the server closes the connection (or the deadline passes), for idle
    /// connections. Anything the server says meanwhile is read and ignored.
    pub async fn hold_until(&mut self, until: Instant) -> bool {
        let mut scratch = [0u8; 512];
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut scratch)).await {
                Err(_) => return true,
                Ok(Ok(0)) | Ok(Err(_)) => return false,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// The message a buffer stores for `stuffed`, the data as written after DATA (dot-stuffed, ending
/// with the `.` line): the end mark dropped and every line's leading `..` back to `.`.
pub fn unstuffed(stuffed: &[u8]) -> Vec<u8> {
    let content = stuffed.strip_suffix(b".\r\n").unwrap_or(stuffed);
    let mut out = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// The ticket named in a success reply (`… ticket 42 …`, `ticket #42`, `ticket=42`), if any.
/// Lenient on purpose: a foreign buffer (Postfix) names none, and that is not an error.
pub fn parse_ticket(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("ticket") {
        let after = rest[at + 6..].trim_start_matches([' ', '#', ':', '=']);
        let digits: &str = &after[..after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len())];
        if !digits.is_empty() {
            return digits.parse().ok();
        }
        rest = &rest[at + 6..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_found_leniently() {
        assert_eq!(
            parse_ticket("2.0.0 queued as ticket 42 at 2026-12-01T09:00:00Z"),
            Some(42)
        );
        assert_eq!(parse_ticket("OK Ticket #7"), Some(7));
        assert_eq!(parse_ticket("2.0.0 Ok: queued as 4XyZ12"), None);
        assert_eq!(parse_ticket("ticketing ticket=9"), Some(9));
        assert_eq!(parse_ticket(""), None);
    }

    #[test]
    fn unstuffing_gives_back_the_message_without_its_end_mark() {
        assert_eq!(unstuffed(b"a\r\n..b\r\n.\r\n"), b"a\r\n.b\r\n");
        assert_eq!(unstuffed(b"..\r\n.\r\n"), b".\r\n");
    }
}
