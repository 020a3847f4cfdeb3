//! Exactly one ack per accepted request, none for refused requests, retransmissions or requests
//! with nowhere to send one; the headers a checker relies on; the rendered mail pinned.
//! Real barrage binary, real SMTP receiver on loopback.

mod ack_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ack_support::{Received, ack_stats, start_acked, wait_for_acks, wait_until};
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
    // The header rule, so Reply-To, From and the envelope sender all have their case below (the
    // default, the envelope sender alone, is in smtp_details.rs).
    let acked = start_acked("recipient = \"header\"").await;
    let (barrage, sink) = (&acked.barrage, &acked.sink);
    let mut client = Client::greet(barrage.smtp).await;
    let (expected, silent_ticket) = submit_every_case(&mut client).await;

    let n = expected.len();
    wait_until("every ack", Duration::from_secs(30), || {
        sink.received().len() >= n
    })
    .await;
    // Every queued ack sent and marked: a wrong extra ack would have been queued too, so it has
    // been sent by now (and counted).
    let stats = wait_for_acks(
        barrage.http,
        "an empty outbox",
        Duration::from_secs(60),
        |s| s["pending"] == 0 && s["sent"].as_u64() >= Some(n as u64),
    )
    .await;
    let by_ticket = sink.by_ticket();
    assert_eq!(
        by_ticket.keys().copied().collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>(),
        "acks for exactly the accepted requests with an address (not {silent_ticket})"
    );
    let instance = check_each_ack(&by_ticket, &expected);
    snapshot_the_reply_to_ack(&by_ticket, &expected, &instance);
    check_stats_and_metrics(&stats, barrage.http, n).await;
    acked.sink.stop().await;
}

/// Submits the accepted cases (From, Reply-To, envelope sender) and the ones that get no ack
/// (refused, a retransmission, nowhere to send); returns what each accepted ack must say, and
/// the ticket of the request with no address.
async fn submit_every_case(client: &mut Client) -> (BTreeMap<u64, Expected>, u64) {
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
    };
    // From only: the ack goes to From.
    for i in 0..5 {
        let id = format!("<req-{i}@client.test>");
        let domain = format!("nom{i}.fr");
        let reply = client
            .submit("bounce@example.net", &request_mail(&id, &domain))
            .await;
        accept(reply, "client@example.net", &id, &domain);
    }
    // Reply-To wins over From.
    let id = "<reply-to@client.test>";
    let headers = "From: <client@example.net>\r\nReply-To: Someone <answers@example.org>\r\n";
    let reply = client
        .submit("bounce@example.net", &mail(headers, id, "reponse.fr"))
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
    (expected, reply.ticket().unwrap())
}

/// One ack per ticket, with the envelope, headers and body a checker relies on; returns the
/// instance id all ack Message-IDs share.
fn check_each_ack(
    by_ticket: &BTreeMap<u64, Vec<Received>>,
    expected: &BTreeMap<u64, Expected>,
) -> String {
    let mut instances = Vec::new();
    for (ticket, acks) in by_ticket {
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
    instances.remove(0)
}

/// The mail itself pinned, times and the random instance id redacted.
fn snapshot_the_reply_to_ack(
    by_ticket: &BTreeMap<u64, Vec<Received>>,
    expected: &BTreeMap<u64, Expected>,
    instance: &str,
) {
    let reply_to_ticket = *expected
        .iter()
        .find(|(_, e)| e.ack_to == "answers@example.org")
        .unwrap()
        .0;
    let ack = &by_ticket[&reply_to_ticket][0];
    let raw = String::from_utf8(ack.raw.clone()).unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    let accepted_at = &expected[&reply_to_ticket].accepted_at;
    // The receipt's chain and signature differ with every instance id and key.
    let receipt = ack.header("X-Barrage-Receipt").expect("X-Barrage-Receipt");
    let value_of = |key: &str| {
        let start = receipt.find(&format!("{key}=")).unwrap() + key.len() + 1;
        receipt[start..]
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let (chain, signature) = (value_of("chain"), value_of("signature"));
    let redact = |text: &str| {
        text.replace(instance, "[instance]")
            .replace(accepted_at.as_str(), "[accepted-at]")
            .replace(&chain, "[chain]")
            .replace(&signature, "[signature]")
    };
    let headers: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.starts_with("Date:"))
        .map(redact)
        .collect();
    let rendered = format!("{}\n\n{}", headers.join("\n"), redact(&ack.body()));
    insta::assert_snapshot!("ack_mail", rendered);
}

/// `/v1/stats` (already read) and `/metrics` count `n` acks sent, none pending or failed.
async fn check_stats_and_metrics(stats: &serde_json::Value, http: std::net::SocketAddr, n: usize) {
    assert_eq!(stats["enabled"], true);
    assert_eq!(stats["sent"], n as u64, "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["oldest_pending_age_secs"], 0.0, "{stats}");
    let metrics = reqwest::get(format!("http://{http}/metrics"))
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
