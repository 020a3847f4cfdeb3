//! The scenario language: what a `scenarios/*.toml` file may say, how it is parsed and checked.
//!
//! A [`Scenario`] is plain data as the file says it; [`Scenario::validate`] checks what serde
//! cannot (rates are possible, fractions are fractions, bounds are set, the `[[faults]]` make
//! sense). `crate::schedule::ValidScenario` runs it once, with the schedule's own checks, and every
//! later stage takes that type as given. The schema is documented for users in
//! `scenarios/README.md`; keep the two in step.
//!
//! Everything a scenario produces is a pure function of the file and its `seed`: the schedule
//! ([`crate::schedule`]) and each request (`crate::schedule::request`) are computed from a
//! request's index, never from shared mutable state, so shards and reruns yield the same requests and nothing has to be
//! held in memory.

pub mod buffer;
pub mod duration;
pub mod faults;
pub mod groups;
pub mod http;
pub mod seeded;
mod validate;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reports::records::Stamp;
use serde::{Deserialize, Serialize};

pub use duration::Dur;
pub use groups::{Behaviour, ClientGroup, ClientGroups, PreConnectStage};

/// Upper bounds that no scenario may exceed: they keep a typo from becoming a denial of service
/// of the machine running the driver.
pub mod limits {
    /// Requests in one scenario.
    pub const MAX_REQUESTS: u64 = 100_000_000;
    /// Length of one run.
    pub const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;
    /// Open-model arrival rate, requests per second.
    pub const MAX_RATE: f64 = 1_000_000.0;
    /// SMTP connections (sending and idle together) one scenario may open.
    pub const MAX_CLIENTS: u32 = 100_000;
    /// Size of one message, bytes.
    pub const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;
    /// Hot-name request slots (hot names × askers).
    pub const MAX_HOT_SLOTS: usize = 1_000_000;
    /// Steps of a `steps` schedule.
    pub const MAX_STEPS: usize = 10_000;
}

/// One landrush scenario, as written in a `scenarios/*.toml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and in `run.json`.
    pub name: String,
    /// One paragraph saying what real situation this stands for.
    #[serde(default)]
    pub description: String,
    /// Seed of every random choice: the same file and seed give the same requests.
    pub seed: u64,
    /// When request 0 is due: `"+2s"` (relative to the launch) or an absolute RFC 3339 instant.
    pub start: Start,
    pub bounds: Bounds,
    /// `[clients]` (one group) or `[[clients]]` (named groups, see [`groups`]).
    pub clients: ClientGroups,
    pub schedule: Schedule,
    #[serde(default)]
    pub requests: Requests,
    #[serde(default)]
    pub domains: Domains,
    #[serde(default)]
    pub misbehaviour: Misbehaviour,
    /// Web-form submissions, played by the HTTP driver alongside the SMTP part when `landrush
    /// run` is given `--web-target` (see [`http::HttpPart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<http::HttpPart>,
    /// Faults played by `landrush rehearse` (see [`faults`]); not played by `run`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<faults::FaultSpec>,
    /// How the buffer `landrush rehearse` starts is laid out (nodes, journal, standby; see
    /// [`buffer`]); not used by `run`.
    #[serde(default, skip_serializing_if = "buffer::BufferSection::is_empty")]
    pub buffer: buffer::BufferSection,
}

/// When the scenario's time zero is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// This long after the driver is launched (`"+2s"`; `"now"` is `+0s`).
    After(Duration),
    /// At this wall-clock instant, so that several machines fire together.
    At(Stamp),
}

impl Start {
    /// Resolves the start against `now`.
    pub fn resolve(&self, now: Stamp) -> Stamp {
        match *self {
            Start::After(d) => Stamp::from_micros(now.micros() + d.as_micros() as i64),
            Start::At(at) => at,
        }
    }
}

impl std::str::FromStr for Start {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text == "now" {
            return Ok(Start::After(Duration::ZERO));
        }
        if let Some(rel) = text.strip_prefix('+') {
            let d: Dur = rel.parse().with_context(|| {
                format!(
                    "start `{text}`: expected `+DURATION` such as `+2s`, or an RFC 3339 instant"
                )
            })?;
            return Ok(Start::After(d.0));
        }
        Stamp::parse(text).map(Start::At).with_context(|| {
            format!(
                "start `{text}`: expected `+DURATION` (`+2s`, `+1m`) or an absolute instant \
                 such as `2026-12-01T09:00:00Z`"
            )
        })
    }
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::After(d) => write!(f, "+{}", Dur(*d)),
            Start::At(at) => write!(f, "{at}"),
        }
    }
}

impl Serialize for Start {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// Hard bounds, always enforced whatever the schedule says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// No request with an index at or past this is sent (a schedule longer than this is cut).
    pub max_requests: u64,
    /// Nothing is sent after this long past the start; replies still awaited then are recorded
    /// as indeterminate.
    pub max_duration: Dur,
}

/// When requests are due: an open model (arrival times fixed in advance, whatever the replies)
/// or a closed model (each client sends as soon as its previous reply came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// `rate` requests per second, evenly spaced, for `duration`.
    Constant { rate: f64, duration: Dur },
    /// The rate moves linearly from `from` to `to` requests per second over `duration`.
    Ramp { from: f64, to: f64, duration: Dur },
    /// Constant-rate steps one after the other.
    Steps { steps: Vec<Step> },
    /// `count` requests within `within`, front-loaded: the share sent by fraction `u` of the
    /// window is `1 - (1 - u)^front_load` (1 = evenly spread; 6 = about a tenth in the first
    /// 1/60th of the window).
    Burst {
        count: u64,
        within: Dur,
        #[serde(default = "one")]
        front_load: f64,
    },
    /// `count` requests all due at the start instant.
    Instant { count: u64 },
    /// Closed model: `requests` in all, each client sending its next one `think_time` after
    /// the reply to its previous one.
    Closed {
        requests: u64,
        #[serde(default)]
        think_time: Dur,
    },
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub rate: f64,
    pub duration: Dur,
}

/// What the request mails look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    /// Envelope recipient and `To:` of every request.
    pub recipient: String,
    /// How many distinct requester addresses; client `c` writes as requester `c % requesters`.
    pub requesters: u32,
    /// Requesters are `registrar-N@requester_domain`.
    pub requester_domain: String,
    /// Message sizes (whole message, headers included), chosen per request by weight.
    pub sizes: Vec<Size>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            recipient: "requests@registry.invalid".into(),
            requesters: 1000,
            requester_domain: "registrar.invalid".into(),
            sizes: vec![Size {
                bytes: 1024,
                weight: 1,
            }],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub bytes: u64,
    pub weight: u32,
}

/// The domain names asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domains {
    /// Ordinary names are drawn from this many distinct generated names (so a few collide, as
    /// they do on the day).
    pub pool: u64,
    /// Top-level domain of generated names.
    pub tld: String,
    /// Hot names given by hand (each asked by `askers` clients in the same second).
    #[serde(default)]
    pub hot: Vec<String>,
    /// Extra generated hot names.
    #[serde(default)]
    pub hot_generated: u32,
    /// Different clients asking each hot name, within the same second.
    #[serde(default = "default_askers")]
    pub askers: u32,
    /// Hot names are asked at evenly spaced instants over this first part of the schedule
    /// (default: the first second).
    #[serde(default = "default_hot_within")]
    pub hot_within: Dur,
}

fn default_askers() -> u32 {
    3
}
fn default_hot_within() -> Dur {
    Dur(Duration::from_secs(1))
}

impl Default for Domains {
    fn default() -> Self {
        Domains {
            pool: 1_000_000,
            tld: "fr".into(),
            hot: Vec::new(),
            hot_generated: 0,
            askers: default_askers(),
            hot_within: default_hot_within(),
        }
    }
}

/// Clients misbehaving on purpose. Fractions are of requests (or of clients, for `slow_clients`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Misbehaviour {
    /// "Hitting Submit": the same content as the client's previous request, under a new id and
    /// a new Message-ID.
    #[serde(default)]
    pub resubmissions: f64,
    /// RFC 1047: the connection is dropped right after the final `.` without reading the reply,
    /// then the identical message (same id, same Message-ID) is sent again on a new connection.
    #[serde(default)]
    pub retransmissions: f64,
    /// Requests whose form has no domain or an invalid one (must get a 5xx).
    #[serde(default)]
    pub malformed: f64,
    /// Requests of `oversize_bytes` (must get a 552). `oversize_bytes` must exceed the target's
    /// limit (barrage's default is 64 KiB; the default here is 2 MiB).
    #[serde(default)]
    pub oversize: f64,
    #[serde(default = "default_oversize_bytes")]
    pub oversize_bytes: u64,
    /// Fraction of clients that send their messages slowly, `slow_bytes_per_second`.
    #[serde(default)]
    pub slow_clients: f64,
    #[serde(default = "default_slow_rate")]
    pub slow_bytes_per_second: u64,
}

fn default_oversize_bytes() -> u64 {
    2 * 1024 * 1024
}
fn default_slow_rate() -> u64 {
    2000
}

impl Default for Misbehaviour {
    fn default() -> Self {
        Misbehaviour {
            resubmissions: 0.0,
            retransmissions: 0.0,
            malformed: 0.0,
            oversize: 0.0,
            oversize_bytes: default_oversize_bytes(),
            slow_clients: 0.0,
            slow_bytes_per_second: default_slow_rate(),
        }
    }
}

impl Scenario {
    /// Reads and parses a scenario file, not yet checked (see `crate::schedule::ValidScenario`,
    /// which checks it). Errors name the file, and the line and key at fault.
    pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        Scenario::from_toml(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses scenario text, not yet checked.
    pub fn from_toml(text: &str) -> anyhow::Result<Scenario> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// A syntactically valid domain name (RFC 1035 letters, digits, hyphens; labels ≤ 63; ≤ 253).
pub fn is_valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_valid_address(address: &str) -> bool {
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:@\"".contains(&b))
                && is_valid_domain(domain)
        }
        None => false,
    }
}
