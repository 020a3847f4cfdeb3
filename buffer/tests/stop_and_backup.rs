//! Stop and backup (contract: Durability): a SIGTERM checkpoints the WAL so `barrage.db` alone
//! holds every request, and `barrage backup` copies a consistent journal while barrage serves.

mod prod_support;
mod support;

use std::path::Path;
use std::process::Command;

use support::{Barrage, Client, output_tied, request_mail};

fn rows(db: &Path) -> Vec<(u64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement = conn
        .prepare("SELECT seq, message_id FROM requests ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn submit(addr: std::net::SocketAddr, tag: String, count: u32) -> Vec<u64> {
    let mut client = Client::greet(addr).await;
    let mut tickets = Vec::new();
    for n in 0..count {
        let mail = request_mail(&format!("<{tag}-{n}@stop.test>"), "example.fr");
        let reply = client.submit("a@client.example", &mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        tickets.push(reply.ticket().unwrap());
    }
    tickets
}

#[tokio::test]
async fn after_sigterm_barrage_db_alone_is_complete() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let mut barrage = Barrage::start(&dir, &[]);
    submit(barrage.smtp, "t".into(), 25).await;
    assert!(barrage.terminate().success());
    let wal = dir.join("barrage.db-wal");
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len, 0, "the WAL is empty after a clean stop");
    let alone = root.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(dir.join("barrage.db"), alone.join("barrage.db")).unwrap();
    let copied = rows(&alone.join("barrage.db"));
    assert_eq!(copied.len(), 25);
    assert!(
        copied
            .iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == i as u64 + 1)
    );
}

#[tokio::test]
async fn a_backup_taken_while_serving_opens_alone_with_every_row() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let barrage = Barrage::start(&dir, &[]);
    let before = submit(barrage.smtp, "before".into(), 20).await;
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(submit(barrage.smtp, format!("during{w}"), 30)))
        .collect();
    let out = root.path().join("copy.db");
    let mut command = Command::new(env!("CARGO_BIN_EXE_barrage"));
    command.arg("backup").arg("--data-dir").arg(&dir).arg(&out);
    let backup = tokio::task::spawn_blocking(move || output_tied(command))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&backup.stdout).into_owned();
    assert!(backup.status.success(), "{backup:?}");
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(!Path::new(&format!("{}-wal", out.display())).exists());
    let copied = rows(&out);
    assert!(
        said.contains(&format!("({} requests)", copied.len())),
        "{said}"
    );
    assert!(
        copied.len() >= before.len(),
        "every request answered before the backup is in it"
    );
    let live = barrage.all_requests().await;
    for (n, (seq, message_id)) in copied.iter().enumerate() {
        assert_eq!(*seq, n as u64 + 1, "the copy is gap-free");
        assert_eq!(live[n]["message_id"].as_str(), Some(message_id.as_str()));
    }
    let again = output_tied({
        let mut command = Command::new(env!("CARGO_BIN_EXE_barrage"));
        command.arg("backup").arg("--data-dir").arg(&dir).arg(&out);
        command
    });
    assert!(!again.status.success(), "a backup never overwrites");
}
