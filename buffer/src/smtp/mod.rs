//! A small, strict SMTP server (RFC 5321 server side) that hands each received message to a
//! [`MessageHandler`] and sends the handler's reply as the answer to end-of-data.
//!
//! It is shared by the buffer (whose handler stores requests durably) and by the harness (whose ack
//! sink and handover sink record what they receive), so there is one SMTP server to get right.
//! One file per protocol phase: [`session`] owns the connection loop and command dispatch,
//! [`ehlo`], [`mail`], [`rcpt`] and [`data`] own the rules of their command.
//!
//! Every resource is bounded by [`SmtpLimits`]: connections (in all and per client, with
//! [`crate::anvil`]), line length, message size, recipients, a deadline for each command line and
//! for DATA, junk commands; past a high-water mark of the connection limit, idle sessions of the
//! client holding the most connections are closed first (contract: Fair intake).

mod data;
mod ehlo;
mod mail;
mod rcpt;
mod reply;
mod session;
mod starttls;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::anvil::{Anvil, ClientLimits, Exceeded, Refusal};
pub use data::{DataError, DataReceiver, Progress};
pub use rcpt::Recipients;
pub use reply::{MAX_ECHO_CHARS, Reply, echo, std_replies};
pub use starttls::SmtpTls;

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
    /// The recipients taken (others get 550 5.1.1); empty: any.
    pub recipients: Recipients,
    /// Most simultaneous connections (more get 421 and are closed).
    pub max_connections: usize,
    /// Deadline of one command line: it must be complete this long after the server began
    /// waiting for it, however the bytes trickle in.
    pub command_timeout: Duration,
    /// Grace of the DATA phase: DATA must end within this plus one second per `min_data_rate`
    /// bytes received.
    pub data_timeout: Duration,
    /// Bytes per second a client must keep up inside DATA to earn more time (Postfix's
    /// `smtpd_min_data_rate`); 0: no extension, DATA must end within `data_timeout`.
    pub min_data_rate: usize,
    /// Absolute deadline of the DATA phase, whatever the rate.
    pub max_data_time: Duration,
    /// Most commands in one session (bounds a pipelining flood on one connection).
    pub max_commands: usize,
    /// Most junk commands (NOOP, RSET, VRFY, HELP, unknown or unimplemented) between two
    /// accepted messages; one more gets 421 and the session is closed.
    pub max_junk_commands: usize,
    /// Percent of `max_connections` in use above which each new connection closes an idle
    /// session of the client holding the most connections; 0: never.
    pub stress_high_water_percent: u8,
    /// Per-client limits.
    pub clients: ClientLimits,
    /// STARTTLS; `None`: not offered.
    pub tls: Option<SmtpTls>,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            hostname: "barrage.localhost".into(),
            max_message_size: 1024 * 1024,
            max_line_length: 1000,
            max_recipients: 10,
            recipients: Recipients::default(),
            max_connections: 20_000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(120),
            min_data_rate: 500,
            max_data_time: Duration::from_secs(600),
            max_commands: 100_000,
            max_junk_commands: 100,
            stress_high_water_percent: 80,
            clients: ClientLimits::default(),
            tls: None,
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
    /// What STARTTLS negotiated; `None` for a plain-text session.
    pub tls: Option<crate::tls::TlsInfo>,
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

    /// Told of every refusal the server makes to keep the intake fair (for counters).
    fn refused(&self, _why: Refusal) {}
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
    let anvil = Anvil::new(limits.clients.clone());
    let stop = CancellationToken::new();
    let mut failures = crate::descriptors::AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = failures.accept(&listener, "SMTP") => accepted,
        };
        let _ = stream.set_nodelay(true);
        let lease = match anvil.connect(peer.ip()) {
            Ok(lease) => lease,
            Err(exceeded) => {
                let (why, reply) = client_refusal(exceeded);
                handler.refused(why);
                tokio::spawn(session::refuse(stream, reply));
                continue;
            }
        };
        // Counting this connection as in use: at the limit too, the busiest client makes room.
        if stressed(&limits, slots.available_permits().saturating_sub(1)) {
            anvil.shed_busiest();
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let session = session::Session::new(
                    stream,
                    peer,
                    limits.clone(),
                    handler.clone(),
                    stop.clone(),
                    lease,
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

/// Whether connections in use have passed the high-water mark of the limit.
fn stressed(limits: &SmtpLimits, available: usize) -> bool {
    let in_use = limits.max_connections.saturating_sub(available);
    let mark = u64::from(limits.stress_high_water_percent);
    mark > 0 && in_use as u64 * 100 > limits.max_connections as u64 * mark
}

/// The counter and reply of a connection over a per-client limit.
fn client_refusal(exceeded: Exceeded) -> (Refusal, Reply) {
    match exceeded {
        Exceeded::ConnectionRate => (
            Refusal::ClientConnectionRate,
            Reply::new(
                421,
                [4, 7, 0],
                "too many new connections from your address, try again in a minute",
            ),
        ),
        Exceeded::Connections | Exceeded::MessageRate => (
            Refusal::ClientConnections,
            std_replies::too_many_client_connections(),
        ),
    }
}
