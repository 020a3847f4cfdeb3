//! Out of descriptors, never silent (contract: Refusals): barrage started with RLIMIT_NOFILE =
//! 256 and the default connection limits (30,000 between SMTP and web) clamps them at start with
//! a warning, and 300 clients connecting at once each get `220` or `421` — none gets silence —
//! while the handover API keeps answering.

mod prod_support;
mod support;

use std::os::unix::process::CommandExt;

use prod_support::{api_get, start_logged_with};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

const NOFILE: u64 = 256;
const CLIENTS: usize = 300;

/// Connects and reads the first reply line; the connection is kept so the slots stay taken.
async fn first_line(addr: std::net::SocketAddr) -> (String, BufReader<TcpStream>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        reader.read_line(&mut line),
    );
    match read.await {
        Ok(Ok(_)) => (line, reader),
        Ok(Err(e)) => (format!("error: {e}"), reader),
        Err(_) => ("silence for 60 s".into(), reader),
    }
}

#[tokio::test]
async fn every_client_gets_220_or_421_under_a_small_descriptor_limit() {
    let root = tempfile::tempdir().unwrap();
    let (barrage, log) = start_logged_with(&root.path().join("data"), &[], |command| {
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("RLIMIT_NOFILE allows (256"), "{text}");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(first_line(barrage.smtp)))
        .collect();
    let mut held = Vec::new();
    let (mut greeted, mut refused) = (0, 0);
    for client in clients {
        let (line, reader) = client.await.unwrap();
        match line.get(..4) {
            Some("220 ") => greeted += 1,
            Some("421 ") => refused += 1,
            _ => panic!("a client got {line:?} instead of 220 or 421"),
        }
        held.push(reader);
    }
    assert_eq!(greeted + refused, CLIENTS);
    assert!(
        greeted > 0 && refused > 0,
        "{greeted} greeted, {refused} refused"
    );
    assert!(
        greeted <= NOFILE as usize,
        "{greeted} sessions in {NOFILE} descriptors"
    );
    let stats = api_get(&barrage, "/v1/stats").await;
    assert_eq!(stats.status, 200, "{stats:?}");
    drop(held);
}
