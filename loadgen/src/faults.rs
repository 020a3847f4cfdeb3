//! Faults played into a rehearsal (`[[faults]]` in the scenario file), each recorded in
//! `faults.jsonl` (kind, when it began, when it ended, details) so the report lists them and draws
//! them on its time plots. Times are after the scenario's time zero (`start`).
//!
//! ```toml
//! [[faults]]                 # SIGKILL the buffer, restart it on the same data dir and ports
//! kind = "kill"
//! at = ["2s", "5s"]          # one instant or a list
//! random = 2                 # and this many more at instants drawn (from the seed) in `window`
//! window = ["1s", "15s"]
//! restart_after = "300ms"
//!
//! [[faults]]                 # the registration system slows down, or stops, then comes back
//! kind = "registry"
//! at = "1s"
//! action = "slow"            # "slow" (to `rate` requests/s) or "stop"
//! rate = 20
//! for = "5s"
//!
//! [[faults]]                 # the ack relay is down (connections refused), then back
//! kind = "ack-relay"
//! at = "1s"
//! for = "6s"
//!
//! [[faults]]                 # every write of the buffer fails (RLIMIT_FSIZE set with prlimit)
//! kind = "disk-full"
//! at = "3s"
//! for = "2s"
//! limit_bytes = 0            # the file size limit while full (0: no write succeeds)
//!
//! [[faults]]                 # idle TCP connections held open against the intake
//! kind = "connections"
//! at = "0s"
//! count = 5000
//! for = "20s"                # default: until the scenario's requests are all sent
//! ```
//!
//! `power-loss` is not played here: a SIGKILL cannot tell a buffer that fsyncs before replying from
//! one that does not; `landrush fsync-audit` checks that property from a syscall trace.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use reports::records::{self, FaultRecord, JsonlWriter, Stamp};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::rehearse::Rig;
use crate::scenario::duration::Dur;

/// One `[[faults]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    kind: String,
    #[serde(default)]
    at: Option<OneOrMany>,
    #[serde(default)]
    random: u32,
    #[serde(default)]
    window: Option<[Dur; 2]>,
    #[serde(default)]
    restart_after: Option<Dur>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default, rename = "for")]
    duration: Option<Dur>,
    #[serde(default)]
    limit_bytes: Option<u64>,
    #[serde(default)]
    count: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Dur),
    Many(Vec<Dur>),
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    Kill {
        restart_after: Duration,
    },
    RegistrySlow {
        rate: f64,
        duration: Duration,
    },
    RegistryStop {
        duration: Duration,
    },
    AckRelayDown {
        duration: Duration,
    },
    DiskFull {
        duration: Duration,
        limit_bytes: u64,
    },
    Connections {
        count: u32,
        duration: Option<Duration>,
    },
}

impl FaultKind {
    /// The name in faults.jsonl.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill { .. } => "kill",
            FaultKind::RegistrySlow { .. } | FaultKind::RegistryStop { .. } => "registry",
            FaultKind::AckRelayDown { .. } => "ack-relay",
            FaultKind::DiskFull { .. } => "disk-full",
            FaultKind::Connections { .. } => "connections",
        }
    }
}

/// One fault at one instant after time zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
}

/// Reads the scenario's `[[faults]]`, in time order. Random instants are drawn from `seed`, so the
/// same file gives the same faults.
pub fn parse(tables: &[toml::Table], seed: u64) -> anyhow::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let spec: FaultSpec = toml::Value::Table(table.clone())
            .try_into()
            .with_context(|| format!("[[faults]] number {}", i + 1))?;
        let mut at: Vec<Duration> = match &spec.at {
            None => Vec::new(),
            Some(OneOrMany::One(d)) => vec![d.0],
            Some(OneOrMany::Many(v)) => v.iter().map(|d| d.0).collect(),
        };
        if spec.random > 0 {
            let Some([from, to]) = spec.window else {
                bail!(
                    "[[faults]] number {}: `random` needs `window = [FROM, TO]`",
                    i + 1
                );
            };
            if to.0 <= from.0 {
                bail!(
                    "[[faults]] number {}: the window ends before it starts",
                    i + 1
                );
            }
            let span = (to.0 - from.0).as_micros() as u64;
            let mut state = seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1));
            for _ in 0..spec.random {
                let r = splitmix(&mut state) % span.max(1);
                at.push(from.0 + Duration::from_micros(r));
            }
        }
        if at.is_empty() {
            bail!(
                "[[faults]] number {}: say when (`at`, or `random` + `window`)",
                i + 1
            );
        }
        let need_for = |what: &str| -> anyhow::Result<Duration> {
            spec.duration
                .map(|d| d.0)
                .with_context(|| format!("[[faults]] number {}: {what} needs `for`", i + 1))
        };
        let kind = match spec.kind.as_str() {
            "kill" => FaultKind::Kill {
                restart_after: spec
                    .restart_after
                    .map_or(Duration::from_millis(500), |d| d.0),
            },
            "registry" => match spec.action.as_deref().unwrap_or("stop") {
                "slow" => FaultKind::RegistrySlow {
                    rate: spec.rate.filter(|r| *r > 0.0).with_context(|| {
                        format!(
                            "[[faults]] number {}: a slow registry needs `rate` > 0",
                            i + 1
                        )
                    })?,
                    duration: need_for("registry")?,
                },
                "stop" => FaultKind::RegistryStop {
                    duration: need_for("registry")?,
                },
                other => bail!(
                    "[[faults]] number {}: registry action `{other}`: slow or stop",
                    i + 1
                ),
            },
            "ack-relay" => FaultKind::AckRelayDown {
                duration: need_for("ack-relay")?,
            },
            "disk-full" => FaultKind::DiskFull {
                duration: need_for("disk-full")?,
                limit_bytes: spec.limit_bytes.unwrap_or(0),
            },
            "connections" => FaultKind::Connections {
                count: spec.count.filter(|c| *c > 0).with_context(|| {
                    format!("[[faults]] number {}: connections needs `count`", i + 1)
                })?,
                duration: spec.duration.map(|d| d.0),
            },
            "power-loss" => bail!(
                "[[faults]] number {}: power-loss is checked by `landrush fsync-audit` (a syscall \
                 trace), not played in a rehearsal",
                i + 1
            ),
            other => bail!(
                "[[faults]] number {}: unknown kind `{other}` (kill, registry, ack-relay, \
                 disk-full, connections)",
                i + 1
            ),
        };
        faults.extend(at.into_iter().map(|at| Fault {
            at,
            kind: kind.clone(),
        }));
    }
    faults.sort_by_key(|f| f.at);
    Ok(faults)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A step of the fault timeline.
#[derive(Debug)]
enum Step {
    Begin(usize),
    End(usize),
}

/// Plays `faults` against the rig's parts, with time zero at `t0`, until every fault has ended;
/// faults still open when `sent_all` turns true are ended right away only if they last "until the
/// requests are sent" (connections). Writes faults.jsonl; returns notes for the reader.
pub async fn play(
    rig: &mut Rig,
    faults: &[Fault],
    t0: Stamp,
    registry_rate: f64,
    mut sent_all: watch::Receiver<bool>,
) -> anyhow::Result<Vec<String>> {
    let mut out = JsonlWriter::<FaultRecord>::create(&rig.out_dir.join(records::FAULTS))?;
    let mut notes = Vec::new();
    let mut steps: Vec<(Duration, Step)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        steps.push((f.at, Step::Begin(i)));
        let end = match &f.kind {
            FaultKind::Kill { restart_after } => Some(*restart_after),
            FaultKind::RegistrySlow { duration, .. }
            | FaultKind::RegistryStop { duration }
            | FaultKind::AckRelayDown { duration }
            | FaultKind::DiskFull { duration, .. } => Some(*duration),
            FaultKind::Connections { duration, .. } => *duration,
        };
        if let Some(d) = end {
            steps.push((f.at + d, Step::End(i)));
        }
    }
    // Ends before begins at the same instant; otherwise in time order.
    steps.sort_by_key(|(at, s)| (*at, matches!(s, Step::Begin(_))));
    let mut began: Vec<Option<(Stamp, serde_json::Value)>> = vec![None; faults.len()];
    let mut held: Vec<Vec<TcpStream>> = (0..faults.len()).map(|_| Vec::new()).collect();
    for (at, step) in steps {
        let due = t0.micros() + at.as_micros() as i64;
        let wait = due - Stamp::now().micros();
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        }
        match step {
            Step::Begin(i) => {
                let detail = match begin(rig, &faults[i].kind, &mut held[i]).await {
                    Ok(detail) => detail,
                    Err(e) => {
                        notes.push(format!(
                            "fault {} at +{:?} could not be played: {e:#}",
                            faults[i].kind.name(),
                            faults[i].at
                        ));
                        json!({"error": format!("{e:#}")})
                    }
                };
                // From when the fault is in effect (the process reaped, the limit set, …).
                began[i] = Some((Stamp::now(), detail));
            }
            Step::End(i) => {
                let mut detail = began[i].take();
                // Until the fault is lifted; a kill lasts until the restarted buffer listens.
                let mut ended = Stamp::now();
                let result = end(rig, &faults[i].kind, registry_rate, &mut held[i]).await;
                if matches!(faults[i].kind, FaultKind::Kill { .. }) {
                    ended = Stamp::now();
                }
                if let Err(e) = result {
                    notes.push(format!(
                        "fault {} at +{:?} could not be ended: {e:#}",
                        faults[i].kind.name(),
                        faults[i].at
                    ));
                    if let Some((_, d)) = &mut detail {
                        d["end_error"] = json!(format!("{e:#}"));
                    }
                }
                if let Some((begun, d)) = detail {
                    out.write(&FaultRecord {
                        kind: faults[i].kind.name().into(),
                        at: begun,
                        until: Some(ended),
                        detail: d,
                    })?;
                    out.flush()?;
                }
            }
        }
    }
    // Faults that last until every request is sent.
    let open: Vec<usize> = (0..faults.len()).filter(|&i| began[i].is_some()).collect();
    if !open.is_empty() {
        let _ = sent_all.wait_for(|s| *s).await;
        for i in open {
            if let Some((begun, d)) = began[i].take() {
                end(rig, &faults[i].kind, registry_rate, &mut held[i]).await?;
                out.write(&FaultRecord {
                    kind: faults[i].kind.name().into(),
                    at: begun,
                    until: Some(Stamp::now()),
                    detail: d,
                })?;
            }
        }
    }
    out.flush()?;
    Ok(notes)
}

async fn begin(
    rig: &mut Rig,
    kind: &FaultKind,
    held: &mut Vec<TcpStream>,
) -> anyhow::Result<serde_json::Value> {
    Ok(match kind {
        FaultKind::Kill { restart_after } => {
            let buffer = rig
                .buffer
                .as_mut()
                .context("kill needs a buffer started by the rehearsal")?;
            let pid = buffer.endpoints().pid;
            buffer.kill().await?;
            json!({"signal": "SIGKILL", "pid": pid,
                   "restart_after_ms": restart_after.as_millis() as u64})
        }
        FaultKind::RegistrySlow { rate, .. } => {
            let registry = rig
                .registry()
                .context("a registry fault needs the fake registry")?;
            registry.set_rate(*rate);
            json!({"action": "slow", "rate": rate})
        }
        FaultKind::RegistryStop { .. } => {
            let registry = rig
                .registry()
                .context("a registry fault needs the fake registry")?;
            registry.pause();
            json!({"action": "stop"})
        }
        FaultKind::AckRelayDown { .. } => {
            let sink = rig
                .ack_sink
                .as_mut()
                .context("an ack-relay fault needs the ack sink")?;
            sink.stop().await;
            json!({"relay": sink.addr().to_string()})
        }
        FaultKind::DiskFull { limit_bytes, .. } => {
            let buffer = rig
                .buffer
                .as_ref()
                .context("disk-full needs a buffer started by the rehearsal")?;
            let pid = buffer.endpoints().pid;
            set_fsize(pid, &limit_bytes.to_string()).await?;
            json!({"method": "RLIMIT_FSIZE", "limit_bytes": limit_bytes, "pid": pid})
        }
        FaultKind::Connections { count, .. } => {
            let before = rig.buffer.as_ref().and_then(|b| rss_kib(b.endpoints().pid));
            let (opened, failed) = open_idle(rig.target, *count, held).await;
            let after = rig.buffer.as_ref().and_then(|b| rss_kib(b.endpoints().pid));
            json!({"requested": count, "opened": opened, "failed": failed,
                   "buffer_rss_kib_before": before, "buffer_rss_kib_held": after})
        }
    })
}

async fn end(
    rig: &mut Rig,
    kind: &FaultKind,
    registry_rate: f64,
    held: &mut Vec<TcpStream>,
) -> anyhow::Result<()> {
    match kind {
        FaultKind::Kill { .. } => {
            if let Some(buffer) = rig.buffer.as_mut() {
                buffer.restart().await?;
            }
        }
        FaultKind::RegistrySlow { .. } => {
            if let Some(r) = rig.registry() {
                r.set_rate(registry_rate);
            }
        }
        FaultKind::RegistryStop { .. } => {
            if let Some(r) = rig.registry() {
                r.resume();
            }
        }
        FaultKind::AckRelayDown { .. } => {
            if let Some(sink) = rig.ack_sink.as_mut() {
                sink.restart().await?;
            }
        }
        FaultKind::DiskFull { .. } => {
            if let Some(buffer) = rig.buffer.as_ref() {
                set_fsize(buffer.endpoints().pid, "unlimited").await?;
            }
        }
        FaultKind::Connections { .. } => held.clear(),
    }
    Ok(())
}

/// The resident memory of a process, from /proc (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sets the soft RLIMIT_FSIZE of `pid` with util-linux's prlimit (the hard limit stays).
async fn set_fsize(pid: u32, soft: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:"))
        .output()
        .await
        .context("cannot run prlimit (util-linux)")?;
    if !out.status.success() {
        bail!(
            "prlimit --pid {pid} --fsize={soft}: failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Opens `count` connections (256 at a time), reads each greeting, keeps them.
async fn open_idle(target: SocketAddr, count: u32, held: &mut Vec<TcpStream>) -> (u32, u32) {
    use futures_util_lite::join_all_bounded;
    let results = join_all_bounded(count as usize, 256, move || async move {
        let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target))
            .await
            .ok()?
            .ok()?;
        let mut greeting = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut greeting))
            .await
            .ok()?
            .ok()?;
        (n >= 3 && &greeting[..3] == b"220").then_some(stream)
    })
    .await;
    let mut failed = 0;
    for r in results {
        match r {
            Some(s) => held.push(s),
            None => failed += 1,
        }
    }
    (held.len() as u32, failed)
}

/// A bounded "join all" without a futures dependency.
mod futures_util_lite {
    use std::future::Future;
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    pub async fn join_all_bounded<F, Fut, T>(n: usize, limit: usize, make: F) -> Vec<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let gate = Arc::new(Semaphore::new(limit));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let permit = gate.clone().acquire_owned().await.expect("never closed");
            let fut = make();
            tasks.push(tokio::spawn(async move {
                let out = fut.await;
                drop(permit);
                out
            }));
        }
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            if let Ok(v) = t.await {
                out.push(v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Vec<toml::Table> {
        #[derive(Deserialize)]
        struct F {
            faults: Vec<toml::Table>,
        }
        toml::from_str::<F>(text).unwrap().faults
    }

    #[test]
    fn faults_parse_in_time_order_with_seeded_random_instants() {
        let t = tables(
            r#"
            [[faults]]
            kind = "kill"
            at = ["5s", "2s"]
            random = 2
            window = ["1s", "10s"]
            restart_after = "300ms"
            [[faults]]
            kind = "registry"
            action = "slow"
            rate = 20
            at = "1s"
            for = "4s"
            [[faults]]
            kind = "disk-full"
            at = "3s"
            for = "2s"
            "#,
        );
        let a = parse(&t, 7).unwrap();
        assert_eq!(
            a,
            parse(&t, 7).unwrap(),
            "the same seed gives the same faults"
        );
        assert_ne!(a, parse(&t, 8).unwrap());
        assert_eq!(a.len(), 6);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        let kills: Vec<&Fault> = a.iter().filter(|f| f.kind.name() == "kill").collect();
        assert_eq!(kills.len(), 4);
        assert!(
            kills
                .iter()
                .all(|f| f.at >= Duration::from_secs(1) && f.at <= Duration::from_secs(10))
        );
        assert!(a.contains(&Fault {
            at: Duration::from_secs(1),
            kind: FaultKind::RegistrySlow {
                rate: 20.0,
                duration: Duration::from_secs(4)
            }
        }));
        assert!(a.contains(&Fault {
            at: Duration::from_secs(3),
            kind: FaultKind::DiskFull {
                duration: Duration::from_secs(2),
                limit_bytes: 0
            }
        }));
    }

    #[test]
    fn bad_faults_are_refused() {
        for bad in [
            "[[faults]]\nkind = \"meteor\"\nat = \"1s\"",
            "[[faults]]\nkind = \"kill\"",
            "[[faults]]\nkind = \"kill\"\nrandom = 2",
            "[[faults]]\nkind = \"ack-relay\"\nat = \"1s\"",
            "[[faults]]\nkind = \"registry\"\naction = \"slow\"\nat = \"1s\"\nfor = \"1s\"",
            "[[faults]]\nkind = \"power-loss\"\nat = \"1s\"",
            "[[faults]]\nkind = \"kill\"\nat = \"1s\"\ncolour = \"red\"",
        ] {
            assert!(parse(&tables(bad), 1).is_err(), "{bad}");
        }
    }
}
