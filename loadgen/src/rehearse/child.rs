//! Child processes that die with landrush: every process a run starts (the buffer, strace, a
//! gate's `before`/`after` commands, prlimit) gets SIGKILL when landrush exits, on every path:
//! dropped handles kill it (`kill_on_drop`), and the kernel kills it if landrush itself dies
//! (`PR_SET_PDEATHSIG`), even by SIGKILL.
//!
//! The death signal fires when the thread that spawned the child ends: spawn from the runtime's
//! worker threads (or the main thread), which live as long as landrush, not from a
//! `spawn_blocking` thread.

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};
use tokio::process::Command;

/// Makes `command`'s process die with landrush (see the module doc).
pub fn dies_with_landrush(command: &mut Command) -> &mut Command {
    let parent = Pid::this();
    command.kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid,
    // kill), no allocation and no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // landrush died before the death signal was armed: follow it now.
            if getppid() != parent {
                nix::sys::signal::kill(Pid::this(), Signal::SIGKILL)?;
            }
            Ok(())
        });
    }
    command
}
