//! Children that die with this process ([`spawn_tied`], also for the callers' own children),
//! run as the PostgreSQL owner when we are root.
//!
//! PostgreSQL refuses to run as root, so under euid 0 every PostgreSQL command is run as the
//! `postgres` user (set between fork and exec). The kernel kills each child when this process
//! dies (`PR_SET_PDEATHSIG`), even by SIGKILL, so no cluster outlives a crashed test.
//!
//! The death signal fires when the *thread* that forked the child ends, and it is cleared when
//! the child changes its uid: so every child is forked by one spawner thread that lives as long
//! as the process, and the signal is armed after the uid change.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, mpsc};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Pid, Uid, User, getppid};

/// Who runs the PostgreSQL commands: `None` is ourselves (not root).
#[derive(Debug, Clone, Copy)]
pub struct Owner(Option<(Uid, Gid)>);

impl Owner {
    /// Ourselves, or the `postgres` user when we are root.
    pub fn find() -> Result<Owner> {
        if !Uid::effective().is_root() {
            return Ok(Owner(None));
        }
        let user = User::from_name("postgres")
            .context("looking up the postgres user")?
            .context(
                "running as root, PostgreSQL must run as the `postgres` user, which does not \
                 exist: install the Debian package `postgresql` (it creates it)",
            )?;
        Ok(Owner(Some((user.uid, user.gid))))
    }

    /// Gives `path` to the owner, so PostgreSQL can write there.
    pub fn adopt(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.0 {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    /// Sets the uid change and the death signal on `command` and starts it.
    pub fn spawn(&self, mut command: Command) -> Result<Child> {
        if let Some((uid, gid)) = self.0 {
            // SAFETY: between fork and exec only async-signal-safe calls are made (setgroups,
            // setgid, setuid): no allocation, no locks.
            unsafe {
                command.pre_exec(move || {
                    nix::unistd::setgroups(&[gid])?;
                    nix::unistd::setgid(gid)?;
                    nix::unistd::setuid(uid)?;
                    Ok(())
                });
            }
        }
        let program = command.get_program().to_string_lossy().into_owned();
        // After the uid change (hooks run in the order they were set), which would clear it.
        spawn_tied(command).with_context(|| format!("starting {program}"))
    }

    /// Runs `command` to its end and returns its output; fails naming `what` when it fails.
    pub fn run(&self, what: &str, mut command: Command) -> Result<Output> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = self
            .spawn(command)?
            .wait_with_output()
            .with_context(|| format!("waiting for {what}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }
}

/// Arms `command` so that the kernel SIGKILLs its process when the thread that forks it ends
/// (`PR_SET_PDEATHSIG`), or kills it at once when this process died before the signal was
/// armed. A uid change clears the signal: set it in an earlier hook (hooks run in order).
pub fn dies_with_parent(command: &mut Command) -> &mut Command {
    let parent = Pid::this();
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid,
    // kill): no allocation, no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // We died before the signal was armed: follow now.
            if getppid() != parent {
                nix::sys::signal::kill(Pid::this(), Signal::SIGKILL)?;
            }
            Ok(())
        });
    }
    command
}

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts `command` as a child the kernel kills when this process dies, however it dies: armed
/// by [`dies_with_parent`] and forked from the one long-lived spawner thread (see the module
/// doc), so that it outlives the thread that asked, such as a test's.
pub fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
    dies_with_parent(&mut command);
    let jobs = SPAWNER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(|| {
            let (jobs, queue) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("pgcluster-spawner".into())
                .spawn(move || {
                    for (mut command, reply) in queue {
                        let _ = reply.send(command.spawn());
                    }
                })
                .expect("the spawner thread starts");
            jobs
        })
        .clone();
    let (reply, spawned) = mpsc::channel();
    jobs.send((command, reply))
        .expect("the spawner thread runs as long as the process");
    spawned.recv().expect("the spawner thread answers")
}
