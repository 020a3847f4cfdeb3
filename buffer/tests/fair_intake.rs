//! Fair intake over real TCP from distinct loopback source addresses (contract: Fair intake): a
//! hog held to its per-address cap while a newcomer is served, a slowloris cut by the command and
//! DATA deadlines, a junk flood closed, the message rate at MAIL FROM, stress shedding of the
//! busiest address, and the web intake's per-address caps. Every refusal is counted in
//! `/v1/stats` and `/metrics`.
//!
//! Each client binds its socket to its own address in 127.0.0.0/8 before connecting; only
//! 127.0.0.1 is exempt by default, so these meet the limits as internet clients would.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::{Barrage, Client, request_mail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// A loopback address of its own for client `n` (n ≥ 2: 127.0.0.1 is exempt).
fn source(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

async fn connect_from(n: u8, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source(n), 0)).unwrap();
    socket.connect(addr).await.expect("connect")
}

/// Starts barrage with `config` (TOML) in a fresh temporary dir.
fn start(config: &str) -> (tempfile::TempDir, Barrage) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("barrage.toml");
    std::fs::write(&path, config).unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
    );
    (dir, barrage)
}

async fn intake_counter(barrage: &Barrage, name: &str) -> u64 {
    let stats = barrage.get("/v1/stats").await;
    stats["intake"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no intake.{name} in {stats}"))
}

async fn metrics(barrage: &Barrage) -> String {
    let url = format!("http://{}/metrics", barrage.http);
    reqwest::get(&url).await.unwrap().text().await.unwrap()
}

/// A newcomer from its own address: greeted, and its request stored.
async fn newcomer_is_served(barrage: &Barrage, n: u8, id: &str) -> u64 {
    let mut newcomer = Client::from_stream(connect_from(n, barrage.smtp).await);
    assert_eq!(newcomer.reply().await.code, 220, "the newcomer is greeted");
    assert_eq!(newcomer.command("EHLO newcomer.example").await.code, 250);
    let reply = newcomer
        .submit("newcomer@example.net", &request_mail(id, "newcomer.fr"))
        .await;
    assert_eq!(
        reply.code, 250,
        "the newcomer's request is stored: {reply:?}"
    );
    reply.ticket().expect("a ticket")
}

#[tokio::test]
async fn a_hog_is_held_to_its_cap_and_a_newcomer_is_served() {
    // The global limit is 8: without a per-address cap the hog takes all of it and every
    // newcomer meets `421 4.3.2 too many connections`.
    let (_dir, barrage) =
        start("[smtp]\nmax_connections = 8\n[fair]\nsmtp_connections_per_client = 5\n");
    let mut held = Vec::new();
    let refusal = loop {
        assert!(held.len() <= 8, "the hog holds more than its cap");
        let mut hog = Client::from_stream(connect_from(2, barrage.smtp).await);
        let greeting = hog.reply().await;
        if greeting.code != 220 {
            break greeting;
        }
        assert_eq!(hog.command("NOOP").await.code, 250);
        held.push(hog);
    };
    assert_eq!(held.len(), 5, "the hog got exactly its cap");
    assert_eq!(refusal.code, 421);
    assert_eq!(refusal.text, "4.7.0 too many connections from your address");
    // The hog keeps its connections alive with NOOPs while the newcomer comes in.
    for hog in &mut held {
        assert_eq!(hog.command("NOOP").await.code, 250);
    }
    newcomer_is_served(&barrage, 3, "<newcomer.1@example.net>").await;
    for hog in &mut held {
        assert_eq!(
            hog.command("NOOP").await.code,
            250,
            "the hog's cap is its own"
        );
    }
    assert!(intake_counter(&barrage, "refused_client_connections").await >= 1);
    assert!(
        metrics(&barrage)
            .await
            .contains("\nbarrage_refused_client_connections_total ")
    );
}

/// Sends `bytes` one at a time with `pause` between them; returns how many it wrote before the
/// server closed the connection (all of them when it never did).
async fn trickle(writer: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8], pause: Duration) {
    for byte in bytes {
        if writer.write_all(std::slice::from_ref(byte)).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Reads reply lines until one starts with `421` or the stream ends; panics if the trickle ends
/// first (the server let the slowloris finish its line).
async fn cut_while_trickling(stream: TcpStream, before: &[u8], trickled: &[u8]) -> String {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(before).await.unwrap();
    let read_cut = async {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return "EOF".to_string();
            }
            if line.starts_with("421") {
                return line;
            }
        }
    };
    tokio::select! {
        cut = read_cut => cut,
        () = trickle(&mut write, trickled, Duration::from_millis(200)) => {
            panic!("the slowloris trickled {} bytes and was never cut", trickled.len())
        }
    }
}

#[tokio::test]
async fn a_slowloris_is_cut_by_the_deadlines_and_a_newcomer_is_served() {
    // Deadlines of 2 s; the slowloris sends a byte every 200 ms, 600 bytes: two minutes if the
    // server waited for it (the old per-read timeout restarted with every byte).
    let (_dir, barrage) = start(
        "[smtp]\ncommand_timeout_secs = 2\ndata_timeout_secs = 2\n[fair]\nmin_data_rate = 500\n",
    );
    let slow_line = [b"MAIL FROM:<".as_slice(), &[b'x'; 600]].concat();

    // In a command line.
    let stream = connect_from(4, barrage.smtp).await;
    let cut = cut_while_trickling(stream, b"EHLO slow.example\r\n", &slow_line).await;
    assert!(
        cut == "EOF" || cut.starts_with("421 4.4.2 command line not complete in time"),
        "{cut}"
    );

    // Inside DATA.
    let stream = connect_from(4, barrage.smtp).await;
    let before = b"EHLO slow.example\r\nMAIL FROM:<slow@example.net>\r\n\
                   RCPT TO:<requests@registry.example>\r\nDATA\r\n";
    let cut = cut_while_trickling(stream, before, &[b'y'; 600]).await;
    assert!(
        cut == "EOF" || cut.starts_with("421 4.4.2 message data not received in time"),
        "{cut}"
    );

    newcomer_is_served(&barrage, 5, "<newcomer.2@example.net>").await;
    assert!(intake_counter(&barrage, "refused_command_deadline").await >= 1);
    assert!(intake_counter(&barrage, "refused_data_deadline").await >= 1);
}

#[tokio::test]
async fn a_junk_flood_is_closed_with_421() {
    let (_dir, barrage) = start("[fair]\nmax_junk_commands = 10\n");
    let mut junk = Client::from_stream(connect_from(6, barrage.smtp).await);
    assert_eq!(junk.reply().await.code, 220);
    assert_eq!(junk.command("EHLO junk.example").await.code, 250);
    let mut last = None;
    for n in 0..40 {
        let command = ["NOOP", "RSET", "VRFY postmaster", "HELP", "FOO"][n % 5];
        junk.send(format!("{command}\r\n").as_bytes()).await;
        match junk.try_reply().await {
            Some(reply) if reply.code == 421 => {
                last = Some((n, reply));
                break;
            }
            Some(_) => {}
            None => panic!("closed without a 421"),
        }
    }
    let (n, reply) = last.expect("the junk flood was never closed");
    assert_eq!(n, 10, "closed at the 11th junk command");
    assert!(
        reply.text.starts_with("4.7.0 too many junk commands"),
        "{reply:?}"
    );
    assert!(junk.try_reply().await.is_none(), "closed after the 421");
    assert_eq!(intake_counter(&barrage, "refused_junk_commands").await, 1);
    // A session that gets its messages through is not junk: its count starts again.
    let mut honest = Client::from_stream(connect_from(7, barrage.smtp).await);
    assert_eq!(honest.reply().await.code, 220);
    assert_eq!(honest.command("EHLO honest.example").await.code, 250);
    for round in 0..3 {
        for _ in 0..8 {
            assert_eq!(honest.command("NOOP").await.code, 250);
        }
        let id = format!("<honest.{round}@example.net>");
        let reply = honest
            .submit("honest@example.net", &request_mail(&id, "honest.fr"))
            .await;
        assert_eq!(reply.code, 250);
    }
}

#[tokio::test]
async fn the_message_rate_is_refused_at_mail_from_with_450() {
    let (_dir, barrage) = start("[fair]\nsmtp_message_rate = 2\n");
    let mut client = Client::from_stream(connect_from(8, barrage.smtp).await);
    assert_eq!(client.reply().await.code, 220);
    assert_eq!(client.command("EHLO fast.example").await.code, 250);
    for n in 0..2 {
        let id = format!("<fast.{n}@example.net>");
        let reply = client
            .submit("fast@example.net", &request_mail(&id, "fast.fr"))
            .await;
        assert_eq!(reply.code, 250);
    }
    let refused = client.command("MAIL FROM:<fast@example.net>").await;
    assert_eq!(refused.code, 450);
    assert!(
        refused
            .text
            .starts_with("4.7.1 too many messages from your address"),
        "{refused:?}"
    );
    assert!(refused.text.contains("rate"), "{refused:?}");
    // Another address has its own allowance, and the exempt 127.0.0.1 none at all.
    newcomer_is_served(&barrage, 9, "<newcomer.3@example.net>").await;
    let mut local = support::Client::greet(barrage.smtp).await;
    for n in 0..4 {
        let id = format!("<local.{n}@example.net>");
        let reply = local
            .submit("local@example.net", &request_mail(&id, "local.fr"))
            .await;
        assert_eq!(reply.code, 250, "127.0.0.1 is exempt");
    }
    assert_eq!(
        intake_counter(&barrage, "refused_client_message_rate").await,
        1
    );
}

#[tokio::test]
async fn under_stress_idle_sessions_of_the_busiest_address_are_closed_first() {
    // 10 slots, shedding above 50%: a hog allowed all 10 cannot keep them while others come.
    let (_dir, barrage) = start(
        "[smtp]\nmax_connections = 10\n[fair]\nsmtp_connections_per_client = 10\n\
         stress_high_water_percent = 50\n",
    );
    let mut hogs = Vec::new();
    for _ in 0..10 {
        let mut hog = Client::from_stream(connect_from(10, barrage.smtp).await);
        if hog.reply().await.code == 220 {
            hogs.push(hog);
        }
    }
    // A few newcomers from other addresses: each is greeted (retrying a bounded number of times
    // if it met the full table before a hog session was shed) and served.
    for n in 0..3u8 {
        let mut served = false;
        for _attempt in 0..20 {
            let mut client = Client::from_stream(connect_from(11 + n, barrage.smtp).await);
            if client.reply().await.code != 220 {
                continue;
            }
            assert_eq!(client.command("EHLO other.example").await.code, 250);
            let id = format!("<other.{n}@example.net>");
            let reply = client
                .submit("other@example.net", &request_mail(&id, "other.fr"))
                .await;
            assert_eq!(reply.code, 250);
            served = true;
            break;
        }
        assert!(served, "newcomer {n} was never served");
    }
    // Some hog sessions were told why they were closed.
    let mut shed = 0;
    for hog in &mut hogs {
        // A live session answers QUIT; a shed one had its 421 waiting before the end of stream.
        hog.send(b"QUIT\r\n").await;
        if let Some(reply) = hog.try_reply().await
            && reply.code == 421
        {
            assert!(reply.text.starts_with("4.7.0 server busy"), "{reply:?}");
            shed += 1;
        }
    }
    assert!(shed >= 1, "no idle hog session was shed");
    assert!(intake_counter(&barrage, "refused_stress_shed").await >= 1);
}

/// A web client bound to its own loopback address.
fn web_client(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source(n))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post_from(client: &reqwest::Client, web: SocketAddr, domain: &str) -> reqwest::Response {
    let body = serde_json::json!({"domain": domain, "email": "web@example.fr"});
    client
        .post(format!("http://{web}/requests"))
        .json(&body)
        .send()
        .await
        .expect("the web intake answers")
}

#[tokio::test]
async fn the_web_intake_caps_the_post_rate_of_each_address_with_503() {
    let (_dir, barrage) = start("[fair]\nweb_post_rate = 3\n");
    let web = barrage.web.unwrap();
    let hog = web_client(30);
    for n in 0..3 {
        let response = post_from(&hog, web, &format!("rate{n}.fr")).await;
        assert_eq!(response.status(), 202);
    }
    let refused = post_from(&hog, web, "rate3.fr").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "20", "a token every 20 s");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["reason"], "client_post_rate", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("3 a minute"),
        "{body}"
    );
    // Another address is served.
    let other = post_from(&web_client(31), web, "other.fr").await;
    assert_eq!(other.status(), 202);
    assert_eq!(
        intake_counter(&barrage, "refused_web_client_post_rate").await,
        1
    );
    assert!(
        metrics(&barrage)
            .await
            .contains("\nbarrage_refused_web_client_post_rate_total 1\n")
    );
}

#[tokio::test]
async fn the_web_intake_caps_the_requests_in_flight_of_each_address_with_503() {
    let (_dir, barrage) = start("[fair]\nweb_requests_per_client = 1\n");
    let web = barrage.web.unwrap();
    // One request in flight per address: a body that never finishes holds it. A probe may
    // overtake a stalled POST on its way in, and then the stalled one is refused itself: so
    // each round stalls one more POST (all kept open) before probing.
    let probe = web_client(32);
    let mut stalled = Vec::new();
    let mut in_flight = None;
    for n in 0..50 {
        let mut stream = connect_from(32, web).await;
        stream
            .write_all(
                b"POST /requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"domain\":",
            )
            .await
            .unwrap();
        stalled.push(stream);
        let response = post_from(&probe, web, &format!("probe{n}.fr")).await;
        if response.status() == 503 {
            in_flight = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = in_flight.expect("the second request in flight was never refused");
    assert_eq!(body["reason"], "client_requests_in_flight", "{body}");
    assert!(intake_counter(&barrage, "refused_web_client_requests").await >= 1);
    let other = post_from(&web_client(33), web, "other.fr").await;
    assert_eq!(other.status(), 202, "another address is served");
    drop(stalled);
}

#[test]
fn the_example_config_documents_the_fair_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/barrage.example.toml");
    let example = barrage::config::Config::load(std::path::Path::new(path)).unwrap();
    let defaults = barrage::config::Config::default();
    assert_eq!(
        format!("{:?}", example.fair),
        format!("{:?}", defaults.fair)
    );
    // On by default, and only this machine's own addresses exempt.
    let limits = defaults.smtp_limits();
    assert!(limits.clients.max_connections > 0 && limits.clients.message_rate > 0);
    let exempt: Vec<String> = limits
        .clients
        .exempt
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(exempt, ["127.0.0.1/32", "::1/128"]);
}
