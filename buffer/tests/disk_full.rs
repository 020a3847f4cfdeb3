//! A real write failure: barrage runs with a small RLIMIT_FSIZE, so its journal writes fail with
//! EFBIG once the file limit is reached. Every such request must get 451, never 250, nothing
//! answered 451 may be stored, and barrage must serve again once the limit is lifted.

mod support;

use support::{Barrage, Client, request_mail};

const LIMIT_BYTES: u64 = 384 * 1024;

#[tokio::test]
async fn full_disk_answers_451_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start_with_file_size_limit(dir.path(), LIMIT_BYTES);
    let padding = "x".repeat(900);
    let mut c = Client::greet(barrage.smtp).await;
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for n in 0..2000 {
        let id = format!("<full{n}@disk.test>");
        let mail = format!(
            "{}note: {padding}\r\nnote2: {padding}\r\n",
            request_mail(&id, "plein.fr")
        );
        let reply = c.submit("a@b.example", &mail).await;
        match reply.code {
            250 => accepted.push(id),
            451 => {
                assert!(reply.text.starts_with("4.3.0"), "{reply:?}");
                refused.push(id);
                if refused.len() >= 5 {
                    break;
                }
            }
            other => panic!("unexpected reply {other}: {reply:?}"),
        }
    }
    assert!(!refused.is_empty(), "the file size limit was never reached");
    assert!(!accepted.is_empty());

    // Space returns: the same process serves again.
    barrage.lift_file_size_limit();
    let reply = c
        .submit(
            "a@b.example",
            &request_mail("<after@disk.test>", "retour.fr"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");

    let stored: Vec<String> = barrage
        .all_requests()
        .await
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_string())
        .collect();
    for (i, id) in stored.iter().enumerate() {
        let row_seq = i + 1;
        assert!(
            !refused.contains(id),
            "{id} was answered 451 but stored as seq {row_seq}"
        );
    }
    for id in &accepted {
        assert!(
            stored.contains(id),
            "{id} was answered 250 but is not stored"
        );
    }
    assert_eq!(stored.last().map(String::as_str), Some("<after@disk.test>"));
    let stats = barrage.get("/v1/stats").await;
    assert!(stats["write_failures"].as_u64().unwrap() >= 1);
    assert_eq!(
        stats["accepted"].as_u64(),
        Some(stored.len() as u64),
        "gap-free after failures"
    );
}
