//! [`pgcluster::spawn_tied`] children die with their parent: a parent (this test binary run
//! again) starts a child from a thread that then ends, and is SIGKILLed; the kernel kills the
//! child, which was alive until then.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const NAME: &str = "a_tied_child_outlives_its_thread_and_dies_with_its_process";
/// Set in the parent's environment: this run is the parent.
const PARENT: &str = "PGCLUSTER_TEST_TIED_PARENT";

#[test]
fn a_tied_child_outlives_its_thread_and_dies_with_its_process() {
    if std::env::var_os(PARENT).is_some() {
        be_the_parent();
    }
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(PARENT, "1")
        .stdout(Stdio::piped());
    let mut parent = pgcluster::spawn_tied(command).unwrap();
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let child: u32 = lines
        .find_map(|line| line.unwrap().rsplit_once("child ")?.1.parse().ok())
        .expect("the parent names its child");
    assert_eq!(state(child).map(|s| s.1), Some(parent.id()), "its parent's");
    assert_ne!(
        state(child).map(|s| s.0),
        Some('Z'),
        "alive after its thread ended"
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    // Bounded: the kernel kills it at once; this only leaves room for a machine under load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while state(child).is_some_and(|(s, _)| s != 'Z') {
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(child as i32), Signal::SIGKILL);
            panic!("child {child} outlived its parent");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `sleep` from a thread that ends at once, names it and waits to be killed.
fn be_the_parent() -> ! {
    let mut child = std::thread::spawn(|| {
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        pgcluster::spawn_tied(sleep).unwrap()
    })
    .join()
    .unwrap();
    // On the harness's line `test NAME ... `, which the reader looks through.
    println!("child {}", child.id());
    // The test kills this process first; should the child end before, it is reaped.
    let _ = child.wait();
    loop {
        std::thread::park();
    }
}

/// The state letter and parent pid of process `pid` (`None` once it is reaped).
fn state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may hold spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}
