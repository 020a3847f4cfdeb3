//! `landrush rehearse --tls=required`: the rehearsal starts barrage over a throwaway certificate it
//! makes for the run, every client does STARTTLS trusting it, and the run passes. The records
//! show TLS was used: each connection's handshake is timed in sent.jsonl and summed up in
//! report.json, and barrage stored every request with the TLS version it came over.

mod support;

use std::path::Path;
use std::process::Command;

use reports::records::{self, Outcome, SentRecord};
use support::{TEST_LIMIT, output_within};

/// Five clients, each on one reused connection, 40 requests.
const SCENARIO: &str = r#"
name = "rehearse-tls"
seed = 11
start = "+1s"

[bounds]
max_requests = 40
max_duration = "30s"

[clients]
count = 5
reply_timeout = "10s"

[schedule]
model = "burst"
count = 40
within = "1s"
front_load = 2

[requests]
recipient = "requests@registry.invalid"
requesters = 5
requester_domain = "registrar.invalid"
sizes = [{ bytes = 800, weight = 1 }]

[domains]
pool = 10000
tld = "fr"
"#;

#[test]
fn a_rehearsal_over_starttls_passes_and_its_records_show_tls() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tls.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = dir.path().join("run");
    let mut command = Command::new(env!("CARGO_BIN_EXE_landrush"));
    command
        .args(["rehearse", "-q", "--keep-data", "--tls=required", "--out"])
        .arg(&out)
        .arg(&scenario);
    let output = output_within(command, TEST_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let config = std::fs::read_to_string(out.join("barrage.toml")).unwrap();
    assert!(config.contains("tls = \"required\""), "{config}");
    let sent: Vec<SentRecord> = records::read_all(&out.join(records::SENT)).unwrap();
    assert_eq!(sent.len(), 40);
    assert!(sent.iter().all(|r| r.outcome == Outcome::Accepted));
    let timed: Vec<u64> = sent.iter().filter_map(|r| r.tls_handshake_us).collect();
    assert_eq!(timed.len(), 5, "one handshake per client's connection");
    assert!(timed.iter().all(|&us| us > 0), "{timed:?}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["tls_handshake_ms"]["count"], 5,
        "{}",
        report["tls_handshake_ms"]
    );
    assert!(report["tls_handshake_ms"]["mean"].as_f64().unwrap() > 0.0);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["rehearse"]["tls"], "required");
    assert_eq!(stored_over_tls(&out.join("buffer-data")), (40, 40));
}

/// Requests barrage stored, and those it stored with a `tls.version`.
fn stored_over_tls(data_dir: &Path) -> (u64, u64) {
    let db = rusqlite::Connection::open(data_dir.join("barrage.db")).unwrap();
    db.query_row(
        "SELECT count(*), count(json_extract(fields, '$.\"tls.version\"')) FROM requests",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .unwrap()
}
