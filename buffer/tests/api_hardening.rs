//! The hardened handover API (contract: Handover API): the token from a file or the environment,
//! `Bearer` in any case, an empty token refused at start and one on the command line warned
//! about, loopback `Host` names only without a token, `/metrics` behind the token, a header
//! deadline, a connection limit, pages bounded by bytes, and every error as JSON.

mod prod_support;
mod support;

use std::time::Duration;

use prod_support::{api_get, config, get, post_cursor, refused_start, start_logged};
use support::{Barrage, Client, request_mail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "0123456789abcdef-token";

#[tokio::test]
async fn the_token_comes_from_a_file_and_guards_v1_and_metrics() {
    let root = tempfile::tempdir().unwrap();
    let token_file = root.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (barrage, log) = start_logged(
        &root.path().join("data"),
        &["--api-token-file", token_file.to_str().unwrap()],
    );
    let host = barrage.http.to_string();
    for path in ["/v1/stats", "/v1/requests", "/metrics"] {
        let answer = get(barrage.http, &host, path, "").await;
        assert_eq!(answer.status, 401, "{path}: {answer:?}");
        assert_eq!(answer.json()["error"], "missing or wrong bearer token");
        let wrong = get(barrage.http, &host, path, "Authorization: Bearer wrong\r\n").await;
        assert_eq!(wrong.status, 401, "{path}");
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let header = format!("Authorization: {scheme} {TOKEN}\r\n");
            let answer = get(barrage.http, &host, path, &header).await;
            assert_eq!(answer.status, 200, "{path} with {scheme}: {answer:?}");
        }
    }
    // With a token, any Host passes: the token is what protects the API.
    let header = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(
        get(barrage.http, "evil.example", "/v1/stats", &header)
            .await
            .status,
        200
    );
    assert_eq!(api_get(&barrage, "/healthz").await.status, 200);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.contains("visible") && !text.contains("ps`"), "{text}");
}

#[tokio::test]
async fn an_empty_token_is_refused_and_one_on_the_command_line_is_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let refusal = refused_start(&dir, &[], &[("BARRAGE_API_TOKEN", "")]);
    assert!(refusal.contains("the API token is empty"), "{refusal}");
    let (barrage, log) = start_logged(&dir, &["--api-token", TOKEN]);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("every local user can read it with `ps`"),
        "{text}"
    );
    assert_eq!(api_get(&barrage, "/v1/stats").await.status, 401);
    drop(barrage);
    let barrage = Barrage::start_with(&dir, &[], |c| {
        c.env("BARRAGE_API_TOKEN", TOKEN);
    });
    assert_eq!(api_get(&barrage, "/v1/stats").await.status, 401);
}

#[tokio::test]
async fn without_a_token_only_loopback_host_names_are_answered() {
    let root = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(&root.path().join("data"), &[]);
    let port = barrage.http.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".into(),
    ] {
        assert_eq!(
            get(barrage.http, &host, "/v1/stats", "").await.status,
            200,
            "{host}"
        );
    }
    for host in [format!("rebound.example:{port}"), "attacker.test".into()] {
        let answer = get(barrage.http, &host, "/v1/stats", "").await;
        assert_eq!(answer.status, 403, "{host}: {answer:?}");
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("loopback")
        );
    }
}

#[tokio::test]
async fn client_mistakes_get_json_4xx() {
    let root = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(&root.path().join("data"), &[]);
    for (path, status) in [
        ("/v1/requests?after=x", 400),
        ("/v1/requests?after=-1", 400),
        ("/v1/requests?bogus=1", 400),
        ("/v1/requests?after=99999999999999999999", 400),
        ("/v1/nothing", 404),
        ("/v1/cursor", 405),
    ] {
        let answer = api_get(&barrage, path).await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{path}: {answer:?}");
    }
    for (kind, body, status) in [
        ("", "{\"through\": 0}", 415),
        ("text/plain", "{\"through\": 0}", 415),
        ("application/json", "not json", 400),
        ("application/json", "{\"through\": \"a\"}", 422),
        ("application/json", "{\"through\": 0, \"through\": 0}", 422),
        ("application/json", "{\"through\": 0, \"more\": 1}", 422),
        ("application/json", "{\"through\": 5}", 422),
    ] {
        let answer = post_cursor(&barrage, kind, body).await;
        assert_eq!(answer.status, status, "{kind} {body}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{body}: {answer:?}");
    }
    let ok = post_cursor(
        &barrage,
        "application/json; charset=utf-8",
        "{\"through\": 0}",
    )
    .await;
    assert_eq!((ok.status, ok.json()["cursor"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn a_silent_client_is_cut_off_and_the_connections_are_bounded() {
    let root = tempfile::tempdir().unwrap();
    let file = config(
        &root.path().join("x"),
        "api",
        "[http]\nmax_connections = 2\nheader_timeout_secs = 2\n",
    );
    let barrage = Barrage::start(
        &root.path().join("data"),
        &["--config", file.to_str().unwrap()],
    );
    let mut partial = TcpStream::connect(barrage.http).await.unwrap();
    partial
        .write_all(b"GET /v1/stats HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut second = TcpStream::connect(barrage.http).await.unwrap();
    second
        .write_all(b"GET /v1/stats HTTP/1.1\r\n")
        .await
        .unwrap();
    // Both slots are taken by clients that never finish their headers.
    let answer = api_get(&barrage, "/v1/stats").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("too many connections")
    );
    // The header deadline closes the silent ones (the bound is only so a hang fails).
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), partial.read_to_end(&mut rest))
        .await
        .expect("the partial request is closed by the header deadline")
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), second.read_to_end(&mut rest))
        .await
        .expect("the partial request is closed by the header deadline")
        .unwrap();
    // The permits come back once the closed connections' tasks end.
    let mut status = 0;
    for _ in 0..1000 {
        status = api_get(&barrage, "/v1/stats").await.status;
        if status == 200 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_raw_page_is_bounded_by_bytes_with_at_least_one_row() {
    let root = tempfile::tempdir().unwrap();
    let file = config(
        &root.path().join("x"),
        "pages",
        "[storage]\nmax_page_bytes = 65536\n",
    );
    let barrage = Barrage::start(
        &root.path().join("data"),
        &["--config", file.to_str().unwrap()],
    );
    let mut client = Client::greet(barrage.smtp).await;
    for n in 0..6 {
        let mut mail = request_mail(&format!("<raw-{n}@pages.test>"), "example.fr");
        while mail.len() < 40_000 {
            mail.push_str(&format!("{}\r\n", "y".repeat(98)));
        }
        assert_eq!(client.submit("a@client.example", &mail).await.code, 250);
    }
    let mut after = 0;
    let mut pages = Vec::new();
    while after < 6 {
        let page = barrage
            .get(&format!("/v1/requests?after={after}&limit=1000&raw=true"))
            .await;
        let rows = page["requests"].as_array().unwrap().clone();
        assert!(!rows.is_empty(), "a page has at least one row");
        after = rows.last().unwrap()["seq"].as_u64().unwrap();
        assert!(
            rows.iter()
                .all(|r| r["raw"].as_str().unwrap().len() >= 40_000)
        );
        pages.push(rows.len());
    }
    assert_eq!(pages, vec![2, 2, 2], "40 KB rows in 64 KiB pages");
    let small = barrage.get("/v1/requests?after=0&limit=1000").await;
    assert_eq!(
        small["requests"].as_array().unwrap().len(),
        6,
        "rows without raw are small"
    );
}
