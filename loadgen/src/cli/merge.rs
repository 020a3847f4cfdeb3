//! The `landrush merge` subcommand: combine the run folders or bundles of the shards of one
//! scenario, with the observer's records ([`crate::records::merge`]).

use std::path::PathBuf;

use clap::Args;

use crate::records::merge::{MergeRequest, merge_with};

/// `landrush merge`: combine the run folders of the shards of one scenario.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged folder to write.
    pub out: PathBuf,
    /// The shards' run folders or bundles (`NAME.tar.gz` from `landrush run --bundle`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The folder of `landrush observe --out`: its handed.jsonl, acks.jsonl and stats.jsonl are
    /// copied into the merged folder.
    #[arg(long, value_name = "DIR")]
    pub observed: Option<PathBuf>,
    /// Merge shards whose scenario, seed, tag, start, shard count, target or clock reference
    /// differ, recording every mismatch in run.json (refused without it).
    #[arg(long)]
    pub force: bool,
}

/// Runs `landrush merge`.
pub fn merge_command(args: MergeArgs) -> anyhow::Result<()> {
    let request = MergeRequest {
        inputs: args.dirs.clone(),
        observed: args.observed.clone(),
        force: args.force,
    };
    let info = merge_with(&args.out, &request)?;
    eprintln!(
        "landrush: merged {} shards into {}: {} transmissions, {} accepted, {} refused, {} \
         indeterminate",
        args.dirs.len(),
        args.out.display(),
        info.transmissions,
        info.accepted,
        info.refused,
        info.indeterminate
    );
    for w in &info.warnings {
        eprintln!("  !! {w}");
    }
    let keys = crate::records::provenance::read_object(&args.out)?;
    if let Some(list) = keys.get("mismatches").and_then(|m| m.as_array())
        && !list.is_empty()
    {
        eprintln!(
            "  !! --force: {} mismatches recorded in run.json",
            list.len()
        );
    }
    Ok(())
}
