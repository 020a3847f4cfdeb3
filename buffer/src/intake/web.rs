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
//! POST with the same key inside the dedup window gets the original ticket, no new seq and no
//! second ack. The key also fixes the request's Message-ID (`<KEY>` when the key looks like one,
//! `<idem.KEY@hostname>` otherwise), so a client can join the ack (`In-Reply-To`) to its POST
//! before it has any reply. Requests without a key get a generated Message-ID.
//!
//! Requests from the web and from SMTP share one journal: one sequence, one ack outbox (the ack
//! goes to the posted `email`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::IntakeCounters;
use crate::form::{self, MAX_VALUE_LEN};
use crate::journal::{Journal, JournalError, NewRequest, Ticket, format_micros, now_micros};

/// The fields `POST /requests` takes; any other is refused by name.
pub const FIELDS: [&str; 4] = ["domain", "holder", "contact", "email"];

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

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
}

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

/// Serves the web intake on `listener` until `shutdown` resolves, then lets requests in flight
/// finish (at most 30 s).
pub async fn serve<J: Journal>(
    listener: TcpListener,
    intake: Arc<WebIntake<J>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = intake.limits.clone();
    let app = router(intake);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("web intake: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream, limits.retry_after_secs));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("web intake: connections still open after 30 s, closing them");
    }
    Ok(())
}

/// Too many connections: a minimal 503 and close, without reading the request.
async fn refuse_connection(mut stream: tokio::net::TcpStream, retry_after: u64) {
    let body = "{\"error\":\"too many connections, try again later\"}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

const FORM_PAGE: &str = include_str!("web_form.html");

async fn form_page() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(FORM_PAGE.to_string()),
    )
        .into_response()
}

/// How the client wants its answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Json,
    Html,
}

fn wants(headers: &HeaderMap) -> Answer {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/html") {
        Answer::Html
    } else {
        Answer::Json
    }
}

/// A refusal: status, a message, and per-field problems.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    message: String,
    fields: BTreeMap<String, String>,
    retry_after: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Problem {
            status,
            message: message.into(),
            fields: BTreeMap::new(),
            retry_after: None,
        }
    }

    fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    fn render(self, answer: Answer) -> Response {
        let mut response = match answer {
            Answer::Json => {
                let mut body = json!({ "error": self.message });
                if !self.fields.is_empty() {
                    body["fields"] = json!(self.fields);
                }
                (self.status, Json(body)).into_response()
            }
            Answer::Html => {
                let mut items = String::new();
                for (field, problem) in &self.fields {
                    items.push_str(&format!(
                        "<li><strong>{}</strong>: {}</li>\n",
                        escape(field),
                        escape(problem)
                    ));
                }
                let list = if items.is_empty() {
                    String::new()
                } else {
                    format!("<ul>\n{items}</ul>\n")
                };
                let page = page(
                    "Request not accepted / Demande refusée",
                    &format!(
                        "<p role=\"alert\">{}</p>\n{list}<p><a href=\"/\">Back to the form / \
                         Retour au formulaire</a></p>",
                        escape(&self.message)
                    ),
                );
                (self.status, Html(page)).into_response()
            }
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

async fn post_request<J: Journal>(
    State(intake): State<Arc<WebIntake<J>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = wants(&headers);
    let limits = &intake.limits;
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
    let limits = &intake.limits;
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
    let bytes = match tokio::time::timeout(
        limits.request_timeout,
        axum::body::to_bytes(body, limits.max_body_size),
    )
    .await
    {
        Err(_) => {
            return Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ));
        }
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                return Err(too_large());
            }
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };

    let malformed = |problem: Problem| {
        IntakeCounters::count(&intake.counters.refused_malformed);
        problem
    };
    let pairs = parse_body(headers, &bytes).map_err(malformed)?;
    let (form, email) = validate(pairs).map_err(malformed)?;
    let key = idempotency_key(headers).map_err(malformed)?;

    let (message_id, dedup_key) = match &key {
        Some(key) => (
            message_id_for_key(key, &intake.hostname),
            Some(format!("http\n{key}")),
        ),
        None => {
            let n = intake.generated_ids.fetch_add(1, Ordering::Relaxed);
            let id = format!("<barrage.web.{}.{n}@{}>", now_micros(), intake.hostname);
            (id, None)
        }
    };
    let raw = raw_record(headers, &message_id, &bytes);
    let request = NewRequest {
        intake: "http",
        message_id: message_id.clone(),
        dedup_key,
        sender: email.to_ascii_lowercase(),
        ack_to: Some(email),
        domain: form.domain,
        fields: form.fields,
        raw,
    };
    match intake.journal.append(request).await {
        Ok(ticket) => {
            let counter = if ticket.retransmission {
                &intake.counters.retransmissions
            } else {
                &intake.counters.accepted
            };
            IntakeCounters::count(counter);
            Ok((ticket, message_id))
        }
        Err(JournalError::Unavailable(why)) => {
            IntakeCounters::count(&intake.counters.refused_unavailable);
            tracing::warn!("web request not stored, answered 503: {why}");
            Err(Problem::unavailable(
                "request not stored: the journal cannot write right now, try again later",
                limits.retry_after_secs,
            ))
        }
        Err(JournalError::Invalid(why)) => {
            IntakeCounters::count(&intake.counters.refused_malformed);
            Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, why))
        }
    }
}

/// The posted fields, in order, from a JSON object or a urlencoded form.
fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Vec<(String, String)>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let unprocessable = |message: &str| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    match content_type.as_str() {
        "application/json" => {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| unprocessable(&format!("the body is not valid JSON: {e}")))?;
            let Value::Object(object) = value else {
                return Err(unprocessable("the body must be a JSON object"));
            };
            let mut pairs = Vec::new();
            let mut problem = unprocessable("the request has invalid fields");
            for (key, value) in object {
                match value {
                    Value::String(text) => pairs.push((key, text)),
                    Value::Null => {}
                    _ => {
                        problem.fields.insert(key, "must be a string".into());
                    }
                }
            }
            if problem.fields.is_empty() {
                Ok(pairs)
            } else {
                Err(problem)
            }
        }
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(bytes)
            .map_err(|e| unprocessable(&format!("the form cannot be decoded: {e}"))),
        _ => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or application/x-www-form-urlencoded",
        )),
    }
}

/// Checks every field and names each bad one; returns the form and the ack address.
fn validate(pairs: Vec<(String, String)>) -> Result<(form::Form, String), Problem> {
    let mut problems = BTreeMap::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in pairs {
        let name = key.trim().to_ascii_lowercase();
        if !FIELDS.contains(&name.as_str()) {
            let shown: String = key.chars().take(64).collect();
            problems.insert(
                shown,
                format!("unknown field; the fields are {}", FIELDS.join(", ")),
            );
            continue;
        }
        if values.contains_key(&name) {
            problems.insert(name, "given twice".into());
            continue;
        }
        let value = value.trim();
        if value.chars().count() > MAX_VALUE_LEN {
            problems.insert(name, format!("longer than {MAX_VALUE_LEN} characters"));
        } else if value.chars().any(|c| c.is_control()) {
            problems.insert(name, "contains control characters".into());
        } else if !value.is_empty() {
            values.insert(name, value.to_string());
        }
    }
    match values.get("domain") {
        None if !problems.contains_key("domain") => {
            problems.insert(
                "domain".into(),
                "required: the domain name asked for".into(),
            );
        }
        Some(domain) => {
            if let Err(why) = form::check_domain(domain) {
                problems.insert("domain".into(), why);
            }
        }
        None => {}
    }
    match values.get("email") {
        None if !problems.contains_key("email") => {
            problems.insert(
                "email".into(),
                "required: the address the acknowledgement is sent to".into(),
            );
        }
        Some(email) if !is_address(email) => {
            problems.insert(
                "email".into(),
                "not an e-mail address like name@example.fr".into(),
            );
        }
        _ => {}
    }
    if !problems.is_empty() {
        let names: Vec<&str> = problems.keys().map(String::as_str).collect();
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request refused: invalid field(s): {}", names.join(", ")),
        );
        problem.fields = problems;
        return Err(problem);
    }
    let email = values.get("email").cloned().unwrap_or_default();
    let form = form::from_fields(values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|why| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    Ok((form, email))
}

/// A plain `local@domain` address: no spaces, brackets or quotes, a valid domain.
fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && form::check_domain(domain).is_ok()
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or("");
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request refused: invalid Idempotency-Key",
        );
        problem.fields.insert(
            "Idempotency-Key".into(),
            format!("1 to {MAX_KEY_LEN} printable ASCII characters"),
        );
        return Err(problem);
    }
    Ok(Some(key.to_string()))
}

/// The Message-ID of a keyed request: `<KEY>` when the key is shaped like a Message-ID
/// (`left@right`, no brackets or spaces), else `<idem.KEY@hostname>` with unusual bytes escaped
/// as `=XX`. Deterministic, so a client knows it before any reply.
pub fn message_id_for_key(key: &str, hostname: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if let Some((left, right)) = key.split_once('@')
        && !left.is_empty()
        && !right.is_empty()
        && left.chars().all(plain)
        && right.chars().all(plain)
    {
        return format!("<{key}>");
    }
    let mut escaped = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("={b:02X}"));
        }
    }
    format!("<idem.{escaped}@{hostname}>")
}

/// What is kept of the POST for disputes: a mail-like header block (a few request headers and
/// the Message-ID given to it), a blank line, and the body as received.
fn raw_record(headers: &HeaderMap, message_id: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(body.len() + 256);
    raw.extend_from_slice(
        format!("Message-ID: {message_id}\r\nX-Barrage-Intake: http\r\n").as_bytes(),
    );
    for name in [
        "content-type",
        "idempotency-key",
        "x-landrush-id",
        "user-agent",
        "x-forwarded-for",
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect();
            raw.extend_from_slice(format!("{}: {value}\r\n", header_case(name)).as_bytes());
        }
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

fn header_case(name: &str) -> String {
    match name {
        "x-landrush-id" => "X-Landrush-Id".into(),
        "x-forwarded-for" => "X-Forwarded-For".into(),
        _ => name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

fn accepted(ticket: Ticket, message_id: &str, answer: Answer) -> Response {
    let accepted_at = format_micros(ticket.accepted_at);
    match answer {
        Answer::Json => (
            StatusCode::ACCEPTED,
            Json(json!({
                "ticket": ticket.seq,
                "accepted_at": accepted_at,
                "message_id": message_id,
                "retransmission": ticket.retransmission,
            })),
        )
            .into_response(),
        Answer::Html => {
            let body = format!(
                "<p role=\"status\">Your request is stored as <strong>ticket {seq}</strong>, \
                 accepted at <time datetime=\"{at}\">{at}</time> (UTC). Requests are handled in \
                 ticket order; an acknowledgement mail follows.</p>\n<p lang=\"fr\">Votre demande \
                 est enregistrée sous le <strong>ticket {seq}</strong>, reçue le {at} (UTC). Les \
                 demandes sont traitées dans l'ordre des tickets ; un accusé de réception suit \
                 par courriel.</p>\n<p>Message-ID: <code>{mid}</code></p>",
                seq = ticket.seq,
                at = accepted_at,
                mid = escape(message_id),
            );
            (
                StatusCode::ACCEPTED,
                Html(page("Request accepted / Demande reçue", &body)),
            )
                .into_response()
        }
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta \
         name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         </head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )
}

/// HTML-escapes text for element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_give_stable_message_ids() {
        assert_eq!(
            message_id_for_key("r1.7@landrush.invalid", "h"),
            "<r1.7@landrush.invalid>"
        );
        assert_eq!(message_id_for_key("abc 1", "h"), "<idem.abc=201@h>");
        assert_eq!(message_id_for_key("a@b@c", "h"), "<idem.a=40b=40c@h>");
    }

    #[test]
    fn every_bad_field_is_named() {
        let pairs = vec![
            ("domain".to_string(), "-bad-.fr".to_string()),
            ("email".to_string(), "nobody".to_string()),
            ("colour".to_string(), "blue".to_string()),
            ("holder".to_string(), "a\u{7}b".to_string()),
        ];
        let problem = validate(pairs).err().unwrap();
        let names: Vec<&str> = problem.fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["colour", "domain", "email", "holder"]);
        let (form, email) = validate(vec![
            ("domain".into(), "Exemple.FR".into()),
            ("email".into(), "a@b.fr".into()),
            ("holder".into(), "".into()),
        ])
        .unwrap();
        assert_eq!(
            (form.domain.as_str(), email.as_str()),
            ("exemple.fr", "a@b.fr")
        );
        assert!(!form.fields.contains_key("holder"));
    }
}
