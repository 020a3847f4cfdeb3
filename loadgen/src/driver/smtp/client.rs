//! One sending client's loop, and the idle connections.
//!
//! A client walks its own requests in order (request `i` belongs to client `i % clients`), waits
//! for each one's due time, and sends it on its one connection, opening a new connection when it
//! has none. It carries out the scenario's misbehaviour itself: RFC 1047 retransmissions (drop
//! after the final `.`, reconnect, send the identical message again), slow sending, staged
//! pre-connection. Every transmission becomes one `sent.jsonl` record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reports::records::{Outcome, SentRecord, sha256_hex};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::firing::{FireOutcome, Firing};
use super::wire::{
    Connection, Dial, Opened, Reply, SmtpError, parse_ticket, reply_text, unstuffed,
};
use crate::driver::recorder::{Event, Live, Sink};
use crate::driver::{Clock, LAG_WARN_MAX};
use crate::scenario::seeded::unit;
use crate::scenario::{Behaviour, ClientGroup, PreConnectStage};
use crate::schedule::request::{Kind, Request, RequestMaker};

/// The last bytes of every framed message: the line `.` that ends DATA.
const END_MARK: &[u8] = b".\r\n";

/// What every client of a run shares.
pub struct Ctx {
    /// The intake nodes, tried in each client's seeded order (see [`super::targets`]).
    pub targets: super::targets::Targets,
    /// Connections that went to another node because a client's first one was down.
    pub next_node: std::sync::atomic::AtomicU64,
    /// The web intake (for a web key-collider), if the run plays one.
    pub web_target: Option<SocketAddr>,
    pub requests: RequestMaker,
    pub clock: Clock,
    /// The scenario's time zero.
    pub start: Instant,
    /// Nothing new is started after this; replies are not awaited past it.
    pub deadline: Instant,
    pub live: std::sync::Arc<Live>,
    pub connect_gate: Semaphore,
    /// Summed from every client as it finishes.
    pub stats: Mutex<Stats>,
    pub progress: crate::driver::progress::Handle,
    /// Whether the "behind schedule" warning was already shown.
    pub lag_warned: AtomicBool,
    /// The scenario's client groups, with their source addresses resolved (file order).
    pub groups: Vec<GroupRun>,
    /// What each adversary group achieved (file order; honest groups' stay empty).
    pub adversaries: Vec<Mutex<super::adversary::Achieved>>,
    /// STARTTLS for the groups that ask for it (`starttls = true`).
    pub tls: Option<std::sync::Arc<super::tls::ClientTls>>,
    /// Where pre-connected clients leave their first write for the instant.
    pub firing: Firing,
    /// The pre-connected clients, who QUIT together once the last has its answers.
    pub crowd: super::crowd::Crowd,
}

/// A client group as the driver plays it.
pub struct GroupRun {
    pub spec: ClientGroup,
    /// Addresses its clients bind to (empty: the system's choice).
    pub sources: Vec<std::net::IpAddr>,
}

impl GroupRun {
    /// The source address of the group's client `local` (a requester always uses one address).
    pub fn source_of(&self, local: u32, requesters: u32) -> Option<std::net::IpAddr> {
        if self.sources.is_empty() {
            return None;
        }
        let registrar = (local % requesters.max(1)) as usize;
        Some(self.sources[registrar % self.sources.len()])
    }
}

/// Counts a client keeps to itself and adds to [`Ctx::stats`] at the end.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_started: u64,
    pub transmissions: u64,
    pub kinds: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub idle_opened: u64,
    /// Pre-connections that failed, or were not ready by the start instant.
    pub pre_connect_failed: u64,
    pub pre_connect_late: u64,
}

impl Stats {
    pub(super) fn add(&mut self, other: Stats) {
        self.requests_started += other.requests_started;
        self.transmissions += other.transmissions;
        self.idle_opened += other.idle_opened;
        self.pre_connect_failed += other.pre_connect_failed;
        self.pre_connect_late += other.pre_connect_late;
        for (k, v) in other.kinds {
            *self.kinds.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// How far the next message's transaction already went on the open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Staged {
    #[default]
    Nothing,
    /// MAIL and RCPT accepted; DATA not sent.
    Rcpt,
    /// 354 received: the message itself goes next.
    Data,
}

/// One client's connection state.
#[derive(Default)]
pub(super) struct Session {
    conn: Option<Connection>,
    staged: Staged,
    /// Transmissions on the current connection.
    on_conn: u32,
    /// When the firing threads wrote the staged transaction's next bytes (DATA, or the whole
    /// message when DATA was staged too), if they did.
    fired: Option<Instant>,
    /// The STARTTLS handshake of the connection just opened, until a transmission records it.
    tls_handshake: Option<Duration>,
    /// The node the last connection was open to.
    node: Option<SocketAddr>,
}

impl Session {
    /// Takes `conn` as the session's connection.
    fn connected(&mut self, conn: Connection) {
        self.tls_handshake = conn.tls_handshake();
        self.node = conn.peer();
        self.conn = Some(conn);
    }
}

/// What became of one transmission.
struct Transmission {
    sent_at: Option<Instant>,
    replied_at: Option<Instant>,
    reply: Option<Reply>,
    /// Why there is no reply, if there is none.
    error: Option<String>,
    /// Whether the reply is the one to the message (after end of data), not to the envelope.
    after_data: bool,
    /// The STARTTLS handshake of the connection this transmission opened.
    tls_handshake: Option<Duration>,
    /// The node the message was sent to (none when it was not sent).
    node: Option<SocketAddr>,
}

impl Transmission {
    fn failed(error: &SmtpError) -> Transmission {
        Transmission {
            sent_at: None,
            replied_at: None,
            reply: None,
            error: Some(error_class(error)),
            after_data: false,
            tls_handshake: None,
            node: None,
        }
    }

    /// No reply at all, or a temporary refusal: what a real client sends again.
    fn worth_retrying(&self) -> bool {
        self.reply
            .as_ref()
            .is_none_or(|reply| reply.code / 100 == 4)
    }

    fn refused(reply: Reply) -> Transmission {
        Transmission {
            sent_at: None,
            replied_at: Some(Instant::now()),
            reply: Some(reply),
            error: None,
            after_data: false,
            tls_handshake: None,
            node: None,
        }
    }
}

/// The failure class of a reply that did not come in time.
const TIMEOUT: &str = "timeout";

/// A short, countable name for a failure (the detail of I/O errors is dropped).
fn error_class(e: &SmtpError) -> String {
    match e {
        SmtpError::Io(io) => format!("io: {:?}", io.kind()),
        SmtpError::Timeout => TIMEOUT.into(),
        SmtpError::Closed => "closed by server".into(),
        SmtpError::Protocol(_) => "protocol error".into(),
    }
}

impl Ctx {
    /// The group client `client` belongs to, and its number within the group.
    pub fn group_of(&self, client: u32) -> (&GroupRun, u32) {
        let (group, local) = self.requests.plan().assignment().group_of(client);
        (&self.groups[group], local)
    }

    /// The name of group `group` (file order), as records carry it.
    pub fn group_name(&self, group: usize) -> &str {
        &self.groups[group].spec.name
    }

    /// Opens a connection for client `client`, from its group's source address, trickled when
    /// the group is a slowloris.
    pub async fn open(&self, client: u32) -> Result<Opened, SmtpError> {
        let (group, local) = self.group_of(client);
        self.open_as(group, local, client).await
    }

    /// Opens a connection as client `local` of `group`, to the first node of `who`'s order that
    /// answers `220` (the next MX when one is down; the last one's failure when all are).
    pub async fn open_as(
        &self,
        group: &GroupRun,
        local: u32,
        who: u32,
    ) -> Result<Opened, SmtpError> {
        let c = &group.spec;
        let requesters = self.requests.scenario().requests.requesters;
        let _permit = self
            .connect_gate
            .acquire()
            .await
            .expect("gate never closed");
        let order = self.targets.order(self.requests.scenario().seed, who);
        let last = order.len() - 1;
        for (i, target) in order.into_iter().enumerate() {
            let opened = Connection::dial(Dial {
                target,
                source: group.source_of(local, requesters),
                helo: &c.helo,
                connect_timeout: c.connect_timeout.0,
                reply_timeout: c.reply_timeout.0,
                deadline: self.deadline,
                trickle: (c.behaviour == Behaviour::Slowloris).then(|| c.bytes_per_second()),
                tls: self.tls.as_deref().filter(|_| c.starttls),
            })
            .await;
            if i == last || !node_down(&opened) || Instant::now() >= self.deadline {
                return opened;
            }
            self.next_node.fetch_add(1, Ordering::Relaxed);
        }
        unreachable!("the last node's result is returned")
    }
}

/// Whether opening a connection failed as a host that is down fails (no connection, a cut one,
/// no greeting in time, a temporary refusal at the greeting), so that an MTA tries the next MX.
fn node_down(opened: &Result<Opened, SmtpError>) -> bool {
    match opened {
        Ok(Opened::Ready(_)) => false,
        Ok(Opened::Refused(reply)) => reply.code / 100 == 4,
        Err(SmtpError::Io(_) | SmtpError::Closed | SmtpError::Timeout) => true,
        Err(SmtpError::Protocol(_)) => false,
    }
}

/// Sleeps until `at`; false if stopped first.
pub(super) async fn sleep_until(at: Instant, stop: &CancellationToken) -> bool {
    if stop.is_cancelled() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(at) => true,
        _ = stop.cancelled() => false,
    }
}

/// Plays client `client`'s requests.
pub async fn run_client(
    ctx: std::sync::Arc<Ctx>,
    client: u32,
    sink: Sink,
    stop: CancellationToken,
) {
    let plan = ctx.requests.plan();
    let closed = plan.is_closed();
    let group = &ctx.group_of(client).0.spec;
    let mut stats = Stats::default();
    let mut session = Session::default();
    let mut message = Vec::with_capacity(4096);
    let mut requests = plan.requests_of(client).peekable();
    if group.pre_connect {
        ctx.crowd.join();
        if let Some(&first) = requests.peek() {
            pre_connect(&ctx, &mut session, &mut stats, first).await;
        }
    }

    let mut next_closed = Instant::now().max(ctx.start);
    let mut ready_at = Instant::now();
    for index in requests {
        let intended = if closed {
            next_closed
        } else {
            ctx.start + plan.offset(index).unwrap_or_default()
        };
        // max_duration: nothing new is started at or after the deadline, even if it was due
        // before (a client stuck on a slow reply gives up its remaining requests).
        if intended >= ctx.deadline || Instant::now() >= ctx.deadline {
            break;
        }
        // Made before the wait, so that the due instant costs only the write.
        let request = ctx.requests.request(index);
        message.clear();
        request.render(ctx.clock.stamp(intended), &mut message);
        let Some(begun) =
            wait_to_start(&ctx, &mut session, &request, &message, intended, &stop).await
        else {
            break;
        };
        // The driver's own lag: how late it started a request it was free to start. Waiting for
        // this client's previous reply is the target's doing and shows in corrected latency.
        let lag = (!closed).then(|| begun.saturating_duration_since(intended.max(ready_at)));
        warn_if_behind(&ctx, client, lag);
        stats.requests_started += 1;
        let mut play = Play {
            ctx: &ctx,
            sink: &sink,
            stats: &mut stats,
            session: &mut session,
            request: &request,
            message: &message,
            intended,
        };
        play.all_attempts(lag, &stop).await;
        ctx.live.done.fetch_add(1, Ordering::Relaxed);
        if message.capacity() > 1024 * 1024 {
            message = Vec::with_capacity(4096);
        }
        session.close_if_full(group.messages_per_connection).await;
        ready_at = Instant::now();
        if closed {
            next_closed = ready_at + plan.think_time();
        }
    }
    if group.pre_connect {
        ctx.crowd.leave(ctx.deadline, &stop).await;
    }
    session.quit().await;
    ctx.stats.lock().unwrap().add(stats);
}

impl Session {
    /// Closes the connection (QUIT) once it carried `limit` messages (0: no limit).
    async fn close_if_full(&mut self, limit: u32) {
        if limit > 0 && self.on_conn >= limit {
            self.quit().await;
        }
    }

    /// Ends the connection, if there is one, with QUIT.
    pub(super) async fn quit(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.quit().await;
        }
    }
}

/// Waits until `intended` and returns when the request began: for a staged connection, when the
/// firing threads wrote its next bytes; `None` if the run was stopped first.
async fn wait_to_start(
    ctx: &Ctx,
    session: &mut Session,
    request: &Request,
    message: &[u8],
    intended: Instant,
    stop: &CancellationToken,
) -> Option<Instant> {
    let bytes = match session.staged {
        Staged::Rcpt => Some(b"DATA\r\n".to_vec()),
        Staged::Data if !request.slow => Some(message.to_vec()),
        _ => None,
    };
    let shot = bytes.and_then(|bytes| ctx.firing.load(intended, &mut session.conn, bytes));
    // The firing threads answer every shot; only a torn-down run drops one (the connection is
    // lost with it, and the normal path opens another).
    let fired = match shot {
        Some(shot) => shot.await.ok(),
        None => None,
    };
    let Some(fired) = fired else {
        return sleep_until(intended, stop).await.then(Instant::now);
    };
    session.conn = Some(fired.conn);
    match fired.outcome {
        FireOutcome::Written => {
            session.fired = Some(fired.begun);
            Some(fired.begun)
        }
        FireOutcome::NotWritten if stop.is_cancelled() => None,
        FireOutcome::NotWritten => Some(Instant::now()),
        FireOutcome::Broken => {
            session.conn = None;
            Some(Instant::now())
        }
    }
}

/// Connects, greets and stages the first message before the start. A failed pre-connect is
/// retried at the instant by the normal path.
async fn pre_connect(ctx: &Ctx, session: &mut Session, stats: &mut Stats, first: u64) {
    let request = ctx.requests.request(first);
    let group = &ctx.groups[request.group].spec;
    if let Ok(Opened::Ready(mut conn)) = ctx.open(request.client).await {
        let data = group.pre_connect_stage == PreConnectStage::Data;
        match conn
            .envelope(&request.sender, &request.recipient, data)
            .await
        {
            Ok(None) => {
                session.staged = if data { Staged::Data } else { Staged::Rcpt };
                session.connected(conn);
            }
            Ok(Some(_)) => {
                stats.pre_connect_failed += 1;
                session.connected(conn);
            }
            Err(_) => stats.pre_connect_failed += 1,
        }
    } else {
        stats.pre_connect_failed += 1;
    }
    if Instant::now() > ctx.start {
        stats.pre_connect_late += 1;
    }
}

/// Says once per run that the driver fell behind its schedule.
fn warn_if_behind(ctx: &Ctx, client: u32, lag: Option<Duration>) {
    if let Some(lag) = lag
        && lag > LAG_WARN_MAX
        && !ctx.lag_warned.swap(true, Ordering::Relaxed)
    {
        ctx.progress.warn(format!(
            "WARNING: landrush is {:.0} ms behind its schedule (client {client}); latencies now \
             include the driver's own delay",
            lag.as_secs_f64() * 1000.0
        ));
    }
}

/// One request being played: its transmissions (retransmission, retries) and their records.
pub(super) struct Play<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) sink: &'a Sink,
    pub(super) stats: &'a mut Stats,
    pub(super) session: &'a mut Session,
    pub(super) request: &'a Request,
    pub(super) message: &'a [u8],
    pub(super) intended: Instant,
}

impl Play<'_> {
    /// The first transmission, the RFC 1047 retransmission when the scenario asks for one, and
    /// the retries after no reply or a temporary refusal.
    pub(super) async fn all_attempts(&mut self, lag: Option<Duration>, stop: &CancellationToken) {
        let retransmit = self.request.kind == Kind::Retransmission;
        let first = self.attempt(1, lag, retransmit).await;
        let mut unresolved = first.retry;
        let mut attempt = 1;
        if retransmit && first.sent {
            // RFC 1047: the client never saw a reply, so it sends the same message again.
            attempt = 2;
            unresolved = self.attempt(attempt, None, false).await.retry;
        }
        let group = &self.ctx.groups[self.request.group].spec;
        for _ in 0..group.retries {
            let retry_at = Instant::now() + retry_wait(self.ctx, group, self.request, attempt);
            if !unresolved || retry_at >= self.ctx.deadline || !sleep_until(retry_at, stop).await {
                break;
            }
            attempt += 1;
            unresolved = self.attempt(attempt, None, false).await.retry;
        }
    }

    /// One transmission, recorded; returns what came of it.
    async fn attempt(
        &mut self,
        attempt: u32,
        lag: Option<Duration>,
        drop_after_dot: bool,
    ) -> Resolution {
        let sent = transmit(
            self.ctx,
            self.session,
            self.request,
            self.message,
            drop_after_dot,
        )
        .await;
        let resolution = Resolution {
            sent: sent.sent_at.is_some(),
            retry: sent.worth_retrying(),
        };
        let at = Attempt {
            number: attempt,
            intended: self.intended,
            lag,
            raw_sha256: sha256_hex(&unstuffed(self.message)),
        };
        emit(self.ctx, self.sink, self.stats, self.request, at, sent).await;
        resolution
    }
}

/// The wait before retry `attempt + 1` of `request`: the backoff plus a jitter drawn from the
/// seed, so the same file waits the same on every run.
fn retry_wait(ctx: &Ctx, group: &ClientGroup, request: &Request, attempt: u32) -> Duration {
    let seed = ctx.requests.scenario().seed;
    let draw = unit(seed, request.index, 1000 + attempt as u64);
    group.retry_backoff.0 + group.retry_jitter.0.mul_f64(draw)
}

/// What the retry logic needs of a transmission once it is recorded: whether the message went
/// out, and whether it is worth another try.
struct Resolution {
    sent: bool,
    retry: bool,
}

/// Which try of a request a transmission is, and when the request was due.
struct Attempt {
    number: u32,
    intended: Instant,
    lag: Option<Duration>,
    /// The digest of the message as the buffer stores it.
    raw_sha256: String,
}

/// Sends one message: opens a connection if needed, the envelope (unless staged), the message,
/// and reads the final reply (unless `drop_after_dot`, when the connection is dropped at once).
async fn transmit(
    ctx: &Ctx,
    session: &mut Session,
    request: &Request,
    message: &[u8],
    drop_after_dot: bool,
) -> Transmission {
    let live = &ctx.live;
    live.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut sent = transmit_inner(ctx, session, request, message, drop_after_dot).await;
    live.in_flight.fetch_sub(1, Ordering::Relaxed);
    // Recorded by the first transmission after the handshake (a pre-connected client's first
    // request included), so each handshake counts once.
    sent.tls_handshake = session.tls_handshake.take();
    sent.node = sent.sent_at.and(session.node);
    sent
}

async fn transmit_inner(
    ctx: &Ctx,
    session: &mut Session,
    request: &Request,
    message: &[u8],
    drop_after_dot: bool,
) -> Transmission {
    // A reused connection may have been closed by the server meanwhile (idle timeout): one
    // fresh connection is tried before the request is given up.
    for try_fresh in [false, true] {
        match envelope(ctx, session, request, try_fresh).await {
            Envelope::Ready => {}
            Envelope::TryFresh => continue,
            Envelope::Ended(transmission) => return transmission,
        }
        return send_message(ctx, session, request, message, drop_after_dot).await;
    }
    unreachable!("the loop returns on its second pass")
}

/// How far the envelope of a transmission got.
enum Envelope {
    /// The server waits for the message.
    Ready,
    /// A reused connection turned out dead: try once on a fresh one.
    TryFresh,
    /// The transmission ended before the message (refused, or no connection).
    Ended(Transmission),
}

/// Opens a connection if the session has none, and sends what the staged pre-connect left of
/// the envelope (MAIL, RCPT, DATA).
async fn envelope(
    ctx: &Ctx,
    session: &mut Session,
    request: &Request,
    try_fresh: bool,
) -> Envelope {
    let reused = session.conn.is_some();
    if !reused {
        session.staged = Staged::Nothing;
        session.fired = None;
        session.on_conn = 0;
        match ctx.open(request.client).await {
            Ok(Opened::Ready(conn)) => session.connected(conn),
            Ok(Opened::Refused(reply)) => return Envelope::Ended(Transmission::refused(reply)),
            Err(e) => return Envelope::Ended(Transmission::failed(&e)),
        }
    }
    let conn = session.conn.as_mut().expect("connection just opened");
    let staged = std::mem::replace(&mut session.staged, Staged::Nothing);
    let sent = match staged {
        Staged::Nothing => {
            conn.envelope(&request.sender, &request.recipient, true)
                .await
        }
        Staged::Rcpt if session.fired.take().is_some() => conn.data_reply().await,
        Staged::Rcpt => conn.data().await,
        Staged::Data => Ok(None),
    };
    match sent {
        Ok(None) => Envelope::Ready,
        Ok(Some(reply)) => {
            if reply.code == 421 {
                session.conn = None;
            }
            Envelope::Ended(Transmission::refused(reply))
        }
        Err(e) => {
            session.conn = None;
            session.fired = None;
            if reused && !try_fresh && !matches!(e, SmtpError::Timeout) {
                return Envelope::TryFresh;
            }
            Envelope::Ended(Transmission::failed(&e))
        }
    }
}

/// Sends the message on the session's connection (after [`envelope`]) and reads the final reply,
/// unless `drop_after_dot`.
async fn send_message(
    ctx: &Ctx,
    session: &mut Session,
    request: &Request,
    message: &[u8],
    drop_after_dot: bool,
) -> Transmission {
    let conn = session
        .conn
        .as_mut()
        .expect("the envelope left a connection");
    session.on_conn += 1;
    // `sent_at` is stamped before the write that carries the end mark, never after it: the
    // buffer may have the whole message before `write` returns, and a later stamp would make
    // the checker see real-time precedence where there was none.
    let (body, end_mark) = message.split_at(message.len().saturating_sub(END_MARK.len()));
    debug_assert_eq!(end_mark, END_MARK);
    let written = if let Some(sent_at) = session.fired.take() {
        // The firing threads wrote the whole message (DATA was staged).
        Ok(sent_at)
    } else if request.slow {
        let rate = ctx.requests.scenario().misbehaviour.slow_bytes_per_second;
        match conn.write_slowly(body, rate).await {
            Ok(()) => {
                let sent_at = Instant::now();
                conn.write(end_mark).await.map(|()| sent_at)
            }
            Err(e) => Err(e),
        }
    } else {
        let sent_at = Instant::now();
        conn.write(message).await.map(|()| sent_at)
    };
    let sent_at = match written {
        Ok(sent_at) => sent_at,
        Err(e) => {
            session.conn = None;
            return Transmission::failed(&e);
        }
    };
    ctx.live.sent.fetch_add(1, Ordering::Relaxed);
    let mut sent = Transmission {
        sent_at: Some(sent_at),
        replied_at: None,
        reply: None,
        error: None,
        after_data: true,
        tls_handshake: None,
        node: None,
    };
    if drop_after_dot {
        if let Some(conn) = session.conn.take() {
            conn.drop_now().await;
        }
        return sent;
    }
    match conn.read_reply().await {
        Ok(reply) => {
            if reply.code == 421 {
                session.conn = None;
            }
            sent.replied_at = Some(Instant::now());
            sent.reply = Some(reply);
        }
        Err(e) => {
            session.conn = None;
            sent.error = Some(error_class(&e));
        }
    }
    sent
}

/// What a transmission came to. No reply and no end of data sent (no connection, broken before
/// DATA or during the message): nothing can be stored (contract: Indeterminate outcomes).
fn outcome_of(sent: &Transmission) -> Outcome {
    match (&sent.reply, sent.after_data) {
        (Some(reply), true) if reply.code / 100 == 2 => Outcome::Accepted,
        (Some(_), _) => Outcome::Refused,
        (None, _) if sent.sent_at.is_none() => Outcome::Failed,
        (None, _) => Outcome::Indeterminate,
    }
}

/// The service and the corrected latency of a transmission. Timeouts after the end of data count
/// at the reply timeout, so that a buffer that stops answering cannot look fast (the report
/// counts the same set: contract: Run records).
fn latencies(
    sent: &Transmission,
    intended: Instant,
    timeout: Duration,
) -> (Option<Duration>, Option<Duration>) {
    let timed_out = sent.after_data && sent.error.as_deref() == Some(TIMEOUT);
    match (sent.after_data, sent.sent_at, sent.replied_at) {
        (true, Some(sent), Some(replied)) => (
            Some(replied.saturating_duration_since(sent)),
            Some(replied.saturating_duration_since(intended)),
        ),
        (true, Some(sent), None) if timed_out => (
            Some(timeout),
            Some((sent + timeout).saturating_duration_since(intended)),
        ),
        _ => (None, None),
    }
}

/// Turns a transmission into a record and hands it to the recorder.
async fn emit(
    ctx: &Ctx,
    sink: &Sink,
    stats: &mut Stats,
    request: &Request,
    attempt: Attempt,
    sent: Transmission,
) {
    let Attempt {
        number: attempt,
        intended,
        lag,
        raw_sha256,
    } = attempt;
    let live = &ctx.live;
    let outcome = outcome_of(&sent);
    match outcome {
        Outcome::Accepted => live.accepted.fetch_add(1, Ordering::Relaxed),
        Outcome::Refused => live.refused.fetch_add(1, Ordering::Relaxed),
        Outcome::Indeterminate => live.indeterminate.fetch_add(1, Ordering::Relaxed),
        Outcome::Failed => live.failed.fetch_add(1, Ordering::Relaxed),
    };
    stats.transmissions += 1;
    *stats.kinds.entry(request.kind.as_str().into()).or_default() += 1;
    if let Some(error) = &sent.error {
        *stats.errors.entry(error.clone()).or_default() += 1;
    }
    let timeout = ctx.groups[request.group].spec.reply_timeout.0;
    let (service, corrected) = latencies(&sent, intended, timeout);
    let clock = &ctx.clock;
    let record = SentRecord {
        id: request.id.clone(),
        client: request.client,
        message_id: request.message_id.clone(),
        domain: request.domain.clone(),
        sender: request.sender.clone(),
        intake: "smtp".into(),
        kind: request.kind.as_str().into(),
        attempt,
        intended_at: clock.stamp(intended),
        sent_at: sent.sent_at.map(|t| clock.stamp(t)),
        replied_at: sent.replied_at.map(|t| clock.stamp(t)),
        code: sent.reply.as_ref().map(|r| r.code),
        ticket: sent
            .reply
            .as_ref()
            .filter(|r| r.code / 100 == 2 && sent.after_data)
            .and_then(|r| parse_ticket(&r.message)),
        reply: match (&sent.reply, &sent.error) {
            (Some(reply), _) => Some(reply_text(reply)),
            (None, Some(error)) if outcome == Outcome::Failed => Some(format!("not sent: {error}")),
            (None, Some(error)) => Some(format!("no reply: {error}")),
            (None, None) => None,
        },
        outcome,
        group: Some(ctx.group_name(request.group).to_string()),
        raw_sha256: Some(raw_sha256),
        tls_handshake_us: sent.tls_handshake.map(|d| d.as_micros() as u64),
        node: sent.node.map(|node| node.to_string()),
    };
    // The recorder only goes away if it failed; the run then ends with its error.
    let _ = sink
        .send(Event {
            record,
            lag,
            service,
            corrected,
        })
        .await;
}

/// An idle connection of group `group` (its `n`-th): connect, EHLO, then sit until the senders
/// are done (or the deadline).
pub async fn hold_idle(
    ctx: std::sync::Arc<Ctx>,
    group: usize,
    n: u32,
    done: CancellationToken,
    stop: CancellationToken,
) {
    let Ok(Opened::Ready(mut conn)) = ctx.open_as(&ctx.groups[group], n, n).await else {
        return;
    };
    ctx.stats.lock().unwrap().idle_opened += 1;
    ctx.live.idle_held.fetch_add(1, Ordering::Relaxed);
    let held = tokio::select! {
        held = conn.hold_until(ctx.deadline) => held,
        _ = done.cancelled() => true,
        _ = stop.cancelled() => true,
    };
    ctx.live.idle_held.fetch_sub(1, Ordering::Relaxed);
    if held {
        conn.quit().await;
    }
}
