//! The journal's database SIGKILLed and restarted mid-burst: barrage answers temporary errors
//! (never a 250 it cannot keep) while it is down, and takes requests again by itself once it is
//! back; every 250 is handed over, and no request answered 451 is stored (contract: Refusals).

mod postgres_support;
mod support;

use postgres_support::{Waits, burst_through_fault, database};

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_mid_burst_gives_451s_then_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, url) = database(&dir.path().join("pg"));
    let waits = Waits {
        before: "250s before the outage",
        during: "temporary errors while the database is down",
        after: "250s after the restart",
    };
    let outcome = burst_through_fault(
        dir.path(),
        &url,
        CLIENTS,
        waits,
        || cluster.kill().unwrap(),
        || cluster.restart().unwrap(),
    )
    .await;

    let (sent, refused) = (&outcome.sent, &outcome.refused);
    let answered_451 = sent.iter().any(|s| s.code == 451);
    assert!(answered_451 || refused.contains_key(&451), "{refused:?}");
    assert!(sent.iter().all(|s| s.code != 250 || s.ticket.is_some()));
}
