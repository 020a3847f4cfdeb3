//! Playing a scenario's faults into a rehearsal against the rig's parts (a node, the database the
//! nodes share, the registry, the ack sink…), each recorded in
//! `faults.jsonl` (kind, when it began, when it ended, details) so the report lists them and draws
//! them on its time plots. What the faults are is `crate::scenario::faults`; times are after the
//! scenario's time zero (`start`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use reports::records::{self, FaultRecord, JsonlWriter, Stamp};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::rig::Rig;
use crate::scenario::faults::{Fault, FaultKind, PostgresAction};

/// A step of the fault timeline.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Begin(usize),
    End(usize),
}

/// The faults' beginnings and ends in time order: at one instant, the ends of earlier faults,
/// then beginnings, then the ends of faults that last no time (a failover promoting at once), so
/// that every fault ends after it began.
fn timeline(faults: &[Fault]) -> Vec<(Duration, Step)> {
    let mut steps: Vec<(Duration, u8, Step)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        steps.push((f.at, 1, Step::Begin(i)));
        if let Some(d) = f.kind.lasts() {
            steps.push((f.at + d, if d.is_zero() { 2 } else { 0 }, Step::End(i)));
        }
    }
    steps.sort_by_key(|(at, rank, _)| (*at, *rank));
    steps.into_iter().map(|(at, _, step)| (at, step)).collect()
}

/// The faults being played, and what has become of each.
struct Playing<'a> {
    faults: &'a [Fault],
    registry_rate: f64,
    out: JsonlWriter<FaultRecord>,
    notes: Vec<String>,
    /// When each fault began (once in effect) and its details, until it ends.
    began: Vec<Option<(Stamp, serde_json::Value)>>,
    /// The connections a `connections` fault holds.
    held: Vec<Vec<TcpStream>>,
}

/// Plays `faults` against the rig's parts, with time zero at `t0`, until every fault has ended;
/// faults still open when `sent_all` is cancelled are ended right away only if they last "until
/// the requests are sent" (connections). Writes faults.jsonl; returns notes for the reader.
pub async fn play(
    rig: &mut Rig,
    faults: &[Fault],
    t0: Stamp,
    registry_rate: f64,
    sent_all: CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let mut playing = Playing {
        faults,
        registry_rate,
        out: JsonlWriter::<FaultRecord>::create(&rig.out_dir.join(records::FAULTS))?,
        notes: Vec::new(),
        began: vec![None; faults.len()],
        held: (0..faults.len()).map(|_| Vec::new()).collect(),
    };
    for (at, step) in timeline(faults) {
        let due = t0.micros() + at.as_micros() as i64;
        let wait = due - Stamp::now().micros();
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        }
        match step {
            Step::Begin(i) => playing.begin(rig, i).await,
            Step::End(i) => playing.end(rig, i).await?,
        }
    }
    // Faults that last until every request is sent.
    let open: Vec<usize> = (0..faults.len())
        .filter(|&i| playing.began[i].is_some())
        .collect();
    if !open.is_empty() {
        sent_all.cancelled().await;
        for i in open {
            if let Some((begun, d)) = playing.began[i].take() {
                end(rig, &faults[i].kind, registry_rate, &mut playing.held[i]).await?;
                playing.out.write(&FaultRecord {
                    kind: faults[i].kind.name().into(),
                    at: begun,
                    until: Some(Stamp::now()),
                    detail: d,
                })?;
            }
        }
    }
    playing.out.flush()?;
    Ok(playing.notes)
}

impl Playing<'_> {
    /// Puts fault `i` in effect; a fault that cannot be played is noted and recorded with its
    /// error.
    async fn begin(&mut self, rig: &mut Rig, i: usize) {
        let fault = &self.faults[i];
        let detail = match begin(rig, &fault.kind, &mut self.held[i]).await {
            Ok(detail) => detail,
            Err(e) => {
                self.notes.push(format!(
                    "fault {} at +{:?} could not be played: {e:#}",
                    fault.kind.name(),
                    fault.at
                ));
                json!({"error": format!("{e:#}")})
            }
        };
        // From when the fault is in effect (the process reaped, the limit set, …).
        self.began[i] = Some((Stamp::now(), detail));
    }

    /// Lifts fault `i` and records it.
    async fn end(&mut self, rig: &mut Rig, i: usize) -> anyhow::Result<()> {
        let fault = &self.faults[i];
        let mut detail = self.began[i].take();
        // Until the fault is lifted; a kill lasts until the restarted buffer listens, a database
        // fault until the database takes writes again.
        let mut ended = Stamp::now();
        let result = end(rig, &fault.kind, self.registry_rate, &mut self.held[i]).await;
        if matches!(
            fault.kind,
            FaultKind::Kill { .. } | FaultKind::Postgres { .. }
        ) {
            ended = Stamp::now();
        }
        if let Err(e) = result {
            self.notes.push(format!(
                "fault {} at +{:?} could not be ended: {e:#}",
                fault.kind.name(),
                fault.at
            ));
            if let Some((_, d)) = &mut detail {
                d["end_error"] = json!(format!("{e:#}"));
            }
        }
        if let Some((begun, d)) = detail {
            self.out.write(&FaultRecord {
                kind: fault.kind.name().into(),
                at: begun,
                until: Some(ended),
                detail: d,
            })?;
            self.out.flush()?;
        }
        Ok(())
    }
}

async fn begin(
    rig: &mut Rig,
    kind: &FaultKind,
    held: &mut Vec<TcpStream>,
) -> anyhow::Result<serde_json::Value> {
    Ok(match kind {
        FaultKind::Kill {
            node,
            restart_after,
        } => {
            let buffer = rig.node(*node).context("kill")?;
            let pid = buffer.endpoints().pid;
            buffer.kill().await?;
            json!({"signal": "SIGKILL", "pid": pid, "node": node,
                   "restart_after_ms": restart_after.as_millis() as u64})
        }
        FaultKind::Postgres { action, down } => {
            let database = rig
                .database
                .as_ref()
                .context("a postgres fault needs the buffer on PostgreSQL ([buffer] journal)")?;
            let mut detail = database.describe_current();
            match action {
                PostgresAction::Restart => database.stop().await?,
                PostgresAction::Kill | PostgresAction::Failover => database.kill().await?,
            }
            detail["action"] = json!(action.name());
            detail["down_ms"] = json!(down.as_millis() as u64);
            detail
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
                .nodes
                .first()
                .context("disk-full needs a buffer started by the rehearsal")?;
            let pid = buffer.endpoints().pid;
            set_fsize(pid, &limit_bytes.to_string()).await?;
            json!({"method": "RLIMIT_FSIZE", "limit_bytes": limit_bytes, "pid": pid})
        }
        FaultKind::Connections { count, .. } => {
            let before = rig.nodes.first().and_then(|b| rss_kib(b.endpoints().pid));
            let (opened, failed) = open_idle(rig.targets.first(), *count, held).await;
            let after = rig.nodes.first().and_then(|b| rss_kib(b.endpoints().pid));
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
        FaultKind::Kill { node, .. } => rig.node(*node)?.restart().await?,
        FaultKind::Postgres { action, .. } => {
            if let Some(database) = rig.database.as_mut() {
                match action {
                    PostgresAction::Restart | PostgresAction::Kill => {
                        database.start_again().await?
                    }
                    PostgresAction::Failover => database.promote().await?,
                }
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
            if let Some(buffer) = rig.nodes.first() {
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
    let mut command = tokio::process::Command::new("prlimit");
    super::child::dies_with_landrush(&mut command);
    let out = command
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
    use crate::scenario::faults::PostgresAction;

    #[test]
    fn every_fault_ends_after_it_began_even_when_it_lasts_no_time() {
        let s = Duration::from_secs;
        let faults = [
            Fault {
                at: s(6),
                kind: FaultKind::Postgres {
                    action: PostgresAction::Failover,
                    down: Duration::ZERO,
                },
            },
            Fault {
                at: s(5),
                kind: FaultKind::Kill {
                    node: 1,
                    restart_after: s(1),
                },
            },
        ];
        let steps = timeline(&faults);
        assert_eq!(
            steps,
            [
                (s(5), Step::Begin(1)),
                (s(6), Step::End(1)),
                (s(6), Step::Begin(0)),
                (s(6), Step::End(0)),
            ]
        );
    }
}
