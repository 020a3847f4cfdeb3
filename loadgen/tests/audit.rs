//! `landrush audit` against the real barrage (contract: Provable order): a clean load passes with
//! its checkpoint; a forged checkpoint signature is refused; a row edited in SQLite is named by
//! its seq; a tail rewritten and re-chained consistently (which `barrage audit` cannot see) is
//! caught against a checkpoint issued before the rewrite.

mod support;

use std::net::SocketAddr;
use std::path::Path;
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

/// `landrush ARGS…` on a blocking thread (the buffer it audits runs beside it).
async fn landrush(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || run(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

/// `landrush audit --handover URL --public-key KEY` and `--checkpoints` or `--receipts FILE`.
async fn audit(url: &str, key: &Path, flag: &str, file: &Path) -> (bool, String) {
    let args = ["audit", "--handover", url, "--public-key"];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(key.display().to_string());
    args.extend([flag.to_string(), file.display().to_string()]);
    landrush(args).await
}

fn sql(dir: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(dir.join("barrage.db")).unwrap();
    conn.execute_batch(statements).unwrap();
}

/// Writes the key, the checkpoint, a forged copy of it, and an ack mail carrying it as the
/// receipt of seq 50 (a receipt is the signed checkpoint of its seq).
async fn collect(buffer: &Buffer, root: &Path) {
    std::fs::write(root.join("key.json"), buffer.get("/v1/public-key").await).unwrap();
    let checkpoint = buffer.get("/v1/checkpoint").await;
    std::fs::write(root.join("cp.jsonl"), format!("{checkpoint}\n")).unwrap();
    std::fs::write(root.join("none.jsonl"), "").unwrap();
    let receipt: contract::chain::Checkpoint = serde_json::from_str(&checkpoint).unwrap();
    std::fs::create_dir(root.join("receipts")).unwrap();
    let header = contract::chain::receipt_header(&receipt).replace("; ", ";\r\n ");
    let mail = format!("From: r@registry.test\r\nX-Barrage-Receipt: {header}\r\n\r\nbody\r\n");
    std::fs::write(root.join("receipts").join("50.eml"), mail).unwrap();
    let flipped = if receipt.signature.starts_with('0') {
        "1"
    } else {
        "0"
    };
    let forged = contract::chain::Checkpoint {
        signature: format!("{flipped}{}", &receipt.signature[1..]),
        ..receipt
    };
    let forged = serde_json::to_string(&forged).unwrap();
    std::fs::write(root.join("forged.jsonl"), format!("{forged}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_catch_a_rewritten_tail_and_forged_signatures() {
    let root = tempfile::tempdir().unwrap();
    let (root, dir) = (root.path(), root.path().join("data"));
    let key = root.join("key.json");
    let buffer = Buffer::start(&dir);
    load(buffer.smtp, 50).await;
    collect(&buffer, root).await;
    let (ok, text) = audit(&buffer.url(), &key, "--checkpoints", &root.join("cp.jsonl")).await;
    assert!(ok && text.contains("checkpoints verified: 1"), "{text}");
    assert!(text.contains("50 rows"), "{text}");
    let (ok, text) = audit(&buffer.url(), &key, "--receipts", &root.join("receipts")).await;
    assert!(ok && text.contains("checkpoints verified: 1"), "{text}");
    let (ok, text) = audit(
        &buffer.url(),
        &key,
        "--checkpoints",
        &root.join("forged.jsonl"),
    )
    .await;
    let refused = "seq 50: a checkpoint's (or receipt's) signature does not verify";
    assert!(!ok && text.contains(refused), "{text}");
    buffer.stop();

    // The operator rewrites the tail and re-chains it: barrage's own migration chains every
    // row whose chain is missing, consistently. Only a checkpoint from before can tell.
    sql(
        &dir,
        "UPDATE requests SET domain = 'paris.fr' WHERE seq = 45;
         UPDATE requests SET chain = NULL WHERE seq >= 45;",
    );
    let buffer = Buffer::start(&dir);
    let inside = ["buffer", "audit", "--data-dir", dir.to_str().unwrap()];
    let (ok, text) = landrush(inside.iter().map(|a| a.to_string()).collect()).await;
    assert!(
        ok,
        "the chain alone cannot reveal a re-chained tail: {text}"
    );
    let (ok, text) = audit(
        &buffer.url(),
        &key,
        "--checkpoints",
        &root.join("none.jsonl"),
    )
    .await;
    assert!(ok, "nor can the outside audit without a checkpoint: {text}");
    let rewritten = "seq 50: the signed checkpoint (or receipt) committed to chain";
    for (flag, file) in [("--checkpoints", "cp.jsonl"), ("--receipts", "receipts")] {
        let (ok, text) = audit(&buffer.url(), &key, flag, &root.join(file)).await;
        assert!(!ok && text.contains(rewritten), "{flag}: {text}");
    }
    buffer.stop();

    // An edit without re-chaining is named by its seq.
    sql(
        &dir,
        "UPDATE requests SET domain = 'lyon.fr' WHERE seq = 20",
    );
    let buffer = Buffer::start(&dir);
    let (ok, text) = audit(
        &buffer.url(),
        &key,
        "--checkpoints",
        &root.join("none.jsonl"),
    )
    .await;
    assert!(
        !ok && text.contains("seq 20: the served chain does not verify"),
        "{text}"
    );
}
