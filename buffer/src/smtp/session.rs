//! One SMTP connection: reading command lines, dispatching them to the phase that owns them,
//! running the DATA phase, and writing replies.
//!
//! Replies are queued and written only when the session is about to wait for input, which is what
//! makes PIPELINING work (RFC 2920) and keeps the output bounded by what one read brought in.
//!
//! Time is bounded by deadlines, never by timeouts that restart with every read (contract: Fair
//! intake): a command line must be complete `command_timeout` after the session began waiting
//! for it, and DATA by its own deadline (see [`SmtpLimits::min_data_rate`]), so a client
//! trickling a byte at a time cannot hold a connection for ever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::data::{DataError, DataReceiver, Progress};
use super::reply::{Reply, echo, std_replies};
use super::stream::Stream;
use super::{Envelope, MessageHandler, SmtpLimits};
use crate::anvil::{Lease, Refusal};
use crate::tls::TlsInfo;

/// Bad commands tolerated in one session before it is closed (a client speaking something else).
const MAX_ERRORS: usize = 20;
const READ_CHUNK: usize = 16 * 1024;

/// The state of the mail transaction in progress (RFC 5321 §3.3).
#[derive(Debug, Default)]
pub(super) struct Transaction {
    pub(super) helo: Option<String>,
    pub(super) mail_from: Option<String>,
    pub(super) rcpt_to: Vec<String>,
}

impl Transaction {
    pub(super) fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }
}

/// What the dispatcher tells the loop to do next.
enum Next {
    Continue,
    ReceiveData,
    StartTls,
    Close,
}

/// Why waiting for input ended without input.
enum Wait {
    Eof,
    Deadline,
    Stop,
    /// The server sheds load and this idle session's client holds the most connections.
    Shed,
}

/// What the session is waiting for, which decides what may interrupt the wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between commands, nothing pending: shutdown and load shedding may close the session.
    Idle,
    /// Inside a command line: shutdown may close the session (no transaction is cut).
    Partial,
    /// Inside DATA, or discarding an overlong line: only the deadline or the client ends it.
    Data,
}

pub(super) struct Session<H> {
    pub(super) stream: Stream,
    pub(super) peer: SocketAddr,
    pub(super) limits: Arc<SmtpLimits>,
    pub(super) handler: Arc<H>,
    stop: CancellationToken,
    pub(super) input: Vec<u8>,
    /// Start of the unprocessed part of `input`.
    pub(super) pos: usize,
    output: Vec<u8>,
    pub(super) tx: Transaction,
    commands: usize,
    pub(super) errors: usize,
    /// Junk commands since the last accepted message.
    junk: usize,
    /// The client's per-address counters; `None` when it is exempt.
    lease: Option<Lease>,
    /// What STARTTLS negotiated; `None` while the session is plain text.
    pub(super) tls_info: Option<TlsInfo>,
}

/// Tells a connection it cannot be served and closes it.
pub(super) async fn refuse(mut stream: TcpStream, reply: Reply) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
}

impl<H: MessageHandler> Session<H> {
    pub(super) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        limits: Arc<SmtpLimits>,
        handler: Arc<H>,
        stop: CancellationToken,
        lease: Option<Lease>,
    ) -> Self {
        Session {
            stream: Stream::Plain(stream),
            peer,
            limits,
            handler,
            stop,
            input: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            output: Vec::new(),
            tx: Transaction::default(),
            commands: 0,
            errors: 0,
            junk: 0,
            lease,
            tls_info: None,
        }
    }

    pub(super) async fn run(mut self) {
        let greeting = format!("{} ESMTP barrage", self.limits.hostname);
        self.queue(Reply::plain(220, greeting));
        if let Err(e) = self.serve_commands().await {
            tracing::debug!(peer = %self.peer, "session ended: {e}");
        }
    }

    async fn serve_commands(&mut self) -> std::io::Result<()> {
        loop {
            let Some(line) = self.next_line().await? else {
                return Ok(());
            };
            self.commands += 1;
            if self.commands > self.limits.max_commands {
                self.queue(Reply::new(
                    421,
                    [4, 7, 0],
                    "too many commands in one session",
                ));
                return self.flush().await;
            }
            let next = match line {
                Ok(line) => self.dispatch(&line),
                Err(reply) => {
                    self.queue(reply);
                    Next::Continue
                }
            };
            match next {
                Next::Continue => {}
                Next::Close => return self.flush().await,
                Next::StartTls => self.start_tls().await?,
                Next::ReceiveData => {
                    if !self.receive_data().await? {
                        return self.flush().await;
                    }
                }
            }
            if self.errors >= MAX_ERRORS {
                self.queue(Reply::new(
                    421,
                    [4, 7, 0],
                    "too many errors, closing connection",
                ));
                return self.flush().await;
            }
        }
    }

    /// The next complete command line, or the reply refusing it; `None` when the session is over.
    async fn next_line(&mut self) -> std::io::Result<Option<Result<Vec<u8>, Reply>>> {
        let max = self.limits.max_line_length;
        let deadline = Instant::now() + self.limits.command_timeout;
        loop {
            let pending = &self.input[self.pos..];
            if let Some(lf) = pending.iter().position(|&b| b == b'\n') {
                let line = pending[..=lf].to_vec();
                self.pos += lf + 1;
                if line.len() > max {
                    self.errors += 1;
                    return Ok(Some(Err(std_replies::line_too_long(max))));
                }
                let body = &line[..line.len() - 1];
                if body.last() != Some(&b'\r') || body[..body.len() - 1].contains(&b'\r') {
                    self.errors += 1;
                    return Ok(Some(Err(std_replies::bare_lf_command())));
                }
                return Ok(Some(Ok(line)));
            }
            if pending.len() > max {
                // An endless line: drop what we have, keep dropping up to its LF, then refuse it.
                self.discard_line(deadline).await?;
                self.errors += 1;
                return Ok(Some(Err(std_replies::line_too_long(max))));
            }
            let phase = if pending.is_empty() {
                Phase::Idle
            } else {
                Phase::Partial
            };
            self.flush().await?;
            let (why, reply) = match self.read_more(deadline, phase).await? {
                None => continue,
                Some(Wait::Eof) => return Ok(None),
                Some(Wait::Deadline) => (
                    Some(Refusal::CommandDeadline),
                    std_replies::command_deadline(),
                ),
                Some(Wait::Stop) => (None, std_replies::shutting_down()),
                Some(Wait::Shed) => (Some(Refusal::StressShed), std_replies::shed()),
            };
            if let Some(why) = why {
                self.handler.refused(why);
            }
            self.queue(reply);
            self.flush().await?;
            return Ok(None);
        }
    }

    async fn discard_line(&mut self, deadline: Instant) -> std::io::Result<()> {
        loop {
            if let Some(lf) = self.input[self.pos..].iter().position(|&b| b == b'\n') {
                self.pos += lf + 1;
                return Ok(());
            }
            self.input.clear();
            self.pos = 0;
            if self.read_more(deadline, Phase::Data).await?.is_some() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads more input. Returns `None` when bytes arrived, or why none did.
    async fn read_more(
        &mut self,
        deadline: Instant,
        phase: Phase,
    ) -> std::io::Result<Option<Wait>> {
        if self.pos > 0 && self.pos * 2 >= self.input.len() {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.reserve(READ_CHUNK);
        let idle = phase == Phase::Idle;
        let stopped = async {
            if phase != Phase::Data {
                self.stop.cancelled().await
            } else {
                std::future::pending().await
            }
        };
        let shed = async {
            match &self.lease {
                Some(lease) if idle => lease.shed_signal().notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            read = self.stream.read_buf(&mut self.input) => match read? {
                0 => Ok(Some(Wait::Eof)),
                _ => Ok(None),
            },
            _ = tokio::time::sleep_until(deadline) => Ok(Some(Wait::Deadline)),
            _ = stopped => Ok(Some(Wait::Stop)),
            _ = shed => Ok(Some(Wait::Shed)),
        }
    }

    fn dispatch(&mut self, line: &[u8]) -> Next {
        let request = Request::parse(&mut line.iter());
        if is_junk(&request) {
            self.junk += 1;
            if self.junk > self.limits.max_junk_commands {
                self.handler.refused(Refusal::JunkCommands);
                self.queue(std_replies::junk_commands());
                return Next::Close;
            }
        }
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                self.errors += 1;
                self.queue(parse_error_reply(e));
                return Next::Continue;
            }
        };
        match request {
            Request::Ehlo { host } => self.handle_ehlo(&host, true),
            Request::Helo { host } => self.handle_ehlo(&host, false),
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => self.handle_rcpt(to),
            Request::Data => return self.handle_data_command(),
            Request::StartTls => {
                if self.handle_starttls() {
                    return Next::StartTls;
                }
            }
            Request::Rset => {
                self.tx.reset();
                self.queue(std_replies::ok());
            }
            Request::Noop { .. } => self.queue(std_replies::ok()),
            Request::Vrfy { .. } => self.queue(Reply::new(
                252,
                [2, 5, 0],
                "cannot verify users, but will take the message",
            )),
            Request::Help { .. } => self.queue(Reply::new(
                214,
                [2, 0, 0],
                "barrage takes request mails: EHLO, MAIL FROM, RCPT TO, DATA, QUIT",
            )),
            Request::Quit => {
                self.queue(Reply::new(221, [2, 0, 0], "bye"));
                return Next::Close;
            }
            other => {
                self.errors += 1;
                self.queue(Reply::new(
                    502,
                    [5, 5, 1],
                    format!("{} is not implemented here", other.name()),
                ));
            }
        }
        Next::Continue
    }

    fn handle_data_command(&mut self) -> Next {
        if self.tx.mail_from.is_none() {
            self.queue(std_replies::bad_sequence("MAIL FROM first"));
            return Next::Continue;
        }
        if self.tx.rcpt_to.is_empty() {
            self.queue(Reply::new(554, [5, 5, 1], "no valid recipients"));
            return Next::Continue;
        }
        self.queue(Reply::plain(354, "end data with <CR><LF>.<CR><LF>"));
        Next::ReceiveData
    }

    /// Runs the DATA phase and answers it. Returns false when the session must close.
    async fn receive_data(&mut self) -> std::io::Result<bool> {
        let mut receiver =
            DataReceiver::new(self.limits.max_message_size, self.limits.max_line_length);
        let mut deadline = DataDeadline::new(&self.limits);
        loop {
            let pending = self.input.len() - self.pos;
            let progress = receiver.ingest(&self.input[self.pos..]);
            match progress {
                Progress::Done { consumed } => {
                    self.pos += consumed;
                    break;
                }
                Progress::Flood => {
                    self.queue(too_large_reply(self.limits.max_message_size));
                    return Ok(false);
                }
                Progress::NeedMore => {
                    deadline.received(pending);
                    self.input.clear();
                    self.pos = 0;
                }
            }
            self.flush().await?;
            match self.read_more(deadline.at(), Phase::Data).await? {
                None => {}
                Some(Wait::Deadline) => {
                    self.handler.refused(Refusal::DataDeadline);
                    self.queue(std_replies::data_deadline());
                    return Ok(false);
                }
                Some(_) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            }
        }
        let reply = match receiver.finish() {
            Ok(message) => {
                let envelope = Envelope {
                    peer: self.peer,
                    helo: self.tx.helo.clone().unwrap_or_default(),
                    mail_from: self.tx.mail_from.clone().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut self.tx.rcpt_to),
                    tls: self.tls_info.clone(),
                };
                self.handler.deliver(&envelope, message).await
            }
            Err(e) => data_error_reply(e, &self.limits),
        };
        if reply.is_success() {
            // A client that gets its messages through is not sending junk.
            self.junk = 0;
        }
        self.tx.reset();
        self.queue(reply);
        Ok(true)
    }

    pub(super) fn handler(&self) -> &H {
        &self.handler
    }

    /// The client's per-address counters, when it has them (not exempt).
    pub(super) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    pub(super) fn queue(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            let write = self.stream.write_all(&self.output);
            match tokio::time::timeout(self.limits.command_timeout, write).await {
                Ok(result) => result?,
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
            self.output.clear();
        }
        Ok(())
    }
}

/// The deadline of one DATA phase: `data_timeout` after it began, one second later for every
/// `min_data_rate` bytes received, and never later than `max_data_time` after it began.
struct DataDeadline {
    start: Instant,
    received: usize,
    grace: Duration,
    min_rate: usize,
    cap: Duration,
}

impl DataDeadline {
    fn new(limits: &SmtpLimits) -> Self {
        DataDeadline {
            start: Instant::now(),
            received: 0,
            grace: limits.data_timeout,
            min_rate: limits.min_data_rate,
            cap: limits.max_data_time,
        }
    }

    fn received(&mut self, bytes: usize) {
        self.received = self.received.saturating_add(bytes);
    }

    fn at(&self) -> Instant {
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(self.received as f64 / rate as f64),
        };
        self.start + (self.grace.saturating_add(earned)).min(self.cap)
    }
}

fn too_large_reply(max: usize) -> Reply {
    Reply::new(
        552,
        [5, 3, 4],
        format!("message too large: at most {max} bytes"),
    )
}

fn data_error_reply(error: DataError, limits: &SmtpLimits) -> Reply {
    let text = match error {
        DataError::TooLarge => return too_large_reply(limits.max_message_size),
        DataError::BareLf => "bare LF in message data refused: every line must end with CRLF",
        DataError::BareCr => "bare CR in message data refused: every line must end with CRLF",
        DataError::Nul => "NUL byte in message data refused",
        DataError::LineTooLong => {
            return Reply::new(
                550,
                [5, 6, 0],
                format!(
                    "message line too long: at most {} bytes per line",
                    limits.max_line_length
                ),
            );
        }
    };
    Reply::new(550, [5, 6, 0], text)
}

/// Whether a command is junk (contract: Fair intake): it moves no mail transaction forward.
fn is_junk<T>(request: &Result<Request<T>, ParseError>) -> bool {
    match request {
        Ok(request) => !matches!(
            request,
            Request::Ehlo { .. }
                | Request::Helo { .. }
                | Request::Mail { .. }
                | Request::Rcpt { .. }
                | Request::Data
                | Request::StartTls
                | Request::Quit
        ),
        Err(e) => matches!(e, ParseError::UnknownCommand),
    }
}

fn parse_error_reply(error: ParseError) -> Reply {
    match error {
        ParseError::UnknownCommand => Reply::new(500, [5, 5, 1], "unrecognized command"),
        ParseError::InvalidSenderAddress => Reply::new(501, [5, 1, 7], "bad sender address syntax"),
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, [5, 1, 3], "bad recipient address syntax")
        }
        ParseError::SyntaxError { syntax } => {
            Reply::new(501, [5, 5, 4], format!("syntax: {syntax}"))
        }
        ParseError::InvalidParameter { param } => {
            Reply::new(501, [5, 5, 4], format!("invalid parameter {param}"))
        }
        ParseError::UnsupportedParameter { param } => Reply::new(
            555,
            [5, 5, 4],
            format!("unsupported parameter {}", echo(&param)),
        ),
        ParseError::ResponseTooLong => Reply::new(500, [5, 5, 2], "line too long"),
        ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
            Reply::new(500, [5, 5, 2], "syntax error")
        }
    }
}
