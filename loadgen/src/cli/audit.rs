//! The `landrush audit` subcommand: arguments, help, and the exit status of [`crate::audit`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::audit::{AuditInput, audit, parse_public_key, read_checkpoints, read_receipts};

/// `landrush audit`.
#[derive(Debug, Args)]
#[command(after_long_help = AUDIT_HELP)]
pub struct AuditArgs {
    /// The buffer's handover API, e.g. http://127.0.0.1:8025.
    #[arg(long, value_name = "URL")]
    pub handover: String,
    /// Bearer token of the handover API.
    #[arg(long, value_name = "TOKEN", env = "BARRAGE_API_TOKEN")]
    pub api_token: Option<String>,
    /// The buffer's public key, published before the day (the JSON of /v1/public-key, or hex).
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Checkpoints collected during the day, one JSON object of /v1/checkpoint per line.
    #[arg(long, value_name = "FILE")]
    pub checkpoints: Option<PathBuf>,
    /// Receipts requesters kept: a folder of ack mails (one raw mail per file), or a file of
    /// receipts as JSON lines. Each is checked like a checkpoint at its request's seq.
    #[arg(long, value_name = "DIR|FILE")]
    pub receipts: Option<PathBuf>,
}

const AUDIT_HELP: &str = "\
Pulls every row of GET /v1/requests (raw=true), recomputes raw_sha256 and the hash chain
(docs/contract.md, Provable order), and checks every checkpoint and receipt given: its signature with the
public key, and its chain against the chain recomputed at its seq. A tail rewritten and
re-chained after a checkpoint was taken fails here.
Exit status: 0 pass, 1 a finding (named by its seq), 2 error.

Example:
  landrush audit --handover http://127.0.0.1:8025 --public-key key.json --checkpoints cp.jsonl";

/// Runs `landrush audit`.
pub async fn audit_command(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let public_key = match &args.public_key {
        Some(path) => Some(parse_public_key(&std::fs::read_to_string(path)?)?),
        None => None,
    };
    let mut checkpoints = match &args.checkpoints {
        Some(path) => read_checkpoints(path)?,
        None => Vec::new(),
    };
    if let Some(path) = &args.receipts {
        checkpoints.extend(read_receipts(path)?);
    }
    let report = audit(AuditInput {
        handover: &args.handover,
        token: args.api_token.as_deref(),
        public_key,
        checkpoints,
    })
    .await?;
    print!("{}", report.render());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
