//! Client groups: who sends, from which source addresses, and how (honestly or as one of the
//! adversaries of a landrush).
//!
//! `[clients]` (one table) is one group named `clients`; `[[clients]]` (a list) names several,
//! each with its own count, share of the requests, connection settings, retries and source
//! addresses. A group may have a [`Behaviour`] other than honest: the adversaries the buffer must
//! stay fair against (contract: Fair intake, Retransmission). Parameters of a behaviour are only
//! accepted on a group that has it, so a misplaced key is an error rather than silently ignored.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::Dur;
use super::limits::MAX_CLIENTS;

/// The name of the one group a single `[clients]` table makes.
pub const DEFAULT_GROUP: &str = "clients";

/// The victim name of the `[http]` part's web users (their records carry `group = "web"`).
pub const WEB_VICTIM: &str = "web";

/// Most source addresses one group may name (a /16 on loopback).
pub const MAX_SOURCES: usize = 65_536;

/// Most junk commands one junk client sends in a run.
pub const MAX_JUNK_COMMANDS: u32 = 1_000_000;

/// What a group does on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Sends its share of the scheduled requests as the group's settings say.
    #[default]
    Honest,
    /// Opens `count` connections from its addresses before the instant (as many as the buffer
    /// lets it) and holds them with a NOOP every `noop_interval`; reopens refused or closed ones.
    Hog,
    /// Sends its share of the requests, every byte (commands and data) trickled at
    /// `bytes_per_second`.
    Slowloris,
    /// Floods commands that never make a request (NOOP, RSET, VRFY, HELP, an unknown verb) from
    /// the instant on, reconnecting when closed.
    Junk,
    /// Sends, `lead` before each chosen request of group `victim`, a request with the victim's
    /// envelope sender and Message-ID (its dedup key) and different content; with victim `web`,
    /// a POST with a web user's requester and `Idempotency-Key` before the user's first form.
    KeyCollider,
}

impl Behaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Hog => "hog",
            Behaviour::Slowloris => "slowloris",
            Behaviour::Junk => "junk",
            Behaviour::KeyCollider => "key-collider",
        }
    }

    /// Whether the group sends a share of the scheduled requests.
    pub fn sends_schedule(self) -> bool {
        matches!(self, Behaviour::Honest | Behaviour::Slowloris)
    }
}

/// Source addresses: one address or CIDR (`"127.0.1.0/24"`), or a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sources {
    One(String),
    List(Vec<String>),
}

impl Sources {
    /// The addresses, in order. A CIDR of more than two addresses leaves out its first and last
    /// (network and broadcast); a CIDR must lie inside loopback (127.0.0.0/8 or ::1).
    pub fn addresses(&self) -> anyhow::Result<Vec<IpAddr>> {
        let items: Vec<&str> = match self {
            Sources::One(one) => vec![one.as_str()],
            Sources::List(list) => list.iter().map(String::as_str).collect(),
        };
        let mut out = Vec::new();
        for item in items {
            if item.contains('/') {
                out.extend(cidr_hosts(item)?);
            } else {
                out.push(item.trim().parse::<IpAddr>().with_context(|| {
                    format!("`{item}` is not an IP address or a CIDR such as 127.0.1.0/24")
                })?);
            }
            ensure!(
                out.len() <= MAX_SOURCES,
                "more than {MAX_SOURCES} source addresses"
            );
        }
        ensure!(!out.is_empty(), "give at least one source address");
        Ok(out)
    }
}

fn cidr_hosts(text: &str) -> anyhow::Result<Vec<IpAddr>> {
    let net: ipnet::IpNet = text
        .trim()
        .parse()
        .with_context(|| format!("`{text}` is not a CIDR such as 127.0.1.0/24"))?;
    let loopback = match net {
        ipnet::IpNet::V4(v4) => "127.0.0.0/8"
            .parse::<ipnet::Ipv4Net>()
            .expect("static net")
            .contains(&v4),
        ipnet::IpNet::V6(v6) => v6.prefix_len() == 128 && v6.addr().is_loopback(),
    };
    ensure!(
        loopback,
        "`{text}` is not inside loopback (127.0.0.0/8): a CIDR of sources must be loopback, since \
         this machine can only bind addresses it owns; name remote source addresses one by one"
    );
    let prefix = net.prefix_len();
    ensure!(
        net.max_prefix_len() - prefix <= 16,
        "`{text}`: at most a /16 ({MAX_SOURCES} addresses)"
    );
    let all: Vec<IpAddr> = net.hosts().collect();
    Ok(all)
}

/// One group of clients, as a `[[clients]]` entry (or the single `[clients]` table) says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientGroup {
    /// The group's name, in `sent.jsonl` (`group`) and `adversaries.json`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Clients of the group: sending clients (one SMTP connection at a time each), or for a hog
    /// the connections it tries to hold, for junk the flooding connections, for a key-collider
    /// the clients sending the colliding requests.
    pub count: u32,
    /// The group's share of the scheduled requests (honest and slowloris groups). Either every
    /// sending group gives one (they must add up to 1) or none does (then shares follow counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// Source addresses the group's clients bind to before connecting (a list, or a CIDR inside
    /// 127.0.0.0/8). Client `k` of the group uses address `(k % requesters) % len`: a registrar
    /// (requester) always comes from one address. Default: the system's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Sources>,
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Connect, greet and stage the first message (MAIL, RCPT; see `pre_connect_stage`) before
    /// the start, then fire at the instant: what aggressive registrars' programs do.
    #[serde(default)]
    pub pre_connect: bool,
    /// How far a pre-connected client goes before the start: `rcpt` (DATA is sent at the
    /// instant) or `data` (the 354 is already in hand; the message itself goes at the instant).
    #[serde(default)]
    pub pre_connect_stage: PreConnectStage,
    /// Messages sent on one connection before it is closed with QUIT and reopened; 0 means no
    /// limit (session reuse), 1 means a new connection per message.
    #[serde(default)]
    pub messages_per_connection: u32,
    /// Extra connections that connect, say EHLO and then sit idle until the run ends.
    #[serde(default)]
    pub idle: u32,
    /// Upgrade every connection with STARTTLS right after the first EHLO (landrush's
    /// `--tls-ca FILE` or `--tls-insecure` say which certificates it trusts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starttls: bool,
    /// The EHLO name.
    #[serde(default = "default_helo")]
    pub helo: String,
    /// How long a client waits to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// How long a client waits for any one reply before it records the request indeterminate.
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout: Dur,
    /// How many times a client sends a request again after no reply (connection refused or cut,
    /// timeout) or a temporary refusal (4xx), as a real mail client would: the same message
    /// with the same Message-ID, so a buffer that did store it answers with the original ticket
    /// (RFC 1047). Each try is recorded as the next `attempt`. 0: never.
    #[serde(default)]
    pub retries: u32,
    /// The wait before each retry.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: Dur,
    /// Up to this much is added to each retry's wait, drawn from the seed per request and try,
    /// so that refused clients do not all come back in the same millisecond.
    #[serde(default)]
    pub retry_jitter: Dur,
    /// hog: the pause between two NOOPs on a held connection (default 4s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noop_interval: Option<Dur>,
    /// hog and junk: the wait before reopening a connection the buffer refused or closed
    /// (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_after: Option<Dur>,
    /// slowloris: bytes per second of everything it writes (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    /// junk: commands each junk client sends in the whole run (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_commands: Option<u32>,
    /// key-collider: the group whose dedup keys it reuses (`web`: the `[http]` part's users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub victim: Option<String>,
    /// key-collider: the share of the victim's requests it collides with (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// key-collider: how long before the victim's request is due the colliding one is sent
    /// (default 50ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreConnectStage {
    #[default]
    Rcpt,
    Data,
}

fn default_name() -> String {
    DEFAULT_GROUP.into()
}
fn default_helo() -> String {
    "landrush.invalid".into()
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_reply_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_retry_backoff() -> Dur {
    Dur(Duration::from_millis(500))
}

impl ClientGroup {
    /// hog: the pause between NOOPs.
    pub fn noop_interval(&self) -> Duration {
        self.noop_interval.map_or(Duration::from_secs(4), |d| d.0)
    }
    /// hog, junk: the wait before reopening.
    pub fn reconnect_after(&self) -> Duration {
        self.reconnect_after.map_or(Duration::from_secs(1), |d| d.0)
    }
    /// slowloris: the trickle rate.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second.unwrap_or(2)
    }
    /// junk: commands per client.
    pub fn junk_commands(&self) -> u32 {
        self.junk_commands.unwrap_or(2000)
    }
    /// key-collider: share of the victim's requests.
    pub fn fraction(&self) -> f64 {
        self.fraction.unwrap_or(1.0)
    }
    /// key-collider: how early.
    pub fn lead(&self) -> Duration {
        self.lead.map_or(Duration::from_millis(50), |d| d.0)
    }

    /// The group's source addresses (none: the system picks).
    pub fn source_addresses(&self) -> anyhow::Result<Vec<IpAddr>> {
        match &self.sources {
            None => Ok(Vec::new()),
            Some(s) => s
                .addresses()
                .with_context(|| format!("clients `{}`: sources", self.name)),
        }
    }

    /// Checks one group on its own (see [`ClientGroups::validate`] for what spans groups).
    fn validate(&self) -> anyhow::Result<()> {
        let n = &self.name;
        ensure!(
            !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()),
            "clients: a group name must be 1 to 64 printable characters without spaces (got `{n}`)"
        );
        ensure!(
            self.count >= 1,
            "clients `{n}`.count: at least one client is needed"
        );
        ensure!(
            super::is_valid_domain(&self.helo),
            "clients `{n}`.helo: `{}` is not a valid host name",
            self.helo
        );
        ensure!(
            !self.reply_timeout.0.is_zero() && !self.connect_timeout.0.is_zero(),
            "clients `{n}`: reply_timeout and connect_timeout must be more than 0"
        );
        self.source_addresses()?;
        self.validate_behaviour()
    }

    /// Refuses parameters that belong to another behaviour.
    fn refuse_misplaced(&self) -> anyhow::Result<()> {
        let n = &self.name;
        let b = self.behaviour;
        let given = [
            (
                "noop_interval",
                self.noop_interval.is_some(),
                b == Behaviour::Hog,
            ),
            (
                "reconnect_after",
                self.reconnect_after.is_some(),
                matches!(b, Behaviour::Hog | Behaviour::Junk),
            ),
            (
                "bytes_per_second",
                self.bytes_per_second.is_some(),
                b == Behaviour::Slowloris,
            ),
            (
                "junk_commands",
                self.junk_commands.is_some(),
                b == Behaviour::Junk,
            ),
            ("victim", self.victim.is_some(), b == Behaviour::KeyCollider),
            (
                "fraction",
                self.fraction.is_some(),
                b == Behaviour::KeyCollider,
            ),
            ("lead", self.lead.is_some(), b == Behaviour::KeyCollider),
        ];
        for (key, set, fits) in given {
            ensure!(
                !set || fits,
                "clients `{n}`.{key}: not a parameter of behaviour `{}`",
                b.as_str()
            );
        }
        Ok(())
    }

    /// Refuses parameters that belong to another behaviour, and impossible values.
    fn validate_behaviour(&self) -> anyhow::Result<()> {
        self.refuse_misplaced()?;
        let n = &self.name;
        let b = self.behaviour;
        if !b.sends_schedule() {
            ensure!(
                self.share.is_none(),
                "clients `{n}`.share: a `{}` group sends no scheduled requests; leave share out",
                b.as_str()
            );
            ensure!(
                !self.pre_connect && self.idle == 0,
                "clients `{n}`: pre_connect and idle are for sending groups (a hog pre-connects \
                 by itself)"
            );
        }
        ensure!(
            self.bytes_per_second() >= 1,
            "clients `{n}`.bytes_per_second: at least 1"
        );
        ensure!(
            (1..=MAX_JUNK_COMMANDS).contains(&self.junk_commands()),
            "clients `{n}`.junk_commands: between 1 and {MAX_JUNK_COMMANDS}"
        );
        ensure!(
            self.fraction() > 0.0 && self.fraction() <= 1.0,
            "clients `{n}`.fraction: a fraction above 0 and at most 1 (got {})",
            self.fraction()
        );
        ensure!(
            !self.noop_interval().is_zero() && !self.reconnect_after().is_zero(),
            "clients `{n}`: noop_interval and reconnect_after must be more than 0"
        );
        if b == Behaviour::KeyCollider && self.victim.is_none() {
            bail!("clients `{n}`: a key-collider needs `victim`, the name of the group it copies");
        }
        Ok(())
    }
}

/// The scenario's client groups, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientGroups(pub Vec<ClientGroup>);

impl Serialize for ClientGroups {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientGroups {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(Box<ClientGroup>),
            Many(Vec<ClientGroup>),
        }
        // Untagged enums hide the inner error; say what each form expects instead.
        let value = toml::Value::deserialize(d)?;
        let parsed = match &value {
            toml::Value::Array(_) => Vec::<ClientGroup>::deserialize(value)
                .map(OneOrMany::Many)
                .map_err(|e| serde::de::Error::custom(format!("[[clients]]: {e}")))?,
            _ => ClientGroup::deserialize(value)
                .map(|g| OneOrMany::One(Box::new(g)))
                .map_err(|e| serde::de::Error::custom(format!("[clients]: {e}")))?,
        };
        Ok(match parsed {
            OneOrMany::One(g) => ClientGroups(vec![*g]),
            OneOrMany::Many(list) => ClientGroups(list),
        })
    }
}

impl ClientGroups {
    pub fn iter(&self) -> impl Iterator<Item = &ClientGroup> {
        self.0.iter()
    }

    /// The group named `name`.
    pub fn named(&self, name: &str) -> Option<&ClientGroup> {
        self.0.iter().find(|g| g.name == name)
    }

    /// Clients of all groups together (each group's clients are numbered after the previous
    /// group's, in file order).
    pub fn total_clients(&self) -> u64 {
        self.0.iter().map(|g| g.count as u64).sum()
    }

    /// Sending clients (honest and slowloris groups).
    pub fn sending_clients(&self) -> u64 {
        self.senders().map(|g| g.count as u64).sum()
    }

    /// Idle connections of all groups.
    pub fn idle_total(&self) -> u64 {
        self.0.iter().map(|g| g.idle as u64).sum()
    }

    /// Whether any group pre-connects (a hog always does).
    pub fn any_pre_connect(&self) -> bool {
        self.0
            .iter()
            .any(|g| g.pre_connect || g.behaviour == Behaviour::Hog)
    }

    /// The groups that send scheduled requests.
    pub fn senders(&self) -> impl Iterator<Item = &ClientGroup> {
        self.0.iter().filter(|g| g.behaviour.sends_schedule())
    }

    /// The shares of the sending groups, in file order: as given, or proportional to counts.
    pub fn shares(&self) -> Vec<f64> {
        let total = self.sending_clients().max(1) as f64;
        self.senders()
            .map(|g| g.share.unwrap_or(g.count as f64 / total))
            .collect()
    }

    /// Checks every group and what spans them: unique names, shares, victims, limits. `web`:
    /// whether the scenario has an `[http]` part, whose users a key-collider may name as its
    /// victim `web` ([`WEB_VICTIM`]).
    pub fn validate(&self, web: bool) -> anyhow::Result<()> {
        ensure!(!self.0.is_empty(), "[[clients]]: give at least one group");
        for (n, g) in self.0.iter().enumerate() {
            g.validate()?;
            ensure!(
                self.0[..n].iter().all(|o| o.name != g.name),
                "clients: two groups are named `{}`; give each its own name",
                g.name
            );
        }
        let connections = self.total_clients() + self.idle_total();
        ensure!(
            connections <= MAX_CLIENTS as u64,
            "clients: {connections} connections over all groups, more than the limit of \
             {MAX_CLIENTS}"
        );
        ensure!(
            self.senders().next().is_some(),
            "clients: no group sends requests; give at least one honest (or slowloris) group"
        );
        self.validate_shares()?;
        ensure!(
            self.named(WEB_VICTIM).is_none(),
            "clients: the name `{WEB_VICTIM}` is the [http] part's web users; name the group \
             otherwise"
        );
        for g in self
            .0
            .iter()
            .filter(|g| g.behaviour == Behaviour::KeyCollider)
        {
            let victim = g.victim.as_deref().unwrap_or_default();
            if victim == WEB_VICTIM {
                ensure!(
                    web,
                    "clients `{}`.victim: `{WEB_VICTIM}` names the web users, and the scenario \
                     has no [http] part",
                    g.name
                );
                continue;
            }
            let Some(v) = self.named(victim) else {
                bail!(
                    "clients `{}`.victim: there is no group named `{victim}`",
                    g.name
                );
            };
            ensure!(
                v.behaviour.sends_schedule(),
                "clients `{}`.victim: `{victim}` sends no requests to collide with",
                g.name
            );
        }
        Ok(())
    }

    fn validate_shares(&self) -> anyhow::Result<()> {
        let given = self.senders().filter(|g| g.share.is_some()).count();
        let senders = self.senders().count();
        ensure!(
            given == 0 || given == senders,
            "clients: {given} of {senders} sending groups give a share; give a share to every \
             sending group or to none (then shares follow counts)"
        );
        for g in self.senders() {
            if let Some(share) = g.share {
                ensure!(
                    share.is_finite() && (0.001..=1.0).contains(&share),
                    "clients `{}`.share: between 0.001 and 1 (got {share})",
                    g.name
                );
            }
        }
        let sum: f64 = self.shares().iter().sum();
        ensure!(
            (sum - 1.0).abs() <= 0.001,
            "clients: the sending groups' shares add up to {sum}, not 1"
        );
        Ok(())
    }
}
