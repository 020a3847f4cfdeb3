//! Failover under load: two nodes on a primary with a synchronous standby (a multi-host URL with
//! `target_session_attrs=read-write`); the primary SIGKILLed mid-burst and the standby promoted.
//! The nodes answer 451 meanwhile, then follow the new primary by themselves, and every 250
//! given before, during or after is handed over by the new primary, gap-free, in precedence
//! order (contract: Durability, Zero loss).

mod postgres_support;
mod support;

use pgcluster::Cluster;
use postgres_support::{Waits, burst_through_fault};

const CLIENTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_synchronous_standby_loses_no_250() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Cluster::start(&dir.path().join("primary")).unwrap();
    primary.create_database("barrage").unwrap();
    let standby = primary.start_standby(&dir.path().join("standby")).unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/barrage?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let waits = Waits {
        before: "250s before the failover",
        during: "temporary errors while there is no primary",
        after: "250s on the new primary",
    };
    let outcome = burst_through_fault(
        dir.path(),
        &url,
        CLIENTS,
        waits,
        || primary.kill().unwrap(),
        || standby.promote().unwrap(),
    )
    .await;

    let on_standby = standby
        .psql("barrage", "SELECT count(*) FROM requests")
        .unwrap();
    assert_eq!(on_standby, outcome.received.len().to_string());
}
