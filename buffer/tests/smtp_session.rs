//! Real SMTP conversations with a real barrage process: the happy path, pipelining, and every
//! refusal the intake promises, with its code.

mod support;

use support::{Barrage, Client, request_mail};

fn start() -> (tempfile::TempDir, Barrage) {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    (dir, barrage)
}

#[tokio::test]
async fn full_conversation_stores_the_request_and_answers_with_its_ticket() {
    let (_dir, barrage) = start();
    let mut c = Client::connect(barrage.smtp).await;
    let greeting = c.reply().await;
    assert_eq!(greeting.code, 220);
    c.send(b"EHLO client.example\r\n").await;
    let ehlo = c.reply().await;
    assert_eq!(ehlo.code, 250);
    assert_eq!(c.command("NOOP").await.code, 250);
    assert_eq!(c.command("VRFY someone").await.code, 252);
    assert_eq!(c.command("HELP").await.code, 214);
    let reply = c
        .submit(
            "client@example.net",
            &request_mail("<one@example.net>", "exemple.fr"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(
        reply.text.starts_with("2.0.0 queued as ticket 1 at "),
        "{reply:?}"
    );
    assert_eq!(c.command("RSET").await.code, 250);
    assert_eq!(c.command("QUIT").await.code, 221);

    let stored = barrage.all_requests().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["seq"], 1);
    assert_eq!(stored[0]["domain"], "exemple.fr");
    assert_eq!(stored[0]["message_id"], "<one@example.net>");
    assert_eq!(stored[0]["sender"], "client@example.net");
    assert_eq!(stored[0]["fields"]["holder"], "Jeanne Durand");
    let accepted_at = stored[0]["accepted_at"].as_str().unwrap();
    assert!(
        reply.text.ends_with(accepted_at),
        "{reply:?} vs {accepted_at}"
    );
    assert_eq!(accepted_at.len(), "2026-05-11T09:00:00.123456Z".len());
    let raw = barrage.get("/v1/requests?after=0&raw=true").await;
    assert!(
        raw["requests"][0]["raw"]
            .as_str()
            .unwrap()
            .contains("domain: exemple.fr")
    );
}

#[tokio::test]
async fn ehlo_advertises_the_extensions() {
    let (_dir, barrage) = start();
    let mut c = Client::connect(barrage.smtp).await;
    c.reply().await;
    let ehlo = c.command("EHLO client.example").await;
    for ext in [
        "PIPELINING",
        "SIZE 65536",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(
            ehlo.lines.iter().any(|l| l == ext),
            "{ext} missing from {ehlo:?}"
        );
    }
}

#[tokio::test]
async fn pipelined_transactions_get_replies_in_order() {
    let (_dir, barrage) = start();
    let mut c = Client::greet(barrage.smtp).await;
    // Two transactions in one write, the second's DATA after the first's end mark.
    let mut batch = String::new();
    for (id, domain) in [("<p1@x>", "un.fr"), ("<p2@x>", "deux.fr")] {
        batch
            .push_str("MAIL FROM:<client@example.net>\r\nRCPT TO:<r@registry.example>\r\nDATA\r\n");
        batch.push_str(&request_mail(id, domain));
        batch.push_str(".\r\n");
    }
    batch.push_str("QUIT\r\n");
    c.send(batch.as_bytes()).await;
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..9 {
            v.push(c.reply().await.code);
        }
        v
    };
    assert_eq!(codes, [250, 250, 354, 250, 250, 250, 354, 250, 221]);
    let stored = barrage.all_requests().await;
    let domains: Vec<_> = stored
        .iter()
        .map(|r| r["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains, ["un.fr", "deux.fr"]);
}

/// Sends one message body (already framed, end mark included) and returns the final reply.
async fn send_data(barrage: &Barrage, framed: &[u8]) -> support::Reply {
    let mut c = Client::greet(barrage.smtp).await;
    assert_eq!(c.command("MAIL FROM:<client@example.net>").await.code, 250);
    assert_eq!(c.command("RCPT TO:<r@registry.example>").await.code, 250);
    assert_eq!(c.command("DATA").await.code, 354);
    c.send(framed).await;
    c.reply().await
}

#[tokio::test]
async fn malformed_requests_are_refused_with_the_reason() {
    let (_dir, barrage) = start();
    let no_domain = "From: <a@b.example>\r\nMessage-ID: <nd@x>\r\n\r\nholder: x\r\n.\r\n";
    let reply = send_data(&barrage, no_domain.as_bytes()).await;
    assert_eq!(reply.code, 550);
    assert!(
        reply.text.starts_with("5.6.0") && reply.text.contains("domain"),
        "{reply:?}"
    );

    let bad_domain = request_mail("<bd@x>", "not a domain!") + ".\r\n";
    let reply = send_data(&barrage, bad_domain.as_bytes()).await;
    assert_eq!(reply.code, 550);
    assert!(reply.text.contains("not a domain!"), "{reply:?}");

    // `.` as the very first line of DATA: an empty message, which has no form.
    let reply = send_data(&barrage, b".\r\n").await;
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(
        barrage.all_requests().await.is_empty(),
        "nothing refused may be stored"
    );

    // `..` as the first line is a stuffed `.`, not the end: the data goes on, unstuffed.
    let stuffed = format!(
        "..\r\n{}..tail\r\n.\r\n",
        request_mail("<dd@x>", "point.fr")
    );
    let reply = send_data(&barrage, stuffed.as_bytes()).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = barrage.get("/v1/requests?raw=true").await;
    let raw = stored["requests"][0]["raw"].as_str().unwrap();
    assert!(
        raw.starts_with(".\r\nFrom:") && raw.ends_with("\r\n.tail\r\n"),
        "{raw:?}"
    );
}

#[tokio::test]
async fn message_without_message_id_is_accepted_and_given_one() {
    let (_dir, barrage) = start();
    let mail = "From: <a@b.example>\r\n\r\ndomain: sans-id.fr\r\n.\r\n";
    let reply = send_data(&barrage, mail.as_bytes()).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = barrage.all_requests().await;
    let id = stored[0]["message_id"].as_str().unwrap();
    assert!(id.starts_with("<barrage.") && id.ends_with('>'), "{id}");
}

#[tokio::test]
async fn smuggling_and_bad_bytes_are_refused_and_smuggled_commands_never_run() {
    let (_dir, barrage) = start();
    for mark in ["\n.\r\n", "\r\n.\n", "\n.\n", "\r.\r\n"] {
        let mail = request_mail("<outer@x>", "outer.fr");
        let smuggled = format!(
            "{mail}{mark}MAIL FROM:<evil@x>\r\nRCPT TO:<r@x>\r\nDATA\r\n{}\r\n.\r\n",
            request_mail("<inner@x>", "smuggled.fr")
        );
        let reply = send_data(&barrage, smuggled.as_bytes()).await;
        assert_eq!(reply.code, 550, "{mark:?}: {reply:?}");
        assert!(reply.text.contains("bare"), "{reply:?}");
    }
    let nul = format!("{}\0\r\n.\r\n", request_mail("<nul@x>", "nul.fr"));
    let reply = send_data(&barrage, nul.as_bytes()).await;
    assert_eq!(
        (reply.code, reply.text.contains("NUL")),
        (550, true),
        "{reply:?}"
    );
    assert!(barrage.all_requests().await.is_empty());
}

#[tokio::test]
async fn oversize_is_552_and_declared_size_is_checked_at_mail_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        "[smtp]\nmax_message_size = 4096\nmax_recipients = 2\n",
    )
    .unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut c = Client::greet(barrage.smtp).await;
    let reply = c.command("MAIL FROM:<a@b.example> SIZE=5000").await;
    assert_eq!(reply.code, 552, "{reply:?}");
    let big = format!(
        "{}{}\r\n.\r\n",
        request_mail("<big@x>", "gros.fr"),
        "x\r\n".repeat(3000)
    );
    let reply = send_data(&barrage, big.as_bytes()).await;
    assert_eq!(reply.code, 552, "{reply:?}");

    let mut c = Client::greet(barrage.smtp).await;
    assert_eq!(c.command("MAIL FROM:<a@b.example>").await.code, 250);
    assert_eq!(c.command("RCPT TO:<r1@x>").await.code, 250);
    assert_eq!(c.command("RCPT TO:<r2@x>").await.code, 250);
    assert_eq!(c.command("RCPT TO:<r3@x>").await.code, 452);
}

#[tokio::test]
async fn command_errors_have_their_codes() {
    let (_dir, barrage) = start();
    let mut c = Client::connect(barrage.smtp).await;
    c.reply().await;
    assert_eq!(
        c.command("MAIL FROM:<a@b.example>").await.code,
        503,
        "MAIL before EHLO"
    );
    assert_eq!(c.command("EHLO x").await.code, 250);
    assert_eq!(
        c.command("RCPT TO:<r@x>").await.code,
        503,
        "RCPT before MAIL"
    );
    assert_eq!(c.command("DATA").await.code, 503, "DATA before MAIL");
    assert_eq!(c.command("MAIL FROM:<a@b.example>").await.code, 250);
    assert_eq!(
        c.command("MAIL FROM:<a@b.example>").await.code,
        503,
        "nested MAIL"
    );
    assert_eq!(c.command("DATA").await.code, 554, "DATA without recipients");
    assert_eq!(c.command("FROB").await.code, 500);
    assert_eq!(c.command("MAIL FROM:bad").await.code, 501);
    assert_eq!(c.command("STARTTLS").await.code, 502);
    c.send(b"NOOP\n").await;
    assert_eq!(c.reply().await.code, 500, "bare LF command line");
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(c.command(&long).await.code, 500, "over-long line");
    let huge = vec![b'y'; 3 << 20];
    c.send(&huge).await;
    c.send(b"\r\n").await;
    assert_eq!(c.reply().await.code, 500, "3 MB line");
    assert_eq!(c.command("NOOP").await.code, 250, "the session survives it");
}

#[tokio::test]
async fn too_many_connections_get_421() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[smtp]\nmax_connections = 3\n").unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::greet(barrage.smtp).await);
    }
    let mut extra = Client::connect(barrage.smtp).await;
    let reply = extra.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    drop(held);
    // Slots free up once the held sessions are gone.
    let mut greeted = None;
    // Bounded only so a leak fails instead of hanging; on a busy machine it takes what it takes.
    for _ in 0..3000 {
        let mut c = Client::connect(barrage.smtp).await;
        let reply = c.reply().await;
        if reply.code == 220 {
            greeted = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(greeted.is_some(), "a slot came free");
}

#[tokio::test]
async fn retransmission_gets_the_original_ticket_and_no_new_row() {
    let (_dir, barrage) = start();
    let mail = request_mail("<again@example.net>", "encore.fr");
    let mut c = Client::greet(barrage.smtp).await;
    let first = c.submit("client@example.net", &mail).await;
    let mut c2 = Client::greet(barrage.smtp).await;
    let second = c2.submit("client@example.net", &mail).await;
    assert_eq!(first.code, 250);
    assert_eq!(first.text, second.text, "same ticket and time");
    // Same Message-ID from another sender is another request.
    let third = c2.submit("other@example.net", &mail).await;
    assert_eq!(third.ticket(), Some(2), "{third:?}");
    assert_eq!(barrage.all_requests().await.len(), 2);
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["retransmissions"], 1);
}

#[tokio::test]
async fn second_barrage_on_the_same_data_dir_refuses_to_start() {
    let (dir, _barrage) = start();
    let output = support::output_tied(support::serve_command(dir.path(), "127.0.0.1:0"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another barrage"), "{stderr}");
}

#[tokio::test]
async fn non_loopback_api_without_token_is_refused_and_token_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let output = support::output_tied(support::serve_command(dir.path(), "0.0.0.0:0"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--api-token"));

    let barrage = Barrage::start(dir.path(), &["--api-token", "s3cret"]);
    let url = format!("http://{}/v1/stats", barrage.http);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 401);
    let ok = reqwest::Client::new()
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let health = reqwest::get(format!("http://{}/healthz", barrage.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn cursor_never_moves_backwards_nor_past_the_end() {
    let (_dir, barrage) = start();
    let mut c = Client::greet(barrage.smtp).await;
    for i in 0..3 {
        let reply = c
            .submit("a@b.example", &request_mail(&format!("<c{i}@x>"), "c.fr"))
            .await;
        assert_eq!(reply.code, 250);
    }
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/cursor", barrage.http);
    let post = |through: u64| {
        http.post(&url)
            .json(&serde_json::json!({ "through": through }))
            .send()
    };
    let r: serde_json::Value = post(2).await.unwrap().json().await.unwrap();
    assert_eq!(r["cursor"], 2);
    let r: serde_json::Value = post(1).await.unwrap().json().await.unwrap();
    assert_eq!(r["cursor"], 2);
    assert_eq!(post(9).await.unwrap().status(), 422);
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(
        (stats["accepted"].as_u64(), stats["queue_depth"].as_u64()),
        (Some(3), Some(1))
    );
    let metrics = reqwest::get(format!("http://{}/metrics", barrage.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("barrage_queue_depth 1\n"), "{metrics}");
}

#[tokio::test]
async fn sigterm_finishes_cleanly() {
    let (_dir, mut barrage) = start();
    let mut c = Client::greet(barrage.smtp).await;
    assert_eq!(
        c.submit("a@b.example", &request_mail("<t@x>", "t.fr"))
            .await
            .code,
        250
    );
    let status = barrage.terminate();
    assert!(status.success(), "{status}");
    // The idle session was told why it is being closed.
    assert_eq!(c.reply().await.code, 421);
}
