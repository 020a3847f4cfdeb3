//! The SMTP driver over STARTTLS: against barrage's SMTP server requiring TLS, with a throwaway
//! certificate, a `starttls = true` group gets every ticket inside TLS; the same group without
//! STARTTLS is refused, and an untrusted certificate fails the handshake. Each connection's
//! handshake is timed once, on the first request it carried.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barrage::smtp::{Envelope, MessageHandler, Reply, SmtpLimits, SmtpTls, serve};
use barrage::tls::{Certificates, TlsMode};
use landrush::driver::RunOptions;
use landrush::driver::smtp::run_scenario;
use landrush::driver::smtp::tls::{ClientTls, Trust};
use landrush::rehearse::tls::throwaway_certificate;
use landrush::schedule::ValidScenario;
use reports::records::{Outcome, SENT, SentRecord, Stamp, read_all};
use tokio::net::TcpListener;

/// Gives tickets and remembers, per message, the TLS version it came over.
#[derive(Default)]
struct Handler {
    next_ticket: AtomicU64,
    tls: Mutex<Vec<Option<String>>>,
}

impl MessageHandler for Handler {
    async fn deliver(&self, envelope: &Envelope, _message: Vec<u8>) -> Reply {
        let version = envelope.tls.as_ref().map(|tls| tls.version.clone());
        self.tls.lock().unwrap().push(version);
        let n = self.next_ticket.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::new(
            250,
            [2, 0, 0],
            format!("queued as ticket {n} at {}", Stamp::now()),
        )
    }
}

/// barrage's SMTP server with `smtp.tls = "required"` over a fresh throwaway certificate (the
/// one `rehearse --tls` makes), written as `ca.pem`, `cert.pem` and `key.pem` into `dir`.
async fn server(dir: &Path) -> (SocketAddr, Arc<Handler>, tokio::sync::oneshot::Sender<()>) {
    let files = throwaway_certificate(dir).unwrap();
    let certificates = Certificates::load(&files.cert, &files.key, &[]);
    let limits = SmtpLimits {
        tls: Some(SmtpTls {
            mode: TlsMode::Required,
            certificates: certificates.unwrap(),
        }),
        ..SmtpLimits::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(Handler::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        Arc::new(limits),
        handler.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, handler, stop)
}

fn scenario(starttls: bool) -> ValidScenario {
    let text = format!(
        "name = \"tls\"\nseed = 7\nstart = \"+300ms\"\n\
         [bounds]\nmax_requests = 1000\nmax_duration = \"60s\"\n\
         [clients]\ncount = 4\nreply_timeout = \"20s\"\nstarttls = {starttls}\n\
         [schedule]\nmodel = \"steps\"\nsteps = [{{ rate = 20, duration = \"1s\" }}]\n"
    );
    ValidScenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

async fn play(
    s: &ValidScenario,
    addr: SocketAddr,
    out: &Path,
    tls: Option<ClientTls>,
) -> Vec<SentRecord> {
    let options = RunOptions {
        progress: false,
        print_summary: false,
        tls: tls.map(Arc::new),
        ..RunOptions::default()
    };
    let run = run_scenario(s, addr, out, options);
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("run within the test limit")
        .expect("run");
    read_all(&out.join(SENT)).expect("sent.jsonl parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_gets_its_tickets_over_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handler, _stop) = server(dir.path()).await;
    let tls = ClientTls::new(Trust::CaFile(&dir.path().join("ca.pem")), "127.0.0.1").unwrap();
    let out = dir.path().join("run");
    let records = play(&scenario(true), addr, &out, Some(tls)).await;
    assert_eq!(records.len(), 20);
    for record in &records {
        assert_eq!(record.outcome, Outcome::Accepted, "{record:?}");
        assert!(record.ticket.is_some(), "{record:?}");
    }
    let mut tickets: Vec<u64> = records.iter().filter_map(|r| r.ticket).collect();
    tickets.sort_unstable();
    assert_eq!(tickets, (1..=20).collect::<Vec<_>>());
    let seen = handler.tls.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    assert!(
        seen.iter().all(|v| v.as_deref() == Some("TLSv1.3")),
        "{seen:?}"
    );
    // Each client's one connection did one handshake, timed on its first request only.
    for client in 0..4 {
        let mut own: Vec<&SentRecord> = records.iter().filter(|r| r.client == client).collect();
        own.sort_by_key(|r| r.intended_at);
        let timed: Vec<Option<u64>> = own.iter().map(|r| r.tls_handshake_us).collect();
        assert!(
            timed[0].is_some_and(|us| us > 0),
            "client {client}: {timed:?}"
        );
        assert!(
            timed[1..].iter().all(Option::is_none),
            "client {client}: {timed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_starttls_a_required_buffer_refuses_with_530() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handler, _stop) = server(dir.path()).await;
    let out = dir.path().join("run");
    let records = play(&scenario(false), addr, &out, None).await;
    assert_eq!(records.len(), 20);
    for record in &records {
        assert_eq!(record.outcome, Outcome::Refused, "{record:?}");
        assert_eq!(record.code, Some(530), "{record:?}");
        assert_eq!(record.tls_handshake_us, None, "{record:?}");
    }
    assert!(handler.tls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, handler, _stop) = server(dir.path()).await;
    // Trust another certificate than the one served.
    let other = tempfile::tempdir().unwrap();
    let (_, _, _other_stop) = server(other.path()).await;
    let tls = ClientTls::new(Trust::CaFile(&other.path().join("ca.pem")), "127.0.0.1").unwrap();
    let out = dir.path().join("run");
    let records = play(&scenario(true), addr, &out, Some(tls)).await;
    assert_eq!(records.len(), 20);
    for record in &records {
        assert_eq!(record.outcome, Outcome::Failed, "{record:?}");
    }
    assert!(handler.tls.lock().unwrap().is_empty());

    let insecure = ClientTls::new(Trust::Insecure, "127.0.0.1").unwrap();
    let out = dir.path().join("run-insecure");
    let records = play(&scenario(true), addr, &out, Some(insecure)).await;
    assert!(records.iter().all(|r| r.outcome == Outcome::Accepted));
}
