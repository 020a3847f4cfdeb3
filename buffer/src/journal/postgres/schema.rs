//! The PostgreSQL journal's schema: created or migrated at every start, idempotently, under an
//! advisory lock (two nodes starting at once), with its version recorded in `barrage_meta`.
//!
//! The tables mirror the SQLite journal's (`requests`, `acks`), plus the two single-row tables
//! that order the nodes: `barrage_counter` (the last seq, accepted-at and chain: every batch
//! locks it, so batches from all nodes commit one after another, in seq order) and
//! `barrage_cursor` (the registration system's cursor, apart so a cursor commit never waits
//! for a batch).

use anyhow::{Context, bail};
use deadpool_postgres::Client;

/// The schema this build writes; a database with a newer one is refused.
pub const VERSION: i64 = 1;

/// Any fixed number: the advisory lock that serialises the migrations of starting nodes.
const MIGRATION_LOCK: i64 = 0x6261_7272_6167_6501;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS barrage_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    seq            bigint PRIMARY KEY,   -- gap-free from 1, in commit order across nodes
    accepted_at    bigint NOT NULL,      -- microseconds since the epoch, UTC; never decreases
    intake         text NOT NULL,        -- smtp | http
    message_id     text NOT NULL,
    dedup_key      text,                 -- retransmission key (RFC 1047); NULL: not deduplicable
    sender         text NOT NULL,
    ack_to         text,
    domain         text NOT NULL,
    fields         text NOT NULL,        -- JSON object of the request form
    position       bigint NOT NULL,      -- queue depth at acceptance, this request included
    raw            bytea NOT NULL,
    content_sha256 bytea NOT NULL,       -- dedup digest (journal::content_digest)
    raw_sha256     text NOT NULL,        -- lowercase hex (contract: Provable order)
    chain          bytea NOT NULL,       -- chain(seq), 32 bytes (contract: Provable order)
    node           text NOT NULL         -- the intake node that wrote it
);
CREATE INDEX IF NOT EXISTS requests_by_dedup_key ON requests (dedup_key, seq)
    WHERE dedup_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS acks (
    seq          bigint PRIMARY KEY,     -- the request's seq (inserted in the same transaction)
    state        text NOT NULL,          -- pending | sent | failed
    queued_at    bigint NOT NULL,        -- the request's accepted_at
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt bigint NOT NULL DEFAULT 0,  -- microseconds; not retried before
    done_at      bigint,
    last_error   text,
    lease_owner  text,                   -- the node sending it now
    lease_until  bigint                  -- microseconds; another node may take it after
);
CREATE INDEX IF NOT EXISTS acks_pending ON acks (seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS barrage_counter (
    id         integer PRIMARY KEY CHECK (id = 1),
    last_seq   bigint NOT NULL,
    last_at    bigint NOT NULL,
    last_chain bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS barrage_cursor (
    id      integer PRIMARY KEY CHECK (id = 1),
    through bigint NOT NULL
);
";

/// Creates or migrates the schema and returns the journal id (made by the first node ever).
pub async fn migrate(client: &mut Client) -> anyhow::Result<String> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(SCHEMA)
        .await
        .context("cannot create the journal's tables")?;
    let found: Option<String> = tx
        .query_opt(
            "SELECT value FROM barrage_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    if let Some(found) = found {
        let found: i64 = found
            .parse()
            .context("barrage_meta.schema_version is not a number")?;
        if found > VERSION {
            bail!(
                "the journal database has schema version {found}, newer than this barrage's \
                 ({VERSION}): run the barrage version that wrote it"
            );
        }
    }
    tx.execute(
        "INSERT INTO barrage_meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&VERSION.to_string()],
    )
    .await?;
    // 16 hex digits, as the SQLite journal makes them.
    tx.execute(
        "INSERT INTO barrage_meta (key, value)
         VALUES ('journal_id', substr(md5(random()::text || clock_timestamp()::text), 1, 16))
         ON CONFLICT (key) DO NOTHING",
        &[],
    )
    .await?;
    let journal_id: String = tx
        .query_one(
            "SELECT value FROM barrage_meta WHERE key = 'journal_id'",
            &[],
        )
        .await?
        .get(0);
    let genesis = contract::chain::genesis(&journal_id).to_vec();
    tx.execute(
        "INSERT INTO barrage_counter (id, last_seq, last_at, last_chain) VALUES (1, 0, 0, $1)
         ON CONFLICT (id) DO NOTHING",
        &[&genesis],
    )
    .await?;
    tx.execute(
        "INSERT INTO barrage_cursor (id, through) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        &[],
    )
    .await?;
    check_gap_free(&tx).await?;
    tx.commit().await?;
    Ok(journal_id)
}

/// Refuses a journal whose rows are not seqs 1..=last_seq, the counter's: barrage never writes
/// one, so the database was edited or damaged, and new tickets on top would break the order.
async fn check_gap_free(tx: &deadpool_postgres::Transaction<'_>) -> anyhow::Result<()> {
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM requests), (SELECT COALESCE(max(seq), 0) FROM requests),
                    last_seq FROM barrage_counter WHERE id = 1",
            &[],
        )
        .await?;
    let (count, max, last): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if count != max || max != last {
        bail!(
            "the journal database is not gap-free: {count} requests stored, the highest seq is \
             {max}, the counter says {last}. barrage never writes a gap, so the database was \
             edited or damaged; barrage refuses to add tickets to it. Keep a copy for the \
             audit (`barrage audit --journal URL` names the first bad seq), then restore it \
             from a backup or the standby before starting barrage again"
        );
    }
    Ok(())
}
