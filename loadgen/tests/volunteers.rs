//! The volunteers' rehearsal across machines, for real: a barrage, `landrush observe` as the
//! registration side, three `landrush run --shard I/3` processes firing at one absolute instant —
//! two of them with their clocks shifted by libfaketime (+50 ms and −30 ms) — then `merge` and the
//! checks. Skipped, with a note, where libfaketime is not installed (`apt-get install faketime`).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use landrush::check::{CheckOptions, check_records, check_run};
use landrush::rehearse::buffer::{Buffer, BufferProgram, BufferSpec, buffer_config};
use reports::records::{self, HandedRecord, Outcome, SentRecord, Stamp};
use serde_json::Value;
use support::{TEST_LIMIT, output_within};

const LANDRUSH: &str = env!("CARGO_BIN_EXE_landrush");
/// The clock shift of each shard, µs (shard 1 keeps the real clock).
const SHIFTS: [i64; 3] = [0, 50_000, -30_000];

const SCENARIO: &str = r#"
name = "volunteers-test"
seed = 11
start = "+2s"

[bounds]
max_requests = 300
max_duration = "30s"

[clients]
count = 30
idle = 0
reply_timeout = "10s"

[schedule]
model = "burst"
count = 300
within = "1s"
front_load = 2

[requests]
recipient = "requests@registry.invalid"
requesters = 20
requester_domain = "registrar.invalid"
sizes = [{ bytes = 600, weight = 1 }]

[domains]
pool = 100000
tld = "fr"
hot = ["exemple.fr"]
hot_generated = 3
askers = 3
hot_within = "1s"
"#;

/// libfaketime's library, where the Debian package puts it.
fn faketime_lib() -> Option<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Makes a child die with this test process.
fn dies_with_test(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
}

/// `landrush observe` running, with the lines of its stderr.
struct Observer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Observer {
    fn start(args: &[&str], out: &Path) -> Observer {
        let mut command = Command::new(LANDRUSH);
        command
            .arg("observe")
            .args(args)
            .arg("--out")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        dies_with_test(&mut command);
        let mut child = command.spawn().expect("landrush observe starts");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[observe] {line}");
                let _ = send.send(line);
            }
        });
        Observer { child, lines }
    }

    /// The value after `prefix` on the first line of stderr that starts with it.
    fn wait_line(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(TEST_LIMIT)
                .unwrap_or_else(|_| panic!("observe never said `{prefix}`"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Waits for `--until-idle` to end it.
    fn stopped_by_itself(mut self) {
        self.wait_line("landrush observe: stopped (until-idle)");
        assert!(self.child.wait().unwrap().success());
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.wait_line("landrush observe: stopped");
        assert!(self.child.wait().unwrap().success());
    }
}

/// A port for barrage's handover API that the observer is told before barrage binds it: the
/// observer's ack sink must exist before barrage starts (its config names it), and barrage's API
/// before the observer pulls; the observer retries until the API answers.
fn reserve_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn start_barrage(root: &Path, http_port: u16, ack_sink: Option<SocketAddr>) -> Buffer {
    let data_dir = root.join("barrage-data");
    let config = root.join("barrage.toml");
    std::fs::write(&config, buffer_config(&data_dir, ack_sink, None)).unwrap();
    let program = BufferProgram::landrush_at(LANDRUSH);
    let spec = BufferSpec {
        extra_args: program.extra_serve_args(),
        program,
        data_dir,
        config,
        log: root.join("barrage.log"),
        smtp: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], http_port)),
    };
    Buffer::start(spec).await.expect("barrage starts")
}

/// Runs `command` with its wall clock shifted by `shift_us` (libfaketime; the monotonic clock is
/// left alone, as NTP leaves it).
fn shifted(command: &mut Command, shift_us: i64) {
    command
        .env("LD_PRELOAD", faketime_lib().unwrap())
        .env("FAKETIME", format!("{:+.3}", shift_us as f64 / 1e6))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// One shard's `landrush run`, its clock shifted by its entry of [`SHIFTS`].
fn shard_command(
    scenario: &Path,
    shard: u32,
    smtp: SocketAddr,
    start: Stamp,
    out: &Path,
) -> Command {
    let mut command = Command::new(LANDRUSH);
    command
        .arg("run")
        .arg(scenario)
        .args([
            "--shard",
            &format!("{shard}/3"),
            "-q",
            "-t",
            &smtp.to_string(),
        ])
        .args(["--start", &start.to_string(), "--out"])
        .arg(out);
    let shift = SHIFTS[shard as usize - 1];
    if shift != 0 {
        shifted(&mut command, shift);
    }
    if shard == 3 {
        command.arg("--bundle");
    }
    command
}

/// Waits until the buffer has handed over and acked everything it accepted.
async fn wait_drained(url: &str, accepted: u64) {
    let drained = async {
        loop {
            if let Ok(stats) = landrush::rehearse::sampler::get_stats(url, None).await {
                let n = |k: &str| stats[k].as_u64().unwrap_or(0);
                let pending = stats["acks"]["pending"].as_u64().unwrap_or(1);
                if n("accepted") >= accepted && n("cursor") == n("accepted") && pending == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TEST_LIMIT, drained)
        .await
        .expect("the buffer drains");
}

fn run_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(records::RUN)).unwrap()).unwrap()
}

fn landrush(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(LANDRUSH);
    command.args(args);
    output_within(command, TEST_LIMIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_machines_with_skewed_clocks_rehearse_one_instant() {
    if faketime_lib().is_none() {
        eprintln!("NOTE: skipped: libfaketime is not installed (apt-get install -y faketime)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let scenario = root.join("volunteers-test.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let http_port = reserve_port();
    let handover = format!("http://127.0.0.1:{http_port}");
    let observed = root.join("observed");
    let observer = Observer::start(
        &["--handover", &handover, "--ack-sink", "127.0.0.1:0"],
        &observed,
    );
    let ack_sink: SocketAddr = observer
        .wait_line("landrush observe: ack sink")
        .parse()
        .unwrap();
    let barrage = start_barrage(root, http_port, Some(ack_sink)).await;
    let smtp = barrage.endpoints().smtp;

    let start = Stamp::from_micros(Stamp::now().micros() + 3_000_000);
    let shards: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("shard-{i}"))).collect();
    let runs: Vec<_> = (1..=3u32)
        .map(|i| {
            let command = shard_command(&scenario, i, smtp, start, &shards[i as usize - 1]);
            std::thread::spawn(move || output_within(command, TEST_LIMIT))
        })
        .collect();
    let mut accepted = 0;
    for (i, run) in runs.into_iter().enumerate() {
        let output = run.join().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("[shard {}] {stderr}", i + 1);
        assert!(output.status.success(), "shard {} failed: {stderr}", i + 1);
        accepted += run_json(&shards[i])["accepted"].as_u64().unwrap();
    }
    wait_drained(&handover, accepted).await;
    observer.stop();

    let clocks = measured_offsets(&shards);
    let merged = merge_all(root, &shards, &observed);
    no_false_violation(&merged, &clocks);
    planted_inside_one_shard(&merged);
    planted_across_shards(&merged);
    merge_refusals(root, &shards);
}

/// Each shard's offset from barrage's replies: within 2 ms of its shift, the shift inside.
fn measured_offsets(shards: &[PathBuf]) -> Vec<[i64; 2]> {
    let mut intervals = Vec::new();
    for (i, dir) in shards.iter().enumerate() {
        let clock = &run_json(dir)["clock"];
        assert_eq!(clock["method"], "buffer-replies", "{clock}");
        let lo = clock["offset_us"][0].as_i64().expect("offset known");
        let hi = clock["offset_us"][1].as_i64().unwrap();
        let mid = (lo + hi) / 2;
        eprintln!(
            "shard {}: shift {} us, measured [{lo}, {hi}] us, midpoint {mid} us, {} samples",
            i + 1,
            SHIFTS[i],
            clock["samples"]
        );
        assert!((mid - SHIFTS[i]).abs() <= 2_000, "shard {}: {clock}", i + 1);
        // The real shift lies in the interval (give libfaketime's own clock reads 200 µs).
        assert!(
            lo - 200 <= SHIFTS[i] && SHIFTS[i] <= hi + 200,
            "shard {}: {clock}",
            i + 1
        );
        intervals.push([lo, hi]);
    }
    intervals
}

/// Shards 1 and 2 as folders, shard 3 as its bundle, with the observer's records.
fn merge_all(root: &Path, shards: &[PathBuf], observed: &Path) -> PathBuf {
    let merged = root.join("merged");
    let bundle = root.join("shard-3.tar.gz");
    assert!(bundle.is_file(), "run --bundle wrote {}", bundle.display());
    let output = landrush(&[
        "merge",
        merged.to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
        bundle.to_str().unwrap(),
        "--observed",
        observed.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = run_json(&merged);
    assert_eq!(run["shards"].as_array().unwrap().len(), 3);
    assert_eq!(run["shards_missing"], serde_json::json!([]));
    merged
}

fn all_checks(dir: &Path, tolerance_us: u64) -> reports::checks::Checks {
    let options = CheckOptions {
        max_examples: 1_000,
        clock_tolerance_us: tolerance_us,
        ..CheckOptions::default()
    };
    check_run(dir, &options).unwrap()
}

fn count(checks: &reports::checks::Checks, check: &str, name: &str) -> u64 {
    checks[check].counts[name]
}

/// With the measured clocks no pair is a violation; on the raw stamps (records without their
/// machines) the skew alone makes some.
fn no_false_violation(merged: &Path, clocks: &[[i64; 2]]) {
    let checks = all_checks(merged, 0);
    for name in ["fifo", "loss", "duplicates", "acks"] {
        assert_eq!(checks[name].ok, Some(true), "{name}: {:?}", checks[name]);
    }
    assert_eq!(count(&checks, "fifo", "unjudged"), 0);
    let output = landrush(&["check", merged.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let sent: Vec<SentRecord> = records::read_all(&merged.join(records::SENT)).unwrap();
    let handed: Vec<HandedRecord> = records::read_all(&merged.join(records::HANDED)).unwrap();
    let raw = check_records(&sent, &handed, &[], &CheckOptions::default());
    eprintln!(
        "on the raw stamps, without clocks: {} false precedence violations (clocks {clocks:?})",
        count(&raw, "fifo", "precedence")
    );
    assert!(
        count(&raw, "fifo", "precedence") > 0,
        "the skew did not matter: a weak test"
    );
}

/// Accepted first transmissions of the merged folder, with their shard.
fn accepted_records(merged: &Path) -> Vec<(SentRecord, u32)> {
    let text = std::fs::read_to_string(merged.join(records::SENT)).unwrap();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            let shard = value["shard"].as_u64().unwrap() as u32;
            (serde_json::from_value(value).unwrap(), shard)
        })
        .filter(|(r, _): &(SentRecord, u32)| r.outcome == Outcome::Accepted && r.attempt == 1)
        .collect()
}

/// A copy of `merged` where the buffer gave A's seq to B and B's to A.
fn with_seqs_swapped(merged: &Path, a: &SentRecord, b: &SentRecord, name: &str) -> PathBuf {
    let dir = merged.with_file_name(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in [records::SENT, records::ACKS, records::RUN] {
        std::fs::copy(merged.join(file), dir.join(file)).unwrap();
    }
    let (sa, sb) = (a.ticket.unwrap(), b.ticket.unwrap());
    let handed: Vec<HandedRecord> = records::read_all(&merged.join(records::HANDED)).unwrap();
    let mut out = records::JsonlWriter::create(&dir.join(records::HANDED)).unwrap();
    for mut h in handed {
        h.seq = match h.seq {
            s if s == sa => sb,
            s if s == sb => sa,
            s => s,
        };
        out.write(&h).unwrap();
    }
    out.flush().unwrap();
    dir
}

fn assert_caught(
    dir: &Path,
    tolerance_us: u64,
    a: &SentRecord,
    b: &SentRecord,
    shards: (u32, u32),
) {
    let checks = all_checks(dir, tolerance_us);
    assert_eq!(checks["fifo"].ok, Some(false));
    let example = checks["fifo"].examples.iter().find(|e| {
        e["rule"]
            .as_str()
            .unwrap()
            .starts_with("real-time precedence")
            && e["earlier"]["id"] == a.id
            && e["later"]["id"] == b.id
    });
    let example = example.unwrap_or_else(|| panic!("{:#?}", checks["fifo"].examples));
    assert_eq!(
        example["earlier"]["machine"]["shard"],
        format!("{}/3", shards.0)
    );
    assert_eq!(
        example["later"]["machine"]["shard"],
        format!("{}/3", shards.1)
    );
    assert!(example["earlier"]["machine"]["host"].is_string());
}

/// Two requests of one shard, A answered just before B was sent: caught even with a tolerance of
/// 50 ms, which applies across machines only.
fn planted_inside_one_shard(merged: &Path) {
    let records = accepted_records(merged);
    let shard2: Vec<&SentRecord> = records
        .iter()
        .filter(|(_, s)| *s == 2)
        .map(|(r, _)| r)
        .collect();
    let gap = |a: &SentRecord, b: &SentRecord| {
        b.sent_at.unwrap().micros() - a.replied_at.unwrap().micros()
    };
    let (a, b) = shard2
        .iter()
        .flat_map(|a| shard2.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| gap(a, b) > 0 && a.ticket < b.ticket)
        .min_by_key(|(a, b)| gap(a, b))
        .expect("a pair in sequence inside shard 2");
    eprintln!(
        "planted inside shard 2: {} then {}, {} us apart",
        a.id,
        b.id,
        gap(a, b)
    );
    let dir = with_seqs_swapped(merged, a, b, "planted-inside");
    assert_caught(&dir, 50_000, a, b, (2, 2));
}

/// A on shard 2 (+50 ms) answered certainly before B on shard 3 (−30 ms) was sent, given the
/// measured intervals, by more than a millisecond.
fn planted_across_shards(merged: &Path) {
    let run = run_json(merged);
    let offset = |shard: usize| {
        let o = &run["shards"][shard - 1]["clock"]["offset_us"];
        (o[0].as_i64().unwrap(), o[1].as_i64().unwrap())
    };
    let ((lo2, _), (_, hi3)) = (offset(2), offset(3));
    let records = accepted_records(merged);
    let on = |shard| {
        records
            .iter()
            .filter(move |(_, s)| *s == shard)
            .map(|(r, _)| r)
    };
    let margin = |a: &SentRecord, b: &SentRecord| {
        (b.sent_at.unwrap().micros() - hi3) - (a.replied_at.unwrap().micros() - lo2)
    };
    let (a, b) = on(2)
        .flat_map(|a| on(3).map(move |b| (a, b)))
        .filter(|(a, b)| margin(a, b) > 1_000 && a.ticket < b.ticket)
        .min_by_key(|(a, b)| margin(a, b))
        .expect("a pair certainly in sequence across shards 2 and 3");
    eprintln!(
        "planted across shards: {} (2/3) then {} (3/3), {} us certain",
        a.id,
        b.id,
        margin(a, b)
    );
    let dir = with_seqs_swapped(merged, a, b, "planted-across");
    assert_caught(&dir, 0, a, b, (2, 3));
}

/// A copy of shard folder `from` as `name`, its run.json's `key` set to `value`.
fn edited_copy(root: &Path, from: &Path, name: &str, key: &str, value: Value) -> PathBuf {
    let copy = root.join(name);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    let mut run = run_json(&copy);
    run[key] = value;
    std::fs::write(copy.join(records::RUN), run.to_string()).unwrap();
    copy
}

fn merge_output(root: &Path, out: &str, inputs: &[&Path], extra: &[&str]) -> std::process::Output {
    let out = root.join(out);
    let mut args = vec!["merge", out.to_str().unwrap()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend(extra);
    landrush(&args)
}

/// A shard of another seed, start instant, target or scenario is refused, naming the shard and
/// the field; --force records the mismatch; a missing shard is recorded; a bundle whose file does
/// not match its sum is refused.
fn merge_refusals(root: &Path, shards: &[PathBuf]) {
    let edits = [
        ("seed", serde_json::json!(12), "seed is 12"),
        (
            "started_at",
            serde_json::json!("2026-12-08T09:00:00.000000Z"),
            "started_at is 2026-12-08T09:00:00.000000Z",
        ),
        (
            "target",
            serde_json::json!("127.0.0.9:25"),
            "target is 127.0.0.9:25",
        ),
        (
            "scenario_sha256",
            serde_json::json!("00"),
            "scenario_sha256 is Some(\"00\")",
        ),
    ];
    for (n, (key, value, said)) in edits.into_iter().enumerate() {
        let name = format!("other-{key}");
        let other = edited_copy(root, &shards[1], &name, key, value);
        let output = merge_output(root, &format!("refused-{n}"), &[&shards[0], &other], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains(&format!("{name} (shard 2/3): {said}")),
            "{stderr}"
        );
    }
    let other = root.join("other-seed");
    let output = merge_output(root, "forced", &[&shards[0], &other], &["--force"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = run_json(&root.join("forced"));
    let fields: Vec<&str> = run["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"seed"), "{fields:?}");
    assert_eq!(run["shards_missing"], serde_json::json!(["3/3"]));
    let output = merge_output(root, "twice", &[&shards[0], &shards[0]], &["--force"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("given twice"));
    tampered_bundle_refused(root, shards);
}

/// shard-3.tar.gz with one byte of its sent.jsonl changed (same length, so the tar still reads).
fn tampered_bundle_refused(root: &Path, shards: &[PathBuf]) {
    use flate2::read::GzDecoder;
    use std::io::{Read, Write};
    let mut tar = Vec::new();
    let gz = std::fs::read(root.join("shard-3.tar.gz")).unwrap();
    GzDecoder::new(&gz[..]).read_to_end(&mut tar).unwrap();
    let at = tar
        .windows(6)
        .position(|w| w == b"\"id\":\"")
        .expect("a record in the tar")
        + 6;
    tar[at] = if tar[at] == b'x' { b'y' } else { b'x' };
    let tampered = root.join("tampered.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&tampered).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap();
    let output = merge_output(root, "from-tampered", &[&shards[0], &tampered], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("sent.jsonl does not match its SHA-256"),
        "{stderr}"
    );
}

/// A foreign buffer's volunteers measure their clocks against the organiser's time endpoint:
/// `--preflight` reports the offset without sending anything, and a run records it in run.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_reference_measures_a_shifted_clock() {
    if faketime_lib().is_none() {
        eprintln!("NOTE: skipped: libfaketime is not installed (apt-get install -y faketime)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let barrage = start_barrage(root, 0, None).await;
    let smtp = barrage.endpoints().smtp.to_string();
    let handover = barrage.endpoints().http_url();
    let observed = root.join("observed");
    let observer = Observer::start(&["--handover", &handover, "--until-idle", "3s"], &observed);
    let time = observer.wait_line("landrush observe: time endpoint");
    let scenario = root.join("volunteers-test.toml");
    std::fs::write(&scenario, SCENARIO.replace("count = 300", "count = 30")).unwrap();
    let run = |extra: &[&str], out: &str| {
        let mut command = Command::new(LANDRUSH);
        command.arg("run").arg(&scenario).args(["-q", "-t", &smtp]);
        command
            .args(["--time-reference", &time, "--out"])
            .arg(root.join(out));
        command.args(extra);
        shifted(&mut command, 50_000);
        output_within(command, TEST_LIMIT)
    };
    let preflight = run(&["--preflight"], "preflight");
    let said = String::from_utf8_lossy(&preflight.stdout);
    eprintln!("{said}");
    assert!(
        preflight.status.success(),
        "{}",
        String::from_utf8_lossy(&preflight.stderr)
    );
    let offset_ms: f64 = said
        .lines()
        .find_map(|l| l.strip_prefix("clock: offset "))
        .and_then(|l| l.split_whitespace().next())
        .expect("preflight prints the offset")
        .parse()
        .unwrap();
    assert!((offset_ms - 50.0).abs() <= 2.0, "{said}");
    assert!(said.contains("SMTP greeting, EHLO and QUIT"), "{said}");
    assert!(
        !root.join("preflight").join(records::SENT).exists(),
        "preflight sent nothing"
    );
    let output = run(&[], "run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let clock = &run_json(&root.join("run"))["clock"];
    eprintln!("time exchange, shift 50000 us: {clock}");
    assert_eq!(clock["method"], "time-exchange");
    assert_eq!(clock["samples"], 16);
    let (lo, hi) = (
        clock["offset_us"][0].as_i64().unwrap(),
        clock["offset_us"][1].as_i64().unwrap(),
    );
    assert!(((lo + hi) / 2 - 50_000).abs() <= 2_000, "{clock}");
    observer.stopped_by_itself();
    let accepted = run_json(&root.join("run"))["accepted"].as_u64().unwrap();
    let handed: Vec<HandedRecord> = records::read_all(&observed.join(records::HANDED)).unwrap();
    assert_eq!(
        handed.len() as u64,
        accepted,
        "every accepted request handed, the file complete"
    );
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(observed.join("observe.json")).unwrap())
            .unwrap();
    assert_eq!(info["stopped_by"], "until-idle");
}

/// The countdown of `landrush run` to an instant seconds ahead, for real against barrage: one
/// stderr line per step still ahead (stderr is a pipe here, so no redrawing), in order, then
/// `firing`, then the run's summary — and the run completes. An instant a moment away gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_counts_down_to_the_instant_and_fires() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let barrage = start_barrage(root, 0, None).await;
    let smtp = barrage.endpoints().smtp.to_string();
    let scenario = root.join("volunteers-test.toml");
    std::fs::write(&scenario, SCENARIO.replace("count = 300", "count = 30")).unwrap();
    let run = |start: &str, out: &str| {
        let mut command = Command::new(LANDRUSH);
        command.arg("run").arg(&scenario).args(["-q", "-t", &smtp]);
        command
            .args(["--start", start, "--out"])
            .arg(root.join(out));
        let output = output_within(command, TEST_LIMIT);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        eprintln!("[run {out}] {stderr}");
        assert!(output.status.success(), "{stderr}");
        assert_eq!(run_json(&root.join(out))["accepted"], 30, "{stderr}");
        stderr
    };
    // Eight seconds ahead: T-10s and above are already past when the countdown starts.
    let start = Stamp::from_micros(Stamp::now().micros() + 8_000_000);
    let stderr = run(&start.to_string(), "ahead");
    let lines: Vec<&str> = stderr.lines().collect();
    let at = |text: &str| lines.iter().position(|l| *l == text);
    let steps: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix("landrush: T-")?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .collect();
    assert!(steps.windows(2).all(|w| w[0] > w[1]), "{steps:?}");
    assert!(
        steps.iter().all(|s| [5, 4, 3, 2, 1].contains(s)),
        "{steps:?}"
    );
    assert_eq!(steps.last(), Some(&1), "{stderr}");
    let last_step = at("landrush: T-1s").unwrap();
    let firing = at("landrush: T-0 firing").expect("the countdown fires");
    let summary = lines
        .iter()
        .position(|l| l.starts_with("landrush run `volunteers-test`"))
        .expect("the run's summary");
    assert!(last_step < firing && firing < summary, "{stderr}");
    // A moment away: no countdown at all.
    let stderr = run("+1s", "now");
    assert!(!stderr.contains("landrush: T-"), "{stderr}");
}
