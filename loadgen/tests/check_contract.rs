//! The checkers bite: a correct run passes, and each way of breaking the contract fails the check
//! that guards against it, with a counterexample naming the culprit. Record sets are built by hand
//! here; end-to-end runs against broken buffers live elsewhere.

use landrush::check::{
    CheckOptions, SeqSource, check_records, check_run, load_check_inputs, render_verdict,
    save_check_inputs,
};
use proptest::prelude::*;
use reports::checks::{Checks, Verdict, verdict};
use reports::records::{
    self, AckRecord, CheckInputs, HandedRecord, JsonlWriter, Outcome, SentRecord, Stamp,
};

/// 2026-12-01T09:00:00Z in microseconds: the opening instant.
const OPEN: i64 = 1_796_115_600_000_000;

fn at(us: i64) -> Stamp {
    Stamp::from_micros(OPEN + us)
}

/// The records of one run, built request by request.
#[derive(Debug, Default, Clone)]
struct Run {
    sent: Vec<SentRecord>,
    handed: Vec<HandedRecord>,
    acks: Vec<AckRecord>,
}

fn mid(id: &str) -> String {
    format!("<{id}@landrush.test>")
}

fn sent(
    id: &str,
    attempt: u32,
    sent_at: i64,
    replied_at: Option<i64>,
    outcome: Outcome,
    ticket: Option<u64>,
) -> SentRecord {
    let code = match outcome {
        Outcome::Accepted => Some(250),
        Outcome::Refused => Some(451),
        Outcome::Indeterminate | Outcome::Failed => None,
    };
    SentRecord {
        id: id.into(),
        client: 1,
        message_id: mid(id),
        domain: format!("{id}.fr"),
        sender: format!("{id}@client.test"),
        intake: "smtp".into(),
        kind: if attempt > 1 {
            "retransmission"
        } else {
            "normal"
        }
        .into(),
        attempt,
        intended_at: at(sent_at - 10),
        sent_at: (outcome != Outcome::Failed).then(|| at(sent_at)),
        replied_at: replied_at.map(at),
        code,
        reply: code.map(|c| format!("{c} ticket {}", ticket.unwrap_or(0))),
        ticket,
        outcome,
        group: None,
        raw_sha256: None,
        tls_handshake_us: None,
        node: None,
    }
}

fn handed(id: &str, seq: u64, accepted_at: i64, handed_at: i64) -> HandedRecord {
    HandedRecord {
        seq,
        seq_is_order: false,
        accepted_at: Some(at(accepted_at)),
        // The registry sees bare Message-IDs (mail parsers strip the brackets): the join copes.
        message_id: Some(format!("{id}@landrush.test")),
        landrush_id: Some(id.into()),
        domain: Some(format!("{id}.fr")),
        sender: None,
        handed_at: at(handed_at),
        source: "api".into(),
        raw_sha256: None,
    }
}

/// An ack naming `ticket`, with no accepted-at yet (see [`Run::push_ack`]).
fn ack(ack_id: &str, request: &str, ticket: u64, received_at: i64) -> AckRecord {
    AckRecord {
        message_id: Some(format!("<{ack_id}@barrage.test>")),
        in_reply_to: Some(mid(request)),
        ticket: Some(ticket),
        accepted_at: None,
        to: vec![format!("{request}@client.test")],
        received_at: at(received_at),
    }
}

impl Run {
    /// Adds an ack naming `ticket` and the accepted-at the handover gives that seq (any instant
    /// when the handover has none: the request's accepted-at is then unknown).
    fn push_ack(&mut self, ack_id: &str, request: &str, ticket: u64, received_at: i64) {
        let accepted_at = self
            .handed
            .iter()
            .find(|h| h.seq == ticket)
            .and_then(|h| h.accepted_at)
            .unwrap_or(at(0));
        let mut record = ack(ack_id, request, ticket, received_at);
        record.accepted_at = Some(accepted_at);
        self.acks.push(record);
    }

    /// A request that is accepted with `seq` at `point` (its serialization point), sent `pre` µs
    /// before and answered `post` µs after; handed over and acked in order.
    fn accepted(&mut self, id: &str, seq: u64, point: i64, pre: i64, post: i64) {
        self.sent.push(sent(
            id,
            1,
            point - pre,
            Some(point + post),
            Outcome::Accepted,
            Some(seq),
        ));
        self.handed
            .push(handed(id, seq, point, 1_000_000_000 + point));
        let mut ack = ack(&format!("ack-{id}"), id, seq, point + post + 1);
        ack.accepted_at = Some(at(point));
        self.acks.push(ack);
    }

    /// A correct run of `n` requests from several clients: request i is sent at 100·i and answered
    /// 250 µs later, so neighbours overlap in time but requests three apart do not.
    fn correct(n: usize) -> Run {
        let mut run = Run::default();
        for i in 0..n {
            run.accepted(
                &format!("r{i}"),
                i as u64 + 1,
                100 * i as i64 + 120,
                120,
                130,
            );
        }
        run
    }

    fn check(&self, options: &CheckOptions) -> Checks {
        check_records(&self.sent, &self.handed, &self.acks, options)
    }

    fn checks(&self) -> Checks {
        self.check(&CheckOptions::default())
    }
}

fn count(checks: &Checks, check: &str, name: &str) -> u64 {
    checks[check].counts[name]
}

/// Asserts every check passed, showing the verdict otherwise.
fn assert_passes(checks: &Checks) {
    let failed: Vec<_> = checks.iter().filter(|(_, c)| c.ok != Some(true)).collect();
    assert!(failed.is_empty(), "{}", render_verdict(checks));
    assert_eq!(verdict(checks), Verdict::Pass);
}

/// Asserts exactly the named checks failed and the others passed.
fn assert_fails_only(checks: &Checks, failing: &[&str]) {
    for (name, check) in checks {
        let expected = !failing.contains(&name.as_str());
        assert_eq!(
            check.ok,
            Some(expected),
            "check {name}: expected {}\n{}",
            if expected { "pass" } else { "FAIL" },
            render_verdict(checks)
        );
    }
    assert_eq!(verdict(checks), Verdict::Fail);
}

fn example_text(checks: &Checks, check: &str) -> String {
    serde_json::to_string(&checks[check].examples).unwrap()
}

#[test]
fn a_correct_run_passes_every_check() {
    let checks = Run::correct(1_000).checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "loss", "accepted"), 1_000);
    assert_eq!(count(&checks, "loss", "handed_over"), 1_000);
    assert_eq!(count(&checks, "acks", "acked"), 1_000);
    for check in checks.values() {
        assert!(check.examples.is_empty());
    }
}

#[test]
fn losing_one_accepted_request_in_a_thousand_fails_loss() {
    let mut run = Run::correct(1_000);
    let gone = run.handed.remove(500);
    assert_eq!(gone.landrush_id.as_deref(), Some("r500"));
    let checks = run.checks();
    assert_fails_only(&checks, &["loss"]);
    assert_eq!(count(&checks, "loss", "lost"), 1);
    assert_eq!(count(&checks, "loss", "gaps"), 1);
    let loss = &checks["loss"];
    assert_eq!(loss.examples[0]["request"]["id"], "r500");
    assert_eq!(loss.examples[0]["request"]["ticket"], 501);
    assert_eq!(loss.examples[1]["missing_seqs"]["from"], 501);
    assert_eq!(loss.examples[1]["after"]["seq"], 500);
    assert_eq!(loss.examples[1]["before"]["seq"], 502);
}

#[test]
fn losing_the_last_requests_is_a_loss_too() {
    let mut run = Run::correct(10);
    run.handed.truncate(8);
    let checks = run.checks();
    assert_fails_only(&checks, &["loss"]);
    assert_eq!(count(&checks, "loss", "lost"), 2);
    // Their tickets were seen, so their seqs are gaps even past the last seq handed over.
    assert_eq!(count(&checks, "loss", "gaps"), 2);
}

#[test]
fn a_gap_counts_from_the_first_seq_when_told() {
    let mut run = Run::correct(10);
    // Seqs 1 and 2 went to requests not in this run and were never handed over.
    for (i, h) in run.handed.iter_mut().enumerate() {
        h.seq = i as u64 + 3;
    }
    for (i, s) in run.sent.iter_mut().enumerate() {
        s.ticket = Some(i as u64 + 3);
    }
    for (i, a) in run.acks.iter_mut().enumerate() {
        a.ticket = Some(i as u64 + 3);
    }
    assert_passes(&run.checks());
    let options = CheckOptions {
        first_seq: Some(1),
        ..CheckOptions::default()
    };
    let checks = run.check(&options);
    assert_fails_only(&checks, &["loss"]);
    assert_eq!(count(&checks, "loss", "gaps"), 2);
    assert_eq!(count(&checks, "loss", "lost"), 0);
}

#[test]
fn swapping_two_neighbours_in_the_handover_order_fails_fifo() {
    let mut run = Run::correct(100);
    run.handed.swap(40, 41);
    let checks = run.checks();
    assert_fails_only(&checks, &["fifo"]);
    assert_eq!(count(&checks, "fifo", "violations"), 1);
    assert_eq!(count(&checks, "fifo", "handover_order"), 1);
    let example = &checks["fifo"].examples[0];
    assert_eq!(example["handed"]["seq"], 41);
    assert_eq!(example["handed"]["id"], "r40");
    assert_eq!(example["after"]["seq"], 42);
}

#[test]
fn swapping_two_neighbours_contents_under_their_seqs_fails_fifo() {
    // The registry gets seq 41 carrying r41 and seq 42 carrying r40: in order by seq, but not the
    // requests the 250s named. r40 and r41 overlap in time, so only the tickets betray it.
    let mut run = Run::correct(100);
    let (a, b) = (run.handed[40].clone(), run.handed[41].clone());
    run.handed[40] = HandedRecord {
        seq: a.seq,
        accepted_at: a.accepted_at,
        ..b.clone()
    };
    run.handed[41] = HandedRecord {
        seq: b.seq,
        accepted_at: b.accepted_at,
        ..a
    };
    let checks = run.checks();
    assert_fails_only(&checks, &["fifo", "acks"]);
    assert_eq!(count(&checks, "fifo", "ticket_mismatch"), 2);
    assert_eq!(count(&checks, "fifo", "precedence"), 0);
    assert!(example_text(&checks, "fifo").contains("\"r40\""));
    // The acks agree with the replies' tickets; the handover is what contradicts them, and
    // with it the accepted-at each ack names.
    assert_eq!(count(&checks, "acks", "mismatched"), 2);
    assert!(example_text(&checks, "acks").contains("an ack names the request's accepted-at"));
}

#[test]
fn a_later_sent_request_with_a_smaller_seq_fails_precedence() {
    // r10's reply was seen at 1250 µs; r13 was sent at 1300 µs, after it, yet got the smaller seq.
    let mut run = Run::correct(30);
    let (ra, rb) = (10, 13);
    assert!(run.sent[ra].replied_at < run.sent[rb].sent_at);
    swap_seqs(&mut run, ra, rb);
    let checks = run.checks();
    assert_fails_only(&checks, &["fifo"]);
    assert_eq!(count(&checks, "fifo", "handover_order"), 0);
    assert_eq!(count(&checks, "fifo", "ticket_mismatch"), 0);
    assert!(count(&checks, "fifo", "precedence") >= 1);
    let example = &checks["fifo"].examples[0];
    assert_eq!(example["later"]["id"], "r13");
    assert_eq!(example["later"]["seq"], 11);
    assert_eq!(example["earlier"]["seq"], 14);
    assert_eq!(
        example["earlier"]["replied_at"],
        run.sent[ra].replied_at.unwrap().to_string()
    );
}

#[test]
fn precedence_allows_for_the_stated_clock_skew() {
    // r10's reply was seen 50 µs before r13 was sent: within a 100 µs skew the order is unknown.
    let mut run = Run::correct(30);
    run.sent[13].sent_at = Some(at(1_300));
    swap_seqs(&mut run, 10, 13);
    let skewed = CheckOptions {
        clock_tolerance_us: 100,
        ..CheckOptions::default()
    };
    assert_passes(&run.check(&skewed));
    let checks = run.check(&CheckOptions {
        clock_tolerance_us: 49,
        ..CheckOptions::default()
    });
    assert_fails_only(&checks, &["fifo"]);
    assert_eq!(
        checks["fifo"].examples[0]["later"]["sent_at"],
        at(1_300).to_string()
    );
}

#[test]
fn overlapping_requests_may_be_ordered_either_way() {
    // r10 (sent 1000, answered 1250) and r11 (sent 1100, answered 1350) overlap: either order is
    // honest FIFO. So do r10 and r12 (sent 1200, before r10's reply).
    for (ra, rb) in [(10, 11), (10, 12)] {
        let mut run = Run::correct(30);
        swap_seqs(&mut run, ra, rb);
        assert_passes(&run.checks());
    }
    // A reply and a send at the same microsecond do not order the two either.
    let mut run = Run::correct(30);
    let reply = run.sent[10].replied_at;
    run.sent[13].sent_at = reply;
    swap_seqs(&mut run, 10, 13);
    assert_passes(&run.checks());
}

/// Gives requests `a` and `b` each other's seq everywhere (reply, handover, ack), keeping the
/// handover in seq order and accepted-at attached to the seq, as a buffer that misordered them
/// would show it.
fn swap_seqs(run: &mut Run, a: usize, b: usize) {
    let (ta, tb) = (run.sent[a].ticket, run.sent[b].ticket);
    run.sent[a].ticket = tb;
    run.sent[b].ticket = ta;
    let (ack_a, ack_b) = (run.acks[a].ticket, run.acks[b].ticket);
    run.acks[a].ticket = ack_b;
    run.acks[b].ticket = ack_a;
    let (at_a, at_b) = (run.acks[a].accepted_at, run.acks[b].accepted_at);
    run.acks[a].accepted_at = at_b;
    run.acks[b].accepted_at = at_a;
    let (ha, hb) = (run.handed[a].clone(), run.handed[b].clone());
    run.handed[a] = HandedRecord {
        seq: ha.seq,
        accepted_at: ha.accepted_at,
        ..hb.clone()
    };
    run.handed[b] = HandedRecord {
        seq: hb.seq,
        accepted_at: hb.accepted_at,
        ..ha
    };
}

#[test]
fn accepted_at_going_backwards_fails_fifo() {
    let mut run = Run::correct(50);
    run.handed[20].accepted_at = Some(at(5));
    // The ack names the accepted-at the buffer gave, backwards as it is.
    run.acks[20].accepted_at = Some(at(5));
    let checks = run.checks();
    assert_fails_only(&checks, &["fifo"]);
    assert_eq!(count(&checks, "fifo", "accepted_at"), 1);
    let example = &checks["fifo"].examples[0];
    assert_eq!(example["handed"]["seq"], 21);
    assert_eq!(example["previous_seq"]["seq"], 20);
}

#[test]
fn a_ticket_that_is_not_the_seq_handed_over_fails_fifo() {
    let mut run = Run::correct(20);
    run.sent[7].ticket = Some(99);
    run.acks[7].ticket = Some(99);
    let checks = run.checks();
    assert!(
        count(&checks, "fifo", "ticket_mismatch") == 1,
        "{}",
        render_verdict(&checks)
    );
    assert_eq!(checks["fifo"].ok, Some(false));
    assert_eq!(checks["fifo"].examples[0]["request"]["id"], "r7");
}

#[test]
fn two_distinct_acks_for_one_request_fail_acks() {
    let mut run = Run::correct(50);
    run.push_ack("second-ack-r17", "r17", 18, 9_000);
    let checks = run.checks();
    assert_fails_only(&checks, &["acks"]);
    assert_eq!(count(&checks, "acks", "extra"), 1);
    assert_eq!(count(&checks, "acks", "resent"), 0);
    let text = example_text(&checks, "acks");
    assert!(
        text.contains("r17") && text.contains("second-ack-r17"),
        "{text}"
    );
}

#[test]
fn an_ack_for_a_refused_request_fails_acks() {
    let mut run = Run::correct(20);
    run.sent.push(sent(
        "refused",
        1,
        5_000,
        Some(5_100),
        Outcome::Refused,
        None,
    ));
    assert_passes(&run.checks());
    run.push_ack("ack-refused", "refused", 21, 5_200);
    let checks = run.checks();
    assert_fails_only(&checks, &["acks"]);
    assert_eq!(count(&checks, "acks", "extra"), 1);
    let example = &checks["acks"].examples[0];
    assert_eq!(example["request"]["id"], "refused");
    assert_eq!(example["rule"], "a refused request gets no ack");
}

#[test]
fn an_ack_for_no_request_or_a_missing_ack_fails_acks() {
    let mut run = Run::correct(20);
    run.acks.remove(3);
    let checks = run.checks();
    assert_fails_only(&checks, &["acks"]);
    assert_eq!(count(&checks, "acks", "missing"), 1);
    assert_eq!(checks["acks"].examples[0]["request"]["id"], "r3");

    let mut run = Run::correct(20);
    run.push_ack("stray", "nobody", 3, 9_000);
    let checks = run.checks();
    assert_fails_only(&checks, &["acks"]);
    assert_eq!(count(&checks, "acks", "extra"), 1);
}

#[test]
fn a_misaddressed_or_misticketed_ack_fails_acks() {
    let mut run = Run::correct(20);
    run.acks[4].to = vec!["someone.else@client.test".into()];
    run.acks[5].ticket = Some(77);
    let checks = run.checks();
    assert_fails_only(&checks, &["acks"]);
    assert_eq!(count(&checks, "acks", "misaddressed"), 1);
    assert_eq!(count(&checks, "acks", "mismatched"), 1);

    // Spelling differences in the address are not a failure.
    let mut run = Run::correct(20);
    run.acks[4].to = vec!["R4 <R4@Client.Test>".into()];
    assert_passes(&run.checks());
}

#[test]
fn an_ack_resent_with_the_same_message_id_is_counted_not_failed() {
    let mut run = Run::correct(50);
    let mut again = run.acks[17].clone();
    again.received_at = at(50_000);
    run.acks.push(again.clone());
    run.acks.push(again);
    let checks = run.checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "acks", "resent"), 2);
    assert_eq!(count(&checks, "acks", "extra"), 0);
}

#[test]
fn a_redelivered_seq_is_counted_not_failed() {
    let mut run = Run::correct(20);
    // A crash and a re-read from the cursor: seqs 8..=10 come again before 11.
    let again: Vec<_> = run.handed[7..10].to_vec();
    let tail = run.handed.split_off(10);
    run.handed.extend(again);
    run.handed.extend(tail);
    let checks = run.checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "duplicates", "redelivered"), 3);
}

/// The RFC 1047 case: the first transmission's reply never arrived (indeterminate), the client sent
/// the same message again, and it was accepted.
fn retransmitted(original_ticket: bool) -> Run {
    let mut run = Run::correct(20);
    // r20 was sent at 3000 µs, stored as seq 21, but the client never read the 250.
    run.sent
        .push(sent("r20", 1, 3_000, None, Outcome::Indeterminate, None));
    if original_ticket {
        run.sent.push(sent(
            "r20",
            2,
            4_000,
            Some(4_050),
            Outcome::Accepted,
            Some(21),
        ));
        run.handed.push(handed("r20", 21, 3_010, 1_000_003_010));
        run.push_ack("ack-r20", "r20", 21, 3_020);
    } else {
        // A buffer without dedup stores it again as seq 22 and acks it twice.
        run.sent.push(sent(
            "r20",
            2,
            4_000,
            Some(4_050),
            Outcome::Accepted,
            Some(22),
        ));
        run.handed.push(handed("r20", 21, 3_010, 1_000_003_010));
        run.handed.push(handed("r20", 22, 4_010, 1_000_004_010));
        run.push_ack("ack-r20", "r20", 21, 3_020);
        run.push_ack("ack-r20-again", "r20", 22, 4_020);
    }
    run
}

#[test]
fn a_retransmission_with_the_original_ticket_passes() {
    let checks = retransmitted(true).checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "retransmissions", "retransmitted"), 1);
}

#[test]
fn a_retransmission_given_a_new_seq_fails() {
    let checks = retransmitted(false).checks();
    assert_fails_only(&checks, &["retransmissions", "duplicates", "acks"]);
    assert_eq!(count(&checks, "retransmissions", "new_seq"), 1);
    assert_eq!(count(&checks, "retransmissions", "second_ack"), 1);
    assert_eq!(count(&checks, "duplicates", "duplicated"), 1);
    assert_eq!(count(&checks, "acks", "extra"), 1);
    assert_eq!(
        checks["retransmissions"].examples[0]["request"]["id"],
        "r20"
    );
    assert_eq!(
        checks["duplicates"].examples[0]["request"]["handed_seqs"],
        serde_json::json!([21, 22])
    );
    // The second reply named 22, so the first ack (naming 21) contradicts it; the second names
    // 22's accepted-at, not the one of seq 21, under which r20 was first handed over.
    assert_eq!(count(&checks, "acks", "mismatched"), 2);
}

#[test]
fn a_retransmission_answered_with_a_new_ticket_alone_fails() {
    // Even if only one copy reaches the registry, two different tickets in the replies are a new seq.
    let mut run = Run::correct(5);
    run.sent.push(sent(
        "r5",
        1,
        3_000,
        Some(3_050),
        Outcome::Accepted,
        Some(6),
    ));
    run.sent.push(sent(
        "r5",
        2,
        4_000,
        Some(4_050),
        Outcome::Accepted,
        Some(7),
    ));
    run.handed.push(handed("r5", 6, 3_010, 1_000_003_010));
    run.push_ack("ack-r5", "r5", 6, 3_020);
    let checks = run.checks();
    assert_eq!(
        checks["retransmissions"].ok,
        Some(false),
        "{}",
        render_verdict(&checks)
    );
    assert_eq!(count(&checks, "retransmissions", "new_seq"), 1);
}

#[test]
fn an_indeterminate_request_may_be_stored_or_not() {
    // Not stored: no seq, no handover, no ack.
    let mut run = Run::correct(20);
    run.sent.push(sent(
        "lost-reply",
        1,
        5_000,
        None,
        Outcome::Indeterminate,
        None,
    ));
    let checks = run.checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "loss", "indeterminate"), 1);
    assert_eq!(count(&checks, "loss", "indeterminate_stored"), 0);

    // Stored: it has the next seq, is handed over and acked like any other.
    run.handed
        .push(handed("lost-reply", 21, 5_010, 1_000_005_010));
    run.push_ack("ack-lost-reply", "lost-reply", 21, 5_020);
    let checks = run.checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "loss", "indeterminate_stored"), 1);
}

#[test]
fn a_stored_indeterminate_request_obeys_the_rules() {
    // Stored, but ordered before r10 whose reply was seen long before it was sent.
    let mut run = Run::correct(20);
    run.sent
        .push(sent("late", 1, 5_000, None, Outcome::Indeterminate, None));
    run.push_ack("ack-late", "late", 3, 5_020);
    let checks = run.checks();
    // Acked (so stored) but never handed over: lost.
    assert_fails_only(&checks, &["loss"]);
    assert_eq!(count(&checks, "loss", "lost"), 1);
    assert_eq!(
        checks["loss"].examples[0]["why_stored"],
        "no reply, but acked"
    );

    // Handed over twice under two seqs, no ack, and with a seq smaller than earlier replies.
    let mut run = Run::correct(20);
    run.sent
        .push(sent("late", 1, 5_000, None, Outcome::Indeterminate, None));
    run.handed.push(handed("late", 21, 5_010, 1_000_005_010));
    run.handed.push(handed("late", 22, 5_011, 1_000_005_011));
    let checks = run.checks();
    assert_fails_only(&checks, &["duplicates", "acks"]);
    assert_eq!(count(&checks, "acks", "missing"), 1);

    let mut run = Run::correct(20);
    run.sent
        .push(sent("late", 1, 5_000, None, Outcome::Indeterminate, None));
    run.handed.insert(0, handed("late", 0, 0, 999_999_999));
    run.push_ack("ack-late", "late", 0, 5_020);
    let checks = run.checks();
    assert_fails_only(&checks, &["fifo"]);
    assert_eq!(checks["fifo"].examples[0]["later"]["id"], "late");
}

#[test]
fn a_handed_request_never_sent_or_refused_fails_duplicates() {
    let mut run = Run::correct(20);
    run.handed.push(handed("ghost", 21, 5_000, 1_000_005_000));
    let checks = run.checks();
    assert_fails_only(&checks, &["duplicates"]);
    assert_eq!(count(&checks, "duplicates", "unexpected"), 1);
    assert_eq!(checks["duplicates"].examples[0]["handed"]["id"], "ghost");

    let mut run = Run::correct(20);
    run.sent.push(sent(
        "refused",
        1,
        5_000,
        Some(5_100),
        Outcome::Refused,
        None,
    ));
    run.handed.push(handed("refused", 21, 5_050, 1_000_005_050));
    let checks = run.checks();
    assert_fails_only(&checks, &["duplicates"]);
    assert_eq!(count(&checks, "duplicates", "unexpected"), 1);
    assert_eq!(checks["duplicates"].examples[0]["request"]["id"], "refused");
}

#[test]
fn one_seq_for_two_requests_fails_duplicates() {
    let mut run = Run::correct(20);
    run.sent[5].ticket = Some(5);
    run.acks[5].ticket = Some(5);
    run.handed[5].seq = 5;
    let checks = run.checks();
    assert_eq!(
        checks["duplicates"].ok,
        Some(false),
        "{}",
        render_verdict(&checks)
    );
    assert_eq!(count(&checks, "duplicates", "shared_seq"), 1);
}

#[test]
fn without_acks_the_ack_check_is_skipped_not_passed() {
    let mut run = Run::correct(20);
    run.acks.clear();
    let options = CheckOptions {
        acks_expected: false,
        ..CheckOptions::default()
    };
    let checks = run.check(&options);
    assert_eq!(checks["acks"].ok, None);
    assert!(checks["acks"].note.as_deref().unwrap().contains("no acks"));
    assert_eq!(verdict(&checks), Verdict::Pass);
    assert!(render_verdict(&checks).contains("skipped"));
    // And with acks expected, their absence fails.
    let checks = run.checks();
    assert_eq!(checks["acks"].ok, Some(false));
    assert_eq!(count(&checks, "acks", "missing"), 20);
    assert_eq!(checks["acks"].examples.len(), 5);
}

/// A foreign buffer delivering to a Maildir: no tickets, no accepted-at, delivery order for seq.
fn maildir(run: &Run) -> Run {
    let mut run = run.clone();
    for s in &mut run.sent {
        s.ticket = None;
    }
    for (i, h) in run.handed.iter_mut().enumerate() {
        h.seq = i as u64 + 1;
        h.seq_is_order = true;
        h.accepted_at = None;
        h.source = "maildir".into();
    }
    run.acks.clear();
    run
}

#[test]
fn delivery_order_is_checked_for_precedence_only() {
    let no_acks = CheckOptions {
        acks_expected: false,
        ..CheckOptions::default()
    };
    let run = maildir(&Run::correct(50));
    let checks = run.check(&no_acks);
    assert_eq!(
        verdict(&checks),
        Verdict::Pass,
        "{}",
        render_verdict(&checks)
    );
    assert!(checks["fifo"].note.is_some());

    // Delivered r30 before r20, which it came long after.
    let mut run = Run::correct(50);
    let moved = run.handed.remove(30);
    run.handed.insert(20, moved);
    let checks = maildir(&run).check(&no_acks);
    assert_eq!(
        checks["fifo"].ok,
        Some(false),
        "{}",
        render_verdict(&checks)
    );
    assert!(count(&checks, "fifo", "precedence") >= 1);
    assert_eq!(checks["fifo"].examples[0]["later"]["id"], "r30");
    assert_eq!(count(&checks, "fifo", "ticket_mismatch"), 0);
    assert_eq!(count(&checks, "loss", "gaps"), 0);

    // The same records read as buffer seqs would be judged on tickets: the option decides.
    let explicit = CheckOptions {
        seqs: SeqSource::DeliveryOrder,
        ..no_acks.clone()
    };
    let mut run = maildir(&Run::correct(10));
    for h in &mut run.handed {
        h.seq_is_order = false;
    }
    assert_eq!(verdict(&run.check(&explicit)), Verdict::Pass);
}

#[test]
fn check_run_reads_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::correct(30);
    run.handed.remove(12);
    fn write<T: serde::Serialize>(path: &std::path::Path, rows: &[T]) {
        let mut w = JsonlWriter::create(path).unwrap();
        for row in rows {
            w.write(row).unwrap();
        }
        w.flush().unwrap();
    }
    write(&dir.path().join(records::SENT), &run.sent);
    write(&dir.path().join(records::HANDED), &run.handed);
    write(&dir.path().join(records::ACKS), &run.acks);
    let checks = check_run(dir.path(), &CheckOptions::default()).unwrap();
    assert_eq!(checks, run.checks());
    assert_eq!(count(&checks, "loss", "lost"), 1);

    let text = render_verdict(&checks);
    assert!(text.contains("FAIL") && text.contains("r12"), "{text}");
    assert!(text.trim_end().ends_with("verdict: FAIL"), "{text}");

    // Without handed.jsonl no handover was observed: the handover checks could not run, and the
    // run is incomplete (not 30 lost, not a pass); without sent.jsonl it is not a run folder.
    std::fs::remove_file(dir.path().join(records::HANDED)).unwrap();
    let checks = check_run(dir.path(), &CheckOptions::default()).unwrap();
    for name in ["fifo", "loss", "duplicates", "retransmissions", "content"] {
        assert_eq!(checks[name].ok, None, "{name}");
        assert!(checks[name].incomplete, "{name}");
    }
    assert_eq!(checks["acks"].ok, Some(true));
    assert_eq!(verdict(&checks), Verdict::Incomplete);
    assert!(render_verdict(&checks).contains("verdict: INCOMPLETE"));
    // A handed.jsonl that exists but is empty is an observer that saw nothing: lost.
    std::fs::write(dir.path().join(records::HANDED), "").unwrap();
    let checks = check_run(dir.path(), &CheckOptions::default()).unwrap();
    assert_eq!(count(&checks, "loss", "lost"), 30);
    let empty = tempfile::tempdir().unwrap();
    let err = check_run(empty.path(), &CheckOptions::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a landrush run folder"),
        "{err:#}"
    );

    std::fs::write(dir.path().join(records::HANDED), "not json\n").unwrap();
    let err = check_run(dir.path(), &CheckOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("handed.jsonl:1"), "{err:#}");
}

#[test]
fn a_refused_earlier_try_does_not_hide_a_precedence_violation() {
    // r10's 250 was seen at 1250 µs; r13 was sent at 1300 µs and got the smaller seq. An earlier
    // try of r13 at 1100 µs, refused with 451, stored nothing: it cannot excuse the order.
    let mut run = Run::correct(30);
    swap_seqs(&mut run, 10, 13);
    let refused_try = sent("r13", 1, 1_100, Some(1_150), Outcome::Refused, None);
    run.sent[13].attempt = 2;
    run.sent.insert(13, refused_try);
    let checks = run.checks();
    assert_fails_only(&checks, &["fifo"]);
    assert_eq!(count(&checks, "fifo", "precedence"), 1);
    let example = &checks["fifo"].examples[0];
    assert_eq!(example["later"]["id"], "r13");
    assert_eq!(example["later"]["sent_at"], at(1_300).to_string());
    assert_eq!(example["earlier"]["id"], "r10");

    // The legal variant: the earlier try got no reply, so it may have stored r13 before r10's
    // 250 was seen, and either order is FIFO.
    let mut run = Run::correct(30);
    swap_seqs(&mut run, 10, 13);
    let unanswered_try = sent("r13", 1, 1_100, None, Outcome::Indeterminate, None);
    run.sent[13].attempt = 2;
    run.sent.insert(13, unanswered_try);
    assert_passes(&run.checks());
}

#[test]
fn a_handed_request_with_another_domain_sender_or_message_id_fails_content() {
    for (field, plant) in [
        (
            "domain",
            (|h: &mut HandedRecord| h.domain = Some("stolen.fr".into())) as fn(&mut _),
        ),
        ("sender", |h| h.sender = Some("thief@stolen.fr".into())),
        ("message_id", |h| {
            h.message_id = Some("<other@thief.test>".into())
        }),
    ] {
        let mut run = Run::correct(20);
        plant(&mut run.handed[7]);
        let checks = run.checks();
        assert_fails_only(&checks, &["content"]);
        assert_eq!(count(&checks, "content", field), 1, "{field}");
        let example = &checks["content"].examples[0];
        assert_eq!(example["field"], field);
        assert_eq!(example["request"]["id"], "r7");
        assert_eq!(example["handed_record"]["seq"], 8);
    }
    // The legal variant: the buffer's normalisation (case, trailing dot) and a bare Message-ID.
    let mut run = Run::correct(20);
    run.handed[7].domain = Some("R7.FR.".into());
    run.handed[7].sender = Some("R7@Client.Test".into());
    run.handed[7].message_id = Some("r7@landrush.test".into());
    let checks = run.checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "content", "compared"), 20);
}

#[test]
fn a_handed_raw_message_other_than_the_one_sent_fails_content() {
    let mut run = Run::correct(5);
    for (s, h) in run.sent.iter_mut().zip(run.handed.iter_mut()) {
        let raw = format!("X-Landrush-Id: {}\r\n\r\ndomain: {}\r\n", s.id, s.domain);
        s.raw_sha256 = Some(records::sha256_hex(raw.as_bytes()));
        // A relay's trace fields in front do not change the digest.
        let relayed = format!("Received: from a by b\r\n{raw}");
        h.raw_sha256 = Some(records::handed_sha256(relayed.as_bytes()));
    }
    let checks = run.checks();
    assert_passes(&checks);
    assert_eq!(count(&checks, "content", "raw_compared"), 5);
    run.handed[2].raw_sha256 = Some(records::sha256_hex(
        b"X-Landrush-Id: r2\r\n\r\ndomain: x.fr\r\n",
    ));
    let checks = run.checks();
    assert_fails_only(&checks, &["content"]);
    assert_eq!(count(&checks, "content", "raw"), 1);
    assert_eq!(checks["content"].examples[0]["request"]["id"], "r2");
}

#[test]
fn an_ack_must_name_the_requests_ticket_and_accepted_at() {
    type Plant = fn(&mut AckRecord);
    let cases: [(&str, Plant); 3] = [
        ("no ticket", |a| a.ticket = None),
        ("no accepted-at", |a| a.accepted_at = None),
        ("another accepted-at", |a| {
            a.accepted_at = a.accepted_at.map(|t| Stamp::from_micros(t.micros() + 1))
        }),
    ];
    for (what, plant) in cases {
        let mut run = Run::correct(20);
        plant(&mut run.acks[9]);
        let checks = run.checks();
        assert_fails_only(&checks, &["acks"]);
        assert_eq!(count(&checks, "acks", "mismatched"), 1, "{what}");
        let example = &checks["acks"].examples[0];
        assert_eq!(example["request"]["id"], "r9", "{what}");
        let rule = example["rule"].as_str().unwrap();
        let expected = if what == "no ticket" {
            "ticket"
        } else {
            "accepted-at"
        };
        assert!(rule.ends_with(expected), "{what}: {rule}");
    }
    // The accepted-at a success reply names is the request's, before the handover's.
    let mut run = Run::correct(20);
    let accepted_at = run.acks[9].accepted_at.unwrap();
    run.sent[9].reply = Some(format!("250 2.0.0 queued as ticket 10 at {accepted_at}"));
    assert_passes(&run.checks());
    run.sent[9].reply = Some(format!("250 2.0.0 queued as ticket 10 at {}", at(1)));
    let checks = run.checks();
    assert_eq!(count(&checks, "acks", "mismatched"), 1);
}

/// Writes `run`'s records into a folder.
fn write_folder(dir: &std::path::Path, run: &Run) {
    fn write<T: serde::Serialize>(path: &std::path::Path, rows: &[T]) {
        let mut w = JsonlWriter::create(path).unwrap();
        for row in rows {
            w.write(row).unwrap();
        }
        w.flush().unwrap();
    }
    write(&dir.join(records::SENT), &run.sent);
    write(&dir.join(records::HANDED), &run.handed);
    write(&dir.join(records::ACKS), &run.acks);
}

#[test]
fn check_dir_finds_lost_first_and_trailing_seqs_from_checks_json() {
    // Seqs 1 and 12 went to requests whose client got no reply (so no ticket names them), and
    // the buffer handed over neither: only the run's first seq and the buffer's own highest seq
    // betray them.
    let mut run = Run::correct(10);
    for (i, h) in run.handed.iter_mut().enumerate() {
        h.seq = i as u64 + 2;
    }
    for (i, s) in run.sent.iter_mut().enumerate() {
        s.ticket = Some(i as u64 + 2);
    }
    for (i, a) in run.acks.iter_mut().enumerate() {
        a.ticket = Some(i as u64 + 2);
    }
    for id in ["first", "last"] {
        run.sent
            .push(sent(id, 1, 5_000, None, Outcome::Indeterminate, None));
    }
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), &run);
    // Without checks.json the folder cannot tell: it passes (what `check` could do before).
    let options = load_check_inputs(dir.path()).unwrap();
    assert_eq!(
        verdict(&check_run(dir.path(), &options).unwrap()),
        Verdict::Pass
    );
    let inputs = CheckInputs {
        first_seq: Some(1),
        highest_seq: Some(12),
        acks_expected: true,
        drain_complete: Some(true),
        ..CheckInputs::default()
    };
    save_check_inputs(dir.path(), &inputs).unwrap();
    let options = load_check_inputs(dir.path()).unwrap();
    let checks = check_run(dir.path(), &options).unwrap();
    assert_fails_only(&checks, &["loss"]);
    assert_eq!(count(&checks, "loss", "gaps"), 2);
    let text = example_text(&checks, "loss");
    assert!(text.contains(r#""from":1,"to":1"#), "{text}");
    assert!(text.contains(r#""from":12,"to":12"#), "{text}");
    // The legal variant: the buffer stored nothing more than what was handed over.
    save_check_inputs(
        dir.path(),
        &CheckInputs {
            first_seq: Some(2),
            highest_seq: Some(11),
            ..inputs
        },
    )
    .unwrap();
    let options = load_check_inputs(dir.path()).unwrap();
    assert_passes(&check_run(dir.path(), &options).unwrap());
}

#[test]
fn a_request_that_failed_before_data_is_never_stored() {
    let mut run = Run::correct(10);
    run.sent
        .push(sent("broken", 1, 5_000, None, Outcome::Failed, None));
    let checks = run.checks();
    assert_passes(&checks);
    // It is not an indeterminate request: nothing can have been stored.
    assert_eq!(count(&checks, "loss", "indeterminate"), 0);
    // Handed over anyway, it is a request the buffer cannot have had.
    run.handed.push(handed("broken", 11, 5_010, 1_000_005_010));
    let checks = run.checks();
    assert!(
        checks["duplicates"].ok == Some(false),
        "{}",
        render_verdict(&checks)
    );
    assert_eq!(count(&checks, "duplicates", "unexpected"), 1);
    assert!(example_text(&checks, "duplicates").contains("\"broken\""));
}

#[test]
fn a_missing_shard_or_an_unfinished_drain_makes_the_run_incomplete() {
    let run = Run::correct(10);
    let missing = CheckOptions {
        missing_shards: 1,
        ..CheckOptions::default()
    };
    let checks = run.check(&missing);
    assert_eq!(
        verdict(&checks),
        Verdict::Incomplete,
        "{}",
        render_verdict(&checks)
    );
    assert_eq!(count(&checks, "completeness", "missing_shards"), 1);
    let undrained = CheckOptions {
        drain_complete: Some(false),
        ..CheckOptions::default()
    };
    let checks = run.check(&undrained);
    assert_eq!(verdict(&checks), Verdict::Incomplete);
    assert!(checks["completeness"].incomplete);
    // A failure still outweighs it.
    let mut broken = run.clone();
    broken.handed.remove(3);
    assert_eq!(verdict(&broken.check(&undrained)), Verdict::Fail);
    // Acks expected but never observed: incomplete too.
    let unobserved = CheckOptions {
        acks_observed: false,
        ..CheckOptions::default()
    };
    let checks = run.check(&unobserved);
    assert!(checks["acks"].incomplete && checks["acks"].ok.is_none());
    assert_eq!(verdict(&checks), Verdict::Incomplete);
}

/// A valid history of `n` requests: serialization points strictly increasing, each request sent
/// `pre` before its point and answered `post` after it, seqs in point order.
fn history() -> impl Strategy<Value = Run> {
    prop::collection::vec((1i64..60, 0i64..150, 0i64..150), 2..80).prop_map(|rows| {
        let mut run = Run::default();
        let mut point = 1_000;
        for (i, (gap, pre, post)) in rows.into_iter().enumerate() {
            point += gap;
            run.accepted(&format!("r{i}"), i as u64 + 1, point, pre, post);
        }
        run
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_valid_history_passes(run in history()) {
        let checks = run.checks();
        prop_assert_eq!(verdict(&checks), Verdict::Pass, "{}", render_verdict(&checks));
    }

    #[test]
    fn an_adjacent_swap_fails_exactly_when_the_two_do_not_overlap(
        run in history(),
        pick in any::<prop::sample::Index>(),
    ) {
        let k = pick.index(run.sent.len() - 1);
        let apart = run.sent[k].replied_at < run.sent[k + 1].sent_at;
        let mut swapped = run.clone();
        swap_seqs(&mut swapped, k, k + 1);
        let checks = swapped.checks();
        if apart {
            assert_fails_only(&checks, &["fifo"]);
            prop_assert_eq!(count(&checks, "fifo", "precedence"), 1);
            let example = &checks["fifo"].examples[0];
            prop_assert_eq!(&example["earlier"]["id"], &serde_json::json!(format!("r{k}")));
            prop_assert_eq!(&example["later"]["id"], &serde_json::json!(format!("r{}", k + 1)));
        } else {
            prop_assert_eq!(verdict(&checks), Verdict::Pass, "{}", render_verdict(&checks));
        }
    }
}

#[test]
fn report_and_check_on_a_folder_with_only_sent_jsonl_say_incomplete_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::correct(5);
    let mut w = JsonlWriter::create(&dir.path().join(records::SENT)).unwrap();
    for s in &run.sent {
        w.write(s).unwrap();
    }
    w.flush().unwrap();
    for command in ["report", "check"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_landrush"))
            .arg(command)
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(3), "{command}: {stdout}");
        assert!(
            stdout.contains("INCOMPLETE") && !stdout.contains("PASS"),
            "{command}: {stdout}"
        );
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("INCOMPLETE") && !md.contains("PASS"), "{md}");
}

#[test]
fn an_observer_stopped_before_the_buffer_drained_is_incomplete_not_a_loss() {
    // The registry took seqs 1–6 and stopped; the buffer's final stats still show 4 queued.
    let mut run = Run::correct(10);
    run.handed.truncate(6);
    run.acks.truncate(7);
    let stopped = CheckOptions {
        drain_complete: Some(false),
        final_cursor: Some(6),
        final_queue_depth: Some(4),
        final_acks_pending: Some(3),
        ..CheckOptions::default()
    };
    let checks = run.check(&stopped);
    assert_eq!(
        verdict(&checks),
        Verdict::Incomplete,
        "{}",
        render_verdict(&checks)
    );
    assert_eq!(count(&checks, "loss", "pending"), 4);
    assert_eq!(count(&checks, "loss", "lost"), 0);
    assert!(checks["loss"].incomplete && checks["loss"].ok.is_none());
    assert_eq!(count(&checks, "acks", "pending"), 3);
    assert_eq!(count(&checks, "acks", "missing"), 0);
    assert_eq!(count(&checks, "completeness", "undrained"), 1);
    // The same records from a buffer that said it was done: those four are lost, three unacked.
    let done = CheckOptions {
        drain_complete: Some(false),
        final_cursor: Some(10),
        final_queue_depth: Some(0),
        final_acks_pending: Some(0),
        ..CheckOptions::default()
    };
    let checks = run.check(&done);
    assert_eq!(verdict(&checks), Verdict::Fail);
    assert_eq!(count(&checks, "loss", "lost"), 4);
    assert_eq!(count(&checks, "acks", "missing"), 3);
    assert_eq!(count(&checks, "completeness", "undrained"), 0);
    // A request lost below the cursor is lost whatever is still queued above it.
    let mut holed = run.clone();
    holed.handed.remove(2);
    let checks = holed.check(&stopped);
    assert_eq!(verdict(&checks), Verdict::Fail);
    assert_eq!(count(&checks, "loss", "lost"), 1);
    assert_eq!(checks["loss"].examples[0]["request"]["id"], "r2");
}

/// Request 9 is a key collider's: it reuses request 3's Message-ID and envelope sender with other
/// content, so its ack goes to request 3's requester with the same In-Reply-To.
fn collided() -> Run {
    let mut run = Run::correct(10);
    run.sent[9].message_id = mid("r3");
    run.sent[9].sender = "r3@client.test".into();
    run.handed[9].message_id = Some("r3@landrush.test".into());
    run.acks[9].in_reply_to = Some(mid("r3"));
    run.acks[9].to = vec!["r3@client.test".into()];
    run
}

#[test]
fn acks_of_two_requests_sharing_a_message_id_are_told_apart_by_their_tickets() {
    assert_passes(&collided().checks());

    // The victim's ack naming the collider's ticket is a second ack of the collider's request,
    // and the victim's own ack is missing.
    let mut run = collided();
    run.acks[3].ticket = Some(10);
    run.acks[3].accepted_at = run.acks[9].accepted_at;
    let checks = run.checks();
    assert_fails_only(&checks, &["acks"]);
    assert_eq!(count(&checks, "acks", "missing"), 1);
}
