//! The command line, the top layer: one module per subcommand, each with its arguments, help
//! text and the code that turns them into calls of the layers below. `main.rs` only dispatches.
//!
//! [`target`] (the loopback-only rule for targets) and the helpers here are shared by the
//! subcommands; [`countdown`] is `run`'s countdown to the instant; [`rehearse::RehearsalFlags`] is the one mapping from rehearsal flags to
//! rehearsal options, for `rehearse` and for the gate's runs.

pub mod audit;
pub mod check;
pub mod countdown;
pub mod fsync_audit;
pub mod gate;
pub mod merge;
pub mod observe;
pub mod rehearse;
pub mod run;
pub mod target;
pub mod volunteer;

use std::path::PathBuf;
use std::time::Duration;

use time::macros::format_description;

use crate::scenario::duration::Dur;

/// A `DURATION` argument (`5s`, `250ms`).
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    text.parse::<Dur>()
        .map(|d| d.0)
        .map_err(|e| format!("{e:#}"))
}

/// `runs/NAME-YYYYMMDDTHHMMSSZ`: the default folder of a rehearsal or a gate.
pub fn default_out(name: &str) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats");
    PathBuf::from("runs").join(format!("{name}-{stamp}"))
}
