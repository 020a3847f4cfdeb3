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

#[cfg(test)]
mod tests {
    #[test]
    fn a_receipt_is_read_from_a_folded_header() {
        let mail = "From: r@x\r\nX-Barrage-Receipt: journal_id=00000000000000aa; seq=3;\r\n \
                    accepted_at=2026-12-01T10:00:00.000003Z;\r\n chain=ab;\r\n signature=cd\r\n\
                    Subject: s\r\n\r\nbody\r\n";
        let receipt = super::receipt_of_mail(mail).unwrap();
        assert_eq!((receipt.seq, receipt.chain.as_str()), (3, "ab"));
        assert_eq!(receipt.signature, "cd");
        assert!(super::receipt_of_mail("From: r@x\r\n\r\nbody").is_none());
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
        None => (served_public_key(get("/v1/public-key".into())).await?, true),
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

/// The public key the buffer serves now.
async fn served_public_key(request: reqwest::RequestBuilder) -> anyhow::Result<[u8; 32]> {
    let served: serde_json::Value = request.send().await?.json().await?;
    parse_public_key(&served.to_string())
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

/// Receipts: a folder of ack mails (one raw mail per file, its `X-Barrage-Receipt` read), or a
/// file of receipts as JSON lines (the checkpoint shape). A receipt is the signed checkpoint of
/// its request's seq, so it is checked as one.
pub fn read_receipts(path: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    if !path.is_dir() {
        return read_checkpoints(path);
    }
    let mut receipts = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries.iter().filter(|e| e.path().is_file()) {
        let raw = std::fs::read(entry.path())?;
        let receipt = receipt_of_mail(&String::from_utf8_lossy(&raw)).with_context(|| {
            format!(
                "{}: no well-formed X-Barrage-Receipt header",
                entry.path().display()
            )
        })?;
        receipts.push(receipt);
    }
    Ok(receipts)
}

/// The receipt of a raw ack mail: its `X-Barrage-Receipt` header, unfolded.
pub fn receipt_of_mail(raw: &str) -> Option<Checkpoint> {
    let head = raw.split("\r\n\r\n").next()?.split("\n\n").next()?;
    let name = format!("{}:", contract::chain::RECEIPT_HEADER.to_ascii_lowercase());
    let mut lines = head.lines();
    let first = lines.find(|l| l.to_ascii_lowercase().starts_with(&name))?;
    let mut value = first[name.len()..].to_string();
    for line in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push(' ');
        value.push_str(line.trim());
    }
    contract::chain::parse_receipt_header(&value)
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
