//! `landrush fsync-audit`: proves "durable before success" (DESIGN.md rule 1) by a method that can
//! fail, which a SIGKILL cannot: after a SIGKILL the kernel still holds the unsynced writes, so a
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
//! [`parse_trace`] and [`audit`] are pure; [`run_audit`] starts the buffer under strace and plays.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use reports::records::{self, Outcome, SentRecord};
use serde::Serialize;

use crate::driver::{RunOptions, run_scenario};
use crate::rehearse::{BufferProgram, buffer_config};
use crate::scenario::Scenario;

/// The syscalls traced: the journal's writes and syncs, the replies, the opens.
pub const TRACED: &str = "trace=fsync,fdatasync,pwrite64,write,sendto,writev,openat";

/// One traced system call of interest.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub pid: u32,
    pub name: String,
    /// The file descriptor's path as `-y` prints it (`/tmp/d/journal.db-wal`,
    /// `TCP:[…]`, `socket:[…]`).
    pub path: String,
    /// Entry and return, microseconds since midnight (from `-tt` and `-T`).
    pub start_us: i64,
    pub end_us: i64,
    /// The return value (negative on error).
    pub ret: i64,
    /// The data written (strace's escapes decoded), for write-like calls.
    pub data: Vec<u8>,
}

/// Parses an `strace -f -tt -T -y` output (with pids, as `-o FILE -f` writes them) into the calls
/// of interest, joining `<unfinished …>` and `<… resumed>` halves.
pub fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: HashMap<u32, (String, i64)> = HashMap::new();
    let mut day = 0i64;
    let mut last = 0i64;
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(pid), Some(ts), Some(rest)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let (Ok(pid), Some(mut ts)) = (pid.parse::<u32>(), parse_clock(ts)) else {
            continue;
        };
        ts += day;
        if ts + 43_200_000_000 < last {
            // Past midnight.
            day += 86_400_000_000;
            ts += 86_400_000_000;
        }
        last = last.max(ts);
        let (head, start) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((head, start)) = pending.remove(&pid) else {
                continue;
            };
            let tail = resumed
                .split_once(" resumed>")
                .map(|(_, t)| t)
                .unwrap_or("");
            (head + tail, start)
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, (head.to_string(), ts));
            continue;
        } else {
            (rest.to_string(), ts)
        };
        if let Some(call) = parse_call(pid, &head, start, ts) {
            calls.push(call);
        }
    }
    calls
}

/// `HH:MM:SS.uuuuuu` → microseconds since midnight.
fn parse_clock(ts: &str) -> Option<i64> {
    let (hms, frac) = ts.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// One complete line `name(args) = ret <dur>`.
fn parse_call(pid: u32, line: &str, start: i64, printed: i64) -> Option<Call> {
    let open = line.find('(')?;
    let name = &line[..open];
    if !matches!(
        name,
        "fsync" | "fdatasync" | "pwrite64" | "write" | "sendto" | "writev" | "pwritev" | "pwritev2"
    ) {
        return None;
    }
    let args = &line[open + 1..];
    // The fd and its path: `12</tmp/x/journal.db-wal>` (paths may hold `>`: take the first `>,`
    // or `>)`).
    let lt = args.find('<')?;
    let after = &args[lt + 1..];
    let close = after
        .find(">, ")
        .or_else(|| after.find(">)"))
        .unwrap_or(after.len());
    let path = after[..close].to_string();
    let (body, result) = line.rsplit_once(" = ")?;
    let mut result_words = result.split_whitespace();
    let ret: i64 = result_words.next()?.parse().ok()?;
    let dur_us = result
        .rsplit_once('<')
        .and_then(|(_, d)| d.trim_end_matches('>').parse::<f64>().ok())
        .map(|d| (d * 1e6).round() as i64);
    let end = dur_us.map_or(printed, |d| start + d);
    let data = quoted_strings(&body[open + 1..]);
    Some(Call {
        pid,
        name: name.to_string(),
        path,
        start_us: start,
        end_us: end,
        ret,
        data,
    })
}

/// Every quoted string of `args`, decoded and concatenated.
fn quoted_strings(args: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = args.as_bytes();
    let mut i = 0;
    let mut inside = false;
    while i < bytes.len() {
        let c = bytes[i];
        if !inside {
            if c == b'"' {
                inside = true;
            } else if c == b'<' {
                // Skip a `<path>` annotation: paths may hold quotes.
                while i < bytes.len() && bytes[i] != b'>' {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => inside = false,
            b'\\' if i + 1 < bytes.len() => {
                i += 1;
                match bytes[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let hex = std::str::from_utf8(&bytes[i + 1..(i + 3).min(bytes.len())])
                            .unwrap_or("");
                        out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        let mut v: u32 = 0;
                        let mut n = 0;
                        while n < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                            v = v * 8 + u32::from(bytes[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        out.push(v as u8);
                        continue;
                    }
                    other => out.push(other),
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// The audit's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditReport {
    /// True when at least one reply was checked and none broke the rule.
    pub ok: bool,
    /// `250 … ticket N` replies found in the trace.
    pub replies: u64,
    /// Of those, checked against the journal (their request's Message-ID is known).
    pub checked: u64,
    /// Replies written before their request's data reached the journal file at all.
    pub before_write: u64,
    /// Replies written after the write but before an fsync of the journal completed.
    pub before_fsync: u64,
    /// Replies whose ticket is not in sent.jsonl (not judged).
    pub unknown_tickets: u64,
    /// Accepted requests of sent.jsonl whose reply is not in the trace.
    pub replies_missing: u64,
    /// Writes to and syncs of the journal file seen.
    pub journal_writes: u64,
    pub journal_syncs: u64,
    /// Replies per fsync of the journal: the group commit seen from outside.
    pub replies_per_sync: f64,
    pub examples: Vec<String>,
}

/// Checks `calls` against the tickets of `sent`: every 250 with a ticket must follow an fsync of
/// the journal (`path` ending with `journal_suffix`) that started after the first journal write
/// holding the ticket's Message-ID and completed before the reply was written.
pub fn audit(calls: &[Call], sent: &[SentRecord], journal_suffix: &str) -> AuditReport {
    let mut report = AuditReport::default();
    let mut ticket_ids: HashMap<u64, &str> = HashMap::new();
    let mut wanted: HashMap<&str, u64> = HashMap::new();
    for s in sent {
        if s.outcome == Outcome::Accepted
            && let Some(t) = s.ticket
        {
            ticket_ids.entry(t).or_insert(s.message_id.as_str());
            wanted.entry(s.message_id.as_str()).or_insert(t);
        }
    }
    // When each Message-ID first reached the journal.
    let mut written: HashMap<&str, i64> = HashMap::new();
    let mut syncs: Vec<(i64, i64)> = Vec::new();
    let mut replies: Vec<(u64, i64)> = Vec::new();
    for call in calls {
        let journal = call.path.ends_with(journal_suffix);
        match call.name.as_str() {
            "fsync" | "fdatasync" if journal && call.ret == 0 => {
                syncs.push((call.start_us, call.end_us));
            }
            _ if journal && call.ret > 0 => {
                report.journal_writes += 1;
                for id in message_ids(&call.data) {
                    if let Some((key, _)) = wanted.get_key_value(id) {
                        written.entry(key).or_insert(call.end_us);
                    }
                }
            }
            "write" | "sendto" | "writev" if !journal && call.ret > 0 => {
                for line in call.data.split(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(line);
                    if line.starts_with("250")
                        && let Some(t) = crate::driver::smtp::parse_ticket(&line)
                    {
                        replies.push((t, call.start_us));
                    }
                }
            }
            _ => {}
        }
    }
    report.journal_syncs = syncs.len() as u64;
    report.replies = replies.len() as u64;
    syncs.sort_unstable();
    let mut replied = std::collections::HashSet::new();
    for &(ticket, at) in &replies {
        replied.insert(ticket);
        let Some(id) = ticket_ids.get(&ticket) else {
            report.unknown_tickets += 1;
            continue;
        };
        report.checked += 1;
        let Some(&w) = written.get(id) else {
            report.before_write += 1;
            example(
                &mut report.examples,
                format!(
                    "ticket {ticket} ({id}) replied at {}: its data never reached the journal",
                    clock(at)
                ),
            );
            continue;
        };
        if w > at {
            report.before_write += 1;
            example(
                &mut report.examples,
                format!(
                    "ticket {ticket} ({id}) replied at {}, {} µs before its journal write ({})",
                    clock(at),
                    w - at,
                    clock(w)
                ),
            );
            continue;
        }
        // A sync that began after the write and ended before the reply.
        let first = syncs.partition_point(|&(s, _)| s < w);
        let covered = syncs[first..]
            .iter()
            .take_while(|&&(s, _)| s <= at)
            .any(|&(_, e)| e <= at);
        if !covered {
            report.before_fsync += 1;
            let next = syncs[first..]
                .iter()
                .find(|&&(s, _)| s >= w)
                .map(|&(_, e)| format!("the next fsync of the journal completed at {}", clock(e)))
                .unwrap_or_else(|| "no fsync of the journal followed".into());
            example(
                &mut report.examples,
                format!(
                    "ticket {ticket} ({id}) replied at {} after its journal write at {} but \
                     before any fsync of it completed: {next}",
                    clock(at),
                    clock(w)
                ),
            );
        }
    }
    report.replies_missing = ticket_ids.keys().filter(|t| !replied.contains(t)).count() as u64;
    report.replies_per_sync = if syncs.is_empty() {
        0.0
    } else {
        replies.len() as f64 / syncs.len() as f64
    };
    report.ok = report.checked > 0
        && report.before_write == 0
        && report.before_fsync == 0
        && report.replies_missing == 0;
    report
}

fn example(examples: &mut Vec<String>, text: String) {
    if examples.len() < 5 {
        examples.push(text);
    }
}

fn clock(us: i64) -> String {
    let us = us.rem_euclid(86_400_000_000);
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        us / 3_600_000_000,
        us / 60_000_000 % 60,
        us / 1_000_000 % 60,
        us % 1_000_000
    )
}

/// The `<…@…>` Message-IDs in a journal write.
fn message_ids(data: &[u8]) -> impl Iterator<Item = &str> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < data.len() {
            let open = at + data[at..].iter().position(|&b| b == b'<')?;
            let end = (open + 256).min(data.len());
            let close = data[open + 1..end]
                .iter()
                .position(|&b| b == b'>' || b == b'<' || !(0x21..0x7f).contains(&b))
                .map(|p| open + 1 + p);
            match close {
                Some(c) if data[c] == b'>' => {
                    at = c + 1;
                    if let Ok(id) = std::str::from_utf8(&data[open..=c])
                        && id.contains('@')
                    {
                        return Some(id);
                    }
                }
                Some(c) => at = c,
                None => at = open + 1,
            }
        }
        None
    })
}

impl AuditReport {
    /// For people.
    pub fn render(&self) -> String {
        let mut s = format!(
            "fsync audit: {}\n  {} replies with a ticket in the trace, {} checked against {} \
             journal writes and {} journal syncs ({:.1} replies per sync)\n  replied before the \
             journal write: {}\n  replied after the write but before its fsync completed: {}\n  \
             accepted requests whose reply is not in the trace: {}\n  replies with a ticket not \
             in sent.jsonl: {}\n",
            if self.ok { "PASS" } else { "FAIL" },
            self.replies,
            self.checked,
            self.journal_writes,
            self.journal_syncs,
            self.replies_per_sync,
            self.before_write,
            self.before_fsync,
            self.replies_missing,
            self.unknown_tickets,
        );
        if self.checked == 0 {
            s.push_str("  nothing was checked: no reply to judge is not a pass\n");
        }
        for e in &self.examples {
            s.push_str(&format!("  - {e}\n"));
        }
        s
    }
}

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
    /// barrage (`program` as in rehearse) serving from `data_dir`, without acks.
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
        AuditTarget {
            program: program.program.clone(),
            args,
            envs: Vec::new(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

/// Starts `target` under strace (trace in `out/strace.txt`), plays `scenario` against it
/// (`out/sent.jsonl`), stops it with SIGTERM and audits the trace (`out/fsync-audit.json`).
pub async fn run_audit(
    target: &AuditTarget,
    scenario: &Scenario,
    out: &Path,
    journal_suffix: &str,
) -> anyhow::Result<AuditReport> {
    std::fs::create_dir_all(out)?;
    std::fs::create_dir_all(&target.data_dir)?;
    let trace = out.join("strace.txt");
    let log = std::fs::File::create(out.join("buffer.log"))?;
    let endpoints = target
        .data_dir
        .join(crate::rehearse::buffer::ENDPOINTS_FILE);
    let _ = std::fs::remove_file(&endpoints);
    let mut child = tokio::process::Command::new("strace")
        .args([
            "-f",
            "-tt",
            "-T",
            "-y",
            "-s",
            "8192",
            "-e",
            TRACED,
            "-e",
            "signal=none",
            "-o",
        ])
        .arg(&trace)
        .arg("--")
        .arg(&target.program)
        .args(&target.args)
        .envs(target.envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start strace (Debian package `strace`)")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    #[derive(serde::Deserialize)]
    struct Ends {
        smtp: SocketAddr,
        pid: u32,
    }
    let ends: Ends = loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the audited buffer exited at start with {status}: see {}",
                out.join("buffer.log").display()
            );
        }
        if let Ok(text) = std::fs::read_to_string(&endpoints)
            && let Ok(e) = serde_json::from_str::<Ends>(&text)
        {
            break e;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the audited buffer did not write {} within 60 s",
                endpoints.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let played = run_scenario(
        scenario,
        ends.smtp,
        out,
        RunOptions {
            progress: false,
            print_summary: false,
            target_label: Some(format!("{} under strace", target.program.display())),
            ..RunOptions::default()
        },
    )
    .await;
    // Stop the traced buffer (not strace: it exits with its tracee and flushes the trace).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ends.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        child.start_kill()?;
        child.wait().await?;
    }
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

/// `landrush fsync-audit`.
#[derive(Debug, Args)]
#[command(after_long_help = AUDIT_HELP)]
pub struct FsyncAuditArgs {
    /// The scenario played against the traced buffer (keep it small: strace slows it down).
    pub scenario: PathBuf,
    /// Where the trace, sent.jsonl and fsync-audit.json go [default: runs/fsync-audit-UTCTIME].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Audit this barrage executable (`PATH serve …`) instead of landrush's built-in one.
    #[arg(long, value_name = "PATH")]
    pub barrage: Option<PathBuf>,
    /// The journal is the file whose path ends with this.
    #[arg(long, value_name = "SUFFIX", default_value = "-wal")]
    pub journal_suffix: String,
}

const AUDIT_HELP: &str = "\
Runs barrage under `strace -f -tt -T -y -e trace=fsync,fdatasync,pwrite64,write,sendto,writev,openat`
in a temporary data dir, plays the scenario, and checks that every `250 … ticket N` written to a
client socket follows an fsync/fdatasync of the journal's WAL file that began after the first
journal write holding request N (found by its Message-ID) and completed before the reply.
A SIGKILL cannot tell this apart from replying before the fsync; this can.
Exit status: 0 pass, 1 a reply came before its fsync (or nothing could be checked), 2 error.

Example:
  landrush fsync-audit scenarios/fsync-audit.toml --out runs/fsync-audit";

/// Runs `landrush fsync-audit`.
pub async fn fsync_audit_command(args: FsyncAuditArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&args.scenario)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("fsync-audit-{}", std::process::id()))
    });
    let data = tempfile::Builder::new()
        .prefix("landrush-fsync-audit-")
        .tempdir()?;
    let program = match &args.barrage {
        Some(p) => BufferProgram::barrage_at(p),
        None => BufferProgram::landrush_itself()?,
    };
    std::fs::create_dir_all(&out)?;
    let config = out.join("barrage.toml");
    std::fs::write(&config, buffer_config(data.path(), None))?;
    let target = AuditTarget::barrage(&program, data.path(), &config);
    let report = run_audit(&target, &scenario, &out, &args.journal_suffix).await?;
    print!("{}", report.render());
    println!(
        "trace: {}/strace.txt; findings: {}/fsync-audit.json",
        out.display(),
        out.display()
    );
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"100 09:00:00.000100 pwrite64(7</d/journal.db-wal>, "\0\0\0\1<r1.2a@landrush.invalid>\3\0", 4096, 32) = 4096 <0.000010>
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
