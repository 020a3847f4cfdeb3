//! Exactly one ack per accepted request, none for refused requests, retransmissions or requests
//! with nowhere to send one; the headers a checker relies on; the rendered mail pinned.
//! Real barrage binary, real SMTP receiver on loopback.

mod ack_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ack_support::{Sink, ack_config, ack_stats, wait_until};
use support::{Barrage, Client, request_mail};

/// A request mail with the given sender headers.
fn mail(headers: &str, message_id: &str, domain: &str) -> String {
    format!(
        "{headers}To: <requests@registry.example>\r\nMessage-ID: {message_id}\r\n\
         Subject: request\r\n\r\ndomain: {domain}\r\nholder: Jeanne Durand\r\n"
    )
}

struct Expected {
    ack_to: String,
    message_id: String,
    accepted_at: String,
    domain: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ack_per_accepted_request_with_the_checker_headers() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ack_config(dir.path(), sink.addr, "");
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut client = Client::greet(barrage.smtp).await;
    let mut expected: BTreeMap<u64, Expected> = BTreeMap::new();
    let mut accept = |reply: support::Reply, ack_to: &str, message_id: &str, domain: &str| {
        assert_eq!(reply.code, 250, "{reply:?}");
        let ticket = reply.ticket().unwrap();
        let accepted_at = reply.text.rsplit(' ').next().unwrap().to_string();
        let previous = expected.insert(
            ticket,
            Expected {
                ack_to: ack_to.into(),
                message_id: message_id.into(),
                accepted_at,
                domain: domain.into(),
            },
        );
        assert!(previous.is_none());
        ticket
    };

    // From only: the ack goes to From.
    for i in 0..5 {
        let id = format!("<req-{i}@client.test>");
        let reply = client
            .submit(
                "bounce@example.net",
                &request_mail(&id, &format!("nom{i}.fr")),
            )
            .await;
        accept(reply, "client@example.net", &id, &format!("nom{i}.fr"));
    }
    // Reply-To wins over From.
    let id = "<reply-to@client.test>";
    let reply = client
        .submit(
            "bounce@example.net",
            &mail(
                "From: <client@example.net>\r\nReply-To: Someone <answers@example.org>\r\n",
                id,
                "reponse.fr",
            ),
        )
        .await;
    accept(reply, "answers@example.org", id, "reponse.fr");
    // Neither: the envelope sender.
    let id = "<no-from@client.test>";
    let reply = client
        .submit("envelope@example.com", &mail("", id, "enveloppe.fr"))
        .await;
    accept(reply, "envelope@example.com", id, "enveloppe.fr");

    // Refused: no ack.
    for body in [
        "From: <client@example.net>\r\nMessage-ID: <bad-1@client.test>\r\n\r\nholder: x\r\n",
        "From: <client@example.net>\r\nMessage-ID: <bad-2@client.test>\r\n\r\ndomain: -x.fr\r\n",
    ] {
        let reply = client.submit("bounce@example.net", body).await;
        assert_eq!(reply.code, 550, "{reply:?}");
    }
    // A retransmission (RFC 1047): the original ticket, no second ack.
    let reply = client
        .submit(
            "bounce@example.net",
            &request_mail("<req-0@client.test>", "nom0.fr"),
        )
        .await;
    assert_eq!(reply.code, 250);
    assert!(expected.contains_key(&reply.ticket().unwrap()));
    // Null sender and no From header: stored, nowhere to ack.
    let reply = client
        .submit("", &mail("", "<nobody@client.test>", "personne.fr"))
        .await;
    assert_eq!(reply.code, 250);
    let silent_ticket = reply.ticket().unwrap();

    let n = expected.len();
    wait_until("every ack", Duration::from_secs(30), || {
        sink.received().len() >= n
    })
    .await;
    // Give a wrong extra ack time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_ticket = sink.by_ticket();
    assert_eq!(
        by_ticket.keys().copied().collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>(),
        "acks for exactly the accepted requests with an address (not {silent_ticket})"
    );
    let mut instances = Vec::new();
    for (ticket, acks) in &by_ticket {
        assert_eq!(acks.len(), 1, "ticket {ticket} got {} acks", acks.len());
        let ack = &acks[0];
        let want = &expected[ticket];
        assert_eq!(ack.rcpt_to, vec![want.ack_to.clone()]);
        assert_eq!(ack.mail_from, "registry@registry.test");
        assert_eq!(ack.header("To").unwrap(), want.ack_to);
        assert_eq!(ack.header("In-Reply-To").unwrap(), want.message_id);
        assert_eq!(ack.header("References").unwrap(), want.message_id);
        assert_eq!(
            ack.header("X-Barrage-Accepted-At").unwrap(),
            want.accepted_at
        );
        assert_eq!(ack.header("Auto-Submitted").unwrap(), "auto-replied");
        let message_id = ack.message_id();
        let instance = message_id
            .strip_prefix(&format!("<ack.{ticket}."))
            .and_then(|rest| rest.strip_suffix("@registry.test>"))
            .unwrap_or_else(|| panic!("ack Message-ID {message_id}"));
        instances.push(instance.to_string());
        let body = ack.body();
        for needle in [
            format!(": {ticket}\n"),
            want.domain.clone(),
            want.accepted_at.clone(),
            want.message_id.clone(),
            format!("Position in the queue on arrival : {ticket}\n"),
        ] {
            assert!(
                body.contains(&needle),
                "ack {ticket} body lacks {needle:?}:\n{body}"
            );
        }
    }
    instances.dedup();
    assert_eq!(instances.len(), 1, "one instance id: {instances:?}");

    // The mail itself, times and the random instance id redacted.
    let reply_to_ticket = *expected
        .iter()
        .find(|(_, e)| e.ack_to == "answers@example.org")
        .unwrap()
        .0;
    let ack = &by_ticket[&reply_to_ticket][0];
    let raw = String::from_utf8(ack.raw.clone()).unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    let accepted_at = &expected[&reply_to_ticket].accepted_at;
    let redact = |text: &str| {
        text.replace(&instances[0], "[instance]")
            .replace(accepted_at.as_str(), "[accepted-at]")
    };
    let headers: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.starts_with("Date:"))
        .map(redact)
        .collect();
    let rendered = format!("{}\n\n{}", headers.join("\n"), redact(&ack.body()));
    insta::assert_snapshot!("ack_mail", rendered);

    let stats = ack_stats(barrage.http).await;
    assert_eq!(stats["enabled"], true);
    assert_eq!(stats["sent"], n as u64, "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["oldest_pending_age_secs"], 0.0, "{stats}");
    let metrics = reqwest::get(format!("http://{}/metrics", barrage.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("barrage_acks_sent_total {n}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("barrage_acks_pending 0\n"), "{metrics}");
    assert!(
        metrics.contains("barrage_acks_failed_total 0\n"),
        "{metrics}"
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ack_section_nothing_is_queued_and_stats_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(&dir.path().join("data"), &[]);
    let mut client = Client::greet(barrage.smtp).await;
    let reply = client
        .submit(
            "a@example.net",
            &request_mail("<x@client.test>", "sans-ack.fr"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let stats = ack_stats(barrage.http).await;
    assert_eq!(stats["enabled"], false, "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    let metrics = reqwest::get(format!("http://{}/metrics", barrage.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("barrage_acks_enabled 0\n"), "{metrics}");
}
