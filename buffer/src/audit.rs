//! `barrage audit`: checks a journal from the inside (contract: Provable order). It reads the
//! SQLite file of a data dir in one read transaction (barrage may be serving) and verifies, in
//! seq order: seqs gap-free from 1, accepted-at never decreasing, every row's `raw_sha256` and
//! chain link; then, when the ack outbox is in use, exactly one outbox row per request that has
//! an ack address; then the cursor at or below the last seq. It stops at the first bad seq.
//! [`postgres`] does the same on the PostgreSQL journal (`--journal URL`).

pub mod postgres;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use contract::chain::{Entry, canonical, genesis, hex, link, raw_sha256};
use rusqlite::{Connection, OptionalExtension};

use crate::journal::format_micros;

/// What is wrong with a journal, at the first seq where it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Seqs must run 1, 2, …: `expected` is missing, the next stored row is `found`.
    Gap { expected: u64, found: u64 },
    /// accepted-at went back from the previous row.
    TimeWentBack { previous: String, this: String },
    /// The stored `raw_sha256` is not the SHA-256 of the stored raw message.
    RawDigest { stored: String, computed: String },
    /// The stored chain is not `chain(n)` recomputed from the row and its predecessor.
    ChainBroken { stored: String, computed: String },
    /// A request with an ack address has no outbox row.
    NoOutboxRow,
    /// An outbox row belongs to no request with an ack address.
    StrayOutboxRow,
    /// The cursor is beyond the last stored seq.
    CursorBeyond { cursor: u64, last_seq: u64 },
    /// PostgreSQL: the counter row names another last seq than the last stored row's.
    CounterDisagrees { counter: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Gap { expected, found } => {
                write!(
                    f,
                    "seq {expected} is missing (the next stored row is seq {found})"
                )
            }
            Problem::TimeWentBack { previous, this } => write!(
                f,
                "accepted_at {this} is before the previous row's {previous}"
            ),
            Problem::RawDigest { stored, computed } => write!(
                f,
                "raw_sha256 is {stored} but the stored raw message hashes to {computed}"
            ),
            Problem::ChainBroken { stored, computed } => write!(
                f,
                "the chain link does not verify: stored {stored}, recomputed {computed} (the \
                 row or one before it was changed)"
            ),
            Problem::NoOutboxRow => write!(f, "the request has an ack address but no outbox row"),
            Problem::StrayOutboxRow => {
                write!(f, "an outbox row exists for no request with an ack address")
            }
            Problem::CursorBeyond { cursor, last_seq } => {
                write!(f, "the cursor {cursor} is beyond the last seq {last_seq}")
            }
            Problem::CounterDisagrees { counter } => write!(
                f,
                "the counter row says seq {counter} was the last given out, but this seq \
                 follows the last stored row (rows at the end deleted, or the counter edited)"
            ),
        }
    }
}

/// The first bad seq and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit failed at seq {seq}: {problem}")]
pub struct Finding {
    pub seq: u64,
    pub problem: Problem,
}

/// What a passing audit saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub journal_id: String,
    pub requests: u64,
    /// `chain(last seq)`, lowercase hex (`chain(0)` for an empty journal).
    pub last_chain: String,
    pub last_accepted_at: Option<String>,
    pub cursor: u64,
    /// Outbox rows checked, `None` when the outbox is not in use (no row in it).
    pub outbox_rows: Option<u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit passed: journal {}, {} requests gap-free from seq 1, accepted_at never \
             decreasing{}, every chain link verified (chain({}) = {}), cursor {}, ",
            self.journal_id,
            self.requests,
            self.last_accepted_at
                .as_deref()
                .map(|at| format!(" (last {at})"))
                .unwrap_or_default(),
            self.requests,
            self.last_chain,
            self.cursor,
        )?;
        match self.outbox_rows {
            Some(n) => write!(f, "{n} outbox rows, one per request with an ack address"),
            None => write!(f, "no ack outbox in use"),
        }
    }
}

/// Audits the journal of `data_dir`: `Ok(Ok(summary))` when it passes, `Ok(Err(finding))` when
/// it does not, `Err` when it cannot be read at all.
pub fn audit(data_dir: &Path) -> anyhow::Result<Result<Summary, Finding>> {
    let path = data_dir.join("barrage.db");
    anyhow::ensure!(
        path.exists(),
        "{} does not exist: give the data dir of a barrage journal",
        path.display()
    );
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // One read transaction: a consistent snapshot while barrage goes on writing.
    conn.execute_batch("BEGIN")?;
    let journal_id: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'instance_id'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .context("the journal has no id (meta instance_id): not a barrage journal")?;
    let has_chain: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('requests') WHERE name = 'chain'",
        [],
        |r| r.get(0),
    )?;
    anyhow::ensure!(
        has_chain,
        "the journal has no chain column: start this barrage version on it once (it chains \
         the existing rows at open), then audit"
    );
    let outbox_in_use: bool = conn.query_row("SELECT COUNT(*) > 0 FROM acks", [], |r| r.get(0))?;
    let scan = match scan_rows(&conn, &journal_id, outbox_in_use)? {
        Ok(scan) => scan,
        Err(finding) => return Ok(Err(finding)),
    };
    if outbox_in_use && let Some(seq) = stray_outbox_row(&conn)? {
        let problem = Problem::StrayOutboxRow;
        return Ok(Err(Finding { seq, problem }));
    }
    let cursor = read_cursor(&conn)?;
    Ok(conclude(journal_id, scan, cursor, outbox_in_use))
}

/// The last check of every journal's audit, once its rows passed: the registry's cursor is not
/// beyond the last seq. Then the summary.
fn conclude(
    journal_id: String,
    scan: Scan,
    cursor: u64,
    outbox_in_use: bool,
) -> Result<Summary, Finding> {
    if cursor > scan.last_seq {
        let problem = Problem::CursorBeyond {
            cursor,
            last_seq: scan.last_seq,
        };
        return Err(Finding {
            seq: cursor,
            problem,
        });
    }
    Ok(Summary {
        journal_id,
        requests: scan.last_seq,
        last_chain: hex(&scan.last_chain),
        last_accepted_at: scan.last_at.map(format_micros),
        cursor,
        outbox_rows: outbox_in_use.then_some(scan.outbox_rows),
    })
}

/// What the row scan ends with.
struct Scan {
    last_seq: u64,
    last_at: Option<i64>,
    last_chain: [u8; 32],
    outbox_rows: u64,
}

impl Scan {
    /// Before the first row: the chain starts at the journal's genesis.
    fn new(journal_id: &str) -> Scan {
        Scan {
            last_seq: 0,
            last_at: None,
            last_chain: genesis(journal_id),
            outbox_rows: 0,
        }
    }
}

/// One stored row, as read for the audit.
struct StoredRow {
    seq: u64,
    accepted_at: i64,
    intake: String,
    message_id: String,
    sender: String,
    domain: String,
    fields: String,
    raw: Vec<u8>,
    raw_sha256: Option<String>,
    chain: Option<Vec<u8>>,
    has_ack_to: bool,
    has_outbox_row: bool,
}

/// Walks every row in seq order, streaming (bounded memory whatever the journal's size).
fn scan_rows(
    conn: &Connection,
    journal_id: &str,
    outbox_in_use: bool,
) -> anyhow::Result<Result<Scan, Finding>> {
    let mut statement = conn.prepare(
        "SELECT r.seq, r.accepted_at, r.intake, r.message_id, r.sender, r.domain, r.fields,
                r.raw, r.raw_sha256, r.chain, r.ack_to IS NOT NULL, a.seq IS NOT NULL
         FROM requests r LEFT JOIN acks a ON a.seq = r.seq ORDER BY r.seq",
    )?;
    let rows = statement.query_map([], |r| {
        Ok(StoredRow {
            seq: r.get(0)?,
            accepted_at: r.get(1)?,
            intake: r.get(2)?,
            message_id: r.get(3)?,
            sender: r.get(4)?,
            domain: r.get(5)?,
            fields: r.get(6)?,
            raw: r.get(7)?,
            raw_sha256: r.get(8)?,
            chain: r.get(9)?,
            has_ack_to: r.get(10)?,
            has_outbox_row: r.get(11)?,
        })
    })?;
    let mut scan = Scan::new(journal_id);
    for row in rows {
        let row = row?;
        if let Err(problem) = check_row(&mut scan, &row, outbox_in_use) {
            return Ok(Err(Finding {
                seq: row.seq,
                problem,
            }));
        }
    }
    Ok(Ok(scan))
}

/// Checks one row against the scan so far and advances it.
fn check_row(scan: &mut Scan, row: &StoredRow, outbox_in_use: bool) -> Result<(), Problem> {
    if row.seq != scan.last_seq + 1 {
        return Err(Problem::Gap {
            expected: scan.last_seq + 1,
            found: row.seq,
        });
    }
    if let Some(previous) = scan.last_at
        && row.accepted_at < previous
    {
        return Err(Problem::TimeWentBack {
            previous: format_micros(previous),
            this: format_micros(row.accepted_at),
        });
    }
    let computed = raw_sha256(&row.raw);
    let stored = row.raw_sha256.clone().unwrap_or_default();
    if stored != computed {
        return Err(Problem::RawDigest { stored, computed });
    }
    let fields: BTreeMap<String, String> = serde_json::from_str(&row.fields).unwrap_or_default();
    let accepted_at = format_micros(row.accepted_at);
    let entry = Entry {
        seq: row.seq,
        accepted_at: &accepted_at,
        intake: &row.intake,
        message_id: &row.message_id,
        sender: &row.sender,
        domain: &row.domain,
        fields: &fields,
        raw_sha256: &computed,
    };
    let chain = link(&scan.last_chain, &canonical(&entry));
    if row.chain.as_deref() != Some(&chain[..]) {
        return Err(Problem::ChainBroken {
            stored: row
                .chain
                .as_deref()
                .map(hex)
                .unwrap_or_else(|| "none".into()),
            computed: hex(&chain),
        });
    }
    if outbox_in_use && row.has_ack_to && !row.has_outbox_row {
        return Err(Problem::NoOutboxRow);
    }
    scan.outbox_rows += u64::from(row.has_outbox_row);
    (scan.last_seq, scan.last_at, scan.last_chain) = (row.seq, Some(row.accepted_at), chain);
    Ok(())
}

/// The first outbox row without a request that has an ack address.
fn stray_outbox_row(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT a.seq FROM acks a LEFT JOIN requests r ON r.seq = a.seq
         WHERE r.seq IS NULL OR r.ack_to IS NULL ORDER BY a.seq LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

fn read_cursor(conn: &Connection) -> anyhow::Result<u64> {
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
            r.get(0)
        })
        .optional()?;
    value
        .map(|v| v.parse().context("the stored cursor is not a number"))
        .transpose()
        .map(|c| c.unwrap_or(0))
}
