//! The connections to the ack relay: lettre's SMTP client ([`AsyncSmtpConnection`]) over our own
//! small pool of TCP connections with `TCP_NODELAY`.
//!
//! lettre's own pooled transport leaves Nagle's algorithm on, and its DATA phase writes the message
//! and the final `.` separately: against a relay that delays its ACKs, every ack then waits ~40 ms
//! (measured: 85 acks/s with 4 connections). Connecting ourselves fixes that and keeps lettre for
//! the protocol, STARTTLS (rustls) and AUTH.
//!
//! The relay's certificate is checked against the Mozilla roots, or against `ack.ca_file` alone
//! (a private CA). Credentials are never sent over a session that is not encrypted (Postfix's
//! `noplaintext`): such a connection is given up before AUTH, as an unusable relay.

use std::sync::Mutex;
use std::time::Duration;

use lettre::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{AckConfig, AckTls};

/// Why a relay session that is not encrypted gets no credentials.
pub const AUTH_NEEDS_TLS: &str = "the relay session is not encrypted: AUTH refused, credentials \
     are never sent in plain text (set ack.tls = \"starttls\" or \"tls\")";

/// A pooled connection idle longer than this is closed rather than reused (relays drop idle
/// clients, and a dead connection would look like an outage).
const MAX_IDLE: Duration = Duration::from_secs(20);

/// Why a send did not go through.
#[derive(Debug)]
pub enum SendError {
    /// The relay answered the message with an SMTP error (4xx / 5xx), or cannot take this
    /// message at all.
    Smtp(lettre::transport::smtp::Error),
    /// The relay could not be used (connect, TLS, I/O, timeout, 421).
    Relay(String),
}

pub struct Relay {
    host: String,
    port: u16,
    tls: AckTls,
    /// How the relay's certificate is checked (`None` with `tls = "none"`).
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Relay {
    pub fn new(config: &AckConfig, hostname: &str) -> anyhow::Result<Self> {
        let (host, port) = config
            .relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("ack.relay {:?} is not host:port", config.relay))?;
        // Built once, so a bad CA file or a host name rustls cannot verify fails at start.
        let tls_parameters = match config.tls {
            AckTls::None => None,
            AckTls::Starttls | AckTls::Tls => Some(tls_parameters(host, config)?),
        };
        if config.username.is_some() && config.tls == AckTls::None {
            tracing::warn!(
                "ack.username is set with ack.tls = \"none\": barrage will not send it over \
                 plain text, so acks wait until ack.tls is \"starttls\" or \"tls\""
            );
        }
        Ok(Relay {
            host: host.to_string(),
            port,
            tls: config.tls,
            tls_parameters,
            credentials: config
                .username
                .clone()
                .map(|u| Credentials::new(u, config.password.clone().unwrap_or_default())),
            hello: ClientId::Domain(hostname.to_string()),
            timeout: Duration::from_secs(config.timeout_secs),
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let relay = |e: &dyn std::fmt::Display| SendError::Relay(e.to_string());
        let tls = || {
            self.tls_parameters
                .clone()
                .ok_or_else(|| relay(&"no TLS parameters for a TLS relay"))
        };
        let mut conn = if self.tls == AckTls::Tls {
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(tls()?),
                None,
            )
            .await
            .map_err(|e| relay(&e))?
        } else {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| relay(&format!("cannot connect: {e}")))?;
            let _ = stream.set_nodelay(true);
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                .await
                .map_err(|e| relay(&e))?
        };
        if self.tls == AckTls::Starttls {
            conn.starttls(tls()?, &self.hello)
                .await
                .map_err(|e| relay(&format!("STARTTLS: {e}")))?;
        }
        if let Some(credentials) = &self.credentials {
            if !conn.is_encrypted() {
                conn.abort().await;
                return Err(SendError::Relay(AUTH_NEEDS_TLS.into()));
            }
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| relay(&format!("AUTH: {e}")))?;
        }
        Ok(conn)
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    /// Sends one mail; a reused connection that turns out dead is replaced once.
    pub async fn send(&self, mail: &Message) -> Result<(), SendError> {
        let bytes = mail.formatted();
        let envelope = mail.envelope();
        let attempt = async {
            let mut reused = self.take_idle();
            loop {
                let fresh = reused.is_none();
                let mut conn = match reused.take() {
                    Some(conn) => conn,
                    None => self.connect().await?,
                };
                match conn.send(envelope, &bytes).await {
                    Ok(_) => {
                        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                        idle.push((conn, Instant::now()));
                        return Ok(());
                    }
                    Err(e) if e.is_permanent() || e.is_transient() => {
                        let closing = e.status().is_some_and(|c| c.to_string() == "421");
                        if closing {
                            return Err(SendError::Relay(e.to_string()));
                        }
                        // The connection stays usable after a refusal of one message.
                        if !conn.has_broken() {
                            let _ = conn.command(lettre::transport::smtp::commands::Rset).await;
                            if !conn.has_broken() {
                                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                                idle.push((conn, Instant::now()));
                            }
                        }
                        return Err(SendError::Smtp(e));
                    }
                    Err(e) if e.is_client() => {
                        // Something about this mail the relay cannot take (a non-ASCII address
                        // without SMTPUTF8): a judgement on the message, not on the relay.
                        conn.abort().await;
                        return Err(SendError::Smtp(e));
                    }
                    Err(e) => {
                        conn.abort().await;
                        if fresh {
                            return Err(SendError::Relay(e.to_string()));
                        }
                        // A pooled connection the relay had closed: try once on a new one.
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Relay(format!(
                "no answer from the relay in {:?}",
                self.timeout
            ))),
        }
    }
}

/// The relay's TLS: its certificate checked against the Mozilla roots, or with `ca_file` against
/// the authorities in that file only.
fn tls_parameters(host: &str, config: &AckConfig) -> anyhow::Result<TlsParameters> {
    let Some(ca_file) = &config.ca_file else {
        return Ok(TlsParameters::new(host.to_string())?);
    };
    let pem = std::fs::read(ca_file)
        .map_err(|e| anyhow::anyhow!("cannot read ack.ca_file {}: {e}", ca_file.display()))?;
    let no_certificate = || {
        anyhow::anyhow!(
            "ack.ca_file {} holds no PEM certificate: give the CA that signed the relay's \
             certificate",
            ca_file.display()
        )
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    anyhow::ensure!(certificates > 0, no_certificate());
    let ca = Certificate::from_pem(&pem).map_err(|_| no_certificate())?;
    Ok(TlsParameters::builder(host.to_string())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(ca)
        .build_rustls()?)
}
