//! SIGKILL at random moments under load: every request that was answered 250 is in the journal
//! after a restart, with the seq its ticket named, and seqs stay gap-free across restarts.
//!
//! The moment is drawn as a number of 250 replies observed, not as a time: on a busy machine a
//! time can pass before the first reply, and a kill then proves nothing.

mod support;

use rand::RngExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::{Barrage, Client, request_mail};
use tokio::sync::mpsc;

const ROUNDS: usize = 4;
const CLIENTS: usize = 16;

/// The most 250s a round waits for before its kill (drawn from 1 up to this).
const MOST_ACCEPTED_BEFORE_KILL: usize = 400;

/// Submits requests in a loop until `stop`, returning (Message-ID, ticket) of each 250 and
/// telling `accepted` of each. Any error (the server died) ends the client: what it had no reply
/// for is indeterminate.
async fn load(
    addr: std::net::SocketAddr,
    client: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    accepted_tx: mpsc::UnboundedSender<()>,
) -> Vec<(String, u64)> {
    let mut accepted = Vec::new();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return accepted;
    };
    drop(stream);
    let mut c = Client::greet(addr).await;
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let message_id = format!("<r{round}.c{client}.n{n}@crash.test>");
        let mail = format!("{}.\r\n", request_mail(&message_id, "crash.fr"));
        let script =
            format!("MAIL FROM:<c{client}@example.net>\r\nRCPT TO:<r@x>\r\nDATA\r\n{mail}");
        c.send(script.as_bytes()).await;
        let mut final_reply = None;
        for _ in 0..4 {
            match c.try_reply().await {
                Some(reply) => final_reply = Some(reply),
                None => return accepted,
            }
        }
        let reply = final_reply.unwrap();
        if reply.code == 250 {
            accepted.push((message_id, reply.ticket().unwrap()));
            let _ = accepted_tx.send(());
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_accepted_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut promised: HashMap<String, u64> = HashMap::new();
    let mut rng = rand::rng();
    for round in 0..ROUNDS {
        let mut barrage = Barrage::start(dir.path(), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted_tx, mut accepted_rx) = mpsc::unbounded_channel();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let load = load(barrage.smtp, c, round, stop.clone(), accepted_tx.clone());
                tokio::spawn(load)
            })
            .collect();
        drop(accepted_tx);
        let kill_after = rng.random_range(1..=MOST_ACCEPTED_BEFORE_KILL);
        for seen in 0..kill_after {
            assert!(
                accepted_rx.recv().await.is_some(),
                "round {round}: every client stopped after {seen} 250s, before the kill"
            );
        }
        barrage.kill();
        stop.store(true, Ordering::Relaxed);
        let mut round_accepted = 0;
        for client in clients {
            for (id, ticket) in client.await.unwrap() {
                assert!(promised.insert(id, ticket).is_none());
                round_accepted += 1;
            }
        }
        assert!(
            round_accepted >= kill_after,
            "round {round}: {round_accepted} 250s recorded, the kill came after {kill_after}"
        );
        eprintln!("round {round}: killed after {kill_after} 250s, {round_accepted} accepted");
    }

    let barrage = Barrage::start(dir.path(), &[]);
    let stored = barrage.all_requests().await;
    let mut stored_seq = HashMap::new();
    for (i, row) in stored.iter().enumerate() {
        assert_eq!(
            row["seq"].as_u64(),
            Some(i as u64 + 1),
            "seqs gap-free across restarts"
        );
        stored_seq.insert(
            row["message_id"].as_str().unwrap().to_string(),
            i as u64 + 1,
        );
    }
    for (id, ticket) in &promised {
        assert_eq!(
            stored_seq.get(id),
            Some(ticket),
            "{id} was answered 250 but is lost or moved"
        );
    }
}
