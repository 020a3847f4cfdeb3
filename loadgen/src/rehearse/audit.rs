//! The rehearsal's `audit` check (contract: Provable order): before the buffer stops, the chain
//! it serves is recomputed from the handover API alone, as an auditor would on the day, and the
//! result is kept in the run folder ([`crate::check::audit`]) so `landrush check` gives the same
//! verdict.

use reports::checks::CheckResult;

use crate::audit::{AuditInput, audit};

/// Audits the buffer behind `handover`. A buffer that serves no chain (a foreign one, or an
/// older barrage) cannot be audited: the check is skipped and says why, never passed.
pub async fn audit_check(handover: &str, token: Option<&str>) -> CheckResult {
    let input = AuditInput {
        handover,
        token,
        public_key: None,
        checkpoints: Vec::new(),
    };
    match audit(input).await {
        Err(e) => CheckResult {
            note: Some(format!("not audited: {e:#}")),
            ..CheckResult::default()
        },
        Ok(report) => {
            let mut check = CheckResult {
                ok: Some(report.passed()),
                note: Some(report.render().trim_end().to_string()),
                ..CheckResult::default()
            };
            check.counts.insert("rows".into(), report.rows);
            check
                .counts
                .insert("unverifiable_raw".into(), report.unverifiable_raw);
            if let Some(finding) = &report.finding {
                check
                    .examples
                    .push(serde_json::json!({ "finding": finding.to_string() }));
            }
            check
        }
    }
}
