//! The fifo check across machines, through the public checker (contract: FIFO, rules 7 and 8):
//! records of two shards with their clocks, judged on certainty, counted when a clock is unknown.

use std::collections::BTreeMap;

use landrush::check::clocks::{MachineClock, Machines};
use landrush::check::{CheckOptions, check_records};
use landrush::schedule::shard::Shard;
use reports::checks::{Checks, Verdict, verdict};
use reports::records::{HandedRecord, Outcome, SentRecord, Stamp};

const T: i64 = 1_796_115_600_000_000;

/// Request `n` from `client`, sent and answered at these local µs, ticket `seq`.
fn sent(n: u32, client: u32, sent: i64, replied: i64, seq: u64) -> SentRecord {
    SentRecord {
        id: format!("r{n}"),
        client,
        message_id: format!("<r{n}@landrush.invalid>"),
        domain: format!("d{n}.fr"),
        sender: "a@registrar.invalid".into(),
        intake: "smtp".into(),
        kind: "normal".into(),
        attempt: 1,
        intended_at: Stamp::from_micros(T + sent),
        sent_at: Some(Stamp::from_micros(T + sent)),
        replied_at: Some(Stamp::from_micros(T + replied)),
        code: Some(250),
        reply: Some(format!("250 2.0.0 queued as ticket {seq}")),
        ticket: Some(seq),
        outcome: Outcome::Accepted,
        group: None,
        raw_sha256: None,
        tls_handshake_us: None,
        node: None,
    }
}

fn handed(record: &SentRecord) -> HandedRecord {
    HandedRecord {
        seq: record.ticket.unwrap(),
        seq_is_order: false,
        accepted_at: None,
        message_id: Some(record.message_id.clone()),
        landrush_id: Some(record.id.clone()),
        domain: Some(record.domain.clone()),
        sender: Some(record.sender.clone()),
        handed_at: Stamp::from_micros(T + 1_000_000),
        source: "api".into(),
        raw_sha256: None,
    }
}

fn two_machines(second: Option<[i64; 2]>) -> Machines {
    let clock = |i, offset_us| MachineClock {
        shard: Shard::new(i, 2).unwrap(),
        host: Some(format!("volunteer-{i}")),
        offset_us,
    };
    let clocks = BTreeMap::from([(1, clock(1, Some([-100, 100]))), (2, clock(2, second))]);
    Machines::Known { count: 2, clocks }
}

/// Client 0 is shard 1, client 1 is shard 2 (`client % 2`). Machine 2 runs 50 ms ahead. r1 on
/// machine 1 is answered at 1,000 µs; r2 on machine 2 is sent at 30,000 µs local, which is about
/// −20,000 µs on machine 1's clock: really before r1's reply, so the two overlap and may take
/// either order. r3 on machine 2 is sent at 60,000 µs local (10,000 µs real): after r1's reply.
fn records() -> Vec<SentRecord> {
    vec![
        sent(1, 0, 0, 1_000, 3),
        sent(2, 1, 30_000, 30_500, 1),
        sent(3, 1, 60_000, 60_500, 2),
    ]
}

fn checks(machines: Machines, tolerance_us: u64) -> Checks {
    checks_of(records(), machines, tolerance_us)
}

fn checks_of(sent: Vec<SentRecord>, machines: Machines, tolerance_us: u64) -> Checks {
    let mut handed: Vec<HandedRecord> = sent.iter().map(handed).collect();
    handed.sort_by_key(|h| h.seq);
    let options = CheckOptions {
        acks_expected: false,
        clock_tolerance_us: tolerance_us,
        machines,
        ..CheckOptions::default()
    };
    check_records(&sent, &handed, &[], &options)
}

#[test]
fn across_machines_only_the_certain_violation_is_reported_and_names_both_machines() {
    let checks = checks(two_machines(Some([49_500, 50_500])), 0);
    let fifo = &checks["fifo"];
    assert_eq!(fifo.ok, Some(false));
    // r3 (seq 2) was certainly sent after r1 (seq 3) was answered; r2 (seq 1) was not.
    assert_eq!(fifo.counts["precedence"], 1, "{fifo:?}");
    assert_eq!(fifo.counts["violations"], 1, "{fifo:?}");
    let example = &fifo.examples[0];
    assert_eq!(example["earlier"]["id"], "r1");
    assert_eq!(example["later"]["id"], "r3");
    assert_eq!(example["earlier"]["machine"]["host"], "volunteer-1");
    assert_eq!(example["later"]["machine"]["shard"], "2/2");
    assert_eq!(fifo.counts["unjudged"], 0);
}

#[test]
fn a_tolerance_larger_than_the_margin_eases_the_cross_machine_pair_and_is_printed() {
    // r1's latest reference reply: 1,100; r3's earliest reference send: 60,000 − 50,500 = 9,500.
    let checks = checks(two_machines(Some([49_500, 50_500])), 5_000);
    assert_eq!(checks["fifo"].counts["precedence"], 0);
    let note = checks["fifo"].note.clone().unwrap();
    assert!(note.contains("--clock-tolerance 5000 us"), "{note}");
}

#[test]
fn an_unknown_offset_leaves_the_pairs_unjudged_and_counted() {
    let checks = checks(two_machines(None), 0);
    let fifo = &checks["fifo"];
    assert_eq!(fifo.counts["precedence"], 0);
    // On the raw stamps both r2 and r3 would follow r1's reply.
    assert_eq!(fifo.counts["unjudged"], 2, "{fifo:?}");
    assert!(
        fifo.note
            .as_deref()
            .unwrap()
            .contains("could not be judged")
    );
}

#[test]
fn records_without_machines_are_judged_on_the_raw_stamps() {
    // The old reading: the skew makes r2 a false violation.
    let checks = checks(Machines::Unattributed, 0);
    assert_eq!(checks["fifo"].counts["precedence"], 2);
}

#[test]
fn unjudged_pairs_make_the_fifo_check_incomplete_never_a_pass() {
    // r1 and r2 only: with machine 2's offset known they overlap (either order is FIFO) and pass.
    // Seqs 2 and 1, so no gap fails another check.
    let overlapping = || vec![sent(1, 0, 0, 1_000, 2), sent(2, 1, 30_000, 30_500, 1)];
    let known = checks_of(overlapping(), two_machines(Some([49_500, 50_500])), 0);
    assert_eq!(known["fifo"].ok, Some(true), "{:?}", known["fifo"]);
    assert!(!known["fifo"].incomplete);
    assert_eq!(known["fifo"].counts["unjudged"], 0);
    assert_eq!(verdict(&known), Verdict::Pass);

    // The same records with machine 2's offset unknown: r2 cannot be judged against r1.
    let unknown = checks_of(overlapping(), two_machines(None), 0);
    let fifo = &unknown["fifo"];
    assert_eq!(fifo.counts["unjudged"], 1, "{fifo:?}");
    assert_eq!(fifo.ok, None, "{fifo:?}");
    assert!(fifo.incomplete, "{fifo:?}");
    let note = fifo.note.as_deref().unwrap();
    assert!(note.contains("could not be judged"), "{note}");
    assert!(note.contains("incomplete"), "{note}");
    assert_eq!(verdict(&unknown), Verdict::Incomplete);
}

#[test]
fn a_certain_violation_still_fails_beside_unjudged_pairs() {
    // r4 (client 2: machine 1, seq 2) was sent on machine 1 after r1's reply there (seq 3): a
    // violation on one clock. r2 (machine 2, offset unknown, seq 1) stays unjudged.
    let sent = vec![
        sent(1, 0, 0, 1_000, 3),
        sent(2, 1, 30_000, 30_500, 1),
        sent(4, 2, 5_000, 5_500, 2),
    ];
    let checks = checks_of(sent, two_machines(None), 0);
    let fifo = &checks["fifo"];
    assert_eq!(fifo.counts["precedence"], 1, "{fifo:?}");
    assert_eq!(fifo.counts["unjudged"], 1, "{fifo:?}");
    assert_eq!(fifo.ok, Some(false), "{fifo:?}");
    assert!(!fifo.incomplete);
    assert_eq!(verdict(&checks), Verdict::Fail);
}

#[test]
fn every_check_names_the_machine_of_a_request_in_its_counterexamples() {
    // r2 (client 1: shard 2) was accepted but never handed over: lost, on volunteer-2.
    let sent = vec![sent(1, 0, 0, 1_000, 1), sent(2, 1, 30_000, 30_500, 2)];
    let handed = vec![handed(&sent[0])];
    let options = CheckOptions {
        acks_expected: false,
        machines: two_machines(Some([49_500, 50_500])),
        ..CheckOptions::default()
    };
    let checks = check_records(&sent, &handed, &[], &options);
    let loss = &checks["loss"];
    assert_eq!(loss.counts["lost"], 1, "{loss:?}");
    let request = &loss.examples[0]["request"];
    assert_eq!(request["id"], "r2", "{loss:?}");
    assert_eq!(request["machine"]["shard"], "2/2");
    assert_eq!(request["machine"]["host"], "volunteer-2");
    // Records checked without a run.json name no machine.
    let unattributed = CheckOptions {
        machines: Machines::Unattributed,
        ..options
    };
    let checks = check_records(&sent, &handed, &[], &unattributed);
    assert!(
        checks["loss"].examples[0]["request"]
            .get("machine")
            .is_none()
    );
}
