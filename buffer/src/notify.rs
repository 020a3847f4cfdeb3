//! Tells the service manager how barrage is doing, with systemd's `sd_notify` datagram protocol
//! (`man sd_notify`): `READY=1` once every listener is bound and the journal is open, `STOPPING=1`
//! when a shutdown begins, and `WATCHDOG=1` pings while the journal writer still commits.
//!
//! Without `NOTIFY_SOCKET` in the environment (barrage started by hand, by the harness, or by a
//! unit without `Type=notify`) every call here does nothing. The protocol is one datagram of
//! `KEY=VALUE` lines to the socket `NOTIFY_SOCKET` names: a path, or `@name` for Linux's abstract
//! namespace. It is written here rather than taken from the `sd-notify` crate because that crate
//! (0.5) connects `@name` as a file path, so abstract sockets (used by containers and some
//! service managers) would silently get nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use crate::journal::Journal;

/// Sends `READY=1` and, when systemd asked for a watchdog, starts pinging it. Call it once every
/// listener is bound and `journal` is open, from inside the runtime.
pub fn ready<J: Journal>(journal: &Arc<J>) {
    send("READY=1\nSTATUS=serving");
    let pid = std::process::id();
    let watchdog = std::env::var("WATCHDOG_USEC").ok();
    let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
    if let Some(period) = ping_period(watchdog.as_deref(), watchdog_pid.as_deref(), pid) {
        tokio::spawn(watchdog_pings(journal.clone(), period));
    }
}

/// Sends `STOPPING=1`: systemd then waits for the exit instead of calling it a failure.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: finishing transactions in flight");
}

/// How often to ping, given `WATCHDOG_USEC` and `WATCHDOG_PID`: half the watchdog timeout, as
/// `sd_watchdog_enabled(3)` recommends, and only when the watchdog is meant for this process.
pub fn ping_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&us| us > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Pings once per `period` for as long as the journal writer commits a probe transaction.
///
/// The probe is a cursor commit to the cursor the journal already has, so it changes nothing: it
/// waits in the writer's queue behind every request ahead of it, so its answer proves the writer
/// took all of those and committed their batch. Under load it rides in a batch with requests
/// (no extra fsync); when idle it is an empty transaction, counted in `barrage_commits_total`.
/// A writer that hangs (a stuck disk) never answers and one that cannot commit (the database
/// locked by another process) answers an error: either way no ping goes out and systemd
/// restarts barrage once `WatchdogSec` passes.
async fn watchdog_pings<J: Journal>(journal: Arc<J>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cursor = journal.stats().cursor;
        match journal.commit_cursor(cursor).await {
            Ok(_) => send("WATCHDOG=1"),
            Err(e) => tracing::warn!(
                "watchdog ping withheld: the journal did not commit a probe transaction ({e}); \
                 systemd restarts barrage if this lasts WatchdogSec"
            ),
        }
    }
}

/// Sends one notification to `NOTIFY_SOCKET`, if set. Failures are logged, never fatal: a lost
/// `READY=1` shows as a start timeout in `systemctl status`, which the log line explains.
fn send(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = notify_address(&target).and_then(|address| {
        let socket = UnixDatagram::unbound()?;
        socket.connect_addr(&address)?;
        socket.send(state.as_bytes())
    });
    match sent {
        Ok(n) if n == state.len() => {}
        Ok(n) => tracing::error!("sd_notify: only {n} bytes of {state:?} were sent"),
        Err(e) => tracing::error!(
            "cannot tell the service manager {state:?} through NOTIFY_SOCKET={}: {e}",
            target.to_string_lossy()
        ),
    }
}

/// The socket `NOTIFY_SOCKET` names: `/path` or `@abstract-name`.
fn notify_address(target: &std::ffi::OsStr) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    match target.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        path @ [b'/', ..] => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET must be an absolute path or @name (vsock is not supported)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout_only_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(ping_period(Some("30000000"), None, 7), half);
        assert_eq!(ping_period(Some("30000000"), Some("7"), 7), half);
        assert_eq!(ping_period(Some("30000000"), Some("8"), 7), None);
        assert_eq!(ping_period(Some("0"), None, 7), None);
        assert_eq!(ping_period(Some("soon"), None, 7), None);
        assert_eq!(ping_period(None, Some("7"), 7), None);
    }

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        let abstract_name = notify_address("@barrage/notify".as_ref()).unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"barrage/notify"[..])
        );
        let path = notify_address("/run/systemd/notify".as_ref()).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(notify_address("vsock:2:1234".as_ref()).is_err());
        assert!(notify_address("relative".as_ref()).is_err());
    }
}
