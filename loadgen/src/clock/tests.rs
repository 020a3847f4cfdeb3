use reports::records::{ClockMethod, Outcome, SentRecord, Stamp};

use super::exchange::{self, Exchange};
use super::{accepted_at, from_replies};

/// Local stamps of a machine whose clock runs `offset` µs ahead of the buffer's.
fn accepted(
    id: &str,
    ticket: u64,
    sent: i64,
    stored: i64,
    replied: i64,
    offset: i64,
) -> SentRecord {
    let at = Stamp::from_micros(stored);
    SentRecord {
        id: id.into(),
        client: 0,
        message_id: format!("<{id}@x>"),
        domain: "exemple.fr".into(),
        sender: "a@b.fr".into(),
        intake: "smtp".into(),
        kind: "normal".into(),
        attempt: 1,
        intended_at: Stamp::from_micros(sent + offset),
        sent_at: Some(Stamp::from_micros(sent + offset)),
        replied_at: Some(Stamp::from_micros(replied + offset)),
        code: Some(250),
        reply: Some(format!("250 2.0.0 queued as ticket {ticket} at {at}")),
        ticket: Some(ticket),
        outcome: Outcome::Accepted,
        group: None,
        raw_sha256: None,
        tls_handshake_us: None,
        node: None,
    }
}

const T: i64 = 1_796_115_600_000_000;

#[test]
fn replies_bound_the_offset_and_the_truth_lies_inside() {
    let offset = 50_000;
    let records = vec![
        accepted("r1", 1, T, T + 300, T + 900, offset),
        accepted("r2", 2, T + 1_000, T + 1_100, T + 1_400, offset),
        accepted("r3", 3, T + 2_000, T + 2_600, T + 2_700, offset),
    ];
    let clock = from_replies(&records, "127.0.0.1:25");
    assert_eq!(clock.method, ClockMethod::BufferReplies);
    assert_eq!(clock.samples, 3);
    let [lo, hi] = clock.offset_us.expect("known");
    // Tightest lower bound: r2 (stored 100 µs after its send); tightest upper: r3 (replied 100 µs
    // after it was stored).
    assert_eq!([lo, hi], [offset - 100, offset + 100]);
    assert!(lo <= offset && offset <= hi);
    assert_eq!(clock.reference, "buffer 127.0.0.1:25");
}

#[test]
fn a_retransmissions_reply_gives_no_lower_bound() {
    let offset = -30_000;
    let mut again = accepted("r1", 1, T + 5_000, T + 100, T + 5_200, offset);
    again.attempt = 2;
    let records = vec![accepted("r1", 1, T, T + 100, T + 400, offset), again];
    let clock = from_replies(&records, "b");
    // Were the second reply's lower bound kept, it would be offset + 4,900: above the truth.
    assert_eq!(clock.offset_us, Some([offset - 100, offset + 300]));
    // A second reply with a ticket already seen is left out the same way, whatever its attempt.
    let mut resent = accepted("r2", 1, T + 9_000, T + 100, T + 9_100, offset);
    resent.attempt = 1;
    let records = vec![accepted("r1", 1, T, T + 100, T + 400, offset), resent];
    assert_eq!(
        from_replies(&records, "b").offset_us,
        Some([offset - 100, offset + 300])
    );
}

#[test]
fn a_clock_stepped_mid_run_leaves_the_offset_unknown_and_names_the_samples() {
    // The buffer's clock jumps 10 ms forward between r1 and r2.
    let records = vec![
        accepted("r1", 1, T, T + 100, T + 200, 0),
        accepted("r2", 2, T + 1_000, T + 11_100, T + 1_200, -10_000),
    ];
    let records: Vec<SentRecord> = records
        .into_iter()
        .map(|mut r| {
            if r.id == "r2" {
                r.sent_at = Some(Stamp::from_micros(T + 1_000));
                r.replied_at = Some(Stamp::from_micros(T + 1_200));
            }
            r
        })
        .collect();
    let clock = from_replies(&records, "b");
    assert_eq!(clock.offset_us, None);
    let note = clock.note.expect("a note");
    assert!(note.contains("r1") && note.contains("r2"), "{note}");
    assert_eq!(clock.samples, 2);
}

#[test]
fn without_times_in_replies_the_offset_is_unknown() {
    let mut record = accepted("r1", 1, T, T + 1, T + 2, 0);
    record.reply = Some("250 OK".into());
    let clock = from_replies(&[record], "b");
    assert_eq!(clock.method, ClockMethod::None);
    assert_eq!(clock.offset_us, None);
    assert!(clock.note.is_some());
}

#[test]
fn accepted_at_is_read_from_smtp_and_web_replies() {
    let smtp = "250 2.0.0 queued as ticket 7 at 2026-12-01T09:00:00.123456Z";
    assert_eq!(accepted_at(smtp).unwrap().micros() % 1_000_000, 123_456);
    let web =
        r#"202 {"ticket":7,"accepted_at":"2026-12-01T09:00:00.000001Z","message_id":"<a@b>"}"#;
    assert_eq!(accepted_at(web).unwrap().micros() % 1_000_000, 1);
    assert_eq!(accepted_at("250 OK at noon"), None);
}

#[test]
fn exchanges_intersect_to_offset_plus_minus_half_the_round_trip() {
    let offset = 50_000;
    let one = |t: i64, rtt: i64| Exchange {
        t1: t + offset,
        t2: t + rtt / 2,
        t3: t + rtt / 2,
        t4: t + rtt + offset,
    };
    let e = one(T, 800);
    assert_eq!(e.interval(), [offset - 400, offset + 400]);
    assert_eq!(e.round_trip_us(), 800);
    let clock = exchange::estimate("http://127.0.0.1:9/", &[e, one(T + 10_000, 200)]);
    assert_eq!(clock.offset_us, Some([offset - 100, offset + 100]));
    assert_eq!(clock.reference, "http://127.0.0.1:9/time");
    assert_eq!(clock.method, ClockMethod::TimeExchange);
}

#[tokio::test]
async fn the_time_endpoint_answers_an_exchange_over_tcp() {
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, task) = exchange::serve("127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let exchanges = exchange::measure(&url, 3).await.unwrap();
    let clock = exchange::estimate(&url, &exchanges);
    let [lo, hi] = clock.offset_us.expect("one clock: known");
    // Same machine, same clock: the true offset 0 lies inside.
    assert!(lo <= 0 && 0 <= hi, "{lo} {hi}");
    stop.cancel();
    task.await.unwrap();
}
