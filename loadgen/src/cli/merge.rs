//! The `landrush merge` subcommand: combine the run folders of the shards of one scenario
//! ([`crate::records::merge`]).

use std::path::PathBuf;

use clap::Args;

/// `landrush merge`: combine the run folders of the shards of one scenario.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged folder to write.
    pub out: PathBuf,
    /// The shards' run folders.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

/// Runs `landrush merge`.
pub fn merge_command(args: MergeArgs) -> anyhow::Result<()> {
    let info = crate::records::merge::merge(&args.out, &args.dirs)?;
    eprintln!(
        "landrush: merged {} folders into {}: {} transmissions, {} accepted, {} refused, {} \
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
    Ok(())
}
