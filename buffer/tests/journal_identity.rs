//! A journal that cannot silently go backwards (contract: Durability, Handover API): the data dir
//! is private, the journal has an id served by the API, and a journal found behind its
//! high-water mark (a deleted WAL) or behind the registry's cursor (an old copy restored) is
//! refused at start with a message saying what happened and how to recover.

mod prod_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use prod_support::{api_get, refused_start, start_logged};
use support::{Barrage, Client, request_mail};

async fn submit(barrage: &Barrage, first: u32, count: u32) -> u64 {
    let mut client = Client::greet(barrage.smtp).await;
    let mut last = 0;
    for n in first..first + count {
        let mail = request_mail(&format!("<id-{n}@identity.test>"), "example.fr");
        let reply = client.submit("a@client.example", &mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        last = reply.ticket().unwrap();
    }
    last
}

/// Waits until the data dir's high-water mark says `seq` (it may lag the journal).
async fn wait_for_mark(dir: &Path, seq: u64) {
    let path = dir.join("high-water-mark.json");
    for _ in 0..1000 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mark: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if mark["seq"].as_u64() == Some(seq) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} never reached seq {seq}", path.display());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_dir_is_private_and_an_open_one_is_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested/data");
    let mut barrage = Barrage::start(&dir, &[]);
    submit(&barrage, 0, 2).await;
    assert_eq!(mode(&dir), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        names.push(entry.file_name().to_string_lossy().into_owned());
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    for wanted in ["barrage.db", "barrage.db-wal", "barrage.db-shm", "lock"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n == "high-water-mark.json"),
        "{names:?}"
    );
    barrage.terminate();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.join("barrage.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (barrage, log) = start_logged(&dir, &[]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("open to other users (mode 0755)"), "{text}");
    assert!(
        text.contains(&format!("chmod 600 {}", db.display())),
        "{text}"
    );
    drop(barrage);
}

#[tokio::test]
async fn the_journal_id_is_served_and_after_beyond_the_last_seq_is_409() {
    let root = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(&root.path().join("data"), &[]);
    submit(&barrage, 0, 3).await;
    let stats = barrage.get("/v1/stats").await;
    let id = stats["journal_id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let page = barrage.get("/v1/requests?after=1").await;
    assert_eq!(page["journal_id"], id.as_str());
    assert_eq!(page["last_seq"], 3);
    assert_eq!(page["requests"].as_array().unwrap().len(), 2);
    assert_eq!(
        barrage.get("/v1/requests?after=3").await["requests"],
        serde_json::json!([])
    );
    for after in ["4", "9223372036854775808", "18446744073709551615"] {
        let answer = api_get(&barrage, &format!("/v1/requests?after={after}")).await;
        assert_eq!(answer.status, 409, "after={after}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["last_seq"], 3, "{body}");
        assert_eq!(body["journal_id"], id.as_str());
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("beyond the last accepted seq 3")
        );
    }
}

/// SIGKILL while a reader pins the WAL (so the last commits live only in the WAL), then the WAL
/// is deleted: the journal is behind its high-water mark, and restarting it would give tickets
/// 4… to other requests. barrage refuses.
#[tokio::test]
async fn a_journal_that_lost_its_wal_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let mut barrage = Barrage::start(&dir, &[]);
    submit(&barrage, 0, 3).await;
    let reader = rusqlite::Connection::open(dir.join("barrage.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let pinned: u64 = reader
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pinned, 3);
    assert_eq!(submit(&barrage, 3, 5).await, 8);
    // The mark may lag the journal (its own thread writes it): the loss is the WAL's, so wait
    // until the mark has seen seq 8, then kill.
    wait_for_mark(&dir, 8).await;
    barrage.kill();
    std::fs::remove_file(dir.join("barrage.db-wal")).unwrap();
    let _ = std::fs::remove_file(dir.join("barrage.db-shm"));
    // Closing the reader would checkpoint whatever it still sees: it must not touch the file.
    std::mem::forget(reader);

    let refusal = refused_start(&dir, &[], &[]);
    assert!(refusal.contains("refuses to start"), "{refusal}");
    assert!(
        refusal.contains("committed requests are missing")
            || refusal.contains("replaced or recreated"),
        "{refusal}"
    );
    assert!(refusal.contains("Restore"), "{refusal}");
    assert!(refusal.contains("high-water-mark.json"), "{refusal}");
}

/// The registry took everything through seq 5; then an older copy of the journal (seq 2) is put
/// back. barrage refuses to start, naming the cursor.
#[tokio::test]
async fn a_journal_behind_the_registry_cursor_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let mut barrage = Barrage::start(&dir, &[]);
    submit(&barrage, 0, 2).await;
    let old = root.path().join("old.db");
    let backup = support::output_tied({
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_barrage"));
        command.arg("backup").arg("--data-dir").arg(&dir).arg(&old);
        command
    });
    assert!(backup.status.success(), "{backup:?}");
    submit(&barrage, 2, 3).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/cursor", barrage.http);
    let answer = client
        .post(&url)
        .json(&serde_json::json!({"through": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(barrage.terminate().success());

    std::fs::copy(&old, dir.join("barrage.db")).unwrap();
    let _ = std::fs::remove_file(dir.join("barrage.db-wal"));
    let _ = std::fs::remove_file(dir.join("barrage.db-shm"));
    let refusal = refused_start(&dir, &[], &[]);
    assert!(refusal.contains("ends at seq 2"), "{refusal}");
    assert!(refusal.contains("through seq 5 (its cursor)"), "{refusal}");
    assert!(
        refusal.contains("tickets after 2 will be given again"),
        "{refusal}"
    );
}

/// A relative data dir is another journal when barrage starts elsewhere: the log names it whole.
#[tokio::test]
async fn a_relative_data_dir_is_logged_as_an_absolute_path() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("barrage.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_barrage"));
    command
        .args(["serve", "--smtp", "127.0.0.1:0", "--web", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0", "--data-dir", "relative-data"])
        .current_dir(root.path())
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = support::spawn_tied(command);
    let dir = root.path().join("relative-data");
    let waited =
        barrage::endpoints::Endpoints::wait(&dir, std::time::Duration::from_secs(120), || Ok(()));
    let _ = child.kill();
    let _ = child.wait();
    waited.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let absolute = std::fs::canonicalize(&dir).unwrap();
    assert!(absolute.is_absolute());
    assert!(
        text.contains(&format!("in {}: last seq 0", absolute.display())),
        "{text}"
    );
}
