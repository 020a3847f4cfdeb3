//! The `landrush fsync-audit` subcommand: arguments, help, and the audit of barrage in a temporary
//! data dir ([`crate::fsync_audit`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::fsync_audit::{AuditTarget, run_audit};
use crate::rehearse::buffer::{BufferProgram, buffer_config};
use crate::schedule::ValidScenario;

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
    let scenario = ValidScenario::load(&args.scenario)?;
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
    std::fs::write(&config, buffer_config(data.path(), None, None))?;
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
