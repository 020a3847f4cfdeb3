//! The public web intake (`--web`): a small HTML form at `GET /` and `POST /requests`, on its own
//! listener apart from the private handover API.
//!
//! `POST /requests` takes JSON (`{"domain", "holder", "contact", "email"}`) or
//! `application/x-www-form-urlencoded` (what the form posts) and answers:
//!
//! - `202 {"ticket", "accepted_at", "message_id", "retransmission"}` only after the durable
//!   commit; the same page as HTML when the client accepts HTML (a browser);
//! - `422 {"error", "fields": {FIELD: PROBLEM, …}}` naming each bad field;
//! - `413` when the body is larger than `web.max_body_size`;
//! - `503` with `Retry-After` when the journal cannot write, or when too many requests are in
//!   flight (`web.max_concurrent_requests`);
//! - `408` when the body does not arrive within `web.request_timeout_secs`.
//!
//! An `Idempotency-Key` header plays the role the Message-ID plays for mail (RFC 1047): a retried
//! POST from the same requester (`email`) with the same key and the same fields inside the dedup
//! window gets the original ticket, no new seq and no second ack; the same key with other fields
//! gets `422` (`"reason": "idempotency_key_reused"`). The form page carries a one-time
//! `form_token` that does the same for a browser's double click or resubmit. The key also fixes
//! the request's Message-ID (`<KEY>` when the key looks like one, `<idem.KEY@hostname>`
//! otherwise), so a client can join the ack (`In-Reply-To`) to its POST before it has any reply.
//! Requests without a key get a generated Message-ID.
//!
//! Per-client limits (contract: Fair intake): POSTs in flight and POSTs per minute per client
//! address, over which a client gets `503` with `Retry-After` and a `reason`.
//!
//! Requests from the web and from SMTP share one journal: one sequence, one ack outbox (the ack
//! goes to the posted `email`).
//!
//! Layout: this file routes and runs a POST through its steps; `listener` is the accept loop,
//! `fields` decodes and checks the posted fields, `idempotency` owns `Idempotency-Key`,
//! `record` what is kept for disputes, and `response` the answers (JSON or HTML).

mod fields;
mod idempotency;
mod listener;
mod record;
mod response;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tokio::sync::Semaphore;

use super::IntakeCounters;
use crate::anvil::{Anvil, ClientLimits, Exceeded, Lease, Refusal};
use crate::journal::{Journal, JournalError, NewRequest, Ticket, now_micros};
pub use fields::FIELDS;
pub use idempotency::{MAX_KEY_LEN, message_id_for_key};
pub use listener::serve;
use response::{Problem, accepted, form_page, wants};

/// Bounds of the web intake (`[web]` in the config file).
#[derive(Debug, Clone)]
pub struct WebLimits {
    /// Largest request body, bytes; larger gets 413.
    pub max_body_size: usize,
    /// Open connections at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// `POST /requests` being handled at once; more get 503 + Retry-After.
    pub max_concurrent_requests: usize,
    /// A client must send its request headers within this.
    pub header_timeout: Duration,
    /// A client must send its whole body within this (else 408).
    pub request_timeout: Duration,
    /// `Retry-After` of every 503, seconds.
    pub retry_after_secs: u64,
    /// Per-client limits: `max_connections` bounds POSTs in flight per client,
    /// `connection_rate` POSTs per client per minute (contract: Fair intake).
    pub clients: ClientLimits,
    /// HTTPS on the listener with this certificate; `None`: plain HTTP.
    pub tls: Option<Arc<crate::tls::Certificates>>,
}

impl Default for WebLimits {
    fn default() -> Self {
        WebLimits {
            max_body_size: 16 * 1024,
            max_connections: 10_000,
            max_concurrent_requests: 4096,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry_after_secs: 1,
            clients: ClientLimits {
                max_connections: 50,
                connection_rate: 1200,
                message_rate: 0,
                ..ClientLimits::default()
            },
            tls: None,
        }
    }
}

/// The web intake: validates a POST, appends it to the journal, answers.
pub struct WebIntake<J> {
    journal: Arc<J>,
    counters: Arc<IntakeCounters>,
    hostname: String,
    limits: WebLimits,
    in_flight: Semaphore,
    generated_ids: AtomicU64,
    clients: Arc<Anvil>,
}

/// The address a request came from, put in the request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl<J: Journal> WebIntake<J> {
    pub fn new(
        journal: Arc<J>,
        counters: Arc<IntakeCounters>,
        hostname: String,
        limits: WebLimits,
    ) -> Self {
        WebIntake {
            journal,
            counters,
            hostname,
            in_flight: Semaphore::new(limits.max_concurrent_requests.max(1)),
            clients: Anvil::new(limits.clients.clone()),
            limits,
            generated_ids: AtomicU64::new(0),
        }
    }
}

/// The router of the web intake: `GET /` (the form) and `POST /requests`.
pub fn router<J: Journal>(intake: Arc<WebIntake<J>>) -> Router {
    Router::new()
        .route("/", get(form_page))
        .route("/requests", get(form_page).post(post_request::<J>))
        .with_state(intake)
}

async fn post_request<J: Journal>(
    State(intake): State<Arc<WebIntake<J>>>,
    client: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = wants(&headers);
    let limits = &intake.limits;
    let _lease = match client.map(|c| intake.admit(c.0.0)) {
        Some(Err(problem)) => return problem.render(answer),
        Some(Ok(lease)) => lease,
        None => None,
    };
    let Ok(_permit) = intake.in_flight.try_acquire() else {
        return Problem::unavailable(
            "too many requests in flight, try again later",
            limits.retry_after_secs,
        )
        .render(answer);
    };
    match accept(&intake, &headers, body).await {
        Ok((ticket, message_id)) => accepted(ticket, &message_id, answer),
        Err(problem) => problem.render(answer),
    }
}

/// Reads, validates and stores one POST.
async fn accept<J: Journal>(
    intake: &WebIntake<J>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Ticket, String), Problem> {
    if let Err(why) = intake.journal.admission() {
        let status = StatusCode::INSUFFICIENT_STORAGE;
        return Err(Problem {
            status,
            ..Problem::unavailable(why.to_string(), intake.limits.retry_after_secs)
        });
    }
    let bytes = read_body(&intake.limits, headers, body).await?;
    let malformed = |problem: Problem| {
        IntakeCounters::count(&intake.counters.refused_malformed);
        problem
    };
    let mut pairs = fields::parse_body(headers, &bytes).map_err(malformed)?;
    let key = idempotency::idempotency_key(headers, &mut pairs).map_err(malformed)?;
    let (form, email) = fields::validate(pairs).map_err(malformed)?;
    let (message_id, dedup_key) = intake.message_id(key.as_deref(), &email);
    let request = NewRequest {
        intake: "http",
        message_id: message_id.clone(),
        dedup_key,
        sender: email.to_ascii_lowercase(),
        ack_to: Some(email),
        domain: form.domain,
        fields: form.fields,
        raw: record::raw_record(headers, &message_id, &bytes),
    };
    let ticket = intake.store(request).await?;
    Ok((ticket, message_id))
}

/// The body, within `max_body_size` and `request_timeout`.
async fn read_body(limits: &WebLimits, headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes",
                limits.max_body_size
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_size as u64) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, limits.max_body_size);
    match tokio::time::timeout(limits.request_timeout, read).await {
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                return Err(too_large());
            }
            Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ))
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

impl<J: Journal> WebIntake<J> {
    /// Counts a POST from `peer` against its client's limits.
    fn admit(&self, peer: std::net::SocketAddr) -> Result<Option<Lease>, Problem> {
        let rate = self.limits.clients.connection_rate;
        self.clients.connect(peer.ip()).map_err(|exceeded| {
            let (why, problem) = match exceeded {
                Exceeded::ConnectionRate => (
                    Refusal::WebClientPostRate,
                    Problem::too_many(
                        format!(
                            "too many requests from your address: at most {rate} a minute, try \
                             again later"
                        ),
                        "client_post_rate",
                        60u64.div_ceil(u64::from(rate.max(1))),
                    ),
                ),
                Exceeded::Connections | Exceeded::MessageRate => (
                    Refusal::WebClientRequests,
                    Problem::too_many(
                        "too many requests in flight from your address, try again later",
                        "client_requests_in_flight",
                        self.limits.retry_after_secs,
                    ),
                ),
            };
            self.counters.refused(why);
            problem
        })
    }

    /// The Message-ID and dedup key of a request with this `Idempotency-Key` (or none) from
    /// this requester.
    fn message_id(&self, key: Option<&str>, requester: &str) -> (String, Option<String>) {
        match key {
            Some(key) => (
                message_id_for_key(key, &self.hostname),
                Some(idempotency::dedup_key(requester, key)),
            ),
            None => {
                let n = self.generated_ids.fetch_add(1, Ordering::Relaxed);
                let id = format!("<barrage.web.{}.{n}@{}>", now_micros(), self.hostname);
                (id, None)
            }
        }
    }

    /// Appends the request to the journal and counts the outcome.
    async fn store(&self, request: NewRequest) -> Result<Ticket, Problem> {
        match self.journal.append(request).await {
            Ok(ticket) => {
                let counter = if ticket.retransmission {
                    &self.counters.retransmissions
                } else {
                    &self.counters.accepted
                };
                IntakeCounters::count(counter);
                Ok(ticket)
            }
            Err(JournalError::Unavailable(why)) => {
                IntakeCounters::count(&self.counters.refused_unavailable);
                tracing::warn!("web request not stored, answered 503: {why}");
                Err(Problem::unavailable(
                    "request not stored: the journal cannot write right now, try again later",
                    self.limits.retry_after_secs,
                ))
            }
            Err(JournalError::Invalid(why)) => {
                IntakeCounters::count(&self.counters.refused_malformed);
                Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, why))
            }
            Err(JournalError::Conflict(why)) => {
                self.counters.refused(Refusal::WebKeyReuse);
                let mut problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, why);
                problem.reason = Some("idempotency_key_reused");
                Err(problem)
            }
        }
    }
}
