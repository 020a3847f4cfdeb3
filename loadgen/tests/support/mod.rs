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

use landrush::check::CheckOptions;
use landrush::rehearse::options::{Handover, RehearseOptions, Target};
use landrush::rehearse::{Rehearsal, rehearse};
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

/// A free loopback port (bound and released; the ack sink binds it again at once).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// Rehearses a running buffer (the fake) with the real driver, fake registry, ack sink and
/// checkers: the `--target --handover --ack-sink` path of `landrush rehearse`.
pub async fn rehearse_running(
    scenario: &ValidScenario,
    smtp: SocketAddr,
    api_url: String,
    ack_sink: SocketAddr,
    out: &Path,
) -> Rehearsal {
    let options = RehearseOptions {
        target: Target::Running(smtp),
        handover: Handover::Api(Some(api_url)),
        ack_sink: Some(ack_sink),
        acks: true,
        // The drain ends on the fake's own "done" (its /v1/stats: nothing left to hand over or
        // ack); the quiet period is only the fallback for a fake that stopped answering.
        quiet_period: Duration::from_secs(60),
        progress: false,
        check: CheckOptions::default(),
        ..RehearseOptions::default()
    };
    tokio::time::timeout(TEST_LIMIT, rehearse(scenario, out, options))
        .await
        .expect("the rehearsal finishes in time")
        .expect("the rehearsal runs")
}
