//! The buffer under test as a child process: started on free loopback ports in a data dir, found
//! through the `endpoints.json` it writes, stopped with SIGTERM, killed with SIGKILL and restarted
//! on the same data dir and ports (the handle the crash faults use).
//!
//! By default the child is landrush's own executable running its hidden `buffer` subcommand (which
//! is `barrage::cli::main_with_args`), so a fresh clone needs nothing but `cargo run -p landrush`;
//! `--barrage PATH` runs another barrage binary instead.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The buffer's log and config within the run folder (one node; node K of several has
/// `buffer-K.log` and `barrage-K.toml`, see [`node_files`]).
pub const BUFFER_LOG: &str = "buffer.log";
pub const BUFFER_CONFIG: &str = "barrage.toml";

/// Where node `node` (1-based) of `nodes` keeps its config and log in the run folder.
pub struct NodeFiles {
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The config and log of node `node` of `nodes` in `out_dir`.
pub fn node_files(out_dir: &Path, node: u32, nodes: u32) -> NodeFiles {
    match nodes {
        1 => NodeFiles {
            config: out_dir.join(BUFFER_CONFIG),
            log: out_dir.join(BUFFER_LOG),
        },
        _ => NodeFiles {
            config: out_dir.join(format!("barrage-{node}.toml")),
            log: out_dir.join(format!("buffer-{node}.log")),
        },
    }
}

/// How long a starting buffer may take to write its endpoints.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which program runs the buffer.
#[derive(Debug, Clone)]
pub struct BufferProgram {
    pub program: PathBuf,
    /// Arguments before `serve …` (`["buffer"]` for landrush's own hidden subcommand).
    pub prefix: Vec<OsString>,
}

impl BufferProgram {
    /// landrush's own executable, `landrush buffer serve …`.
    pub fn landrush_itself() -> anyhow::Result<Self> {
        Ok(BufferProgram {
            program: std::env::current_exe().context("cannot find landrush's own executable")?,
            prefix: vec!["buffer".into()],
        })
    }

    /// A `landrush` executable at `path` (tests use `CARGO_BIN_EXE_landrush`).
    pub fn landrush_at(path: impl Into<PathBuf>) -> Self {
        BufferProgram {
            program: path.into(),
            prefix: vec!["buffer".into()],
        }
    }

    /// A `barrage` executable at `path`, `barrage serve …`.
    pub fn barrage_at(path: impl Into<PathBuf>) -> Self {
        BufferProgram {
            program: path.into(),
            prefix: Vec::new(),
        }
    }

    /// Extra `serve` flags this program understands and a rehearsal wants: a web intake (where
    /// the build has one) on a free port rather than its fixed default, so rehearsals never clash.
    pub fn extra_serve_args(&self) -> Vec<OsString> {
        let help = std::process::Command::new(&self.program)
            .args(&self.prefix)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match help {
            Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--web ") => {
                vec!["--web".into(), "127.0.0.1:0".into()]
            }
            _ => Vec::new(),
        }
    }

    pub fn describe(&self) -> String {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.prefix.iter().map(|a| a.to_string_lossy().into_owned()));
        words.join(" ")
    }
}

/// Where and how the buffer runs.
#[derive(Debug, Clone)]
pub struct BufferSpec {
    pub program: BufferProgram,
    pub data_dir: PathBuf,
    /// The config file (`--config`).
    pub config: PathBuf,
    /// stdout and stderr of every start, appended.
    pub log: PathBuf,
    /// Listen addresses; port 0 picks free ports on the first start, a restart reuses them.
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    /// More `serve` arguments (see [`BufferProgram::extra_serve_args`]).
    pub extra_args: Vec<OsString>,
}

pub use barrage::endpoints::Endpoints;

/// A buffer child process.
pub struct Buffer {
    spec: BufferSpec,
    child: Option<Child>,
    endpoints: Endpoints,
    starts: u32,
}

impl Buffer {
    /// Starts the buffer and waits until it listens.
    pub async fn start(spec: BufferSpec) -> anyhow::Result<Buffer> {
        let (child, endpoints) = spawn(&spec).await?;
        Ok(Buffer {
            spec,
            child: Some(child),
            endpoints,
            starts: 1,
        })
    }

    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }

    pub fn spec(&self) -> &BufferSpec {
        &self.spec
    }

    /// How many times it was started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL (a crash at this instant) and reap it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("cannot SIGKILL the buffer")?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean stop; SIGKILL after `grace`. Returns how it ended.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => {
                tracing::warn!("the buffer did not stop within {grace:?} of SIGTERM: SIGKILL");
                child.start_kill()?;
                Ok(Some(child.wait().await?))
            }
        }
    }

    /// Starts it again on the same data dir and the same ports (after [`kill`](Buffer::kill) or
    /// [`terminate`](Buffer::terminate); kills a running one first).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        let mut spec = self.spec.clone();
        spec.smtp = self.endpoints.smtp;
        spec.http = self.endpoints.http;
        if let Some(web) = self.endpoints.web
            && let Some(at) = spec.extra_args.iter().position(|a| a == "--web")
            && at + 1 < spec.extra_args.len()
        {
            spec.extra_args[at + 1] = web.to_string().into();
        }
        let (child, endpoints) = spawn(&spec).await?;
        self.child = Some(child);
        self.endpoints = endpoints;
        self.starts += 1;
        Ok(())
    }
}

async fn spawn(spec: &BufferSpec) -> anyhow::Result<(Child, Endpoints)> {
    // Private, as barrage makes its own: the journal holds requesters' personal data.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spec.data_dir)
        .with_context(|| format!("cannot create {}", spec.data_dir.display()))?;
    // A file left by a killed buffer would point at the dead one.
    Endpoints::remove(&spec.data_dir);
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    let mut command = Command::new(&spec.program.program);
    command
        .args(&spec.program.prefix)
        .arg("serve")
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .arg("--smtp")
        .arg(spec.smtp.to_string())
        .arg("--http")
        .arg(spec.http.to_string())
        .arg("--config")
        .arg(&spec.config)
        .args(&spec.extra_args)
        .stdin(Stdio::null())
        // Through pipes, as under systemd: a disk-full fault (RLIMIT_FSIZE on the buffer) then
        // hits the buffer's own files, not its log.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    super::child::dies_with_landrush(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start the buffer ({})", spec.program.describe()))?;
    if let Some(out) = child.stdout.take() {
        copy_to_log(out, log.try_clone()?);
    }
    if let Some(err) = child.stderr.take() {
        copy_to_log(err, log);
    }
    let pid = child.id().unwrap_or(0);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the buffer ({}) exited at start with {status}; its log ({}) ends with:\n{}",
                spec.program.describe(),
                spec.log.display(),
                log_tail(&spec.log)
            );
        }
        if let Ok(Some(endpoints)) = Endpoints::read(&spec.data_dir)
            && (endpoints.pid == pid || pid == 0)
        {
            return Ok((child, endpoints));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!(
                "the buffer did not write {} within {START_TIMEOUT:?}; its log ({}) ends with:\n{}",
                Endpoints::path(&spec.data_dir).display(),
                spec.log.display(),
                log_tail(&spec.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends what the buffer writes to its log file, until the pipe closes.
fn copy_to_log(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static, log: std::fs::File) {
    tokio::spawn(async move {
        let mut log = tokio::fs::File::from_std(log);
        let _ = tokio::io::copy(&mut pipe, &mut log).await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut log).await;
    });
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// How long a node of a rehearsal owns the acks it claimed (barrage's default is a minute): a
/// node killed in a rehearsal is back or replaced within seconds, and the drain waits for its
/// acks.
pub const REHEARSAL_ACK_LEASE_SECS: i64 = 3;

/// The config a spawned barrage runs with: its data dir, acks relayed to our sink with short
/// backoffs (a relay outage in a rehearsal lasts seconds, not hours), and the PostgreSQL journal
/// at `journal_url` when the nodes share one (with short ack leases).
pub fn buffer_config(
    data_dir: &Path,
    ack_relay: Option<SocketAddr>,
    journal_url: Option<&str>,
) -> String {
    let mut config = toml::Table::new();
    config.insert(
        "data_dir".into(),
        toml::Value::String(data_dir.display().to_string()),
    );
    config.insert(
        "hostname".into(),
        toml::Value::String("barrage.rehearsal.localhost".into()),
    );
    if let Some(relay) = ack_relay {
        let mut ack = toml::Table::new();
        ack.insert("relay".into(), toml::Value::String(relay.to_string()));
        ack.insert(
            "from".into(),
            toml::Value::String("registry@registry.invalid".into()),
        );
        ack.insert("concurrency".into(), toml::Value::Integer(8));
        ack.insert("backoff_initial_ms".into(), toml::Value::Integer(100));
        ack.insert("backoff_max_ms".into(), toml::Value::Integer(1000));
        ack.insert("timeout_secs".into(), toml::Value::Integer(10));
        config.insert("ack".into(), toml::Value::Table(ack));
    }
    if let Some(url) = journal_url {
        let mut journal = toml::Table::new();
        journal.insert("url".into(), toml::Value::String(url.into()));
        journal.insert(
            "ack_lease_secs".into(),
            toml::Value::Integer(REHEARSAL_ACK_LEASE_SECS),
        );
        config.insert("journal".into(), toml::Value::Table(journal));
    }
    format!(
        "# Written by `landrush rehearse` for the buffer it started.\n{}",
        toml::to_string(&config).expect("a TOML table serializes")
    )
}
