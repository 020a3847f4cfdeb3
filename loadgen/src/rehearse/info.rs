//! What a rehearsal writes about itself: `rehearse.json`, also merged into run.json under
//! `"rehearse"`.

use std::path::Path;

use reports::records;
use serde_json::{Value, json};

use super::drain::Drain;
use super::options::{Handover, RehearseOptions, Target};
use super::rig::NodeCommits;
use crate::scenario::buffer::BufferLayout;

/// What the rehearsal itself did (buffer, drain, observers): also merged into run.json.
pub const REHEARSE_JSON: &str = "rehearse.json";

/// Writes rehearse.json and merges it into run.json under `"rehearse"`, so the report shows it.
pub fn write_rehearse_info(
    out_dir: &Path,
    options: &RehearseOptions,
    layout: BufferLayout,
    commits: &[NodeCommits],
    drain: &Drain,
    notes: &[String],
) -> anyhow::Result<()> {
    let target = match &options.target {
        Target::Spawn(program) => json!({"spawned": program.describe()}),
        Target::Running(addr) => json!({"running": addr.to_string()}),
    };
    let handover = match &options.handover {
        Handover::Api(url) => json!({"api": url}),
        Handover::Smtp(addr) => json!({"smtp": addr.to_string()}),
        Handover::Maildir(dir) => json!({"maildir": dir.display().to_string()}),
    };
    let info = json!({
        "buffer": target,
        "layout": layout,
        "commits": commits_json(commits),
        "handover": handover,
        "acks": options.acks,
        "tls": options.tls.map(|mode| mode.as_str()),
        "registry": {
            "rate": options.registry_rate,
            "batch": options.registry_batch,
            "delay_s": options.registry_delay.as_secs_f64(),
        },
        "quiet_period_s": options.quiet_period.as_secs_f64(),
        "drain": drain,
        "notes": notes,
    });
    std::fs::write(
        out_dir.join(REHEARSE_JSON),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    let run_path = out_dir.join(records::RUN);
    if let Ok(text) = std::fs::read_to_string(&run_path)
        && let Ok(Value::Object(mut run)) = serde_json::from_str::<Value>(&text)
    {
        run.insert("rehearse".into(), info);
        std::fs::write(&run_path, serde_json::to_string_pretty(&run)? + "\n")?;
    }
    Ok(())
}

/// The nodes' group commit: per node, and the mean batch (requests per commit) over all of them.
fn commits_json(commits: &[NodeCommits]) -> Value {
    let (n, requests) = commits.iter().fold((0, 0), |(c, r), node| {
        (c + node.commits, r + node.committed_requests)
    });
    json!({
        "nodes": commits,
        "commits": n,
        "committed_requests": requests,
        "mean_batch": super::rig::mean_batch(commits),
    })
}
