//! barrage speaks systemd's `sd_notify` protocol to a real datagram socket: `READY=1` only once
//! every listener answers, `STOPPING=1` on SIGTERM, and `WATCHDOG=1` pings only while the journal
//! writer commits.

mod support;

use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{Client, serve_command};

/// Every wait for an event gives up after this: a generous bound so a hang fails the test
/// instead of stalling CI, never a performance limit.
const PATIENCE: Duration = Duration::from_secs(60);

/// A barrage started with `NOTIFY_SOCKET` (and more environment), its stderr lines on a
/// channel. Killed when dropped.
struct Notified {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Notified {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Notified {
        let mut command = serve_command(data_dir, "127.0.0.1:0");
        command.envs(env.iter().copied()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("barrage binary starts");
        let (lines, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("barrage: {line}");
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Notified { child, stderr }
    }

    /// Waits for a stderr line containing `text`.
    fn wait_for_log(&self, text: &str) {
        loop {
            let line = self
                .stderr
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("no log line with {text:?}: {e}"));
            if line.contains(text) {
                return;
            }
        }
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service manager's end: a datagram socket bound before barrage starts.
struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(address: &SocketAddr) -> NotifySocket {
        let socket = UnixDatagram::bind_addr(address).expect("bind the notify socket");
        NotifySocket { socket }
    }

    /// The next notification, as its `KEY=VALUE` lines.
    fn next(&self) -> Vec<String> {
        self.socket.set_nonblocking(false).unwrap();
        self.socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buffer = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buffer)
            .expect("a notification from barrage");
        datagram_lines(&buffer[..n])
    }

    /// Waits for a notification with the line `line`; returns the ones before it.
    fn wait_for(&self, line: &str) -> Vec<Vec<String>> {
        let mut before = Vec::new();
        loop {
            let message = self.next();
            if message.iter().any(|l| l == line) {
                return before;
            }
            before.push(message);
        }
    }

    /// The notifications already waiting, without blocking.
    fn drain(&self) -> Vec<Vec<String>> {
        self.socket.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 4096];
        let mut waiting = Vec::new();
        while let Ok(n) = self.socket.recv(&mut buffer) {
            waiting.push(datagram_lines(&buffer[..n]));
        }
        waiting
    }
}

fn datagram_lines(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).expect("notifications are UTF-8");
    text.lines().map(str::to_string).collect()
}

fn count(messages: &[Vec<String>], line: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.iter().any(|l| l == line))
        .count()
}

fn endpoints(data_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(data_dir.join("endpoints.json"))
        .expect("endpoints.json is written before READY=1");
    serde_json::from_str(&text).unwrap()
}

fn abstract_address(tag: &str) -> (String, SocketAddr) {
    let name = format!("barrage-test-{tag}-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    (format!("@{name}"), address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_every_listener_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notify = NotifySocket::bind(&SocketAddr::from_pathname(&socket_path).unwrap());
    let data_dir = dir.path().join("data");
    let mut barrage = Notified::start(
        &data_dir,
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );

    let before_ready = notify.wait_for("READY=1");
    assert!(
        before_ready.is_empty(),
        "sent before READY: {before_ready:?}"
    );
    // Nothing is waited for from here on: READY=1 promises every listener already answers.
    let endpoints = endpoints(&data_dir);
    let smtp = endpoints["smtp"].as_str().unwrap().parse().unwrap();
    let mut client = Client::connect(smtp).await;
    let greeting = client.reply().await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(client.command("QUIT").await.code, 221);
    drop(client);
    for (listener, path) in [("http", "/healthz"), ("web", "/")] {
        let url = format!("http://{}{path}", endpoints[listener].as_str().unwrap());
        let response = reqwest::get(&url).await.expect("listener answers");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
    }

    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(barrage.child.id() as i32, libc::SIGTERM) };
    let before_stopping = notify.wait_for("STOPPING=1");
    let status = barrage.child.wait().unwrap();
    assert!(status.success(), "barrage exited with {status}");
    let after = notify.drain();
    let all: Vec<_> = before_stopping.iter().chain(&after).cloned().collect();
    assert_eq!(count(&all, "READY=1"), 0, "a second READY=1: {all:?}");
    assert_eq!(
        count(&all, "WATCHDOG=1"),
        0,
        "pings without WATCHDOG_USEC: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_on_an_abstract_socket_while_the_journal_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (name, address) = abstract_address("watchdog");
    let notify = NotifySocket::bind(&address);
    // 200 ms: pings every 100 ms, so a few arrive quickly; nothing here times them.
    let _barrage = Notified::start(
        dir.path(),
        &[("NOTIFY_SOCKET", &name), ("WATCHDOG_USEC", "200000")],
    );
    notify.wait_for("READY=1");
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_writer_that_cannot_commit_gets_no_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let (name, address) = abstract_address("stuck");
    let notify = NotifySocket::bind(&address);
    let barrage = Notified::start(
        dir.path(),
        &[("NOTIFY_SOCKET", &name), ("WATCHDOG_USEC", "200000")],
    );
    notify.wait_for("READY=1");
    notify.wait_for("WATCHDOG=1");

    // Another process holding SQLite's write lock stalls the writer, as an operator's
    // `sqlite3 barrage.db` with an open write transaction would: each probe waits out the
    // writer's busy timeout and fails.
    let lock = rusqlite::Connection::open(dir.path().join("barrage.db")).unwrap();
    lock.busy_timeout(PATIENCE).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let withheld = "watchdog ping withheld";
    barrage.wait_for_log(withheld);
    // Pings sent before that first failure are in the socket already; drop them. The probes run
    // one after another, so between this failure and the next none can succeed.
    notify.drain();
    barrage.wait_for_log(withheld);
    let during = notify.drain();
    assert_eq!(
        count(&during, "WATCHDOG=1"),
        0,
        "pinged while the journal could not commit: {during:?}"
    );

    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    notify.wait_for("WATCHDOG=1");
}
