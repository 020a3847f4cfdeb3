//! STARTTLS on the SMTP intake: Python's smtplib gets its ticket over TLS, `required` refuses
//! plain-text MAIL, commands pipelined after STARTTLS are not executed (CVE-2011-0411), and a
//! SIGHUP serves a new certificate to the next session without dropping the open ones.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use support::certs::{self, TestCert};
use support::{Barrage, request_mail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Starts barrage with STARTTLS in `mode` over a fresh certificate.
fn start(mode: &str) -> (tempfile::TempDir, Barrage, TestCert) {
    let dir = tempfile::tempdir().unwrap();
    let cert = certs::self_signed(dir.path());
    let config = format!(
        "[smtp]\ntls = \"{mode}\"\ntls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\n",
        dir.path().display()
    );
    let path = dir.path().join("barrage.toml");
    std::fs::write(&path, config).unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
    );
    (dir, barrage, cert)
}

/// A line-at-a-time SMTP client over any stream (plain or TLS).
struct Line<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Line<S> {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// One whole reply: its code and all its lines.
    async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(30), self.io.read_line(&mut line));
            assert!(
                read.await.expect("a reply within 30 s").expect("read") > 0,
                "EOF"
            );
            let code = line[..3].parse().expect("a reply code");
            lines.push(line[4..].trim_end().to_string());
            if line.as_bytes()[3] == b' ' {
                return (code, lines);
            }
        }
    }

    async fn command(&mut self, line: &str) -> (u16, Vec<String>) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn submit(&mut self, message: &str) -> (u16, Vec<String>) {
        assert_eq!(self.command("MAIL FROM:<client@example.net>").await.0, 250);
        let rcpt = self.command("RCPT TO:<requests@registry.example>").await;
        assert_eq!(rcpt.0, 250);
        assert_eq!(self.command("DATA").await.0, 354);
        self.send(message.as_bytes()).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

async fn plain(addr: SocketAddr) -> Line<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut line = Line {
        io: BufReader::new(stream),
    };
    assert_eq!(line.reply().await.0, 220);
    line
}

fn connector(trusted: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Upgrades a session that has just been answered 220 to STARTTLS.
async fn handshake(line: Line<TcpStream>, trusted: &[&CertificateDer<'static>]) -> Line<Tls> {
    assert!(line.io.buffer().is_empty(), "nothing may follow the 220");
    let tcp = line.io.into_inner();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector(trusted).connect(name, tcp).await.expect("TLS");
    Line {
        io: BufReader::new(tls),
    }
}

/// Connects, says EHLO, STARTTLS, and EHLO again inside TLS.
async fn tls_session(addr: SocketAddr, trusted: &[&CertificateDer<'static>]) -> Line<Tls> {
    let mut line = plain(addr).await;
    let ehlo = line.command("EHLO client.example").await;
    assert!(ehlo.1.contains(&"STARTTLS".to_string()), "{ehlo:?}");
    assert_eq!(line.command("STARTTLS").await.0, 220);
    let mut tls = handshake(line, trusted).await;
    let ehlo = tls.command("EHLO client.example").await;
    assert_eq!(ehlo.0, 250);
    assert!(
        !ehlo.1.contains(&"STARTTLS".to_string()),
        "STARTTLS is not offered again inside TLS: {ehlo:?}"
    );
    tls
}

fn ticket(reply: &(u16, Vec<String>)) -> u64 {
    assert_eq!(reply.0, 250, "{reply:?}");
    let text = reply.1.last().unwrap();
    let rest = text.split("ticket ").nth(1).expect("a ticket");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn python_smtplib_starttls_gets_its_ticket_and_the_request_records_tls() {
    let (dir, barrage, _cert) = start("may");
    let script = r#"
import smtplib, ssl, sys
host, port, cafile, message = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP(host, port, timeout=30)
s.starttls(context=ctx)
s.ehlo()
code, _ = s.mail("client@example.net")
assert code == 250, code
code, _ = s.rcpt("requests@registry.example")
assert code == 250, code
code, text = s.data(message.encode())
print(code, text.decode())
s.quit()
"#;
    let message = request_mail("<py-tls-1@example.net>", "tls-python.example");
    let output = support::output_tied({
        let mut command = std::process::Command::new("python3");
        command.args(["-c", script, "127.0.0.1"]);
        command.arg(barrage.smtp.port().to_string());
        command.arg(dir.path().join("cert.pem"));
        command.arg(message);
        command
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("250 2.0.0 queued as ticket 1 at "),
        "{stdout}"
    );
    let requests = barrage.all_requests().await;
    assert_eq!(requests.len(), 1);
    let fields = &requests[0]["fields"];
    assert_eq!(fields["tls.version"], "TLSv1.3", "{fields}");
    assert!(fields["tls.cipher"].as_str().unwrap().starts_with("TLS13_"));
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["intake"]["accepted_tls"], 1, "{stats}");
}

#[tokio::test]
async fn required_refuses_plain_mail_with_530_and_takes_it_over_tls() {
    let (_dir, barrage, cert) = start("required");
    let mut line = plain(barrage.smtp).await;
    assert_eq!(line.command("EHLO client.example").await.0, 250);
    let refused = line.command("MAIL FROM:<client@example.net>").await;
    assert_eq!(refused.0, 530, "{refused:?}");
    assert_eq!(refused.1, ["5.7.0 Must issue a STARTTLS command first"]);

    let mut tls = tls_session(barrage.smtp, &[&cert.der]).await;
    let mail = request_mail("<required-1@example.net>", "tls-required.example");
    assert_eq!(ticket(&tls.submit(&mail).await), 1);
    let requests = barrage.all_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["fields"]["tls.version"], "TLSv1.3");
}

#[tokio::test]
async fn plain_text_requests_carry_no_tls_fields_in_may_mode() {
    let (_dir, barrage, _cert) = start("may");
    let mut line = plain(barrage.smtp).await;
    assert_eq!(line.command("EHLO client.example").await.0, 250);
    let mail = request_mail("<plain-1@example.net>", "tls-plain.example");
    assert_eq!(ticket(&line.submit(&mail).await), 1);
    let requests = barrage.all_requests().await;
    assert!(requests[0]["fields"].get("tls.version").is_none());
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_not_executed() {
    let (_dir, barrage, cert) = start("may");
    let mut line = plain(barrage.smtp).await;
    assert_eq!(line.command("EHLO client.example").await.0, 250);
    // One write: the MAIL rides in plain text behind STARTTLS, as an injecting attacker's would.
    line.send(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n").await;
    let ready = line.reply().await;
    assert_eq!(ready.0, 220, "{ready:?}");
    let mut tls = handshake(line, &[&cert.der]).await;
    // Had the MAIL run, its 250 would be the next reply; the session was reset, so EHLO is
    // needed again and RCPT has no transaction to join.
    let mail = tls.command("MAIL FROM:<client@example.net>").await;
    assert_eq!(mail.0, 503, "the session must restart at EHLO: {mail:?}");
    assert_eq!(tls.command("EHLO client.example").await.0, 250);
    let rcpt = tls.command("RCPT TO:<requests@registry.example>").await;
    assert_eq!(
        rcpt.0, 503,
        "the pipelined MAIL must not have started a transaction: {rcpt:?}"
    );
}

#[tokio::test]
async fn starttls_twice_and_starttls_unconfigured_are_refused() {
    let (_dir, barrage, cert) = start("may");
    let mut tls = tls_session(barrage.smtp, &[&cert.der]).await;
    assert_eq!(tls.command("STARTTLS").await.0, 503);

    let dir = tempfile::tempdir().unwrap();
    let plain_barrage = Barrage::start(&dir.path().join("data"), &[]);
    let mut line = plain(plain_barrage.smtp).await;
    let ehlo = line.command("EHLO client.example").await;
    assert!(!ehlo.1.contains(&"STARTTLS".to_string()), "{ehlo:?}");
    let refused = line.command("STARTTLS").await;
    assert_eq!(refused.0, 502, "{refused:?}");
}

/// The certificate the server presented in a TLS session.
fn served(tls: &Line<Tls>) -> CertificateDer<'static> {
    let (_, connection) = tls.io.get_ref().get_ref();
    connection.peer_certificates().expect("a certificate")[0].clone()
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_the_next_session_and_keeps_open_ones() {
    let (dir, barrage, old) = start("may");
    let mut open = tls_session(barrage.smtp, &[&old.der]).await;
    assert_eq!(served(&open), old.der);

    let new = certs::self_signed(dir.path());
    assert_ne!(new.der, old.der);
    // SAFETY: kill(2) on the child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(barrage.pid(), libc::SIGHUP) }, 0);
    // The reload runs after the signal arrives: new sessions until one is served the new
    // certificate (each trusts both, so the old one still completes a handshake).
    let mut attempts = 0;
    let next = loop {
        attempts += 1;
        assert!(
            attempts <= 300,
            "the new certificate was never served after SIGHUP"
        );
        let session = tls_session(barrage.smtp, &[&old.der, &new.der]).await;
        if served(&session) == new.der {
            break session;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(next);
    // The session opened before the reload is still served, over its old certificate.
    let mail = request_mail("<sighup-1@example.net>", "tls-sighup.example");
    assert_eq!(ticket(&open.submit(&mail).await), 1);
}

#[tokio::test]
async fn sighup_without_tls_does_not_end_barrage() {
    let dir = tempfile::tempdir().unwrap();
    let mut barrage = Barrage::start(&dir.path().join("data"), &[]);
    // A served session first: the services, and so the SIGHUP handler, are up.
    let mut line = plain(barrage.smtp).await;
    assert_eq!(line.command("EHLO client.example").await.0, 250);
    // SAFETY: kill(2) on the child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(barrage.pid(), libc::SIGHUP) }, 0);
    let mail = request_mail("<hup-plain-1@example.net>", "tls-hup.example");
    assert_eq!(ticket(&line.submit(&mail).await), 1);
    let mut again = plain(barrage.smtp).await;
    assert_eq!(again.command("NOOP").await.0, 250);
    assert!(
        barrage.child.try_wait().unwrap().is_none(),
        "SIGHUP ended barrage"
    );
}
