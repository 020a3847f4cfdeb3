//! The private handover and operations API (`--http`): what the registration system pulls from,
//! and what operators and monitoring read.
//!
//! - `GET /v1/requests?after=SEQ&limit=N[&raw=true]` — requests in seq order, in pages bounded
//!   by rows and bytes, streamed; `409` when `after` is beyond the last seq
//! - `POST /v1/cursor` `{"through": SEQ}` — what the registration system has taken
//! - `GET /v1/public-key`, `GET /v1/checkpoint` — the signing key and a signed checkpoint of
//!   the newest committed request (contract: Provable order)
//! - `GET /v1/stats` — JSON counters; `GET /metrics` — Prometheus text
//! - `GET /healthz` (`/healthz/live`): the process answers; `GET /healthz/ready`: it can take
//!   requests (`503` with the reason when not)
//!
//! Every error is JSON, `{"error": TEXT}`, 4xx for a client's mistake. Who may call is
//! [`auth`]'s; the connections' bounds are [`listener`]'s.

pub mod auth;
pub mod listener;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::intake::{IntakeCounters, IntakeSnapshot};
use crate::journal::{Journal, JournalError, JournalStats, StoredRequest};
use crate::prometheus::Kind::{Counter, Gauge};
use crate::prometheus::PrometheusText;
pub use listener::ApiLimits;

/// Default page of `/v1/requests`, in rows.
const DEFAULT_LIMIT: usize = 100;
/// Largest `POST /v1/cursor` body.
const MAX_CURSOR_BODY: usize = 4096;

/// Anything the operations API reports besides the journal, added by other parts (acks).
pub trait ExtraStats: Send + Sync + 'static {
    /// Fields merged into `/v1/stats`. May block (it is called on a blocking thread).
    fn json(&self) -> serde_json::Map<String, serde_json::Value>;
    /// Lines appended to `/metrics`, written with [`PrometheusText`]. May block, like `json`.
    fn prometheus(&self) -> String;
}

pub struct ApiState<J> {
    pub journal: Arc<J>,
    /// Signs checkpoints.
    pub signer: Arc<crate::signing::Signer>,
    pub intake: Arc<IntakeCounters>,
    pub token: Option<String>,
    pub extra: Vec<Arc<dyn ExtraStats>>,
    pub limits: ApiLimits,
}

pub fn router<J: Journal>(state: Arc<ApiState<J>>) -> Router {
    let guard = || middleware::from_fn_with_state(state.clone(), require_token::<J>);
    let v1 = Router::new()
        .route("/requests", get(list_requests::<J>))
        .route("/cursor", post(commit_cursor::<J>))
        .route("/stats", get(stats::<J>))
        .route("/public-key", get(public_key::<J>))
        .route("/checkpoint", get(checkpoint::<J>))
        .layer(guard());
    let mut metrics = Router::new().route("/metrics", get(metrics::<J>));
    if state.token.is_none() || state.limits.metrics_require_token {
        metrics = metrics.layer(guard());
    }
    Router::new()
        .nest("/v1", v1)
        .merge(metrics)
        .route("/healthz", get(live))
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready::<J>))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .with_state(state)
}

async fn require_token<J: Journal>(
    State(state): State<Arc<ApiState<J>>>,
    request: Request,
    next: Next,
) -> Response {
    match auth::check(state.token.as_deref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let status = match denied {
                auth::Denied::Token => StatusCode::UNAUTHORIZED,
                auth::Denied::Host => StatusCode::FORBIDDEN,
            };
            problem(status, denied.message())
        }
    }
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn journal_problem(error: JournalError) -> Response {
    match error {
        JournalError::Unavailable(why) => problem(StatusCode::SERVICE_UNAVAILABLE, &why),
        JournalError::Invalid(why) | JournalError::Conflict(why) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, &why)
        }
    }
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready<J: Journal>(State(state): State<Arc<ApiState<J>>>) -> Response {
    match state.journal.not_ready() {
        None => "ready\n".into_response(),
        Some(why) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {why}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    #[serde(default)]
    raw: bool,
}

async fn list_requests<J: Journal>(
    State(state): State<Arc<ApiState<J>>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let last = match state.journal.last_seq().await {
        Ok(last) => last,
        Err(e) => return journal_problem(e),
    };
    let journal_id = state.journal.journal_id().to_string();
    if query.after > last {
        let message = format!(
            "after={} is beyond the last accepted seq {last}: this journal never stored it. A \
             cursor from another journal (compare journal_id), or from one that lost requests; \
             never skip ahead, pull from after={last} at most",
            query.after
        );
        let body = json!({ "error": message, "last_seq": last, "journal_id": journal_id });
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    match state.journal.fetch(query.after, limit, query.raw).await {
        Ok(rows) => page(&journal_id, last, rows),
        Err(e) => journal_problem(e),
    }
}

async fn public_key<J: Journal>(State(state): State<Arc<ApiState<J>>>) -> Response {
    Json(state.signer.public_key_json()).into_response()
}

/// A signed checkpoint of the newest committed request (`chain(0)` and seq 0 when empty).
async fn checkpoint<J: Journal>(State(state): State<Arc<ApiState<J>>>) -> Response {
    let journal_id = state.journal.journal_id().to_string();
    let last = match state.journal.last_seq().await {
        Ok(last) => last,
        Err(e) => return journal_problem(e),
    };
    let (accepted_at, chain) = if last == 0 {
        let genesis = contract::chain::genesis(&journal_id);
        (None, contract::chain::hex(&genesis))
    } else {
        match state.journal.fetch(last - 1, 1, false).await {
            Ok(rows) if rows.len() == 1 && rows[0].seq == last => {
                let row = rows.into_iter().next().expect("one row");
                (Some(row.accepted_at), row.chain)
            }
            Ok(_) => {
                let message = format!("seq {last} is committed but cannot be read");
                return problem(StatusCode::SERVICE_UNAVAILABLE, &message);
            }
            Err(e) => return journal_problem(e),
        }
    };
    let signed = state
        .signer
        .checkpoint(&journal_id, last, accepted_at, chain);
    Json(signed).into_response()
}

/// `{"journal_id", "last_seq", "requests": [...]}`, each row serialized only when the body
/// stream reaches it, so the page is never held twice (rows and text).
fn page(journal_id: &str, last_seq: u64, rows: Vec<StoredRequest>) -> Response {
    let head = format!(
        "{{\"journal_id\":{},\"last_seq\":{last_seq},\"requests\":[",
        serde_json::to_string(journal_id).expect("a string serializes")
    );
    let chunks = rows.into_iter().enumerate().map(|(n, row)| {
        let mut text = if n == 0 { Vec::new() } else { b",".to_vec() };
        serde_json::to_writer(&mut text, &row).expect("a stored request serializes");
        Ok::<_, Infallible>(Bytes::from(text))
    });
    let stream = futures_util::stream::iter(
        std::iter::once(Ok(Bytes::from(head)))
            .chain(chunks)
            .chain(std::iter::once(Ok(Bytes::from_static(b"]}")))),
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorBody {
    through: u64,
}

async fn commit_cursor<J: Journal>(
    State(state): State<Arc<ApiState<J>>>,
    request: Request,
) -> Response {
    let body = match cursor_body(&state.limits, request).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    match state.journal.commit_cursor(body.through).await {
        Ok(cursor) => Json(json!({ "cursor": cursor })).into_response(),
        Err(e) => journal_problem(e),
    }
}

/// The cursor body, read within the body deadline and size, or the JSON refusal.
async fn cursor_body(limits: &ApiLimits, request: Request) -> Result<CursorBody, Response> {
    let json_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        let message = "the body must be JSON, sent with Content-Type: application/json";
        return Err(problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
    }
    let read = axum::body::to_bytes(request.into_body(), MAX_CURSOR_BODY);
    let bytes = match tokio::time::timeout(limits.request_timeout, read).await {
        Err(_) => {
            return Err(problem(
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time",
            ));
        }
        Ok(Err(_)) => {
            let message = format!("the body is unreadable or larger than {MAX_CURSOR_BODY} bytes");
            return Err(problem(StatusCode::PAYLOAD_TOO_LARGE, &message));
        }
        Ok(Ok(bytes)) => bytes,
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        let message = format!("the body must be {{\"through\": SEQ}}: {e}");
        problem(status, &message)
    })
}

async fn stats<J: Journal>(State(state): State<Arc<ApiState<J>>>) -> Response {
    let mut body = serde_json::to_value(state.journal.stats()).expect("stats serialize");
    let object = body.as_object_mut().expect("stats are an object");
    object.insert("journal_id".into(), state.journal.journal_id().into());
    object.insert(
        "intake".into(),
        serde_json::to_value(state.intake.snapshot()).expect("counters serialize"),
    );
    // The extras read SQLite (the ack outbox): off the runtime's few worker threads.
    let extra = state.extra.clone();
    match tokio::task::spawn_blocking(move || extra.iter().map(|e| e.json()).collect::<Vec<_>>())
        .await
    {
        Ok(maps) => maps.into_iter().for_each(|map| object.extend(map)),
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    Json(body).into_response()
}

async fn metrics<J: Journal>(State(state): State<Arc<ApiState<J>>>) -> Response {
    let mut text = core_metrics(&state.journal.stats(), &state.intake.snapshot());
    let extra = state.extra.clone();
    match tokio::task::spawn_blocking(move || {
        extra.iter().map(|e| e.prometheus()).collect::<Vec<_>>()
    })
    .await
    {
        Ok(parts) => parts.iter().for_each(|part| text.extend(part)),
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text.into_string(),
    )
        .into_response()
}

/// The journal's and the intakes' part of `/metrics`.
fn core_metrics(j: &JournalStats, i: &IntakeSnapshot) -> PrometheusText {
    #[rustfmt::skip]
    let metrics = [
        ("accepted_seq", Gauge, "Highest seq accepted.", j.accepted),
        ("cursor", Gauge, "Highest seq handed over.", j.cursor),
        ("queue_depth", Gauge, "Requests accepted, not yet handed over.", j.queue_depth),
        ("commits_total", Counter, "Journal transactions committed (fsyncs).", j.commits),
        ("committed_requests_total", Counter, "Requests written by those commits.",
            j.committed_requests),
        ("write_failures_total", Counter, "Journal batches that failed to write.",
            j.write_failures),
        ("retransmissions_total", Counter, "Retransmissions answered with the original ticket.",
            i.retransmissions),
        ("refused_malformed_total", Counter, "Requests refused as malformed.",
            i.refused_malformed),
        ("refused_unavailable_total", Counter,
            "Requests refused because the journal could not write.", i.refused_unavailable),
        ("refused_disk_reserve_total", Counter,
            "New requests refused before their data: the disk reserve was reached.",
            j.refused_disk_reserve),
        ("refused_queue_full_total", Counter,
            "New requests refused before their data: the queue was at its bound.",
            j.refused_queue_full),
        ("accepted_tls_total", Counter, "Requests accepted over a STARTTLS session.",
            i.accepted_tls),
        ("unusable_message_ids_total", Counter,
            "Accepted mails whose Message-ID was unusable (stored under a generated one).",
            i.unusable_message_ids),
        ("unusable_ack_addresses_total", Counter,
            "Accepted mails with no usable ack address (not acked).", i.unusable_ack_addresses),
    ];
    let mut text = PrometheusText::new();
    for (name, kind, help, value) in metrics {
        text.metric(name, kind, help, value);
    }
    i.fair.write_metrics(&mut text);
    text
}
