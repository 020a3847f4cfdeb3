//! `landrush audit`: the verification of a buffer's order from the outside (contract: Provable
//! order), with no client records. It pulls every row through the Handover API (paging,
//! `raw=true`), feeds them to the [`verify::Verifier`], and checks the signed checkpoints it is
//! given against the recomputed chain.

pub mod verify;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use contract::chain::{Checkpoint, parse_hex};
use serde::Deserialize;

use verify::{Finding, ServedRow, Verifier};

/// Rows asked per page (the API's own maximum).
const PAGE: usize = 1000;

/// Where the buffer is and what the auditor holds.
pub struct AuditInput<'a> {
    /// The handover API's base URL, `http://127.0.0.1:8025`.
    pub handover: &'a str,
    pub token: Option<&'a str>,
    /// The public key the auditor trusts; `None`: the one the buffer serves (weaker: a buffer
    /// that changed its key passes, so give the key published before the day).
    pub public_key: Option<[u8; 32]>,
    pub checkpoints: Vec<Checkpoint>,
}

/// What an audit found.
#[derive(Debug)]
pub struct AuditReport {
    pub journal_id: String,
    pub rows: u64,
    pub last_chain: String,
    pub checkpoints_verified: u64,
    pub unverifiable_raw: u64,
    /// Whether the public key came from the buffer itself.
    pub key_from_buffer: bool,
    /// `None`: the audit passed.
    pub finding: Option<Finding>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.finding.is_none()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "journal {}: {} rows served, chain({}) = {}\ncheckpoints verified: {}{}\n",
            self.journal_id,
            self.rows,
            self.rows,
            self.last_chain,
            self.checkpoints_verified,
            if self.key_from_buffer {
                " (with the key the buffer serves now: give --public-key for an independent check)"
            } else {
                ""
            },
        );
        if self.unverifiable_raw > 0 {
            out += &format!(
                "raw_sha256 not recomputable for {} rows (raw served as lossy UTF-8)\n",
                self.unverifiable_raw
            );
        }
        match &self.finding {
            None => {
                out += "audit: pass (seqs gap-free, accepted_at never decreasing, every link)\n"
            }
            Some(finding) => out += &format!("audit: FAIL at {finding}\n"),
        }
        out
    }
}

#[derive(Deserialize)]
struct Page {
    journal_id: String,
    requests: Vec<ServedRow>,
}

/// Runs the audit against a running buffer.
pub async fn audit(input: AuditInput<'_>) -> anyhow::Result<AuditReport> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let base = input.handover.trim_end_matches('/');
    let get = |path: String| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = input.token {
            request = request.bearer_auth(token);
        }
        request
    };
    let (public_key, key_from_buffer) = match input.public_key {
        Some(key) => (key, false),
        None => {
            let served: serde_json::Value =
                get("/v1/public-key".into()).send().await?.json().await?;
            (parse_public_key(&served.to_string())?, true)
        }
    };
    let mut after = 0;
    let mut verifier: Option<Verifier> = None;
    let mut report = AuditReport {
        journal_id: String::new(),
        rows: 0,
        last_chain: String::new(),
        checkpoints_verified: 0,
        unverifiable_raw: 0,
        key_from_buffer,
        finding: None,
    };
    loop {
        let response = get(format!("/v1/requests?after={after}&limit={PAGE}&raw=true"))
            .send()
            .await
            .with_context(|| format!("cannot reach the handover API at {base}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /v1/requests answered {}: check --handover and --api-token",
            response.status()
        );
        let page: Page = response.json().await.context("a page that is not JSON")?;
        if verifier.is_none() {
            match Verifier::new(&page.journal_id, &public_key, input.checkpoints.clone()) {
                Ok(v) => verifier = Some(v),
                Err(finding) => {
                    report.journal_id = page.journal_id;
                    report.finding = Some(finding);
                    return Ok(report);
                }
            }
        }
        let v = verifier.as_mut().expect("made above");
        if page.requests.is_empty() {
            report.finding = v.finish().err();
            break;
        }
        if let Some(finding) = page.requests.iter().find_map(|row| v.push(row).err()) {
            report.finding = Some(finding);
            break;
        }
        after = v.last_seq();
    }
    let v = verifier.expect("one page was read");
    report.journal_id = v.journal_id().to_string();
    report.rows = v.last_seq();
    report.last_chain = v.last_chain();
    report.checkpoints_verified = v.checkpoints_verified;
    report.unverifiable_raw = v.unverifiable_raw;
    Ok(report)
}

/// A public key as `GET /v1/public-key` serves it (JSON with `public_key`) or as 64 hex digits.
pub fn parse_public_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let hex = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => value["public_key"].as_str().map(str::to_string),
        Err(_) => Some(text.trim().to_string()),
    };
    hex.as_deref()
        .and_then(parse_hex::<32>)
        .context("not an Ed25519 public key: give the JSON of /v1/public-key or 64 hex digits")
}

/// Checkpoints, one JSON object (as `GET /v1/checkpoint` serves it) per line.
pub fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a checkpoint", path.display(), n + 1))
        })
        .collect()
}
