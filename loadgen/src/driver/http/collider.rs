//! The web key-collider's POST: a form under a web user's requester (`email`) and
//! `Idempotency-Key`, with other content, sent from the collider's own source address before the
//! user's own form (contract: Retransmission: the user must still get its own ticket, or a
//! clear `422`, never the collider's).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// What the intake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A status and the body (cut to 300 characters), and the ticket of a `202`.
    Replied {
        status: u16,
        body: String,
        ticket: Option<u64>,
    },
    /// No answer (connection refused or cut, timeout).
    NoReply(String),
}

/// One colliding form.
#[derive(Debug, Clone)]
pub struct Collision<'a> {
    pub target: SocketAddr,
    pub path: &'a str,
    pub source: Option<IpAddr>,
    pub timeout: Duration,
    /// The collider's own `X-Landrush-Id`.
    pub id: &'a str,
    /// The victim's key and requester.
    pub key: &'a str,
    pub email: &'a str,
    /// The collider's content.
    pub domain: &'a str,
    pub holder: &'a str,
}

#[derive(Deserialize)]
struct Accepted {
    ticket: Option<u64>,
}

/// Posts the colliding form as JSON.
pub async fn post(c: &Collision<'_>) -> Answer {
    let mut builder = reqwest::Client::builder().timeout(c.timeout);
    if let Some(ip) = c.source {
        builder = builder.local_address(ip);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => return Answer::NoReply(format!("no client: {e}")),
    };
    let body = serde_json::json!({
        "domain": c.domain,
        "holder": c.holder,
        "contact": format!("{}@holders.invalid", c.holder.replace(' ', "-").to_lowercase()),
        "email": c.email,
    });
    let sent = client
        .post(format!("http://{}{}", c.target, c.path))
        .header("Idempotency-Key", c.key)
        .header("X-Landrush-Id", c.id)
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Answer::NoReply(format!("no reply: {e}")),
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let ticket = (status == 202)
        .then(|| serde_json::from_str::<Accepted>(&text).ok())
        .flatten()
        .and_then(|a| a.ticket);
    Answer::Replied {
        status,
        body: text.chars().take(300).collect(),
        ticket,
    }
}
