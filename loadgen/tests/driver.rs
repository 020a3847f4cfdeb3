//! The SMTP driver against a small in-process SMTP server (barrage's own `smtp::serve` with a
//! handler that records what it receives and answers `250 2.0.0 queued as ticket N at <time>`).
//!
//! Assertions are on the schedule's intended times, on the records and on what the server
//! received — never on wall-clock speed. Every test is loopback only and bounded in requests and
//! time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barrage::smtp::{Envelope, MessageHandler, Reply, SmtpLimits, serve};
use landrush::driver::smtp::run_scenario;
use landrush::driver::{RunOptions, RunSummary, read_run_info};
use landrush::schedule::Plan;
use landrush::schedule::ValidScenario;
use landrush::schedule::request::RequestMaker;
use landrush::schedule::shard::Shard;
use reports::records::{Outcome, SENT, SentRecord, Stamp, read_all};
use tokio::net::{TcpListener, TcpStream};

/// Every test gives up after this long rather than hang CI.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// One message as the server received it.
#[derive(Debug, Clone)]
struct Got {
    peer: SocketAddr,
    at: Stamp,
    landrush_id: String,
    message_id: String,
    domain: Option<String>,
}

/// Records deliveries; refuses forms without a valid domain (550) like a buffer would; can be
/// told to never answer, or to answer 451 the first time it sees a Message-ID.
#[derive(Default)]
struct Handler {
    next_ticket: AtomicU64,
    got: Mutex<Vec<Got>>,
    hang: bool,
    temp_fail_first: bool,
}

fn header(message: &str, name: &str) -> String {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

impl MessageHandler for Handler {
    fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> impl Future<Output = Reply> + Send {
        let peer = envelope.peer;
        async move {
            if self.hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let text = String::from_utf8_lossy(&message).into_owned();
            let domain = text
                .lines()
                .find_map(|l| l.strip_prefix("domain:"))
                .map(|d| d.trim().to_string());
            let message_id = header(&text, "Message-ID:");
            let seen_before = {
                let mut got = self.got.lock().unwrap();
                let seen = got.iter().any(|g| g.message_id == message_id);
                got.push(Got {
                    peer,
                    at: Stamp::now(),
                    landrush_id: header(&text, "X-Landrush-Id:"),
                    message_id,
                    domain: domain.clone(),
                });
                seen
            };
            if self.temp_fail_first && !seen_before {
                return Reply::new(451, [4, 3, 0], "try again later");
            }
            match domain {
                Some(d) if landrush::scenario::is_valid_domain(&d) => {
                    let n = self.next_ticket.fetch_add(1, Ordering::SeqCst) + 1;
                    Reply::new(
                        250,
                        [2, 0, 0],
                        format!("queued as ticket {n} at {}", Stamp::now()),
                    )
                }
                _ => Reply::new(550, [5, 6, 0], "no valid domain in the form"),
            }
        }
    }
}

struct Server {
    addr: SocketAddr,
    handler: Arc<Handler>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn server(handler: Handler) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Arc::new(SmtpLimits {
        max_message_size: 1024 * 1024,
        ..SmtpLimits::default()
    });
    tokio::spawn(serve(listener, limits, handler.clone(), async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        handler,
        _stop: stop,
    }
}

/// A scenario from its `[clients]` extras, `[schedule]` body and any further sections.
fn scenario(clients: u32, clients_extra: &str, schedule: &str, rest: &str) -> ValidScenario {
    let text = format!(
        "name = \"test\"\nseed = 99\nstart = \"+500ms\"\n\
         [bounds]\nmax_requests = 100000\nmax_duration = \"60s\"\n\
         [clients]\ncount = {clients}\nreply_timeout = \"20s\"\n{clients_extra}\n\
         [schedule]\n{schedule}\n{rest}\n"
    );
    ValidScenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

fn quiet() -> RunOptions {
    RunOptions {
        progress: false,
        print_summary: false,
        ..RunOptions::default()
    }
}

async fn run(s: &ValidScenario, addr: SocketAddr, dir: &Path, options: RunOptions) -> RunSummary {
    tokio::time::timeout(TEST_LIMIT, run_scenario(s, addr, dir, options))
        .await
        .expect("run within the test limit")
        .expect("run")
}

fn records(dir: &Path) -> Vec<SentRecord> {
    read_all(&dir.join(SENT)).expect("sent.jsonl parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_is_honoured_and_records_are_complete() {
    let srv = server(Handler::default()).await;
    let s = scenario(
        10,
        "",
        "model = \"steps\"\nsteps = [{ rate = 50, duration = \"1s\" }, \
         { rate = 120, duration = \"1s\" }, { rate = 20, duration = \"1s\" }]",
        "[domains]\npool = 1000\ntld = \"fr\"\nhot = [\"exemple.fr\"]\naskers = 3",
    );
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&s, srv.addr, dir.path(), quiet()).await;
    let plan = Plan::new(&s).unwrap();
    assert_eq!(plan.per_second(), vec![50, 120, 20]);

    let recs = records(dir.path());
    assert_eq!(recs.len(), 190);
    // Counts per second of the intended times, from the records, match the scenario.
    let start = read_run_info(dir.path()).unwrap().started_at.micros();
    let mut per_second = vec![0u64; 3];
    for r in &recs {
        per_second[((r.intended_at.micros() - start) / 1_000_000) as usize] += 1;
    }
    assert_eq!(per_second, vec![50, 120, 20]);

    // Each record is the request the scenario defines, complete, and answered with its ticket.
    let requests = RequestMaker::new(&s, &plan, None);
    let mut tickets = BTreeSet::new();
    for r in &recs {
        let index: u64 = r.id.trim_start_matches('r').parse().unwrap();
        let want = requests.request(index);
        assert_eq!(r.message_id, want.message_id);
        assert_eq!(r.domain, want.domain);
        assert_eq!(r.client, want.client);
        assert_eq!(r.attempt, 1);
        assert_eq!(r.outcome, Outcome::Accepted, "{r:?}");
        assert_eq!(r.code, Some(250));
        assert!(
            r.reply
                .as_deref()
                .unwrap()
                .starts_with("250 2.0.0 queued as ticket")
        );
        let sent = r.sent_at.unwrap();
        let replied = r.replied_at.unwrap();
        assert!(sent >= r.intended_at && replied >= sent, "{r:?}");
        assert_eq!(
            r.intended_at.micros() - start,
            plan.offset(index).unwrap().as_micros() as i64
        );
        assert!(tickets.insert(r.ticket.expect("ticket parsed from the reply")));
    }
    assert_eq!(tickets.len(), 190);
    // The hot name was asked by three different clients within the same second.
    let hot: Vec<&SentRecord> = recs.iter().filter(|r| r.domain == "exemple.fr").collect();
    assert_eq!(hot.len(), 3);
    assert_eq!(
        hot.iter().map(|r| r.client).collect::<BTreeSet<_>>().len(),
        3
    );
    let times: Vec<i64> = hot.iter().map(|r| r.intended_at.micros()).collect();
    assert!(times.iter().max().unwrap() - times.iter().min().unwrap() < 1_000_000);

    // The server got exactly these messages, with their ids and forms.
    let got = srv.handler.got.lock().unwrap().clone();
    assert_eq!(got.len(), 190);
    let by_id: HashMap<&str, &SentRecord> = recs.iter().map(|r| (r.id.as_str(), r)).collect();
    for g in &got {
        let r = by_id[g.landrush_id.as_str()];
        assert_eq!(g.message_id, r.message_id);
        assert_eq!(g.domain.as_deref(), Some(r.domain.as_str()));
    }
    assert_eq!(summary.info.accepted, 190);
    assert_eq!(summary.info.transmissions, 190);
    assert_eq!(summary.info.unsent, 0);
    for name in [
        "latency-service.hdr",
        "latency-corrected.hdr",
        "driver-lag.hdr",
    ] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
}

/// Counts connections accepted, in front of the server.
async fn counting_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Stamp>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let seen = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            seen.lock().unwrap().push(Stamp::now());
            tokio::spawn(async move {
                if let Ok(mut upstream) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_connected_clients_fire_together() {
    let srv = server(Handler::default()).await;
    let (proxy, accepted) = counting_proxy(srv.addr).await;
    let s = scenario(
        40,
        "pre_connect = true\npre_connect_stage = \"rcpt\"",
        "model = \"instant\"\ncount = 40",
        "[domains]\npool = 1000\ntld = \"fr\"\nhot = [\"exemple.fr\"]\naskers = 40",
    );
    // The start instant must leave time to pre-connect all 40 clients; how much a busy machine
    // needs is not this test's business: it tries longer leads until the run itself says every
    // client was connected and staged in time (pre_connect_late, pre_connect_failed).
    let mut tries = ["+2s", "+8s", "+30s"].into_iter();
    let (dir, summary) = loop {
        let lead = tries.next().expect("40 clients pre-connected within 30 s");
        accepted.lock().unwrap().clear();
        srv.handler.got.lock().unwrap().clear();
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions {
            start: Some(lead.parse().unwrap()),
            ..quiet()
        };
        let summary = run(&s, proxy, dir.path(), options).await;
        let info = &summary.info;
        if (info.pre_connect_failed, info.pre_connect_late) == (0, 0) {
            break (dir, summary);
        }
        eprintln!(
            "start {lead}: {} clients late, {} failed; trying a longer lead",
            info.pre_connect_late, info.pre_connect_failed
        );
    };
    let start = summary.info.started_at;
    let recs = records(dir.path());
    assert_eq!(recs.len(), 40);
    // All due at the same instant, all accepted, one ticket each.
    assert!(recs.iter().all(|r| r.intended_at == start));
    assert!(recs.iter().all(|r| r.outcome == Outcome::Accepted));
    assert_eq!(
        recs.iter()
            .filter_map(|r| r.ticket)
            .collect::<BTreeSet<_>>()
            .len(),
        40
    );
    // Every connection was open before the instant (one per client, no more), and no message
    // reached the server before it.
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 40);
    assert!(
        accepted.iter().all(|&a| a < start),
        "{accepted:?} vs {start}"
    );
    let got = srv.handler.got.lock().unwrap().clone();
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|g| g.at >= start));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmissions_drop_after_the_dot_and_resend_the_same_message() {
    let srv = server(Handler::default()).await;
    let s = scenario(
        4,
        "",
        "model = \"constant\"\nrate = 20\nduration = \"1s\"",
        "[misbehaviour]\nretransmissions = 0.5",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path(), quiet()).await;
    let recs = records(dir.path());
    let mut by_id: BTreeMap<String, Vec<SentRecord>> = BTreeMap::new();
    for r in recs {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    assert_eq!(by_id.len(), 20);
    let got = srv.handler.got.lock().unwrap().clone();
    let mut retransmitted = 0;
    for (id, mut attempts) in by_id {
        attempts.sort_by_key(|r| r.attempt);
        if attempts[0].kind != "retransmission" {
            assert_eq!(attempts.len(), 1);
            continue;
        }
        retransmitted += 1;
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        let (first, second) = (&attempts[0], &attempts[1]);
        assert_eq!((first.attempt, second.attempt), (1, 2));
        assert_eq!(first.message_id, second.message_id);
        // The first attempt was sent in full but its reply was never read.
        assert_eq!(first.outcome, Outcome::Indeterminate);
        assert!(first.sent_at.is_some() && first.replied_at.is_none() && first.code.is_none());
        assert_eq!(second.outcome, Outcome::Accepted);
        // The server got the identical message twice, on two different connections.
        let copies: Vec<&Got> = got.iter().filter(|g| g.landrush_id == id).collect();
        assert_eq!(copies.len(), 2, "{id}");
        assert_eq!(copies[0].message_id, copies[1].message_id);
        assert_ne!(copies[0].peer, copies[1].peer);
    }
    assert!(
        retransmitted >= 3,
        "only {retransmitted} retransmissions drawn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_retry_a_temporary_refusal_with_the_same_message() {
    let srv = server(Handler {
        temp_fail_first: true,
        ..Handler::default()
    })
    .await;
    let s = scenario(
        2,
        "retries = 2\nretry_backoff = \"50ms\"",
        "model = \"constant\"\nrate = 10\nduration = \"1s\"",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path(), quiet()).await;
    let mut by_id: BTreeMap<String, Vec<SentRecord>> = BTreeMap::new();
    for r in records(dir.path()) {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    assert_eq!(by_id.len(), 10);
    for (id, mut attempts) in by_id {
        attempts.sort_by_key(|r| r.attempt);
        assert_eq!(attempts.len(), 2, "{id}: {attempts:?}");
        assert_eq!(
            (attempts[0].code, attempts[0].outcome),
            (Some(451), Outcome::Refused)
        );
        assert_eq!(
            (attempts[1].attempt, attempts[1].outcome),
            (2, Outcome::Accepted)
        );
        assert_eq!(attempts[0].message_id, attempts[1].message_id);
    }

    // Without `retries`, a temporary refusal stays the request's outcome.
    let srv = server(Handler {
        temp_fail_first: true,
        ..Handler::default()
    })
    .await;
    let s = scenario(
        2,
        "",
        "model = \"constant\"\nrate = 10\nduration = \"1s\"",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path(), quiet()).await;
    let recs = records(dir.path());
    assert_eq!(recs.len(), 10);
    assert!(recs.iter().all(|r| r.attempt == 1 && r.code == Some(451)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversize_and_resubmissions_are_sent_as_asked() {
    let srv = server(Handler::default()).await;
    let s = scenario(
        5,
        "",
        "model = \"constant\"\nrate = 100\nduration = \"1s\"",
        "[misbehaviour]\nmalformed = 0.2\noversize = 0.05\noversize_bytes = 1200000\n\
         resubmissions = 0.2",
    );
    let dir = tempfile::tempdir().unwrap();
    run(&s, srv.addr, dir.path(), quiet()).await;
    let recs = records(dir.path());
    assert_eq!(recs.len(), 100);
    let plan = Plan::new(&s).unwrap();
    let requests = RequestMaker::new(&s, &plan, None);
    let mut seen = BTreeMap::<&str, u64>::new();
    for r in &recs {
        *seen.entry(r.kind.as_str()).or_default() += 1;
        match r.kind.as_str() {
            "malformed" => {
                assert_eq!(r.outcome, Outcome::Refused, "{r:?}");
                assert_eq!(r.code, Some(550));
            }
            "oversize" => {
                assert_eq!(r.outcome, Outcome::Refused, "{r:?}");
                assert_eq!(r.code, Some(552));
            }
            "resubmission" => {
                // Same form as this client's previous request, under its own id and Message-ID.
                let index: u64 = r.id.trim_start_matches('r').parse().unwrap();
                let previous = requests.request(index - 5);
                let this = requests.request(index);
                assert_eq!(this.domain, previous.domain);
                assert_eq!(this.holder, previous.holder);
                assert_eq!(this.size, previous.size);
                assert_ne!(this.message_id, previous.message_id);
                // A repeated malformed or oversize mail is refused again.
                let fine = this.has_domain_line
                    && landrush::scenario::is_valid_domain(&this.domain)
                    && this.size < 1024 * 1024;
                assert_eq!(r.outcome == Outcome::Accepted, fine, "{r:?}");
            }
            _ => assert_eq!(r.outcome, Outcome::Accepted, "{r:?}"),
        }
    }
    for kind in ["malformed", "oversize", "resubmission", "normal"] {
        assert!(seen.contains_key(kind), "no {kind} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_is_enforced_even_when_the_server_never_answers() {
    let srv = server(Handler {
        hang: true,
        ..Handler::default()
    })
    .await;
    let text = "name = \"hang\"\nseed = 1\nstart = \"+200ms\"\n[bounds]\nmax_requests = 1000\n\
                max_duration = \"1s\"\n[clients]\ncount = 3\nreply_timeout = \"1h\"\n\
                [schedule]\nmodel = \"constant\"\nrate = 10\nduration = \"1h\"\n";
    let s = ValidScenario::parse(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&s, srv.addr, dir.path(), quiet()).await;
    let recs = records(dir.path());
    // Only what was due within max_duration was planned; the three first sends hung.
    assert_eq!(summary.info.requests_planned, 10);
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert!(recs.iter().all(|r| r.outcome == Outcome::Indeterminate));
    assert_eq!(summary.info.unsent, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_partition_the_scenario_and_merge_back() {
    let srv = server(Handler::default()).await;
    let s = scenario(
        7,
        "",
        "model = \"burst\"\ncount = 150\nwithin = \"2s\"\nfront_load = 3",
        "[misbehaviour]\nretransmissions = 0.05\nresubmissions = 0.05",
    );
    let plan = Plan::new(&s).unwrap();
    // Every request is in exactly one slice, for any N.
    for n in 1..=7 {
        let mut all = Vec::new();
        for i in 1..=n {
            let shard = Shard::new(i, n).unwrap();
            let slice: Vec<u64> = shard.requests(&plan).collect();
            assert_eq!(slice.len() as u64, shard.request_count(&plan));
            all.extend(slice);
        }
        all.sort();
        assert_eq!(all, (0..plan.total()).collect::<Vec<_>>(), "N = {n}");
    }
    // Played as three shards and merged, the records are those of the whole scenario.
    let root = tempfile::tempdir().unwrap();
    // Shards merge only when they share one absolute start instant: played at once, as on the day.
    let start = landrush::scenario::Start::At(reports::records::Stamp::from_micros(
        reports::records::Stamp::now().micros() + 500_000,
    ));
    let dirs: Vec<_> = (1..=3)
        .map(|i| root.path().join(format!("shard-{i}")))
        .collect();
    let options = |i| RunOptions {
        shard: Shard::new(i, 3).unwrap(),
        start: Some(start),
        ..quiet()
    };
    tokio::join!(
        run(&s, srv.addr, &dirs[0], options(1)),
        run(&s, srv.addr, &dirs[1], options(2)),
        run(&s, srv.addr, &dirs[2], options(3)),
    );
    let merged_dir = root.path().join("merged");
    let merged = landrush::records::merge::merge(&merged_dir, &dirs).unwrap();
    let recs = records(&merged_dir);
    let ids: BTreeSet<String> = recs.iter().map(|r| r.id.clone()).collect();
    let requests = RequestMaker::new(&s, &plan, None);
    let want: BTreeSet<String> = (0..plan.total()).map(|i| requests.id(i)).collect();
    assert_eq!(ids, want);
    assert_eq!(merged.requests_started, plan.total());
    assert_eq!(merged.transmissions as usize, recs.len());
    assert_eq!(merged.merged_from.len(), 3);
    // (A lag warning may appear on a loaded machine; a missing shard must not.)
    assert!(
        !merged.warnings.iter().any(|w| w.contains("missing")),
        "{:?}",
        merged.warnings
    );
    // A shard given twice is refused.
    let err = landrush::records::merge::merge(
        &root.path().join("bad"),
        &[dirs[0].clone(), dirs[0].clone()],
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("given twice"), "{err:#}");
}

#[test]
fn same_seed_same_requests_and_messages() {
    let s = scenario(
        5,
        "",
        "model = \"constant\"\nrate = 100\nduration = \"1s\"",
        "[misbehaviour]\nmalformed = 0.1\nresubmissions = 0.1\nretransmissions = 0.1",
    );
    let plan = Plan::new(&s).unwrap();
    let a = RequestMaker::new(&s, &plan, None);
    let b = RequestMaker::new(
        &ValidScenario::parse(&toml::to_string(s.scenario()).unwrap()).unwrap(),
        &plan,
        None,
    );
    let date = Stamp::parse("2026-12-01T09:00:00Z").unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..plan.total() {
        let (x, y) = (a.request(i), b.request(i));
        assert_eq!(x, y);
        let (mut mx, mut my) = (Vec::new(), Vec::new());
        x.render(date, &mut mx);
        y.render(date, &mut my);
        assert_eq!(mx, my);
        assert!(ids.insert(x.message_id.clone()));
        // CRLF only, dot-stuffed, ends with the end mark.
        assert!(mx.ends_with(b"\r\n.\r\n"));
        let text = String::from_utf8(mx).unwrap();
        assert!(!text.replace("\r\n", "").contains('\n'));
        for line in text.split("\r\n").filter(|l| l.starts_with('.')) {
            assert!(
                line == "." || line.starts_with(".."),
                "unstuffed line {line:?}"
            );
        }
    }
    let other = scenario(
        5,
        "",
        "model = \"constant\"\nrate = 100\nduration = \"1s\"",
        "",
    )
    .scenario()
    .clone();
    let mut other = other;
    other.seed = 100;
    let c = RequestMaker::new(&other, &Plan::new(&other).unwrap(), None);
    assert_ne!(a.request(0).domain, c.request(0).domain);
    let tagged = RequestMaker::new(&s, &plan, Some("rehearsal".into()));
    assert_eq!(tagged.request(3).id, "rehearsal-r0000003");
}

#[test]
fn scenario_mistakes_get_clear_errors() {
    let base = |extra_clients: &str, schedule: &str, rest: &str| {
        format!(
            "name = \"bad\"\nseed = 1\nstart = \"+1s\"\n[bounds]\nmax_requests = 100\n\
             max_duration = \"10s\"\n[clients]\ncount = 2\n{extra_clients}\n[schedule]\n\
             {schedule}\n{rest}\n"
        )
    };
    let constant = "model = \"constant\"\nrate = 10\nduration = \"2s\"";
    let cases = [
        (
            base("colour = \"red\"", constant, ""),
            "unknown field `colour`",
        ),
        (
            base("", "model = \"constant\"\nrate = 0\nduration = \"2s\"", ""),
            "schedule.rate",
        ),
        (
            base(
                "",
                "model = \"constant\"\nrate = 10\nduration = \"2 weeks\"",
                "",
            ),
            "unknown unit",
        ),
        (base("", "model = \"warp\"", ""), "unknown variant `warp`"),
        (
            base("", constant, "[misbehaviour]\nresubmissions = 1.5"),
            "misbehaviour.resubmissions",
        ),
        (
            base(
                "",
                constant,
                "[misbehaviour]\nmalformed = 0.6\nresubmissions = 0.6",
            ),
            "more than all the requests",
        ),
        (
            base(
                "",
                constant,
                "[domains]\npool = 10\ntld = \"fr\"\nhot = [\"x.fr\"]\naskers = 3",
            ),
            "3 different clients",
        ),
        (
            base(
                "",
                "model = \"burst\"\ncount = 100000000\nwithin = \"1s\"\nfront_load = 100",
                "",
            ),
            "peaks at",
        ),
        (
            base(
                "pre_connect = true",
                "model = \"closed\"\nrequests = 10",
                "",
            ),
            "closed model has no instant",
        ),
        (
            base(
                "",
                constant,
                "[domains]\npool = 10\ntld = \"fr\"\nhot = [\"not a name\"]",
            ),
            "needs at least two labels",
        ),
        (
            base(
                "",
                "model = \"constant\"\nrate = 1\nduration = \"9s\"",
                "[domains]\npool = 10\ntld = \"fr\"\nhot = [\"x.fr\"]\naskers = 2",
            ),
            "not within one second",
        ),
        (
            base("", constant, "").replace("+1s", "next tuesday"),
            "start `next tuesday`",
        ),
        (
            base("", constant, "").replace("max_requests = 100", "max_requests = 0"),
            "bounds.max_requests",
        ),
    ];
    for (text, want) in cases {
        let err = ValidScenario::parse(&text).expect_err(want);
        let shown = format!("{err:#}");
        assert!(shown.contains(want), "expected `{want}` in: {shown}");
    }
    // Every shipped scenario parses.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut shipped = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ValidScenario::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with('#'),
                "{} must open with a comment",
                path.display()
            );
            shipped += 1;
        }
    }
    assert!(shipped >= 5);
}

#[tokio::test]
async fn remote_targets_must_be_named() {
    use landrush::cli::target::resolve_target;
    assert!(resolve_target("127.0.0.1:25", &[]).await.is_ok());
    let err = resolve_target("192.0.2.7:25", &[]).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("--allow-remote-target 192.0.2.7"),
        "{err:#}"
    );
    assert!(
        resolve_target("192.0.2.7:25", &["192.0.2.7".into()])
            .await
            .is_ok()
    );
}

/// An intake node that is down the way a stopping MTA is: it accepts the connection, says
/// `421` and closes.
async fn node_saying_421() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"421 4.3.2 shutting down\r\n").await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_nodes_and_go_to_the_next_one_when_theirs_is_down() {
    use landrush::driver::smtp::targets::Targets;
    let s = scenario(
        12,
        "",
        "model = \"constant\"\nrate = 200\nduration = \"600ms\"",
        "",
    );
    let (a, b) = (
        server(Handler::default()).await,
        server(Handler::default()).await,
    );
    let targets = Targets::new(vec![a.addr, b.addr]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spread = tokio::time::timeout(
        TEST_LIMIT,
        run_scenario(&s, targets.clone(), dir.path(), quiet()),
    )
    .await
    .unwrap()
    .unwrap();
    let sent = records(dir.path());
    assert_eq!(
        spread.info.accepted,
        sent.len() as u64,
        "every request accepted"
    );
    // Each request arrived at its client's own node, as the seed picked it.
    let at: HashMap<String, usize> = [&a, &b]
        .iter()
        .enumerate()
        .flat_map(|(n, srv)| {
            let got = srv.handler.got.lock().unwrap().clone();
            got.into_iter().map(move |g| (g.landrush_id, n))
        })
        .collect();
    let addrs = [a.addr, b.addr];
    for r in &sent {
        assert_eq!(at[&r.id], targets.preferred(s.seed, r.client), "{r:?}");
        // The record names the node that took it.
        assert_eq!(r.node, Some(addrs[at[&r.id]].to_string()), "{r:?}");
    }
    let nodes_used: BTreeSet<usize> = at.values().copied().collect();
    assert_eq!(nodes_used.len(), 2, "both nodes got clients");
    assert_eq!(spread.info.target_addr, targets.label());

    // Node 0 down (421 at the greeting): its clients go to node 1, nothing is lost.
    let down = node_saying_421().await;
    let c = server(Handler::default()).await;
    let with_down = Targets::new(vec![down, c.addr]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::time::timeout(
        TEST_LIMIT,
        run_scenario(&s, with_down.clone(), dir.path(), quiet()),
    )
    .await
    .unwrap()
    .unwrap();
    let sent = records(dir.path());
    assert!(
        sent.iter().all(|r| r.outcome == Outcome::Accepted),
        "{sent:?}"
    );
    assert_eq!(c.handler.got.lock().unwrap().len(), sent.len());
    let node_c = Some(c.addr.to_string());
    assert!(
        sent.iter().all(|r| r.node == node_c),
        "all went to the node up"
    );
    // Each client opens one connection and keeps it: one move to the next node per client.
    let rescued = sent
        .iter()
        .filter(|r| with_down.preferred(s.seed, r.client) == 0)
        .map(|r| r.client)
        .collect::<BTreeSet<u32>>()
        .len() as u64;
    assert!(rescued > 0, "some clients preferred the node that was down");
    assert!(
        run.info.errors["node down: connected to the next one"] >= rescued,
        "{:?}",
        run.info.errors
    );
}
