//! SIGKILL at random moments under load: every request that was answered 250 is in the journal
//! after a restart, with the seq its ticket named, and seqs stay gap-free across restarts.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::RngExt;
use support::{Barrage, Client, request_mail};

const ROUNDS: usize = 4;
const CLIENTS: usize = 16;

/// Submits requests in a loop until `stop`, returning (Message-ID, ticket) of each 250. Any
/// error (the server died) ends the client: what it had no reply for is indeterminate.
async fn load(
    addr: std::net::SocketAddr,
    client: usize,
    round: usize,
    stop: Arc<AtomicBool>,
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
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(load(barrage.smtp, c, round, stop.clone())))
            .collect();
        let kill_after = Duration::from_millis(rng.random_range(100..600));
        tokio::time::sleep(kill_after).await;
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
            round_accepted > 0,
            "round {round}: the load never got a 250 before the kill"
        );
        eprintln!("round {round}: killed after {kill_after:?}, {round_accepted} accepted");
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
