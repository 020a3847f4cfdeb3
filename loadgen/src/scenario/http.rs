//! The `[http]` part of a scenario: web-form submissions played by the HTTP driver
//! (`crate::driver::http`, built on goose) alongside the SMTP part, against the buffer's web
//! intake (`landrush run --web-target HOST:PORT`).

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

use super::Dur;

/// Web users posting the request form, as goose users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPart {
    /// Web users (goose users); each posts its forms one after the other (closed model).
    pub users: u32,
    /// Users started per second from the scenario's start (goose's hatch rate); default: all
    /// of them in the first second.
    #[serde(default)]
    pub hatch_rate: Option<f64>,
    /// Forms each user posts (goose iterations). Exactly one of `requests_per_user` and
    /// `run_time` is given.
    #[serde(default)]
    pub requests_per_user: Option<u32>,
    /// How long the users keep posting (goose run time, whole seconds).
    #[serde(default)]
    pub run_time: Option<Dur>,
    /// Most POSTs per second over all users (goose's throttle); 0 = no limit.
    #[serde(default)]
    pub throttle: u32,
    /// A user's pause between the reply to one form and the next form.
    #[serde(default)]
    pub think_time: Dur,
    /// Path of the form's POST on the web target.
    #[serde(default = "default_path")]
    pub path: String,
    /// Each user's first form asks for a hot name of `[domains]` (user `u` asks hot name
    /// `u % hot names`), so web and mail clients race for the same names in the same second.
    #[serde(default = "yes")]
    pub hot_first: bool,
    /// Fraction of forms posted a second time at once by the same user with the same
    /// `Idempotency-Key`: the buffer must answer with the same ticket (no new seq, no second ack).
    #[serde(default)]
    pub resubmit_same_key: f64,
    /// Fraction of forms posted a second time at once without any `Idempotency-Key`: a new
    /// request (new id, new ticket), like a person hitting Submit again.
    #[serde(default)]
    pub resubmit_without_key: f64,
    /// Fraction of forms sent as `application/x-www-form-urlencoded` (what a browser posts);
    /// the rest are JSON.
    #[serde(default)]
    pub form_encoded: f64,
    /// How long a POST may take before it is recorded indeterminate.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_path() -> String {
    "/requests".into()
}
fn yes() -> bool {
    true
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// Most web users in one scenario.
pub const MAX_USERS: u32 = 10_000;

impl HttpPart {
    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_USERS).contains(&self.users),
            "http.users: between 1 and {MAX_USERS}"
        );
        if let Some(rate) = self.hatch_rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "http.hatch_rate: users started per second, more than 0"
            );
        }
        match (self.requests_per_user, &self.run_time) {
            (Some(n), None) => ensure!(
                (1..=1_000_000).contains(&n),
                "http.requests_per_user: between 1 and 1000000"
            ),
            (None, Some(t)) => ensure!(
                t.0 >= Duration::from_secs(1) && t.0.as_secs() <= 7 * 24 * 3600,
                "http.run_time: between 1s and 7 days"
            ),
            _ => anyhow::bail!(
                "http: give exactly one of `requests_per_user` (forms per user) and `run_time`"
            ),
        }
        for (name, value) in [
            ("resubmit_same_key", self.resubmit_same_key),
            ("resubmit_without_key", self.resubmit_without_key),
            ("form_encoded", self.form_encoded),
        ] {
            ensure!(
                (0.0..=1.0).contains(&value),
                "http.{name}: a fraction between 0 and 1 (got {value})"
            );
        }
        ensure!(
            self.resubmit_same_key + self.resubmit_without_key <= 1.0,
            "http: resubmit_same_key + resubmit_without_key must not exceed 1"
        );
        ensure!(
            self.path.starts_with('/') && !self.path.contains(char::is_whitespace),
            "http.path: an absolute path such as /requests"
        );
        ensure!(
            !self.timeout.0.is_zero(),
            "http.timeout: must be more than 0"
        );
        ensure!(
            self.think_time.0.as_secs() <= 3600,
            "http.think_time: at most an hour"
        );
        Ok(())
    }

    /// The hatch rate goose gets: users per second.
    pub fn hatch_rate(&self) -> f64 {
        self.hatch_rate.unwrap_or(self.users as f64)
    }
}
