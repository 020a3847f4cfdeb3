//! The `landrush` command line: one subcommand per job. Each subcommand's arguments and code live
//! in the library (`landrush::cli`); this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// landrush: replays landrush scenarios against an intake buffer and verifies the contract
/// (docs/contract.md): FIFO order, zero loss, one acknowledgement per request.
///
/// A scenario (scenarios/*.toml) says when requests are due, from how many clients, and how
/// they misbehave; `run` plays it against any SMTP address and writes one record per
/// transmission into a run folder that the other subcommands read.
#[derive(Debug, Parser)]
#[command(name = "landrush", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play a scenario against an SMTP address and record every request.
    Run(landrush::cli::run::RunArgs),
    /// The organiser's side of a volunteers' run: registry, ack sink, stats, time reference.
    Observe(landrush::cli::observe::ObserveArgs),
    /// Write a run folder as one NAME.tar.gz with SHA-256 sums, to send back to the organiser.
    Bundle(landrush::cli::volunteer::BundleArgs),
    /// Combine the run folders of the shards of one scenario into one folder.
    Merge(landrush::cli::merge::MergeArgs),
    /// The whole rehearsal: start barrage, the fake registry and the ack sink, play the
    /// scenario, wait for the handover and the acks, check, report. Exit 1 on a failed check.
    Rehearse(landrush::cli::rehearse::RehearseArgs),
    /// Run the checkers (FIFO, loss, duplicates, retransmissions, acks) over a run folder.
    Check(landrush::cli::check::CheckArgs),
    /// Rebuild report.json, report.md and report.html of a run folder from its records.
    Report(landrush::cli::check::ReportArgs),
    /// Put the reports of two run folders side by side (ratios B/A).
    Compare(landrush::cli::check::CompareArgs),
    /// The CI gate: rehearse the runs of a gate file (or read run folders) and judge their
    /// thresholds; junit.xml and summary.md. Exit 1 when a threshold failed.
    Gate(landrush::cli::gate::GateArgs),
    /// Run barrage under strace during a burst and check that every 250 follows the fsync of the
    /// journal write that holds its request. Exit 1 when one came first.
    FsyncAudit(landrush::cli::fsync_audit::FsyncAuditArgs),
    /// Verify a buffer's order from the outside: recompute its hash chain from the handover API
    /// and check signed checkpoints against it. Exit 1 naming the first bad seq.
    Audit(landrush::cli::audit::AuditArgs),
    /// Run the barrage buffer built into landrush (`landrush buffer serve …`, same arguments
    /// as `barrage`): what `rehearse` starts as its child process.
    #[command(hide = true, disable_help_flag = true, disable_version_flag = true)]
    Buffer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Buffer { args } = cli.command {
        // barrage builds its own runtime and handles its own signals.
        return barrage::cli::main_with_args(std::iter::once("barrage".into()).chain(args));
    }
    raise_open_files_limit();
    let result = match cli.command {
        Command::Run(args) => runtime()
            .and_then(|rt| rt.block_on(landrush::cli::run::run_command(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Observe(args) => {
            init_logging();
            runtime()
                .and_then(|rt| rt.block_on(landrush::cli::observe::observe_command(args)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Bundle(args) => {
            landrush::cli::volunteer::bundle_command(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Merge(args) => {
            landrush::cli::merge::merge_command(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Rehearse(args) => {
            init_logging();
            runtime().and_then(|rt| rt.block_on(landrush::cli::rehearse::rehearse_command(args)))
        }
        Command::Gate(args) => {
            init_logging();
            runtime().and_then(|rt| rt.block_on(landrush::cli::gate::gate_command(args)))
        }
        Command::FsyncAudit(args) => runtime()
            .and_then(|rt| rt.block_on(landrush::cli::fsync_audit::fsync_audit_command(args))),
        Command::Audit(args) => {
            runtime().and_then(|rt| rt.block_on(landrush::cli::audit::audit_command(args)))
        }
        Command::Check(args) => landrush::cli::check::check_command(args),
        Command::Report(args) => landrush::cli::check::report_command(args),
        Command::Compare(args) => landrush::cli::check::compare_command(args),
        Command::Buffer { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("landrush: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Warnings of the harness's own parts (sinks, registry) on stderr; RUST_LOG overrides.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init()
        .ok();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Thousands of pre-connected clients need as many descriptors: raise the soft limit to the hard.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
