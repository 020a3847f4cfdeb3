//! The SQLite journal: one database file in the data dir (WAL, `synchronous=FULL`), one writer
//! thread doing group commit, one reader connection for the handover API.
//!
//! Group commit: the writer takes every command waiting in its bounded channel (up to
//! `max_batch`), applies them all in one transaction, commits — one fdatasync (see
//! `.cargo/config.toml`) — and only then answers each waiter. So the sync rate of the disk
//! bounds batches per second, not requests per second.
//! Seqs are assigned inside the transaction; a failed transaction is rolled back whole, nobody
//! gets a success, and the next batch reuses the same seqs, so seqs stay gap-free.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::journal::outbox::AckMark;
use acks::{AckCounters, AckDelta};

use identity::{HighWaterMark, MarkWriter};
use storage::{Admission, StorageOptions};

mod acks;
mod backup;
mod chain;
mod dedup;
mod identity;
pub mod storage;
mod wal;

pub use backup::backup;
pub use identity::FILE as HIGH_WATER_MARK_FILE;

use super::counters::WriterCounters;
use super::{
    Digests, Journal, JournalError, JournalStats, NewRequest, NotReady, Refusal, StoredRequest,
    Ticket, format_micros, now_micros, row_bytes,
};

/// The most rows one fetch returns, whatever the caller asks.
pub const MAX_FETCH: usize = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    seq          INTEGER PRIMARY KEY,   -- gap-free from 1, the FIFO order
    accepted_at  INTEGER NOT NULL,      -- microseconds since the epoch, UTC; never decreases
    intake       TEXT NOT NULL,         -- smtp | http
    message_id   TEXT NOT NULL,
    dedup_key    TEXT,                  -- retransmission key (RFC 1047); NULL: not deduplicable
    sender       TEXT NOT NULL,
    ack_to       TEXT,
    domain       TEXT NOT NULL,
    fields       TEXT NOT NULL,         -- JSON object of the request form
    position     INTEGER NOT NULL,      -- queue depth at acceptance, this request included
    raw          BLOB NOT NULL,
    content_sha256 BLOB,                -- dedup digest (see dedup.rs)
    raw_sha256   BLOB,                  -- lowercase hex SHA-256 of raw (contract: Provable order)
    chain        BLOB                   -- chain(seq), 32 bytes (contract: Provable order)
);
CREATE INDEX IF NOT EXISTS requests_by_dedup_key ON requests(dedup_key, seq)
    WHERE dedup_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS acks (      -- the ack outbox: one row per request to acknowledge
    seq          INTEGER PRIMARY KEY,   -- the request's seq (inserted in the same transaction)
    state        TEXT NOT NULL,         -- pending | sent | failed
    queued_at    INTEGER NOT NULL,      -- the request's accepted_at
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0, -- microseconds; not retried before
    done_at      INTEGER,               -- when it was sent or given up
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS acks_pending ON acks(seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// A batch this large is committed without waiting for more (see `commit_delay`).
const FULL_ENOUGH: usize = 16;

/// Whether the writer waits `commit_delay` for more before committing a batch of `len`
/// (PostgreSQL's commit_delay, for SQLite): only when the batch before held several commands, so
/// that requests are arriving together and a wait lets one fsync serve more of them (with 50
/// sessions, 300 µs took batches from 7–13 to 17–23 and throughput up 8–36%; 700 µs then took
/// 10–14% off the CPU per mail); a lone request on a quiet day is never held. A batch of
/// [`FULL_ENOUGH`] commits at once.
fn gather(commit_delay: Duration, last_batch: usize, len: usize) -> bool {
    !commit_delay.is_zero() && last_batch > 1 && len < FULL_ENOUGH
}

/// Tuning of the journal.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most commands in one transaction.
    pub max_batch: usize,
    /// How long the writer waits for more before committing a small batch, when the batch before
    /// held several requests (see [`gather`]); zero: never.
    pub commit_delay: Duration,
    /// Capacity of the writer's queue; intakes wait (backpressure) when it is full.
    pub queue_capacity: usize,
    /// How far back a retransmission finds its original, in microseconds.
    pub dedup_window_us: i64,
    /// Queue an ack in the outbox with every new request that has somewhere to send it.
    pub acks: bool,
    /// Disk reserve, queue bound, WAL size and page size.
    pub storage: StorageOptions,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_batch: 1024,
            commit_delay: Duration::from_micros(700),
            queue_capacity: 16 * 1024,
            dedup_window_us: 24 * 3600 * 1_000_000,
            acks: false,
            storage: StorageOptions::default(),
        }
    }
}

/// What the writer thread is asked to do.
enum Command {
    /// A request and its content digest (computed by the caller, off the writer thread).
    Append(
        NewRequest,
        Box<Digests>,
        oneshot::Sender<Result<Ticket, JournalError>>,
    ),
    Cursor(u64, oneshot::Sender<Result<u64, JournalError>>),
    /// Outcomes of ack deliveries (see [`acks`]).
    AckMarks(Vec<AckMark>, oneshot::Sender<Result<(), JournalError>>),
}

#[derive(Default)]
struct Counters {
    writer: WriterCounters,
    /// Only this journal refuses for the disk reserve: it owns the disk it writes.
    refused_disk_reserve: AtomicU64,
}

pub struct SqliteJournal {
    commands: mpsc::Sender<Command>,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    reader: Arc<Mutex<Connection>>,
    counters: Arc<Counters>,
    instance_id: String,
    ack_counters: Arc<AckCounters>,
    admission: Admission,
    path: std::path::PathBuf,
    /// The high-water mark's thread, shared with the writer (flushed at a clean stop).
    marks: Arc<MarkWriter>,
}

impl SqliteJournal {
    /// Opens (creating if needed) `barrage.db` in `dir` and starts the writer thread.
    pub fn open(dir: &Path, options: SqliteOptions) -> anyhow::Result<Self> {
        assert!(options.max_batch > 0 && options.queue_capacity >= options.max_batch);
        let path = dir.join("barrage.db");
        let mark = HighWaterMark::read(dir)?;
        // SQLite cannot read the file: with a mark, say what it held (a gap explains itself).
        let (writer, found, last_at, last_chain) =
            read_journal(&path).map_err(|e| match &mark {
                Some(mark) if e.downcast_ref::<rusqlite::Error>().is_some() => {
                    e.context(mark.unreadable(dir))
                }
                _ => e,
            })?;
        let (instance_id, last_seq, cursor) = (found.journal_id.clone(), found.seq, found.cursor);
        let counters = Arc::new(Counters::default());
        counters.writer.accepted.store(last_seq, Ordering::Relaxed);
        counters.writer.cursor.store(cursor, Ordering::Relaxed);
        if let Some(mark) = mark {
            mark.check(&found, dir)?;
        }
        found
            .write(dir)
            .with_context(|| format!("cannot write {}", identity::path(dir).display()))?;
        let admission = Admission::new(dir, options.storage.clone())?;

        let ack_counters = Arc::new(AckCounters::load(&writer, &path)?);
        let reader = open_connection(&path)?;
        let wal_size = options.storage.wal_size_limit;
        wal::fill_at_open(&writer, &path, wal_size, admission.spare());
        let checkpointer = wal::start_checkpointer(&path, wal_size, counters.clone())?;
        // Checkpoints copy the WAL into the database file and fsync it: a stall of milliseconds
        // that SQLite would otherwise run inside whichever commit crosses the threshold. The
        // checkpointer thread does it beside the writer instead (WAL lets both run at once).
        writer.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let marks = Arc::new(MarkWriter::start(dir.to_path_buf())?);
        let state = WriterState {
            conn: writer,
            last_seq,
            last_at,
            last_chain,
            cursor,
            options,
            counters: counters.clone(),
            ack_counters: ack_counters.clone(),
            ack_delta: AckDelta::default(),
            mark: found,
            marks: marks.clone(),
        };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                // Without its writer the buffer could only answer 451 forever. A crash instead
                // lets the supervisor restart it on the journal, which every commit left whole.
                let run = std::panic::AssertUnwindSafe(|| state.run(rx));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("the journal writer panicked: aborting so barrage restarts");
                    std::process::abort();
                }
            })?;
        Ok(SqliteJournal {
            commands: tx,
            _checkpointer: checkpointer,
            reader: Arc::new(Mutex::new(reader)),
            counters,
            instance_id,
            ack_counters,
            admission,
            path,
            marks,
        })
    }

    /// Why the journal cannot take requests now, if it cannot (see [`Journal::not_ready`]).
    fn why_not_ready(&self) -> Option<NotReady> {
        if let Some(why) = self.counters.writer.not_ready() {
            return Some(why);
        }
        let stats = self.stats();
        self.admission
            .check(stats.queue_depth)
            .err()
            .map(NotReady::Refusing)
    }

    /// Copies the whole WAL into `barrage.db` and empties it (a TRUNCATE checkpoint), so that
    /// `barrage.db` alone is the complete journal, and writes the high-water mark still pending;
    /// barrage does it at stop.
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        self.marks.flush();
        let conn = open_connection(&self.path)?;
        let (busy, _, _): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        anyhow::ensure!(
            busy == 0,
            "the WAL could not be checkpointed: a reader still holds it (barrage.db is complete \
             only together with barrage.db-wal)"
        );
        Ok(())
    }

    /// A random id made when the database was created: the ack Message-IDs derive from it.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Command,
    ) -> Result<T, JournalError> {
        let (tx, rx) = oneshot::channel();
        let gone = || JournalError::Unavailable("journal writer has stopped".into());
        self.commands.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Opens the journal's file and reads what it holds: its id, last seq and cursor (as a mark to
/// compare with the high-water mark), the last accepted-at and the last chain value.
fn read_journal(path: &Path) -> anyhow::Result<(Connection, HighWaterMark, i64, [u8; 32])> {
    let writer = open_connection(path)?;
    writer.execute_batch(SCHEMA)?;
    dedup::add_content_digests(&writer)?;
    let journal_id = load_instance_id(&writer)?;
    let seq = check_gap_free(&writer, path)?;
    let last_chain = chain::add_chains(&writer, &journal_id)?;
    let last_at: i64 = writer.query_row(
        "SELECT COALESCE(MAX(accepted_at), 0) FROM requests",
        [],
        |r| r.get(0),
    )?;
    let cursor: u64 = writer
        .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0);
    let found = HighWaterMark {
        journal_id,
        seq,
        cursor,
    };
    Ok((writer, found, last_at, last_chain))
}

fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers never block the writer. FULL: every commit fsyncs the WAL before it returns.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "SQLite refused WAL mode ({mode})"
    );
    conn.execute_batch("PRAGMA synchronous=FULL;")?;
    Ok(conn)
}

/// The highest stored seq, after checking that the stored seqs run 1, 2, … without a gap
/// (contract: FIFO). barrage never writes a gap, so one means the file was edited or damaged;
/// opening it anyway would hand out tickets on top of a broken sequence.
fn check_gap_free(conn: &Connection, path: &Path) -> anyhow::Result<u64> {
    let (count, first, last): (u64, u64, u64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(MIN(seq), 1), COALESCE(MAX(seq), 0) FROM requests",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if count == last {
        return Ok(last);
    }
    let missing: u64 = if first > 1 {
        1
    } else {
        conn.query_row(
            "SELECT r.seq + 1 FROM requests r
             WHERE NOT EXISTS (SELECT 1 FROM requests n WHERE n.seq = r.seq + 1)
             ORDER BY r.seq LIMIT 1",
            [],
            |r| r.get(0),
        )?
    };
    anyhow::bail!(
        "the journal {} is not gap-free: seq {missing} is missing ({count} requests stored, the \
         highest seq is {last}). barrage never writes a gap, so the file was edited or damaged; \
         barrage refuses to add tickets to it. Keep a copy of the data dir for the audit, then \
         restore the journal from a backup (or the standby) before starting barrage again",
        path.display()
    )
}

fn load_instance_id(conn: &Connection) -> anyhow::Result<String> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'instance_id'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = format!("{:016x}", rand_u64());
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('instance_id', ?1)",
        params![id],
    )?;
    Ok(id)
}

/// Enough randomness for an instance id without another dependency: the std hasher is seeded
/// randomly per process.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(now_micros())
}

/// The writer thread's state: it alone writes to the database.
struct WriterState {
    conn: Connection,
    last_seq: u64,
    last_at: i64,
    /// `chain(last_seq)` (contract: Provable order).
    last_chain: [u8; 32],
    cursor: u64,
    options: SqliteOptions,
    counters: Arc<Counters>,
    ack_counters: Arc<AckCounters>,
    /// Ack outbox changes of the batch being written, published after its commit.
    ack_delta: AckDelta,
    /// The high-water mark as last published, and the thread that writes it.
    mark: HighWaterMark,
    marks: Arc<MarkWriter>,
}

/// The answer owed to one command of a batch, sent only after the commit.
enum Answer {
    Ticket(oneshot::Sender<Result<Ticket, JournalError>>, Ticket),
    /// A request refused without storing anything (a conflicting dedup key).
    Refused(oneshot::Sender<Result<Ticket, JournalError>>, JournalError),
    Cursor(
        oneshot::Sender<Result<u64, JournalError>>,
        Result<u64, JournalError>,
    ),
    Done(oneshot::Sender<Result<(), JournalError>>),
}

/// The writer's invariants on a committed batch, checked before anyone is answered (contract:
/// FIFO): its new rows carry the seqs `seq_before + 1 ..= last_seq` in order, and accepted-at
/// never decreases along them. Checked before COMMIT: a violation aborts the process (see the
/// writer thread), so the batch is never committed and no ticket that breaks the order goes out.
fn check_batch(answers: &[Answer], seq_before: u64, at_before: i64, last_seq: u64) {
    let (mut next, mut at) = (seq_before + 1, at_before);
    for answer in answers {
        if let Answer::Ticket(_, ticket) = answer
            && !ticket.retransmission
        {
            assert_eq!(
                ticket.seq, next,
                "journal writer: seqs not contiguous in a batch"
            );
            assert!(
                ticket.accepted_at >= at,
                "journal writer: accepted_at decreased at seq {}",
                ticket.seq
            );
            (next, at) = (next + 1, ticket.accepted_at);
        }
    }
    assert_eq!(
        next - 1,
        last_seq,
        "journal writer: batch rows and last seq disagree"
    );
}

impl WriterState {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        let mut last_batch = 0;
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            self.take_waiting(&mut rx, &mut batch);
            if gather(self.options.commit_delay, last_batch, batch.len()) {
                std::thread::sleep(self.options.commit_delay);
                self.take_waiting(&mut rx, &mut batch);
            }
            last_batch = batch.len();
            self.counters.writer.batch_began();
            self.write_batch(&mut batch);
            self.counters.writer.batch_ended();
        }
        tracing::debug!("journal writer stopped: every intake has gone");
    }

    /// Adds the commands already waiting to `batch`, up to `max_batch`.
    fn take_waiting(&self, rx: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>) {
        while batch.len() < self.options.max_batch {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<Command>) {
        let (seq_before, at_before, cursor_before) = (self.last_seq, self.last_at, self.cursor);
        let chain_before = self.last_chain;
        self.ack_delta = AckDelta::default();
        let mut answers = Vec::with_capacity(batch.len());
        let result = self.apply(batch.drain(..), &mut answers);
        match result {
            Ok(new_rows) => {
                let c = &self.counters.writer;
                c.accepted.store(self.last_seq, Ordering::Relaxed);
                c.cursor.store(self.cursor, Ordering::Relaxed);
                c.committed(new_rows);
                self.ack_counters.publish(&self.ack_delta);
                // Before the answers, so that a client that saw its ticket finds a mark at least
                // that far along soon after; the mark thread writes it meanwhile.
                self.raise_mark();
                for answer in answers {
                    match answer {
                        Answer::Ticket(tx, ticket) => {
                            if ticket.retransmission {
                                self.counters
                                    .writer
                                    .retransmissions
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = tx.send(Ok(ticket));
                        }
                        Answer::Refused(tx, error) => {
                            let _ = tx.send(Err(error));
                        }
                        Answer::Cursor(tx, result) => {
                            let _ = tx.send(result);
                        }
                        Answer::Done(tx) => {
                            let _ = tx.send(Ok(()));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!("journal write failed, batch refused: {e}");
                let _ = self.conn.execute_batch("ROLLBACK");
                (self.last_seq, self.last_at, self.cursor) = (seq_before, at_before, cursor_before);
                self.last_chain = chain_before;
                self.counters.writer.failed();
                let message = e.to_string();
                for answer in answers {
                    let error = JournalError::Unavailable(message.clone());
                    match answer {
                        Answer::Ticket(tx, _) | Answer::Refused(tx, _) => drop(tx.send(Err(error))),
                        Answer::Cursor(tx, _) => drop(tx.send(Err(error))),
                        Answer::Done(tx) => drop(tx.send(Err(error))),
                    }
                }
            }
        }
    }

    /// Hands the mark thread a new high-water mark after a commit that moved the last seq or the
    /// cursor.
    fn raise_mark(&mut self) {
        if (self.mark.seq, self.mark.cursor) == (self.last_seq, self.cursor) {
            return;
        }
        self.mark = HighWaterMark {
            seq: self.last_seq,
            cursor: self.cursor,
            ..self.mark.clone()
        };
        self.marks.publish(self.mark.clone());
    }

    /// Applies the batch in one transaction and commits. On error the caller rolls back.
    /// Every command's answer is pushed to `answers`, even those after a failure.
    fn apply(
        &mut self,
        commands: impl Iterator<Item = Command>,
        answers: &mut Vec<Answer>,
    ) -> rusqlite::Result<u64> {
        let (seq_before, at_before) = (self.last_seq, self.last_at);
        let mut failure = None;
        let mut new_rows = 0;
        let mut begun = false;
        for command in commands {
            if failure.is_none() && !begun {
                match self.conn.execute_batch("BEGIN IMMEDIATE") {
                    Ok(()) => begun = true,
                    Err(e) => failure = Some(e),
                }
            }
            match command {
                Command::Append(request, digests, tx) => {
                    let mut answer = Ok(Ticket {
                        seq: 0,
                        accepted_at: 0,
                        position: 0,
                        retransmission: false,
                    });
                    if failure.is_none() {
                        match self.append(&request, &digests) {
                            Ok(result) => answer = result,
                            Err(e) => failure = Some(e),
                        }
                    }
                    answers.push(match answer {
                        Ok(ticket) => {
                            new_rows += u64::from(!ticket.retransmission);
                            Answer::Ticket(tx, ticket)
                        }
                        Err(error) => Answer::Refused(tx, error),
                    });
                }
                Command::Cursor(through, tx) => {
                    let mut result = Ok(self.cursor);
                    if failure.is_none() {
                        match self.move_cursor(through) {
                            Ok(r) => result = r,
                            Err(e) => failure = Some(e),
                        }
                    }
                    answers.push(Answer::Cursor(tx, result));
                }
                Command::AckMarks(marks, tx) => {
                    if failure.is_none()
                        && let Err(e) = self.mark_acks(&marks)
                    {
                        failure = Some(e);
                    }
                    answers.push(Answer::Done(tx));
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        check_batch(answers, seq_before, at_before, self.last_seq);
        self.conn.execute_batch("COMMIT")?;
        Ok(new_rows)
    }

    /// Stores a request, or finds the original it retransmits (same key and same content), or
    /// refuses a web request reusing its requester's key with other content.
    fn append(
        &mut self,
        request: &NewRequest,
        digests: &Digests,
    ) -> rusqlite::Result<Result<Ticket, JournalError>> {
        let digest = &digests.content;
        let now = now_micros();
        if let Some(key) = &request.dedup_key {
            let since = now - self.options.dedup_window_us;
            if let Some(ticket) = dedup::find_original(&self.conn, key, digest, since)? {
                return Ok(Ok(ticket));
            }
            // By mail, the key is spoofable (anyone can send a sender and a Message-ID): the
            // other content is a request of its own. On the web the key is the requester's own.
            if request.intake == "http" && dedup::key_in_use(&self.conn, key, since)? {
                return Ok(Err(JournalError::Conflict(
                    "request refused: this Idempotency-Key was already used by this requester \
                     for a request with other content; use a new key for a new request"
                        .into(),
                )));
            }
        }
        let seq = self.last_seq + 1;
        let accepted_at = now.max(self.last_at);
        let position = seq.saturating_sub(self.cursor);
        let fields = serde_json::to_string(&request.fields).expect("a string map serializes");
        let canonical = digests.middle.canonical(seq, &format_micros(accepted_at));
        let link = contract::chain::link(&self.last_chain, &canonical);
        self.conn
            .prepare_cached(
                "INSERT INTO requests (seq, accepted_at, intake, message_id, dedup_key, sender,
                                       ack_to, domain, fields, position, raw, content_sha256,
                                       raw_sha256, chain)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                seq,
                accepted_at,
                request.intake,
                request.message_id,
                request.dedup_key,
                request.sender,
                request.ack_to,
                request.domain,
                fields,
                position,
                request.raw,
                &digest[..],
                digests.raw,
                &link[..],
            ])?;
        if self.options.acks && request.ack_to.is_some() {
            self.queue_ack(seq, accepted_at)?;
        }
        self.last_seq = seq;
        self.last_at = accepted_at;
        self.last_chain = link;
        Ok(Ok(Ticket {
            seq,
            accepted_at,
            position,
            retransmission: false,
        }))
    }

    fn move_cursor(&mut self, through: u64) -> rusqlite::Result<Result<u64, JournalError>> {
        if through > self.last_seq {
            return Ok(Err(JournalError::Invalid(format!(
                "cursor {through} is beyond the last accepted seq {}",
                self.last_seq
            ))));
        }
        if through > self.cursor {
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', ?1)")?
                .execute(params![through.to_string()])?;
            self.cursor = through;
        }
        Ok(Ok(self.cursor))
    }
}

impl Journal for SqliteJournal {
    async fn append(&self, request: NewRequest) -> Result<Ticket, JournalError> {
        let digests = Box::new(Digests::of(&request));
        self.send(|tx| Command::Append(request, digests, tx)).await
    }

    async fn fetch(
        &self,
        after: u64,
        limit: usize,
        with_raw: bool,
    ) -> Result<Vec<StoredRequest>, JournalError> {
        let reader = self.reader.clone();
        let limit = limit.min(MAX_FETCH);
        let page_bytes = self.admission.page_bytes();
        // Seqs are at most i64::MAX in SQLite; nothing lies beyond.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let read = move || -> rusqlite::Result<Vec<StoredRequest>> {
            let conn = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut statement = conn.prepare_cached(
                "SELECT seq, accepted_at, intake, message_id, sender, ack_to, domain, fields,
                        CASE WHEN ?3 THEN raw END, raw_sha256, chain
                 FROM requests WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = statement.query_map(params![after, limit as i64, with_raw], |r| {
                let fields: String = r.get(7)?;
                let raw: Option<Vec<u8>> = r.get(8)?;
                let chain: Option<Vec<u8>> = r.get(10)?;
                Ok(StoredRequest {
                    seq: r.get(0)?,
                    accepted_at: format_micros(r.get(1)?),
                    intake: r.get(2)?,
                    message_id: r.get(3)?,
                    sender: r.get(4)?,
                    ack_to: r.get(5)?,
                    domain: r.get(6)?,
                    fields: serde_json::from_str(&fields).unwrap_or_else(|_| BTreeMap::new()),
                    raw: raw.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                    raw_sha256: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
                    chain: chain.map_or_else(String::new, |c| contract::chain::hex(&c)),
                })
            })?;
            // Bounded by bytes as well as rows, so a page of large raw messages stays small;
            // always at least one row, so the registration system can get past any request.
            let (mut page, mut bytes) = (Vec::new(), 0);
            for row in rows.by_ref() {
                let row = row?;
                bytes += row_bytes(&row);
                page.push(row);
                if bytes >= page_bytes {
                    break;
                }
            }
            Ok(page)
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| JournalError::Unavailable(e.to_string()))?
            .map_err(|e| JournalError::Unavailable(e.to_string()))
    }

    async fn commit_cursor(&self, through: u64) -> Result<u64, JournalError> {
        self.send(|tx| Command::Cursor(through, tx)).await
    }

    fn stats(&self) -> JournalStats {
        JournalStats {
            refused_disk_reserve: self.counters.refused_disk_reserve.load(Ordering::Relaxed),
            ..self.counters.writer.stats()
        }
    }

    fn admission(&self) -> Result<(), Refusal> {
        let c = &self.counters;
        let depth = c
            .writer
            .accepted
            .load(Ordering::Relaxed)
            .saturating_sub(c.writer.cursor.load(Ordering::Relaxed));
        let verdict = self.admission.check(depth);
        match &verdict {
            Err(Refusal::DiskReserve { .. }) => {
                c.refused_disk_reserve.fetch_add(1, Ordering::Relaxed)
            }
            Err(Refusal::QueueFull { .. }) => {
                c.writer.refused_queue_full.fetch_add(1, Ordering::Relaxed)
            }
            Ok(()) => 0,
        };
        verdict
    }

    fn journal_id(&self) -> &str {
        &self.instance_id
    }

    fn not_ready(&self) -> Option<NotReady> {
        self.why_not_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::counters::STUCK_AFTER_US;

    fn request(n: u32) -> NewRequest {
        NewRequest {
            intake: "smtp",
            message_id: format!("<{n}@gap.test>"),
            dedup_key: None,
            sender: "a@b.example".into(),
            ack_to: None,
            domain: "gap.fr".into(),
            fields: BTreeMap::new(),
            raw: Vec::new(),
        }
    }

    #[test]
    fn a_journal_with_a_gap_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let journal = SqliteJournal::open(dir.path(), SqliteOptions::default()).unwrap();
        for n in 0..3 {
            runtime.block_on(journal.append(request(n))).unwrap();
        }
        drop(journal);
        assert!(SqliteJournal::open(dir.path(), SqliteOptions::default()).is_ok());
        let conn = Connection::open(dir.path().join("barrage.db")).unwrap();
        conn.execute("DELETE FROM requests WHERE seq = 2", [])
            .unwrap();
        drop(conn);
        let error = SqliteJournal::open(dir.path(), SqliteOptions::default())
            .err()
            .expect("a journal with a gap is refused");
        let text = error.to_string();
        assert!(text.contains("seq 2 is missing"), "{text}");
        assert!(text.contains("restore the journal"), "{text}");
    }

    fn ticket(seq: u64, accepted_at: i64) -> Answer {
        let (tx, _rx) = oneshot::channel();
        let ticket = Ticket {
            seq,
            accepted_at,
            position: 1,
            retransmission: false,
        };
        Answer::Ticket(tx, ticket)
    }

    #[test]
    fn only_a_small_batch_after_a_busy_one_waits_for_more() {
        let delay = Duration::from_micros(300);
        assert!(!gather(delay, 0, 1), "the first request of a quiet day");
        assert!(!gather(delay, 1, 1), "a lone request after a lone request");
        assert!(gather(delay, 5, 3), "requests arriving together");
        assert!(!gather(delay, 5, FULL_ENOUGH), "a batch large enough");
        assert!(!gather(Duration::ZERO, 5, 3), "turned off");
    }

    #[test]
    fn a_writer_inside_one_batch_too_long_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            storage: StorageOptions {
                min_free_bytes: 0,
                ..StorageOptions::default()
            },
            ..SqliteOptions::default()
        };
        let journal = SqliteJournal::open(dir.path(), options).unwrap();
        assert_eq!(journal.not_ready(), None);
        let since = now_micros() - STUCK_AFTER_US - 1_000_000;
        journal
            .counters
            .writer
            .busy_since
            .store(since, Ordering::Relaxed);
        assert!(matches!(
            journal.not_ready(),
            Some(NotReady::WriterStuck { secs: 11.. })
        ));
        journal
            .counters
            .writer
            .busy_since
            .store(now_micros(), Ordering::Relaxed);
        assert_eq!(journal.not_ready(), None, "a batch just begun is not stuck");
    }

    #[test]
    fn batch_check_passes_a_contiguous_batch() {
        check_batch(&[ticket(5, 10), ticket(6, 10), ticket(7, 12)], 4, 9, 7);
    }

    #[test]
    #[should_panic(expected = "seqs not contiguous")]
    fn batch_check_catches_a_gap() {
        check_batch(&[ticket(5, 10), ticket(7, 11)], 4, 9, 7);
    }

    #[test]
    #[should_panic(expected = "accepted_at decreased")]
    fn batch_check_catches_time_going_back() {
        check_batch(&[ticket(5, 10), ticket(6, 9)], 4, 9, 6);
    }
}
