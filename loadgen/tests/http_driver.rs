//! The HTTP driver (goose) against barrage's real web intake, in-process over loopback HTTP with a
//! real SQLite journal: every POST is recorded in the run-record format, a retry with the same
//! Idempotency-Key gets its original ticket, a resubmission without a key gets a new one, and the
//! checkers pass over the records joined with what the journal holds.

use std::sync::Arc;
use std::time::Duration;

use barrage::intake::IntakeCounters;
use barrage::intake::web::{WebIntake, WebLimits};
use barrage::journal::Journal;
use barrage::journal::sqlite::{SqliteJournal, SqliteOptions};
use landrush::check::{CheckOptions, check_records};
use landrush::driver::http::{HTTP_SENT, run_http};
use landrush::schedule::ValidScenario;
use reports::records::{HandedRecord, Outcome, SentRecord, Stamp, read_all};

const SCENARIO: &str = r#"
name = "http-test"
seed = 11
start = "+1s"
[bounds]
max_requests = 2
max_duration = "30s"
[clients]
count = 1
[schedule]
model = "instant"
count = 2
[domains]
pool = 1000
tld = "fr"
hot = ["exemple.fr", "paris.fr"]
askers = 1
[http]
users = 6
hatch_rate = 50.0
requests_per_user = 12
resubmit_same_key = 0.2
resubmit_without_key = 0.2
form_encoded = 0.5
timeout = "10s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goose_users_post_forms_and_every_post_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let journal = Arc::new(SqliteJournal::open(&data, SqliteOptions::default()).unwrap());
    let intake = Arc::new(WebIntake::new(
        journal.clone(),
        Arc::new(IntakeCounters::default()),
        "registry.test".into(),
        WebLimits::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(barrage::intake::web::serve(listener, intake, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let scenario = ValidScenario::parse(SCENARIO).unwrap();
    let out = dir.path().join("run");
    let start = Stamp::from_micros(Stamp::now().micros() + 300_000);
    let info = tokio::time::timeout(
        Duration::from_secs(60),
        run_http(&scenario, web, &out, start, Some("t1".into())),
    )
    .await
    .expect("the HTTP part ends in time")
    .unwrap();
    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();

    let sent: Vec<SentRecord> = read_all(&out.join(HTTP_SENT)).unwrap();
    assert_eq!(sent.len() as u64, info.transmissions);
    let firsts = sent
        .iter()
        .filter(|r| r.attempt == 1 && r.kind != "resubmission");
    assert_eq!(firsts.count(), 6 * 12, "one first POST per user iteration");
    assert!(
        sent.iter()
            .all(|r| r.intake == "http" && r.outcome == Outcome::Accepted)
    );
    assert!(
        sent.iter()
            .all(|r| r.code == Some(202) && r.ticket.is_some())
    );
    assert!(sent.iter().all(|r| !r.message_id.is_empty()));
    // Each user's first form asked for a hot name.
    assert_eq!(sent.iter().filter(|r| r.kind == "hot").count(), 6);

    let retries: Vec<&SentRecord> = sent.iter().filter(|r| r.kind == "retry-same-key").collect();
    let resubmissions = sent.iter().filter(|r| r.kind == "resubmission").count();
    assert!(
        !retries.is_empty() && resubmissions > 0,
        "both storms drawn"
    );
    for retry in &retries {
        let original = sent
            .iter()
            .find(|r| r.id == retry.id && r.attempt == 1)
            .unwrap();
        assert_eq!(retry.ticket, original.ticket, "same key, same ticket");
        assert_eq!(retry.message_id, original.message_id);
    }

    // The journal holds one row per request (retries add none), gap-free.
    let stored = journal.fetch(0, 10_000, false).await.unwrap();
    let requests = sent.len() - retries.len();
    assert_eq!(stored.len(), requests);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == i as u64 + 1)
    );

    // The checkers over the records, with the journal's rows as the handover.
    let handed: Vec<HandedRecord> = stored
        .iter()
        .map(|r| HandedRecord {
            seq: r.seq,
            seq_is_order: false,
            accepted_at: Stamp::parse(&r.accepted_at).ok(),
            message_id: Some(r.message_id.clone()),
            landrush_id: None,
            domain: Some(r.domain.clone()),
            sender: Some(r.sender.clone()),
            handed_at: Stamp::now(),
            source: "api".into(),
            raw_sha256: None,
        })
        .collect();
    let options = CheckOptions {
        acks_expected: false,
        first_seq: Some(1),
        ..CheckOptions::default()
    };
    let checks = check_records(&sent, &handed, &[], &options);
    for (name, check) in &checks {
        assert_ne!(check.ok, Some(false), "{name} failed: {check:?}");
    }
    assert!(
        out.join("goose").join("report.html").exists(),
        "goose's report"
    );
    assert!(info.rate_per_sec > 0.0);
}
