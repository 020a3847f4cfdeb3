//! Shared by the ack tests: a real SMTP receiver (barrage's own SMTP server with a recording
//! handler) standing in for the relay, a config file pointing barrage's acks at it, a barrage
//! started with it, and helpers to read the acks it received. Its users also declare `mod support`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use barrage::smtp::{Envelope, MessageHandler, Reply, SmtpLimits, SmtpTls};
use barrage::tls::{Certificates, TlsMode};
use mail_parser::MessageParser;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One mail the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub raw: Vec<u8>,
    /// Whether it came inside TLS (STARTTLS).
    pub tls: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.raw, name)
    }
    pub fn ticket(&self) -> u64 {
        self.header("X-Barrage-Ticket")
            .expect("X-Barrage-Ticket")
            .parse()
            .expect("a numeric ticket")
    }
    pub fn message_id(&self) -> String {
        self.header("Message-ID").expect("Message-ID")
    }
    /// The decoded text body.
    pub fn body(&self) -> String {
        let parsed = MessageParser::default().parse(&self.raw).expect("parses");
        parsed
            .body_text(0)
            .expect("a text body")
            .replace("\r\n", "\n")
    }
}

/// The raw (unfolded, undecoded) value of the first header `name`.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push_str(line.trim_start());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_string());
        }
    }
    value
}

struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
    delay: Duration,
}

impl MessageHandler for Recorder {
    async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        self.received.lock().unwrap().push(Received {
            mail_from: envelope.mail_from.clone(),
            rcpt_to: envelope.rcpt_to.clone(),
            raw: message,
            tls: envelope.tls.is_some(),
        });
        tokio::time::sleep(self.delay).await;
        Reply::new(250, [2, 0, 0], "ack recorded")
    }
}

/// A recording SMTP receiver on loopback.
pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, Duration::ZERO, Arc::default(), None)
    }

    /// A sink offering STARTTLS with `certificates`.
    pub async fn start_tls(certificates: Arc<Certificates>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = SmtpTls {
            mode: TlsMode::May,
            certificates,
        };
        Self::on(listener, Duration::ZERO, Arc::default(), Some(tls))
    }

    /// A sink on a port of its own, answering each mail after `delay`, recording into
    /// `received` (shared by the sinks that stand in for one relay over its outages).
    pub async fn start_with(delay: Duration, received: Arc<Mutex<Vec<Received>>>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, delay, received, None)
    }

    fn on(
        listener: TcpListener,
        delay: Duration,
        received: Arc<Mutex<Vec<Received>>>,
        tls: Option<SmtpTls>,
    ) -> Sink {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = SmtpLimits {
            hostname: "relay.test".into(),
            data_timeout: Duration::from_secs(5),
            tls,
            ..SmtpLimits::default()
        };
        let handler = Arc::new(Recorder {
            received: received.clone(),
            delay,
        });
        let task = tokio::spawn(async move {
            let _ = barrage::smtp::serve(listener, Arc::new(limits), handler, async {
                let _ = stopped.await;
            })
            .await;
        });
        Sink {
            addr,
            received,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.take().unwrap().await;
    }

    /// Acks received, grouped by ticket.
    pub fn by_ticket(&self) -> BTreeMap<u64, Vec<Received>> {
        let mut map: BTreeMap<u64, Vec<Received>> = BTreeMap::new();
        for mail in self.received() {
            map.entry(mail.ticket()).or_default().push(mail);
        }
        map
    }
}

/// The relay's address as barrage knows it, held for the whole test (no free-port race): while
/// closed, every connection is accepted and closed at once (the relay is down); while open, each
/// is forwarded to the sink behind it.
pub struct Gate {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// A closed gate on a port of its own.
    pub async fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let current = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(to) = *current.lock().unwrap() else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut relay) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut relay).await;
                    }
                });
            }
        });
        Gate { addr, target, task }
    }

    /// New connections go to `sink` from now on.
    pub fn open(&self, sink: &Sink) {
        *self.target.lock().unwrap() = Some(sink.addr);
    }

    /// New connections are refused (accepted and closed) from now on.
    pub fn close(&self) {
        *self.target.lock().unwrap() = None;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes a config file whose acks go to `relay`, with short backoffs for tests.
pub fn ack_config(dir: &Path, relay: SocketAddr, extra: &str) -> PathBuf {
    let path = dir.join("barrage.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"registry.test\"\n\
             [ack]\n\
             relay = \"{relay}\"\n\
             from = \"registry@registry.test\"\n\
             from_name = \"Registre\"\n\
             backoff_initial_ms = 50\n\
             backoff_max_ms = 200\n\
             timeout_secs = 5\n\
             {extra}\n"
        ),
    )
    .unwrap();
    path
}

/// A barrage whose acks go to a [`Sink`] of its own. Dropped in field order: barrage first.
pub struct AckedBarrage {
    pub barrage: crate::support::Barrage,
    pub sink: Sink,
    /// Holds the config file and the data dir.
    pub dir: tempfile::TempDir,
}

/// Starts a sink, then barrage with an [`ack_config`] naming it (plus the `extra` lines).
pub async fn start_acked(extra: &str) -> AckedBarrage {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ack_config(dir.path(), sink.addr, extra);
    let barrage = crate::support::Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    AckedBarrage { barrage, sink, dir }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the `acks` of `/v1/stats` every 20 ms until `condition` holds; panics with `what` after
/// `limit` (a bound so a broken build fails instead of hanging, not a timing requirement).
pub async fn wait_for_acks(
    http: SocketAddr,
    what: &str,
    limit: Duration,
    mut condition: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let stats = ack_stats(http).await;
        if condition(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `acks` object of `/v1/stats`.
pub async fn ack_stats(http: SocketAddr) -> serde_json::Value {
    let stats: serde_json::Value = reqwest::get(format!("http://{http}/v1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["acks"].clone()
}
