//! SIGKILL of the real binary with acks pending and in flight, then a restart on the same data
//! dir: every accepted request ends with an ack, and an ack sent again carries the same
//! Message-ID as its first send (so a checker can tell a resend from a second ack).

mod ack_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ack_support::{Gate, Received, Sink, ack_config, ack_stats, wait_for_acks, wait_until};
use support::{Barrage, Client, request_mail};

/// Forty requests, each answered 250; their tickets.
async fn submit_40(client: &mut Client) -> BTreeSet<u64> {
    let mut tickets = BTreeSet::new();
    for i in 0..40 {
        let id = format!("<crash-{i}@client.test>");
        let reply = client
            .submit(
                "client@example.net",
                &request_mail(&id, &format!("nom{i}.fr")),
            )
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        tickets.insert(reply.ticket().unwrap());
    }
    tickets
}

/// The acks sent more than once, after checking that every resend carries its ticket's one
/// Message-ID and that no two tickets share one.
fn count_resends(by_ticket: &BTreeMap<u64, Vec<Received>>) -> usize {
    let mut resends = 0;
    let mut ids = BTreeSet::new();
    for (ticket, acks) in by_ticket {
        let first = acks[0].message_id();
        for ack in acks {
            assert_eq!(
                ack.message_id(),
                first,
                "ticket {ticket}: a resend with a new Message-ID"
            );
        }
        resends += acks.len() - 1;
        assert!(ids.insert(first), "two tickets share an ack Message-ID");
    }
    resends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_request_gets_its_ack_across_a_sigkill() {
    // A slow relay: it records each ack, then takes 250 ms to answer, so a kill catches acks the
    // relay has but barrage has not marked sent.
    let gate = Gate::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = ack_config(dir.path(), gate.addr, "concurrency = 4");
    let args = ["--config", config.to_str().unwrap()];
    let mut barrage = Barrage::start(&data, &args);

    let mut client = Client::greet(barrage.smtp).await;
    let tickets = submit_40(&mut client).await;
    // The relay comes up once every request is in, so the kill surely finds acks pending.
    let sink = Sink::start_with(Duration::from_millis(250), Arc::default()).await;
    gate.open(&sink);
    wait_until("some acks in flight", Duration::from_secs(30), || {
        sink.received().len() >= 6
    })
    .await;
    barrage.kill();
    let before_kill = sink.received().len();
    assert!(before_kill < 40, "the kill came before every ack was sent");

    let barrage = Barrage::start(&data, &args);
    wait_until("an ack for every ticket", Duration::from_secs(60), || {
        sink.by_ticket().keys().copied().collect::<BTreeSet<_>>() == tickets
    })
    .await;
    // Every ack marked sent: after that none is sent again, so the counts below are final.
    wait_for_acks(
        barrage.http,
        "an empty outbox",
        Duration::from_secs(60),
        |s| s["pending"] == 0 && s["sent"] == 40,
    )
    .await;

    let resends = count_resends(&sink.by_ticket());
    assert!(
        resends >= 1,
        "the kill caught acks the relay had taken but barrage had not marked: they are resent"
    );
    let stats = ack_stats(barrage.http).await;
    assert_eq!(stats["sent"], 40, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    eprintln!("{before_kill} acks received before the kill, {resends} resent after the restart");
    sink.stop().await;
}
