//! The WAL's upkeep (`journal/sqlite/wal.rs`): barrage fills the WAL file to
//! `wal_size_limit_bytes` when it opens the journal and keeps it at that size through bursts and
//! idle checkpoints, so that commits overwrite it rather than grow it; only a WAL that outgrew
//! the limit is emptied, once the writer is idle, while barrage serves.

mod prod_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use prod_support::{config, start_logged_with};
use support::{Barrage, Client, request_mail};

const MIB: u64 = 1024 * 1024;

fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("barrage.db-wal")).map_or(0, |m| m.len())
}

/// Starts barrage with `wal_size_limit_bytes = limit`, logging the journal's debug lines (the
/// checkpointer's idle checkpoints are the events these tests wait for).
fn start(root: &Path, limit: u64) -> (Barrage, std::path::PathBuf, std::path::PathBuf) {
    let dir = root.join("data");
    let text = format!("[storage]\nwal_size_limit_bytes = {limit}\n");
    let file = config(&dir, "wal", &text);
    let (barrage, log) =
        start_logged_with(&dir, &["--config", file.to_str().unwrap()], |command| {
            command.env("RUST_LOG", "warn,barrage::journal::sqlite::wal=debug");
        });
    (barrage, dir, log)
}

/// Four clients sending `each` requests padded with `pad` header lines of 100 bytes, all answered
/// 250.
async fn burst(barrage: &Barrage, tag: &str, each: u32, pad: usize) {
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, tag) = (barrage.smtp, format!("{tag}{c}"));
            tokio::spawn(async move {
                let mut client = Client::greet(addr).await;
                for n in 0..each {
                    let padding = format!("X-Pad: {}\r\n", "x".repeat(91)).repeat(pad);
                    let mail = padding + &request_mail(&format!("<{tag}-{n}@wal.test>"), "a.fr");
                    let reply = client.submit("a@client.example", &mail).await;
                    assert_eq!(reply.code, 250, "{reply:?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

/// Waits until the log holds `count` lines containing `what`; the bound only turns a hang into
/// a failure.
async fn wait_for_log(log: &Path, what: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().filter(|l| l.contains(what)).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {count}× `{what}` in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_wal_keeps_its_size_through_bursts_and_idle_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let fill = 8 * MIB;
    let (barrage, dir, log) = start(root.path(), fill);
    assert_eq!(
        wal_len(&dir),
        fill,
        "the WAL is filled when the journal opens"
    );
    const KEPT: &str = "kept for the next burst";
    // The first idle checkpoint comes before any request, then one after each burst.
    for round in 1..=2 {
        wait_for_log(&log, KEPT, round).await;
        assert_eq!(
            wal_len(&dir),
            fill,
            "an idle checkpoint keeps the WAL's size"
        );
        burst(&barrage, &format!("r{round}-"), 25, 0).await;
        assert_eq!(
            wal_len(&dir),
            fill,
            "a burst overwrites the WAL, it does not grow it"
        );
    }
    wait_for_log(&log, KEPT, 3).await;
    assert_eq!(wal_len(&dir), fill);
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["accepted"], 200, "{stats}");
    assert_eq!(barrage.all_requests().await.len(), 200);
}

#[tokio::test]
async fn a_wal_that_outgrew_its_size_is_emptied_once_idle_while_serving() {
    let root = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let (barrage, dir, log) = start(root.path(), limit);
    assert_eq!(wal_len(&dir), limit);
    // 100 requests of 20 KB: about 2 MB of WAL frames, while checkpoints lag behind commits.
    burst(&barrage, "big", 25, 200).await;
    assert!(
        wal_len(&dir) > limit,
        "the burst grew the WAL past its limit"
    );
    wait_for_log(&log, "beyond wal_size_limit: emptied", 1).await;
    assert_eq!(wal_len(&dir), 0, "the outgrown WAL is emptied");
    burst(&barrage, "after", 1, 0).await;
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["accepted"], 104, "{stats}");
    assert_eq!(barrage.all_requests().await.len(), 104);
}
