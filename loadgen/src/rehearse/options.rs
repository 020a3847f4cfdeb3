//! What a rehearsal is given besides the scenario: which buffer ([`Target`]), where its handover
//! is observed ([`Handover`]), and the rest of [`RehearseOptions`]; and the unique run tag a
//! rehearsal gets by default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reports::records::Stamp;

use super::buffer::BufferProgram;
use super::tls::RehearsalTls;
use crate::check::CheckOptions;
use crate::records::folder::Existing;
use crate::scenario::Start;
use crate::scenario::buffer::BufferSection;

/// Which buffer is rehearsed.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start one as a child process in a temporary data dir.
    Spawn(BufferProgram),
    /// One already running, whose SMTP intake is here.
    Running(SocketAddr),
}

/// Where the handover is observed.
#[derive(Debug, Clone)]
pub enum Handover {
    /// Pull the handover API: the spawned buffer's (`None`), or one at this base URL.
    Api(Option<String>),
    /// Be the SMTP host the buffer relays requests to, listening here.
    Smtp(SocketAddr),
    /// Read the Maildir the buffer delivers to.
    Maildir(PathBuf),
}

/// Everything a rehearsal needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RehearseOptions {
    pub target: Target,
    pub handover: Handover,
    /// Where the ack sink listens (`None` with a spawned buffer: a free port); no sink with
    /// `acks: false`.
    pub ack_sink: Option<SocketAddr>,
    /// False when the buffer sends no acks (`--no-acks`): the ack check is skipped, not passed.
    pub acks: bool,
    /// The fake registry's capacity (requests/s, 0 = unlimited), batch size and late start.
    pub registry_rate: f64,
    pub registry_batch: usize,
    pub registry_delay: Duration,
    /// Bearer token for the handover API.
    pub api_token: Option<String>,
    /// Give up waiting for the handover and acks after this long without progress.
    pub quiet_period: Duration,
    /// After everything arrived, keep listening this long for late extras (a second ack…).
    pub settle: Duration,
    pub start: Option<Start>,
    /// Prefix of every id and Message-ID of the run (recorded in run.json); `None`: a unique
    /// tag ([`unique_run_tag`]), so that nothing from another run (its acks, its handover) can
    /// be taken for this one's.
    pub tag: Option<String>,
    /// What to do when the run folder already holds records.
    pub existing: Existing,
    pub scenario_file: Option<PathBuf>,
    /// Live progress line and the driver's summary on stderr.
    pub progress: bool,
    /// Keep the spawned buffer's data dir (its journal) in the run folder as `buffer-data/`.
    pub keep_data: bool,
    /// How the checkers read the run (clock tolerance, examples…); `acks_expected` and
    /// `first_seq` are set by the rehearsal.
    pub check: CheckOptions,
    /// The spawned buffer's layout as the command line says it (`--nodes`, `--journal`,
    /// `--standby`), over the scenario's `[buffer]` key by key.
    pub buffer: BufferSection,
    /// STARTTLS rehearsed: the spawned buffer serves a throwaway certificate with this
    /// `smtp.tls`, and every client group upgrades trusting it (see [`super::tls`]).
    pub tls: Option<RehearsalTls>,
}

impl Default for RehearseOptions {
    fn default() -> Self {
        RehearseOptions {
            target: Target::Running(SocketAddr::from(([127, 0, 0, 1], 25))),
            handover: Handover::Api(None),
            ack_sink: None,
            acks: true,
            registry_rate: 0.0,
            registry_batch: 500,
            registry_delay: Duration::ZERO,
            api_token: None,
            quiet_period: Duration::from_secs(5),
            settle: Duration::from_millis(300),
            start: None,
            tag: None,
            existing: Existing::Refuse,
            scenario_file: None,
            progress: true,
            keep_data: false,
            check: CheckOptions::default(),
            buffer: BufferSection::default(),
            tls: None,
        }
    }
}

/// A run tag no other run has: `PREFIX-` (when given) then the launch time in µs and the pid, in
/// base 36 (`smoke-mbq3x1k2a9-1f3`).
pub fn unique_run_tag(prefix: Option<&str>) -> String {
    let unique = format!(
        "{}-{}",
        base36(Stamp::now().micros().unsigned_abs()),
        base36(std::process::id() as u64)
    );
    match prefix {
        Some(p) => format!("{p}-{unique}"),
        None => format!("run-{unique}"),
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tags_differ_and_keep_their_prefix() {
        let a = unique_run_tag(Some("smoke"));
        std::thread::sleep(Duration::from_micros(2));
        let b = unique_run_tag(Some("smoke"));
        assert_ne!(a, b);
        assert!(a.starts_with("smoke-"), "{a}");
        assert!(unique_run_tag(None).starts_with("run-"));
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a tag fits in a Message-ID's local part: {a}"
        );
    }
}
