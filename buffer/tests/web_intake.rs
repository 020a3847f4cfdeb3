//! The public web intake over real HTTP against the real binary: the form, 202 only for stored
//! requests, 422 naming each bad field, 413, Idempotency-Key (same ticket, no new seq, no second
//! ack), SMTP and HTTP sharing one gap-free sequence, 503 + Retry-After on a write failure and
//! when too many requests are in flight, 408 for a body that never comes.

mod ack_support;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ack_support::{Sink, ack_config, wait_until};
use serde_json::{Value, json};
use support::{Barrage, Client, request_mail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn web(barrage: &Barrage) -> SocketAddr {
    barrage.web.expect("endpoints.json names the web intake")
}

async fn post_json(
    addr: SocketAddr,
    body: &Value,
    key: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/requests"))
        .json(body)
        .timeout(Duration::from_secs(30));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("the web intake answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, retry_after, json)
}

fn form(domain: &str, email: &str) -> Value {
    json!({"domain": domain, "holder": "Jeanne Durand", "contact": "+33 1 23 45 67 89", "email": email})
}

#[tokio::test]
async fn the_form_is_served_and_a_post_is_stored_before_202() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let addr = web(&barrage);

    let page = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    for needle in [
        "<form method=\"post\" action=\"/requests\"",
        "<label for=\"domain\"",
        "name=\"email\"",
        "<html lang=",
    ] {
        assert!(html.contains(needle), "the form lacks {needle}");
    }
    assert!(!html.contains("<script"), "the form needs no JavaScript");

    let (status, _, body) = post_json(addr, &form("Exemple.FR", "jeanne@example.net"), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ticket"], 1);
    assert!(body["accepted_at"].as_str().unwrap().ends_with('Z'));
    let message_id = body["message_id"].as_str().unwrap().to_string();

    // What a browser posts, answered with a page it can show.
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/requests"))
        .header("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("domain=deux.fr&holder=Jean+Dupont&contact=&email=jean%40example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.text().await.unwrap().contains("ticket 2"));

    let stored = barrage.all_requests().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["intake"], "http");
    assert_eq!(stored[0]["domain"], "exemple.fr");
    assert_eq!(stored[0]["ack_to"], "jeanne@example.net");
    assert_eq!(stored[0]["message_id"], message_id.as_str());
    assert_eq!(stored[0]["fields"]["holder"], "Jeanne Durand");
    assert_eq!(stored[1]["domain"], "deux.fr");
    assert_eq!(stored[1]["fields"]["holder"], "Jean Dupont");
    assert!(
        stored[1]["fields"].get("contact").is_none(),
        "an empty field is no field"
    );
    let raw = barrage.get("/v1/requests?after=0&limit=1&raw=true").await;
    let raw = raw["requests"][0]["raw"].as_str().unwrap();
    assert!(
        raw.contains(&format!("Message-ID: {message_id}\r\n")),
        "{raw}"
    );
    assert!(raw.ends_with("\"holder\":\"Jeanne Durand\"}"), "{raw}");
}

#[tokio::test]
async fn every_bad_field_is_named_in_a_422_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let addr = web(&barrage);

    let (status, _, body) = post_json(
        addr,
        &json!({"domain": "-bad-.fr", "email": "nobody", "holder": 42, "colour": "blue"}),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let fields = body["fields"].as_object().unwrap();
    // Non-strings are named first; the rest once the types are right.
    assert!(fields.contains_key("holder"), "{body}");
    let (status, _, body) = post_json(
        addr,
        &json!({"domain": "-bad-.fr", "email": "nobody", "holder": "x\u{7}y", "colour": "blue"}),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let named: BTreeSet<&str> = body["fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        named,
        BTreeSet::from(["colour", "domain", "email", "holder"]),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("domain"));

    let (status, _, body) = post_json(addr, &json!({"holder": "no domain, no email"}), None).await;
    assert_eq!(status, 422);
    for field in ["domain", "email"] {
        let problem = body["fields"][field].as_str().unwrap();
        assert!(problem.contains("required"), "{body}");
    }

    let (status, _, body) = post_json(addr, &json!(["not", "an", "object"]), None).await;
    assert_eq!(status, 422, "{body}");
    let (status, _, body) = post_json(addr, &form("a.fr", "a@b.fr"), Some(&"k".repeat(300))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["fields"]["Idempotency-Key"].is_string(), "{body}");

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/requests"))
        .header("content-type", "text/plain")
        .body("domain: a.fr")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    assert!(barrage.all_requests().await.is_empty());
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["accepted"], 0);
    assert!(stats["intake"]["refused_malformed"].as_u64().unwrap() >= 4);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let addr = web(&barrage);
    let mut big = form("gros.fr", "a@b.fr");
    big["holder"] = json!("x".repeat(20_000));
    let (status, _, body) = post_json(addr, &big, None).await;
    assert_eq!(status, 413, "{body}");

    // Without a Content-Length (chunked), the limit holds while reading.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = b"POST /requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..40 {
        request.extend_from_slice(b"3e8\r\n");
        request.extend_from_slice(&[b' '; 1000]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(&request).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(barrage.all_requests().await.is_empty());
}

#[tokio::test]
async fn idempotency_key_gives_the_original_ticket_and_no_second_ack() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ack_config(dir.path(), sink.addr, "");
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let addr = web(&barrage);

    let body = form("hot.fr", "Client@Example.net");
    let key = "r0000001.7@landrush.invalid";
    let (s1, _, first) = post_json(addr, &body, Some(key)).await;
    let (s2, _, again) = post_json(addr, &body, Some(key)).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["ticket"], again["ticket"]);
    assert_eq!(first["accepted_at"], again["accepted_at"]);
    assert_eq!(first["message_id"], "<r0000001.7@landrush.invalid>");
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(first["retransmission"], false);
    assert_eq!(again["retransmission"], true);

    // Without a key, hitting Submit again is a new request; another key is another request.
    let (_, _, n1) = post_json(addr, &body, None).await;
    let (_, _, n2) = post_json(addr, &body, None).await;
    let (_, _, other) = post_json(addr, &body, Some("another key")).await;
    let tickets: BTreeSet<u64> = [&first, &n1, &n2, &other]
        .iter()
        .map(|b| b["ticket"].as_u64().unwrap())
        .collect();
    assert_eq!(tickets, BTreeSet::from([1, 2, 3, 4]));
    assert_ne!(n1["message_id"], n2["message_id"]);

    assert_eq!(
        barrage.all_requests().await.len(),
        4,
        "no new seq for the retry"
    );
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["retransmissions"], 1);
    assert_eq!(stats["intake"]["retransmissions"], 1);

    wait_until("four acks", Duration::from_secs(30), || {
        sink.received().len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let by_ticket = sink.by_ticket();
    assert_eq!(by_ticket.len(), 4);
    assert!(
        by_ticket.values().all(|acks| acks.len() == 1),
        "one ack per request"
    );
    let ack = &by_ticket[&first["ticket"].as_u64().unwrap()][0];
    assert_eq!(ack.rcpt_to, vec!["Client@Example.net".to_string()]);
    assert_eq!(
        ack.header("In-Reply-To").as_deref(),
        Some("<r0000001.7@landrush.invalid>")
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_and_http_share_one_gap_free_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let addr = web(&barrage);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..8 {
        let smtp = barrage.smtp;
        tasks.spawn(async move {
            let mut client = Client::greet(smtp).await;
            let mut tickets = Vec::new();
            for i in 0..15 {
                let mail = request_mail(&format!("<mix-{c}-{i}@client.test>"), "meme.fr");
                let reply = client.submit("client@example.net", &mail).await;
                assert_eq!(reply.code, 250, "{reply:?}");
                tickets.push(reply.ticket().unwrap());
            }
            tickets
        });
        tasks.spawn(async move {
            let mut tickets = Vec::new();
            for i in 0..15 {
                let key = format!("web-{c}-{i}@client.test");
                let (status, _, body) =
                    post_json(addr, &form("meme.fr", "web@example.net"), Some(&key)).await;
                assert_eq!(status, 202, "{body}");
                tickets.push(body["ticket"].as_u64().unwrap());
            }
            tickets
        });
    }
    let mut all = BTreeSet::new();
    while let Some(tickets) = tasks.join_next().await {
        let tickets = tickets.unwrap();
        // Each client's own requests were answered one after the other: increasing tickets.
        assert!(tickets.windows(2).all(|w| w[0] < w[1]), "{tickets:?}");
        for t in tickets {
            assert!(all.insert(t), "ticket {t} given twice");
        }
    }
    assert_eq!(all, (1..=240).collect::<BTreeSet<u64>>());
    let stored = barrage.all_requests().await;
    let seqs: Vec<u64> = stored.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=240).collect::<Vec<u64>>());
    let web_count = stored.iter().filter(|r| r["intake"] == "http").count();
    assert_eq!(web_count, 120);
    let times: Vec<&str> = stored
        .iter()
        .map(|r| r["accepted_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "accepted-at never goes back"
    );
}

#[tokio::test]
async fn a_failed_write_is_503_with_retry_after_and_is_not_stored() {
    const LIMIT_BYTES: u64 = 384 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start_with_file_size_limit(dir.path(), LIMIT_BYTES);
    let addr = web(&barrage);
    let padding = "x".repeat(900);
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for n in 0..2000 {
        let mut body = form("plein.fr", "a@b.fr");
        body["holder"] = json!(padding);
        body["contact"] = json!(padding);
        let key = format!("full{n}@disk.test");
        let (status, retry_after, reply) = post_json(addr, &body, Some(&key)).await;
        match status {
            202 => accepted.push(format!("<{key}>")),
            503 => {
                assert_eq!(retry_after.as_deref(), Some("1"), "{reply}");
                refused.push(format!("<{key}>"));
                if refused.len() >= 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    assert!(!refused.is_empty(), "the file size limit was never reached");

    barrage.lift_file_size_limit();
    // The refused request, posted again with its key, is now stored (it never was before).
    let key = refused[0].trim_matches(['<', '>']).to_string();
    let mut body = form("plein.fr", "a@b.fr");
    body["holder"] = json!(padding);
    body["contact"] = json!(padding);
    let (status, _, reply) = post_json(addr, &body, Some(&key)).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        reply["retransmission"], false,
        "a 503 stored nothing to retransmit"
    );

    let stored: Vec<String> = barrage
        .all_requests()
        .await
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_string())
        .collect();
    for id in &refused[1..] {
        assert!(!stored.contains(id), "{id} was answered 503 but is stored");
    }
    for id in &accepted {
        assert!(
            stored.contains(id),
            "{id} was answered 202 but is not stored"
        );
    }
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(
        stats["accepted"].as_u64(),
        Some(stored.len() as u64),
        "gap-free"
    );
}

/// A POST that announces 100 bytes of body and sends a few.
async fn stall(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"domain\":",
        )
        .await
        .unwrap();
    stalled
}

#[tokio::test]
async fn too_many_requests_in_flight_get_503_and_a_stalled_body_408() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barrage.toml");
    std::fs::write(
        &config,
        "[web]\nmax_concurrent_requests = 1\nrequest_timeout_secs = 8\nretry_after_secs = 3\n",
    )
    .unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let addr = web(&barrage);

    // A client that announces a body and never sends it holds the only slot, for 8 s (its
    // timeout). On a busy machine a probe can overtake it: the probe is stored, and the stalled
    // request, finding the slot taken, is refused itself. Then it stalls again, anew.
    let mut stalled = stall(addr).await;
    let mut saw_503 = false;
    let mut probes_stored = 0;
    for _ in 0..300 {
        let (status, retry_after, _) = post_json(addr, &form("attente.fr", "a@b.fr"), None).await;
        if status == 503 {
            assert_eq!(retry_after.as_deref(), Some("3"));
            saw_503 = true;
            break;
        }
        assert_eq!(status, 202);
        probes_stored += 1;
        let mut peek = [0u8; 1];
        match stalled.try_read(&mut peek) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => stalled = stall(addr).await,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        saw_503,
        "a second request while the slot is held must get 503 ({probes_stored} probes stored)"
    );

    // The stalled body times out with 408, and the slot is free again.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled request is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, _, body) = post_json(addr, &form("apres.fr", "a@b.fr"), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(barrage.all_requests().await.len(), 1 + probes_stored);
}
