//! The journal's hash chain in SQLite (contract: Provable order): the `raw_sha256` and `chain`
//! columns, the link the writer computes for each new row, and [`add_chains`], which adds both
//! columns to a journal made before them and chains its rows in seq order, idempotently at open.

use std::collections::BTreeMap;

use contract::chain::{Entry, canonical, genesis, link, raw_sha256};
use rusqlite::{Connection, OptionalExtension, params};

use crate::journal::format_micros;

/// How many rows the migration reads at a time (bounded memory on a large journal).
const MIGRATION_PAGE: i64 = 1000;

/// What the chain covers of one row, in the journal's own types.
pub(super) struct Row<'a> {
    pub seq: u64,
    pub accepted_at: i64,
    pub intake: &'a str,
    pub message_id: &'a str,
    pub sender: &'a str,
    pub domain: &'a str,
    pub fields: &'a BTreeMap<String, String>,
    pub raw_sha256: &'a str,
}

/// `chain(n)` of this row after `previous`.
pub(super) fn next(previous: &[u8; 32], row: &Row) -> [u8; 32] {
    let accepted_at = format_micros(row.accepted_at);
    let entry = Entry {
        seq: row.seq,
        accepted_at: &accepted_at,
        intake: row.intake,
        message_id: row.message_id,
        sender: row.sender,
        domain: row.domain,
        fields: row.fields,
        raw_sha256: row.raw_sha256,
    };
    link(previous, &canonical(&entry))
}

/// Adds `raw_sha256` and `chain` when missing, chains every row that has none yet (from the
/// first such row to the end, in seq order), and returns the last row's chain (`chain(0)` when
/// the journal is empty). Run after the gap check: the chain assumes seqs 1, 2, ….
pub(super) fn add_chains(conn: &Connection, journal_id: &str) -> rusqlite::Result<[u8; 32]> {
    for column in ["raw_sha256", "chain"] {
        let has: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('requests') WHERE name = ?1",
            params![column],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE requests ADD COLUMN {column} BLOB"))?;
        }
    }
    let first: Option<u64> = conn.query_row(
        "SELECT MIN(seq) FROM requests WHERE chain IS NULL OR raw_sha256 IS NULL",
        [],
        |r| r.get(0),
    )?;
    if let Some(first) = first {
        let mut previous = stored_chain(conn, first - 1)?.unwrap_or_else(|| genesis(journal_id));
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut after = first - 1;
        while let Some((last, chain)) = chain_page(conn, after, &previous)? {
            (after, previous) = (last, chain);
        }
        conn.execute_batch("COMMIT")?;
        tracing::info!("journal: hash chain added to the requests from seq {first} on");
    }
    let last: Option<Vec<u8>> = conn
        .query_row(
            "SELECT chain FROM requests ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(last
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .unwrap_or_else(|| genesis(journal_id)))
}

/// The stored chain of `seq`, if that row exists and has one.
fn stored_chain(conn: &Connection, seq: u64) -> rusqlite::Result<Option<[u8; 32]>> {
    let bytes: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT chain FROM requests WHERE seq = ?1",
            params![seq],
            |r| r.get(0),
        )
        .optional()?;
    Ok(bytes
        .flatten()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
}

type Stored = (u64, i64, String, String, String, String, String, Vec<u8>);

/// Chains one page of rows after `after`; returns the page's last seq and chain, `None` at the end.
fn chain_page(
    conn: &Connection,
    after: u64,
    previous: &[u8; 32],
) -> rusqlite::Result<Option<(u64, [u8; 32])>> {
    let rows: Vec<Stored> = conn
        .prepare(
            "SELECT seq, accepted_at, intake, message_id, sender, domain, fields, raw
             FROM requests WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after, MIGRATION_PAGE], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut last = None;
    let mut previous = *previous;
    for (seq, accepted_at, intake, message_id, sender, domain, fields, raw) in &rows {
        let fields: BTreeMap<String, String> = serde_json::from_str(fields).unwrap_or_default();
        let digest = raw_sha256(raw);
        let row = Row {
            seq: *seq,
            accepted_at: *accepted_at,
            intake,
            message_id,
            sender,
            domain,
            fields: &fields,
            raw_sha256: &digest,
        };
        previous = next(&previous, &row);
        conn.execute(
            "UPDATE requests SET raw_sha256 = ?1, chain = ?2 WHERE seq = ?3",
            params![digest, &previous[..], seq],
        )?;
        last = Some((*seq, previous));
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::super::{SCHEMA, SqliteJournal, SqliteOptions};
    use crate::journal::{Journal, NewRequest};
    use rusqlite::{Connection, params};
    use std::collections::BTreeMap;

    /// The `requests` table as journals made before the chain have it.
    const OLD_REQUESTS: &str = "CREATE TABLE requests (
        seq INTEGER PRIMARY KEY, accepted_at INTEGER NOT NULL, intake TEXT NOT NULL,
        message_id TEXT NOT NULL, dedup_key TEXT, sender TEXT NOT NULL, ack_to TEXT,
        domain TEXT NOT NULL, fields TEXT NOT NULL, position INTEGER NOT NULL, raw BLOB NOT NULL)";

    #[test]
    fn a_journal_made_before_the_chain_is_chained_at_open_and_audits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("barrage.db")).unwrap();
        conn.execute_batch(OLD_REQUESTS).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        for seq in 1..=3 {
            conn.execute(
                "INSERT INTO requests (seq, accepted_at, intake, message_id, sender, domain,
                                       fields, position, raw)
                 VALUES (?1, ?2, 'smtp', ?3, 'a@old.example', 'old.fr', '{\"domain\":\"old.fr\"}',
                         ?1, CAST('old' AS BLOB))",
                params![seq, 1_000_000 * seq, format!("<{seq}@old>")],
            )
            .unwrap();
        }
        drop(conn);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let journal = SqliteJournal::open(dir.path(), SqliteOptions::default()).unwrap();
        let new = NewRequest {
            intake: "smtp",
            message_id: "<4@new>".into(),
            dedup_key: None,
            sender: "b@new.example".into(),
            ack_to: None,
            domain: "new.fr".into(),
            fields: BTreeMap::new(),
            raw: b"new".to_vec(),
        };
        assert_eq!(runtime.block_on(journal.append(new)).unwrap().seq, 4);
        let rows = runtime.block_on(journal.fetch(0, 10, false)).unwrap();
        assert!(
            rows.iter()
                .all(|r| r.chain.len() == 64 && r.raw_sha256.len() == 64)
        );
        drop(journal);
        let summary = crate::audit::audit(dir.path())
            .unwrap()
            .expect("the audit passes");
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.last_chain, rows[3].chain);
        // Opened again: nothing is left to chain, the chain goes on from the last row.
        let journal = SqliteJournal::open(dir.path(), SqliteOptions::default()).unwrap();
        drop(journal);
        assert!(crate::audit::audit(dir.path()).unwrap().is_ok());
    }
}
