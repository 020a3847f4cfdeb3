//! The relay down, then up, then down and up again: acks wait in the journal and every one
//! arrives exactly once; the intake keeps accepting meanwhile.

mod ack_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use ack_support::{Gate, Sink, ack_config, ack_stats, wait_for_acks, wait_until};
use support::{Barrage, Client, request_mail};

async fn submit(barrage: &Barrage, range: std::ops::Range<usize>) -> Vec<u64> {
    let mut client = Client::greet(barrage.smtp).await;
    let mut tickets = Vec::new();
    for i in range {
        let reply = client
            .submit(
                "client@example.net",
                &request_mail(&format!("<outage-{i}@client.test>"), &format!("nom{i}.fr")),
            )
            .await;
        assert_eq!(
            reply.code, 250,
            "the intake accepts while the relay is down: {reply:?}"
        );
        tickets.push(reply.ticket().unwrap());
    }
    tickets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_wait_for_the_relay_and_arrive_once() {
    let gate = Gate::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ack_config(dir.path(), gate.addr, "concurrency = 3");
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );

    // Relay down: everything is accepted, the acks wait.
    let mut tickets = submit(&barrage, 0..30).await;
    let stats = wait_for_acks(
        barrage.http,
        "the relay seen down",
        Duration::from_secs(60),
        |s| s["relay_up"] == false,
    )
    .await;
    assert_eq!(stats["pending"], 30, "{stats}");
    assert_eq!(stats["sent"], 0, "{stats}");
    assert_eq!(stats["failed"], 0, "an outage never fails an ack: {stats}");
    assert_eq!(stats["relay_up"], false, "{stats}");
    assert!(
        stats["oldest_pending_age_secs"].as_f64().unwrap() > 0.0,
        "{stats}"
    );

    // Relay up: every ack goes out.
    let received = Arc::default();
    let sink = Sink::start_with(Duration::ZERO, Arc::clone(&received)).await;
    gate.open(&sink);
    wait_until("the first 30 acks", Duration::from_secs(30), || {
        sink.by_ticket().len() == 30
    })
    .await;

    // Down again, more requests, then up again.
    gate.close();
    sink.stop().await;
    tickets.extend(submit(&barrage, 30..45).await);
    let sink = Sink::start_with(Duration::ZERO, received).await;
    gate.open(&sink);
    wait_until("all 45 acks", Duration::from_secs(30), || {
        sink.by_ticket().len() == 45
    })
    .await;
    wait_for_acks(
        barrage.http,
        "every ack marked",
        Duration::from_secs(60),
        |s| s["pending"] == 0,
    )
    .await;

    let by_ticket = sink.by_ticket();
    assert_eq!(by_ticket.keys().copied().collect::<Vec<_>>(), tickets);
    for (ticket, acks) in &by_ticket {
        assert_eq!(acks.len(), 1, "ticket {ticket}: {} acks", acks.len());
    }
    let stats = ack_stats(barrage.http).await;
    assert_eq!(stats["sent"], 45, "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["relay_up"], true, "{stats}");
    sink.stop().await;
}
