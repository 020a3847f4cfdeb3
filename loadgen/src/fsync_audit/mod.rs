//! `landrush fsync-audit`: proves "durable before success" (contract: Durability) by a method
//! that can fail, which a SIGKILL cannot: after a SIGKILL the kernel still holds the unsynced writes, so a
//! buffer that replies before its fsync survives it. Here the buffer runs under
//! `strace -f -tt -T -y`, a scenario is played against it, and the trace is checked: every
//! `250 … ticket N` written to a client socket must come after an `fsync`/`fdatasync` of the
//! journal's WAL file that began after the first journal write holding request N and completed
//! before the reply was written.
//!
//! Which write holds N: the driver's `sent.jsonl` gives N's Message-ID; the journal stores the
//! Message-ID as text in the request's row, so the first write to the journal file whose data
//! contains it (strace prints the data, `-s` large enough for a page) is the write of N's batch.
//! File descriptors are mapped to paths with `-y`; the journal is the file whose path ends with
//! `-wal` (SQLite's write-ahead log; `--journal-suffix` for another buffer).
//!
//! [`trace`] (reading the trace) and [`audit`] (judging it) are pure; [`run_audit`] starts the
//! buffer under strace and plays.

pub mod audit;
pub mod trace;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use reports::records::{self, SentRecord};

use crate::driver::RunOptions;
use crate::driver::smtp::run_scenario;
use crate::rehearse::buffer::{BufferProgram, Endpoints};
use crate::rehearse::child::dies_with_landrush;
use crate::schedule::ValidScenario;
use audit::{AuditReport, audit};
use trace::{TRACED, parse_trace};

/// The program audited: started as `strace … -- PROGRAM ARGS` with `ENVS`; it must write
/// `endpoints.json` (`{"smtp": ADDR, …}`) into `data_dir` once it listens, as barrage does.
#[derive(Debug, Clone)]
pub struct AuditTarget {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub envs: Vec<(OsString, OsString)>,
    pub data_dir: PathBuf,
}

impl AuditTarget {
    /// barrage (`program` as in rehearse) serving from `data_dir`, without acks, on free loopback
    /// ports only (its web intake too, where the build has one), so audits never clash.
    pub fn barrage(program: &BufferProgram, data_dir: &Path, config: &Path) -> AuditTarget {
        let mut args = program.prefix.clone();
        args.extend(
            [
                "serve",
                "--data-dir",
                &data_dir.display().to_string(),
                "--smtp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--config",
                &config.display().to_string(),
            ]
            .map(OsString::from),
        );
        args.extend(program.extra_serve_args());
        AuditTarget {
            program: program.program.clone(),
            args,
            envs: Vec::new(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

/// How long the audited buffer may take to listen under strace.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The audited buffer under strace. Dropping it kills both: strace dies with landrush, and the
/// traced buffer (which a dying strace would leave running, detached) is killed by its pid.
struct Traced {
    strace: tokio::process::Child,
    smtp: SocketAddr,
    pid: u32,
    stopped: bool,
}

impl Traced {
    /// Starts `target` under strace (trace in `trace`, output in `out/buffer.log`) and waits until
    /// it listens.
    async fn start(target: &AuditTarget, out: &Path, trace: &Path) -> anyhow::Result<Traced> {
        let log = std::fs::File::create(out.join("buffer.log"))?;
        Endpoints::remove(&target.data_dir);
        let mut command = tokio::process::Command::new("strace");
        command
            .args(["-f", "-tt", "-T", "-y", "-s", "8192", "-e", TRACED])
            .args(["-e", "signal=none", "-o"])
            .arg(trace)
            .arg("--")
            .arg(&target.program)
            .args(&target.args)
            .envs(target.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        dies_with_landrush(&mut command);
        let mut strace = command
            .spawn()
            .context("cannot start strace (Debian package `strace`)")?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let ends = loop {
            if let Some(status) = strace.try_wait()? {
                bail!(
                    "the audited buffer exited at start with {status}: see {}",
                    out.join("buffer.log").display()
                );
            }
            if let Ok(Some(e)) = Endpoints::read(&target.data_dir) {
                break e;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the audited buffer did not write {} within {START_TIMEOUT:?}",
                    Endpoints::path(&target.data_dir).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Traced {
            strace,
            smtp: ends.smtp,
            pid: ends.pid,
            stopped: false,
        })
    }

    /// SIGTERM to the traced buffer (not to strace: it exits with its tracee and flushes the
    /// trace), SIGKILL to both if that takes more than 30 s.
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.stopped = true;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(30), self.strace.wait())
            .await
            .is_err()
        {
            self.kill_buffer();
            self.strace.start_kill()?;
            self.strace.wait().await?;
        }
        Ok(())
    }

    fn kill_buffer(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if !self.stopped {
            self.kill_buffer();
        }
    }
}

/// Starts `target` under strace (trace in `out/strace.txt`), plays `scenario` against it
/// (`out/sent.jsonl`), stops it with SIGTERM and audits the trace (`out/fsync-audit.json`).
pub async fn run_audit(
    target: &AuditTarget,
    scenario: &ValidScenario,
    out: &Path,
    journal_suffix: &str,
) -> anyhow::Result<AuditReport> {
    std::fs::create_dir_all(out)?;
    std::fs::create_dir_all(&target.data_dir)?;
    let trace = out.join("strace.txt");
    let mut traced = Traced::start(target, out, &trace).await?;
    let played = run_scenario(
        scenario,
        traced.smtp,
        out,
        RunOptions {
            progress: false,
            print_summary: false,
            target_label: Some(format!("{} under strace", target.program.display())),
            ..RunOptions::default()
        },
    )
    .await;
    traced.stop().await?;
    played?;
    let sent: Vec<SentRecord> = records::read_all(&out.join(records::SENT))?;
    let text = std::fs::read_to_string(&trace)
        .with_context(|| format!("cannot read {}", trace.display()))?;
    let report = audit(&parse_trace(&text), &sent, journal_suffix);
    std::fs::write(
        out.join("fsync-audit.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::audit::audit;
    use super::trace::{parse_trace, quoted_strings};
    use reports::records::SentRecord;

    const TRACE: &str = r#"100   09:00:00.000100 pwrite64(7</d/journal.db-wal>, "\0\0\0\1<r1.2a@landrush.invalid>\3\0", 4096, 32) = 4096 <0.000010>
100 09:00:00.000200 fdatasync(7</d/journal.db-wal> <unfinished ...>
101 09:00:00.000250 write(9<socket:[123]>, "250 2.0.0 queued as ticket 1 at 2026-12-01T09:00:00Z\r\n", 55) = 55 <0.000005>
100 09:00:00.001000 <... fdatasync resumed>) = 0 <0.000800>
101 09:00:00.001100 write(9<socket:[123]>, "250 2.0.0 queued as ticket 1 at 2026-12-01T09:00:00Z\r\n", 55) = 55 <0.000005>
100 09:00:00.002000 pwrite64(7</d/journal.db-wal>, "<r2.2a@landrush.invalid>", 4096, 4128) = 4096 <0.000010>
101 09:00:00.002100 writev(10<socket:[124]>, [{iov_base="250 2.0.0 queued as ticket 2 at x\r\n", iov_len=35}], 1) = 35 <0.000005>
100 09:00:00.003000 fsync(7</d/journal.db-wal>) = 0 <0.000500>
"#;

    fn sent(id: &str, ticket: u64) -> SentRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "client": 0, "message_id": format!("<{id}.2a@landrush.invalid>"),
            "domain": "a.fr", "intended_at": "2026-12-01T09:00:00.000000Z",
            "sent_at": null, "replied_at": null, "code": 250, "reply": "", "ticket": ticket,
            "outcome": "accepted"
        }))
        .unwrap()
    }

    #[test]
    fn the_trace_is_parsed_with_paths_times_and_data() {
        let calls = parse_trace(TRACE);
        assert_eq!(calls.len(), 7);
        let sync = &calls[2];
        assert_eq!(sync.name, "fdatasync");
        assert_eq!(sync.path, "/d/journal.db-wal");
        assert_eq!(
            (sync.start_us, sync.end_us),
            (32_400_000_200, 32_400_001_000)
        );
        assert!(
            calls[0].data.starts_with(b"\0\0\0\x01<r1."),
            "{:?}",
            calls[0].data
        );
        assert_eq!(calls[1].path, "socket:[123]");
        assert!(
            String::from_utf8_lossy(&calls[5].data).starts_with("250 2.0.0 queued as ticket 2")
        );
    }

    #[test]
    fn a_reply_before_the_fsync_completed_fails_and_one_after_passes() {
        let calls = parse_trace(TRACE);
        let sent = [sent("r1", 1), sent("r2", 2)];
        let report = audit(&calls, &sent, "-wal");
        assert_eq!(report.replies, 3);
        assert_eq!(report.checked, 3);
        assert_eq!(report.journal_syncs, 2);
        // The first reply for ticket 1 came while its fdatasync was still running; ticket 2's
        // reply came before its fsync began.
        assert_eq!(report.before_fsync, 2, "{report:?}");
        assert!(!report.ok);
        assert!(
            report.examples[0].contains("ticket 1"),
            "{:?}",
            report.examples
        );

        // Without the early replies the rule holds.
        let honest: String = TRACE
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2 && *i != 6)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let report = audit(&parse_trace(&honest), &sent[..1], "-wal");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checked, 1);
    }

    #[test]
    fn a_reply_without_a_journal_write_fails_and_an_empty_trace_is_no_pass() {
        let trace = "5 10:00:00.000001 write(9<socket:[1]>, \"250 ok ticket 1\\r\\n\", 17) = 17 <0.000001>\n";
        let report = audit(&parse_trace(trace), &[sent("r1", 1)], "-wal");
        assert_eq!(report.before_write, 1);
        assert!(!report.ok);
        let report = audit(&[], &[], "-wal");
        assert!(!report.ok, "nothing checked is not a pass");
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(
            quoted_strings(r#"3</a"b>, "a\"b\\\n\x41\101\0", 3"#),
            b"a\"b\\\nAA\0"
        );
    }
}
