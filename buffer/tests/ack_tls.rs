//! With `tls = "starttls"`, an ack is never sent in clear: a relay that does not offer STARTTLS is
//! treated as unusable (acks wait), not as a place to send plain text.

mod ack_support;
mod support;

use std::time::Duration;

use ack_support::{Sink, ack_config, ack_stats};
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
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(sink.received().is_empty(), "an ack went out without TLS");
    let stats = ack_stats(barrage.http).await;
    assert_eq!(stats["pending"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["relay_up"], false, "{stats}");
    sink.stop().await;
}
