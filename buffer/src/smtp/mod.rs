//! A small, strict SMTP server (RFC 5321 server side) that hands each received message to a
//! [`MessageHandler`] and sends the handler's reply as the answer to end-of-data.
//!
//! It is shared by the buffer (whose handler stores requests durably) and by the harness (whose ack
//! sink and handover sink record what they receive), so there is one SMTP server to get right.
//! One file per protocol phase: [`session`] owns the connection loop and command dispatch,
//! [`ehlo`], [`mail`], [`rcpt`] and [`data`] own the rules of their command.
//!
//! Every resource is bounded by [`SmtpLimits`]: connections, line length, message size,
//! recipients, and idle time in each phase.

mod data;
mod ehlo;
mod mail;
mod rcpt;
mod reply;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use data::{DataError, DataReceiver, Progress};
pub use reply::{Reply, std_replies};

/// The bounds of the SMTP server. `Default` gives the values documented in
/// `buffer/barrage.example.toml`.
#[derive(Debug, Clone)]
pub struct SmtpLimits {
    /// Name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted (advertised with SIZE; larger gets 552).
    pub max_message_size: usize,
    /// Longest command line or message line, CRLF included (RFC 5321 says 1000 for text lines).
    pub max_line_length: usize,
    /// Most RCPT TO per transaction (more get 452).
    pub max_recipients: usize,
    /// Most simultaneous connections (more get 421 and are closed).
    pub max_connections: usize,
    /// How long a client may stay silent while a command is due.
    pub command_timeout: Duration,
    /// How long a client may stay silent inside DATA.
    pub data_timeout: Duration,
    /// Most commands in one session (bounds a pipelining flood on one connection).
    pub max_commands: usize,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            hostname: "barrage.localhost".into(),
            max_message_size: 1024 * 1024,
            max_line_length: 1000,
            max_recipients: 10,
            max_connections: 20_000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(120),
            max_commands: 100_000,
        }
    }
}

/// The envelope of one mail transaction.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub peer: SocketAddr,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// MAIL FROM address; empty for the null reverse-path `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

/// What the server does with a received message.
pub trait MessageHandler: Send + Sync + 'static {
    /// Called once per message after its end mark, with the dot-unstuffed text (CRLF line ends,
    /// no bare LF/CR/NUL, within the size limit). The reply is sent as the answer to DATA: the
    /// handler must not answer success before the message is safe.
    fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> impl Future<Output = Reply> + Send;

    /// Asked at MAIL FROM, before any data: `Err(reply)` refuses the transaction (a full disk).
    fn admit(&self) -> Result<(), Reply> {
        Ok(())
    }
}

/// Serves SMTP on `listener` until `shutdown` completes; then stops accepting, lets transactions in
/// flight finish (idle sessions are told 421), and returns once every session has ended or after
/// a grace period of `limits.data_timeout`.
pub async fn serve<H: MessageHandler>(
    listener: TcpListener,
    limits: Arc<SmtpLimits>,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let mut failures = crate::descriptors::AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep serving.
                    failures.record("SMTP", &e);
                    tokio::time::sleep(crate::descriptors::ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let session = session::Session::new(
                    stream,
                    peer,
                    limits.clone(),
                    handler.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    session.run().await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(session::refuse(stream, std_replies::too_many_connections()));
            }
        }
    }
    drop(listener);
    stop.cancel();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(limits.data_timeout, slots.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!(
            "some SMTP sessions were still open at the end of the shutdown grace period"
        );
    }
    Ok(())
}
