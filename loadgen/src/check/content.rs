//! Content (contract: Zero loss, Request format): every request handed over is the request its
//! client sent. For a registry the domain *is* the request, so a buffer that hands over another
//! domain, sender or Message-ID under a request's id has lost that request as surely as one that
//! hands over nothing.
//!
//! For the first receipt of each handed record joined to a request, each of these counts (all
//! failures) compares what the handover says with what the client sent, where both are known:
//! - `domain`: the domain (compared after the buffer's normalisation: trimmed, trailing dots
//!   removed, lower-cased);
//! - `sender`: the envelope sender (web: `email`), lower-cased;
//! - `message_id`: the Message-ID, without angle brackets;
//! - `raw`: the SHA-256 of the raw message (see `records::handed_sha256`), where the observer
//!   saw the raw message and the driver knew the bytes it sent (SMTP);
//!
//! and, informational: `compared` (handed records compared), `raw_compared` (of those, with a
//! digest on both sides).

use reports::checks::CheckResult;
use reports::records::{HandedRecord, SentRecord};
use serde_json::json;

use super::index::{CheckOptions, Index, Tally};
use crate::observe::bare_id;

const FAILING: [&str; 4] = ["domain", "sender", "message_id", "raw"];

pub(crate) fn check(index: &Index, options: &CheckOptions) -> CheckResult {
    let mut names = FAILING.to_vec();
    names.extend(["compared", "raw_compared"]);
    let mut tally = Tally::new(options, &names);
    for (i, h) in index.handed.iter().enumerate() {
        let Some(r) = index.handed_req[i] else {
            continue;
        };
        if !index.handed_first[i] {
            continue;
        }
        tally.count("compared");
        let attempts = &index.requests[r].attempts;
        for (name, sent, handed) in differences(attempts, h) {
            tally.count(name);
            tally.example(|| {
                json!({
                    "rule": "the request handed over is the request its client sent",
                    "field": name,
                    "sent": sent,
                    "handed": handed,
                    "request": index.describe(r),
                    "handed_record": index.describe_handed(i),
                })
            });
        }
        if h.raw_sha256.is_some() && attempts.iter().any(|a| a.raw_sha256.is_some()) {
            tally.count("raw_compared");
        }
    }
    tally.finish(&FAILING)
}

/// The fields where handed record `h` differs from every transmission of its request: (count
/// name, as sent, as handed).
fn differences(attempts: &[&SentRecord], h: &HandedRecord) -> Vec<(&'static str, String, String)> {
    let first = attempts[0];
    let mut found = Vec::new();
    let mut compare = |name, sent: &str, handed: Option<&str>, same: fn(&str, &str) -> bool| {
        if let Some(handed) = handed
            && !sent.is_empty()
            && !same(sent, handed)
        {
            found.push((name, sent.to_string(), handed.to_string()));
        }
    };
    compare("domain", &first.domain, h.domain.as_deref(), |a, b| {
        normal_domain(a) == normal_domain(b)
    });
    compare("sender", &first.sender, h.sender.as_deref(), |a, b| {
        a.trim().eq_ignore_ascii_case(b.trim())
    });
    compare(
        "message_id",
        &first.message_id,
        h.message_id.as_deref(),
        |a, b| bare_id(a) == bare_id(b),
    );
    if let Some(handed) = &h.raw_sha256 {
        let digests: Vec<&str> = attempts
            .iter()
            .filter_map(|a| a.raw_sha256.as_deref())
            .collect();
        if !digests.is_empty() && !digests.contains(&handed.as_str()) {
            found.push(("raw", digests[0].to_string(), handed.clone()));
        }
    }
    found
}

/// A domain as the buffer stores it (contract: Request format): trimmed, trailing dots removed,
/// lower-cased.
fn normal_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_lowercase()
}
