//! Dedup only of the same message (contract: Retransmission), over real SMTP and HTTP against the
//! real binary: a colliding key with other content never gets the stored request's ticket.
//!
//! - SMTP: an attacker who sends first with the victim's envelope sender and Message-ID (and
//!   other content) does not take the victim's place: the victim gets its own new ticket, and a
//!   byte-identical retransmission of either gets its own original ticket again.
//! - HTTP: an `Idempotency-Key` belongs to its requester: two requesters with one key are two
//!   requests; one requester reusing its key with other fields gets 422 naming the reason; the
//!   same POST again gets its original ticket.
//! - The form page's one-time token: posting the same rendered form twice is one request.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Barrage, Client, request_mail};
use tokio::net::TcpSocket;

async fn client_from(n: u8, addr: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), 0))
        .unwrap();
    let mut client = Client::from_stream(socket.connect(addr).await.expect("connect"));
    assert_eq!(client.reply().await.code, 220);
    assert_eq!(client.command("EHLO dedup.example").await.code, 250);
    client
}

#[tokio::test]
async fn a_spoofed_sender_and_message_id_do_not_steal_the_victims_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let victim_id = "<order-42@victim.example>";
    let victim_mail = request_mail(victim_id, "victim.fr");
    let attacker_mail = request_mail(victim_id, "attacker.fr");

    let mut attacker = client_from(20, barrage.smtp).await;
    let stolen = attacker
        .submit("victim@victim.example", &attacker_mail)
        .await;
    assert_eq!(stolen.code, 250);
    let attacker_ticket = stolen.ticket().unwrap();

    let mut victim = client_from(21, barrage.smtp).await;
    let reply = victim.submit("Victim@victim.example", &victim_mail).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let victim_ticket = reply.ticket().unwrap();
    assert_ne!(
        victim_ticket, attacker_ticket,
        "the victim was answered with the attacker's ticket"
    );

    // The victim's retransmission (same bytes) gets its own ticket, not a third one; so does
    // the attacker's.
    let again = victim.submit("victim@victim.example", &victim_mail).await;
    assert_eq!((again.code, again.ticket()), (250, Some(victim_ticket)));
    assert_eq!(
        again.text, reply.text,
        "a retransmission gets the original reply"
    );
    let again = attacker
        .submit("victim@victim.example", &attacker_mail)
        .await;
    assert_eq!(again.ticket(), Some(attacker_ticket));

    let stored = barrage.all_requests().await;
    let domains: Vec<(u64, &str)> = stored
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["domain"].as_str().unwrap()))
        .collect();
    assert_eq!(
        domains,
        [
            (attacker_ticket, "attacker.fr"),
            (victim_ticket, "victim.fr")
        ],
        "both requests stored once each, under their own tickets"
    );
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["intake"]["retransmissions"], 2, "{stats}");
}

fn web(barrage: &Barrage) -> SocketAddr {
    barrage.web.expect("the web intake listens")
}

async fn post(addr: SocketAddr, body: &Value, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/requests"))
        .header("Idempotency-Key", key)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the web intake answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

fn form(domain: &str, email: &str) -> Value {
    json!({"domain": domain, "holder": "Jeanne Durand", "email": email})
}

#[tokio::test]
async fn an_idempotency_key_is_the_requesters_own_and_bound_to_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let addr = web(&barrage);

    let (status, first) = post(addr, &form("premier.fr", "alice@example.fr"), "order-1").await;
    assert_eq!(status, 202, "{first}");
    // Another requester, the same key, other content: a request of its own.
    let (status, other) = post(addr, &form("second.fr", "bob@example.fr"), "order-1").await;
    assert_eq!(status, 202, "{other}");
    assert_eq!(other["retransmission"], false, "{other}");
    assert_ne!(other["ticket"], first["ticket"], "bob got alice's ticket");

    // Alice reuses her key for other content: refused, naming the reason.
    let (status, reused) = post(addr, &form("autre.fr", "alice@example.fr"), "order-1").await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["reason"], "idempotency_key_reused", "{reused}");
    assert!(reused.get("ticket").is_none(), "{reused}");
    assert!(
        reused["error"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{reused}"
    );

    // Alice's retransmission (same fields, another encoding order) gets her original ticket.
    let same =
        json!({"email": "alice@example.fr", "holder": "Jeanne Durand", "domain": "premier.fr"});
    let (status, again) = post(addr, &same, "order-1").await;
    assert_eq!(status, 202);
    assert_eq!(again["retransmission"], true, "{again}");
    assert_eq!(again["ticket"], first["ticket"]);
    assert_eq!(again["accepted_at"], first["accepted_at"]);

    let domains: Vec<String> = barrage
        .all_requests()
        .await
        .iter()
        .map(|r| r["domain"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(domains, ["premier.fr", "second.fr"]);
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["intake"]["refused_web_key_reuse"], 1, "{stats}");
    let metrics = reqwest::get(format!("http://{}/metrics", barrage.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nbarrage_refused_web_key_reuse_total 1\n"),
        "{metrics}"
    );
}

/// The `form_token` of a rendered form page.
fn form_token(page: &str) -> String {
    let at = page
        .find("name=\"form_token\" value=\"")
        .expect("the form has a token");
    let rest = &page[at + "name=\"form_token\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn posting_the_same_rendered_form_twice_is_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let addr = web(&barrage);
    let page = |_| async move {
        let response = reqwest::get(format!("http://{addr}/")).await.unwrap();
        form_token(&response.text().await.unwrap())
    };
    let token = page(()).await;
    assert_ne!(token, page(()).await, "every rendering has its own token");
    let submit = |token: String| async move {
        let body = format!(
            "domain=clic.fr&holder=Jeanne+Durand&email=jeanne%40example.fr&form_token={token}"
        );
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/requests"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let json: Value = response.json().await.unwrap();
        (status, json)
    };
    let (status, first) = submit(token.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, second) = submit(token).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(
        second["ticket"], first["ticket"],
        "a double click made two requests"
    );
    assert_eq!(second["retransmission"], true);
    // A new rendering of the form is a new request, whatever its content.
    let (status, third) = submit(page(()).await).await;
    assert_eq!(status, 202);
    assert_ne!(third["ticket"], first["ticket"]);
    assert_eq!(barrage.all_requests().await.len(), 2);
}
