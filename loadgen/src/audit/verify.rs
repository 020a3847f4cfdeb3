//! The verifier of `landrush audit`, over rows as the Handover API serves them (contract:
//! Provable order): it recomputes the chain from the rows alone, in seq order, and checks signed
//! checkpoints against it. No I/O: [`super`] feeds it pages.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use contract::chain::{Checkpoint, Entry, canonical, genesis, hex, link, parse_hex, raw_sha256};
use serde::Deserialize;

/// One row of `GET /v1/requests?raw=true`, the keys the chain covers.
#[derive(Debug, Clone, Deserialize)]
pub struct ServedRow {
    pub seq: u64,
    pub accepted_at: String,
    pub intake: String,
    pub message_id: String,
    pub sender: String,
    pub domain: String,
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub raw_sha256: String,
    #[serde(default)]
    pub chain: String,
}

/// What is wrong, at the first seq where it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Gap {
        expected: u64,
    },
    TimeWentBack {
        previous: String,
    },
    RawDigest {
        computed: String,
    },
    ChainBroken {
        computed: String,
    },
    /// A checkpoint of another journal.
    OtherJournal {
        checkpoint: String,
    },
    /// A checkpoint whose signature does not verify with the public key.
    BadSignature,
    /// A checkpoint's chain is not the chain recomputed at its seq: the order it committed to
    /// was rewritten since.
    CheckpointMismatch {
        checkpoint: String,
        served: String,
    },
    /// A checkpoint beyond the rows served: rows it committed to are gone.
    CheckpointBeyond {
        last_seq: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Gap { expected } => {
                write!(f, "seq {expected} is missing from the served rows")
            }
            Problem::TimeWentBack { previous } => {
                write!(f, "accepted_at is before the previous row's {previous}")
            }
            Problem::RawDigest { computed } => {
                write!(
                    f,
                    "raw_sha256 does not match the served raw message ({computed})"
                )
            }
            Problem::ChainBroken { computed } => write!(
                f,
                "the served chain does not verify (recomputed {computed}): the row or one \
                 before it was changed"
            ),
            Problem::OtherJournal { checkpoint } => {
                write!(f, "a checkpoint is of another journal ({checkpoint})")
            }
            Problem::BadSignature => {
                write!(f, "a checkpoint's (or receipt's) signature does not verify")
            }
            Problem::CheckpointMismatch { checkpoint, served } => write!(
                f,
                "the signed checkpoint (or receipt) committed to chain {checkpoint}, the buffer \
                 now serves {served}: the order up to this seq was rewritten after it was signed"
            ),
            Problem::CheckpointBeyond { last_seq } => write!(
                f,
                "a signed checkpoint covers this seq but the buffer serves only up to {last_seq}"
            ),
        }
    }
}

/// The first bad seq and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub seq: u64,
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.problem)
    }
}

/// Recomputes the chain row by row and checks checkpoints at their seqs.
pub struct Verifier {
    journal_id: String,
    previous: [u8; 32],
    last_seq: u64,
    last_at: Option<String>,
    /// Checkpoints by seq, checked when the chain reaches them.
    checkpoints: HashMap<u64, Vec<Checkpoint>>,
    pub checkpoints_verified: u64,
    /// Rows whose raw message was served lossily (U+FFFD): their raw_sha256 cannot be recomputed.
    pub unverifiable_raw: u64,
}

impl Verifier {
    /// Checks every checkpoint's journal and signature now; their chains when rows reach them.
    pub fn new(
        journal_id: &str,
        public_key: &[u8; 32],
        checkpoints: Vec<Checkpoint>,
    ) -> Result<Verifier, Finding> {
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key);
        let mut by_seq: HashMap<u64, Vec<Checkpoint>> = HashMap::new();
        for checkpoint in checkpoints {
            let seq = checkpoint.seq;
            if checkpoint.journal_id != journal_id {
                let problem = Problem::OtherJournal {
                    checkpoint: checkpoint.journal_id,
                };
                return Err(Finding { seq, problem });
            }
            let signature = parse_hex::<64>(&checkpoint.signature);
            let text = checkpoint.signed_text();
            if signature.is_none_or(|s| key.verify(text.as_bytes(), &s).is_err()) {
                let problem = Problem::BadSignature;
                return Err(Finding { seq, problem });
            }
            by_seq.entry(seq).or_default().push(checkpoint);
        }
        let mut verifier = Verifier {
            journal_id: journal_id.to_string(),
            previous: genesis(journal_id),
            last_seq: 0,
            last_at: None,
            checkpoints: by_seq,
            checkpoints_verified: 0,
            unverifiable_raw: 0,
        };
        verifier.check_checkpoints(0)?;
        Ok(verifier)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn last_chain(&self) -> String {
        hex(&self.previous)
    }

    pub fn journal_id(&self) -> &str {
        &self.journal_id
    }

    /// The next served row, in seq order.
    pub fn push(&mut self, row: &ServedRow) -> Result<(), Finding> {
        let fail = |problem| Finding {
            seq: row.seq,
            problem,
        };
        if row.seq != self.last_seq + 1 {
            let expected = self.last_seq + 1;
            return Err(Finding {
                seq: expected,
                problem: Problem::Gap { expected },
            });
        }
        if let Some(previous) = &self.last_at
            && row.accepted_at < *previous
        {
            let previous = previous.clone();
            return Err(fail(Problem::TimeWentBack { previous }));
        }
        self.check_raw(row).map_err(fail)?;
        let entry = Entry {
            seq: row.seq,
            accepted_at: &row.accepted_at,
            intake: &row.intake,
            message_id: &row.message_id,
            sender: &row.sender,
            domain: &row.domain,
            fields: &row.fields,
            raw_sha256: &row.raw_sha256,
        };
        let chain = link(&self.previous, &canonical(&entry));
        if hex(&chain) != row.chain {
            let computed = hex(&chain);
            return Err(fail(Problem::ChainBroken { computed }));
        }
        (self.previous, self.last_seq) = (chain, row.seq);
        self.last_at = Some(row.accepted_at.clone());
        self.check_checkpoints(row.seq)
    }

    fn check_raw(&mut self, row: &ServedRow) -> Result<(), Problem> {
        let Some(raw) = &row.raw else {
            self.unverifiable_raw += 1;
            return Ok(());
        };
        let computed = raw_sha256(raw.as_bytes());
        if computed == row.raw_sha256 {
            return Ok(());
        }
        if raw.contains('\u{FFFD}') {
            // Served as lossy UTF-8: the stored bytes are not what was served.
            self.unverifiable_raw += 1;
            return Ok(());
        }
        Err(Problem::RawDigest { computed })
    }

    fn check_checkpoints(&mut self, seq: u64) -> Result<(), Finding> {
        let Some(checkpoints) = self.checkpoints.remove(&seq) else {
            return Ok(());
        };
        let served = hex(&self.previous);
        for checkpoint in checkpoints {
            if checkpoint.chain != served {
                let problem = Problem::CheckpointMismatch {
                    checkpoint: checkpoint.chain,
                    served,
                };
                return Err(Finding { seq, problem });
            }
            self.checkpoints_verified += 1;
        }
        Ok(())
    }

    /// After the last row: a checkpoint left unchecked covers rows that are no longer served.
    pub fn finish(&self) -> Result<(), Finding> {
        match self.checkpoints.keys().min() {
            Some(&seq) => Err(Finding {
                seq,
                problem: Problem::CheckpointBeyond {
                    last_seq: self.last_seq,
                },
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A served journal of `n` rows, chained correctly.
    fn journal(n: u64) -> Vec<ServedRow> {
        let mut previous = genesis("00000000000000aa");
        (1..=n)
            .map(|seq| {
                let raw = format!("domain: d{seq}.fr\r\n");
                let mut row = ServedRow {
                    seq,
                    accepted_at: format!("2026-12-01T10:00:0{seq}.000000Z"),
                    intake: "smtp".into(),
                    message_id: format!("<{seq}@t>"),
                    sender: "a@b.example".into(),
                    domain: format!("d{seq}.fr"),
                    fields: BTreeMap::from([("domain".into(), format!("d{seq}.fr"))]),
                    raw_sha256: raw_sha256(raw.as_bytes()),
                    raw: Some(raw),
                    chain: String::new(),
                };
                let entry = Entry {
                    seq,
                    accepted_at: &row.accepted_at,
                    intake: &row.intake,
                    message_id: &row.message_id,
                    sender: &row.sender,
                    domain: &row.domain,
                    fields: &row.fields,
                    raw_sha256: &row.raw_sha256,
                };
                previous = link(&previous, &canonical(&entry));
                row.chain = hex(&previous);
                row
            })
            .collect()
    }

    fn first_finding(rows: &[ServedRow]) -> Option<Finding> {
        let key = [7u8; 32];
        let mut verifier = Verifier::new("00000000000000aa", &key, Vec::new()).unwrap();
        rows.iter()
            .find_map(|row| verifier.push(row).err())
            .or_else(|| verifier.finish().err())
    }

    #[test]
    fn a_clean_journal_passes_and_each_edit_is_named() {
        assert_eq!(first_finding(&journal(5)), None);
        let mut deleted = journal(5);
        deleted.remove(2);
        let found = first_finding(&deleted).unwrap();
        assert_eq!(
            (found.seq, found.problem),
            (3, Problem::Gap { expected: 3 })
        );
        let mut swapped = journal(5);
        let (a, b) = (swapped[1].clone(), swapped[2].clone());
        swapped[1] = ServedRow { seq: 2, ..b };
        swapped[2] = ServedRow { seq: 3, ..a };
        let found = first_finding(&swapped).unwrap();
        assert_eq!(found.seq, 2);
        assert!(
            matches!(found.problem, Problem::ChainBroken { .. }),
            "{found}"
        );
        let mut updated = journal(5);
        updated[3].domain = "paris.fr".into();
        let found = first_finding(&updated).unwrap();
        assert_eq!(found.seq, 4);
        assert!(
            matches!(found.problem, Problem::ChainBroken { .. }),
            "{found}"
        );
        let mut raw = journal(5);
        raw[0].raw = Some("domain: other.fr\r\n".into());
        let found = first_finding(&raw).unwrap();
        assert!(
            matches!(found.problem, Problem::RawDigest { .. }),
            "{found}"
        );
    }
}
