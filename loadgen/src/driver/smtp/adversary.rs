//! The adversaries that send no scheduled requests: the hog (holds connections) and the junk
//! flood (commands that never make a request), and `adversaries.json`, what every adversary
//! group achieved and how each group fared (contract: Fair intake).
//!
//! The key-collider sends requests, so it has its own loop
//! (`collider::run_collider`); its count of requests sent is kept here with the others'.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Ctx;
use super::wire::{Connection, Opened, Reply, SmtpError};
use crate::driver::recorder::GroupFigures;

/// The run folder's file of adversary achievements and per-group figures.
pub const ADVERSARIES: &str = "adversaries.json";

/// The commands a junk client cycles through: none of them makes a request.
const JUNK: [&str; 5] = [
    "NOOP",
    "RSET",
    "VRFY registrar-0@registrar.invalid",
    "HELP",
    "XJUNK flood",
];

/// What one adversary group achieved, as `adversaries.json` says it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Achieved {
    /// Connections that got past greeting and EHLO.
    pub connections_opened: u64,
    /// Connections held at once: now (during the run), at most, and at the start instant.
    #[serde(skip)]
    pub held_now: u64,
    pub held_max: u64,
    pub held_at_start: u64,
    /// Held connections the buffer closed (a `421`, or the socket closed under it).
    pub closed_by_server: u64,
    /// Connections that never got a greeting or EHLO (refused with a reply, or failed).
    pub connect_refused: u64,
    pub connect_failed: u64,
    /// Commands sent (NOOPs of a hog, junk commands).
    pub commands_sent: u64,
    /// Every reply received, by code (greetings and EHLO refusals included).
    pub replies: BTreeMap<u16, u64>,
    /// `421` (too many connections, too much junk, too slow) and `450` (rate) replies.
    pub refusals_421: u64,
    pub refusals_450: u64,
    /// Requests a key-collider sent.
    pub requests_sent: u64,
}

impl Achieved {
    fn reply(&mut self, reply: &Reply) {
        *self.replies.entry(reply.code).or_default() += 1;
        match reply.code {
            421 => self.refusals_421 += 1,
            450 => self.refusals_450 += 1,
            _ => {}
        }
    }

    fn held(&mut self, delta: i64) {
        self.held_now = self.held_now.saturating_add_signed(delta);
        self.held_max = self.held_max.max(self.held_now);
    }
}

/// One group's entry of `adversaries.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupEntry {
    pub group: String,
    pub behaviour: &'static str,
    pub clients: u32,
    pub sources: usize,
    /// The group's own transmissions (none for hog and junk).
    pub figures: GroupFigures,
    /// What it achieved (hog, junk, key-collider).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub achieved: Option<Achieved>,
}

/// Writes `adversaries.json`: one entry per group, in file order.
pub fn write(
    dir: &Path,
    ctx: &Ctx,
    figures: &BTreeMap<String, GroupFigures>,
) -> anyhow::Result<()> {
    let groups: Vec<GroupEntry> = ctx
        .groups
        .iter()
        .zip(&ctx.adversaries)
        .map(|(g, achieved)| GroupEntry {
            group: g.spec.name.clone(),
            behaviour: g.spec.behaviour.as_str(),
            clients: g.spec.count,
            sources: g.sources.len(),
            figures: figures.get(&g.spec.name).cloned().unwrap_or_default(),
            // A slowloris' requests are in its figures; the others achieve by other means.
            achieved: (!g.spec.behaviour.sends_schedule())
                .then(|| achieved.lock().unwrap().clone()),
        })
        .collect();
    let path = dir.join(ADVERSARIES);
    let text = serde_json::to_string_pretty(&serde_json::json!({ "groups": groups }))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Samples how many connections each hog group holds at the start instant.
pub async fn sample_at_start(ctx: Arc<Ctx>) {
    tokio::time::sleep_until(ctx.start).await;
    for a in &ctx.adversaries {
        let mut a = a.lock().unwrap();
        a.held_at_start = a.held_now;
    }
}

/// Waits `pause` unless the run ends first; false if it ended.
async fn pause(ctx: &Ctx, pause: Duration, done: &CancellationToken) -> bool {
    let until = (Instant::now() + pause).min(ctx.deadline);
    tokio::select! {
        _ = tokio::time::sleep_until(until) => Instant::now() < ctx.deadline,
        _ = done.cancelled() => false,
    }
}

/// Opens a connection for adversary `client`, counting what came of it.
async fn open(ctx: &Ctx, client: u32, group: usize) -> Option<Connection> {
    let opened = ctx.open(client).await;
    let mut a = ctx.adversaries[group].lock().unwrap();
    match opened {
        Ok(Opened::Ready(conn)) => {
            a.connections_opened += 1;
            Some(conn)
        }
        Ok(Opened::Refused(reply)) => {
            a.reply(&reply);
            a.connect_refused += 1;
            None
        }
        Err(_) => {
            a.connect_failed += 1;
            None
        }
    }
}

/// A hog's connection `client`: opened from launch (before the instant), held with a NOOP every
/// `noop_interval`, reopened `reconnect_after` a refusal or a close, until the senders are done
/// or the deadline. `done` is cancelled when the senders finish (or the run is stopped).
pub async fn hog(ctx: Arc<Ctx>, client: u32, done: CancellationToken) {
    let (group, _) = ctx.requests.plan().assignment().group_of(client);
    let spec = ctx.groups[group].spec.clone();
    while !done.is_cancelled() && Instant::now() < ctx.deadline {
        let Some(mut conn) = open(&ctx, client, group).await else {
            if !pause(&ctx, spec.reconnect_after(), &done).await {
                break;
            }
            continue;
        };
        ctx.adversaries[group].lock().unwrap().held(1);
        let mut ended_by_us = false;
        loop {
            if !pause(&ctx, spec.noop_interval(), &done).await {
                ended_by_us = true;
                break;
            }
            let reply = conn.command("NOOP").await;
            let mut a = ctx.adversaries[group].lock().unwrap();
            a.commands_sent += 1;
            match reply {
                Ok(reply) if reply.code / 100 == 2 => a.reply(&reply),
                Ok(reply) => {
                    a.reply(&reply);
                    a.closed_by_server += 1;
                    break;
                }
                Err(_) => {
                    a.closed_by_server += 1;
                    break;
                }
            }
        }
        ctx.adversaries[group].lock().unwrap().held(-1);
        if ended_by_us {
            conn.quit().await;
            break;
        }
        if !pause(&ctx, spec.reconnect_after(), &done).await {
            break;
        }
    }
}

/// A junk client: from the instant, sends `junk_commands` commands that never make a request,
/// reading each reply, reconnecting `reconnect_after` the buffer closes it.
pub async fn junk(ctx: Arc<Ctx>, client: u32, done: CancellationToken) {
    let (group, _) = ctx.requests.plan().assignment().group_of(client);
    let spec = ctx.groups[group].spec.clone();
    tokio::select! {
        _ = tokio::time::sleep_until(ctx.start) => {}
        _ = done.cancelled() => return,
    }
    let mut left = spec.junk_commands();
    let mut next = client as usize;
    while left > 0 && !done.is_cancelled() && Instant::now() < ctx.deadline {
        let Some(mut conn) = open(&ctx, client, group).await else {
            if !pause(&ctx, spec.reconnect_after(), &done).await {
                break;
            }
            continue;
        };
        let closed = flood(&ctx, group, &mut conn, &mut left, &mut next, &done).await;
        if !closed {
            conn.quit().await;
            break;
        }
        if !pause(&ctx, spec.reconnect_after(), &done).await {
            break;
        }
    }
}

/// Sends junk on one connection until `left` runs out, the run ends, or the buffer closes it;
/// true if the buffer closed it.
async fn flood(
    ctx: &Ctx,
    group: usize,
    conn: &mut Connection,
    left: &mut u32,
    next: &mut usize,
    done: &CancellationToken,
) -> bool {
    while *left > 0 && !done.is_cancelled() && Instant::now() < ctx.deadline {
        let command = JUNK[*next % JUNK.len()];
        *next += 1;
        *left -= 1;
        let reply: Result<Reply, SmtpError> = conn.command(command).await;
        let mut a = ctx.adversaries[group].lock().unwrap();
        a.commands_sent += 1;
        match reply {
            Ok(reply) => {
                a.reply(&reply);
                if reply.code == 421 {
                    a.closed_by_server += 1;
                    return true;
                }
            }
            Err(_) => {
                a.closed_by_server += 1;
                return true;
            }
        }
    }
    false
}
