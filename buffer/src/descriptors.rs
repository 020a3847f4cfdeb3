//! File descriptors: every connection takes one, and the configured connection limits (SMTP, web
//! intake, handover API) easily add up to more than RLIMIT_NOFILE allows. A process out of
//! descriptors cannot even accept a connection to refuse it, so clients would get silence
//! instead of `421` (contract: Refusals). At start barrage raises its soft limit to the hard
//! one, keeps a reserve for the journal, the ack relay and the log, and clamps the connection
//! limits into what is left, with a warning that says what to raise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// How long a listener pauses after a failed accept (EMFILE and the like): the failure repeats
/// at once otherwise, and a pause lets descriptors come back.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// At most one accept-failure warning per listener this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A listener's accept failures, logged at most once per [`LOG_EVERY`] with the count since the
/// last line, so a process out of descriptors does not also flood its log.
#[derive(Debug, Default)]
pub struct AcceptFailures {
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// The next connection of `listener` (named `name` in the log). A failed accept (out of
    /// descriptors, a connection reset before accept) is counted and followed by a pause rather
    /// than returned, so every listener keeps serving. Cancel-safe, as `TcpListener::accept` is.
    pub async fn accept(&mut self, listener: &TcpListener, name: &str) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    self.record(name, &e);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    }

    /// Counts one failure of `listener`, and logs it unless one was logged lately.
    fn record(&mut self, listener: &str, error: &std::io::Error) {
        self.unlogged += 1;
        if self.last_log.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        tracing::warn!(
            "{listener}: accept failed {} time(s), last: {error} (out of descriptors? raise \
             RLIMIT_NOFILE or lower the connection limits)",
            self.unlogged
        );
        (self.last_log, self.unlogged) = (Some(Instant::now()), 0);
    }
}

/// Descriptors kept for everything but client connections (journal files, relay, log, and the
/// connections being refused with 421, each of which holds one for a moment).
pub const RESERVE: u64 = 64;

/// The connection limits, as configured or clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub smtp: usize,
    pub web: usize,
    pub api: usize,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct given, for this process.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return u64::MAX;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

impl ConnectionLimits {
    fn total(&self) -> u64 {
        (self.smtp + self.web + self.api) as u64
    }

    /// The limits that fit in `nofile` descriptors, or an error when not even a few fit. The API
    /// keeps a share of its own (a sixteenth, at least 8) so the registration system and
    /// monitoring get through a flood; SMTP and web share the rest in their configured ratio.
    pub fn fit(self, nofile: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            nofile >= RESERVE + 16,
            "RLIMIT_NOFILE is {nofile}: barrage needs at least {} descriptors. Raise it \
             (`ulimit -n`, LimitNOFILE= in a systemd unit)",
            RESERVE + 16
        );
        let left = nofile - RESERVE;
        if self.total() <= left {
            return Ok(self);
        }
        let api = (self.api as u64).min((left / 16).max(8));
        let rest = left - api;
        let asked = (self.smtp + self.web) as u64;
        let smtp = ((self.smtp as u64 * rest) / asked).max(1);
        let web = (rest - smtp.min(rest)).min(self.web as u64);
        Ok(ConnectionLimits {
            smtp: smtp as usize,
            web: web as usize,
            api: api as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASKED: ConnectionLimits = ConnectionLimits {
        smtp: 20_000,
        web: 10_000,
        api: 256,
    };

    #[test]
    fn limits_that_fit_are_kept() {
        assert_eq!(ASKED.fit(1 << 20).unwrap(), ASKED);
    }

    #[test]
    fn limits_beyond_the_descriptors_are_clamped_within_them() {
        let fitted = ASKED.fit(256).unwrap();
        assert!(fitted.total() <= 256 - RESERVE, "{fitted:?}");
        assert!(fitted.api >= 8 && fitted.smtp > fitted.web && fitted.web >= 1);
        assert!(ASKED.fit(40).is_err());
    }
}
