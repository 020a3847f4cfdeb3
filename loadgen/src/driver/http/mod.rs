//! The HTTP driver: plays a scenario's `[http]` part (web-form submissions) against a web intake
//! with goose, and records every POST in the SMTP driver's record format.
//!
//! [`run_http`] maps the part onto a goose attack: `users` goose users, `hatch_rate` users
//! started per second, `requests_per_user` iterations or `run_time`, `throttle` as goose's
//! request throttle. Each iteration posts one form (JSON, or urlencoded for a `form_encoded`
//! share) with an `Idempotency-Key` of its own — the key fixes the request's Message-ID at the
//! buffer (`<KEY>`), so acks and handover join to the record before any reply — and, for the
//! resubmission shares, posts it again at once:
//!
//! - `resubmit_same_key`: the same form with the same key: the same request (same `id`,
//!   `attempt` 2, kind `retry-same-key`); the buffer must give the original ticket;
//! - `resubmit_without_key`: the same form without any key: a new request (new `id`, kind
//!   `resubmission`) whose Message-ID is only known from the 202 body.
//!
//! Records go to `http-sent.jsonl` ([`HTTP_SENT`]) while the run is on; [`append_to_sent`] then
//! appends them to `sent.jsonl` so the checkers see both intakes in one file. `http-run.json`
//! ([`HTTP_RUN`]) sums the part up (rate, latency percentiles); goose's own reports go to
//! `goose/` in the run folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use contract::histogram::micros_histogram;
use goose::config::GooseConfiguration;
use goose::goose::Scenario as GooseScenario;
use goose::prelude::*;
use hdrhistogram::Histogram;
use reports::records::{JsonlWriter, Outcome, SENT, SentRecord, Stamp};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub mod collider;

use crate::driver::Clock;
use crate::driver::recorder::Summary;
use crate::scenario::http::HttpPart;
use crate::scenario::seeded::{mix, unit};
use crate::schedule::ValidScenario;
use crate::schedule::request::generated_name;

/// The HTTP driver's records, appended to `sent.jsonl` at the end of a run.
pub const HTTP_SENT: &str = "http-sent.jsonl";
/// The HTTP part's summary.
pub const HTTP_RUN: &str = "http-run.json";
/// goose's own reports (HTML, JSON, Markdown) in the run folder.
pub const GOOSE_DIR: &str = "goose";
const REPORTS: [&str; 3] = ["report.html", "report.json", "report.md"];

// Hash streams of the HTTP part's choices (apart from the SMTP part's).
const H_DOMAIN: u64 = 101;
const H_RESUBMIT: u64 = 102;
const H_ENCODING: u64 = 103;
const H_HOLDER: u64 = 104;

/// What the HTTP part did: `http-run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRunInfo {
    pub target: String,
    pub users: u32,
    pub started_at: Stamp,
    pub finished_at: Stamp,
    /// POSTs sent (every transmission, retries with the same key included).
    pub transmissions: u64,
    pub accepted: u64,
    pub refused: u64,
    pub indeterminate: u64,
    /// POSTs whose body never left (no connection).
    #[serde(default)]
    pub failed: u64,
    /// Transmissions by kind (`normal`, `hot`, `retry-same-key`, `resubmission`).
    pub kinds: std::collections::BTreeMap<String, u64>,
    /// Replies by HTTP status.
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// Transmissions per second between the first send and the last reply.
    pub rate_per_sec: f64,
    /// Reply after the POST was handed to the HTTP client (µs).
    pub latency_service: Summary,
    /// Reply after the intended send time (µs): a late user counts against the latency.
    pub latency_corrected: Summary,
    pub goose_reports: Vec<String>,
}

/// Shared by every goose user of one run.
struct Ctx {
    part: HttpPart,
    seed: u64,
    tag: Option<String>,
    hot: Vec<String>,
    pool: u64,
    tld: String,
    requesters: u32,
    requester_domain: String,
    /// Client numbers of web users start here (after the SMTP clients).
    client_base: u32,
    /// The web intake's address, as records name the node.
    node: String,
    clock: Clock,
    start: Instant,
    /// Per user: forms posted so far, and when its next form is due (µs after `start`).
    users: Vec<UserState>,
    out: Mutex<Collected>,
}

#[derive(Default)]
struct UserState {
    forms: AtomicU64,
    next_due_us: AtomicU64,
}

struct Collected {
    writer: JsonlWriter<SentRecord>,
    service: Histogram<u64>,
    corrected: Histogram<u64>,
    info: Counts,
    error: Option<anyhow::Error>,
}

#[derive(Default)]
struct Counts {
    transmissions: u64,
    accepted: u64,
    refused: u64,
    indeterminate: u64,
    failed: u64,
    kinds: std::collections::BTreeMap<String, u64>,
    statuses: std::collections::BTreeMap<String, u64>,
    first_sent: Option<Stamp>,
    last_reply: Option<Stamp>,
}

/// The group name of the web users' records.
pub const WEB_GROUP: &str = crate::scenario::groups::WEB_VICTIM;

/// Plays `scenario.http` against the web intake at `target`, from `start_at` (the scenario's
/// time zero, shared with the SMTP part), writing `http-sent.jsonl`, `http-run.json` and goose's
/// reports into `out_dir`. The web users are numbered after the SMTP clients.
pub async fn run_http(
    scenario: &ValidScenario,
    target: SocketAddr,
    out_dir: &Path,
    start_at: Stamp,
    tag: Option<String>,
) -> anyhow::Result<HttpRunInfo> {
    let part = scenario
        .http
        .clone()
        .context("the scenario has no [http] part")?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let clock = Clock::now();
    let start = clock.instant(start_at);
    let ctx = Arc::new(http_ctx(
        scenario, &part, target, out_dir, clock, start, tag,
    )?);
    let goose_dir = out_dir.join(GOOSE_DIR);
    std::fs::create_dir_all(&goose_dir)?;
    let reports: Vec<String> = REPORTS
        .iter()
        .map(|name| goose_dir.join(name).display().to_string())
        .collect();
    let config = goose_config(&part, target, reports.clone());
    let form_ctx = ctx.clone();
    let post: TransactionFunction = Arc::new(move |user: &mut GooseUser| {
        let ctx = form_ctx.clone();
        Box::pin(async move { post_form(&ctx, user).await })
    });
    let attack = GooseAttack::initialize_with_config(config)
        .map_err(|e| anyhow::anyhow!("goose: {e:?}"))?
        .register_scenario(
            GooseScenario::new("WebForm")
                .register_transaction(Transaction::new(post).set_name("POST form")),
        );

    tokio::time::sleep_until(start).await;
    let started_at = clock.stamp(Instant::now());
    attack
        .execute()
        .await
        .map_err(|e| anyhow::anyhow!("goose: {e:?}"))?;
    let finished_at = clock.stamp(Instant::now());

    let mut out = ctx.out.lock().unwrap();
    out.writer.flush()?;
    if let Some(e) = out.error.take() {
        return Err(e);
    }
    let info = http_run_info(&out, target, part.users, reports, [started_at, finished_at]);
    let path = out_dir.join(HTTP_RUN);
    std::fs::write(&path, serde_json::to_string_pretty(&info)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(info)
}

/// What every web user of a run shares.
fn http_ctx(
    scenario: &ValidScenario,
    part: &HttpPart,
    target: SocketAddr,
    out_dir: &Path,
    clock: Clock,
    start: Instant,
    tag: Option<String>,
) -> anyhow::Result<Ctx> {
    let d = &scenario.domains;
    let mut hot = d.hot.clone();
    for n in 0..d.hot_generated {
        hot.push(generated_name(d.pool + hot.len() as u64 + n as u64, &d.tld));
    }
    let hatch = part.hatch_rate();
    let users = (0..part.users)
        .map(|u| UserState {
            forms: AtomicU64::new(0),
            next_due_us: AtomicU64::new(first_form_due(u as usize, hatch).as_micros() as u64),
        })
        .collect();
    Ok(Ctx {
        seed: scenario.seed,
        tag,
        hot,
        pool: d.pool,
        tld: d.tld.clone(),
        requesters: scenario.requests.requesters.max(1),
        requester_domain: scenario.requests.requester_domain.clone(),
        client_base: scenario.plan().clients(),
        node: target.to_string(),
        clock,
        start,
        users,
        out: Mutex::new(Collected {
            writer: JsonlWriter::create(&out_dir.join(HTTP_SENT))?,
            service: micros_histogram(),
            corrected: micros_histogram(),
            info: Counts::default(),
            error: None,
        }),
        part: part.clone(),
    })
}

/// The goose attack's configuration for the part.
fn goose_config(part: &HttpPart, target: SocketAddr, reports: Vec<String>) -> GooseConfiguration {
    let mut config = GooseConfiguration::default();
    config.host = Some(format!("http://{target}"));
    config.users = Some(part.users as usize);
    config.increase_rate = Some(format!("{}", part.hatch_rate()));
    match (part.requests_per_user, part.run_time) {
        // goose resets no metrics with iterations, and refuses to be told so.
        (Some(n), _) => config.iterations = Some(n as usize),
        (None, Some(t)) => {
            config.run_time = Some(t.0.as_secs().max(1).to_string());
            config.no_reset_metrics = true;
        }
        (None, None) => unreachable!("the scenario was validated"),
    }
    if part.throttle > 0 {
        config.throttle_requests = Some(part.throttle as usize);
    }
    config.report_file = reports;
    config.no_print_metrics = true;
    config.quiet = 1;
    config.no_telnet = true;
    config.timeout = Some(part.timeout.0.as_secs().max(1).to_string());
    config
}

/// `http-run.json` from what the users collected between `started_at` and `finished_at`.
fn http_run_info(
    out: &Collected,
    target: SocketAddr,
    users: u32,
    reports: Vec<String>,
    [started_at, finished_at]: [Stamp; 2],
) -> HttpRunInfo {
    let c = &out.info;
    let rate = match (c.first_sent, c.last_reply) {
        (Some(a), Some(b)) if b.micros() > a.micros() => {
            c.transmissions as f64 / ((b.micros() - a.micros()) as f64 / 1e6)
        }
        _ => 0.0,
    };
    HttpRunInfo {
        target: target.to_string(),
        users,
        started_at,
        finished_at,
        transmissions: c.transmissions,
        accepted: c.accepted,
        refused: c.refused,
        indeterminate: c.indeterminate,
        failed: c.failed,
        kinds: c.kinds.clone(),
        statuses: c.statuses.clone(),
        rate_per_sec: (rate * 10.0).round() / 10.0,
        latency_service: Summary::of(&out.service),
        latency_corrected: Summary::of(&out.corrected),
        goose_reports: reports
            .into_iter()
            .filter(|r| Path::new(r).exists())
            .collect(),
    }
}

/// The id and `Idempotency-Key` of form `n` of web user `u` (one definition, shared with the
/// web key-collider, which reuses the keys of the users' first forms).
pub fn form_identity(tag: Option<&str>, seed: u64, u: usize, n: u64) -> (String, String) {
    let id = match tag {
        Some(tag) => format!("{tag}-h{u:04}-{n:06}"),
        None => format!("h{u:04}-{n:06}"),
    };
    let key = format!("{id}.{seed:x}@landrush.invalid");
    (id, key)
}

/// The `email` (requester) of web user `u`.
pub fn web_email(u: usize, requesters: u32, requester_domain: &str) -> String {
    format!("web-{}@{requester_domain}", u as u32 % requesters.max(1))
}

/// When web user `u`'s first form is due, after the start: users hatch at `hatch` per second.
pub fn first_form_due(u: usize, hatch: f64) -> Duration {
    Duration::from_micros((u as f64 / hatch * 1e6) as u64)
}

/// One form of one user (one goose iteration), and its resubmission if it draws one.
async fn post_form(ctx: &Ctx, user: &mut GooseUser) -> TransactionResult {
    let u = user.weighted_users_index % ctx.users.len().max(1);
    let state = &ctx.users[u];
    let n = state.forms.fetch_add(1, Ordering::Relaxed);
    let due = ctx.start + Duration::from_micros(state.next_due_us.load(Ordering::Relaxed));
    tokio::time::sleep_until(due).await;

    // A deterministic index for this form: user-major, so reruns give the same forms.
    let index = (u as u64) << 32 | n;
    let (id, key) = form_identity(ctx.tag.as_deref(), ctx.seed, u, n);
    let hot = n == 0 && ctx.part.hot_first && !ctx.hot.is_empty();
    let domain = if hot {
        ctx.hot[u % ctx.hot.len()].clone()
    } else {
        generated_name(mix(ctx.seed, index, H_DOMAIN) % ctx.pool.max(1), &ctx.tld)
    };
    let holder = mix(ctx.seed, index, H_HOLDER) % 1_000_000;
    let form = Form {
        domain,
        holder: format!("Holder {holder}"),
        contact: format!("contact-{holder}@holders.invalid"),
        email: web_email(u, ctx.requesters, &ctx.requester_domain),
        urlencoded: unit(ctx.seed, index, H_ENCODING) < ctx.part.form_encoded,
    };
    let kind = if hot { "hot" } else { "normal" };
    let first = Post {
        id: id.clone(),
        key: Some(key.clone()),
        kind,
        attempt: 1,
        intended: due,
    };
    let mut last = send(ctx, user, u, &form, first).await;

    let draw = unit(ctx.seed, index, H_RESUBMIT);
    let p = &ctx.part;
    if draw < p.resubmit_same_key {
        let again = Post {
            id,
            key: Some(key),
            kind: "retry-same-key",
            attempt: 2,
            intended: Instant::now(),
        };
        last = send(ctx, user, u, &form, again).await;
    } else if draw < p.resubmit_same_key + p.resubmit_without_key {
        let again = Post {
            id: format!("{id}-again"),
            key: None,
            kind: "resubmission",
            attempt: 1,
            intended: Instant::now(),
        };
        last = send(ctx, user, u, &form, again).await;
    }
    let next = last + p.think_time.0;
    let next_us = next.saturating_duration_since(ctx.start).as_micros() as u64;
    state.next_due_us.store(next_us, Ordering::Relaxed);
    Ok(())
}

struct Form {
    domain: String,
    holder: String,
    contact: String,
    email: String,
    urlencoded: bool,
}

struct Post {
    id: String,
    key: Option<String>,
    kind: &'static str,
    attempt: u32,
    intended: Instant,
}

/// The 202 body of barrage's web intake (a foreign intake may answer differently: then the
/// ticket and Message-ID are unknown, which the checkers allow).
#[derive(Deserialize)]
struct Accepted {
    ticket: Option<u64>,
    message_id: Option<String>,
}

/// Sends one POST through goose and records it; returns when the reply (or failure) came.
async fn send(ctx: &Ctx, user: &mut GooseUser, u: usize, form: &Form, post: Post) -> Instant {
    let path = ctx.part.path.as_str();
    let built = post_builder(user, path, form, &post);
    let sent = Instant::now();
    let mut record = record_of(ctx, u, form, &post, sent);
    let result = match built {
        Ok(builder) => {
            let request = GooseRequest::builder()
                .method(GooseMethod::Post)
                .path(path)
                .name("POST form")
                .expect_status_code(202)
                .set_request_builder(builder)
                .build();
            user.request(request).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let replied = Instant::now();
    match result {
        Ok(goose) => match goose.response {
            Ok(response) => read_reply(ctx, &mut record, response, replied).await,
            Err(e) => {
                // A connection never made carried no body: nothing can be stored.
                if e.is_connect() {
                    not_sent(&mut record);
                }
                record.reply = Some(format!("no reply: {e}"));
            }
        },
        Err(e) => {
            not_sent(&mut record);
            record.reply = Some(format!("not sent: {e}"));
        }
    }
    collect(ctx, &record, sent, replied, post.intended);
    replied
}

/// Marks a record whose request body never left: `failed`, not sent (contract: Indeterminate
/// outcomes).
fn not_sent(record: &mut SentRecord) {
    record.outcome = Outcome::Failed;
    record.sent_at = None;
}

/// The POST of one form: JSON or urlencoded, with its id and idempotency key.
fn post_builder(
    user: &mut GooseUser,
    path: &str,
    form: &Form,
    post: &Post,
) -> Result<reqwest::RequestBuilder, Box<TransactionError>> {
    user.get_request_builder(&GooseMethod::Post, path)
        .map(|builder| {
            let mut builder = builder
                .header("X-Landrush-Id", &post.id)
                .header("Accept", "application/json");
            if let Some(key) = &post.key {
                builder = builder.header("Idempotency-Key", key);
            }
            let fields = [
                ("domain", form.domain.as_str()),
                ("holder", form.holder.as_str()),
                ("contact", form.contact.as_str()),
                ("email", form.email.as_str()),
            ];
            if form.urlencoded {
                builder.form(&fields)
            } else {
                let body: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                    .collect();
                builder.json(&body)
            }
        })
}

/// The record of a POST sent at `sent`, before any reply.
fn record_of(ctx: &Ctx, u: usize, form: &Form, post: &Post, sent: Instant) -> SentRecord {
    SentRecord {
        id: post.id.clone(),
        client: ctx.client_base + u as u32,
        message_id: post
            .key
            .as_ref()
            .map(|k| format!("<{k}>"))
            .unwrap_or_default(),
        domain: form.domain.clone(),
        sender: form.email.clone(),
        intake: "http".into(),
        kind: post.kind.into(),
        attempt: post.attempt,
        intended_at: ctx.clock.stamp(post.intended),
        sent_at: Some(ctx.clock.stamp(sent)),
        replied_at: None,
        code: None,
        reply: None,
        ticket: None,
        outcome: Outcome::Indeterminate,
        // The web users are one group of their own.
        group: Some(WEB_GROUP.into()),
        raw_sha256: None,
        tls_handshake_us: None,
        node: Some(ctx.node.clone()),
    }
}

/// Fills the record from the POST's reply.
async fn read_reply(
    ctx: &Ctx,
    record: &mut SentRecord,
    response: reqwest::Response,
    replied: Instant,
) {
    let status = response.status().as_u16();
    record.replied_at = Some(ctx.clock.stamp(replied));
    record.code = Some(status);
    let text = response.text().await.unwrap_or_default();
    if status == 202 {
        record.outcome = Outcome::Accepted;
        if let Ok(body) = serde_json::from_str::<Accepted>(&text) {
            record.ticket = body.ticket;
            if record.message_id.is_empty()
                && let Some(mid) = body.message_id
            {
                record.message_id = mid;
            }
        }
    } else {
        record.outcome = Outcome::Refused;
    }
    record.reply = Some(format!(
        "{status} {}",
        text.chars().take(300).collect::<String>()
    ));
}

/// Counts the record into the part's totals and histograms, and writes it.
fn collect(ctx: &Ctx, record: &SentRecord, sent: Instant, replied: Instant, intended: Instant) {
    let mut out = ctx.out.lock().unwrap();
    let c = &mut out.info;
    c.transmissions += 1;
    match record.outcome {
        Outcome::Accepted => c.accepted += 1,
        Outcome::Refused => c.refused += 1,
        Outcome::Indeterminate => c.indeterminate += 1,
        Outcome::Failed => c.failed += 1,
    }
    *c.kinds.entry(record.kind.clone()).or_default() += 1;
    let status = record
        .code
        .map_or("none".to_string(), |code| code.to_string());
    *c.statuses.entry(status).or_default() += 1;
    c.first_sent = Some(
        c.first_sent
            .map_or(record.sent_at.unwrap(), |f| f.min(record.sent_at.unwrap())),
    );
    if let Some(r) = record.replied_at {
        c.last_reply = Some(c.last_reply.map_or(r, |l| l.max(r)));
        let service = replied.saturating_duration_since(sent).as_micros() as u64;
        let corrected = replied.saturating_duration_since(intended).as_micros() as u64;
        out.service.saturating_record(service.max(1));
        out.corrected.saturating_record(corrected.max(1));
    }
    if let Err(e) = out.writer.write(record)
        && out.error.is_none()
    {
        out.error = Some(e);
    }
}

/// Appends `http-sent.jsonl` to `sent.jsonl` in `dir`, so the checkers read both intakes from
/// one file. Returns how many records were appended.
pub fn append_to_sent(dir: &Path) -> anyhow::Result<u64> {
    let from = dir.join(HTTP_SENT);
    let to: PathBuf = dir.join(SENT);
    let text = std::fs::read_to_string(&from)
        .with_context(|| format!("cannot read {}", from.display()))?;
    let mut file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&to)
        .with_context(|| format!("cannot open {}", to.display()))?;
    use std::io::Write;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot append to {}", to.display()))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
}

/// The end-of-run lines of the HTTP part, on stderr.
pub fn print_summary(http: &HttpRunInfo) {
    eprintln!(
        "landrush http: {} POSTs to {} from {} users: {} accepted, {} refused, {} indeterminate; \
         {:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms (corrected p99 {:.1} ms); statuses {:?}",
        http.transmissions,
        http.target,
        http.users,
        http.accepted,
        http.refused,
        http.indeterminate,
        http.rate_per_sec,
        http.latency_service.p50_us as f64 / 1000.0,
        http.latency_service.p99_us as f64 / 1000.0,
        http.latency_corrected.p99_us as f64 / 1000.0,
        http.statuses
    );
}
