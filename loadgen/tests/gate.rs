//! `landrush gate --runs`: judges run folders made before, writes junit.xml and summary.md, and
//! exits 1 when a threshold fails (0 when all pass; skipped ones do not fail).

mod support;

use std::path::Path;
use std::process::Command;

fn run_folder(dir: &Path, p99: f64, accepted_per_s: f64, lost: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let report = serde_json::json!({
        "verdict": if lost == 0 { "pass" } else { "fail" },
        "checks": {"loss": {"ok": lost == 0, "lost": lost, "gaps": 0}},
        "counts": {"sent": 100, "accepted": 100},
        "latency_ms": {"accept": {"p50": 1.0, "p99": p99, "max": p99}},
        "throughput": {"accepted_per_s": accepted_per_s}
    });
    std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
}

fn gate(dir: &Path, runs: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_landrush"))
        .arg("gate")
        .arg(dir.join("gate.toml"))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--runs")
        .args(runs)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_gate_fails_on_a_missed_threshold_and_passes_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        r#"
        [[run]]
        name = "ours"
        scenario = "x.toml"
        thresholds = ["verdict == pass", "lost == 0", 'accept_latency.p99 < "5ms"',
                      "throughput >= 3x ref"]
        [[run]]
        name = "ref"
        scenario = "x.toml"
        optional = true
        "#,
    )
    .unwrap();
    let (ours, reference) = (dir.path().join("ours"), dir.path().join("ref"));
    run_folder(&reference, 40.0, 1000.0, 0);

    run_folder(&ours, 7.5, 2500.0, 0);
    let (code, table) = gate(
        dir.path(),
        &[ours.to_str().unwrap(), reference.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("over by 2.5 ms (+50%)"), "{table}");
    assert!(table.contains("under by 0.50x (-17%)"), "{table}");
    let junit = std::fs::read_to_string(dir.path().join("out/junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 4);
    assert_eq!(junit.matches("<failure ").count(), 2, "{junit}");
    let summary = std::fs::read_to_string(dir.path().join("out/summary.md")).unwrap();
    assert!(summary.contains("**FAIL**"), "{summary}");

    run_folder(&ours, 3.0, 3500.0, 0);
    let (code, table) = gate(
        dir.path(),
        &[ours.to_str().unwrap(), reference.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{table}");

    // A loss fails whatever the speed.
    run_folder(&ours, 3.0, 3500.0, 1);
    let (code, _) = gate(
        dir.path(),
        &[
            &format!("ours={}", ours.display()),
            reference.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);

    // Without the optional reference its ratio is skipped, not failed and not passed.
    run_folder(&ours, 3.0, 3500.0, 0);
    let (code, table) = gate(dir.path(), &[ours.to_str().unwrap()]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("skip"), "{table}");
}

/// Runs must not cross-talk: a rehearsal into a folder that holds another run's records is
/// refused (nothing is started) unless `--overwrite` says to replace them.
#[test]
fn a_run_folder_with_records_is_refused_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("sent.jsonl"), "").unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/ci-smoke.toml");
    for command in ["rehearse", "run"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_landrush"));
        cmd.arg(command).arg(&scenario).arg("--out").arg(&out);
        if command == "run" {
            cmd.args(["--target", "127.0.0.1:9"]);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("--overwrite"), "{command}: {stderr}");
        assert!(
            out.join("sent.jsonl").exists(),
            "{command} left the records alone"
        );
    }
}

/// The CI gate's guard on group commit (its `mean_batch` threshold on the run `closed`), as
/// written in ci/gate.toml.
fn group_commit_threshold() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/gate.toml");
    let gate: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let runs = gate["run"].as_array().unwrap();
    let closed = runs.iter().find(|r| r["name"].as_str() == Some("closed"));
    let thresholds = closed.unwrap()["thresholds"].as_array().unwrap();
    thresholds
        .iter()
        .filter_map(|t| t.as_str())
        .find(|t| t.contains("mean_batch"))
        .expect("ci/gate.toml's run `closed` has a mean_batch threshold")
        .to_owned()
}

/// The CI gate's guard on group commit fails a real barrage that commits every request on its
/// own (`journal.max_batch = 1`): its throughput alone could still pass the ratio to Postfix,
/// whose fsyncs cost more per mail than one SQLite commit does.
#[test]
fn a_barrage_without_group_commit_fails_the_batch_threshold() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("barrage-no-group-commit");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             # landrush's own barrage, told to commit every request alone.\n\
             prev=\n\
             for a; do [ \"$prev\" = --config ] && printf '\\n[journal]\\nmax_batch = 1\\n' >> \"$a\"; prev=$a; done\n\
             exec {} buffer \"$@\"\n",
            env!("CARGO_BIN_EXE_landrush")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/ci-closed.toml"),
    )
    .unwrap()
    .replace("requests = 6000", "requests = 600");
    std::fs::write(dir.path().join("closed.toml"), closed).unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        format!(
            r#"
            [[run]]
            name = "closed"
            scenario = "closed.toml"
            barrage = "{}"
            thresholds = ["verdict == pass", "{}"]
            "#,
            wrapper.display(),
            group_commit_threshold()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_landrush"));
    command
        .arg("gate")
        .arg(dir.path().join("gate.toml"))
        .arg("--out")
        .arg(dir.path().join("out"));
    let output = support::output_within(command, support::TEST_LIMIT);
    let table = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{table}\n{stderr}");
    let config = std::fs::read_to_string(dir.path().join("out/closed/barrage.toml")).unwrap();
    assert!(config.contains("max_batch = 1"), "{config}");
    let line = |what: &str| {
        table
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line for {what}: {table}"))
            .to_owned()
    };
    assert!(line("verdict == pass").contains("pass"), "{table}");
    let batch = line("mean_batch");
    assert!(batch.contains(" 1 ") && batch.contains("FAIL"), "{table}");
}
