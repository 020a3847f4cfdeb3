//! Proof that the checkers bite: the real driver, fake registry, ack sink and checkers (the
//! `landrush rehearse --target --handover --ack-sink` path) against fake buffers each broken in one
//! way (tests/support/fake_buffer.rs). Each must FAIL the check that guards that rule, with a
//! counterexample naming the very request the flaw touched; a fake without a flaw must pass; and
//! a rehearsal of the real barrage, through the `landrush` binary, must pass end to end.
//!
//! Small scenarios (300 to 1,000 requests in two seconds), every test bounded by a timeout, no
//! assertion on speed.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use landrush::rehearse::Rehearsal;
use reports::checks::{CheckResult, Verdict, verdict};
use support::fake_buffer::{Event, FakeBuffer, Flaw, STOLEN_DOMAIN};
use support::{rehearse_running, scenario};

/// Rehearses a fake with `flaw` on a scenario of `count` requests with `misbehaviour`.
async fn rehearse_fake(
    flaw: Flaw,
    count: u32,
    misbehaviour: &str,
) -> (Rehearsal, FakeBuffer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeBuffer::start(flaw).await;
    let scenario = scenario("broken", count, misbehaviour);
    let r = rehearse_running(&scenario, &fake, dir.path()).await;
    // `cargo test -- --nocapture` shows each flaw's verdict and counterexamples.
    eprintln!("{flaw:?}:\n{}", summary(&r));
    (r, fake, dir)
}

fn check<'a>(r: &'a Rehearsal, name: &str) -> &'a CheckResult {
    r.checks
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` check"))
}

fn count(c: &CheckResult, name: &str) -> u64 {
    c.counts.get(name).copied().unwrap_or(0)
}

fn examples_text(c: &CheckResult) -> String {
    serde_json::to_string(&c.examples).unwrap()
}

fn the_event(fake: &FakeBuffer, what: &str) -> Event {
    let events: Vec<Event> = fake
        .events()
        .into_iter()
        .filter(|e| e.what == what)
        .collect();
    assert_eq!(events.len(), 1, "the flaw `{what}` fired once: {events:?}");
    events.into_iter().next().unwrap()
}

fn summary(r: &Rehearsal) -> String {
    landrush::cli::rehearse::summary(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_correct_fake_passes() {
    let (r, fake, _dir) = rehearse_fake(
        Flaw::None,
        300,
        "retransmissions = 0.03\nmalformed = 0.02\nresubmissions = 0.02",
    )
    .await;
    assert!(fake.events().is_empty());
    assert_eq!(verdict(&r.checks), Verdict::Pass, "{}", summary(&r));
    // Its chain was recomputed from the handover API, every stored request's link verified.
    let audit = check(&r, "audit");
    assert_eq!(audit.ok, Some(true), "{}", summary(&r));
    assert_eq!(
        count(audit, "rows"),
        r.report.counts.accepted,
        "{}",
        summary(&r)
    );
    assert!(r.drain.complete, "{:?}", r.drain);
    assert!(count(check(&r, "retransmissions"), "retransmitted") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_one_accepted_request_in_1000_fails_loss() {
    let (r, fake, _dir) = rehearse_fake(Flaw::LoseSeq(500), 1000, "").await;
    let lost = the_event(&fake, "lost");
    let loss = check(&r, "loss");
    assert_eq!(loss.ok, Some(false), "{}", summary(&r));
    assert_eq!(count(loss, "lost"), 1, "{}", summary(&r));
    let text = examples_text(loss);
    assert!(text.contains(lost.id.as_deref().unwrap()), "{text}");
    // The seq it was given is a gap in the handover.
    assert_eq!(count(loss, "gaps"), 1, "{}", summary(&r));
    // It got no ack either, and the rehearsal said what was missing.
    assert_eq!(count(check(&r, "acks"), "missing"), 1);
    assert!(!r.drain.complete);
    assert_eq!(r.drain.missing_handed_ids, vec![lost.id.clone().unwrap()]);
    assert_eq!(verdict(&r.checks), Verdict::Fail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_two_neighbours_in_the_handover_fails_fifo() {
    let (r, fake, _dir) = rehearse_fake(Flaw::SwapAfter(10), 300, "").await;
    let swapped = the_event(&fake, "swapped in the handover");
    assert_eq!(swapped.seq, 11);
    let fifo = check(&r, "fifo");
    assert_eq!(fifo.ok, Some(false), "{}", summary(&r));
    assert_eq!(count(fifo, "handover_order"), 1, "{}", summary(&r));
    let text = examples_text(fifo);
    assert!(text.contains(swapped.id.as_deref().unwrap()), "{text}");
    // Nothing was lost or duplicated: only the order is wrong.
    assert_eq!(check(&r, "loss").ok, Some(true), "{}", summary(&r));
    assert_eq!(check(&r, "duplicates").ok, Some(true), "{}", summary(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answering_250_before_the_write_fails_loss_when_killed_mid_burst() {
    let dir = tempfile::tempdir().unwrap();
    let fake = std::sync::Arc::new(
        FakeBuffer::start(Flaw::ReplyBeforeWrite(Duration::from_millis(200))).await,
    );
    let scenario = scenario("reply-before-write", 600, "");
    let killer = {
        let fake = fake.clone();
        tokio::spawn(async move {
            while fake.accepted() < 250 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            fake.crash();
        })
    };
    let r = rehearse_running(&scenario, &fake, dir.path()).await;
    killer.await.unwrap();
    eprintln!("ReplyBeforeWrite + crash:\n{}", summary(&r));
    let dropped: HashSet<String> = fake
        .events()
        .into_iter()
        .filter(|e| e.what == "write lost in the crash")
        .filter_map(|e| e.id)
        .collect();
    assert!(!dropped.is_empty(), "the crash caught writes in flight");
    let loss = check(&r, "loss");
    assert_eq!(loss.ok, Some(false), "{}", summary(&r));
    // Every request the crash lost had been answered 250: each one is a `lost` counterexample.
    assert_eq!(count(loss, "lost"), dropped.len() as u64, "{}", summary(&r));
    assert!(!loss.examples.is_empty());
    for example in &loss.examples {
        let text = example.to_string();
        assert!(
            dropped.iter().any(|id| text.contains(id.as_str())),
            "a lost example that the crash did not lose: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acking_twice_fails_acks() {
    let (r, fake, _dir) = rehearse_fake(Flaw::AckTwice(7), 300, "").await;
    let twice = the_event(&fake, "acked twice");
    let acks = check(&r, "acks");
    assert_eq!(acks.ok, Some(false), "{}", summary(&r));
    assert_eq!(count(acks, "extra"), 1, "{}", summary(&r));
    assert_eq!(count(acks, "resent"), 0);
    let text = examples_text(acks);
    assert!(
        text.contains("one request gets one ack, not two distinct ones"),
        "{text}"
    );
    assert!(text.contains(twice.id.as_deref().unwrap()), "{text}");
    assert_eq!(check(&r, "loss").ok, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acking_a_refused_request_fails_acks() {
    let (r, fake, _dir) = rehearse_fake(Flaw::AckRefused, 300, "malformed = 0.03").await;
    let refused = the_event(&fake, "acked a refused request");
    let acks = check(&r, "acks");
    assert_eq!(acks.ok, Some(false), "{}", summary(&r));
    assert_eq!(count(acks, "extra"), 1, "{}", summary(&r));
    let text = examples_text(acks);
    assert!(text.contains("a refused request gets no ack"), "{text}");
    let mid = refused.message_id.unwrap();
    assert!(text.contains(mid.trim_matches(['<', '>'])), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_seq_for_a_retransmission_fails_retransmissions_and_duplicates() {
    let (r, _fake, _dir) = rehearse_fake(Flaw::NoDedup, 300, "retransmissions = 0.05").await;
    let retrans = check(&r, "retransmissions");
    assert_eq!(retrans.ok, Some(false), "{}", summary(&r));
    assert!(count(retrans, "new_seq") >= 1, "{}", summary(&r));
    assert!(count(retrans, "second_ack") >= 1, "{}", summary(&r));
    let dups = check(&r, "duplicates");
    assert_eq!(dups.ok, Some(false), "{}", summary(&r));
    assert_eq!(count(dups, "duplicated"), count(retrans, "new_seq"));
    // The counterexample names a retransmitted request: one id under two seqs.
    let example = &dups.examples[0];
    let id = example.to_string();
    let sent: Vec<reports::records::SentRecord> =
        reports::records::read_all(&r.out_dir.join("sent.jsonl")).unwrap();
    assert!(
        sent.iter().any(|s| s.attempt > 1 && id.contains(&s.id)),
        "the duplicate is a retransmitted request: {id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handing_over_another_domain_than_accepted_fails_content() {
    let (r, fake, _dir) = rehearse_fake(Flaw::OtherDomain(42), 300, "").await;
    let changed = the_event(&fake, "handed another domain");
    let content = check(&r, "content");
    assert_eq!(content.ok, Some(false), "{}", summary(&r));
    assert_eq!(count(content, "domain"), 1, "{}", summary(&r));
    // The raw message was handed over as sent: only the domain the buffer stored is wrong.
    assert_eq!(count(content, "raw"), 0, "{}", summary(&r));
    assert!(count(content, "raw_compared") > 250, "{}", summary(&r));
    let text = examples_text(content);
    assert!(text.contains(changed.id.as_deref().unwrap()), "{text}");
    assert!(text.contains(STOLEN_DOMAIN), "{text}");
    // Nothing else is wrong: the request was stored, in order, once, and acked.
    for name in ["fifo", "loss", "duplicates", "acks"] {
        assert_eq!(check(&r, name).ok, Some(true), "{name}: {}", summary(&r));
    }
    assert_eq!(verdict(&r.checks), Verdict::Fail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_link_that_does_not_verify_fails_the_audit() {
    let (r, fake, _dir) = rehearse_fake(Flaw::BadLink(42), 300, "").await;
    let bad = the_event(&fake, "chained another domain");
    let audit = check(&r, "audit");
    assert_eq!(audit.ok, Some(false), "{}", summary(&r));
    let text = examples_text(audit);
    assert!(
        text.contains("seq 42: the served chain does not verify"),
        "{text}"
    );
    assert_eq!(bad.seq, 42);
    // The rows before it verified, and the row itself is as sent: only its chain is wrong.
    assert_eq!(count(audit, "rows"), 41, "{}", summary(&r));
    for name in ["fifo", "loss", "duplicates", "content", "acks"] {
        assert_eq!(check(&r, name).ok, Some(true), "{name}: {}", summary(&r));
    }
    assert_eq!(verdict(&r.checks), Verdict::Fail);
}

/// The real thing: `landrush rehearse` on a small scenario starts barrage as its own child, and
/// the run passes every check end to end.
#[test]
fn rehearsing_the_real_barrage_passes() {
    let dir = tempfile::tempdir().unwrap();
    let scenario_path = dir.path().join("small.toml");
    let text = toml::to_string(
        scenario(
            "small-real",
            300,
            "retransmissions = 0.03\nmalformed = 0.02\nresubmissions = 0.02",
        )
        .scenario(),
    )
    .unwrap();
    std::fs::write(&scenario_path, text).unwrap();
    let out = dir.path().join("run");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_landrush"));
    command
        .arg("rehearse")
        .arg(&scenario_path)
        .arg("--out")
        .arg(&out)
        .arg("--quiet");
    let output = support::output_within(command, support::TEST_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rehearse failed: {:?}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    let report = reports::load_report(&out).unwrap();
    assert_eq!(report.verdict, Verdict::Pass);
    assert!(report.counts.accepted > 250, "{:?}", report.counts);
    assert_eq!(report.counts.handed_over, report.counts.accepted);
    assert_eq!(report.counts.acked, report.counts.accepted);
    for name in [
        "fifo",
        "loss",
        "duplicates",
        "retransmissions",
        "content",
        "acks",
        "completeness",
        "audit",
    ] {
        assert_eq!(report.checks[name].ok, Some(true), "{name}: {stdout}");
    }
    // The audit recomputed the chain of every stored request from the handover API alone (that
    // it fails on a chain that does not verify is shown in tests/audit.rs).
    assert_eq!(
        report.checks["audit"].counts["rows"], report.counts.accepted,
        "{stdout}"
    );
    // barrage hands over the very bytes it was sent, and its acks name ticket and accepted-at.
    assert!(
        report.checks["content"].counts["raw_compared"] > 250,
        "{stdout}"
    );
    // `landrush check` on the folder reaches the rehearsal's verdict from checks.json.
    let inputs: reports::records::CheckInputs =
        serde_json::from_str(&std::fs::read_to_string(out.join("checks.json")).unwrap()).unwrap();
    assert_eq!(inputs.first_seq, Some(1));
    assert!(
        inputs.highest_seq.unwrap() >= report.counts.accepted,
        "{inputs:?}"
    );
    let mut check = std::process::Command::new(env!("CARGO_BIN_EXE_landrush"));
    check.arg("check").arg(&out);
    let checked = support::output_within(check, support::TEST_LIMIT);
    let checked_out = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{checked_out}");
    assert!(checked_out.contains("verdict: PASS"), "{checked_out}");
    // The buffer was stopped: no barrage left holding the ports.
    assert!(out.join("buffer.log").is_file());
    assert!(out.join("stats.jsonl").is_file());
}
