//! The ack outbox shared by two nodes on PostgreSQL (contract: One ack): each ack is sent by
//! one node, and when the node that claimed acks dies before sending them, the other node sends
//! each once after the lease, with the Message-ID the first would have used.

mod ack_support;
mod postgres_support;
mod support;

use std::path::Path;
use std::time::Duration;

use ack_support::{Sink, ack_config, wait_for_acks, wait_until};
use postgres_support::{database, node};
use support::{Barrage, Client, request_mail};

/// A bound only so a broken build fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

fn acking_node(dir: &Path, url: &str, relay: std::net::SocketAddr, extra: &str) -> Barrage {
    std::fs::create_dir_all(dir).unwrap();
    let config = ack_config(dir, relay, extra);
    node(dir, url, &["--config", config.to_str().unwrap()])
}

async fn submit(node: &Barrage, tag: &str, n: usize) -> Vec<u64> {
    let mut client = Client::greet(node.smtp).await;
    let mut tickets = Vec::new();
    for k in 0..n {
        let mail = request_mail(&format!("<{tag}.{k}@acks.test>"), "acks.fr");
        let reply = client.submit("client@example.net", &mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        tickets.push(reply.ticket().unwrap());
    }
    tickets
}

/// Every ticket got exactly one ack, and nothing else was sent.
fn one_ack_each(sink: &Sink, tickets: &[u64]) {
    let by_ticket = sink.by_ticket();
    for ticket in tickets {
        let acks = by_ticket.get(ticket).map_or(0, Vec::len);
        assert_eq!(acks, 1, "ticket {ticket} got {acks} acks");
    }
    assert_eq!(
        by_ticket.len(),
        tickets.len(),
        "acks only for accepted requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_one_ack_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, url) = database(&dir.path().join("pg"));
    let sink = Sink::start().await;
    let a = acking_node(&dir.path().join("a"), &url, sink.addr, "");
    let b = acking_node(&dir.path().join("b"), &url, sink.addr, "");
    let (from_a, from_b) = tokio::join!(submit(&a, "a", 60), submit(&b, "b", 60));
    let tickets: Vec<u64> = from_a.into_iter().chain(from_b).collect();
    wait_for_acks(a.http, "every ack sent", LIMIT, |acks| acks["sent"] == 120).await;
    one_ack_each(&sink, &tickets);
    let message_ids: std::collections::HashSet<String> =
        sink.received().iter().map(|m| m.message_id()).collect();
    assert_eq!(message_ids.len(), 120, "one Message-ID per ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_with_leases_leaves_its_acks_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, url) = database(&dir.path().join("pg"));
    let sink = Sink::start().await;
    // Node a's relay takes connections and never answers: a claims acks and cannot send them.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            connections.push(stream);
        }
    });
    let lease = "[journal]\nack_lease_secs = 2";
    let mut a = acking_node(&dir.path().join("a"), &url, silent_addr, lease);
    let tickets = submit(&a, "a", 40).await;
    let leased = || {
        let sql = "SELECT count(*) FROM acks WHERE state = 'pending' AND lease_owner IS NOT NULL";
        cluster
            .psql("barrage", sql)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    wait_until("node a holding leases", LIMIT, || leased() > 0).await;
    a.kill();
    let b = acking_node(&dir.path().join("b"), &url, sink.addr, lease);
    wait_for_acks(b.http, "every ack sent", LIMIT, |acks| acks["sent"] == 40).await;
    one_ack_each(&sink, &tickets);
    held.abort();
}
