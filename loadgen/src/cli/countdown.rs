//! The countdown `landrush run` prints on stderr before the agreed instant: a line at T-60s,
//! T-30s, T-10s, T-5s … T-1s (those still ahead), then `firing`. A side task that only watches the
//! clock: the driver's schedule owns the instant and never waits for it, and the task is cancelled
//! when the run is stopped or over, so it can neither delay the firing nor outlive the run.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use reports::records::Stamp;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::driver::Clock;

/// Seconds before the instant at which a line is printed (one line each: a log stays short).
const STEPS: [u64; 8] = [60, 30, 10, 5, 4, 3, 2, 1];

/// An instant nearer than this gets no countdown: there is nothing to wait for.
pub const MIN_LEAD: Duration = Duration::from_secs(2);

/// The steps still ahead when the instant is `lead` away, in the order they are printed; none
/// when the instant is less than [`MIN_LEAD`] away.
fn steps_ahead(lead: Duration) -> Vec<u64> {
    if lead < MIN_LEAD {
        return Vec::new();
    }
    STEPS
        .into_iter()
        .filter(|&step| Duration::from_secs(step) < lead)
        .collect()
}

/// Starts the countdown to `start_at`, on the wall clock the driver maps its schedule from. It
/// ends at the instant, when `stop` is cancelled, or when the returned guard is dropped (hold it
/// for the run). `None`: the instant is too near for a countdown.
pub fn start(start_at: Stamp, stop: &CancellationToken) -> Option<DropGuard> {
    let clock = Clock::now();
    let at = clock.instant(start_at);
    let lead = at.saturating_duration_since(Instant::now());
    let steps = steps_ahead(lead);
    if steps.is_empty() {
        return None;
    }
    let cancel = stop.child_token();
    let ended = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = ended.cancelled() => {}
            () = count_down(at, steps) => {}
        }
    });
    Some(cancel.drop_guard())
}

async fn count_down(at: Instant, steps: Vec<u64>) {
    let terminal = std::io::stderr().is_terminal();
    for step in steps {
        tokio::time::sleep_until(at - Duration::from_secs(step)).await;
        say(terminal, &format!("landrush: T-{step}s"));
    }
    tokio::time::sleep_until(at).await;
    say(terminal, "landrush: T-0 firing");
}

/// One line. On a terminal it first clears the line, where the live progress line may be drawn.
fn say(terminal: bool, line: &str) {
    let clear = if terminal { "\r\x1b[2K" } else { "" };
    let _ = writeln!(std::io::stderr().lock(), "{clear}{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_steps_still_ahead_are_printed() {
        let secs = Duration::from_secs_f64;
        assert_eq!(steps_ahead(secs(90.0)), STEPS.to_vec());
        assert_eq!(steps_ahead(secs(7.5)), vec![5, 4, 3, 2, 1]);
        assert_eq!(steps_ahead(secs(3.0)), vec![2, 1]);
        assert_eq!(steps_ahead(secs(2.0)), vec![1]);
        assert!(steps_ahead(secs(1.9)).is_empty(), "a moment away: none");
        assert!(steps_ahead(Duration::ZERO).is_empty());
    }
}
