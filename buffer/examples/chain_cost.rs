//! The cost of the hash chain on the commit path (contract: Provable order), measured roughly in
//! one run: durable appends through the real SQLite journal (50 concurrent writers, group
//! commit, fsync), then the same number of chain links as the writer computes them (the time
//! format, `canonical(n)` from its precomputed middle, SHA-256), on one thread like the writer.
//! `cargo run -p barrage --example chain_cost [--release]`; a debug build overstates the chain.

use barrage::journal::{
    Journal, NewRequest,
    sqlite::{SqliteJournal, SqliteOptions},
};
use std::collections::BTreeMap;
use std::time::Instant;

fn request(n: u32) -> NewRequest {
    let raw =
        format!("From: <c@x>\r\nMessage-ID: <{n}@b>\r\n\r\ndomain: d{n}.fr\r\nholder: Jeanne\r\n")
            .repeat(6)
            .into_bytes();
    NewRequest {
        intake: "smtp",
        message_id: format!("<{n}@b>"),
        dedup_key: None,
        sender: "a@b.example".into(),
        ack_to: None,
        domain: format!("d{n}.fr"),
        fields: BTreeMap::from([
            ("domain".into(), format!("d{n}.fr")),
            ("holder".into(), "Jeanne".into()),
        ]),
        raw,
    }
}

fn main() {
    let n = 20_000u32;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let journal =
        std::sync::Arc::new(SqliteJournal::open(dir.path(), SqliteOptions::default()).unwrap());
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..50u32 {
            let j = journal.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / 50 {
                    j.append(request(c * 1000 + i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let total = start.elapsed();
    let requests: Vec<NewRequest> = (0..n).map(request).collect();
    let digests: Vec<String> = requests
        .iter()
        .map(|r| contract::chain::raw_sha256(&r.raw))
        .collect();
    let middles: Vec<contract::chain::Middle> = requests
        .iter()
        .zip(&digests)
        .map(|(r, d)| {
            contract::chain::Middle::of(&contract::chain::Entry {
                seq: 0,
                accepted_at: "",
                intake: r.intake,
                message_id: &r.message_id,
                sender: &r.sender,
                domain: &r.domain,
                fields: &r.fields,
                raw_sha256: d,
            })
        })
        .collect();
    let start = Instant::now();
    let mut prev = contract::chain::genesis("0123456789abcdef");
    for (i, middle) in middles.iter().enumerate() {
        let at = barrage::journal::format_micros(1_800_000_000_000_000 + i as i64);
        prev = contract::chain::link(&prev, &middle.canonical(i as u64 + 1, &at));
    }
    let chain = start.elapsed();
    println!(
        "{n} durable appends in {:?} ({:.0}/s); {n} chain links (what the writer does: format, canonical, link) in {:?}: {:.2}% of the append time; {}",
        total,
        n as f64 / total.as_secs_f64(),
        chain,
        100.0 * chain.as_secs_f64() / total.as_secs_f64(),
        &contract::chain::hex(&prev)[..8]
    );
}
