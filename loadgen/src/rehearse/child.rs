//! Child processes that die with landrush: every process a run starts (the buffer, strace, a
//! gate's `before`/`after` commands, prlimit) gets SIGKILL when landrush exits, on every path:
//! dropped handles kill it (`kill_on_drop`), and the kernel kills it if landrush itself dies
//! (`PR_SET_PDEATHSIG`), even by SIGKILL.
//!
//! The death signal fires when the thread that spawned the child ends: spawn from the runtime's
//! worker threads (or the main thread), which live as long as landrush, not from a
//! `spawn_blocking` thread.

use tokio::process::Command;

/// Makes `command`'s process die with landrush (see the module doc).
pub fn dies_with_landrush(command: &mut Command) -> &mut Command {
    // The same hook on the std command tokio forks from.
    pgcluster::dies_with_parent(command.as_std_mut());
    command.kill_on_drop(true)
}
