//! The ack relay's TLS. With `tls = "starttls"`, an ack is never sent in clear: a relay that does
//! not offer STARTTLS is treated as unusable (acks wait), not as a place to send plain text. A
//! relay whose certificate comes from a private CA is trusted with `ca_file` and refused without
//! it. Credentials never travel over a session that is not encrypted (Postfix's `noplaintext`):
//! a plain relay offering AUTH is given up before AUTH, again and again, and never sees them; the
//! same credentials do reach a relay over STARTTLS, inside TLS only.

mod ack_support;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ack_support::{Sink, ack_config, wait_for_acks, wait_until};
use barrage::tls::Certificates;
use support::certs::PrivateCa;
use support::{Barrage, Client, request_mail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A bound on each wait, so a broken build fails instead of hanging (not a timing requirement).
const LIMIT: Duration = Duration::from_secs(60);

const CREDENTIALS: &str = "username = \"barrage-acks\"\npassword = \"s3cret-relay-pw\"";

/// Starts barrage with its acks going to `relay` (`extra`: more `[ack]` lines), its log in
/// `dir/barrage.log`, and submits one request, which gets its ticket.
async fn barrage_with_one_request(dir: &Path, relay: SocketAddr, extra: &str) -> Barrage {
    let config = ack_config(dir, relay, extra);
    let log = std::fs::File::create(dir.join("barrage.log")).unwrap();
    let barrage = Barrage::start_with(
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
        |command| {
            command.stderr(log);
        },
    );
    let mut client = Client::greet(barrage.smtp).await;
    let reply = client
        .submit(
            "client@example.net",
            &request_mail("<tls@client.test>", "chiffre.fr"),
        )
        .await;
    assert_eq!(reply.code, 250);
    barrage
}

/// barrage's `/v1/stats` says the sender found the relay unusable: one ack pending, none failed.
async fn relay_found_unusable(barrage: &Barrage) {
    let stats = wait_for_acks(barrage.http, "the relay refused", LIMIT, |s| {
        s["relay_up"] == false
    })
    .await;
    assert_eq!(stats["pending"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_starttls_never_falls_back_to_plain_text() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let barrage = barrage_with_one_request(dir.path(), sink.addr, "tls = \"starttls\"").await;
    relay_found_unusable(&barrage).await;
    assert!(sink.received().is_empty(), "an ack went out without TLS");
    sink.stop().await;
}

/// A relay (barrage's own SMTP server) offering STARTTLS with a certificate from a new private CA.
async fn private_ca_relay(dir: &Path) -> (PrivateCa, Sink) {
    let ca = PrivateCa::new(dir);
    let cert = ca.issue(dir);
    let certificates = Certificates::load(&cert.cert, &cert.key, &[]).unwrap();
    (ca, Sink::start_tls(certificates).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_certified_by_a_private_ca_is_trusted_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, sink) = private_ca_relay(dir.path()).await;
    let extra = format!("tls = \"starttls\"\nca_file = \"{}\"", ca.pem.display());
    let barrage = barrage_with_one_request(dir.path(), sink.addr, &extra).await;
    let stats = wait_for_acks(barrage.http, "the ack sent", LIMIT, |s| s["sent"] == 1).await;
    assert_eq!(stats["pending"], 0, "{stats}");
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].tls, "the ack came in plain text");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_a_private_ca_relay_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, sink) = private_ca_relay(dir.path()).await;
    let barrage = barrage_with_one_request(dir.path(), sink.addr, "tls = \"starttls\"").await;
    relay_found_unusable(&barrage).await;
    assert!(
        sink.received().is_empty(),
        "an ack went to an untrusted relay"
    );
    sink.stop().await;
}

/// A relay that offers AUTH (and STARTTLS, given a certificate), takes every mail, and records
/// each command line it reads with whether it came inside TLS.
struct AuthRelay {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<(bool, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AuthRelay {
    async fn start(tls: Option<Arc<Certificates>>) -> AuthRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
        let seen = lines.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (seen, tls) = (seen.clone(), tls.clone());
                tokio::spawn(async move {
                    let Some(tcp) = converse(tcp, &seen, tls.is_some(), false).await else {
                        return;
                    };
                    let acceptor = tls.expect("STARTTLS only when offered").acceptor();
                    if let Ok(session) = acceptor.accept(tcp).await {
                        converse(session, &seen, false, true).await;
                    }
                });
            }
        });
        AuthRelay { addr, lines, task }
    }

    fn lines(&self) -> Vec<(bool, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// EHLOs received: one per session (two per STARTTLS connection).
    fn ehlos(&self) -> usize {
        self.lines()
            .iter()
            .filter(|(_, line)| line.starts_with("EHLO"))
            .count()
    }
}

impl Drop for AuthRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One SMTP session (greeting first unless `encrypted`); returns the stream when the client asked
/// for STARTTLS.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    seen: &Mutex<Vec<(bool, String)>>,
    offer_starttls: bool,
    encrypted: bool,
) -> Option<S> {
    let mut io = BufReader::new(io);
    if !encrypted {
        io.get_mut()
            .write_all(b"220 relay.test ESMTP\r\n")
            .await
            .ok()?;
    }
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if in_data {
            in_data = line != ".";
            if !in_data {
                io.get_mut().write_all(b"250 2.0.0 taken\r\n").await.ok()?;
            }
            continue;
        }
        seen.lock().unwrap().push((encrypted, line.clone()));
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if offer_starttls => {
                b"250-relay.test\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
            }
            "EHLO" => b"250-relay.test\r\n250 AUTH PLAIN LOGIN\r\n",
            "STARTTLS" if offer_starttls => {
                io.get_mut()
                    .write_all(b"220 2.0.0 go ahead\r\n")
                    .await
                    .ok()?;
                return Some(io.into_inner());
            }
            "AUTH" => b"235 2.7.0 authenticated\r\n",
            "DATA" => {
                in_data = true;
                b"354 go on\r\n"
            }
            "QUIT" => {
                let _ = io.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
                return None;
            }
            _ => b"250 2.0.0 ok\r\n",
        };
        io.get_mut().write_all(reply).await.ok()?;
    }
}

/// Whether any recorded line holds the credentials: the AUTH command, the password in clear or
/// the PLAIN token.
fn holds_credentials(line: &str) -> bool {
    // base64("\0barrage-acks\0s3cret-relay-pw")
    const PLAIN: &str = "AGJhcnJhZ2UtYWNrcwBzM2NyZXQtcmVsYXktcHc=";
    line.to_ascii_uppercase().starts_with("AUTH")
        || line.contains("s3cret-relay-pw")
        || line.contains(PLAIN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_relay_offering_auth_never_gets_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let relay = AuthRelay::start(None).await;
    let extra = format!("tls = \"none\"\n{CREDENTIALS}");
    let barrage = barrage_with_one_request(dir.path(), relay.addr, &extra).await;
    // Tried again later (the outbox keeps the ack), or the credentials went out.
    wait_until("a second session with the relay", LIMIT, || {
        relay.ehlos() >= 2 || relay.lines().iter().any(|(_, l)| holds_credentials(l))
    })
    .await;
    let lines = relay.lines();
    assert!(
        !lines.iter().any(|(_, line)| holds_credentials(line)),
        "credentials over plain text: {lines:?}"
    );
    assert!(
        !lines.iter().any(|(_, line)| line.starts_with("MAIL")),
        "an ack went out without the AUTH it was configured with: {lines:?}"
    );
    relay_found_unusable(&barrage).await;
    let log = std::fs::read_to_string(dir.path().join("barrage.log")).unwrap();
    assert!(log.contains("AUTH refused"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_starttls_the_credentials_go_inside_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateCa::new(dir.path());
    let cert = ca.issue(dir.path());
    let relay = AuthRelay::start(Some(
        Certificates::load(&cert.cert, &cert.key, &[]).unwrap(),
    ))
    .await;
    let extra = format!(
        "tls = \"starttls\"\nca_file = \"{}\"\n{CREDENTIALS}",
        ca.pem.display()
    );
    let barrage = barrage_with_one_request(dir.path(), relay.addr, &extra).await;
    wait_for_acks(barrage.http, "the ack sent", LIMIT, |s| s["sent"] == 1).await;
    let lines = relay.lines();
    let auth: Vec<&(bool, String)> = lines.iter().filter(|(_, l)| holds_credentials(l)).collect();
    assert_eq!(auth.len(), 1, "{lines:?}");
    assert!(auth[0].0, "AUTH before STARTTLS: {lines:?}");
    assert!(
        lines.iter().any(|(tls, l)| *tls && l.starts_with("MAIL")),
        "{lines:?}"
    );
}
