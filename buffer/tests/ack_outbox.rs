//! The outbox in the SQLite journal: an ack is queued by the very transaction that stores its
//! request (only with acks on and an address), never for a retransmission, survives a reopen, and
//! its marks are idempotent.

use std::collections::BTreeMap;

use barrage::ack::outbox::{AckMark, AckOutbox};
use barrage::journal::sqlite::{SqliteJournal, SqliteOptions};
use barrage::journal::{Journal, NewRequest, Ticket};

fn request(id: &str, ack_to: Option<&str>) -> NewRequest {
    NewRequest {
        intake: "smtp",
        message_id: format!("<{id}@client.test>"),
        dedup_key: Some(format!("smtp\nclient@example.net\n<{id}@client.test>")),
        sender: "client@example.net".into(),
        ack_to: ack_to.map(str::to_string),
        domain: format!("{id}.fr"),
        fields: BTreeMap::from([("domain".to_string(), format!("{id}.fr"))]),
        raw: b"raw".to_vec(),
    }
}

fn options(acks: bool) -> SqliteOptions {
    SqliteOptions {
        acks,
        ..SqliteOptions::default()
    }
}

#[tokio::test]
async fn acks_are_queued_with_their_request_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    {
        let journal = SqliteJournal::open(dir.path(), options(true)).unwrap();
        let a = journal
            .append(request("a", Some("a@example.net")))
            .await
            .unwrap();
        let b = journal.append(request("b", None)).await.unwrap();
        let again = journal
            .append(request("a", Some("a@example.net")))
            .await
            .unwrap();
        assert!(again.retransmission && again.seq == a.seq);
        let c = journal
            .append(request("c", Some("c@example.net")))
            .await
            .unwrap();

        let pending = journal.pending_acks(0, i64::MAX, 100).await.unwrap();
        let seqs: Vec<u64> = pending.iter().map(|p| p.seq).collect();
        assert_eq!(
            seqs,
            vec![a.seq, c.seq],
            "none for {} (no address) or the retransmission",
            b.seq
        );
        assert_eq!(pending[0].ack_to, "a@example.net");
        assert_eq!(pending[0].accepted_at, a.accepted_at);
        assert_eq!(pending[1].position, c.position);
        let counts = journal.ack_counts();
        assert_eq!((counts.pending, counts.sent, counts.failed), (2, 0, 0));
        assert_eq!(counts.oldest_pending_at, Some(a.accepted_at));

        mark_one_sent_one_for_retry(&journal, &a, &c).await;
    }
    // Reopened (as after a crash or a restart): the outbox is as it was.
    the_outbox_survives_a_reopen(dir.path()).await;
}

/// `a` sent (twice: the second mark changes nothing), `c` refused for now, due much later.
async fn mark_one_sent_one_for_retry(journal: &SqliteJournal, a: &Ticket, c: &Ticket) {
    journal
        .mark_acks(vec![AckMark::Sent { seq: a.seq, at: 1 }])
        .await
        .unwrap();
    // A second mark of the same ack (a resend after a crash) changes nothing.
    journal
        .mark_acks(vec![AckMark::Sent { seq: a.seq, at: 2 }])
        .await
        .unwrap();
    journal
        .mark_acks(vec![AckMark::Retry {
            seq: c.seq,
            not_before: i64::MAX - 1,
            error: "452".into(),
        }])
        .await
        .unwrap();
    assert!(
        journal
            .pending_acks(0, 1_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "c is not due"
    );
    let counts = journal.ack_counts();
    assert_eq!((counts.pending, counts.sent, counts.failed), (1, 1, 0));
    assert_eq!(counts.oldest_pending_at, Some(c.accepted_at));
}

/// After the marks above: one sent, `c` pending with one attempt; then `c` fails for good.
async fn the_outbox_survives_a_reopen(dir: &std::path::Path) {
    let journal = SqliteJournal::open(dir, options(true)).unwrap();
    let counts = journal.ack_counts();
    assert_eq!((counts.pending, counts.sent, counts.failed), (1, 1, 0));
    let pending = journal.pending_acks(0, i64::MAX, 100).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    journal
        .mark_acks(vec![AckMark::Failed {
            seq: pending[0].seq,
            at: 3,
            error: "550".into(),
        }])
        .await
        .unwrap();
    let counts = journal.ack_counts();
    assert_eq!((counts.pending, counts.sent, counts.failed), (0, 1, 1));
    assert_eq!(counts.oldest_pending_at, None);
}

#[tokio::test]
async fn without_acks_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let journal = SqliteJournal::open(dir.path(), options(false)).unwrap();
    journal
        .append(request("a", Some("a@example.net")))
        .await
        .unwrap();
    assert!(
        journal
            .pending_acks(0, i64::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(journal.ack_counts().pending, 0);
}
