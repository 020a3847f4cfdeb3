//! Many clients at once against a real barrage: every 250 ticket is stored exactly once, seqs are
//! gap-free, accepted-at never decreases, and real-time precedence holds (a reply seen before
//! another request's end of data was sent means a smaller seq).

mod support;

use std::collections::HashMap;
use std::time::Instant;

use support::{Barrage, Client, request_mail};

const CLIENTS: usize = 40;
const PER_CLIENT: usize = 40;

struct Observed {
    message_id: String,
    /// Microseconds since the test's start just before the end mark was written.
    sent_end: u128,
    replied: u128,
    ticket: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_gap_free_fifo_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let addr = barrage.smtp;
        tasks.push(tokio::spawn(one_client(addr, client, start)));
    }
    let mut observed = Vec::new();
    for task in tasks {
        observed.extend(task.await.unwrap());
    }

    check_stored(&barrage.all_requests().await, &observed);
    assert_eq!(real_time_precedence_violations(&observed), 0);

    let stats = barrage.get("/v1/stats").await;
    assert!(stats["commits"].as_u64().unwrap() >= 1);
    assert_eq!(
        stats["committed_requests"].as_u64(),
        Some((CLIENTS * PER_CLIENT) as u64)
    );
}

/// One client's requests in turn, each stamped at its end of data and at its reply.
async fn one_client(addr: std::net::SocketAddr, client: usize, start: Instant) -> Vec<Observed> {
    let mut c = Client::greet(addr).await;
    let mut seen = Vec::new();
    for n in 0..PER_CLIENT {
        let message_id = format!("<c{client}.n{n}@fifo.test>");
        let mail = request_mail(&message_id, &format!("d{}.fr", n % 7));
        assert_eq!(c.command("MAIL FROM:<client@example.net>").await.code, 250);
        assert_eq!(c.command("RCPT TO:<r@registry.example>").await.code, 250);
        assert_eq!(c.command("DATA").await.code, 354);
        c.send(mail.as_bytes()).await;
        // Stamped before the write that carries the end of data, as the driver does:
        // stamped after, a reply to another request could arrive in between and look
        // like it came before this request was complete.
        let sent_end = start.elapsed().as_micros();
        c.send(b".\r\n").await;
        let reply = c.reply().await;
        let replied = start.elapsed().as_micros();
        assert_eq!(reply.code, 250, "{reply:?}");
        seen.push(Observed {
            message_id,
            sent_end,
            replied,
            ticket: reply.ticket().unwrap(),
        });
    }
    seen
}

/// Every 250 ticket stored exactly once under its seq, seqs gap-free, accepted-at non-decreasing.
fn check_stored(stored: &[serde_json::Value], observed: &[Observed]) {
    assert_eq!(stored.len(), CLIENTS * PER_CLIENT);
    let mut by_message_id = HashMap::new();
    let mut last_accepted_at = String::new();
    for (i, row) in stored.iter().enumerate() {
        assert_eq!(
            row["seq"].as_u64(),
            Some(i as u64 + 1),
            "seqs gap-free from 1"
        );
        let at = row["accepted_at"].as_str().unwrap().to_string();
        assert!(
            at >= last_accepted_at,
            "accepted_at decreased at seq {}",
            i + 1
        );
        last_accepted_at = at;
        let previous = by_message_id.insert(
            row["message_id"].as_str().unwrap().to_string(),
            i as u64 + 1,
        );
        assert!(previous.is_none(), "a request stored twice");
    }
    for o in observed {
        assert_eq!(
            by_message_id.get(&o.message_id),
            Some(&o.ticket),
            "ticket of {}",
            o.message_id
        );
    }
}

/// Counts pairs (A, B) with A's reply before B's end of data but seq(A) > seq(B), in
/// O(n log n): walk requests by end-of-data time, keeping the largest seq among those whose
/// reply had already arrived.
fn real_time_precedence_violations(observed: &[Observed]) -> usize {
    let mut by_sent: Vec<&Observed> = observed.iter().collect();
    by_sent.sort_by_key(|o| o.sent_end);
    let mut by_reply: Vec<&Observed> = observed.iter().collect();
    by_reply.sort_by_key(|o| o.replied);
    let (mut replied, mut max_seq_replied, mut violations) = (0, 0, 0);
    for b in by_sent {
        while replied < by_reply.len() && by_reply[replied].replied < b.sent_end {
            max_seq_replied = max_seq_replied.max(by_reply[replied].ticket);
            replied += 1;
        }
        if max_seq_replied > b.ticket {
            violations += 1;
        }
    }
    violations
}

#[test]
fn precedence_checker_catches_a_swap() {
    let o = |sent_end, replied, ticket| Observed {
        message_id: String::new(),
        sent_end,
        replied,
        ticket,
    };
    // B was sent after A's reply, yet got the smaller seq.
    assert_eq!(
        real_time_precedence_violations(&[o(0, 10, 2), o(20, 30, 1)]),
        1
    );
    // Overlapping requests may be ordered either way.
    assert_eq!(
        real_time_precedence_violations(&[o(0, 30, 2), o(10, 20, 1)]),
        0
    );
}
