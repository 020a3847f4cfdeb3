//! The web intake's answers: JSON for programs, the same as an HTML page for browsers (by
//! `Accept`), and the form page itself. Refusals are [`Problem`]s naming each bad field.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::journal::{Ticket, format_micros};

const FORM_PAGE: &str = include_str!("form.html");

/// The form, with a one-time token of its own: posting this rendered page again (a double
/// click, a browser resubmit) names the same token and gets the same ticket.
pub(super) async fn form_page() -> Response {
    let page = FORM_PAGE.replace("{{FORM_TOKEN}}", &super::idempotency::new_form_token());
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// How the client wants its answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Json,
    Html,
}

pub(super) fn wants(headers: &HeaderMap) -> Answer {
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
pub(super) struct Problem {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) fields: BTreeMap<String, String>,
    pub(super) retry_after: Option<u64>,
    /// A stable name of the refusal (`"reason"` in the JSON body), for programs.
    pub(super) reason: Option<&'static str>,
}

impl Problem {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Problem {
            status,
            message: message.into(),
            fields: BTreeMap::new(),
            retry_after: None,
            reason: None,
        }
    }

    /// A refusal of a client over one of its limits: `503` with `Retry-After` and a reason, the
    /// web's temporary refusal (contract: Refusals), so clients and checkers take it as "retry".
    pub(super) fn too_many(message: impl Into<String>, reason: &'static str, retry: u64) -> Self {
        Problem {
            reason: Some(reason),
            ..Problem::unavailable(message, retry)
        }
    }

    pub(super) fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    pub(super) fn render(self, answer: Answer) -> Response {
        let mut response = match answer {
            Answer::Json => {
                let mut body = json!({ "error": self.message });
                if let Some(reason) = self.reason {
                    body["reason"] = json!(reason);
                }
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

pub(super) fn accepted(ticket: Ticket, message_id: &str, answer: Answer) -> Response {
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
