//! Throwaway PostgreSQL clusters for barrage's tests and landrush's rehearsals: `initdb` and a
//! postmaster in a folder the caller owns, listening on 127.0.0.1 (and a unix socket in that
//! folder), durable as production runs it (`fsync=on`, `synchronous_commit=on`), with a
//! synchronous standby on request, and faults on request (SIGKILL, restart, promote).
//!
//! Every postmaster is a direct child of this process (not daemonised by `pg_ctl`), so it dies
//! with it (see [`spawn_tied`]) and is SIGKILLed by [`Cluster::kill`] itself, not through a pid
//! file. Callers start their own children that must die with them the same way ([`spawn_tied`],
//! [`dies_with_parent`]).
//! Under root every PostgreSQL command runs as the `postgres` user, which must be able to reach
//! the folder (its parents searchable by others, as `/tmp` and a run folder under it are).

mod bin;
mod log;
mod spawn;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use bin::bindir;
pub use log::Log;
use spawn::Owner;
pub use spawn::{dies_with_parent, spawn_tied};

/// The superuser every URL names (`initdb -U`); authentication is `trust` on loopback.
pub const SUPERUSER: &str = "postgres";

/// How long a postmaster may take to become ready; far above what a busy machine needs.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Ports tried when the one the OS gave is taken before the postmaster binds it.
const PORT_ATTEMPTS: usize = 10;

/// Starts after a SIGKILL tried while the dead postmaster's backends still hold its memory.
const RESTART_ATTEMPTS: usize = 200;

/// A running (or killed) postmaster.
struct Postmaster {
    child: Child,
    log: Log,
}

/// One PostgreSQL cluster: a data dir, a port, and its postmaster when running.
pub struct Cluster {
    dir: PathBuf,
    /// `cluster_name`, also the standby's `application_name` on its primary.
    name: String,
    port: u16,
    bin: PathBuf,
    owner: Owner,
    postmaster: Mutex<Option<Postmaster>>,
    standbys: AtomicU32,
}

impl Cluster {
    /// Creates a cluster in `dir/data` (`dir` is made if missing) and starts it.
    pub fn start(dir: &Path) -> Result<Cluster> {
        let cluster = Cluster::prepare(dir, "primary".into())?;
        let data = cluster.data();
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            // Not fsynced (seconds on a busy disk): a machine crash during set-up loses the
            // run anyway. The server itself runs with fsync=on.
            "--no-sync",
        ]);
        cluster
            .owner
            .run("initdb", initdb)
            .with_context(|| format!("creating a PostgreSQL cluster in {}", data.display()))?;
        cluster.launch_on_free_port()
    }

    /// Makes a streaming replica of this cluster in `dir/data` (`pg_basebackup -R`), starts it
    /// and makes it this cluster's synchronous standby: from then on a commit here returns only
    /// once the standby has it.
    pub fn start_standby(&self, dir: &Path) -> Result<Cluster> {
        let number = self.standbys.fetch_add(1, Ordering::Relaxed) + 1;
        let standby = Cluster::prepare(dir, format!("{}_standby{number}", self.name))?;
        let mut backup = self.command("pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .arg("-D")
            .arg(standby.data())
            // Not fsynced, as initdb (see `start`); the standby runs with fsync=on.
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        self.owner.run("pg_basebackup", backup)?;
        let standby = standby.launch_on_free_port()?;
        // Set after the backup, so the standby does not inherit it (once promoted, it would
        // wait for a standby of its own that does not exist).
        let sql = format!(
            "ALTER SYSTEM SET synchronous_standby_names = '\"{}\"'",
            standby.name
        );
        self.psql("postgres", &sql)?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        let needle = format!("\"{}\" is now a synchronous standby", standby.name);
        self.log()?.wait_for(&needle, READY_TIMEOUT)?;
        Ok(standby)
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cluster_name` (for a standby, its name in `synchronous_standby_names`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(|p| p.child.id())
    }

    /// The current postmaster run's log (also appended to `dir/postgres.log`).
    pub fn log(&self) -> Result<Log> {
        match self.lock().as_ref() {
            Some(postmaster) => Ok(postmaster.log.clone()),
            None => bail!("the cluster in {} is not running", self.dir.display()),
        }
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        let quoted = name.replace('"', "\"\"");
        self.psql("postgres", &format!("CREATE DATABASE \"{quoted}\""))
            .map(drop)
    }

    /// Runs `sql` in `db` with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut psql = self.command("psql");
        psql.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            db,
            "-c",
            sql,
        ]);
        let output = self.owner.run("psql", psql)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// SIGKILLs the postmaster (its backends then exit by themselves) and reaps it.
    pub fn kill(&self) -> Result<()> {
        let Some(mut postmaster) = self.lock().take() else {
            bail!("the cluster in {} is not running", self.dir.display());
        };
        postmaster.child.kill().context("killing the postmaster")?;
        postmaster.child.wait().context("reaping the postmaster")?;
        Ok(())
    }

    /// Stops the postmaster (fast shutdown: sessions are ended, committed work is kept).
    pub fn stop(&self) -> Result<()> {
        let Some(mut postmaster) = self.lock().take() else {
            return Ok(());
        };
        signal(&postmaster.child, Signal::SIGINT)?;
        postmaster
            .child
            .wait()
            .context("waiting for the postmaster to stop")?;
        Ok(())
    }

    /// Stops the postmaster if it runs (or takes it as killed) and starts it again on the same
    /// port, waiting until it accepts connections (after crash recovery, when it was killed).
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        for _ in 0..RESTART_ATTEMPTS {
            match self.launch() {
                Ok(()) => return Ok(()),
                // The killed postmaster's backends have not all exited yet.
                Err(e) if format!("{e:#}").contains("pre-existing shared memory block") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        bail!(
            "PostgreSQL in {} did not restart: the killed postmaster's processes still hold its \
             shared memory; kill them (ps -u postgres)",
            self.dir.display()
        )
    }

    /// Promotes this standby to a primary and waits until it takes writes.
    pub fn promote(&self) -> Result<()> {
        let done = self.psql("postgres", "SELECT pg_promote(true, 120)")?;
        if done != "t" {
            bail!(
                "the standby in {} was not promoted: pg_promote said {done:?}",
                self.dir.display()
            );
        }
        Ok(())
    }

    fn prepare(dir: &Path, name: String) -> Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let owner = Owner::find()?;
        owner.adopt(&dir)?;
        Ok(Cluster {
            dir,
            name,
            port: 0,
            bin: bindir()?,
            owner,
            postmaster: Mutex::new(None),
            standbys: AtomicU32::new(0),
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Postmaster>> {
        self.postmaster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A PostgreSQL tool run in the cluster's folder (the postgres user may not read ours).
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        command
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        command
    }

    /// Starts the postmaster on a port the OS handed out, trying another when the port was
    /// taken between our probe and the postmaster's bind.
    fn launch_on_free_port(mut self) -> Result<Cluster> {
        for _ in 0..PORT_ATTEMPTS {
            self.port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            match self.launch() {
                Ok(()) => return Ok(self),
                Err(e) if format!("{e:#}").contains("could not bind") => continue,
                Err(e) => return Err(e),
            }
        }
        bail!("PostgreSQL found no free port on 127.0.0.1 in {PORT_ATTEMPTS} attempts")
    }

    /// Starts the postmaster and waits until it accepts connections.
    fn launch(&self) -> Result<()> {
        let mut postgres = self.command("postgres");
        postgres.arg("-D").arg(self.data());
        for setting in self.settings() {
            postgres.arg("-c").arg(setting);
        }
        postgres
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = self.owner.spawn(postgres)?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Log::follow(stderr, &self.dir.join("postgres.log"))?;
        if let Err(e) = log.wait_for("ready to accept", READY_TIMEOUT) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context(format!("starting PostgreSQL in {}", self.dir.display())));
        }
        *self.lock() = Some(Postmaster { child, log });
        Ok(())
    }

    fn settings(&self) -> Vec<String> {
        // A unix socket path is limited to 107 bytes; a deep folder gets TCP only.
        let socket = if self.dir.as_os_str().len() < 90 {
            self.dir.display().to_string()
        } else {
            String::new()
        };
        [
            "listen_addresses=127.0.0.1".to_string(),
            format!("port={}", self.port),
            format!("unix_socket_directories={socket}"),
            format!("cluster_name={}", self.name),
            "fsync=on".into(),
            "synchronous_commit=on".into(),
            "wal_level=replica".into(),
            "max_wal_senders=8".into(),
            "hot_standby=on".into(),
            // A primary learns that its standby became synchronous from the standby's next
            // status message: every second rather than every ten.
            "wal_receiver_status_interval=1".into(),
            "max_connections=200".into(),
            "shared_buffers=32MB".into(),
        ]
        .into()
    }
}

fn signal(child: &Child, signal: Signal) -> Result<()> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("a pid fits in i32")?);
    kill(pid, signal).with_context(|| format!("sending {signal} to the postmaster"))
}

impl Drop for Cluster {
    /// Immediate shutdown (nothing is kept for later), then SIGKILL if it lingers.
    fn drop(&mut self) {
        let Some(mut postmaster) = self.lock().take() else {
            return;
        };
        let _ = signal(&postmaster.child, Signal::SIGQUIT);
        for _ in 0..250 {
            if let Ok(Some(_)) = postmaster.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = postmaster.child.kill();
        let _ = postmaster.child.wait();
    }
}
