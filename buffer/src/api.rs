//! The private handover and operations API (`--http`): what the registration system pulls from,
//! and what operators and monitoring read.
//!
//! - `GET /v1/requests?after=SEQ&limit=N[&raw=true]` — requests in seq order
//! - `POST /v1/cursor` `{"through": SEQ}` — what the registration system has taken
//! - `GET /v1/stats` — JSON counters; `GET /metrics` — Prometheus text; `GET /healthz`
//!
//! With a token configured, every `/v1` call needs `Authorization: Bearer TOKEN`.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::intake::{IntakeCounters, IntakeSnapshot};
use crate::journal::{Journal, JournalError, JournalStats};
use crate::prometheus::Kind::{Counter, Gauge};
use crate::prometheus::PrometheusText;

/// Default and largest page of `/v1/requests`.
const DEFAULT_LIMIT: usize = 100;

/// Anything the operations API reports besides the journal, added by other parts (acks).
pub trait ExtraStats: Send + Sync + 'static {
    /// Fields merged into `/v1/stats`. May block (it is called on a blocking thread).
    fn json(&self) -> serde_json::Map<String, serde_json::Value>;
    /// Lines appended to `/metrics`, written with [`PrometheusText`]. May block, like `json`.
    fn prometheus(&self) -> String;
}

pub struct ApiState<J> {
    pub journal: Arc<J>,
    pub intake: Arc<IntakeCounters>,
    pub token: Option<String>,
    pub extra: Vec<Arc<dyn ExtraStats>>,
}

pub fn router<J: Journal>(state: Arc<ApiState<J>>) -> Router {
    let v1 = Router::new()
        .route("/requests", get(list_requests::<J>))
        .route("/cursor", post(commit_cursor::<J>))
        .route("/stats", get(stats::<J>))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_token::<J>,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(metrics::<J>))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn require_token<J: Journal>(
    State(state): State<Arc<ApiState<J>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(request).await
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
    Query(query): Query<ListQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    match state.journal.fetch(query.after, limit, query.raw).await {
        Ok(requests) => Json(json!({ "requests": requests })).into_response(),
        Err(e) => journal_problem(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorBody {
    through: u64,
}

async fn commit_cursor<J: Journal>(
    State(state): State<Arc<ApiState<J>>>,
    Json(body): Json<CursorBody>,
) -> Response {
    match state.journal.commit_cursor(body.through).await {
        Ok(cursor) => Json(json!({ "cursor": cursor })).into_response(),
        Err(e) => journal_problem(e),
    }
}

async fn stats<J: Journal>(State(state): State<Arc<ApiState<J>>>) -> Response {
    let mut body = serde_json::to_value(state.journal.stats()).expect("stats serialize");
    let object = body.as_object_mut().expect("stats are an object");
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
    let mut text = PrometheusText::new();
    text.metric("accepted_seq", Gauge, "Highest seq accepted.", j.accepted);
    text.metric("cursor", Gauge, "Highest seq handed over.", j.cursor);
    text.metric(
        "queue_depth",
        Gauge,
        "Requests accepted, not yet handed over.",
        j.queue_depth,
    );
    text.metric(
        "commits_total",
        Counter,
        "Journal transactions committed (fsyncs).",
        j.commits,
    );
    text.metric(
        "committed_requests_total",
        Counter,
        "Requests written by those commits.",
        j.committed_requests,
    );
    text.metric(
        "write_failures_total",
        Counter,
        "Journal batches that failed to write.",
        j.write_failures,
    );
    text.metric(
        "retransmissions_total",
        Counter,
        "Retransmissions answered with the original ticket.",
        i.retransmissions,
    );
    text.metric(
        "refused_malformed_total",
        Counter,
        "Requests refused as malformed.",
        i.refused_malformed,
    );
    text.metric(
        "refused_unavailable_total",
        Counter,
        "Requests refused because the journal could not write.",
        i.refused_unavailable,
    );
    i.fair.write_metrics(&mut text);
    text
}
