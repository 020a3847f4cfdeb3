//! The journal's database SIGKILLed and restarted mid-burst: barrage answers temporary errors
//! (never a 250 it cannot keep) while it is down, and takes requests again by itself once it is
//! back; every 250 is handed over, and no request answered 451 is stored (contract: Refusals).

mod postgres_support;
mod support;

use std::collections::HashSet;

use postgres_support::{Burst, check_handover, database, drain, node};

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_mid_burst_gives_451s_then_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, url) = database(&dir.path().join("pg"));
    let a = node(&dir.path().join("a"), &url, &[]);
    let b = node(&dir.path().join("b"), &url, &[]);
    let mut burst = Burst::new();
    burst.spawn(a.smtp, "a", CLIENTS, 100_000);
    burst.spawn(b.smtp, "b", CLIENTS, 100_000);
    burst
        .wait_for("250s before the outage", |b| b.accepted >= 150)
        .await;
    tokio::task::block_in_place(|| cluster.kill()).unwrap();
    let before = burst.accepted;
    burst
        .wait_for("temporary errors while the database is down", |b| {
            b.refused.keys().any(|code| (400..500).contains(code))
        })
        .await;
    tokio::task::block_in_place(|| cluster.restart()).unwrap();
    let target = burst.accepted + 200;
    burst
        .wait_for("250s after the restart", |b| b.accepted >= target)
        .await;
    let refused = burst.refused.clone();
    let sent = burst.finish().await;

    let received = drain(&[&a, &b]).await;
    let stored = check_handover(&received, &sent);
    let stored: HashSet<&String> = stored.values().collect();
    let answered_451: Vec<_> = sent.iter().filter(|s| s.code == 451).collect();
    assert!(
        !answered_451.is_empty() || refused.contains_key(&451),
        "{refused:?}"
    );
    for s in answered_451 {
        assert!(
            !stored.contains(&s.message_id),
            "{} was answered 451 but stored",
            s.message_id
        );
    }
    assert!(sent.iter().all(|s| s.code != 250 || s.ticket.is_some()));
    assert!(before >= 150);
}
