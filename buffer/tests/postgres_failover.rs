//! Failover under load: two nodes on a primary with a synchronous standby (a multi-host URL with
//! `target_session_attrs=read-write`); the primary SIGKILLed mid-burst and the standby promoted.
//! The nodes answer 451 meanwhile, then follow the new primary by themselves, and every 250
//! given before, during or after is handed over by the new primary, gap-free, in precedence
//! order (contract: Durability, Zero loss).

mod postgres_support;
mod support;

use std::collections::HashSet;

use pgcluster::Cluster;
use postgres_support::{Burst, check_handover, drain, node};

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
    let a = node(&dir.path().join("a"), &url, &[]);
    let b = node(&dir.path().join("b"), &url, &[]);
    let mut burst = Burst::new();
    burst.spawn(a.smtp, "a", CLIENTS, 100_000);
    burst.spawn(b.smtp, "b", CLIENTS, 100_000);
    burst
        .wait_for("250s before the failover", |b| b.accepted >= 150)
        .await;
    tokio::task::block_in_place(|| primary.kill()).unwrap();
    burst
        .wait_for("temporary errors while there is no primary", |b| {
            b.refused.keys().any(|code| (400..500).contains(code))
        })
        .await;
    tokio::task::block_in_place(|| standby.promote()).unwrap();
    let target = burst.accepted + 200;
    burst
        .wait_for("250s on the new primary", |b| b.accepted >= target)
        .await;
    let sent = burst.finish().await;

    let received = drain(&[&a, &b]).await;
    let stored = check_handover(&received, &sent);
    let stored: HashSet<&String> = stored.values().collect();
    for s in sent.iter().filter(|s| s.code == 451) {
        assert!(
            !stored.contains(&s.message_id),
            "{} was answered 451 but stored",
            s.message_id
        );
    }
    let on_standby = standby
        .psql("barrage", "SELECT count(*) FROM requests")
        .unwrap();
    assert_eq!(on_standby, received.len().to_string());
}
