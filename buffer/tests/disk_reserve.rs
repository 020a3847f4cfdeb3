//! The disk reserve (contract: Refusals): on a small real filesystem (a tmpfs mounted for the
//! test, so this needs root) barrage, filled with requests, answers `452 4.3.1` at MAIL FROM
//! before any write fails with `451`, the web intake answers `507`, `/healthz/ready` says why it
//! is not ready, the refusals are counted — and every accepted request is still there.

mod prod_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use prod_support::{api_get, config};
use support::{Barrage, Client, request_mail};

/// The filesystem's size: 40 requests of 60 KB leave the reserve behind.
const FS_MIB: u64 = 16;

/// A tmpfs of `FS_MIB` mounted on a folder of the test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path) -> Option<SmallFs> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={FS_MIB}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| SmallFs(at.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A request mail padded to about `bytes`.
fn big_request(n: u32, bytes: usize) -> String {
    let mut mail = request_mail(&format!("<big-{n}@disk.test>"), "example.fr");
    let line = format!("{}\r\n", "x".repeat(98));
    while mail.len() < bytes {
        mail.push_str(&line);
    }
    mail
}

/// Sends requests on one connection until a transaction is refused; returns the tickets
/// accepted and the refusal (`MAIL FROM` or end-of-data reply).
async fn fill(barrage: &Barrage) -> (Vec<u64>, support::Reply, &'static str) {
    let mut client = Client::greet(barrage.smtp).await;
    let mut tickets = Vec::new();
    for n in 0..10_000 {
        let mail = client.command("MAIL FROM:<a@client.example>").await;
        if mail.code != 250 {
            return (tickets, mail, "MAIL FROM");
        }
        assert_eq!(
            client.command("RCPT TO:<r@registry.example>").await.code,
            250
        );
        assert_eq!(client.command("DATA").await.code, 354);
        client.send(big_request(n, 60_000).as_bytes()).await;
        let reply = client.command(".").await;
        if reply.code != 250 {
            return (tickets, reply, "end of data");
        }
        tickets.push(reply.ticket().unwrap());
    }
    panic!(
        "{} requests accepted on a {FS_MIB} MiB filesystem",
        tickets.len()
    );
}

#[tokio::test]
async fn a_filling_disk_gets_452_before_any_451_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(&root.path().join("small")) else {
        eprintln!("skipped: cannot mount a tmpfs (this test needs root)");
        return;
    };
    let dir = fs.0.join("data");
    let file = config(
        &root.path().join("x"),
        "reserve",
        "[storage]\nmin_free_bytes = 6291456\nmin_free_percent = 50.0\n",
    );
    let barrage = Barrage::start(&dir, &["--config", file.to_str().unwrap()]);
    assert_eq!(api_get(&barrage, "/healthz/ready").await.status, 200);
    let (tickets, refusal, at) = fill(&barrage).await;
    assert_eq!((refusal.code, at), (452, "MAIL FROM"), "{refusal:?}");
    assert!(
        refusal
            .text
            .starts_with("4.3.1 request not taken: the buffer's disk is nearly full")
    );
    assert!(
        tickets.len() >= 20,
        "only {} accepted before the reserve",
        tickets.len()
    );

    let web = barrage.web.unwrap();
    let post = format!(
        "POST /requests HTTP/1.1\r\nHost: {web}\r\nContent-Type: application/json\r\n\
         Content-Length: 47\r\nConnection: close\r\n\r\n{{\"domain\":\"web.fr\",\"email\":\"w@client.example\"}}"
    );
    let answer = prod_support::exchange(web, &post).await;
    assert_eq!(answer.status, 507, "{answer:?}");
    let ready = api_get(&barrage, "/healthz/ready").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        ready.json()["error"]
            .as_str()
            .unwrap()
            .contains("disk is nearly full")
    );
    assert_eq!(api_get(&barrage, "/healthz").await.status, 200);

    let stats = barrage.get("/v1/stats").await;
    // One at MAIL FROM, one on the web; /healthz/ready asks without counting.
    assert_eq!(stats["refused_disk_reserve"], 2, "{stats}");
    assert_eq!(stats["write_failures"], 0, "{stats}");
    let metrics = api_get(&barrage, "/metrics").await.body;
    assert!(
        metrics.contains("barrage_refused_disk_reserve_total "),
        "{metrics}"
    );
    let stored = barrage.all_requests().await;
    let seqs: Vec<u64> = stored.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs, tickets,
        "every accepted request is stored, in ticket order"
    );
    drop(barrage);
}

#[tokio::test]
async fn a_full_queue_gets_452_until_the_registry_takes_requests() {
    let root = tempfile::tempdir().unwrap();
    let file = config(
        &root.path().join("x"),
        "queue",
        "[storage]\nmax_queue_depth = 2\n",
    );
    let barrage = Barrage::start(
        &root.path().join("data"),
        &["--config", file.to_str().unwrap()],
    );
    let mut client = Client::greet(barrage.smtp).await;
    for n in 0..2 {
        let mail = request_mail(&format!("<q-{n}@queue.test>"), "example.fr");
        assert_eq!(client.submit("a@client.example", &mail).await.code, 250);
    }
    let refused = client.command("MAIL FROM:<a@client.example>").await;
    assert_eq!(refused.code, 452, "{refused:?}");
    assert!(
        refused
            .text
            .contains("2 requests are waiting to be handed over"),
        "{refused:?}"
    );
    let answer = prod_support::post_cursor(&barrage, "application/json", "{\"through\": 1}").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mail = request_mail("<q-2@queue.test>", "example.fr");
    assert_eq!(
        client.submit("a@client.example", &mail).await.ticket(),
        Some(3)
    );
    let stats = barrage.get("/v1/stats").await;
    assert_eq!(stats["refused_queue_full"], 1, "{stats}");
}

/// A journal whose writes fail (RLIMIT_FSIZE: EFBIG) is not ready, and ready again once a write
/// succeeds.
#[tokio::test]
async fn a_journal_that_cannot_write_is_not_ready_until_it_writes_again() {
    let root = tempfile::tempdir().unwrap();
    let barrage = Barrage::start_with_file_size_limit(&root.path().join("data"), 384 * 1024);
    let padding = "x".repeat(900);
    let mut client = Client::greet(barrage.smtp).await;
    let mut refused = None;
    for n in 0..2000 {
        let base = request_mail(&format!("<fsize{n}@disk.test>"), "plein.fr");
        let mail = format!("{base}note: {padding}\r\nnote2: {padding}\r\n");
        let reply = client.submit("a@b.example", &mail).await;
        if reply.code != 250 {
            refused = Some(reply);
            break;
        }
    }
    assert_eq!(
        refused.map(|r| r.code),
        Some(451),
        "the file size limit was reached"
    );
    let ready = api_get(&barrage, "/healthz/ready").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        ready.json()["error"]
            .as_str()
            .unwrap()
            .contains("cannot write")
    );
    barrage.lift_file_size_limit();
    let reply = client
        .submit(
            "a@b.example",
            &request_mail("<back@disk.test>", "retour.fr"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(api_get(&barrage, "/healthz/ready").await.status, 200);
}
