//! A fake buffer with one deliberate flaw (see [`Flaw`]): SMTP intake on barrage's SMTP server, an
//! in-memory queue chained as the contract says (`contract::chain`, the one definition), barrage's
//! handover API on a minimal HTTP server (with `chain` and `/v1/public-key`), acks by SMTP.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barrage::smtp::{Envelope, MessageHandler, Reply, SmtpLimits, serve};
use contract::chain::{Entry, canonical, genesis, hex, link, raw_sha256};
use landrush::driver::smtp::wire::{Connection, Opened};
use landrush::observe::parse_request_mail;
use landrush::scenario::is_valid_domain;
use reports::records::Stamp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// The one rule the fake breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// A correct fake (the control: its runs must pass).
    None,
    /// Answers 250 with a ticket for the request with this seq, but never stores it.
    LoseSeq(u64),
    /// Hands the request with seq N+1 over before the one with seq N.
    SwapAfter(u64),
    /// Answers 250 at once and writes the request this long after; [`FakeBuffer::crash`] loses
    /// every write still pending.
    ReplyBeforeWrite(Duration),
    /// Sends two distinct acks (two Message-IDs) for the request with this seq.
    AckTwice(u64),
    /// Sends an ack for the first request it refuses.
    AckRefused,
    /// No RFC 1047 dedup: a retransmission gets a new seq (and its own ack).
    NoDedup,
    /// Accepts the request with this seq as sent but hands it over (and stores it) under another
    /// domain.
    OtherDomain(u64),
    /// Stores and hands over the request with this seq as sent, but its chain link covers another
    /// domain ([`STOLEN_DOMAIN`]), as after an edit made after chaining and undone: the served row
    /// does not produce its served chain.
    BadLink(u64),
}

/// The fake's journal id (the genesis of its chain).
pub const JOURNAL_ID: &str = "00000000000000fa";

/// The domain [`Flaw::OtherDomain`] hands over instead.
pub const STOLEN_DOMAIN: &str = "stolen.fr";

/// What the flaw did, so tests can name the counterexample they expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub what: &'static str,
    pub seq: u64,
    pub id: Option<String>,
    pub message_id: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    accepted_at: Stamp,
    message_id: String,
    sender: String,
    domain: String,
    raw: String,
    raw_sha256: String,
    /// `chain(seq)`, lowercase hex.
    chain: String,
    landrush_id: Option<String>,
}

/// The request form's fields as the fake stores them: only the domain.
fn fields(domain: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("domain".to_string(), domain.to_string())])
}

impl Stored {
    /// Links this row to `previous` (the chain before it) and returns its chain; the chained
    /// domain is `domain`, normally the stored one.
    fn link(&mut self, previous: &[u8; 32], domain: &str) -> [u8; 32] {
        let fields = fields(domain);
        let accepted_at = self.accepted_at.to_string();
        let entry = Entry {
            seq: self.seq,
            accepted_at: &accepted_at,
            intake: "smtp",
            message_id: &self.message_id,
            sender: &self.sender,
            domain,
            fields: &fields,
            raw_sha256: &self.raw_sha256,
        };
        let chain = link(previous, &canonical(&entry));
        self.chain = hex(&chain);
        chain
    }
}

struct Queue {
    next_seq: u64,
    /// `chain(next_seq)`: every seq given is chained, in seq order, when it is given.
    chain: [u8; 32],
    /// In handover order.
    items: Vec<Stored>,
    cursor: u64,
    /// SwapAfter: the first of the two neighbours, held back until the second comes.
    held: Option<Stored>,
    /// (sender, Message-ID) → seq, for RFC 1047 dedup.
    seen: HashMap<(String, String), u64>,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            next_seq: 0,
            chain: genesis(JOURNAL_ID),
            items: Vec::new(),
            cursor: 0,
            held: None,
            seen: HashMap::new(),
        }
    }
}

struct AckJob {
    seq: u64,
    accepted_at: Stamp,
    in_reply_to: String,
    to: String,
    ack_id: String,
}

struct State {
    flaw: Flaw,
    /// `GET /v1/public-key`'s body (the audit needs a key; the fake signs no checkpoint).
    public_key: serde_json::Value,
    queue: Mutex<Queue>,
    crashed: AtomicBool,
    acks: mpsc::UnboundedSender<AckJob>,
    acks_pending: AtomicU64,
    accepted: AtomicU64,
    acked_refused: AtomicBool,
    events: Mutex<Vec<Event>>,
    /// Delayed writes (ReplyBeforeWrite), in seq order.
    writes: mpsc::UnboundedSender<(Stored, Option<String>, tokio::time::Instant)>,
}

impl State {
    fn event(&self, what: &'static str, seq: u64, id: Option<String>, mid: Option<String>) {
        self.events.lock().unwrap().push(Event {
            what,
            seq,
            id,
            message_id: mid,
        });
    }

    fn ack(&self, seq: u64, accepted_at: Stamp, in_reply_to: &str, to: &str, n: u32) {
        self.acks_pending.fetch_add(1, Ordering::SeqCst);
        let _ = self.acks.send(AckJob {
            seq,
            accepted_at,
            in_reply_to: in_reply_to.to_string(),
            to: to.to_string(),
            ack_id: format!("<ack.{seq}.{n}@fake.invalid>"),
        });
    }

    /// Puts a stored request in the handover queue (called under the queue lock, so the queue's
    /// order is the order of seqs — except for the SwapAfter flaw).
    fn publish(&self, queue: &mut Queue, stored: Stored) {
        match self.flaw {
            Flaw::SwapAfter(n) if stored.seq == n || stored.seq == n + 1 => {
                // Hold whichever of the two comes first; publish both, N+1 first, with the second.
                match queue.held.take() {
                    None => queue.held = Some(stored),
                    Some(other) => {
                        let (low, high) = if other.seq < stored.seq {
                            (other, stored)
                        } else {
                            (stored, other)
                        };
                        self.event(
                            "swapped in the handover",
                            high.seq,
                            high.landrush_id.clone(),
                            Some(high.message_id.clone()),
                        );
                        queue.items.push(high);
                        queue.items.push(low);
                    }
                }
            }
            _ => queue.items.push(stored),
        }
    }

    /// Queues the ack(s) of a stored request.
    fn acknowledge(&self, stored: &Stored) {
        let (seq, at, mid, sender) = (
            stored.seq,
            stored.accepted_at,
            &stored.message_id,
            &stored.sender,
        );
        let id = stored.landrush_id.clone();
        self.ack(seq, at, mid, sender, 1);
        if self.flaw == Flaw::AckTwice(seq) {
            self.ack(seq, at, mid, sender, 2);
            self.event("acked twice", seq, id, Some(mid.to_string()));
        }
    }
}

struct Intake {
    state: Arc<State>,
}

impl MessageHandler for Intake {
    async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Reply {
        let state = &self.state;
        if state.crashed.load(Ordering::SeqCst) {
            return Reply::new(451, [4, 3, 0], "crashed");
        }
        let mail = parse_request_mail(&message);
        let sender = envelope.mail_from.to_ascii_lowercase();
        let mid = mail.message_id.clone().unwrap_or_default();
        let valid = mail.domain.as_deref().is_some_and(is_valid_domain);
        if !valid {
            if state.flaw == Flaw::AckRefused && !state.acked_refused.swap(true, Ordering::SeqCst) {
                state.ack(0, Stamp::now(), &mid, &sender, 9);
                state.event("acked a refused request", 0, mail.landrush_id, Some(mid));
            }
            return Reply::new(550, [5, 6, 0], "request refused: no valid domain");
        }
        let id = mail.landrush_id.clone();
        let (seq, accepted_at, stored_now, acked) = {
            let mut queue = state.queue.lock().unwrap();
            let key = (sender.clone(), mid.clone());
            if state.flaw != Flaw::NoDedup
                && let Some(&seq) = queue.seen.get(&key)
            {
                return Reply::new(250, [2, 0, 0], format!("queued as ticket {seq}"));
            }
            queue.next_seq += 1;
            let seq = queue.next_seq;
            queue.seen.insert(key, seq);
            let mut domain = mail.domain.clone().unwrap_or_default();
            if state.flaw == Flaw::OtherDomain(seq) {
                state.event("handed another domain", seq, id.clone(), Some(mid.clone()));
                domain = STOLEN_DOMAIN.into();
            }
            let mut stored = Stored {
                seq,
                accepted_at: Stamp::now(),
                message_id: mid.clone(),
                sender: sender.clone(),
                domain,
                raw: String::from_utf8_lossy(&message).into_owned(),
                raw_sha256: raw_sha256(&message),
                chain: String::new(),
                landrush_id: id.clone(),
            };
            let chained = if state.flaw == Flaw::BadLink(seq) {
                state.event("chained another domain", seq, id.clone(), Some(mid.clone()));
                STOLEN_DOMAIN.to_string()
            } else {
                stored.domain.clone()
            };
            queue.chain = stored.link(&queue.chain, &chained);
            let accepted_at = stored.accepted_at;
            let acked = stored.clone();
            let stored_now = match state.flaw {
                Flaw::LoseSeq(n) if n == seq => {
                    state.event("lost", seq, id.clone(), Some(mid.clone()));
                    false
                }
                Flaw::ReplyBeforeWrite(delay) => {
                    // Sent under the lock: the writer writes in seq order, `delay` after the reply.
                    let due = tokio::time::Instant::now() + delay;
                    let _ = state.writes.send((stored, id.clone(), due));
                    false
                }
                _ => {
                    state.publish(&mut queue, stored);
                    true
                }
            };
            (seq, accepted_at, stored_now, acked)
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        if stored_now {
            state.acknowledge(&acked);
        }
        Reply::new(
            250,
            [2, 0, 0],
            format!("queued as ticket {seq} at {accepted_at}"),
        )
    }
}

/// A running fake buffer.
pub struct FakeBuffer {
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    state: Arc<State>,
    stop_smtp: Mutex<Option<oneshot::Sender<()>>>,
    relay: tokio::sync::watch::Sender<Option<SocketAddr>>,
}

impl FakeBuffer {
    /// Starts the fake with `flaw`; it sends acks once told where ([`FakeBuffer::relay_to`]).
    pub async fn start(flaw: Flaw) -> FakeBuffer {
        let (relay, ack_relay) = tokio::sync::watch::channel(None);
        let (acks, jobs) = mpsc::unbounded_channel();
        let (writes, delayed) = mpsc::unbounded_channel();
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let document = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("the key it made");
        let state = Arc::new(State {
            flaw,
            public_key: json!({
                "algorithm": "ed25519",
                "public_key": hex(key.public_key().as_ref()),
            }),
            queue: Mutex::new(Queue::new()),
            crashed: AtomicBool::new(false),
            acks,
            acks_pending: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            acked_refused: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
            writes,
        });
        tokio::spawn(send_acks(state.clone(), jobs, ack_relay));
        tokio::spawn(write_late(state.clone(), delayed));

        let smtp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let smtp = smtp_listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let limits = SmtpLimits {
            hostname: "fake.invalid".into(),
            data_timeout: Duration::from_secs(5),
            ..SmtpLimits::default()
        };
        tokio::spawn(serve(
            smtp_listener,
            Arc::new(limits),
            Arc::new(Intake {
                state: state.clone(),
            }),
            async move {
                let _ = stop_rx.await;
            },
        ));

        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let api_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = http_listener.accept().await {
                tokio::spawn(serve_http(stream, api_state.clone()));
            }
        });
        FakeBuffer {
            smtp,
            http,
            state,
            stop_smtp: Mutex::new(Some(stop_tx)),
            relay,
        }
    }

    /// Sends the acks to `addr` from now on.
    pub fn relay_to(&self, addr: SocketAddr) {
        self.relay.send_replace(Some(addr));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Requests answered 250 so far (first transmissions and retransmissions given a seq).
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// What the flaw did.
    pub fn events(&self) -> Vec<Event> {
        self.state.events.lock().unwrap().clone()
    }

    /// A crash: the SMTP intake stops, every write still pending is lost. The handover API keeps
    /// serving what was stored (as a restarted buffer would from its journal).
    pub fn crash(&self) {
        self.state.crashed.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop_smtp.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }
}

/// The ReplyBeforeWrite writer: stores each request when its delay is over, unless the fake
/// crashed meanwhile (then the write is lost, and said so).
async fn write_late(
    state: Arc<State>,
    mut delayed: mpsc::UnboundedReceiver<(Stored, Option<String>, tokio::time::Instant)>,
) {
    while let Some((stored, id, due)) = delayed.recv().await {
        tokio::time::sleep_until(due).await;
        if state.crashed.load(Ordering::SeqCst) {
            state.event(
                "write lost in the crash",
                stored.seq,
                id,
                Some(stored.message_id.clone()),
            );
            continue;
        }
        let acked = stored.clone();
        state.publish(&mut state.queue.lock().unwrap(), stored);
        state.acknowledge(&acked);
    }
}

async fn send_acks(
    state: Arc<State>,
    mut jobs: mpsc::UnboundedReceiver<AckJob>,
    mut relay: tokio::sync::watch::Receiver<Option<SocketAddr>>,
) {
    // Where the acks go is known once the rehearsal's ack sink listens.
    let Ok(relay) = relay
        .wait_for(Option::is_some)
        .await
        .map(|r| r.expect("is some"))
    else {
        return;
    };
    let mut conn: Option<Connection> = None;
    while let Some(job) = jobs.recv().await {
        let message = format!(
            "From: <registry@fake.invalid>\r\nTo: <{to}>\r\nMessage-ID: {ack}\r\n\
In-Reply-To: {irt}\r\nX-Barrage-Ticket: {seq}\r\nX-Barrage-Accepted-At: {at}\r\n\
Subject: ack ticket {seq}\r\n\r\nok\r\n.\r\n",
            to = job.to,
            ack = job.ack_id,
            irt = job.in_reply_to,
            seq = job.seq,
            at = job.accepted_at,
        );
        // Retry until the sink takes it (it may not listen yet).
        for _ in 0..200 {
            if conn.is_none() {
                let far = tokio::time::Instant::now() + Duration::from_secs(3600);
                if let Ok(Opened::Ready(c)) = Connection::open(
                    relay,
                    "fake.invalid",
                    Duration::from_secs(2),
                    Duration::from_secs(5),
                    far,
                )
                .await
                {
                    conn = Some(c);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let c = conn.as_mut().unwrap();
            let sent = async {
                if c.envelope("registry@fake.invalid", &job.to, true)
                    .await?
                    .is_some()
                {
                    return Ok::<bool, landrush::driver::smtp::wire::SmtpError>(false);
                }
                c.write(message.as_bytes()).await?;
                Ok(c.read_reply().await?.code == 250)
            }
            .await;
            match sent {
                Ok(true) => break,
                _ => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        state.acks_pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One HTTP/1.1 exchange (Connection: close): barrage's handover API over the fake's queue.
async fn serve_http(mut stream: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = &buf[head_end..head_end + length];
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    let answer = match (method, path) {
        ("GET", "/v1/requests") => {
            let after: u64 = param("after").and_then(|v| v.parse().ok()).unwrap_or(0);
            let limit: usize = param("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
            let raw = param("raw").as_deref() == Some("true");
            let queue = state.queue.lock().unwrap();
            let requests: Vec<_> = queue
                .items
                .iter()
                .filter(|s| s.seq > after)
                .take(limit)
                .map(|s| {
                    let mut v = json!({
                        "seq": s.seq,
                        "accepted_at": s.accepted_at.to_string(),
                        "intake": "smtp",
                        "message_id": s.message_id,
                        "sender": s.sender,
                        "domain": s.domain,
                        "fields": fields(&s.domain),
                        "raw_sha256": s.raw_sha256,
                        "chain": s.chain,
                    });
                    if raw {
                        v["raw"] = json!(s.raw);
                    }
                    v
                })
                .collect();
            json!({ "journal_id": JOURNAL_ID, "requests": requests })
        }
        ("GET", "/v1/public-key") => state.public_key.clone(),
        ("POST", "/v1/cursor") => {
            let through = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["through"].as_u64())
                .unwrap_or(0);
            let mut queue = state.queue.lock().unwrap();
            queue.cursor = queue.cursor.max(through);
            json!({ "cursor": queue.cursor })
        }
        ("GET", "/v1/stats") => {
            let queue = state.queue.lock().unwrap();
            json!({
                "accepted": queue.next_seq,
                "cursor": queue.cursor,
                "queue_depth": queue.items.iter().filter(|s| s.seq > queue.cursor).count(),
                "acks": { "pending": state.acks_pending.load(Ordering::SeqCst) },
            })
        }
        _ => json!({ "error": "not found" }),
    };
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
Connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
