//! Finding the original of a retransmission (contract: Retransmission): a stored request with
//! the same dedup key inside the window AND the same content digest. A key match with other
//! content is not a retransmission: by mail it is a new request, on the web a conflict.
//!
//! The digest lives in the `content_sha256` column, which [`add_content_digests`] adds to a
//! journal made before it existed (and fills for its deduplicable rows), idempotently at open.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::journal::{NewRequest, Ticket, content_digest};

/// Adds `content_sha256` to `requests` when it is missing, and fills it for every row that has a
/// dedup key and no digest yet. Safe to run at every open.
pub(super) fn add_content_digests(conn: &Connection) -> rusqlite::Result<()> {
    let has_column: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('requests') WHERE name = 'content_sha256'",
        [],
        |r| r.get(0),
    )?;
    if !has_column {
        conn.execute_batch("ALTER TABLE requests ADD COLUMN content_sha256 BLOB")?;
    }
    let missing: Vec<(u64, NewRequest)> = {
        let mut statement = conn.prepare(
            "SELECT seq, intake, domain, fields, raw FROM requests
             WHERE dedup_key IS NOT NULL AND content_sha256 IS NULL",
        )?;
        let rows = statement.query_map([], |r| {
            let intake: String = r.get(1)?;
            let fields: String = r.get(3)?;
            let request = NewRequest {
                intake: if intake == "http" { "http" } else { "smtp" },
                message_id: String::new(),
                dedup_key: None,
                sender: String::new(),
                ack_to: None,
                domain: r.get(2)?,
                fields: serde_json::from_str(&fields).unwrap_or_else(|_| BTreeMap::new()),
                raw: r.get(4)?,
            };
            Ok((r.get(0)?, request))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if missing.is_empty() {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for (seq, request) in &missing {
        let digest = content_digest(request);
        conn.execute(
            "UPDATE requests SET content_sha256 = ?1 WHERE seq = ?2",
            params![&digest[..], seq],
        )?;
    }
    conn.execute_batch("COMMIT")?;
    tracing::info!(
        "journal: content digests added to {} stored requests",
        missing.len()
    );
    Ok(())
}

/// The first stored request with this key and this content accepted at or after `since`.
pub(super) fn find_original(
    conn: &Connection,
    key: &str,
    digest: &[u8; 32],
    since: i64,
) -> rusqlite::Result<Option<Ticket>> {
    conn.prepare_cached(
        "SELECT seq, accepted_at, position FROM requests
         WHERE dedup_key = ?1 AND accepted_at >= ?2 AND content_sha256 = ?3
         ORDER BY seq LIMIT 1",
    )?
    .query_row(params![key, since, &digest[..]], |r| {
        Ok(Ticket {
            seq: r.get(0)?,
            accepted_at: r.get(1)?,
            position: r.get(2)?,
            retransmission: true,
        })
    })
    .optional()
}

/// Whether some request with this key was accepted at or after `since` (whatever its content).
pub(super) fn key_in_use(conn: &Connection, key: &str, since: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM requests WHERE dedup_key = ?1 AND accepted_at >= ?2 LIMIT 1",
    )?
    .query_row(params![key, since], |_| Ok(()))
    .optional()
    .map(|found| found.is_some())
}

#[cfg(test)]
mod tests {
    use super::super::{SCHEMA, SqliteJournal, SqliteOptions};
    use crate::journal::{Journal, NewRequest};
    use rusqlite::{Connection, params};
    use std::collections::BTreeMap;

    fn request(raw: &[u8]) -> NewRequest {
        NewRequest {
            intake: "smtp",
            message_id: "<m1@old.example>".into(),
            dedup_key: Some("smtp\na@old.example\n<m1@old.example>".into()),
            sender: "a@old.example".into(),
            ack_to: None,
            domain: "old.fr".into(),
            fields: BTreeMap::new(),
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn a_journal_made_before_digests_is_migrated_and_still_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("barrage.db")).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let old = request(b"the old bytes\r\n");
        conn.execute(
            "INSERT INTO requests (seq, accepted_at, intake, message_id, dedup_key, sender,
                                   ack_to, domain, fields, position, raw)
             VALUES (1, ?1, 'smtp', ?2, ?3, ?4, NULL, 'old.fr', '{}', 1, ?5)",
            params![
                crate::journal::now_micros(),
                old.message_id,
                old.dedup_key,
                old.sender,
                old.raw
            ],
        )
        .unwrap();
        drop(conn);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for _ in 0..2 {
            // Opened twice: the migration runs once and is a no-op the second time.
            let journal = SqliteJournal::open(dir.path(), SqliteOptions::default()).unwrap();
            let again = runtime.block_on(journal.append(old.clone())).unwrap();
            assert!(again.retransmission && again.seq == 1, "{again:?}");
        }
        let journal = SqliteJournal::open(dir.path(), SqliteOptions::default()).unwrap();
        let other = runtime
            .block_on(journal.append(request(b"other bytes\r\n")))
            .unwrap();
        assert!(!other.retransmission && other.seq == 2, "{other:?}");
    }
}
