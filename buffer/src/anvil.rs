//! Per-client limits (contract: Fair intake), after Postfix's `anvil`: how many connections one
//! client address holds, how fast it opens new ones, and how fast it sends requests.
//!
//! A client is an IPv4 address, or an IPv6 /64 (one subscriber's prefix); IPv4-mapped IPv6
//! addresses count as their IPv4 address. Addresses in the `exempt` networks are not tracked at
//! all. The table is bounded: when it is full, clients holding no connection are forgotten
//! (first those idle long enough for their rates to have recovered, then the least recently
//! seen), so the table never holds more than `max_clients` entries.
//!
//! Rates are token buckets: a bucket holds a minute's allowance and refills at that allowance per
//! minute, so a client may spend a whole minute's worth at the instant the day opens, but no
//! more than that in any minute after.
//!
//! Shared by the SMTP server and the web intake; each has its own [`Anvil`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;
use tokio::sync::Notify;

/// The per-client limits of one intake. A limit of 0 is "no limit".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// Simultaneous connections (SMTP) or requests in flight (web) per client.
    pub max_connections: usize,
    /// New connections (SMTP) or POSTs (web) per client per minute.
    pub connection_rate: u32,
    /// Messages (MAIL FROM) per client per minute; SMTP only.
    pub message_rate: u32,
    /// Most clients tracked at once (bounds the table's memory).
    pub max_clients: usize,
    /// Networks the limits do not apply to.
    pub exempt: Vec<IpNet>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_connections: 50,
            connection_rate: 300,
            message_rate: 1200,
            max_clients: 100_000,
            exempt: vec![
                "127.0.0.1/32".parse().expect("valid network"),
                "::1/128".parse().expect("valid network"),
            ],
        }
    }
}

impl ClientLimits {
    /// No per-client limit at all (the harness's own sinks).
    pub fn off() -> Self {
        ClientLimits {
            max_connections: 0,
            connection_rate: 0,
            message_rate: 0,
            max_clients: 1,
            exempt: Vec::new(),
        }
    }

    fn is_off(&self) -> bool {
        self.max_connections == 0 && self.connection_rate == 0 && self.message_rate == 0
    }
}

/// Which per-client limit a client met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Connections,
    ConnectionRate,
    MessageRate,
}

/// Every refusal made to keep the intake fair; each has its own counter in `/v1/stats`
/// (`intake.refused_NAME`) and `/metrics` (`barrage_refused_NAME_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// SMTP `421 4.7.0 too many connections from your address`.
    ClientConnections,
    /// SMTP `421 4.7.0 too many new connections from your address …`.
    ClientConnectionRate,
    /// SMTP `450 4.7.1 … message rate …` at MAIL FROM.
    ClientMessageRate,
    /// SMTP `421 4.7.0 too many junk commands …`.
    JunkCommands,
    /// SMTP `421 4.4.2 …`: a command line not complete by its deadline.
    CommandDeadline,
    /// SMTP `421 4.4.2 …`: DATA not complete by its deadline (or below the minimum rate).
    DataDeadline,
    /// SMTP `421 4.7.0 …`: an idle session of the busiest client closed under stress.
    StressShed,
    /// Web `503`: too many requests in flight from one client.
    WebClientRequests,
    /// Web `503`: too many POSTs per minute from one client.
    WebClientPostRate,
    /// Web `422`: an `Idempotency-Key` (or form token) reused with different content.
    WebKeyReuse,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::ClientConnections,
        Refusal::ClientConnectionRate,
        Refusal::ClientMessageRate,
        Refusal::JunkCommands,
        Refusal::CommandDeadline,
        Refusal::DataDeadline,
        Refusal::StressShed,
        Refusal::WebClientRequests,
        Refusal::WebClientPostRate,
        Refusal::WebKeyReuse,
    ];

    /// The counter's name, without its `refused_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::ClientConnections => "client_connections",
            Refusal::ClientConnectionRate => "client_connection_rate",
            Refusal::ClientMessageRate => "client_message_rate",
            Refusal::JunkCommands => "junk_commands",
            Refusal::CommandDeadline => "command_deadline",
            Refusal::DataDeadline => "data_deadline",
            Refusal::StressShed => "stress_shed",
            Refusal::WebClientRequests => "web_client_requests",
            Refusal::WebClientPostRate => "web_client_post_rate",
            Refusal::WebKeyReuse => "web_key_reuse",
        }
    }

    /// The `# HELP` text of its metric.
    pub fn help(self) -> &'static str {
        match self {
            Refusal::ClientConnections => "SMTP connections refused: too many from one client.",
            Refusal::ClientConnectionRate => {
                "SMTP connections refused: too many new ones per minute from one client."
            }
            Refusal::ClientMessageRate => {
                "SMTP MAIL FROM refused: too many messages per minute from one client."
            }
            Refusal::JunkCommands => "SMTP sessions closed after too many junk commands.",
            Refusal::CommandDeadline => "SMTP sessions closed: command line past its deadline.",
            Refusal::DataDeadline => "SMTP sessions closed: DATA past its deadline.",
            Refusal::StressShed => "Idle SMTP sessions of the busiest client closed under stress.",
            Refusal::WebClientRequests => "Web POSTs refused: too many in flight from one client.",
            Refusal::WebClientPostRate => "Web POSTs refused: too many per minute from one client.",
            Refusal::WebKeyReuse => "Web POSTs refused: a key reused with different content.",
        }
    }

    pub fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|&r| r == self)
            .expect("every refusal is in ALL")
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// A bucket of a minute's allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(per_minute),
            updated: now,
        }
    }

    /// Takes one token if there is one; `per_minute == 0` is no limit.
    fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        let capacity = f64::from(per_minute);
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Entry {
    connections: usize,
    connects: Bucket,
    messages: Bucket,
    last_seen: Instant,
    /// Wakes one idle session of this client when the server sheds load.
    shed: Arc<Notify>,
}

/// After this long without a connection, a client's buckets are full again: forgetting it
/// loses nothing.
const RECOVERED: Duration = Duration::from_secs(60);

/// The per-client table of one intake.
#[derive(Debug)]
pub struct Anvil {
    limits: ClientLimits,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// One connection (or request in flight) of a tracked client; released when dropped.
#[derive(Debug)]
pub struct Lease {
    anvil: Arc<Anvil>,
    key: IpAddr,
    shed: Arc<Notify>,
}

impl Anvil {
    pub fn new(limits: ClientLimits) -> Arc<Self> {
        assert!(
            limits.max_clients >= 1,
            "the client table holds at least one client"
        );
        Arc::new(Anvil {
            limits,
            table: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `ip`: `Ok(None)` when the client is exempt (or limits are
    /// off), `Ok(Some(lease))` when it is counted, `Err` naming the limit it met.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<Option<Lease>, Exceeded> {
        if self.limits.is_off() || self.limits.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(None);
        }
        let key = client_key(ip);
        let now = Instant::now();
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= self.limits.max_clients {
            make_room(&mut table, now);
        }
        let limits = &self.limits;
        let entry = table.entry(key).or_insert_with(|| Entry {
            connections: 0,
            connects: Bucket::full(limits.connection_rate, now),
            messages: Bucket::full(limits.message_rate, now),
            last_seen: now,
            shed: Arc::new(Notify::new()),
        });
        entry.last_seen = now;
        if limits.max_connections > 0 && entry.connections >= limits.max_connections {
            return Err(Exceeded::Connections);
        }
        if !entry.connects.take(limits.connection_rate, now) {
            return Err(Exceeded::ConnectionRate);
        }
        entry.connections += 1;
        let shed = entry.shed.clone();
        Ok(Some(Lease {
            anvil: self.clone(),
            key,
            shed,
        }))
    }

    /// Asks one idle session of the client holding the most connections to close, when it holds
    /// at least two (closing a client's only connection frees nothing for the others). Returns
    /// the client asked, if any.
    pub fn shed_busiest(&self) -> Option<IpAddr> {
        let table = self.lock();
        let (key, entry) = table.iter().max_by_key(|(_, e)| e.connections)?;
        if entry.connections < 2 {
            return None;
        }
        entry.shed.notify_one();
        Some(*key)
    }

    /// How many clients are tracked (for tests and stats).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// Frees at least one slot of a full table: drops every client without connections whose rates
/// have recovered, else the least recently seen sixteenth of the clients without connections
/// (a batch, so that a flood of new addresses costs a scan per sixteenth of the table, not one
/// per connection).
fn make_room(table: &mut HashMap<IpAddr, Entry>, now: Instant) {
    let before = table.len();
    table.retain(|_, e| e.connections > 0 || now.duration_since(e.last_seen) < RECOVERED);
    if table.len() < before {
        return;
    }
    let mut idle: Vec<(Instant, IpAddr)> = table
        .iter()
        .filter(|(_, e)| e.connections == 0)
        .map(|(k, e)| (e.last_seen, *k))
        .collect();
    let batch = (before / 16).clamp(1, idle.len().max(1));
    if idle.len() > batch {
        idle.select_nth_unstable(batch - 1);
    }
    for (_, key) in idle.iter().take(batch) {
        table.remove(key);
    }
    // Every tracked client holds a connection: the table may grow past its bound by the
    // connections in flight, which the global connection limit bounds.
}

impl Lease {
    /// Counts one message (MAIL FROM) of this client; `Err` when over its message rate.
    pub fn message(&self) -> Result<(), Exceeded> {
        let rate = self.anvil.limits.message_rate;
        let mut table = self.anvil.lock();
        let entry = table
            .get_mut(&self.key)
            .expect("a leased client stays in the table");
        if entry.messages.take(rate, Instant::now()) {
            Ok(())
        } else {
            Err(Exceeded::MessageRate)
        }
    }

    /// Resolves when the server asks an idle session of this client to close (stress).
    pub fn shed_signal(&self) -> &Notify {
        &self.shed
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut table = self.anvil.lock();
        if let Some(entry) = table.get_mut(&self.key) {
            debug_assert!(entry.connections > 0, "lease released twice");
            entry.connections = entry.connections.saturating_sub(1);
            entry.last_seen = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, connection_rate: u32, max_clients: usize) -> ClientLimits {
        ClientLimits {
            max_connections,
            connection_rate,
            message_rate: 2,
            max_clients,
            exempt: vec!["127.0.0.1/32".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let anvil = Anvil::new(limits(2, 0, 10));
        let a = anvil.connect(ip("127.0.0.2")).unwrap().unwrap();
        let _b = anvil.connect(ip("127.0.0.2")).unwrap().unwrap();
        assert_eq!(
            anvil.connect(ip("127.0.0.2")).err(),
            Some(Exceeded::Connections)
        );
        assert!(anvil.connect(ip("127.0.0.3")).unwrap().is_some());
        drop(a);
        assert!(anvil.connect(ip("127.0.0.2")).is_ok());
        assert!(anvil.connect(ip("127.0.0.1")).unwrap().is_none(), "exempt");
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_is_v4() {
        assert_eq!(client_key(ip("2001:db8:1:2:aa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        let anvil = Anvil::new(limits(1, 0, 10));
        let _a = anvil.connect(ip("2001:db8::1")).unwrap();
        assert!(anvil.connect(ip("2001:db8::2")).is_err());
    }

    #[test]
    fn rates_are_a_minute_allowance() {
        let anvil = Anvil::new(limits(0, 3, 10));
        for _ in 0..3 {
            drop(anvil.connect(ip("10.0.0.1")).unwrap());
        }
        assert_eq!(
            anvil.connect(ip("10.0.0.1")).err(),
            Some(Exceeded::ConnectionRate)
        );
        let lease = Anvil::new(limits(0, 0, 10))
            .connect(ip("10.0.0.1"))
            .unwrap()
            .unwrap();
        assert!(lease.message().is_ok() && lease.message().is_ok());
        assert_eq!(lease.message(), Err(Exceeded::MessageRate));
    }

    #[test]
    fn the_table_stays_bounded() {
        let anvil = Anvil::new(limits(0, 0, 3));
        for n in 0..50 {
            drop(anvil.connect(ip(&format!("10.0.1.{n}"))).unwrap());
            assert!(anvil.tracked() <= 3);
        }
        // Connected clients are never forgotten: their counts stay right.
        let held: Vec<Lease> = (0..3)
            .map(|n| anvil.connect(ip(&format!("10.0.2.{n}"))).unwrap().unwrap())
            .collect();
        let extra = anvil.connect(ip("10.0.3.1")).unwrap().unwrap();
        assert_eq!(
            anvil.tracked(),
            4,
            "the bound yields to clients holding connections"
        );
        for lease in &held {
            assert!(lease.message().is_ok());
        }
        drop((held, extra));
        drop(anvil.connect(ip("10.0.3.2")).unwrap());
        assert!(anvil.tracked() <= 4);
    }
}
