//! `barrage audit --journal URL` on a real PostgreSQL journal: it passes after real requests,
//! and names the first bad seq of a row edited with SQL, and of a tail deleted behind the
//! counter (contract: Provable order).

mod postgres_support;
mod support;

use std::process::Command;

use postgres_support::{database, node};
use support::{Client, output_tied, request_mail};

fn audit(url: &str) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_barrage"));
    command.args(["audit", "--journal", url]);
    let output = output_tied(command);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_passes_then_names_an_edited_row_and_a_deleted_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, url) = database(&dir.path().join("pg"));
    let a = node(&dir.path().join("a"), &url, &[]);
    let mut client = Client::greet(a.smtp).await;
    for n in 0..5 {
        let mail = request_mail(&format!("<{n}@audit.test>"), "audit.fr");
        assert_eq!(client.submit("c@example.net", &mail).await.code, 250);
    }
    let (ok, text) = audit(&url);
    assert!(ok, "{text}");
    assert!(text.contains("5 requests gap-free"), "{text}");

    cluster
        .psql(
            "barrage",
            "UPDATE requests SET domain = 'stolen.fr' WHERE seq = 3",
        )
        .unwrap();
    let (ok, text) = audit(&url);
    assert!(!ok, "an edited row fails the audit: {text}");
    assert!(text.contains("audit failed at seq 3"), "{text}");
    assert!(text.contains("chain link does not verify"), "{text}");
    cluster
        .psql(
            "barrage",
            "UPDATE requests SET domain = 'audit.fr' WHERE seq = 3",
        )
        .unwrap();
    assert!(audit(&url).0, "restored, it passes again");

    cluster
        .psql("barrage", "DELETE FROM requests WHERE seq = 5")
        .unwrap();
    let (ok, text) = audit(&url);
    assert!(!ok, "a deleted tail fails the audit: {text}");
    assert!(text.contains("audit failed at seq 5"), "{text}");
    assert!(text.contains("counter row says seq 5"), "{text}");
}
