//! The `landrush` command line: one subcommand per job. Each subcommand's arguments and code live
//! in the library (`landrush::driver::cli` for `run` and `merge`); this file only dispatches.

use clap::{Parser, Subcommand};

/// landrush: replays landrush scenarios against an intake buffer and verifies the contract
/// (DESIGN.md): FIFO order, zero loss, one acknowledgement per request.
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
    Run(landrush::driver::cli::RunArgs),
    /// Combine the run folders of the shards of one scenario into one folder.
    Merge(landrush::driver::cli::MergeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_open_files_limit();
    match cli.command {
        Command::Run(args) => runtime()?.block_on(landrush::driver::cli::run_command(args)),
        Command::Merge(args) => landrush::driver::cli::merge_command(args),
    }
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
