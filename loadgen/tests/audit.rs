//! `landrush audit` against the real barrage (contract: Provable order): a clean load passes with
//! its checkpoint; a forged checkpoint signature is refused; a row edited in SQLite is named by
//! its seq; a tail rewritten and re-chained consistently (which `barrage audit` cannot see) is
//! caught against a checkpoint issued before the rewrite.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use barrage::endpoints::Endpoints;
use support::output_within;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(300);

/// barrage (landrush's built-in one) on loopback port 0; killed when dropped, and by the kernel
/// when the test thread that started it ends.
struct Buffer {
    child: Child,
    smtp: SocketAddr,
    http: SocketAddr,
}

impl Buffer {
    fn start(dir: &Path) -> Buffer {
        use std::os::unix::process::CommandExt;
        Endpoints::remove(dir);
        let mut command = Command::new(env!("CARGO_BIN_EXE_landrush"));
        command
            .args([
                "buffer",
                "serve",
                "--smtp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .args(["--no-web", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        // SAFETY: only an async-signal-safe call between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        let mut child = command.spawn().expect("barrage starts");
        let endpoints = Endpoints::wait(dir, LIMIT, || match child.try_wait()? {
            Some(status) => anyhow::bail!("barrage exited before listening: {status}"),
            None => Ok(()),
        })
        .unwrap();
        Buffer {
            child,
            smtp: endpoints.smtp,
            http: endpoints.http,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        assert!(self.child.wait().unwrap().success());
    }

    async fn get(&self, path: &str) -> String {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one whole SMTP reply; returns its code.
async fn reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).await.unwrap() > 0,
            "server closed"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            return line[..3].parse().unwrap();
        }
    }
}

async fn load(addr: SocketAddr, count: u32) {
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut reader = BufReader::new(read);
    assert_eq!(reply(&mut reader).await, 220);
    write.write_all(b"EHLO client.example\r\n").await.unwrap();
    assert_eq!(reply(&mut reader).await, 250);
    for n in 0..count {
        // Pipelined (barrage offers PIPELINING): three commands, three replies.
        let envelope =
            b"MAIL FROM:<a@client.example>\r\nRCPT TO:<requests@registry.example>\r\nDATA\r\n";
        write.write_all(envelope).await.unwrap();
        assert_eq!(reply(&mut reader).await, 250);
        assert_eq!(reply(&mut reader).await, 250);
        assert_eq!(reply(&mut reader).await, 354);
        let body = format!(
            "From: <client@example.net>\r\nTo: <requests@registry.example>\r\n\
             Message-ID: <{n}@audit.test>\r\nSubject: request\r\n\r\n\
             domain: d{n}.fr\r\nholder: Jeanne Durand\r\ncontact: client@example.net\r\n.\r\n"
        );
        write.write_all(body.as_bytes()).await.unwrap();
        assert_eq!(reply(&mut reader).await, 250);
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
}

/// Runs `landrush audit` (or `landrush buffer audit` with `barrage`) and returns (passed, output).
fn run(args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_landrush"));
    command.args(args);
    let out = output_within(command, LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn audit(url: &str, key: &Path, checkpoints: &Path) -> (bool, String) {
    let (key, checkpoints) = (key.to_str().unwrap(), checkpoints.to_str().unwrap());
    run(&[
        "audit",
        "--handover",
        url,
        "--public-key",
        key,
        "--checkpoints",
        checkpoints,
    ])
}

fn sql(dir: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(dir.join("barrage.db")).unwrap();
    conn.execute_batch(statements).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_catch_a_rewritten_tail_and_forged_signatures() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let file = |name: &str| -> PathBuf { root.path().join(name) };
    let buffer = Buffer::start(&dir);
    load(buffer.smtp, 50).await;
    std::fs::write(file("key.json"), buffer.get("/v1/public-key").await).unwrap();
    let checkpoint = buffer.get("/v1/checkpoint").await;
    std::fs::write(file("cp.jsonl"), format!("{checkpoint}\n")).unwrap();
    // The receipt an ack of seq 50 carries is the signed checkpoint of seq 50, in a header.
    let receipt: contract::chain::Checkpoint = serde_json::from_str(&checkpoint).unwrap();
    std::fs::create_dir(file("receipts")).unwrap();
    let header = contract::chain::receipt_header(&receipt).replace("; ", ";\r\n ");
    let mail = format!("From: r@registry.test\r\nX-Barrage-Receipt: {header}\r\n\r\nbody\r\n");
    std::fs::write(file("receipts").join("50.eml"), mail).unwrap();
    let url = buffer.url();
    let (ok, text) = tokio::task::spawn_blocking({
        let (key, cp) = (file("key.json"), file("cp.jsonl"));
        move || audit(&url, &key, &cp)
    })
    .await
    .unwrap();
    assert!(ok && text.contains("checkpoints verified: 1"), "{text}");
    assert!(text.contains("50 rows"), "{text}");

    let mut forged: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
    let signature = forged["signature"].as_str().unwrap().to_string();
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    forged["signature"] = format!("{flipped}{}", &signature[1..]).into();
    std::fs::write(file("forged.jsonl"), format!("{forged}\n")).unwrap();
    let url = buffer.url();
    let (ok, text) = tokio::task::spawn_blocking({
        let (key, cp) = (file("key.json"), file("forged.jsonl"));
        move || audit(&url, &key, &cp)
    })
    .await
    .unwrap();
    assert!(
        !ok && text.contains("seq 50: a checkpoint's (or receipt's) signature does not verify"),
        "{text}"
    );
    buffer.stop();

    // The operator rewrites the tail and re-chains it: barrage's own migration chains every
    // row whose chain is missing, consistently. Only a checkpoint from before can tell.
    sql(
        &dir,
        "UPDATE requests SET domain = 'paris.fr' WHERE seq = 45;
         UPDATE requests SET chain = NULL WHERE seq >= 45;",
    );
    let buffer = Buffer::start(&dir);
    let data = dir.to_str().unwrap().to_string();
    let url = buffer.url();
    let (inside, without, with, receipts) = tokio::task::spawn_blocking({
        let (key, cp, empty) = (file("key.json"), file("cp.jsonl"), file("none.jsonl"));
        let receipts = file("receipts");
        std::fs::write(&empty, "").unwrap();
        move || {
            let args = [key.to_str().unwrap(), receipts.to_str().unwrap()];
            (
                run(&["buffer", "audit", "--data-dir", &data]),
                audit(&url, &key, &empty),
                audit(&url, &key, &cp),
                run(&[
                    "audit",
                    "--handover",
                    &url,
                    "--public-key",
                    args[0],
                    "--receipts",
                    args[1],
                ]),
            )
        }
    })
    .await
    .unwrap();
    assert!(
        !receipts.0
            && receipts
                .1
                .contains("seq 50: the signed checkpoint (or receipt)"),
        "{}",
        receipts.1
    );
    assert!(
        inside.0,
        "the chain alone cannot reveal a re-chained tail: {}",
        inside.1
    );
    assert!(
        without.0,
        "nor can the outside audit without a checkpoint: {}",
        without.1
    );
    assert!(!with.0, "{}", with.1);
    assert!(
        with.1
            .contains("seq 50: the signed checkpoint (or receipt) committed to chain"),
        "{}",
        with.1
    );
    buffer.stop();

    // An edit without re-chaining is named by its seq.
    sql(
        &dir,
        "UPDATE requests SET domain = 'lyon.fr' WHERE seq = 20",
    );
    let buffer = Buffer::start(&dir);
    let url = buffer.url();
    let (ok, text) = tokio::task::spawn_blocking({
        let (key, empty) = (file("key.json"), file("none.jsonl"));
        move || audit(&url, &key, &empty)
    })
    .await
    .unwrap();
    assert!(
        !ok && text.contains("seq 20: the served chain does not verify"),
        "{text}"
    );
}
