//! Client groups and the adversaries over real TCP on loopback, against a small raw SMTP server
//! that records every read (its peer and its bytes), every command line and every message.
//!
//! Assertions are on what the server received and in what order (source addresses, NOOPs, bytes
//! arriving in pieces, junk commands, a collider's mail before its victim's) and on the records —
//! never on durations. Also the scenario language's checks of groups (old and new forms, bad
//! combinations refused with a clear error).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use landrush::driver::RunOptions;
use landrush::driver::smtp::{group_runs, run_scenario};
use landrush::schedule::ValidScenario;
use reports::records::{Outcome, SENT, SentRecord, read_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every test gives up after this long rather than hang CI.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// One message the server received.
#[derive(Debug, Clone)]
struct Mail {
    /// Arrival order over all connections.
    order: usize,
    peer: SocketAddr,
    sender: String,
    message_id: String,
    domain: String,
}

/// Everything the server saw.
#[derive(Debug, Default)]
struct Log {
    /// Every read: peer and bytes.
    reads: Vec<(SocketAddr, Vec<u8>)>,
    /// Every command line (outside DATA), with its peer.
    commands: Vec<(SocketAddr, String)>,
    mails: Vec<Mail>,
}

#[derive(Clone)]
struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

/// Starts the raw server on 127.0.0.1:0. With `junk_limit`, a connection that sends that many
/// commands other than EHLO/MAIL/RCPT/DATA/QUIT gets `421 4.7.0` and is closed.
async fn server(junk_limit: Option<usize>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(session(stream, peer, shared.clone(), junk_limit));
        }
    });
    Server { addr, log }
}

fn header(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// One connection: reads, splits lines, answers as a plain SMTP server would.
async fn session(mut s: TcpStream, peer: SocketAddr, log: Arc<Mutex<Log>>, junk: Option<usize>) {
    let _ = s.write_all(b"220 raw.test ESMTP\r\n").await;
    let mut pending: Vec<u8> = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut sender = String::new();
    let mut junk_seen = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        log.lock().unwrap().reads.push((peer, buf[..n].to_vec()));
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = pending.drain(..end + 2).collect();
            if let Some(body) = data.as_mut() {
                if line == b".\r\n" {
                    let text = String::from_utf8_lossy(body).into_owned();
                    data = None;
                    let order = {
                        let mut l = log.lock().unwrap();
                        let order = l.mails.len();
                        l.mails.push(Mail {
                            order,
                            peer,
                            sender: sender.clone(),
                            message_id: header(&text, "Message-ID:"),
                            domain: header(&text, "domain:"),
                        });
                        order
                    };
                    let reply = format!("250 2.0.0 queued as ticket {} at x\r\n", order + 1);
                    let _ = s.write_all(reply.as_bytes()).await;
                } else {
                    body.extend_from_slice(&line);
                }
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            log.lock().unwrap().commands.push((peer, text.clone()));
            let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 raw.test\r\n",
                "MAIL" => {
                    sender = text
                        .split_once('<')
                        .and_then(|(_, r)| r.split_once('>'))
                        .map(|(a, _)| a.to_string())
                        .unwrap_or_default();
                    b"250 2.1.0 ok\r\n"
                }
                "RCPT" => b"250 2.1.5 ok\r\n",
                "DATA" => {
                    data = Some(Vec::new());
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    let _ = s.write_all(b"221 bye\r\n").await;
                    return;
                }
                other => {
                    junk_seen += 1;
                    if junk.is_some_and(|limit| junk_seen > limit) {
                        let _ = s.write_all(b"421 4.7.0 too many junk commands\r\n").await;
                        return;
                    }
                    match other {
                        "NOOP" | "RSET" => b"250 2.0.0 ok\r\n",
                        "VRFY" => b"252 2.1.5 cannot verify\r\n",
                        "HELP" => b"214 2.0.0 help\r\n",
                        _ => b"500 5.5.1 unrecognized command\r\n",
                    }
                }
            };
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}

fn scenario(groups: &str, schedule: &str) -> ValidScenario {
    let text = format!(
        "name = \"adversaries\"\nseed = 5\nstart = \"+1s\"\n[bounds]\nmax_requests = 100\n\
         max_duration = \"40s\"\n{groups}\n[schedule]\n{schedule}\n\
         [requests]\nrecipient = \"requests@registry.invalid\"\nrequesters = 20\n\
         requester_domain = \"registrar.invalid\"\nsizes = [{{ bytes = 600, weight = 1 }}]\n"
    );
    ValidScenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

async fn run(s: &ValidScenario, target: SocketAddr, dir: &Path) {
    let options = RunOptions {
        progress: false,
        print_summary: false,
        ..RunOptions::default()
    };
    tokio::time::timeout(TEST_LIMIT, run_scenario(s, target, dir, options))
        .await
        .expect("the run ends by itself")
        .expect("the run starts");
}

fn records(dir: &Path) -> Vec<SentRecord> {
    read_all(&dir.join(SENT)).unwrap()
}

fn adversaries(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("adversaries.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap().to_string(), g.clone()))
        .collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_send_from_their_own_source_addresses() {
    let srv = server(None).await;
    let s = scenario(
        "[[clients]]\nname = \"alpha\"\ncount = 2\nshare = 0.5\nsources = [\"127.0.1.1\", \
         \"127.0.1.2\"]\n[[clients]]\nname = \"beta\"\ncount = 2\nshare = 0.5\n\
         sources = \"127.0.2.0/30\"\n",
        "model = \"constant\"\nrate = 20\nduration = \"1s\"",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path()).await;
    let peers: BTreeSet<IpAddr> = srv
        .log
        .lock()
        .unwrap()
        .mails
        .iter()
        .map(|m| m.peer.ip())
        .collect();
    let expected: BTreeSet<IpAddr> = ["127.0.1.1", "127.0.1.2", "127.0.2.1", "127.0.2.2"]
        .into_iter()
        .map(ip)
        .collect();
    assert_eq!(peers, expected);
    let recs = records(dir.path());
    assert_eq!(recs.len(), 20);
    let mut by_group = BTreeMap::<String, u64>::new();
    for r in &recs {
        assert_eq!(r.outcome, Outcome::Accepted, "{r:?}");
        let group = r.group.clone().expect("every record names its group");
        // Clients 0-1 are alpha's, 2-3 beta's (numbered over the groups in file order).
        assert_eq!(group == "alpha", r.client < 2, "{r:?}");
        *by_group.entry(group).or_default() += 1;
    }
    assert_eq!(
        by_group,
        BTreeMap::from([("alpha".into(), 10), ("beta".into(), 10)])
    );
    // Each mail came from its client's address: the server's peer for each Message-ID.
    let log = srv.log.lock().unwrap();
    for r in &recs {
        let mail = log
            .mails
            .iter()
            .find(|m| m.message_id == r.message_id)
            .unwrap();
        let from_alpha = ["127.0.1.1", "127.0.1.2"].map(ip).contains(&mail.peer.ip());
        assert_eq!(from_alpha, r.group.as_deref() == Some("alpha"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hog_holds_its_connections_with_noops() {
    let srv = server(None).await;
    // The honest requests are spread over 3 s so the hog has the time to hold and NOOP.
    let s = scenario(
        "[[clients]]\nname = \"honest\"\ncount = 2\nsources = [\"127.0.1.1\"]\n\
         [[clients]]\nname = \"hog\"\nbehaviour = \"hog\"\ncount = 5\n\
         sources = [\"127.0.3.1\"]\nnoop_interval = \"100ms\"\n",
        "model = \"constant\"\nrate = 2\nduration = \"3s\"",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path()).await;
    let log = srv.log.lock().unwrap();
    let hog = ip("127.0.3.1");
    let noop_peers: BTreeSet<SocketAddr> = log
        .commands
        .iter()
        .filter(|(p, c)| p.ip() == hog && c == "NOOP")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(
        noop_peers.len(),
        5,
        "each of the 5 hog connections sent NOOPs"
    );
    assert!(
        log.mails.iter().all(|m| m.peer.ip() != hog),
        "a hog sends no mail"
    );
    let a = &adversaries(dir.path())["hog"];
    assert_eq!(a["behaviour"], "hog");
    assert_eq!(a["achieved"]["connections_opened"], 5);
    assert_eq!(a["achieved"]["held_max"], 5);
    let noops = log
        .commands
        .iter()
        .filter(|(p, c)| p.ip() == hog && c == "NOOP")
        .count();
    assert_eq!(a["achieved"]["commands_sent"], noops as u64);
    assert!(
        records(dir.path())
            .iter()
            .all(|r| r.group.as_deref() == Some("honest"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_trickles_commands_and_data() {
    let srv = server(None).await;
    let s = scenario(
        "[[clients]]\nname = \"slow\"\nbehaviour = \"slowloris\"\ncount = 1\n\
         sources = [\"127.0.6.1\"]\nbytes_per_second = 200\n",
        "model = \"instant\"\ncount = 1",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path()).await;
    let log = srv.log.lock().unwrap();
    let slow = ip("127.0.6.1");
    let reads: Vec<&Vec<u8>> = log
        .reads
        .iter()
        .filter(|(p, _)| p.ip() == slow)
        .map(|(_, b)| b)
        .collect();
    let total: usize = reads.iter().map(|b| b.len()).sum();
    // At 200 bytes/s the driver writes 20 bytes at a time: many reads, most of them not ending
    // a line (the server sees partial command lines and partial data lines).
    assert!(total > 300, "the whole session arrived ({total} bytes)");
    assert!(
        reads.len() * 40 >= total,
        "{} reads for {total} bytes: not trickled",
        reads.len()
    );
    let partial = reads.iter().filter(|b| !b.ends_with(b"\r\n")).count();
    assert!(
        partial * 2 >= reads.len(),
        "{partial} of {} reads end mid-line",
        reads.len()
    );
    // The EHLO line itself came in pieces.
    let ehlo_pieces = reads.iter().take_while(|b| !b.ends_with(b"\r\n")).count();
    assert!(ehlo_pieces >= 1, "EHLO arrived whole");
    assert_eq!(log.mails.len(), 1);
    let recs = records(dir.path());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].group.as_deref(), Some("slow"));
    assert_eq!(recs[0].outcome, Outcome::Accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_floods_commands_and_counts_the_refusals() {
    // The server closes a connection with 421 after 30 junk commands.
    let srv = server(Some(30)).await;
    let s = scenario(
        "[[clients]]\nname = \"honest\"\ncount = 1\n\
         [[clients]]\nname = \"junk\"\nbehaviour = \"junk\"\ncount = 2\n\
         sources = \"127.0.4.0/30\"\njunk_commands = 50\nreconnect_after = \"10ms\"\n",
        "model = \"constant\"\nrate = 1\nduration = \"4s\"",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path()).await;
    let log = srv.log.lock().unwrap();
    let junk: Vec<&String> = log
        .commands
        .iter()
        .filter(|(p, c)| p.ip().to_string().starts_with("127.0.4.") && !c.starts_with("EHLO"))
        .map(|(_, c)| c)
        .filter(|c| c.as_str() != "QUIT")
        .collect();
    assert_eq!(junk.len(), 100, "2 clients × 50 junk commands");
    for verb in ["NOOP", "RSET", "VRFY", "HELP", "XJUNK"] {
        assert!(
            junk.iter().any(|c| c.starts_with(verb)),
            "no {verb} in the flood"
        );
    }
    assert!(
        log.commands
            .iter()
            .filter(|(p, _)| p.ip().to_string().starts_with("127.0.4."))
            .all(|(_, c)| !c.starts_with("MAIL")),
        "junk makes no request"
    );
    let a = &adversaries(dir.path())["junk"]["achieved"];
    assert_eq!(a["commands_sent"], 100);
    // 50 commands against a limit of 30: each client was closed once (its 31st command got 421).
    assert_eq!(a["refusals_421"], 2);
    assert_eq!(a["closed_by_server"], 2);
    assert_eq!(a["connections_opened"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_collider_sends_the_victims_key_with_other_content_first() {
    let srv = server(None).await;
    let s = scenario(
        "[[clients]]\nname = \"victims\"\ncount = 2\nsources = [\"127.0.1.1\"]\n\
         [[clients]]\nname = \"colliders\"\nbehaviour = \"key-collider\"\ncount = 1\n\
         sources = [\"127.0.5.1\"]\nvictim = \"victims\"\nlead = \"1s\"\n",
        "model = \"constant\"\nrate = 1\nduration = \"3s\"",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path()).await;
    let recs = records(dir.path());
    let victims: Vec<&SentRecord> = recs
        .iter()
        .filter(|r| r.group.as_deref() == Some("victims"))
        .collect();
    let colliders: Vec<&SentRecord> = recs
        .iter()
        .filter(|r| r.group.as_deref() == Some("colliders"))
        .collect();
    assert_eq!(victims.len(), 3);
    assert_eq!(
        colliders.len(),
        3,
        "fraction 1: one collision per victim request"
    );
    let log = srv.log.lock().unwrap();
    for v in victims {
        let c = colliders
            .iter()
            .find(|c| c.id == format!("{}-k", v.id))
            .expect("a collider record per victim");
        assert_eq!(c.kind, "collider");
        assert_eq!((&c.message_id, &c.sender), (&v.message_id, &v.sender));
        let mails: Vec<&Mail> = log
            .mails
            .iter()
            .filter(|m| m.message_id == v.message_id)
            .collect();
        assert_eq!(mails.len(), 2, "{v:?}");
        let (first, second) = (mails[0], mails[1]);
        assert!(first.order < second.order);
        assert_eq!(
            first.peer.ip(),
            ip("127.0.5.1"),
            "the collider's mail came first"
        );
        assert_eq!(second.peer.ip(), ip("127.0.1.1"));
        assert_eq!(first.sender, second.sender);
        assert_ne!(first.domain, second.domain, "different content");
        assert_eq!(second.domain, v.domain);
    }
    assert_eq!(
        adversaries(dir.path())["colliders"]["achieved"]["requests_sent"],
        3
    );
}

fn parse(groups: &str) -> anyhow::Result<ValidScenario> {
    ValidScenario::parse(&format!(
        "name = \"p\"\nseed = 1\nstart = \"+1s\"\n[bounds]\nmax_requests = 10\n\
         max_duration = \"1m\"\n{groups}\n[schedule]\nmodel = \"instant\"\ncount = 10\n"
    ))
}

fn refused(groups: &str, words: &str) {
    let err = format!("{:#}", parse(groups).expect_err(groups));
    assert!(err.contains(words), "`{err}` does not say `{words}`");
}

#[test]
fn the_old_table_and_the_new_list_both_load() {
    let old = parse("[clients]\ncount = 3\nretries = 1\n").unwrap();
    let groups: Vec<_> = old.clients.iter().collect();
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].name.as_str(), groups[0].count), ("clients", 3));
    assert_eq!(
        old.plan().client_of(4),
        1,
        "request i by client i % count, as before"
    );

    let new = parse(
        "[[clients]]\nname = \"a\"\ncount = 2\nsources = \"127.0.1.0/29\"\n\
         [[clients]]\nname = \"h\"\ncount = 3\nbehaviour = \"hog\"\nnoop_interval = \"1s\"\n",
    )
    .unwrap();
    assert_eq!(new.clients.iter().count(), 2);
    let a = new.clients.named("a").unwrap();
    assert_eq!(
        a.source_addresses().unwrap().len(),
        6,
        "a /29 without network and broadcast"
    );
    assert_eq!(new.plan().clients(), 5);
    assert_eq!(
        new.plan().request_count_of(0) + new.plan().request_count_of(1),
        10
    );
}

#[test]
fn bad_group_combinations_are_refused_with_a_clear_error() {
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\nsources = \"10.0.0.0/24\"\n",
        "not inside loopback",
    );
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\nshare = 0.5\n[[clients]]\nname = \"b\"\n\
         count = 1\nshare = 0.4\n",
        "add up to 0.9",
    );
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\nshare = 1.0\n[[clients]]\nname = \"b\"\n\
         count = 1\n",
        "give a share to every sending group or to none",
    );
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\nnoop_interval = \"1s\"\n",
        "not a parameter of behaviour `honest`",
    );
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\n[[clients]]\nname = \"k\"\ncount = 1\n\
         behaviour = \"key-collider\"\nvictim = \"nobody\"\n",
        "no group named `nobody`",
    );
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\n[[clients]]\nname = \"a\"\ncount = 1\n",
        "two groups are named `a`",
    );
    refused(
        "[[clients]]\nname = \"h\"\ncount = 1\nbehaviour = \"hog\"\n",
        "no group sends requests",
    );
    refused(
        "[[clients]]\nname = \"a\"\ncount = 1\nsources = \"not-an-ip\"\n",
        "not an IP address",
    );
}

#[test]
fn sources_outside_loopback_are_refused_for_a_loopback_target() {
    let s = parse("[[clients]]\nname = \"a\"\ncount = 1\nsources = [\"192.0.2.7\"]\n").unwrap();
    let loopback: SocketAddr = "127.0.0.1:25".parse().unwrap();
    let err = format!("{:#}", group_runs(&s, loopback).err().expect("refused"));
    assert!(err.contains("outside loopback"), "{err}");
    assert!(err.contains("--allow-remote-target"), "{err}");
    // Against a remote target (named on the command line), a loopback source cannot reach it.
    let local = parse("[[clients]]\nname = \"a\"\ncount = 1\nsources = [\"127.0.1.1\"]\n").unwrap();
    let remote: SocketAddr = "192.0.2.1:25".parse().unwrap();
    assert!(group_runs(&local, remote).is_err());
    assert!(group_runs(&s, remote).is_ok());
    assert!(group_runs(&local, loopback).is_ok());
}

#[test]
fn the_same_file_gives_the_same_requests() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/hostile.toml"),
    )
    .unwrap();
    let a = ValidScenario::parse(&text).unwrap();
    let b = ValidScenario::parse(&text).unwrap();
    let ra = landrush::schedule::request::RequestMaker::new(&a, a.plan(), None);
    let rb = landrush::schedule::request::RequestMaker::new(&b, b.plan(), None);
    for i in (0..a.plan().total()).step_by(37) {
        assert_eq!(ra.request(i), rb.request(i));
        assert_eq!(a.plan().client_of(i), b.plan().client_of(i));
    }
    assert_eq!(ra.collider(5, 600, 5), rb.collider(5, 600, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_key_collider_posts_the_users_key_with_other_content_first() {
    use barrage::intake::IntakeCounters;
    use barrage::intake::web::{WebIntake, WebLimits};
    use barrage::journal::Journal;
    use barrage::journal::sqlite::{SqliteJournal, SqliteOptions};
    use landrush::driver::http::{HTTP_SENT, run_http};
    use reports::records::Stamp;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let journal = Arc::new(SqliteJournal::open(&data, SqliteOptions::default()).unwrap());
    let intake = Arc::new(WebIntake::new(
        journal.clone(),
        Arc::new(IntakeCounters::default()),
        "registry.test".into(),
        WebLimits::default(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(barrage::intake::web::serve(listener, intake, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let smtp = server_smtp().await;

    // Three web users hatch 1 s apart from a start 1.5 s away; the collider fires 1 s early.
    let text = "name = \"web-collide\"\nseed = 9\nstart = \"+1500ms\"\n[bounds]\n\
                max_requests = 1\nmax_duration = \"30s\"\n[[clients]]\nname = \"mail\"\n\
                count = 1\n[[clients]]\nname = \"colliders\"\nbehaviour = \"key-collider\"\n\
                count = 1\nsources = [\"127.0.5.1\"]\nvictim = \"web\"\nlead = \"1s\"\n\
                [schedule]\nmodel = \"instant\"\ncount = 1\n[http]\nusers = 3\n\
                hatch_rate = 1.0\nrequests_per_user = 1\nhot_first = false\ntimeout = \"10s\"\n";
    let s = ValidScenario::parse(text).unwrap();
    let out = dir.path().join("run");
    let start = Stamp::from_micros(Stamp::now().micros() + 1_500_000);
    let options = RunOptions {
        progress: false,
        print_summary: false,
        start: Some(landrush::scenario::Start::At(start)),
        web_target: Some(web),
        ..RunOptions::default()
    };
    let (smtp_run, web_run) = tokio::time::timeout(TEST_LIMIT, async {
        tokio::join!(
            run_scenario(&s, smtp, &out, options),
            run_http(&s, web, &out, start, None)
        )
    })
    .await
    .expect("both parts end by themselves");
    smtp_run.unwrap();
    web_run.unwrap();
    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();

    let colliders: Vec<SentRecord> = records(&out)
        .into_iter()
        .filter(|r| r.group.as_deref() == Some("colliders"))
        .collect();
    let users: Vec<SentRecord> = read_all(&out.join(HTTP_SENT)).unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(colliders.len(), 3, "fraction 1: one collision per web user");
    let stored = journal.fetch(0, 100, false).await.unwrap();
    for user in &users {
        let c = colliders
            .iter()
            .find(|c| c.id == format!("{}-k", user.id))
            .expect("a collision per user");
        assert_eq!((c.intake.as_str(), c.kind.as_str()), ("http", "collider"));
        assert_eq!((&c.message_id, &c.sender), (&user.message_id, &user.sender));
        assert_ne!(c.domain, user.domain, "different content");
        assert!(
            c.replied_at.unwrap() < user.sent_at.unwrap(),
            "the collider's POST was answered before the user posted"
        );
        // The collider's form is what the journal holds under the user's key.
        let row = stored
            .iter()
            .find(|r| r.message_id == c.message_id)
            .expect("the collision was stored");
        assert_eq!(row.domain, c.domain);
        assert_eq!(row.sender, c.sender);
    }
    let a = &adversaries(&out)["colliders"]["achieved"];
    assert_eq!(a["requests_sent"], 3);
}

/// A raw SMTP target for tests whose SMTP part sends a request or two.
async fn server_smtp() -> SocketAddr {
    server(None).await.addr
}
