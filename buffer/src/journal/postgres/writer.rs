//! The node's journal writer: one task that takes every waiting request and writes them in one
//! transaction (group commit), answering each only after COMMIT returned (contract: Durability).
//!
//! Each batch first locks the one counter row (`SELECT … FOR UPDATE`): batches from all nodes
//! therefore run one after another, each continuing the seqs, accepted-at and chain where the
//! previous one left them, so seq order is commit order (contract: FIFO). A batch that fails
//! before COMMIT is rolled back whole and everyone in it gets a temporary error; a COMMIT whose
//! answer was lost (the connection died in it) is looked up again before anyone is answered, so
//! a committed batch is not refused and an uncommitted one never gets a success.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_postgres::{Client, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::plan::{Head, NewRow, Originals, Plan, check, plan};
use super::{Counters, Settings, unavailable};
use crate::journal::{Digests, JournalError, NewRequest, Ticket, now_micros};

/// How long a lost COMMIT answer is looked for before the batch is refused anyway.
const RESOLVE_FOR: Duration = Duration::from_secs(30);
const RESOLVE_RETRY: Duration = Duration::from_millis(100);

/// One request waiting for the writer.
pub(super) struct Append {
    pub request: NewRequest,
    pub digests: Box<Digests>,
    pub reply: oneshot::Sender<Result<Ticket, JournalError>>,
}

#[derive(Clone)]
pub(super) struct Writer {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub counters: Arc<Counters>,
}

/// A batch written and about to be (or just) committed.
#[derive(Clone)]
struct Written {
    plans: Vec<Plan>,
    head: Head,
    new_rows: u64,
    /// The first new row's seq and Message-ID: how a lost COMMIT is looked up.
    first: Option<(u64, String)>,
    acks: u64,
}

enum Failure {
    /// Nothing was committed.
    Before(String),
    /// The COMMIT was sent and its answer lost: committed or not, to be found out.
    AtCommit(String, Box<Written>),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Before(e.to_string())
    }
}

const LOCK_HEAD: &str = "SELECT c.last_seq, c.last_at, c.last_chain, k.through
    FROM barrage_counter c CROSS JOIN barrage_cursor k
    WHERE c.id = 1 AND k.id = 1 FOR UPDATE OF c";

// Both lookups are LATERAL … LIMIT 1 so that each is an index probe per key: written as EXISTS,
// the second became a hashed subplan scanning every row of the window, once per batch.
const ORIGINALS: &str = "SELECT k.key, k.digest, o.seq, o.accepted_at, o.position,
           u.used IS NOT NULL
    FROM UNNEST($1::text[], $2::bytea[]) AS k(key, digest)
    LEFT JOIN LATERAL (
        SELECT seq, accepted_at, position FROM requests r
        WHERE r.dedup_key = k.key AND r.content_sha256 = k.digest AND r.accepted_at >= $3
        ORDER BY seq LIMIT 1) o ON true
    LEFT JOIN LATERAL (
        SELECT true AS used FROM requests r
        WHERE r.dedup_key = k.key AND r.accepted_at >= $3 LIMIT 1) u ON true";

const INSERT_REQUESTS: &str = "INSERT INTO requests (seq, accepted_at, intake, message_id,
        dedup_key, sender, ack_to, domain, fields, position, raw, content_sha256, raw_sha256,
        chain, node)
    SELECT u.*, $15::text FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
        $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bytea[],
        $12::bytea[], $13::text[], $14::bytea[]) AS u";

const INSERT_ACKS: &str = "INSERT INTO acks (seq, state, queued_at)
    SELECT s, 'pending', a FROM UNNEST($1::bigint[], $2::bigint[]) AS u(s, a)";

const MOVE_HEAD: &str =
    "UPDATE barrage_counter SET last_seq = $1, last_at = $2, last_chain = $3 WHERE id = 1";

impl Writer {
    pub async fn run(self, mut appends: mpsc::Receiver<Append>) {
        let mut batch = Vec::with_capacity(self.settings.max_batch);
        while let Some(first) = appends.recv().await {
            batch.push(first);
            while batch.len() < self.settings.max_batch {
                match appends.try_recv() {
                    Ok(append) => batch.push(append),
                    Err(_) => break,
                }
            }
            self.counters.writer.batch_began();
            self.write_batch(&mut batch).await;
            self.counters.writer.batch_ended();
        }
        tracing::debug!("journal writer stopped: every intake has gone");
    }

    async fn write_batch(&self, batch: &mut Vec<Append>) {
        let answers = match self.transact(batch).await {
            Ok(written) => self.committed(written),
            Err(Failure::Before(e)) => self.refused(batch.len(), &e),
            Err(Failure::AtCommit(e, written)) => {
                // Found out beside the writer, so the batches after it are not held up (they
                // get their 451s at once while the database is down).
                let (writer, batch) = (self.clone(), std::mem::take(batch));
                tokio::spawn(async move {
                    let answers = writer.after_lost_commit(&e, *written).await;
                    answer(batch, answers);
                });
                return;
            }
        };
        answer(std::mem::take(batch), answers);
    }

    /// The answers of a batch whose COMMIT answer was lost, once it is known whether it is
    /// stored.
    async fn after_lost_commit(
        &self,
        error: &str,
        written: Written,
    ) -> Vec<Result<Ticket, JournalError>> {
        let n = written.plans.len();
        match self.find_out(&written).await {
            Some(true) => {
                tracing::warn!("COMMIT answer lost ({error}), the batch is stored: answered");
                self.committed(written)
            }
            Some(false) => self.refused(n, error),
            None => {
                tracing::error!(
                    "COMMIT answer lost ({error}) and the database unreachable for \
                     {RESOLVE_FOR:?}: the batch's requests (from seq {:?}) may be stored but \
                     are refused",
                    written.first
                );
                self.refused(n, error)
            }
        }
    }

    fn committed(&self, written: Written) -> Vec<Result<Ticket, JournalError>> {
        let c = &self.counters.writer;
        c.accepted
            .fetch_max(written.head.last_seq, Ordering::Relaxed);
        c.cursor.fetch_max(written.head.cursor, Ordering::Relaxed);
        c.committed(written.new_rows);
        if written.acks > 0 {
            self.counters.acks_queued.notify_one();
        }
        let conflict = || {
            JournalError::Conflict(
                "request refused: this Idempotency-Key was already used by this requester for a \
                 request with other content; use a new key for a new request"
                    .into(),
            )
        };
        written
            .plans
            .into_iter()
            .map(|plan| match plan {
                Plan::Ticket(ticket) => {
                    if ticket.retransmission {
                        c.retransmissions.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(ticket)
                }
                Plan::Conflict => Err(conflict()),
            })
            .collect()
    }

    fn refused(&self, n: usize, error: &str) -> Vec<Result<Ticket, JournalError>> {
        tracing::error!("journal write failed, batch of {n} refused: {error}");
        self.counters.writer.failed();
        (0..n).map(|_| Err(unavailable(error))).collect()
    }

    async fn transact(&self, batch: &mut [Append]) -> Result<Written, Failure> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| Failure::Before(e.to_string()))?;
        let result = self.transact_on(&client, batch).await;
        if result.is_err() {
            // It may still be inside the transaction: never back into the pool.
            drop(Client::take(client));
        }
        result
    }

    /// The batch in two round trips, so that the counter row is held briefly: BEGIN, the lock
    /// and the dedup lookup pipelined; then the inserts, the counter's move and COMMIT
    /// pipelined.
    async fn transact_on(&self, client: &Client, batch: &mut [Append]) -> Result<Written, Failure> {
        // The mutant build (below) answers early, through the replies taken here.
        #[cfg(feature = "mutant-reply-before-commit")]
        let early: Vec<_> = batch
            .iter_mut()
            .map(|a| std::mem::replace(&mut a.reply, oneshot::channel().0))
            .collect();
        let keys = Keys::of(batch);
        // Taken before the lock, so the window reaches a little further back: never shorter.
        let since = now_micros() - self.settings.dedup_window_us;
        let (lock, lookup) = tokio::try_join!(
            client.prepare_cached(LOCK_HEAD),
            client.prepare_cached(ORIGINALS)
        )?;
        // READ COMMITTED: the lookup's snapshot is taken after the lock was granted, so it sees
        // every batch committed before ours.
        let (_, head, found) = tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.query_one(&lock, &[]),
            async {
                if keys.key.is_empty() {
                    return Ok(Vec::new());
                }
                client
                    .query(&lookup, &[&keys.key, &keys.digest, &since])
                    .await
            }
        )?;
        let head = Head {
            last_seq: head.get::<_, i64>(0) as u64,
            last_at: head.get(1),
            last_chain: chain_bytes(head.get(2))?,
            cursor: head.get::<_, i64>(3) as u64,
        };
        // Taken under the lock: every batch after this one reads a later clock or our time.
        let now = now_micros();
        let requests = batch.iter().map(|a| (&a.request, &*a.digests));
        let (plans, rows, after) = plan(requests, head, now, originals(&found)?);
        check(&rows, &head, &after);
        let written = Written {
            plans,
            head: after,
            new_rows: rows.len() as u64,
            first: rows
                .first()
                .map(|r| (r.ticket.seq, r.request.message_id.clone())),
            acks: self.acked(&rows).count() as u64,
        };
        #[cfg(feature = "mutant-reply-before-commit")]
        {
            // A deliberately broken build, for the crash test to prove it catches one: every
            // request is answered before COMMIT, which then takes as long as a commit to a
            // distant synchronous standby would.
            for (reply, answer) in early.into_iter().zip(self.committed(written.clone())) {
                let _ = reply.send(answer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.commit(client, &rows, written).await
    }

    /// The rows that queue an ack.
    fn acked<'r>(&self, rows: &'r [NewRow<'r>]) -> impl Iterator<Item = &'r NewRow<'r>> {
        let acks = self.settings.acks;
        rows.iter()
            .filter(move |r| acks && r.request.ack_to.is_some())
    }

    /// Inserts the rows and their acks, moves the counter and commits, all pipelined.
    async fn commit(
        &self,
        client: &Client,
        rows: &[NewRow<'_>],
        written: Written,
    ) -> Result<Written, Failure> {
        let (requests, acks, head) = tokio::try_join!(
            client.prepare_cached(INSERT_REQUESTS),
            client.prepare_cached(INSERT_ACKS),
            client.prepare_cached(MOVE_HEAD)
        )?;
        let c = Columns::of(rows);
        let node = self.settings.node.as_str();
        let (ack_seqs, ack_times): (Vec<i64>, Vec<i64>) = self
            .acked(rows)
            .map(|r| (r.ticket.seq as i64, r.ticket.accepted_at))
            .unzip();
        let after = &written.head;
        let (last_seq, last_chain) = (after.last_seq as i64, &after.last_chain[..]);
        let head_params: [&(dyn ToSql + Sync); 3] = [&last_seq, &after.last_at, &last_chain];
        let ack_params: [&(dyn ToSql + Sync); 2] = [&ack_seqs, &ack_times];
        let params: [&(dyn ToSql + Sync); 15] = [
            &c.seq,
            &c.at,
            &c.intake,
            &c.message_id,
            &c.dedup_key,
            &c.sender,
            &c.ack_to,
            &c.domain,
            &c.fields,
            &c.position,
            &c.raw,
            &c.content,
            &c.raw_sha256,
            &c.chain,
            &node,
        ];
        let unless = |skip: bool, statement, params| async move {
            match skip {
                true => Ok(0),
                false => client.execute(statement, params).await,
            }
        };
        let (inserted, acked, moved, committed) = tokio::join!(
            unless(rows.is_empty(), &requests, &params[..]),
            unless(ack_seqs.is_empty(), &acks, &ack_params[..]),
            unless(rows.is_empty(), &head, &head_params[..]),
            client.batch_execute("COMMIT")
        );
        match (inserted.and(acked).and(moved), committed) {
            (Ok(_), Ok(())) => Ok(written),
            // The server refused a statement, so the COMMIT after it rolled back.
            (Err(e), _) if e.as_db_error().is_some() => Err(Failure::Before(e.to_string())),
            (Err(e), _) | (Ok(_), Err(e)) => {
                Err(Failure::AtCommit(e.to_string(), Box::new(written)))
            }
        }
    }

    /// Whether the batch whose COMMIT answer was lost is stored: its first row is there, written
    /// by this node for the same Message-ID. `None` when the database stays unreachable.
    async fn find_out(&self, written: &Written) -> Option<bool> {
        let Some((seq, message_id)) = &written.first else {
            return Some(false);
        };
        let deadline = tokio::time::Instant::now() + RESOLVE_FOR;
        while tokio::time::Instant::now() < deadline {
            if let Ok(client) = self.pool.get().await {
                let sql = "SELECT node, message_id FROM requests WHERE seq = $1";
                match client.query_opt(sql, &[&(*seq as i64)]).await {
                    Ok(Some(row)) => {
                        let (node, id): (&str, &str) = (row.get(0), row.get(1));
                        return Some(node == self.settings.node && id == message_id);
                    }
                    Ok(None) => return Some(false),
                    Err(e) => tracing::debug!("looking up a lost COMMIT: {e}"),
                }
            }
            tokio::time::sleep(RESOLVE_RETRY).await;
        }
        None
    }
}

/// Sends each request of the batch its answer.
fn answer(batch: Vec<Append>, answers: Vec<Result<Ticket, JournalError>>) {
    assert_eq!(answers.len(), batch.len(), "one answer per request");
    for (append, answer) in batch.into_iter().zip(answers) {
        let _ = append.reply.send(answer);
    }
}

/// The batch's dedup keys with their content digests, for the lookup of their originals.
struct Keys<'a> {
    key: Vec<&'a str>,
    digest: Vec<&'a [u8]>,
}

impl<'a> Keys<'a> {
    fn of(batch: &'a [Append]) -> Self {
        let (key, digest) = batch
            .iter()
            .filter_map(|a| Some((a.request.dedup_key.as_deref()?, &a.digests.content[..])))
            .unzip();
        Keys { key, digest }
    }
}

/// The stored originals the batch's dedup keys may repeat, from the lookup's rows.
fn originals(found: &[Row]) -> Result<Originals, Failure> {
    let mut originals = Originals::default();
    for row in found {
        let key: &str = row.get(0);
        match row.get::<_, Option<i64>>(2) {
            Some(seq) => originals.found(
                key,
                chain_bytes(row.get(1))?,
                Ticket {
                    seq: seq as u64,
                    accepted_at: row.get(3),
                    position: row.get::<_, i64>(4) as u64,
                    retransmission: false,
                },
            ),
            None if row.get::<_, bool>(5) => originals.in_use(key),
            None => {}
        }
    }
    Ok(originals)
}

/// The batch's rows as column arrays, for one `INSERT … SELECT FROM UNNEST`.
struct Columns<'a> {
    seq: Vec<i64>,
    at: Vec<i64>,
    intake: Vec<&'a str>,
    message_id: Vec<&'a str>,
    dedup_key: Vec<Option<&'a str>>,
    sender: Vec<&'a str>,
    ack_to: Vec<Option<&'a str>>,
    domain: Vec<&'a str>,
    fields: Vec<String>,
    position: Vec<i64>,
    raw: Vec<&'a [u8]>,
    content: Vec<&'a [u8]>,
    raw_sha256: Vec<&'a str>,
    chain: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [NewRow<'a>]) -> Self {
        let column = |f: &dyn Fn(&'a NewRow<'a>) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        Columns {
            seq: column(&|r| r.ticket.seq as i64),
            at: column(&|r| r.ticket.accepted_at),
            position: column(&|r| r.ticket.position as i64),
            intake: rows.iter().map(|r| r.request.intake).collect(),
            message_id: rows.iter().map(|r| r.request.message_id.as_str()).collect(),
            dedup_key: rows
                .iter()
                .map(|r| r.request.dedup_key.as_deref())
                .collect(),
            sender: rows.iter().map(|r| r.request.sender.as_str()).collect(),
            ack_to: rows.iter().map(|r| r.request.ack_to.as_deref()).collect(),
            domain: rows.iter().map(|r| r.request.domain.as_str()).collect(),
            fields: rows
                .iter()
                .map(|r| serde_json::to_string(&r.request.fields).expect("a string map serializes"))
                .collect(),
            raw: rows.iter().map(|r| r.request.raw.as_slice()).collect(),
            content: rows.iter().map(|r| &r.digests.content[..]).collect(),
            raw_sha256: rows.iter().map(|r| r.digests.raw.as_str()).collect(),
            chain: rows.iter().map(|r| &r.chain[..]).collect(),
        }
    }
}

/// A stored 32-byte digest; anything else means the database was edited.
fn chain_bytes(bytes: &[u8]) -> Result<[u8; 32], Failure> {
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        Failure::Before(format!(
            "a stored digest has {} bytes, not 32: the journal database was edited; run \
             `barrage audit --journal URL`",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan PostgreSQL keeps for a prepared statement once the table has grown: a generic
    /// plan made when it was still empty, as it is at the start of the day.
    async fn generic_plan(client: &Client, sql: &str, args: &str) -> String {
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = force_generic_plan; PREPARE probe AS {sql}"
            ))
            .await
            .unwrap();
        let args = if args.is_empty() {
            args.to_string()
        } else {
            format!("({args})")
        };
        let explained = client
            .simple_query(&format!("EXPLAIN EXECUTE probe{args}"))
            .await
            .unwrap();
        client.batch_execute("DEALLOCATE probe").await.unwrap();
        explained
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every statement under the counter-row lock must cost the same on the day's last batch
    /// as on its first: index probes, never a scan of the journal.
    #[tokio::test]
    async fn the_batch_never_scans_the_journal_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = pgcluster::Cluster::start(&dir.path().join("pg")).unwrap();
        cluster.create_database("barrage").unwrap();
        let pool = super::super::connect(&cluster.url("barrage"), 2).unwrap();
        let mut client = pool.get().await.unwrap();
        super::super::schema::migrate(&mut client).await.unwrap();
        let plan = generic_plan(&client, ORIGINALS, "'{<k@t>}', '{\"\\\\x00\"}', 0").await;
        assert!(plan.contains("requests_by_dedup_key"), "{plan}");
        for scan in ["Seq Scan on requests", "SubPlan"] {
            assert!(
                !plan.contains(scan),
                "the dedup lookup has a {scan}:\n{plan}"
            );
        }
        let plan = generic_plan(&client, LOCK_HEAD, "").await;
        assert!(!plan.contains("Seq Scan on requests"), "{plan}");
    }
}
