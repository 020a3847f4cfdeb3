//! The PostgreSQL journal: one database shared by several intake nodes (`--journal
//! postgres://…`), for a journal on two machines (a synchronous standby) and an intake that
//! survives losing a node.
//!
//! Each node runs one writer task doing group commit ([`writer`]); the batches of all nodes
//! serialise on one counter row, so seqs are gap-free and in commit order across nodes, and a
//! success goes out only after COMMIT (contract: Durability, FIFO). The handover API reads from
//! any node (`target_session_attrs=read-write` keeps every connection on the primary); the
//! cursor row never moves backwards. The ack outbox is leased ([`acks`]) so one node sends each
//! ack. A lost database connection answers temporary errors (451) and the pool reconnects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::counters::WriterCounters;
use super::{
    Digests, Journal, JournalError, JournalStats, NewRequest, NotReady, Refusal, StoredRequest,
    Ticket, format_micros, now_micros, row_bytes,
};
use writer::{Append, Writer};

mod acks;
mod plan;
pub mod schema;
mod writer;

/// The most rows one fetch returns, whatever the caller asks.
pub const MAX_FETCH: usize = 1000;

/// How often the counters other nodes move (last seq, cursor, outbox) are read again.
const REFRESH: Duration = Duration::from_millis(250);

/// Every how many refreshes the outbox's sent and failed totals are counted again (5 s):
/// counting them reads every ack row of the day.
const RECOUNT_EVERY: u32 = 20;

/// Tuning of the PostgreSQL journal.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://USER@HOST:PORT[,HOST:PORT…]/DB[?target_session_attrs=read-write]`.
    pub url: String,
    pub max_batch: usize,
    pub queue_capacity: usize,
    pub dedup_window_us: i64,
    /// Queue an ack in the outbox with every new request that has somewhere to send it.
    pub acks: bool,
    /// Connections this node keeps to the database (the writer takes one per batch).
    pub pool_size: usize,
    /// How long a node owns the acks it claimed; another node sends them after.
    pub ack_lease_us: i64,
    /// Most requests accepted and not handed over; 0: no bound.
    pub max_queue_depth: u64,
    /// A handover page stops after about this many bytes.
    pub page_bytes: usize,
}

/// What the writer and the outbox need to know of this node.
pub(crate) struct Settings {
    max_batch: usize,
    dedup_window_us: i64,
    acks: bool,
    /// This node's name in `requests.node` and `acks.lease_owner`: host, pid and a random part.
    node: String,
    ack_lease_us: i64,
}

#[derive(Default)]
pub(crate) struct Counters {
    writer: WriterCounters,
    acks_queued: Notify,
    acks_pending: AtomicU64,
    acks_sent: AtomicU64,
    acks_failed: AtomicU64,
    /// Accepted-at of the oldest pending ack, 0 when none.
    acks_oldest: AtomicI64,
}

pub struct PostgresJournal {
    appends: mpsc::Sender<Append>,
    pool: Pool,
    counters: Arc<Counters>,
    settings: Arc<Settings>,
    journal_id: String,
    max_queue_depth: u64,
    page_bytes: usize,
    /// Stops the refresher when the journal goes.
    _refresher: DropGuard,
}

/// The temporary error of anything the database did not do (contract: Refusals).
pub(crate) fn unavailable(error: impl std::fmt::Display) -> JournalError {
    JournalError::Unavailable(format!(
        "the journal database is unavailable ({error}); nothing was stored, try again later"
    ))
}

impl PostgresJournal {
    /// Connects, creates or migrates the schema, and starts this node's writer (inside a Tokio
    /// runtime).
    pub async fn open(options: PostgresOptions) -> anyhow::Result<Self> {
        assert!(options.max_batch > 0 && options.queue_capacity >= options.max_batch);
        let pool = connect(&options.url, options.pool_size)?;
        let where_ = describe(&options.url);
        let mut client = pool
            .get()
            .await
            .with_context(|| format!("cannot connect to the journal database {where_}"))?;
        let journal_id = schema::migrate(&mut client)
            .await
            .with_context(|| format!("cannot prepare the journal database {where_}"))?;
        drop(client);
        let settings = Arc::new(Settings {
            max_batch: options.max_batch,
            dedup_window_us: options.dedup_window_us,
            acks: options.acks,
            node: node_name(),
            ack_lease_us: options.ack_lease_us,
        });
        let counters = Arc::new(Counters::default());
        refresh(&pool, &counters, true).await?;
        let (appends, queue) = mpsc::channel(options.queue_capacity);
        let writer = Writer {
            pool: pool.clone(),
            settings: settings.clone(),
            counters: counters.clone(),
        };
        tokio::spawn(async move {
            // Without its writer the node could only answer 451 forever: a crash instead lets
            // the supervisor restart it; no batch was committed half.
            let run = std::panic::AssertUnwindSafe(writer.run(queue));
            if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                tracing::error!("the journal writer panicked: aborting so barrage restarts");
                std::process::abort();
            }
        });
        let stop = CancellationToken::new();
        tokio::spawn(keep_refreshing(
            pool.clone(),
            counters.clone(),
            stop.clone(),
        ));
        tracing::info!(
            "journal {journal_id} on PostgreSQL {where_}, node {}",
            settings.node
        );
        Ok(PostgresJournal {
            appends,
            pool,
            counters,
            settings,
            journal_id,
            max_queue_depth: options.max_queue_depth,
            page_bytes: options.page_bytes,
            _refresher: stop.drop_guard(),
        })
    }

    /// This node's name in the database (`requests.node`, `acks.lease_owner`).
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, JournalError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Runs `sql` on a pooled connection, prepared once per connection (parsed and planned once,
    /// one round trip per call after).
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, JournalError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client.query(&statement, params).await.map_err(unavailable)
    }

    /// [`Self::query`] for a statement that returns exactly one row.
    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, JournalError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client
            .query_one(&statement, params)
            .await
            .map_err(unavailable)
    }
}

/// A pool to the database at `url`, tried host by host as the URL lists them.
fn connect(url: &str, size: usize) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = url.parse().with_context(|| {
        format!(
            "--journal {}: not a PostgreSQL URL (postgres://USER@HOST:PORT/DB)",
            describe(url)
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config
        .application_name("barrage")
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10));
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("cannot make the journal's connection pool")
}

/// The URL without its password, for messages and logs.
pub fn describe(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => "(unparsable URL)".into(),
    }
}

fn node_name() -> String {
    use std::hash::{BuildHasher, RandomState};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random = RandomState::new().hash_one(now_micros()) & 0xffff_ffff;
    format!("{}-{}-{random:08x}", host.trim(), std::process::id())
}

/// Reads what other nodes move: the last seq, the cursor and the pending acks; with `recount`,
/// also the sent and failed totals.
async fn refresh(pool: &Pool, counters: &Counters, recount: bool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    // Pending acks through their partial index: as costly as the backlog, not as the journal.
    // accepted_at never decreases along seq, so the lowest pending seq is the oldest.
    let head = client
        .prepare_cached(
            "SELECT c.last_seq, k.through,
                    (SELECT count(*) FROM acks WHERE state = 'pending'),
                    COALESCE((SELECT queued_at FROM acks WHERE state = 'pending'
                              ORDER BY seq LIMIT 1), 0)
             FROM barrage_counter c CROSS JOIN barrage_cursor k WHERE c.id = 1 AND k.id = 1",
        )
        .await?;
    let row = client.query_one(&head, &[]).await?;
    let get = |i| row.get::<_, i64>(i) as u64;
    counters
        .writer
        .accepted
        .fetch_max(get(0), Ordering::Relaxed);
    counters.writer.cursor.fetch_max(get(1), Ordering::Relaxed);
    counters.acks_pending.store(get(2), Ordering::Relaxed);
    counters.acks_oldest.store(row.get(3), Ordering::Relaxed);
    if recount {
        let totals = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE state = 'sent'),
                        count(*) FILTER (WHERE state = 'failed') FROM acks",
            )
            .await?;
        let row = client.query_one(&totals, &[]).await?;
        counters
            .acks_sent
            .store(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
        counters
            .acks_failed
            .store(row.get::<_, i64>(1) as u64, Ordering::Relaxed);
    }
    Ok(())
}

async fn keep_refreshing(pool: Pool, counters: Arc<Counters>, stop: CancellationToken) {
    let mut refreshes = 0u32;
    while stop
        .run_until_cancelled(tokio::time::sleep(REFRESH))
        .await
        .is_some()
    {
        refreshes = refreshes.wrapping_add(1);
        let recount = refreshes.is_multiple_of(RECOUNT_EVERY);
        if let Err(e) = refresh(&pool, &counters, recount).await {
            tracing::debug!("journal counters not refreshed: {e}");
        }
    }
}

impl Journal for PostgresJournal {
    async fn append(&self, request: NewRequest) -> Result<Ticket, JournalError> {
        let digests = Box::new(Digests::of(&request));
        let (reply, answer) = oneshot::channel();
        let gone = || JournalError::Unavailable("journal writer has stopped".into());
        let append = Append {
            request,
            digests,
            reply,
        };
        self.appends.send(append).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn fetch(
        &self,
        after: u64,
        limit: usize,
        with_raw: bool,
    ) -> Result<Vec<StoredRequest>, JournalError> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(MAX_FETCH) as i64;
        let sql = "SELECT seq, accepted_at, intake, message_id, sender, ack_to, domain, fields,
                          CASE WHEN $3 THEN raw END, raw_sha256, chain
                   FROM requests WHERE seq > $1 ORDER BY seq LIMIT $2";
        let rows = self.query(sql, &[&after, &limit, &with_raw]).await?;
        // Bounded by bytes as well as rows; always at least one row.
        let (mut page, mut bytes) = (Vec::new(), 0);
        for r in rows {
            let fields: &str = r.get(7);
            let raw: Option<&[u8]> = r.get(8);
            let row = StoredRequest {
                seq: r.get::<_, i64>(0) as u64,
                accepted_at: format_micros(r.get(1)),
                intake: r.get(2),
                message_id: r.get(3),
                sender: r.get(4),
                ack_to: r.get(5),
                domain: r.get(6),
                fields: serde_json::from_str(fields).unwrap_or_else(|_| BTreeMap::new()),
                raw: raw.map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
                raw_sha256: r.get(9),
                chain: contract::chain::hex(r.get::<_, &[u8]>(10)),
            };
            bytes += row_bytes(&row);
            page.push(row);
            if bytes >= self.page_bytes {
                break;
            }
        }
        Ok(page)
    }

    async fn last_seq(&self) -> Result<u64, JournalError> {
        let sql = "SELECT last_seq FROM barrage_counter WHERE id = 1";
        let last: i64 = self.query_one(sql, &[]).await?.get(0);
        self.counters
            .writer
            .accepted
            .fetch_max(last as u64, Ordering::Relaxed);
        Ok(last as u64)
    }

    async fn commit_cursor(&self, through: u64) -> Result<u64, JournalError> {
        let last = self.last_seq().await?;
        if through > last {
            return Err(JournalError::Invalid(format!(
                "cursor {through} is beyond the last accepted seq {last}"
            )));
        }
        // GREATEST under the row's lock: two nodes committing cursors never move it back.
        let sql = "UPDATE barrage_cursor SET through = GREATEST(through, $1) WHERE id = 1
                   RETURNING through";
        let cursor: i64 = self.query_one(sql, &[&(through as i64)]).await?.get(0);
        self.counters
            .writer
            .cursor
            .fetch_max(cursor as u64, Ordering::Relaxed);
        Ok(cursor as u64)
    }

    fn stats(&self) -> JournalStats {
        let stats = self.counters.writer.stats();
        // Never a cursor beyond what this node knows is accepted: another node's cursor commit
        // can reach these counters before the seqs it took do.
        JournalStats {
            cursor: stats.cursor.min(stats.accepted),
            ..stats
        }
    }

    fn admission(&self) -> Result<(), Refusal> {
        let depth = self.stats().queue_depth;
        if self.max_queue_depth > 0 && depth >= self.max_queue_depth {
            let c = &self.counters.writer;
            c.refused_queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::QueueFull { depth });
        }
        Ok(())
    }

    fn not_ready(&self) -> Option<NotReady> {
        let refusing = || self.admission().err().map(NotReady::Refusing);
        self.counters.writer.not_ready().or_else(refusing)
    }

    fn journal_id(&self) -> &str {
        &self.journal_id
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_described_url_keeps_no_password() {
        let url =
            "postgres://barrage:s3cret@db1:5432,db2:5432/barrage?target_session_attrs=read-write";
        let described = super::describe(url);
        assert!(!described.contains("s3cret"), "{described}");
        assert!(described.starts_with("postgres://barrage@db1:5432,db2:5432/barrage"));
        assert_eq!(super::describe("postgres://u@h/db"), "postgres://u@h/db");
    }
}
