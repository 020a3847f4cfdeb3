//! Shared by the production-readiness tests (privacy, journal identity, disk, descriptors, the
//! handover API, stop and backup): a config file, a barrage whose log goes to a file, a barrage
//! run that must refuse to start, and a raw HTTP/1.1 exchange whose headers the test writes
//! itself (a `Host` of its choosing, a request cut short).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Barrage, output_tied, serve_command};

/// Writes `text` as `NAME.toml` beside `dir` (not in it: the data dir's files are under test).
pub fn config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.with_file_name(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts barrage with `args`, its log (warnings and up) written to the returned file.
pub fn start_logged(dir: &Path, args: &[&str]) -> (Barrage, PathBuf) {
    start_logged_with(dir, args, |_| {})
}

/// Like [`start_logged`], with a hook to adjust the command.
pub fn start_logged_with(
    dir: &Path,
    args: &[&str],
    adjust: impl FnOnce(&mut Command),
) -> (Barrage, PathBuf) {
    let log = dir.with_file_name(format!(
        "{}.log",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let file = std::fs::File::create(&log).unwrap();
    let barrage = Barrage::start_with(dir, args, |command| {
        command.stderr(file);
        adjust(command);
    });
    (barrage, log)
}

/// Runs `barrage serve` on `dir`, which must refuse to start; returns its error output.
pub fn refused_start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = serve_command(dir, "127.0.0.1:0");
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = output_tied(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "barrage started: {stderr}");
    stderr
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Sends `request` (whole, headers written by the caller, `Connection: close` included) and
/// reads the answer to the end of the stream.
pub async fn exchange(addr: SocketAddr, request: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: dechunk(head, body),
    }
}

/// The body of a `Transfer-Encoding: chunked` answer, else the body as is.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// `GET PATH` with `Host: HOST` and optional extra header lines.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &str) -> Answer {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    exchange(addr, &request).await
}

/// `GET PATH` addressed to the API's own address.
pub async fn api_get(barrage: &Barrage, path: &str) -> Answer {
    get(barrage.http, &barrage.http.to_string(), path, "").await
}

/// `POST /v1/cursor` with `content_type` (none when empty) and `body`.
pub async fn post_cursor(barrage: &Barrage, content_type: &str, body: &str) -> Answer {
    let kind = if content_type.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    let request = format!(
        "POST /v1/cursor HTTP/1.1\r\nHost: {}\r\n{kind}Content-Length: {}\r\nConnection: \
         close\r\n\r\n{body}",
        barrage.http,
        body.len()
    );
    exchange(barrage.http, &request).await
}
