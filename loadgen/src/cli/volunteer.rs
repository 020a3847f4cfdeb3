//! What `landrush run` adds for a volunteer's machine: `--time-reference` (the clock exchange
//! before the instant and after the run), the provenance keys of `run.json` once the run is over
//! (host, clock, scenario digest: contract: Run records), `--bundle`, and `--preflight`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use reports::records::ClockEstimate;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::clock::exchange;
use crate::records::{bundle, provenance};
use crate::schedule::ValidScenario;
use crate::schedule::shard::Shard;

/// The volunteers' flags of `landrush run`.
#[derive(Debug, Clone, Args, Default)]
pub struct VolunteerArgs {
    /// The organiser's time endpoint (`landrush observe` prints it: http://HOST:PORT): the clock
    /// offset is measured against it before the instant and after the run, instead of from the
    /// buffer's replies. Needed when the buffer's replies carry no time.
    #[arg(long, value_name = "URL")]
    pub time_reference: Option<String>,

    /// After the run, write the run folder as one file OUT.tar.gz (with SHA-256 sums) to send back.
    #[arg(long)]
    pub bundle: bool,

    /// Check this machine's setup and exit without sending a request: one SMTP connection (EHLO,
    /// QUIT) and its round trip, the clock offset against --time-reference, the descriptor limit.
    #[arg(long)]
    pub preflight: bool,
}

/// Before the instant: the descriptor limit against the shard's clients, and the exchanges with the
/// time reference when there is one, printed with loud warnings for what would spoil the run.
pub async fn before(
    args: &VolunteerArgs,
    scenario: &ValidScenario,
    shard: Shard,
) -> anyhow::Result<Vec<exchange::Exchange>> {
    if let Some(warning) = descriptors(scenario, shard)?.1 {
        eprintln!("landrush: {warning}");
    }
    let Some(url) = &args.time_reference else {
        return Ok(Vec::new());
    };
    let exchanges = exchange::measure(url, exchange::SAMPLES).await?;
    for line in describe_offset(&exchange::estimate(url, &exchanges)) {
        eprintln!("landrush: {line}");
    }
    Ok(exchanges)
}

/// After the run: measures the clock, adds the provenance keys to run.json, prints the clock and
/// writes the bundle when asked.
pub async fn after(
    args: &VolunteerArgs,
    out: &Path,
    scenario: &ValidScenario,
    target: SocketAddr,
    mut exchanges: Vec<exchange::Exchange>,
) -> anyhow::Result<()> {
    let clock = match &args.time_reference {
        Some(url) => {
            exchanges.extend(exchange::measure(url, exchange::SAMPLES).await?);
            Some(exchange::estimate(url, &exchanges))
        }
        None => None,
    };
    let spec = serde_json::to_value(scenario.scenario())?;
    let clock = provenance::stamp_after_run(out, &spec, clock, &target.to_string())?;
    print_clock(&clock);
    if args.bundle {
        let file = bundle::write(out, None)?;
        eprintln!("landrush: bundle {} (send this file back)", file.display());
    }
    Ok(())
}

fn print_clock(clock: &ClockEstimate) {
    match clock.offset_us {
        Some([lo, hi]) => eprintln!(
            "landrush: clock offset against {}: {:+.3} ms ± {:.3} ms ({} samples)",
            clock.reference,
            (lo + hi) as f64 / 2_000.0,
            (hi - lo) as f64 / 2_000.0,
            clock.samples
        ),
        None => eprintln!(
            "landrush: !! CLOCK OFFSET UNKNOWN: {}; precedence against other machines cannot be \
             judged",
            clock.note.as_deref().unwrap_or("not measured")
        ),
    }
}

/// A clock uncertainty above this spoils cross-machine precedence: preflight warns.
const WARN_UNCERTAINTY_US: i64 = 20_000;

/// `--preflight`: prints what it found, loudly for what would spoil the run. Errors only when the
/// target cannot be reached at all.
pub async fn preflight(
    args: &VolunteerArgs,
    scenario: &ValidScenario,
    shard: Shard,
    target: SocketAddr,
) -> anyhow::Result<()> {
    let rtt = smtp_round_trip(target).await?;
    println!(
        "target {target}: SMTP greeting, EHLO and QUIT in {:.3} ms",
        rtt.as_secs_f64() * 1_000.0
    );
    if let Some(url) = &args.time_reference {
        let exchanges = exchange::measure(url, exchange::SAMPLES).await?;
        for line in describe_offset(&exchange::estimate(url, &exchanges)) {
            println!("{line}");
        }
    } else {
        println!("clock: measured from barrage's replies during the run (no --time-reference)");
    }
    let (line, warning) = descriptors(scenario, shard)?;
    println!("{line}");
    if let Some(warning) = warning {
        println!("{warning}");
    }
    Ok(())
}

/// A clock further off than this fires the machine visibly early or late: a warning.
const WARN_OFFSET_US: i64 = 100_000;

/// The offset as printed, with warnings when it would spoil the run.
fn describe_offset(clock: &ClockEstimate) -> Vec<String> {
    let Some([lo, hi]) = clock.offset_us else {
        let why = clock.note.as_deref().unwrap_or("not measured");
        return vec![format!("!! WARNING: clock offset unknown: {why}")];
    };
    let mut lines = vec![format!(
        "clock: offset {:+.3} ms ± {:.3} ms against {}",
        (lo + hi) as f64 / 2_000.0,
        (hi - lo) as f64 / 2_000.0,
        clock.reference
    )];
    if hi - lo > 2 * WARN_UNCERTAINTY_US {
        lines.push(
            "!! WARNING: the clock uncertainty is large: precedence against other machines will \
             be judged loosely; use a nearer network"
                .into(),
        );
    }
    if lo.abs().min(hi.abs()) > WARN_OFFSET_US {
        lines.push(
            "!! WARNING: this machine's clock is more than 100 ms off: it will fire early or \
             late; synchronise it (NTP, chrony) before the instant"
                .into(),
        );
    }
    lines
}

/// The descriptor limit against what the shard's clients need: the line to print, and a warning.
fn descriptors(scenario: &ValidScenario, shard: Shard) -> anyhow::Result<(String, Option<String>)> {
    let all = u32::try_from(scenario.clients.total_clients()).unwrap_or(u32::MAX);
    let clients = (0..all).filter(|&c| shard.owns_client(c)).count() as u64;
    let idle = scenario
        .clients
        .idle_total()
        .div_ceil(u64::from(shard.count));
    let need = clients + idle + 64;
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    let line = format!("descriptors: limit {soft}, this shard needs about {need}");
    let warning = (soft < need).then(|| {
        format!("!! WARNING: raise the descriptor limit (ulimit -n {need}) or the run will fail")
    });
    Ok((line, warning))
}

/// One SMTP session: greeting, EHLO, QUIT; returns how long it took.
async fn smtp_round_trip(target: SocketAddr) -> anyhow::Result<Duration> {
    let begun = Instant::now();
    let session = async {
        let stream = tokio::net::TcpStream::connect(target).await?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        expect_reply(&mut read, "220").await?;
        write
            .write_all(b"EHLO preflight.landrush.invalid\r\n")
            .await?;
        expect_reply(&mut read, "250").await?;
        write.write_all(b"QUIT\r\n").await?;
        expect_reply(&mut read, "221").await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .with_context(|| format!("{target}: no SMTP session within 10 s"))?
        .with_context(|| format!("preflight: the SMTP session with {target} failed"))?;
    Ok(begun.elapsed())
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect_reply<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    code: &str,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        let mut line = String::new();
        anyhow::ensure!(read.read_line(&mut line).await? > 0, "connection closed");
        anyhow::ensure!(
            line.starts_with(code),
            "expected {code}, got `{}`",
            line.trim()
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
    anyhow::bail!("a reply of more than 100 lines")
}

/// `landrush bundle DIR`: one file to send a run folder back in.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The run folder.
    pub dir: PathBuf,
    /// The file to write [default: DIR.tar.gz beside DIR].
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// Runs `landrush bundle`.
pub fn bundle_command(args: BundleArgs) -> anyhow::Result<()> {
    let file = bundle::write(&args.dir, args.out.as_deref())?;
    eprintln!("landrush: bundle {}", file.display());
    Ok(())
}
