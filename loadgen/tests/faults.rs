//! Faults played into a rehearsal of the real barrage (through the `landrush` binary): a SIGKILL
//! with a restart, the registry stopped, the ack relay down, a full disk and idle connections, all
//! in one small burst. The contract must hold (verdict pass), every fault must be in faults.jsonl
//! and in report.json, and the disk-full fault must have been answered 451, never 250, with the
//! buffer accepting again afterwards. Bounded in time, no assertion on speed.

use std::time::Duration;

use landrush::rehearse::buffer::BufferProgram;
use landrush::rehearse::options::{RehearseOptions, Target};
use landrush::rehearse::rehearse;
use landrush::schedule::ValidScenario;
use reports::checks::{Verdict, verdict};
use reports::records::{self, FaultRecord, Outcome, SentRecord};

const SCENARIO: &str = r#"
name = "faults-test"
seed = 5
start = "+1s"

[bounds]
max_requests = 600
max_duration = "40s"

[clients]
count = 20
reply_timeout = "10s"

[schedule]
model = "constant"
rate = 150
duration = "4s"

[requests]
recipient = "requests@registry.invalid"
requesters = 20
requester_domain = "registrar.invalid"
sizes = [{ bytes = 1000, weight = 1 }]

[domains]
pool = 10000
tld = "fr"

[[faults]]
kind = "connections"
at = "0s"
count = 200
for = "3s"

[[faults]]
kind = "ack-relay"
at = "200ms"
for = "1500ms"

[[faults]]
kind = "registry"
action = "stop"
at = "300ms"
for = "1s"

[[faults]]
kind = "kill"
at = "1s"
restart_after = "300ms"

[[faults]]
kind = "disk-full"
at = "2200ms"
for = "600ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_played_recorded_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = ValidScenario::parse(SCENARIO).unwrap();
    let options = RehearseOptions {
        target: Target::Spawn(BufferProgram::landrush_at(env!("CARGO_BIN_EXE_landrush"))),
        progress: false,
        quiet_period: Duration::from_secs(8),
        ..RehearseOptions::default()
    };
    let r = tokio::time::timeout(
        Duration::from_secs(120),
        rehearse(&scenario, dir.path(), options),
    )
    .await
    .expect("the rehearsal finished in time")
    .unwrap();
    eprintln!("{}", landrush::cli::rehearse::summary(&r));
    assert_eq!(verdict(&r.checks), Verdict::Pass);
    assert!(r.drain.complete, "{:?}", r.drain);

    let faults: Vec<FaultRecord> = records::read_all(&dir.path().join(records::FAULTS)).unwrap();
    let mut kinds: Vec<&str> = faults.iter().map(|f| f.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["ack-relay", "connections", "disk-full", "kill", "registry"]
    );
    assert!(
        faults
            .iter()
            .all(|f| f.until.is_some_and(|u| u >= f.at) && f.detail.get("error").is_none()),
        "{faults:?}"
    );
    let held = faults.iter().find(|f| f.kind == "connections").unwrap();
    assert_eq!(held.detail["opened"], 200, "{held:?}");
    assert_eq!(r.report.faults.len(), 5, "report.json lists the faults");

    // While the disk was full: 451, never 250; afterwards: 250 again.
    let full = faults.iter().find(|f| f.kind == "disk-full").unwrap();
    let sent: Vec<SentRecord> = records::read_all(&dir.path().join(records::SENT)).unwrap();
    let during: Vec<&SentRecord> = sent
        .iter()
        .filter(|s| {
            s.sent_at.is_some_and(|t| t >= full.at)
                && s.replied_at.is_some_and(|t| t <= full.until.unwrap())
        })
        .collect();
    assert!(
        during.iter().any(|s| s.code == Some(451)),
        "no request was refused while the disk was full"
    );
    assert!(
        during.iter().all(|s| s.code != Some(250)),
        "a 250 while every write failed: {:?}",
        during.iter().find(|s| s.code == Some(250))
    );
    assert!(
        sent.iter().any(|s| s.outcome == Outcome::Accepted
            && s.sent_at.is_some_and(|t| t > full.until.unwrap())),
        "the buffer did not accept again after the disk-full fault"
    );

    // Like `landrush run`, the rehearsal records its machine and its clock against the buffer's
    // (contract: Run records); the buffer is on this machine, so the interval holds zero.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(records::RUN)).unwrap())
            .unwrap();
    assert!(run["host"].as_str().is_some_and(|h| !h.is_empty()), "{run}");
    assert_eq!(run["clock"]["method"], "buffer-replies", "{}", run["clock"]);
    let [lo, hi] = [0, 1].map(|i| run["clock"]["offset_us"][i].as_i64().unwrap());
    assert!(lo <= 0 && 0 <= hi, "{}", run["clock"]);
    assert!(run["scenario_sha256"].is_string());
}
