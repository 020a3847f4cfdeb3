//! Hostile values from the requester (CR/LF, 10 kB lines, non-ASCII, template syntax, header
//! injection attempts) always give a well-formed ack mail: no extra header, no line over 998
//! bytes, CRLF only, and the values shown as text.

mod ack_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ack_support::{start_acked, wait_until};
use barrage::ack::AckConfig;
use barrage::ack::outbox::PendingAck;
use barrage::ack::template::{ComposeError, Composer, sample_ack};
use mail_parser::MessageParser;
use support::Client;

/// Checks the wire form of a mail: CRLF line ends only, no line over 998 bytes, 7-bit, and a
/// header block whose field names are only the ones barrage writes.
fn assert_well_formed(raw: &[u8]) {
    let text = std::str::from_utf8(raw).expect("the ack travels as 7-bit text");
    assert!(text.is_ascii(), "non-ASCII on the wire");
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at byte {i}");
        }
        if *b == b'\r' {
            assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at byte {i}");
        }
    }
    for line in text.split("\r\n") {
        assert!(line.len() <= 998, "a line of {} bytes", line.len());
    }
    let head = text.split("\r\n\r\n").next().unwrap();
    let allowed = [
        "From",
        "To",
        "Subject",
        "Message-ID",
        "X-Barrage-Ticket",
        "X-Barrage-Accepted-At",
        "Auto-Submitted",
        "X-Barrage-Receipt",
        "In-Reply-To",
        "References",
        "MIME-Version",
        "Date",
        "Content-Type",
        "Content-Transfer-Encoding",
    ];
    let mut names = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let name = line.split(':').next().unwrap();
        assert!(allowed.contains(&name), "unexpected header line {line:?}");
        names.push(name);
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a header given twice: {names:?}");
}

fn composer() -> Composer {
    let mut config = AckConfig::new("127.0.0.1:25", "registry@registry.test");
    config.subject = "Ticket {{ ticket }}: {{ domain }} {{ fields.holder }}".into();
    Composer::new(&config, "0123456789abcdef", "registry.test").unwrap()
}

/// Values with CR/LF, header lines, template syntax, bidi controls and huge lengths.
fn hostile_acks() -> [PendingAck; 3] {
    let long = "é".repeat(5000) + &"x".repeat(10_000);
    let mut fields = BTreeMap::new();
    fields.insert(
        "holder".to_string(),
        "Eve\r\nBcc: victim@example.org\r\n\r\nbody".to_string(),
    );
    fields.insert("contact".to_string(), long.clone());
    fields.insert(
        "note".to_string(),
        "{{ 7 * 7 }} {% for x in y %}".to_string(),
    );
    fields.insert(
        "bidi".to_string(),
        "\u{202e}rf.elpmexe\u{2028}\u{0}".to_string(),
    );
    [
        PendingAck {
            domain: "exemple.fr\r\nBcc: victim@example.org".into(),
            message_id: "<id@x>\r\nBcc: victim@example.org".into(),
            fields: fields.clone(),
            ..sample_ack()
        },
        PendingAck {
            domain: long.clone(),
            message_id: format!("<{}@x>", "a".repeat(10_000)),
            fields: fields.clone(),
            ..sample_ack()
        },
        PendingAck {
            domain: "société-générale.fr".into(),
            message_id: "<é@x>".into(),
            ack_to: "jeanne@exemple.org".into(),
            fields,
            ..sample_ack()
        },
    ]
}

#[test]
fn hostile_values_cannot_inject_headers_or_break_the_template() {
    let composer = composer();
    let hostile = hostile_acks();
    for ack in &hostile {
        let mail = composer
            .compose(ack)
            .expect("a hostile value still gives a mail");
        let raw = mail.formatted();
        assert_well_formed(&raw);
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(!text.contains("\r\nBcc:"), "header injected");
        // An unsafe Message-ID is not copied into In-Reply-To.
        assert!(
            !text.contains("In-Reply-To"),
            "unsafe Message-ID copied:\n{text}"
        );
        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert!(parsed.bcc().is_none());
        assert_eq!(
            parsed.to().unwrap().first().unwrap().address(),
            Some("jeanne@exemple.org")
        );
        assert!(parsed.body_text(0).is_some());
        // Template syntax in a value is shown, never evaluated.
        let (_, rendered_body) = composer.render(ack).unwrap();
        assert!(!rendered_body.contains('\r'));
        assert!(rendered_body.lines().all(|l| l.chars().count() <= 300));
    }
}

#[test]
fn hostile_values_reach_a_custom_template_as_data() {
    let hostile = hostile_acks();
    // Shown as typed, cut, no control characters.
    let mut config = AckConfig::new("127.0.0.1:25", "registry@registry.test");
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("ack.txt.j2");
    std::fs::write(
        &template,
        "note={{ fields.note }}\nholder={{ fields.holder }}\ncontact={{ fields.contact }}\n",
    )
    .unwrap();
    config.template = Some(template);
    let custom = Composer::new(&config, "0123456789abcdef", "registry.test").unwrap();
    let (_, body) = custom.render(&hostile[2]).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "note={{ 7 * 7 }} {% for x in y %}");
    assert_eq!(lines[1], "holder=Eve  Bcc: victim@example.org    body");
    assert_eq!(
        lines[2].chars().count(),
        "contact=".len() + 200 + 1,
        "cut to 200 + …"
    );
    assert!(lines[2].ends_with('…'));
    assert_eq!(lines.len(), 3);
}

#[test]
fn an_invalid_ack_address_is_refused_not_sent() {
    let ack = PendingAck {
        ack_to: "victim@example.org\r\nBcc: other@example.org".into(),
        ..sample_ack()
    };
    assert!(matches!(
        composer().compose(&ack),
        Err(ComposeError::BadAddress(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_through_the_intake_get_well_formed_acks() {
    let acked = start_acked("").await;
    let (barrage, sink) = (&acked.barrage, &acked.sink);
    let mut client = Client::greet(barrage.smtp).await;
    let long = "ü".repeat(490);
    let mails = [
        format!(
            "From: =?utf-8?q?J=C3=A9r=C3=B4me?= <jerome@exemple.org>\r\n\
             Message-ID: <hostile-1@client.test>\r\nSubject: =?utf-8?q?d=C3=A9p=C3=B4t?=\r\n\r\n\
             domain: café-crème.fr\r\nholder: {long}\r\nnote: {{{{ 7 * 7 }}}}\r\n"
        ),
        "From: <x@exemple.org>\r\nMessage-ID: <weird\"id(@client.test>\r\n\r\n\
         domain: exemple.fr\r\nholder: Bcc: victim@example.org\r\n"
            .to_string(),
    ];
    for mail in &mails {
        let reply = client.submit("bounce@exemple.org", mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    wait_until("both acks", Duration::from_secs(30), || {
        sink.received().len() == 2
    })
    .await;
    for ack in sink.received() {
        assert_well_formed(&ack.raw);
    }
    let first = &sink.by_ticket()[&1][0];
    assert!(first.body().contains("café-crème.fr"), "{}", first.body());
    assert_eq!(
        first.header("In-Reply-To").unwrap(),
        "<hostile-1@client.test>"
    );
    acked.sink.stop().await;
}
