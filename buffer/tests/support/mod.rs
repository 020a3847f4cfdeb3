//! Shared by barrage's integration tests: a real `barrage serve` process on loopback ports in a
//! temporary data dir, and a small SMTP client that reads replies line by line.
//!
//! Every child a test starts dies with the test: killed when its [`Barrage`] is dropped (the
//! test's normal end or a panic's unwinding), and sent SIGKILL by the kernel when the test
//! process itself dies (`PR_SET_PDEATHSIG`, see [`spawn_tied`]).
#![allow(dead_code)]

pub mod certs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use barrage::endpoints::Endpoints;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A running barrage process. Killed (SIGKILL) when dropped.
pub struct Barrage {
    pub child: Child,
    pub data_dir: PathBuf,
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    /// The web intake (`None` with `--no-web`).
    pub web: Option<SocketAddr>,
    extra_args: Vec<String>,
}

impl Barrage {
    /// Starts barrage on free loopback ports with its journal in `data_dir`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Barrage {
        Self::start_with(data_dir, extra_args, |_| {})
    }

    /// Like `start`, with a hook to adjust the command (resource limits, environment).
    pub fn start_with(
        data_dir: &Path,
        extra_args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Barrage {
        // A file left by a killed run names ports nobody listens on any more.
        Endpoints::remove(data_dir);
        let mut command = serve_command(data_dir, "127.0.0.1:0");
        command.args(extra_args);
        adjust(&mut command);
        let child = spawn_tied(command);
        let mut barrage = Barrage {
            child,
            data_dir: data_dir.to_path_buf(),
            smtp: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            web: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        // A generous bound on start-up, only so a broken build fails instead of hanging.
        let endpoints = Endpoints::wait(data_dir, Duration::from_secs(120), || {
            match barrage.child.try_wait()? {
                Some(status) => anyhow::bail!("barrage exited before listening: {status}"),
                None => Ok(()),
            }
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        barrage.smtp = endpoints.smtp;
        barrage.http = endpoints.http;
        barrage.web = endpoints.web;
        barrage
    }

    /// Starts barrage with RLIMIT_FSIZE = `bytes`: its journal writes fail with EFBIG past that
    /// size, a real write failure (barrage ignores SIGXFSZ). Its stderr goes to a file already at
    /// the limit, so every log line fails to be written too, as when the log shares the full disk.
    pub fn start_with_file_size_limit(data_dir: &Path, bytes: u64) -> Barrage {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.join("stderr-at-the-limit.log");
        std::fs::File::create(&log).unwrap().set_len(bytes).unwrap();
        let stderr = std::fs::File::options().append(true).open(&log).unwrap();
        Self::start_with(data_dir, &[], |command| {
            command.stderr(stderr);
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// Lifts the running barrage's file size limit ("space returns").
    pub fn lift_file_size_limit(&self) {
        let limit = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: prlimit only reads `limit`; the old value is not asked for.
        let rc =
            unsafe { libc::prlimit(self.pid(), libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.child.wait().unwrap()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("http://{}{}", self.http, path);
        let response = reqwest::get(&url).await.expect("handover API answers");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Every stored request, in the order the handover API serves them.
    pub async fn all_requests(&self) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(&format!("/v1/requests?after={after}&limit=1000"))
                .await;
            let requests = page["requests"].as_array().unwrap().clone();
            if requests.is_empty() {
                return all;
            }
            after = requests.last().unwrap()["seq"].as_u64().unwrap();
            all.extend(requests);
        }
    }
}

impl Drop for Barrage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` as a child that the kernel kills (SIGKILL) when this test process dies,
/// however it dies, even when the test's thread that asked has ended (a barrage shared by
/// several tests outlives the first): see [`pgcluster::spawn_tied`].
pub fn spawn_tied(command: Command) -> Child {
    pgcluster::spawn_tied(command).expect("barrage binary starts")
}

/// Runs `command` to its end as a [`spawn_tied`] child and returns what it printed.
pub fn output_tied(mut command: Command) -> std::process::Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn_tied(command)
        .wait_with_output()
        .expect("the child's output is read")
}

/// `barrage serve` on free loopback ports (the handover API on `http`) with its journal in
/// `data_dir`, quiet but for warnings.
pub fn serve_command(data_dir: &Path, http: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_barrage"));
    command
        .args(["serve", "--smtp", "127.0.0.1:0", "--web", "127.0.0.1:0"])
        .args(["--http", http, "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// A request mail as a client would write it (CRLF line ends, dot-stuffed by the caller if needed).
pub fn request_mail(message_id: &str, domain: &str) -> String {
    format!(
        "From: <client@example.net>\r\nTo: <requests@registry.example>\r\n\
         Message-ID: {message_id}\r\nSubject: request\r\n\r\n\
         domain: {domain}\r\nholder: Jeanne Durand\r\ncontact: client@example.net\r\n"
    )
}

/// A plain SMTP client for tests: sends lines, reads whole replies.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// One reply: its code and its last line.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
    /// Every line of a multi-line reply, without code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The ticket number of `250 2.0.0 queued as ticket N at T`.
    pub fn ticket(&self) -> Option<u64> {
        let rest = self.text.split("ticket ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).await.expect("connect"))
    }

    /// A client on a connection made elsewhere (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> Client {
        let (read, write) = stream.into_split();
        Client {
            reader: BufReader::new(read),
            writer: write,
        }
    }

    /// Connects and reads the 220 greeting, then EHLO.
    pub async fn greet(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        assert_eq!(client.reply().await.code, 220);
        assert_eq!(client.command("EHLO test.example").await.code, 250);
        client
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Reads one whole reply (all continuation lines); panics after 30 s or on EOF.
    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(30), self.try_reply())
            .await
            .expect("a reply within 30 s")
            .expect("a reply, not end of stream")
    }

    /// Reads one whole reply; `None` on end of stream.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code = line.get(..3)?.parse().expect("a reply code");
            let text = line.get(4..).unwrap_or("").trim_end().to_string();
            lines.push(text.clone());
            if line.as_bytes().get(3) == Some(&b' ') {
                return Some(Reply { code, text, lines });
            }
        }
    }

    pub async fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// A whole transaction without pipelining; returns the final reply.
    pub async fn submit(&mut self, sender: &str, message: &str) -> Reply {
        assert_eq!(
            self.command(&format!("MAIL FROM:<{sender}>")).await.code,
            250
        );
        assert_eq!(
            self.command("RCPT TO:<requests@registry.example>")
                .await
                .code,
            250
        );
        assert_eq!(self.command("DATA").await.code, 354);
        self.send(message.as_bytes()).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}
