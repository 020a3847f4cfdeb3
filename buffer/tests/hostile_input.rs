//! Random and hostile input against a real barrage over TCP (proptest): the process never dies,
//! every session ends with a reply or a clean close, and nothing but valid requests is stored.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use support::Barrage;

struct Shared {
    barrage: Barrage,
    _dir: tempfile::TempDir,
}

/// One barrage for all cases of this file (starting one per case would test process start-up).
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let barrage = Barrage::start(dir.path(), &[]);
        Shared { barrage, _dir: dir }
    })
}

/// Sends `input` on a fresh connection, then `.` and QUIT, and half-closes it; reads everything
/// the server answers until it closes the connection (it always does: after QUIT, or when it
/// reads the end of the stream). The wait ends on that event, not after a quiet time, so a busy
/// machine only makes it slower.
fn converse(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("barrage accepts connections");
    // Only so that a server that never closes fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let _ = stream.write_all(input);
    let _ = stream.write_all(b"\r\n.\r\nQUIT\r\n");
    let _ = stream.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the server closed on unread input (too many errors): the end too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed the connection: {e}"),
        }
    }
    out
}

/// Pieces an attacker strings together: valid commands, smuggling marks, binary junk.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO x\r\n".to_vec()),
        Just(b"MAIL FROM:<a@b.example>\r\n".to_vec()),
        Just(b"RCPT TO:<r@registry.example>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"domain: ok.fr\r\n".to_vec()),
        Just(b"\n.\r\n".to_vec()),
        Just(b"\r\n.\n".to_vec()),
        Just(b"\r.\r\n".to_vec()),
        Just(b"..\r\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"BDAT 10 LAST\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,100}".prop_map(|s| s.into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_sessions_never_break_the_server(pieces in prop::collection::vec(fragment(), 0..30)) {
        let addr = shared().barrage.smtp;
        let input: Vec<u8> = pieces.concat();
        let replies = converse(addr, &input);
        // Every reply line is a well-formed SMTP reply line.
        for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            prop_assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit), "bad line {:?}", String::from_utf8_lossy(line));
            prop_assert!(line.ends_with(b"\r"), "reply line without CRLF");
        }
        // The server is still there for the next client.
        let greeting = converse(addr, b"");
        prop_assert!(greeting.starts_with(b"220 "), "no greeting after hostile input");
    }
}

/// Hostile sessions with known outcomes: each tries to get something stored that must not be.
const HOSTILE: [&[u8]; 5] = [
    // Smuggling: a bare-LF end mark hides a second transaction inside the first message.
    b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nDATA\r\n\r\ndomain: cache.fr\r\n\n.\r\n\
      MAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nDATA\r\n\r\ndomain: smuggled.fr\r\n",
    b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nDATA\r\n\r\ndomain: cache.fr\r\n\r.\r\n",
    b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nDATA\r\n\r\ndomain: -bad-.fr\r\n",
    b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nDATA\r\n\r\ndomain: cache.fr\0\r\n",
    b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nBDAT 20 LAST\r\ndomain: cache.fr\r\n",
];

/// On a barrage of its own (whatever else ran before): valid requests among hostile and random
/// sessions are stored, and nothing else is.
#[test]
fn nothing_but_valid_requests_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(dir.path(), &[]);
    let valid = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@x>\r\nDATA\r\nFrom: a@b.example\r\n\r\ndomain: valide.fr\r\n";
    let replies = converse(barrage.smtp, valid);
    assert!(String::from_utf8_lossy(&replies).contains("queued as ticket"));
    for input in HOSTILE {
        let replies = String::from_utf8_lossy(&converse(barrage.smtp, input)).into_owned();
        assert!(!replies.contains("queued as ticket"), "stored: {replies}");
    }
    // Random sessions too, drawn with a fixed seed so every run sends the same.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let sessions = prop::collection::vec(fragment(), 0..30);
    for _ in 0..50 {
        let input = sessions.new_tree(&mut runner).unwrap().current().concat();
        converse(barrage.smtp, &input);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = runtime.block_on(barrage.all_requests());
    assert!(stored.iter().any(|row| row["domain"] == "valide.fr"));
    for row in stored {
        let domain = row["domain"].as_str().unwrap();
        assert_eq!(
            barrage::form::check_domain(domain).as_deref(),
            Ok(domain),
            "stored garbage: {row}"
        );
        assert!(
            !["cache.fr", "smuggled.fr"].contains(&domain),
            "a refused or smuggled request was stored: {row}"
        );
    }
}
