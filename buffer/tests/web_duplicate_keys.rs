//! A JSON body that gives a key twice is refused by the web intake, naming the key, instead of
//! one of the two values being taken silently; nothing is stored. Real binary, real HTTP.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::Barrage;

async fn post(barrage: &Barrage, body: &str) -> (u16, Value) {
    let web = barrage.web.expect("endpoints.json names the web intake");
    let response = reqwest::Client::new()
        .post(format!("http://{web}/requests"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the web intake answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

#[tokio::test]
async fn a_key_given_twice_is_named_in_a_422() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    for (body, twice) in [
        (
            r#"{"domain": "a.fr", "domain": "b.fr", "email": "x@y.fr"}"#,
            "domain",
        ),
        (
            r#"{"domain": "a.fr", "email": "x@y.fr", "email": "z@y.fr"}"#,
            "email",
        ),
        (
            r#"{"domain": "a.fr", "email": "x@y.fr", "Holder": "A", "holder": "B"}"#,
            "holder",
        ),
    ] {
        let (status, answer) = post(&barrage, body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["fields"][twice], "given twice", "{body}: {answer}");
    }
    let (status, answer) = post(&barrage, r#"["not", "an", "object"]"#).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("object"),
        "{answer}"
    );
    assert_eq!(barrage.all_requests().await.len(), 0, "nothing stored");
    // One of each is taken as before.
    let (status, answer) = post(&barrage, r#"{"domain": "a.fr", "email": "x@y.fr"}"#).await;
    assert_eq!(status, 202, "{answer}");
}
