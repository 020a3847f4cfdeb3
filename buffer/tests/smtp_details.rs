//! The SMTP details of a production intake, each over real TCP against a real barrage process:
//! replies in printable ASCII whatever the client sent; Message-IDs unfolded and bounded before
//! they are stored (an unusable one still acked, without `In-Reply-To`, and counted); an ack
//! address that is no usable mailbox falling back to the envelope sender; the `smtp.recipients`
//! allow-list; acks to the envelope sender by default (RFC 3834 §4), none to a null sender or to
//! an automatic mail.

mod ack_support;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ack_support::{Received, Sink, ack_config, wait_for_acks};
use support::{Barrage, Client, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A request mail with the given header lines (each ending in CRLF) before the body.
fn mail(headers: &str, domain: &str) -> String {
    format!(
        "{headers}To: <requests@registry.example>\r\nSubject: request\r\n\r\n\
         domain: {domain}\r\nholder: Jeanne Durand\r\n"
    )
}

/// Starts barrage with acks going to a fresh sink and `extra` appended to the config file
/// (inside `[ack]` until it opens another section).
async fn start_with_acks(extra: &str) -> (tempfile::TempDir, Sink, Barrage) {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ack_config(dir.path(), sink.addr, extra);
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    (dir, sink, barrage)
}

/// Waits until barrage has sent `n` acks and has none pending; returns them by ticket.
async fn acks_once_sent(barrage: &Barrage, sink: &Sink, n: u64) -> BTreeMap<u64, Vec<Received>> {
    wait_for_acks(
        barrage.http,
        "every ack sent",
        Duration::from_secs(60),
        |s| s["pending"] == 0 && s["sent"].as_u64() >= Some(n),
    )
    .await;
    let stats = ack_support::ack_stats(barrage.http).await;
    assert_eq!(stats["sent"], n, "exactly {n} acks: {stats}");
    sink.by_ticket()
}

async fn metrics(http: SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A client that sends raw bytes and reads replies as raw bytes (a reply that is not UTF-8 must
/// fail the assertion, not the reader).
struct RawClient {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    async fn greet(addr: SocketAddr) -> RawClient {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut client = RawClient {
            reader: BufReader::new(read),
            writer,
        };
        assert!(client.reply().await.starts_with(b"220 "));
        assert!(
            client
                .command(b"EHLO test.example")
                .await
                .starts_with(b"250")
        );
        client
    }

    /// One whole reply, every line with its CRLF.
    async fn reply(&mut self) -> Vec<u8> {
        let mut reply = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = self.reader.read_until(b'\n', &mut line);
            let n = tokio::time::timeout(Duration::from_secs(30), read)
                .await
                .expect("a reply within 30 s")
                .unwrap();
            assert!(n > 0, "end of stream inside a reply: {reply:?}");
            reply.extend_from_slice(&line);
            if line.get(3) == Some(&b' ') {
                return reply;
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Vec<u8> {
        self.writer.write_all(line).await.unwrap();
        self.writer.write_all(b"\r\n").await.unwrap();
        self.reply().await
    }
}

/// Every line is printable ASCII (0x20–0x7E) ending in CRLF.
fn assert_printable_ascii(reply: &[u8]) {
    let shown = String::from_utf8_lossy(reply);
    for line in reply.split_inclusive(|&b| b == b'\n') {
        let text = line
            .strip_suffix(b"\r\n")
            .unwrap_or_else(|| panic!("a reply line without CRLF: {shown:?}"));
        assert!(
            text.iter().all(|b| (0x20..=0x7e).contains(b)),
            "a reply byte outside printable ASCII: {shown:?}"
        );
    }
}

#[tokio::test]
async fn replies_that_echo_the_client_are_printable_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barrage.toml");
    std::fs::write(
        &config,
        "[smtp]\nrecipients = [\"requests@registry.example\"]\n",
    )
    .unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut c = RawClient::greet(barrage.smtp).await;
    // A parameter it does not know, in UTF-8 with a control byte: named in the refusal.
    let reply = c
        .command("MAIL FROM:<a@client.example> CAF\u{c9}\x01=1".as_bytes())
        .await;
    assert!(
        reply.starts_with(b"555 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_printable_ascii(&reply);
    assert!(
        String::from_utf8_lossy(&reply).contains(r"CAF\xC3\x89\x01"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // A recipient outside the allow-list: named in the refusal.
    assert!(
        c.command(b"MAIL FROM:<a@client.example>")
            .await
            .starts_with(b"250")
    );
    let reply = c
        .command("RCPT TO:<\u{5b6b}\u{5b50}@registry.example>".as_bytes())
        .await;
    assert!(
        reply.starts_with(b"550 5.1.1 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_printable_ascii(&reply);
    // A malformed request whose domain is named in the refusal.
    assert!(
        c.command(b"RCPT TO:<requests@registry.example>")
            .await
            .starts_with(b"250")
    );
    assert!(c.command(b"DATA").await.starts_with(b"354"));
    let body = mail("From: <a@client.example>\r\n", "-b\u{fc}cher-.fr\u{202e}x");
    c.writer.write_all(body.as_bytes()).await.unwrap();
    let reply = c.command(b".").await;
    assert!(
        reply.starts_with(b"550 5.6.0 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_printable_ascii(&reply);
    assert!(
        String::from_utf8_lossy(&reply).contains(r"-b\xC3\xBCcher-.fr"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // A domain of 80 four-byte characters, named in a refusal: escaped it would take 1,280
    // bytes, and a reply line holds at most 512 (RFC 5321 §4.5.3.1.5).
    assert!(
        c.command(b"MAIL FROM:<a@client.example>")
            .await
            .starts_with(b"250")
    );
    assert!(
        c.command(b"RCPT TO:<requests@registry.example>")
            .await
            .starts_with(b"250")
    );
    assert!(c.command(b"DATA").await.starts_with(b"354"));
    let body = mail("From: <a@client.example>\r\n", &"\u{1f600}".repeat(80));
    c.writer.write_all(body.as_bytes()).await.unwrap();
    let reply = c.command(b".").await;
    assert!(
        reply.starts_with(b"550 5.6.0 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_printable_ascii(&reply);
    assert!(reply.len() <= 512, "a reply line of {} bytes", reply.len());
    assert!(
        reply.ends_with(b"...\r\n"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // Anything else the client may send in a command line.
    for line in [
        &b"\xff\xfe\x01\x7f junk"[..],
        "N\u{d3}OP".as_bytes(),
        b"HELO \x1b[31mred",
    ] {
        assert_printable_ascii(&c.command(line).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_are_unfolded_and_bounded_before_they_are_stored() {
    let (_dir, sink, barrage) = start_with_acks("").await;
    let mut c = Client::greet(barrage.smtp).await;
    let sender = "client@example.net";
    let from = format!("From: <{sender}>\r\n");
    // Folded inside the id (a mailer cutting a long line) and before it.
    let inside = format!("{from}Message-ID: <folded.first.half\r\n .second.half@client.test>\r\n");
    let before = format!("{from}Message-ID:\r\n\t<folded-before@client.test>\r\n");
    let long_id = format!("<{}@client.test>", "x".repeat(900));
    let long = format!("{from}Message-ID: {long_id}\r\n");
    let no_at = format!("{from}Message-ID: <no-at-sign.client.test>\r\n");
    let bare = format!("{from}Message-ID: bare@client.test\r\n");
    let mut tickets = BTreeMap::new();
    for (name, headers, domain) in [
        ("inside", &inside, "plie.fr"),
        ("before", &before, "avant.fr"),
        ("long", &long, "long.fr"),
        ("no @", &no_at, "arobase.fr"),
        ("no <>", &bare, "chevrons.fr"),
    ] {
        let reply = c.submit(sender, &mail(headers, domain)).await;
        assert_eq!(reply.code, 250, "{name}: {reply:?}");
        tickets.insert(name, reply.ticket().unwrap());
    }
    // The folded id was stored unfolded, so its retransmission is recognised (RFC 1047) ...
    let again = c.submit(sender, &mail(&inside, "plie.fr")).await;
    assert_eq!(again.ticket(), Some(tickets["inside"]), "{again:?}");
    // ... while an unusable id is no dedup key: the same bytes again are a new request.
    let again = c.submit(sender, &mail(&long, "long.fr")).await;
    let long_again = again.ticket().unwrap();
    assert!(!tickets.values().any(|&t| t == long_again), "{again:?}");

    let stored: BTreeMap<u64, serde_json::Value> = barrage
        .all_requests()
        .await
        .into_iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(stored.len(), 6);
    let id_of = |ticket: u64| stored[&ticket]["message_id"].as_str().unwrap().to_string();
    assert_eq!(
        id_of(tickets["inside"]),
        "<folded.first.half.second.half@client.test>"
    );
    assert_eq!(id_of(tickets["before"]), "<folded-before@client.test>");
    let unusable = [
        tickets["long"],
        tickets["no @"],
        tickets["no <>"],
        long_again,
    ];
    for ticket in unusable {
        let id = id_of(ticket);
        assert!(
            id.starts_with("<barrage.") && id.ends_with("@registry.test>"),
            "ticket {ticket}: an unusable Message-ID is replaced by a generated one, not {id:?}"
        );
    }

    let acks = acks_once_sent(&barrage, &sink, 6).await;
    for (name, ticket) in [("inside", tickets["inside"]), ("before", tickets["before"])] {
        let ack = &acks[&ticket][0];
        assert_eq!(ack.header("In-Reply-To"), Some(id_of(ticket)), "{name}");
    }
    for ticket in unusable {
        let ack = &acks[&ticket][0];
        assert_eq!(ack.rcpt_to, vec![sender.to_string()]);
        assert_eq!(ack.header("In-Reply-To"), None, "ticket {ticket}");
        assert_eq!(ack.header("References"), None, "ticket {ticket}");
    }
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["intake"]["unusable_message_ids"], 4, "{stats}");
    assert!(
        metrics(barrage.http)
            .await
            .contains("\nbarrage_unusable_message_ids_total 4\n")
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_go_to_the_envelope_sender_by_default_never_to_a_null_sender_or_a_program() {
    let (_dir, sink, barrage) = start_with_acks("").await;
    let mut c = Client::greet(barrage.smtp).await;
    let headers = "From: <client@example.net>\r\nReply-To: <answers@example.org>\r\n\
                   Message-ID: <envelope@client.test>\r\n";
    let reply = c
        .submit("Bounce@Example.NET", &mail(headers, "enveloppe.fr"))
        .await;
    let ticket = reply.ticket().unwrap();
    // The null reverse-path (RFC 3834 §2): stored, never answered.
    let headers = "From: <client@example.net>\r\nMessage-ID: <null@client.test>\r\n";
    let null = c.submit("", &mail(headers, "nul.fr")).await;
    let null = null.ticket().unwrap();
    // A mail sent by a program (RFC 3834 §5) is stored and not answered; `no` means a person.
    let mut automatic = Vec::new();
    for (n, value) in [
        "auto-replied",
        "Auto-Generated (vacation)",
        "auto-notified; x=1",
    ]
    .iter()
    .enumerate()
    {
        let headers = format!(
            "From: <client@example.net>\r\nAuto-Submitted: {value}\r\n\
             Message-ID: <auto{n}@client.test>\r\n"
        );
        let reply = c
            .submit("robot@example.net", &mail(&headers, "robot.fr"))
            .await;
        automatic.push(reply.ticket().unwrap());
    }
    let headers = "From: <client@example.net>\r\nAuto-Submitted: No\r\n\
                   Message-ID: <person@client.test>\r\n";
    let person = c
        .submit("person@example.net", &mail(headers, "personne.fr"))
        .await;
    let person = person.ticket().unwrap();

    let acks = acks_once_sent(&barrage, &sink, 2).await;
    assert_eq!(
        acks.keys().copied().collect::<Vec<_>>(),
        vec![ticket, person]
    );
    assert_eq!(
        acks[&ticket][0].rcpt_to,
        vec!["bounce@example.net".to_string()]
    );
    let stored = barrage.all_requests().await;
    for unanswered in automatic.iter().chain([&null]) {
        let row = &stored[(unanswered - 1) as usize];
        assert_eq!(row["ack_to"], serde_json::Value::Null, "{row}");
    }
    // A null sender or a program asks for no replies: not an unusable address.
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["intake"]["unusable_ack_addresses"], 0, "{stats}");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_header_rule_an_unusable_address_falls_back_to_the_envelope_sender() {
    let (_dir, sink, barrage) = start_with_acks("recipient = \"header\"\n").await;
    let mut c = Client::greet(barrage.smtp).await;
    let mut expected = BTreeMap::new();
    let cases = [
        (
            "Reply-To: <answers@example.org>\r\nFrom: <a@example.net>\r\n",
            "answers@example.org",
        ),
        ("From: <client@example.net>\r\n", "client@example.net"),
        ("From: @client.example\r\n", "envelope@example.com"),
        ("From: <nobody@>\r\n", "envelope@example.com"),
        (
            "Reply-To: <@>\r\nFrom: local-only\r\n",
            "envelope@example.com",
        ),
    ];
    for (i, (headers, want)) in cases.into_iter().enumerate() {
        let headers = format!("{headers}Message-ID: <case-{i}@client.test>\r\n");
        let reply = c
            .submit(
                "envelope@example.com",
                &mail(&headers, &format!("cas{i}.fr")),
            )
            .await;
        expected.insert(reply.ticket().unwrap(), want);
    }
    // Neither the header nor the envelope sender is a usable mailbox: no ack, counted.
    let headers = "From: @client.example\r\nMessage-ID: <nowhere@client.test>\r\n";
    let reply = c
        .submit("\" hi there \"@d", &mail(headers, "nulle-part.fr"))
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let nowhere = reply.ticket().unwrap();
    // The null sender gets no ack under this rule either (RFC 3834 §2).
    let headers = "From: <client@example.net>\r\nMessage-ID: <null@client.test>\r\n";
    assert_eq!(c.submit("", &mail(headers, "nul.fr")).await.code, 250);

    let acks = acks_once_sent(&barrage, &sink, expected.len() as u64).await;
    assert_eq!(
        acks.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (ticket, want) in &expected {
        assert_eq!(acks[ticket].len(), 1);
        assert_eq!(
            acks[ticket][0].rcpt_to,
            vec![want.to_string()],
            "ticket {ticket}"
        );
    }
    let stored = barrage.all_requests().await;
    assert_eq!(
        stored[(nowhere - 1) as usize]["ack_to"],
        serde_json::Value::Null
    );
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["intake"]["unusable_ack_addresses"], 1, "{stats}");
    assert_eq!(stats["acks"]["failed"], 0, "{stats}");
    assert!(
        metrics(barrage.http)
            .await
            .contains("\nbarrage_unusable_ack_addresses_total 1\n")
    );
    sink.stop().await;
}

#[tokio::test]
async fn only_the_listed_recipients_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barrage.toml");
    let list =
        "[smtp]\nrecipients = [\"Requests@Registry.Example\", \"demandes@registry.example\"]\n";
    std::fs::write(&config, list).unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut c = Client::greet(barrage.smtp).await;
    assert_eq!(c.command("MAIL FROM:<client@example.net>").await.code, 250);
    for taken in [
        "requests@registry.example",
        "REQUESTS@registry.EXAMPLE",
        "demandes@Registry.example",
    ] {
        let reply = c.command(&format!("RCPT TO:<{taken}>")).await;
        assert_eq!(reply.code, 250, "{taken}: {reply:?}");
    }
    for refused in [
        "anything@anywhere.example",
        "requests@elsewhere.example",
        "other@registry.example",
    ] {
        let reply: Reply = c.command(&format!("RCPT TO:<{refused}>")).await;
        assert_eq!(
            (reply.code, reply.text.as_str()),
            (
                550,
                format!("5.1.1 <{refused}>: no such mailbox here").as_str()
            )
        );
    }
    // The refused recipients are not part of the transaction; the taken ones are.
    assert_eq!(c.command("DATA").await.code, 354);
    c.send(mail("From: <client@example.net>\r\n", "liste.fr").as_bytes())
        .await;
    assert_eq!(c.command(".").await.code, 250);
    // Without a list, any recipient is taken (the default).
    let open = Barrage::start(&dir.path().join("open"), &[]);
    let mut c = Client::greet(open.smtp).await;
    assert_eq!(c.command("MAIL FROM:<client@example.net>").await.code, 250);
    assert_eq!(
        c.command("RCPT TO:<anything@anywhere.example>").await.code,
        250
    );
}
