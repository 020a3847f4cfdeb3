//! `landrush fsync-audit` bites: barrage passes it; a test double on `barrage::smtp::serve` that
//! writes each request to a journal file and fsyncs before replying passes too; the same double
//! replying before its fsync (a group commit that answers first and syncs a few ms later, the bug
//! a SIGKILL cannot see) FAILS it.
//!
//! The double is this test binary itself, re-run under strace with its mode in the environment: a
//! test double, not a switch in the production buffer. So that the double is a helper and not a
//! test in disguise, this file has its own `main` (`harness = false` in Cargo.toml): run with the
//! double's environment it is the double, otherwise it runs the tests (an argument filters them
//! by name). Every test uses its own temporary folders and free ports, so copies of this binary
//! run side by side. Needs strace (Debian package `strace`; .ci/run installs it).

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barrage::endpoints::Endpoints;
use barrage::smtp::{Envelope, MessageHandler, Reply, SmtpLimits};
use landrush::fsync_audit::audit::AuditReport;
use landrush::fsync_audit::{AuditTarget, run_audit};
use landrush::rehearse::buffer::{BufferProgram, buffer_config};
use landrush::scenario::Scenario;
use landrush::schedule::ValidScenario;

const DIR_VAR: &str = "LANDRUSH_FSYNC_DOUBLE_DIR";
const MODE_VAR: &str = "LANDRUSH_FSYNC_DOUBLE_MODE";

fn scenario() -> ValidScenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/fsync-audit.toml");
    let mut s = Scenario::from_file(&path).unwrap();
    // Smaller than the shipped one: three tests run it under strace.
    s.bounds.max_requests = 300;
    if let landrush::scenario::Schedule::Burst { count, .. } = &mut s.schedule {
        *count = 300;
    }
    ValidScenario::new(s).unwrap()
}

fn strace_present() {
    let ok = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "strace is needed (apt-get install strace)");
}

async fn audit_double(mode: &str) -> AuditReport {
    strace_present();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let target = AuditTarget {
        program: std::env::current_exe().unwrap(),
        args: Vec::<OsString>::new(),
        envs: vec![
            (DIR_VAR.into(), data.clone().into()),
            (MODE_VAR.into(), mode.into()),
        ],
        data_dir: data,
    };
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        run_audit(
            &target,
            &scenario(),
            &dir.path().join("out"),
            "double.db-wal",
        ),
    )
    .await
    .expect("the audit finished in time")
    .unwrap();
    eprintln!("{mode}: {}", report.render());
    report
}

async fn barrage_passes_the_fsync_audit() {
    strace_present();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("barrage.toml");
    std::fs::write(&config, buffer_config(&data, None, None)).unwrap();
    let program = BufferProgram::landrush_at(env!("CARGO_BIN_EXE_landrush"));
    let target = AuditTarget::barrage(&program, &data, &config);
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        run_audit(&target, &scenario(), &dir.path().join("out"), "-wal"),
    )
    .await
    .expect("the audit finished in time")
    .unwrap();
    eprintln!("{}", report.render());
    assert!(report.ok, "{}", report.render());
    assert!(report.checked >= 250, "{report:?}");
    assert!(report.journal_syncs > 0);
}

async fn a_buffer_that_fsyncs_before_replying_passes() {
    let report = audit_double("fsync-then-reply").await;
    assert!(report.ok, "{}", report.render());
    assert!(report.checked >= 250, "{report:?}");
}

async fn a_buffer_that_replies_before_its_fsync_fails() {
    let report = audit_double("reply-then-fsync").await;
    assert!(!report.ok, "{}", report.render());
    assert!(report.before_fsync > 0, "{report:?}");
    assert_eq!(
        report.before_write, 0,
        "it does write before replying: {report:?}"
    );
    assert!(
        report.examples[0].contains("before any fsync of it completed"),
        "{:?}",
        report.examples
    );
}

fn main() -> std::process::ExitCode {
    if let (Ok(dir), Ok(mode)) = (std::env::var(DIR_VAR), std::env::var(MODE_VAR)) {
        double_buffer(dir, mode);
        return std::process::ExitCode::SUCCESS;
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    type Test = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
    let tests: [(&str, Test); 3] = [
        ("barrage_passes_the_fsync_audit", || {
            Box::pin(barrage_passes_the_fsync_audit())
        }),
        ("a_buffer_that_fsyncs_before_replying_passes", || {
            Box::pin(a_buffer_that_fsyncs_before_replying_passes())
        }),
        ("a_buffer_that_replies_before_its_fsync_fails", || {
            Box::pin(a_buffer_that_replies_before_its_fsync_fails())
        }),
    ];
    let mut failed = 0;
    let mut ran = 0;
    for (name, test) in tests {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let outcome = std::panic::catch_unwind(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(test())
        });
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        failed += outcome.is_err() as u32;
    }
    println!("test result: {} passed; {failed} failed", ran - failed);
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The double: appends each message to `DIR/double.db-wal` and answers `250 … ticket N`, with the
/// fsync before the reply (`fsync-then-reply`) or in a background group commit every 5 ms after
/// it (`reply-then-fsync`). What this binary is when the tests above start it under strace.
fn double_buffer(dir: String, mode: String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(Path::new(&dir).join("double.db-wal")).unwrap();
        let handler = Arc::new(Double {
            file: Arc::new(Mutex::new(file)),
            next: AtomicU64::new(1),
            sync_first: mode == "fsync-then-reply",
        });
        if !handler.sync_first {
            let file = handler.file.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let file = file.clone();
                    tokio::task::spawn_blocking(move || file.lock().unwrap().sync_data().unwrap())
                        .await
                        .unwrap();
                }
            });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            smtp: addr,
            http: addr,
            web: None,
            pid: std::process::id(),
        };
        endpoints.write(Path::new(&dir)).unwrap();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        barrage::smtp::serve(
            listener,
            Arc::new(SmtpLimits::default()),
            handler,
            async move {
                term.recv().await;
            },
        )
        .await
        .unwrap();
    });
}

struct Double {
    file: Arc<Mutex<std::fs::File>>,
    next: AtomicU64,
    sync_first: bool,
}

impl MessageHandler for Double {
    async fn deliver(&self, _envelope: &Envelope, message: Vec<u8>) -> Reply {
        let ticket = {
            let mut file = self.file.lock().unwrap();
            file.write_all(&message).unwrap();
            if self.sync_first {
                file.sync_data().unwrap();
            }
            self.next.fetch_add(1, Ordering::SeqCst)
        };
        let at = contract::utc::format_utc_micros(time::OffsetDateTime::now_utc());
        Reply::new(250, [2, 0, 0], format!("queued as ticket {ticket} at {at}"))
    }
}
