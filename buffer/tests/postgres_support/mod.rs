//! Shared by the PostgreSQL journal's tests: a throwaway cluster ([`pgcluster`]) with the
//! journal's database, barrage nodes serving it, an SMTP load that records when each request's
//! end of data went out and when its reply came, and the checks of the handover against it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pgcluster::Cluster;
use tokio::sync::mpsc;

use crate::support::{Barrage, Client, request_mail};

/// A cluster with an empty `barrage` database.
pub fn database(dir: &Path) -> (Cluster, String) {
    let cluster = Cluster::start(dir).expect("a PostgreSQL cluster starts");
    cluster.create_database("barrage").unwrap();
    let url = cluster.url("barrage");
    (cluster, url)
}

/// A barrage node on `url`, its data dir (key, lock, endpoints) in `dir`.
pub fn node(dir: &Path, url: &str, extra: &[&str]) -> Barrage {
    let mut args = vec!["--journal", url];
    args.extend_from_slice(extra);
    Barrage::start(dir, &args)
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    /// When its end of data was written.
    pub sent_at: Instant,
    pub replied_at: Instant,
    pub code: u16,
    pub ticket: Option<u64>,
}

/// Submits requests one after another on one connection until `stop` (or `most`), telling
/// `replies` of each reply code. A dead connection ends the client: its last request, without
/// a reply, is indeterminate and not recorded.
pub async fn client(
    addr: SocketAddr,
    name: String,
    most: usize,
    stop: Arc<AtomicBool>,
    replies: mpsc::UnboundedSender<(String, u16)>,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return sent;
    };
    let mut c = Client::from_stream(stream);
    if c.try_reply().await.map(|r| r.code) != Some(220) {
        return sent;
    }
    c.send(b"EHLO load.example\r\n").await;
    if c.try_reply().await.map(|r| r.code) != Some(250) {
        return sent;
    }
    for n in 0..most {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let message_id = format!("<{name}.n{n}@pg.test>");
        let mail = format!("{}.\r\n", request_mail(&message_id, "pg.fr"));
        let script = format!("MAIL FROM:<{name}@example.net>\r\nRCPT TO:<r@x>\r\nDATA\r\n");
        c.send(script.as_bytes()).await;
        let mut refused = None;
        for _ in 0..3 {
            match c.try_reply().await {
                Some(reply) if reply.code == 421 => return sent,
                Some(reply) if reply.code >= 400 => refused = refused.or(Some(reply.code)),
                Some(_) => {}
                None => return sent,
            }
        }
        if let Some(code) = refused {
            // Refused before its data (the journal not ready): not sent, try the next one.
            let _ = replies.send((name.clone(), code));
            c.send(b"RSET\r\n").await;
            if c.try_reply().await.is_none() {
                return sent;
            }
            continue;
        }
        let sent_at = Instant::now();
        c.send(mail.as_bytes()).await;
        let Some(reply) = c.try_reply().await else {
            return sent;
        };
        let _ = replies.send((name.clone(), reply.code));
        sent.push(Sent {
            message_id,
            sent_at,
            replied_at: Instant::now(),
            code: reply.code,
            ticket: reply.ticket(),
        });
        if reply.code == 421 {
            return sent;
        }
    }
    sent
}

/// Checks the handover against what the clients saw (contract: Zero loss, FIFO): the served
/// seqs are 1..=N without a gap or a repeat, each request is there once, every 250 is there
/// under its ticket, and a 250 seen before another request's end of data was sent has the
/// smaller seq. Returns the served rows by seq.
pub fn check_handover(rows: &[serde_json::Value], sent: &[Sent]) -> BTreeMap<u64, String> {
    let mut by_seq = BTreeMap::new();
    let mut by_id: HashMap<String, u64> = HashMap::new();
    for (n, row) in rows.iter().enumerate() {
        let seq = row["seq"].as_u64().unwrap();
        assert_eq!(seq, n as u64 + 1, "seqs served gap-free and once each");
        let id = row["message_id"].as_str().unwrap().to_string();
        assert!(by_id.insert(id.clone(), seq).is_none(), "{id} stored twice");
        by_seq.insert(seq, id);
    }
    let accepted: Vec<&Sent> = sent.iter().filter(|s| s.code == 250).collect();
    for s in &accepted {
        let ticket = s.ticket.expect("a 250 names its ticket");
        assert_eq!(
            by_id.get(&s.message_id),
            Some(&ticket),
            "{} was answered 250 with ticket {ticket}",
            s.message_id
        );
    }
    check_precedence(&accepted);
    by_seq
}

/// Real-time precedence: for every pair, replied(A) < sent(B) implies seq(A) < seq(B).
fn check_precedence(accepted: &[&Sent]) {
    let mut by_reply: Vec<&&Sent> = accepted.iter().collect();
    by_reply.sort_by_key(|s| s.replied_at);
    let mut by_send: Vec<&&Sent> = accepted.iter().collect();
    by_send.sort_by_key(|s| s.sent_at);
    // Walk the sends in time order, keeping the highest seq of every reply seen before.
    let (mut next, mut highest): (usize, Option<(u64, &str)>) = (0, None);
    for b in by_send {
        while next < by_reply.len() && by_reply[next].replied_at < b.sent_at {
            let a = by_reply[next];
            let seq = a.ticket.unwrap();
            if highest.is_none_or(|(h, _)| seq > h) {
                highest = Some((seq, &a.message_id));
            }
            next += 1;
        }
        if let Some((seq, id)) = highest {
            let mine = b.ticket.unwrap();
            assert!(
                seq < mine,
                "precedence broken: {id} got 250 (seq {seq}) before {} was sent, which got \
                 seq {mine}",
                b.message_id
            );
        }
    }
}

/// A burst of clients against several addresses, all stopping on one flag.
pub struct Burst {
    pub stop: Arc<AtomicBool>,
    replies_tx: mpsc::UnboundedSender<(String, u16)>,
    pub replies: mpsc::UnboundedReceiver<(String, u16)>,
    clients: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
    /// 250s counted so far by [`Burst::wait_for`].
    pub accepted: usize,
    /// Other codes counted so far.
    pub refused: BTreeMap<u16, usize>,
    /// The client that got the latest 250.
    pub last_accepted_by: String,
}

impl Burst {
    pub fn new() -> Burst {
        let (replies_tx, replies) = mpsc::unbounded_channel();
        Burst {
            stop: Arc::new(AtomicBool::new(false)),
            replies_tx,
            replies,
            clients: Vec::new(),
            accepted: 0,
            refused: BTreeMap::new(),
            last_accepted_by: String::new(),
        }
    }

    /// Starts `n` clients on `addr`, named after `tag`, each sending at most `most`.
    pub fn spawn(&mut self, addr: SocketAddr, tag: &str, n: usize, most: usize) {
        for k in 0..n {
            let name = format!("{tag}c{k}");
            let task = client(addr, name, most, self.stop.clone(), self.replies_tx.clone());
            self.clients.push(tokio::spawn(task));
        }
    }

    /// Waits until `condition` holds of the counts, reading replies as they come. Panics when
    /// every client has ended first (nothing more can come).
    pub async fn wait_for(&mut self, what: &str, condition: impl Fn(&Burst) -> bool) {
        while !condition(self) {
            let reply =
                tokio::time::timeout(std::time::Duration::from_secs(120), self.replies.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no reply for 120 s while waiting for {what}"));
            match reply {
                Some((name, 250)) => {
                    self.accepted += 1;
                    self.last_accepted_by = name;
                }
                Some((_, code)) => *self.refused.entry(code).or_default() += 1,
                None => panic!("the clients ended before {what}"),
            }
        }
    }

    /// Stops every client and returns what each saw.
    pub async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.replies_tx);
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.unwrap());
        }
        all
    }
}

/// The registration system: pulls every page after its cursor and commits it, from the nodes
/// in turn; returns every row it received, in the order received.
pub async fn drain(nodes: &[&Barrage]) -> Vec<serde_json::Value> {
    let http = reqwest::Client::new();
    let (mut received, mut cursor) = (Vec::new(), 0u64);
    for turn in 0.. {
        let node = nodes[turn % nodes.len()];
        let page = node
            .get(&format!("/v1/requests?after={cursor}&limit=100"))
            .await;
        let rows = page["requests"].as_array().unwrap().clone();
        let Some(last) = rows.last() else { break };
        let through = last["seq"].as_u64().unwrap();
        let response = http
            .post(format!(
                "http://{}/v1/cursor",
                nodes[(turn + 1) % nodes.len()].http
            ))
            .json(&serde_json::json!({ "through": through }))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["cursor"], through,
            "the cursor moved to what was taken"
        );
        cursor = through;
        received.extend(rows);
    }
    received
}

/// The three waits of [`burst_through_fault`], named for the panic when one never ends.
pub struct Waits<'a> {
    /// For the first 250s, before the fault.
    pub before: &'a str,
    /// For a temporary error once the fault is in.
    pub during: &'a str,
    /// For 200 more 250s once it is recovered.
    pub after: &'a str,
}

/// What [`burst_through_fault`] saw.
pub struct FaultOutcome {
    /// Every request as its client saw it.
    pub sent: Vec<Sent>,
    /// Every row the registration system received, in the order received.
    pub received: Vec<serde_json::Value>,
    /// The other reply codes counted by the time the 250s after the recovery were in, including
    /// refusals before the data, which `sent` does not record.
    pub refused: BTreeMap<u16, usize>,
}

/// Two nodes on `url` (data dirs `a` and `b` in `dir`) under a burst of `clients` each: 150
/// 250s, then `fault`, a temporary error, then `recover` and 200 more 250s. The faults block,
/// so they run outside the async workers. Drains the handover and checks it against the clients
/// ([`check_handover`]) and that no request answered 451 is stored (contract: Refusals).
pub async fn burst_through_fault(
    dir: &Path,
    url: &str,
    clients: usize,
    waits: Waits<'_>,
    fault: impl FnOnce(),
    recover: impl FnOnce(),
) -> FaultOutcome {
    let a = node(&dir.join("a"), url, &[]);
    let b = node(&dir.join("b"), url, &[]);
    let mut burst = Burst::new();
    burst.spawn(a.smtp, "a", clients, 100_000);
    burst.spawn(b.smtp, "b", clients, 100_000);
    burst.wait_for(waits.before, |b| b.accepted >= 150).await;
    tokio::task::block_in_place(fault);
    burst
        .wait_for(waits.during, |b| {
            b.refused.keys().any(|code| (400..500).contains(code))
        })
        .await;
    tokio::task::block_in_place(recover);
    let target = burst.accepted + 200;
    burst.wait_for(waits.after, |b| b.accepted >= target).await;
    let refused = burst.refused.clone();
    let sent = burst.finish().await;

    let received = drain(&[&a, &b]).await;
    let stored = check_handover(&received, &sent);
    let stored: HashSet<&String> = stored.values().collect();
    for s in sent.iter().filter(|s| s.code == 451) {
        assert!(
            !stored.contains(&s.message_id),
            "{} was answered 451 but stored",
            s.message_id
        );
    }
    FaultOutcome {
        sent,
        received,
        refused,
    }
}
