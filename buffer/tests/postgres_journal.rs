//! The PostgreSQL journal on a real cluster: two barrage nodes on one database hand out one
//! gap-free sequence, dedup a retransmission sent to the other node, serve the same chained
//! rows from either node, keep the cursor from moving back, and survive a restart.

mod postgres_support;
mod support;

use postgres_support::{database, node};
use support::{Client, request_mail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_sequence_dedup_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, url) = database(&dir.path().join("pg"));
    let a = node(&dir.path().join("a"), &url, &[]);
    let b = node(&dir.path().join("b"), &url, &[]);
    let mut ca = Client::greet(a.smtp).await;
    let mut cb = Client::greet(b.smtp).await;
    let mut tickets = Vec::new();
    for n in 0..6 {
        let c = if n % 2 == 0 { &mut ca } else { &mut cb };
        let mail = request_mail(&format!("<{n}@two.test>"), "two.fr");
        let reply = c.submit("c@example.net", &mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        tickets.push(reply.ticket().unwrap());
    }
    assert_eq!(
        tickets,
        [1, 2, 3, 4, 5, 6],
        "one sequence across nodes, in reply order"
    );

    // The client's connection dropped after its final dot: it sends again, to the other node.
    let again = request_mail("<2@two.test>", "two.fr");
    let reply = cb.submit("c@example.net", &again).await;
    assert_eq!(
        (reply.code, reply.ticket()),
        (250, Some(3)),
        "the original ticket"
    );
    let other = request_mail("<2@two.test>", "other-content.fr");
    let reply = cb.submit("c@example.net", &other).await;
    assert_eq!(
        reply.ticket(),
        Some(7),
        "same key, other content: a new request"
    );

    let from_a = a.all_requests().await;
    let from_b = b.all_requests().await;
    assert_eq!(from_a, from_b, "both nodes serve the same rows");
    assert_eq!(from_a.len(), 7);
    let journal_id = a.get("/v1/stats").await["journal_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(b.get("/v1/stats").await["journal_id"], journal_id.as_str());
    verify_chain(&journal_id, &from_a);

    let http = reqwest::Client::new();
    let cursor = |node: &support::Barrage, through: u64| {
        let request = http
            .post(format!("http://{}/v1/cursor", node.http))
            .json(&serde_json::json!({ "through": through }));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    assert_eq!(cursor(&a, 5).await.1["cursor"], 5);
    assert_eq!(
        cursor(&b, 3).await.1["cursor"],
        5,
        "never backwards, from any node"
    );
    assert!(
        cursor(&b, 8).await.0.is_client_error(),
        "beyond the last seq"
    );
}

/// Recomputes every chain link from the served rows (contract: Provable order).
fn verify_chain(journal_id: &str, rows: &[serde_json::Value]) {
    let mut previous = contract::chain::genesis(journal_id);
    for row in rows {
        let fields = serde_json::from_value(row["fields"].clone()).unwrap();
        let entry = contract::chain::Entry {
            seq: row["seq"].as_u64().unwrap(),
            accepted_at: row["accepted_at"].as_str().unwrap(),
            intake: row["intake"].as_str().unwrap(),
            message_id: row["message_id"].as_str().unwrap(),
            sender: row["sender"].as_str().unwrap(),
            domain: row["domain"].as_str().unwrap(),
            fields: &fields,
            raw_sha256: row["raw_sha256"].as_str().unwrap(),
        };
        previous = contract::chain::link(&previous, &contract::chain::canonical(&entry));
        assert_eq!(
            row["chain"],
            contract::chain::hex(&previous),
            "chain at {}",
            entry.seq
        );
    }
}
