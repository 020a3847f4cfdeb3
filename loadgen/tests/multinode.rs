//! Rehearsals of the real barrage on its PostgreSQL journal (through the `landrush` binary, a
//! throwaway PostgreSQL cluster started by the rehearsal): two intake nodes sharing one database
//! under a small burst, then the same with a node SIGKILLed, the database restarted, and the
//! primary killed and its synchronous standby promoted. The contract must hold through each
//! (verdict pass: every 250 handed over, gap-free, in precedence order across the nodes, one ack
//! each), and while the database is down no request may get a 250. Bounded in time; no
//! assertion on speed.

use std::collections::BTreeSet;
use std::time::Duration;

use landrush::rehearse::buffer::BufferProgram;
use landrush::rehearse::options::{RehearseOptions, Target};
use landrush::rehearse::{Rehearsal, rehearse_with};
use landrush::schedule::ValidScenario;
use reports::checks::{Verdict, verdict};
use reports::records::{self, FaultRecord, Outcome, SentRecord};

/// A rehearsal here starts PostgreSQL (and a standby) besides the nodes: generous on a busy
/// machine, and still a bound.
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// A small front-loaded burst over four seconds from 16 clients that retry what got no reply or
/// a 451, on PostgreSQL with `buffer` (more [buffer] keys) and `faults` ([[faults]] tables).
fn scenario(name: &str, buffer: &str, faults: &str) -> ValidScenario {
    let text = format!(
        r#"
name = "{name}"
seed = 17
start = "+1s"

[buffer]
journal = "postgres"
{buffer}

[bounds]
max_requests = 600
max_duration = "60s"

[clients]
count = 16
reply_timeout = "15s"
retries = 10
retry_backoff = "300ms"
retry_jitter = "200ms"

[schedule]
model = "burst"
count = 600
within = "4s"
front_load = 2

[requests]
recipient = "requests@registry.invalid"
requesters = 16
requester_domain = "registrar.invalid"
sizes = [{{ bytes = 900, weight = 1 }}]

[domains]
pool = 100000
tld = "fr"
hot = ["exemple.fr"]
askers = 3

[misbehaviour]
resubmissions = 0.02
retransmissions = 0.01

{faults}
"#
    );
    ValidScenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Rehearses `scenario` with the built-in barrage; returns the rehearsal, the run folder and the
/// nodes' SMTP addresses.
async fn rehearse(
    scenario: &ValidScenario,
) -> (Rehearsal, tempfile::TempDir, Vec<std::net::SocketAddr>) {
    let dir = tempfile::tempdir().unwrap();
    let options = RehearseOptions {
        target: Target::Spawn(BufferProgram::landrush_at(env!("CARGO_BIN_EXE_landrush"))),
        progress: false,
        // The drain ends on the buffer's own "done"; this is only the fallback.
        quiet_period: Duration::from_secs(20),
        ..RehearseOptions::default()
    };
    let mut nodes = Vec::new();
    let ready = |rig: &landrush::rehearse::rig::Rig| nodes = rig.targets.all().to_vec();
    let r = tokio::time::timeout(
        TEST_LIMIT,
        rehearse_with(scenario, dir.path(), options, ready),
    )
    .await
    .expect("the rehearsal finished in time")
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{}", landrush::cli::rehearse::summary(&r));
    (r, dir, nodes)
}

fn sent(dir: &tempfile::TempDir) -> Vec<SentRecord> {
    records::read_all(&dir.path().join(records::SENT)).unwrap()
}

fn faults(dir: &tempfile::TempDir) -> Vec<FaultRecord> {
    records::read_all(&dir.path().join(records::FAULTS)).unwrap()
}

/// The contract held: pass, and everything accepted arrived.
fn assert_passed(r: &Rehearsal) {
    assert_eq!(verdict(&r.checks), Verdict::Pass, "{:#?}", r.checks);
    assert!(r.drain.complete, "{:?}", r.drain);
    assert!(r.drain.accepted > 0);
}

/// While `fault` was in effect no 250 was given to a request sent and answered inside it, at
/// least one was refused with a 451, and requests were accepted again after it.
fn assert_refused_while_down(sent: &[SentRecord], fault: &FaultRecord) {
    let until = fault.until.expect("the fault ended");
    let inside: Vec<&SentRecord> = sent
        .iter()
        .filter(|s| {
            s.sent_at.is_some_and(|t| t >= fault.at) && s.replied_at.is_some_and(|t| t <= until)
        })
        .collect();
    assert!(
        inside.iter().any(|s| s.code == Some(451)),
        "no 451 while the database was down ({} requests sent and answered meanwhile)",
        inside.len()
    );
    assert!(
        inside.iter().all(|s| s.code != Some(250)),
        "a 250 while the database was down: {:?}",
        inside.iter().find(|s| s.code == Some(250))
    );
    assert!(
        sent.iter()
            .any(|s| s.outcome == Outcome::Accepted && s.sent_at.is_some_and(|t| t > until)),
        "nothing was accepted after the database came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_journal_keep_the_contract() {
    let s = scenario("two-nodes", "nodes = 2", "");
    let (r, dir, nodes) = rehearse(&s).await;
    assert_passed(&r);
    assert_eq!(nodes.len(), 2);
    // The clients were spread over both nodes, and both nodes' clients were served.
    let targets = landrush::driver::smtp::targets::Targets::new(nodes).unwrap();
    let served: BTreeSet<usize> = sent(&dir)
        .iter()
        .filter(|r| r.outcome == Outcome::Accepted)
        .map(|r| targets.preferred(s.seed, r.client))
        .collect();
    assert_eq!(served.len(), 2, "both nodes' clients were accepted");
    for node in 1..=2 {
        assert!(dir.path().join(format!("buffer-{node}.log")).exists());
    }
    assert!(
        !dir.path().join("postgres").exists(),
        "the throwaway cluster is removed at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_burst_loses_nothing() {
    // Node 1: the one whose handover API the registry and the sampler use, so they must go on
    // with node 2 meanwhile.
    let kill = "[[faults]]\nkind = \"kill\"\nnode = 1\nat = \"1s\"\nrestart_after = \"400ms\"";
    let s = scenario("node-kill", "nodes = 2", kill);
    let (r, dir, _) = rehearse(&s).await;
    assert_passed(&r);
    let faults = faults(&dir);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].kind, "kill");
    assert_eq!(faults[0].detail["node"], 1, "{:?}", faults[0]);
    assert!(faults[0].detail.get("error").is_none(), "{:?}", faults[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_mid_burst_gives_451s_then_recovers() {
    let restart =
        "[[faults]]\nkind = \"postgres\"\naction = \"restart\"\nat = \"1s\"\nfor = \"1s\"";
    let s = scenario("pg-restart", "nodes = 2", restart);
    let (r, dir, _) = rehearse(&s).await;
    assert_passed(&r);
    let faults = faults(&dir);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].detail["action"], "restart", "{:?}", faults[0]);
    assert_refused_while_down(&sent(&dir), &faults[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_synchronous_standby_loses_no_250() {
    let failover =
        "[[faults]]\nkind = \"postgres\"\naction = \"failover\"\nat = \"1s\"\nfor = \"500ms\"";
    let s = scenario("pg-failover", "nodes = 2\nstandby = true", failover);
    let (r, dir, _) = rehearse(&s).await;
    assert_passed(&r);
    let faults = faults(&dir);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].detail["action"], "failover", "{:?}", faults[0]);
    assert!(
        faults[0].detail.get("end_error").is_none(),
        "{:?}",
        faults[0]
    );
    assert_refused_while_down(&sent(&dir), &faults[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_that_cannot_run_are_refused_before_anything_starts() {
    let s = scenario("bad", "", "");
    let dir = tempfile::tempdir().unwrap();
    for (over, says) in [
        (
            landrush::scenario::buffer::BufferSection {
                journal: Some(landrush::scenario::buffer::JournalKind::Sqlite),
                nodes: Some(2),
                standby: None,
            },
            "journal = \"postgres\"",
        ),
        (
            landrush::scenario::buffer::BufferSection {
                journal: Some(landrush::scenario::buffer::JournalKind::Sqlite),
                nodes: None,
                standby: Some(true),
            },
            "standby",
        ),
    ] {
        let options = RehearseOptions {
            target: Target::Spawn(BufferProgram::landrush_at(env!("CARGO_BIN_EXE_landrush"))),
            progress: false,
            buffer: over,
            ..RehearseOptions::default()
        };
        let err = rehearse_with(&s, dir.path(), options, |_| {})
            .await
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains(says), "{err:#}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was started or written"
    );
    let kill3 = "[[faults]]\nkind = \"kill\"\nnode = 3\nat = \"1s\"";
    let err = ValidScenario::parse(&scenario_text_with_nodes(2, kill3)).unwrap_err();
    assert!(format!("{err:#}").contains("node = 3"), "{err:#}");
}

/// A minimal scenario text on `nodes` postgres nodes with `faults`.
fn scenario_text_with_nodes(nodes: u32, faults: &str) -> String {
    format!(
        "name = \"x\"\nseed = 1\nstart = \"+1s\"\n[buffer]\nnodes = {nodes}\njournal = \
         \"postgres\"\n[bounds]\nmax_requests = 10\nmax_duration = \"10s\"\n[clients]\ncount = \
         2\n[schedule]\nmodel = \"instant\"\ncount = 10\n{faults}\n"
    )
}

/// Asks the database behind `url` (as the nodes are given it) whether it is a standby, with
/// `psql`, which reads multi-host URLs and `target_session_attrs` as tokio-postgres does.
fn in_recovery(url: &str) -> String {
    let psql = pgcluster::bindir().unwrap().join("psql");
    let out = std::process::Command::new(psql)
        .args(["-X", "-A", "-t", "-c", "SELECT pg_is_in_recovery()", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_url_reaches_the_primary_and_after_a_failover_the_promoted_standby() {
    use landrush::rehearse::database::Database;
    let dir = tempfile::tempdir().unwrap();
    let mut database = tokio::time::timeout(TEST_LIMIT, Database::start(dir.path(), true))
        .await
        .expect("started in time")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let url = database.url();
    assert!(url.contains("target_session_attrs=read-write"), "{url}");
    assert_eq!(url.matches("127.0.0.1:").count(), 2, "{url}");
    assert_eq!(in_recovery(&url), "f", "the URL reaches the primary");
    let primary_pid = database.describe_current()["pid"].clone();
    // What the failover fault does: SIGKILL of the primary, then the standby promoted.
    database.kill().await.unwrap();
    database.promote().await.unwrap();
    assert_eq!(
        in_recovery(&url),
        "f",
        "the same URL reaches the promoted standby"
    );
    assert_ne!(database.describe_current()["pid"], primary_pid);
    assert!(
        database.promote().await.is_err(),
        "one standby, one failover"
    );
    // A restart fault on the database that now takes the writes.
    database.stop().await.unwrap();
    database.start_again().await.unwrap();
    assert_eq!(in_recovery(&url), "f");
    database.shut_down().await;
}
