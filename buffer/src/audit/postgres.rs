//! `barrage audit --journal postgres://…`: the same checks on the PostgreSQL journal, in one
//! read-only repeatable-read transaction (a consistent snapshot while the nodes write), rows
//! streamed in seq order; plus the counter row, which must name the last stored seq (a tail
//! deleted after the fact leaves it ahead).

use anyhow::Context;
use futures_util::{StreamExt, pin_mut};
use tokio_postgres::NoTls;

use super::{Finding, Problem, Scan, StoredRow, Summary, check_row, conclude};
use crate::journal::postgres::describe;

/// Audits the journal in the database at `url` (see [`super::audit`] for the answer's shape).
pub async fn audit(url: &str) -> anyhow::Result<Result<Summary, Finding>> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to the journal database {}", describe(url)))?;
    tokio::spawn(connection);
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let journal_id: String = tx
        .query_opt(
            "SELECT value FROM barrage_meta WHERE key = 'journal_id'",
            &[],
        )
        .await
        .context("no barrage_meta table: not a barrage journal database")?
        .context("the journal has no id (barrage_meta journal_id): not a barrage journal")?
        .get(0);
    let outbox_in_use: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM acks)", &[])
        .await?
        .get(0);
    let scan = match scan_rows(&tx, &journal_id, outbox_in_use).await? {
        Ok(scan) => scan,
        Err(finding) => return Ok(Err(finding)),
    };
    let (counter, cursor) = counter_and_cursor(&tx).await?;
    if counter != scan.last_seq {
        let problem = Problem::CounterDisagrees { counter };
        return Ok(Err(Finding {
            seq: scan.last_seq + 1,
            problem,
        }));
    }
    if outbox_in_use && let Some(seq) = stray_outbox_row(&tx).await? {
        let problem = Problem::StrayOutboxRow;
        return Ok(Err(Finding { seq, problem }));
    }
    Ok(conclude(journal_id, scan, cursor, outbox_in_use))
}

/// The counter row's last seq and the cursor.
async fn counter_and_cursor(tx: &tokio_postgres::Transaction<'_>) -> anyhow::Result<(u64, u64)> {
    let row = tx
        .query_one(
            "SELECT c.last_seq, k.through FROM barrage_counter c CROSS JOIN barrage_cursor k",
            &[],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// The first outbox row without a request that asked for an ack.
async fn stray_outbox_row(tx: &tokio_postgres::Transaction<'_>) -> anyhow::Result<Option<u64>> {
    let stray = tx
        .query_opt(
            "SELECT a.seq FROM acks a LEFT JOIN requests r ON r.seq = a.seq
             WHERE r.seq IS NULL OR r.ack_to IS NULL ORDER BY a.seq LIMIT 1",
            &[],
        )
        .await?;
    Ok(stray.map(|row| row.get::<_, i64>(0) as u64))
}

/// Walks every row in seq order, streaming (bounded memory whatever the journal's size).
async fn scan_rows(
    tx: &tokio_postgres::Transaction<'_>,
    journal_id: &str,
    outbox_in_use: bool,
) -> anyhow::Result<Result<Scan, Finding>> {
    let rows = tx
        .query_raw(
            "SELECT r.seq, r.accepted_at, r.intake, r.message_id, r.sender, r.domain, r.fields,
                    r.raw, r.raw_sha256, r.chain, r.ack_to IS NOT NULL, a.seq IS NOT NULL
             FROM requests r LEFT JOIN acks a ON a.seq = r.seq ORDER BY r.seq",
            std::iter::empty::<i64>(),
        )
        .await?;
    pin_mut!(rows);
    let mut scan = Scan::new(journal_id);
    while let Some(r) = rows.next().await {
        let r = r?;
        let row = StoredRow {
            seq: r.get::<_, i64>(0) as u64,
            accepted_at: r.get(1),
            intake: r.get(2),
            message_id: r.get(3),
            sender: r.get(4),
            domain: r.get(5),
            fields: r.get(6),
            raw: r.get(7),
            raw_sha256: r.get(8),
            chain: r.get(9),
            has_ack_to: r.get(10),
            has_outbox_row: r.get(11),
        };
        if let Err(problem) = check_row(&mut scan, &row, outbox_in_use) {
            return Ok(Err(Finding {
                seq: row.seq,
                problem,
            }));
        }
    }
    Ok(Ok(scan))
}
