//! Test doubles for the checkers' proof: a small fake buffer with a deliberate flaw, and helpers to
//! rehearse it with the real driver, observers and checkers.
//!
//! The fake speaks SMTP through barrage's own server (`barrage::smtp::serve`), keeps its queue in
//! memory, serves the same handover API as barrage (`/v1/requests`, `/v1/cursor`, `/v1/stats`) over
//! a minimal HTTP/1.1 server, and sends acks by SMTP to the ack sink. Each [`Flaw`] breaks exactly
//! one rule of the contract (docs/contract.md). None of this is in the production binary.

#![allow(dead_code)]

pub mod fake_buffer;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fake_buffer::FakeBuffer;
use landrush::check::CheckOptions;
use landrush::rehearse::options::{Handover, RehearseOptions, Target};
use landrush::rehearse::rig::Rig;
use landrush::rehearse::{Rehearsal, rehearse_with};
use landrush::schedule::ValidScenario;

/// Every test gives up after this long rather than hang CI.
pub const TEST_LIMIT: Duration = Duration::from_secs(120);

/// A small front-loaded scenario of `count` requests over two seconds from 10 clients, with
/// `misbehaviour` (TOML lines of the [misbehaviour] section).
pub fn scenario(name: &str, count: u32, misbehaviour: &str) -> ValidScenario {
    let text = format!(
        r#"
name = "{name}"
seed = 7
start = "+1s"

[bounds]
max_requests = {count}
max_duration = "30s"

[clients]
count = 10
idle = 0
reply_timeout = "5s"

[schedule]
model = "burst"
count = {count}
within = "2s"
front_load = 2

[requests]
recipient = "requests@registry.invalid"
requesters = 20
requester_domain = "registrar.invalid"
sizes = [{{ bytes = 700, weight = 1 }}]

[domains]
pool = 100000
tld = "fr"
hot = ["exemple.fr"]
hot_generated = 3
askers = 3
hot_within = "1s"

[misbehaviour]
{misbehaviour}
"#
    );
    ValidScenario::parse(&text).expect("test scenario parses")
}

/// Runs `command` to the end with its stdout and stderr read (a full pipe would stall it), as a
/// child that dies with this test process; kills it and fails the test after `limit`.
pub fn output_within(mut command: std::process::Command, limit: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::Pid::this();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGKILL,
                )?;
            }
            Ok(())
        });
    }
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(output) => output.expect("the command's output is read"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}

/// Rehearses a running buffer (the fake) with the real driver, fake registry, ack sink and
/// checkers: the `--target --handover --ack-sink` path of `landrush rehearse`. The ack sink
/// listens on a port of its own choosing (port 0), and the fake is told where it is before the
/// first request.
pub async fn rehearse_running(
    scenario: &ValidScenario,
    fake: &FakeBuffer,
    out: &Path,
) -> Rehearsal {
    let options = RehearseOptions {
        target: Target::Running(fake.smtp),
        handover: Handover::Api(Some(fake.url())),
        ack_sink: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        acks: true,
        // The drain ends on the fake's own "done" (its /v1/stats: nothing left to hand over or
        // ack); the quiet period is only the fallback for a fake that stopped answering.
        quiet_period: Duration::from_secs(60),
        progress: false,
        check: CheckOptions::default(),
        ..RehearseOptions::default()
    };
    let ready = |rig: &Rig| fake.relay_to(rig.ack_sink.as_ref().expect("acks expected").addr());
    tokio::time::timeout(TEST_LIMIT, rehearse_with(scenario, out, options, ready))
        .await
        .expect("the rehearsal finishes in time")
        .expect("the rehearsal runs")
}
