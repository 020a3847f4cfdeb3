//! Completeness (contract: Verdicts): what the run itself says could not be observed. It never
//! fails a run; it makes it `incomplete` when
//! - `missing_shards`: shards of the scenario whose records are not in the folder (their
//!   requests were not played, or not merged in);
//! - `undrained`: 1 when the wait for the handover and the acks ended before everything
//!   accepted had arrived while the buffer had not said it was done (its final stats still show
//!   a queue or pending acks, or there are none), so what other checks count as missing may still
//!   have been on its way.

use reports::checks::CheckResult;

use super::index::{CheckOptions, Tally};

pub(crate) fn check(options: &CheckOptions) -> CheckResult {
    let mut tally = Tally::new(options, &["missing_shards", "undrained"]);
    tally.add("missing_shards", options.missing_shards);
    if options.missing_shards > 0 {
        tally.note(format!(
            "{} shard(s) of the scenario missing from the run folder",
            options.missing_shards
        ));
    }
    // The wait ended early and the buffer did not say it was done (or could not say).
    let buffer_busy = options.still_queued_above().is_some()
        || options.acks_still_pending()
        || options.final_queue_depth.is_none();
    if options.drain_complete == Some(false) && buffer_busy {
        tally.count("undrained");
        tally.note("the observers stopped before everything accepted was handed over and acked");
    }
    if tally.get("missing_shards") + tally.get("undrained") > 0 {
        tally.could_not_run("the run did not observe everything it should have")
    } else {
        tally.finish(&[])
    }
}
