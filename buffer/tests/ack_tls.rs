//! With `tls = "starttls"`, an ack is never sent in clear: a relay that does not offer STARTTLS is
//! treated as unusable (acks wait), not as a place to send plain text.

mod ack_support;
mod support;

use std::time::Duration;

use ack_support::{Sink, ack_config, wait_for_acks};
use support::{Barrage, Client, request_mail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_starttls_never_falls_back_to_plain_text() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ack_config(dir.path(), sink.addr, "tls = \"starttls\"");
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut client = Client::greet(barrage.smtp).await;
    let reply = client
        .submit(
            "client@example.net",
            &request_mail("<tls@client.test>", "chiffre.fr"),
        )
        .await;
    assert_eq!(reply.code, 250);
    // The sender has tried the relay and found it unusable: the event the check waits for.
    let stats = wait_for_acks(
        barrage.http,
        "the relay refused",
        Duration::from_secs(60),
        |s| s["relay_up"] == false,
    )
    .await;
    assert!(sink.received().is_empty(), "an ack went out without TLS");
    assert_eq!(stats["pending"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["relay_up"], false, "{stats}");
    sink.stop().await;
}
